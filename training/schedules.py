"""Schedules over iterations: loss-weight ramps, learning rate, EMA decay.

All are pure functions of the iteration, so a resumed run recomputes them exactly.
"""

from __future__ import annotations

import math

from semisam.schemas import (
    LrSchedule,
    MeanTeacherConfig,
    OptimizerConfig,
    RampSchedule,
    SamConsistencyConfig,
)


def sigmoid_rampup(current: float, length: float) -> float:
    """``exp(-5 (1 - t)^2)`` with ``t = clip(current / length, 0, 1)`` (Laine & Aila 2017).

    Returns 1 when ``length`` is 0; ``exp(-5) ~ 0.0067`` at ``current = 0``.
    """
    if length <= 0:
        return 1.0
    phase = 1.0 - min(max(current, 0.0), length) / length
    return float(math.exp(-5.0 * phase * phase))


def ramp_weight(weight: float, schedule: RampSchedule, length: float, unit: int,
                iteration: int, total: int) -> float:
    """A loss weight at ``iteration`` (0-based) of ``total``.

    ``rampup``: ``weight * sigmoid_rampup(iteration // unit, length)`` (SemiSAM/UA-MT consistency);
    ``rampdown``: ``weight * sigmoid_rampup((total - iteration) // unit, length)`` (SemiSAM's SAM
    term: full weight early, when the student is poor and SAM helps most, fading out);
    ``constant``: ``weight``.
    """
    if schedule == RampSchedule.constant:
        return float(weight)
    steps = iteration if schedule == RampSchedule.rampup else total - iteration
    return float(weight) * sigmoid_rampup(float(steps // unit), length)


def consistency_weight(config: MeanTeacherConfig, iteration: int, total: int) -> float:
    """Mean Teacher consistency weight at ``iteration``."""
    return ramp_weight(config.weight, config.schedule, config.ramp_length, config.ramp_unit,
                       iteration, total)


def sam_weight(config: SamConsistencyConfig, iteration: int, total: int) -> float:
    """SAM consistency weight at ``iteration`` (default: SemiSAM's ramp-down)."""
    return ramp_weight(config.weight, config.schedule, config.ramp_length, config.ramp_unit,
                       iteration, total)


def learning_rate(config: OptimizerConfig, iteration: int, total: int) -> float:
    """Learning rate for the update made at ``iteration`` (0-based) of ``total``.

    ``step``: SemiSAM/UA-MT set ``lr * gamma ** (t // step_every)`` after update ``t``
    (1-based), so update ``i`` (0-based) uses ``i // step_every``; ``poly``: ``lr * (1 - i / T) ** p``.
    """
    if config.schedule == LrSchedule.step:
        return config.lr * config.step_gamma ** (iteration // config.step_every)
    if config.schedule == LrSchedule.poly:
        return config.lr * max(0.0, 1.0 - iteration / total) ** config.poly_power
    return config.lr


def ema_decay(decay: float, iteration: int) -> float:
    """EMA decay used after update ``iteration``: the true average until it is more correct,
    ``min(1 - 1 / (iteration + 1), decay)`` (Tarvainen & Valpola 2017)."""
    return min(1.0 - 1.0 / (iteration + 1), decay)
