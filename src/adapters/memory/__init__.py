"""In-memory adapters that behave like JetStream and NATS KV: the simulator's backend."""
