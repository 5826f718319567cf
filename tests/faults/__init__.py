"""Fault scenarios: a load of tasks served by real processes on loopback while something breaks.

Each scenario counts the terminal events in WORKFLOW_HISTORY per task afterwards: exactly one
each, or the bridge lost or doubled work. `python -m tests.faults` runs them all and prints
the reliability table; tests/integration/test_faults.py runs each with a short load.
"""
