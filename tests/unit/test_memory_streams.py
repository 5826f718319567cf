"""MemoryStreams: the last chunks of each step, for the simulator to show."""

from __future__ import annotations

from adapters.memory.streams import MemoryStreams
from domain.models import RawJson, RunId, StepId

RUN, STEP = RunId("run-1"), StepId("s1")


async def test_chunks_are_kept_per_step_in_order() -> None:
    streams = MemoryStreams()

    await streams.publish(RUN, STEP, RawJson(b"1"))
    await streams.publish(RUN, StepId("s2"), RawJson(b"other"))
    await streams.publish(RUN, STEP, RawJson(b"2"))

    assert streams.chunks(RUN, STEP) == [b"1", b"2"]
    assert streams.chunks(RUN, StepId("s3")) == []


async def test_only_the_last_chunks_are_retained() -> None:
    streams = MemoryStreams(retained=2)

    for chunk in (b"1", b"2", b"3"):
        await streams.publish(RUN, STEP, RawJson(chunk))

    assert streams.chunks(RUN, STEP) == [b"2", b"3"]
