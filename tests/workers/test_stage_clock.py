"""`StageClock`: seconds per stage summed over the stage's blocks, stages listed up front kept in
order at 0.0, a block that raises still counted."""

from __future__ import annotations

import pytest

from semisam.workers.stage_clock import StageClock
from semisam.workers.volume import STAGES


def test_stages_start_at_zero_in_order_and_sum_over_blocks() -> None:
    clock = StageClock(*STAGES)
    assert list(clock.seconds) == list(STAGES) and set(clock.seconds.values()) == {0.0}
    with clock("masker"):
        pass
    first = clock.seconds["masker"]
    with clock("masker"):
        pass
    assert clock.seconds["masker"] >= first >= 0.0
    assert list(clock.seconds) == list(STAGES)  # a listed stage keeps its place
    with clock("extra"):
        pass
    assert list(clock.seconds)[-1] == "extra"


def test_a_block_that_raises_is_counted() -> None:
    clock = StageClock()
    with pytest.raises(ValueError), clock("read"):
        raise ValueError("bad volume")
    assert "read" in clock.seconds and clock.seconds["read"] >= 0.0
