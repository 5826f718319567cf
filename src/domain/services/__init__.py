"""Use cases of the bridge, one class each."""
