"""Adapters: memory (the simulator's backend), http (Litestar), and the shared codec."""
