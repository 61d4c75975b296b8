"""`semisam loop`: alternate training and pseudo-labelling for K rounds, resumably.

Steps, in order (``r = 0 .. K``)::

    adapt r      the masker adapted to the labeled volumes (r >= 1, with ``adapt`` in the
                 config; + round r-1's confident pseudo-labels with adapt_on_pseudo_labels)
    round r      run-round r with student r-1        (r >= 1; resumes from the store's records)
    train r      student r: labeled + Mean Teacher (+ round r's pseudo-labels when r >= 1)
                 (resumes from student_r.pt.state.pt)
    evaluate r   student r on the held-out volumes; round r's pseudo-label Dice

The loop's state (``WORKDIR/loop.json``: config, finished steps, table rows) is written after
every step, so an interrupted loop, rerun with the same arguments, resumes at the step it was in.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import ray
from pydantic import Field

from semisam.schemas import (
    ConfigError,
    InputError,
    LoopConfig,
    PseudoLabelSelection,
    RoundConfig,
    StrictModel,
    VolumeStatus,
    utcnow,
)
from semisam.store import (
    list_metas,
    open_store,
    read_class_map,
    read_output,
    read_record,
    read_reference,
)
from semisam.training import train_student
from semisam.training.adaptation import adapt_masker
from semisam.training.dataset import check_volume_ids
from semisam.training.mean_teacher import StepCallback
from semisam.training.metrics import class_dice
from semisam.workers.maskers.registry import masker_spec

from .evaluate import evaluate_student
from .rounds.driver import run_round, start_ray
from .rounds.interrupt import sigterm_as_interrupt

log = logging.getLogger(__name__)

STATE_FILE = "loop.json"


class LoopRow(StrictModel):
    """One line of the loop's table: student r and the round that fed it."""

    round: int
    student: str
    dice: float | None = None
    hd95_mm: float | None = None
    hd95_voxels: float | None = None
    evaluated: int = Field(0, description="held-out volumes evaluated")
    pseudo_label_dice: float | None = Field(None, description="round r pseudo-labels vs reference")
    round_seconds: float = 0.0
    train_seconds: float = 0.0

    @property
    def seconds(self) -> float:
        return self.round_seconds + self.train_seconds


class LoopState(StrictModel):
    """``WORKDIR/loop.json``."""

    store: str
    config: dict
    holdout: list[str] = Field(default_factory=list)
    eval_store: str | None = None
    steps: dict[str, float] = Field(default_factory=dict, description="finished step -> seconds")
    rows: list[LoopRow] = Field(default_factory=list)
    updated_at: str = Field(default_factory=utcnow)


def default_workdir(store: str | Path) -> Path:
    """``data.zarr`` -> ``data.zarr.loop`` (local stores only)."""
    if "://" in str(store):
        raise ConfigError(f"{store}: give --workdir for a store behind a URL")
    return Path(str(store).rstrip("/") + ".loop")


def load_loop_state(workdir: Path, fresh: LoopState) -> LoopState:
    """The saved state when it belongs to the same loop, else ``fresh``.

    Raises:
        ConfigError: the workdir holds a loop with another store, config or held-out set.
    """
    path = workdir / STATE_FILE
    if not path.is_file():
        return fresh
    saved = LoopState.model_validate_json(path.read_text())
    try:  # through the model, so fields added later with their defaults still compare equal
        saved.config = LoopConfig.model_validate(saved.config).model_dump(mode="json")
    except ValueError:
        pass
    for name in ("store", "config", "holdout", "eval_store"):
        if getattr(saved, name) != getattr(fresh, name):
            raise ConfigError(f"{path}: holds a loop with another {name}; use another --workdir")
    return saved


def save_loop_state(workdir: Path, state: LoopState) -> None:
    state.updated_at = utcnow()
    tmp = workdir / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state.model_dump(mode="json"), indent=2))
    tmp.replace(workdir / STATE_FILE)


