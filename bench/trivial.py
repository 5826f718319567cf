"""A trivial Litestar app on uvicorn: what the load generator achieves against near-zero work."""

from __future__ import annotations

import argparse

import uvicorn
from litestar import Litestar, get, post


@post("/v1/tasks/poll", status_code=200)
async def poll() -> list[str]:
    return []


@get("/healthz")
async def healthz() -> str:
    return "ok"


app = Litestar(route_handlers=[poll, healthz])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    port: int = parser.parse_args().port
    # As the bridge serves (app.serving).
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        loop="uvloop",
        http="httptools",
    )


if __name__ == "__main__":
    main()
