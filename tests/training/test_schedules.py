"""Ramps, learning rate and EMA decay follow SemiSAM / UA-MT."""

from __future__ import annotations

import math

import pytest

from semisam.schemas import LrSchedule, MeanTeacherConfig, OptimizerConfig, SamConsistencyConfig
from semisam.training import schedules


def test_sigmoid_rampup():
    assert schedules.sigmoid_rampup(0, 40) == pytest.approx(math.exp(-5))
    assert schedules.sigmoid_rampup(20, 40) == pytest.approx(math.exp(-5 * 0.25))
    assert schedules.sigmoid_rampup(40, 40) == schedules.sigmoid_rampup(99, 40) == 1.0
    assert schedules.sigmoid_rampup(3, 0) == 1.0


def test_semisam_weights_on_la_defaults():
    mt, sam = MeanTeacherConfig(), SamConsistencyConfig()
    assert schedules.consistency_weight(mt, 0, 6000) == pytest.approx(0.1 * math.exp(-5))
    assert schedules.consistency_weight(mt, 149, 6000) == schedules.consistency_weight(mt, 0, 6000)
    assert schedules.consistency_weight(mt, 6000, 6000) == pytest.approx(0.1)
    # SAM: 0.1 * sigmoid_rampup((6000 - t) // 150, 40): full weight first, ramping down
    assert schedules.sam_weight(sam, 0, 6000) == pytest.approx(0.1)
    assert schedules.sam_weight(sam, 3000, 6000) == pytest.approx(0.1 * math.exp(-5 * 0.25))
    assert schedules.sam_weight(sam, 5999, 6000) == pytest.approx(0.1 * math.exp(-5))
    assert schedules.sam_weight(sam.model_copy(update={"schedule": "constant"}), 5999, 6000) == 0.1


def test_learning_rate():
    step = OptimizerConfig()
    assert schedules.learning_rate(step, 2499, 6000) == pytest.approx(0.01)
    assert schedules.learning_rate(step, 2500, 6000) == pytest.approx(0.001)
    assert schedules.learning_rate(step, 5000, 6000) == pytest.approx(0.0001)
    poly = OptimizerConfig(schedule=LrSchedule.poly)
    assert schedules.learning_rate(poly, 0, 100) == pytest.approx(0.01)
    assert schedules.learning_rate(poly, 50, 100) == pytest.approx(0.01 * 0.5 ** 0.9)


def test_ema_decay_is_true_average_first():
    assert schedules.ema_decay(0.99, 0) == 0.0
    assert schedules.ema_decay(0.99, 1) == 0.5
    assert schedules.ema_decay(0.99, 10_000) == 0.99
