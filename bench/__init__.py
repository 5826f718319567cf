"""`make bench`: the bridge against a direct nats-py worker, on one machine, in one run.

Not part of the test suite. `python -m bench --help` lists the knobs.
"""
