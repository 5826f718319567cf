"""Serving the bridge in this process: the app on uvicorn, until a signal and the drain after it.

Kept apart from the command line, which a `--workers` parent runs without ever serving: it
never imports the web stack.
"""

from __future__ import annotations

import gc
import logging
import os
from typing import Final

import uvicorn
from dependency_injector import providers
from uvicorn.config import STARTUP_FAILURE

from app.container import Container
from app.draining import DrainingServer
from app.main import create_app
from app.settings import Settings
from app.tokens import TokenSource
from app.workers import inherited_socket

log = logging.getLogger("dagnats_bridge")

YOUNG_GENERATION_THRESHOLD: Final = 10_000
"""Net allocations of tracked objects that start a collection of the youngest generation
(Python's default is 700)."""


def serve(settings: Settings, tokens: TokenSource, early_stops: list[int]) -> int:
    """Serve until SIGTERM or SIGINT and the drain that follows (app.draining), then return
    so the caller can clean up: 0, or 1 when the app could not start (the reason is logged).

    `early_stops` are the stop signals noted (app.early_stops) while the process started
    and the app is built, before uvicorn takes the signals over: the first is acted on once
    serving (a `--workers` sibling's death stops a worker that is still starting). uvicorn
    raises the signal again with the handler it found when it is done, which only notes it
    then.
    """
    container = Container(settings=settings)
    container.tokens.override(providers.Object(tokens))
    config = uvicorn.Config(
        create_app(container),
        host=settings.host,
        port=settings.port,
        log_config=None,
        # The poll and resolve lines say more than an access line would, at a third the cost.
        access_log=False,
        loop="uvloop",
        http="httptools",
        lifespan="on",
    )
    listener = inherited_socket(os.environ)
    server = DrainingServer(
        config,
        drain=container.drain(),
        grace=settings.drain_grace,
        minimum=settings.drain_minimum,
        early_stops=early_stops,
    )
    _spare_the_built_app_from_full_collections()
    _collect_the_young_generation_less_often()
    try:
        server.run(sockets=None if listener is None else [listener])
    except SystemExit as exc:
        # uvicorn's way out when the app cannot start.
        if exc.code != STARTUP_FAILURE:
            raise
        return 1
    return 0


def _spare_the_built_app_from_full_collections() -> None:
    """Move what exists now (modules, the app, its routes and OpenAPI schema: all of it
    lives as long as the process) out of the garbage collector's sight. Each full
    collection then walks only what serving created: under load they paused the event loop
    for 40-90 ms each, the tail of the resolve latency, and now take a few."""
    gc.collect()
    gc.freeze()


def _collect_the_young_generation_less_often() -> None:
    """What a busy bridge holds in flight (requests, leases, futures) swings by more than the
    default 700 objects, so the default collected the young generation every few tasks and
    aged the in-flight objects into the older generations, which were then collected too.
    8,000 tasks in one process, polled 10 at a time: 261 young collections, 3 % of the CPU;
    100 at a time: 1,000 young, 90 middle and 9 full ones, 18 %. At 10,000: 1 and 8 young
    ones, under 1 %. They freed next to nothing: a busy bridge makes 0.015 objects of
    garbage in cycles a task. Garbage in cycles still starts a collection, a little later."""
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, middle, oldest)