def pseudo_label_dice(store: str | Path, round_index: int) -> float | None:
    """Mean Dice of round ``round_index``'s pseudo-labels against the references that exist
    (multi-class stores: per volume the mean over the classes of each class's Dice)."""
    root = open_store(store, read_only=True)
    classes = read_class_map(root)
    scores = []
    for meta in list_metas(root):
        record = None if meta.labeled else read_record(root, round_index, meta.volume_id)
        if record is None or record.status != VolumeStatus.done:
            continue
        ref = read_reference(root, meta.volume_id)
        if ref is not None:
            label = read_output(root, round_index, "pseudo_label", meta.volume_id)
            scores.append(class_dice(label, ref, classes.values if classes.multiclass else None))
    return float(np.mean(scores)) if scores else None


class Loop:
    """Runs the steps of one loop, skipping those already finished.

    Args:
        store: the training store.
        config: training and round configs.
        workdir: students, their resume states and ``loop.json``.
        holdout: ids of ``store`` never trained on, evaluated after each student.
        eval_store: a separate store whose volumes with ground truth are evaluated instead.
    """

    def __init__(self, store: str | Path, config: LoopConfig, workdir: Path,
                 holdout: list[str] | None = None, eval_store: str | Path | None = None,
                 address: str | None = None, show_progress: bool = False,
                 on_step: StepCallback | None = None) -> None:
        if holdout and eval_store:
            raise ConfigError("give either --holdout or --eval-store, not both")
        self.store, self.config, self.workdir = str(store), config, Path(workdir)
        self.holdout, self.eval_store = list(holdout or []), (str(eval_store) if eval_store else None)
        self.address, self.show_progress, self.on_step = address, show_progress, on_step
        self.train_config = config.train.model_copy(deep=True)
        self.train_config.exclude = sorted(set(self.train_config.exclude) | set(self.holdout))
        self.workdir.mkdir(parents=True, exist_ok=True)
        fresh = LoopState(store=self.store, config=config.model_dump(mode="json"),
                          holdout=self.holdout, eval_store=self.eval_store)
        self.state = load_loop_state(self.workdir, fresh)
        self._ray_started = False

    def student(self, r: int) -> Path:
        return self.workdir / f"student_{r}.pt"

    def _step(self, name: str, fn: Callable[[int], float | None], r: int) -> float:
        """Run ``fn(r)`` unless step ``name`` is recorded as finished; record it after, with the
        seconds ``fn`` returns (a resumed training counts its earlier part) or its wall time."""
        if name in self.state.steps:
            log.info("loop: %s already done", name)
            return self.state.steps[name]
        log.info("loop: %s", name)
        t0 = time.perf_counter()
        with sigterm_as_interrupt():  # again per step: a round's Ray start replaces the handler
            seconds = fn(r)
        self.state.steps[name] = round(time.perf_counter() - t0 if seconds is None else seconds, 2)
        save_loop_state(self.workdir, self.state)
        return self.state.steps[name]

    def masker(self, r: int) -> Path:
        """The masker adapted before round ``r`` (with ``config.adapt``)."""
        return self.workdir / f"masker_{r}.pth"

    def round_config(self, r: int) -> RoundConfig:
        """Round ``r``'s config: the loop's, with the adapted masker when ``config.adapt``."""
        if self.config.adapt is None:
            return self.config.round
        cfg = self.config.round.model_copy(deep=True)
        masker_spec(cfg.masker.kind).set_checkpoint(cfg.masker, self.masker(r))
        return cfg

    def _adapt(self, r: int) -> float:
        cfg = self.config.adapt
        assert cfg is not None
        if self.config.adapt_on_pseudo_labels and r >= 2:
            selection = cfg.pseudo_labels or PseudoLabelSelection(round=r - 1)
            cfg = cfg.model_copy(update={"pseudo_labels": selection.model_copy(
                update={"round": r - 1})})
        return adapt_masker(self.store, self.masker(r), cfg, self.config.round,
                            resume=True).seconds

    def _round(self, r: int) -> None:
        if not ray.is_initialized():
            self._ray_started = start_ray(self.address, self.config.round)
        summary = run_round(self.store, r, self.student(r - 1), self.round_config(r),
                            address=self.address, show_progress=self.show_progress)
        if summary.failed or summary.pending:
            log.warning("round %d: %d failed, %d pending volumes (trained without them)",
                        r, summary.failed, summary.pending)

    def _train(self, r: int) -> float:
        init = self.student(r - 1) if self.config.warm_start and r > 0 else None
        result = train_student(self.store, self.student(r), self.train_config, round_index=r or None,
                               resume=True, init=init, on_step=self.on_step)
        return result.seconds

    def _evaluate(self, r: int) -> None:
        row = LoopRow(round=r, student=str(self.student(r)),
                      round_seconds=self.state.steps.get(f"round {r}", 0.0),
                      train_seconds=self.state.steps.get(f"train {r}", 0.0))
        if r > 0:
            row.pseudo_label_dice = pseudo_label_dice(self.store, r)
        if self.eval_store or self.holdout:
            report = evaluate_student(self.eval_store or self.store, self.student(r),
                                      None if self.eval_store else self.holdout)
            row.dice, row.evaluated = report.mean("dice"), len(report.cases)
            row.hd95_mm, row.hd95_voxels = report.mean("hd95_mm"), report.mean("hd95_voxels")
        self.state.rows = [x for x in self.state.rows if x.round != r] + [row]
        log.info("student %d: Dice %s, pseudo-label Dice %s", r, row.dice, row.pseudo_label_dice)

    def check_lists(self) -> None:
        """Before student 0 trains: every ``--holdout`` id is a volume of the store with ground
        truth, and every ``train.exclude`` id is a volume of the store (`InputError`, one line
        naming the list and the id)."""
        from .evaluate import select_volumes

        root = open_store(self.store, read_only=True)
        lists = {"--holdout": self.holdout, "train.exclude": self.config.train.exclude}
        for name, ids in lists.items():
            try:
                if name == "--holdout" and ids:
                    select_volumes(root, ids)
                else:
                    check_volume_ids(list(ids), list_metas(root))
            except InputError as exc:
                raise InputError(f"{name}: {exc}") from None

    def run(self, rounds: int) -> LoopState:
        """Students 0..``rounds`` with rounds 1..``rounds`` in between; returns the final state."""
        if rounds < 0:
            raise ConfigError(f"--rounds must be >= 0, got {rounds}")
        if not (self.holdout or self.eval_store):
            log.warning("no --holdout or --eval-store: students are not evaluated")
        self.check_lists()
        try:
            for r in range(rounds + 1):
                if r > 0 and self.config.adapt is not None:
                    self._step(f"adapt {r}", self._adapt, r)
                if r > 0:
                    self._step(f"round {r}", self._round, r)
                self._step(f"train {r}", self._train, r)
                self._step(f"evaluate {r}", self._evaluate, r)
        finally:
            if self._ray_started:
                ray.shutdown()
        write_table(self.workdir / "loop_table.md", self.state)
        return self.state


