"""Routing on the raw path: a percent-encoded segment routes as one and reads back as sent."""

from __future__ import annotations

from urllib.parse import quote, unquote

from hypothesis import given
from hypothesis import strategies as st

from adapters.http.paths import path_param, routing_path

segments = st.lists(
    st.text(st.characters(exclude_categories=["Cs"]), min_size=1), min_size=1, max_size=4
)


@given(segments)
def test_every_segment_routes_as_one_and_reads_back_as_sent(sent: list[str]) -> None:
    raw = ("/" + "/".join(quote(segment, safe="") for segment in sent)).encode()

    path = routing_path(raw) or unquote(raw.decode())

    assert [path_param(segment) for segment in path.split("/")[1:]] == sent


def test_a_path_without_an_encoded_slash_or_percent_routes_as_the_server_decoded_it() -> None:
    assert routing_path(b"/v1/tasks/r1.%C3%A9t%C3%A9/resolve") is None
