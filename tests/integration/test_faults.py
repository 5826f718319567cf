"""Every fault scenario with a short load: each task ends with exactly one terminal event in
WORKFLOW_HISTORY, within the scenario's bound (`make faults` runs them with 2,000 tasks)."""

from __future__ import annotations

from pathlib import Path
from typing import Final

import pytest

from tests.faults.scenarios import SCENARIOS, bound_for

pytestmark = pytest.mark.integration

SHORT_LOAD: Final = 250


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_every_task_has_exactly_one_terminal_event_in_time_when(
    name: str, tmp_path: Path
) -> None:
    result = await SCENARIOS[name](tmp_path, SHORT_LOAD)

    assert (result.lost, result.duplicated, result.unexpected) == (0, 0, 0), result
    assert result.finished, result
    assert result.total_s <= bound_for(SHORT_LOAD)
