"""The protocol spec as a runnable check of any bridge: `dagnats-bridge conformance`.

It talks to the bridge as a foreign worker would, over HTTP only; tasks come in through the
simulator endpoint or, given a NATS URL, are published on NATS as the engine publishes them.
"""

from typing import Final

DEFAULT_EXAMPLES: Final = 30
"""Here, not in the runner, so the CLI shows it without importing Hypothesis and the spec."""
