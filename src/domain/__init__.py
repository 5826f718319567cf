"""Pure domain of the bridge: models, ports, errors and use cases. No I/O library."""
