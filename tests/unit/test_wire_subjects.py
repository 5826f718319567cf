"""NATS subject filters: matching and overlap, checked against a brute-force search."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.wire import filters_overlap, subject_matches

LITERALS = ("a", "b")
FRESH = "c"
"""A token no filter names: a witness subject needs at most one token outside the filters'."""
MAX_TOKENS = 4

filters = st.builds(
    lambda head, rest: ".".join(head + rest),
    st.lists(st.sampled_from([*LITERALS, "*"]), min_size=1, max_size=MAX_TOKENS - 1),
    st.sampled_from([[], [">"], ["*"], ["a"]]),
)


def all_subjects() -> list[str]:
    """Every concrete subject up to MAX_TOKENS tokens over the literals and a fresh token."""
    tokens = (*LITERALS, FRESH)
    return [
        ".".join(combo)
        for size in range(1, MAX_TOKENS + 1)
        for combo in itertools.product(tokens, repeat=size)
    ]


SUBJECTS = all_subjects()


def reference_match(subject_filter: str, subject: str) -> bool:
    """An independent matcher: the filter as a regular expression over dot-separated tokens."""
    one = r"[^.]+"
    parts = [
        {"*": one, ">": rf"{one}(\.{one})*"}.get(part, re.escape(part))
        for part in subject_filter.split(".")
    ]
    return re.fullmatch(r"\.".join(parts), subject) is not None


@pytest.mark.parametrize(
    ("subject_filter", "subject", "expected"),
    [
        ("task.a.>", "task.a.run", True),
        ("task.a.>", "task.a.b.run", True),
        ("task.a.>", "task.a", False),
        ("task.*.run", "task.a.run", True),
        ("task.*.run", "task.a.b.run", False),
        ("task.a", "task.a", True),
        ("task.a", "task.b", False),
        ("task.a", "task.a.b", False),
    ],
)
def test_subject_matching(subject_filter: str, subject: str, expected: bool) -> None:
    assert subject_matches(subject_filter, subject) is expected


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        ("task.a.>", "task.a.b.>", True),
        ("task.a.>", "task.b.>", False),
        ("task.a.>", "task.a", False),
        ("task.*.x", "task.a.>", True),
        ("task.a.b", "task.a.b.c", False),
        ("task.>", "task.send-email.>", True),
    ],
)
def test_filter_overlap_examples(first: str, second: str, expected: bool) -> None:
    assert filters_overlap(first, second) is expected


@given(filters, st.sampled_from(SUBJECTS))
def test_matching_agrees_with_the_reference(subject_filter: str, subject: str) -> None:
    assert subject_matches(subject_filter, subject) == reference_match(subject_filter, subject)


@given(filters, filters)
def test_overlap_is_symmetric(first: str, second: str) -> None:
    assert filters_overlap(first, second) == filters_overlap(second, first)


@given(filters)
def test_a_filter_overlaps_itself(subject_filter: str) -> None:
    assert filters_overlap(subject_filter, subject_filter)


@given(filters, filters)
def test_filters_overlap_iff_some_subject_matches_both(first: str, second: str) -> None:
    witnessed = any(
        reference_match(first, subject) and reference_match(second, subject) for subject in SUBJECTS
    )

    assert filters_overlap(first, second) == witnessed