def table_lines(state: LoopState) -> list[str]:
    """The loop table as Markdown lines."""
    def fmt(v: float | None, digits: int = 3) -> str:
        return "-" if v is None else f"{v:.{digits}f}"

    lines = ["| round | Dice | 95HD (mm) | pseudo-label Dice | seconds |", "|---|---|---|---|---|"]
    for row in sorted(state.rows, key=lambda x: x.round):
        lines.append(f"| {row.round} | {fmt(row.dice)} | {fmt(row.hd95_mm, 2)} | "
                     f"{fmt(row.pseudo_label_dice)} | {row.seconds:.0f} |")
    return lines


def write_table(path: Path, state: LoopState) -> Path:
    path.write_text("\n".join(table_lines(state)) + "\n")
    return path


def run_loop(store: str | Path, rounds: int, config: LoopConfig | None = None,
             workdir: Path | None = None, holdout: list[str] | None = None,
             eval_store: str | Path | None = None, address: str | None = None,
             show_progress: bool = False, on_step: StepCallback | None = None) -> LoopState:
    """Student 0 -> round 1 -> student 1 -> ... -> student ``rounds`` (see the module docstring)."""
    loop = Loop(store, config or LoopConfig(), workdir or default_workdir(store), holdout,
                eval_store, address, show_progress, on_step)
    return loop.run(rounds)
