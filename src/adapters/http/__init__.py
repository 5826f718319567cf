"""The Litestar driving adapter."""
