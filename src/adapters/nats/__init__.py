"""JetStream adapters: the production backend, wire-compatible with DagNats."""
