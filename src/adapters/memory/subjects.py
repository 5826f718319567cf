"""NATS subject filters: tokens split on '.', `*` matches one token, `>` one or more trailing."""

from __future__ import annotations

from typing import Final

ONE: Final = "*"
REST: Final = ">"


def subject_matches(subject_filter: str, subject: str) -> bool:
    """Whether the concrete `subject` matches `subject_filter`."""
    tokens = subject.split(".")
    for index, wanted in enumerate(subject_filter.split(".")):
        if wanted == REST:
            return len(tokens) > index
        if index >= len(tokens) or wanted not in (ONE, tokens[index]):
            return False
    return len(tokens) == len(subject_filter.split("."))


def filters_overlap(first: str, second: str) -> bool:
    """Whether some concrete subject matches both filters."""
    left, right = first.split("."), second.split(".")
    for mine, theirs in zip(left, right, strict=False):
        if REST in (mine, theirs):
            # `>` takes whatever the other filter still needs: at least one token, which it has.
            return True
        if ONE not in (mine, theirs) and mine != theirs:
            return False
    # Neither ended in `>`, so a common subject has exactly as many tokens as each filter.
    return len(left) == len(right)
