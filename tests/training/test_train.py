"""Training runs end to end, writes loadable checkpoints, and resumes exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from semisam.schemas import (
    CONFIDENCE_SCALE,
    CheckpointError,
    ConfigError,
    RoundConfig,
    RoundMeta,
    StudentSpec,
    TrainConfig,
    VolumeRecord,
    VolumeStatus,
)
from semisam.store import (
    list_metas,
    open_store,
    read_reference,
    write_outputs,
    write_record,
    write_round_meta,
)
from semisam.training import load_state, state_path, train_student
from semisam.workers.student import load_student, read_checkpoint

SMALL = StudentSpec(channels=(4, 8, 16), strides=(2, 2), num_res_units=0, patch_size=(16, 16, 16))


def _config(iterations: int = 6, **kw) -> TrainConfig:
    cfg = TrainConfig(student=SMALL, iterations=iterations, checkpoint_every=3, seed=11, **kw)
    cfg.batch.labeled, cfg.batch.unlabeled, cfg.batch.foreground_prob = 1, 1, 0.5
    cfg.mean_teacher.ramp_unit = cfg.sam.ramp_unit = 1
    cfg.mean_teacher.ramp_length = cfg.sam.ramp_length = 4
    return cfg


def fake_round(store, round_index: int = 1) -> None:
    """A round written through the store API: reference masks as pseudo-labels, random confidence."""
    root = open_store(store)
    write_round_meta(root, RoundMeta(round=round_index, config=RoundConfig(masker={"kind": "random_walker"}).model_dump(mode="json"),
                                     fingerprint="f" * 64, student_checkpoint="x.pt", student_sha256="0" * 64))
    rng = np.random.default_rng(round_index)
    for meta in list_metas(root):
        if meta.labeled:
            continue
        ref = read_reference(root, meta.volume_id)
        conf = rng.integers(0, CONFIDENCE_SCALE + 1, ref.shape).astype(np.uint8)
        sums = write_outputs(root, round_index, meta.volume_id, ref, conf, 2)
        write_record(root, round_index, VolumeRecord(volume_id=meta.volume_id, status=VolumeStatus.done,
                                                     checksums=sums))


def _weights(path) -> dict[str, torch.Tensor]:
    return load_student(path)[0].state_dict()


def test_resume_reproduces_uninterrupted_run(phantom_store, tmp_path):
    cfg = _config()
    straight = train_student(phantom_store, tmp_path / "a.pt", cfg)

    class Interrupt(Exception):
        pass

    def stop_after_4(iteration, info):
        if iteration == 4:
            raise Interrupt

    with pytest.raises(Interrupt):
        train_student(phantom_store, tmp_path / "b.pt", cfg, on_step=stop_after_4)
    assert load_state(state_path(tmp_path / "b.pt"))["iteration"] == 3
    resumed = train_student(phantom_store, tmp_path / "b.pt", cfg, resume=True)
    assert resumed.started_at == 3 and straight.started_at == 0
    a, b = _weights(tmp_path / "a.pt"), _weights(tmp_path / "b.pt")
    for key in a:
        assert torch.equal(a[key], b[key]), key
    ema_a = load_state(state_path(tmp_path / "a.pt"))["ema"]
    ema_b = load_state(state_path(tmp_path / "b.pt"))["ema"]
    assert all(torch.equal(ema_a[k], ema_b[k]) for k in ema_a)


def test_resuming_a_finished_run_leaves_its_student_as_it_is(phantom_store, tmp_path):
    out = tmp_path / "s.pt"
    cfg = _config(iterations=3)
    train_student(phantom_store, out, cfg)
    terms, stamp = read_checkpoint(out)["meta"]["final_terms"], out.stat().st_mtime_ns
    assert terms  # the last step's losses
    again = train_student(phantom_store, out, cfg, resume=True)
    assert again.started_at == 3 and again.checkpoint == out
    assert out.stat().st_mtime_ns == stamp and read_checkpoint(out)["meta"]["final_terms"] == terms
    # a student that is not this run's export (another run's file in its place) is written again
    train_student(phantom_store, tmp_path / "other.pt", _config(iterations=2))
    (tmp_path / "other.pt").replace(out)
    train_student(phantom_store, out, cfg, resume=True)
    assert read_checkpoint(out)["meta"]["iteration"] == 3


def test_checkpoints_carry_config_iteration_fingerprint(phantom_store, tmp_path):
    cfg = _config(iterations=3)
    train_student(phantom_store, tmp_path / "s.pt", cfg)
    _, spec, meta = load_student(tmp_path / "s.pt")  # what a round's worker does
    assert spec == SMALL and meta["iteration"] == 3 and len(meta["store_fingerprint"]) == 64
    assert TrainConfig.model_validate(meta["config"]) == cfg
    state = read_checkpoint(state_path(tmp_path / "s.pt"))  # weights_only=True
    assert state["iteration"] == 3 and state["store_fingerprint"] == meta["store_fingerprint"]
    assert state["config"] == cfg.model_dump(mode="json") and state["round"] is None


def test_resume_refuses_other_config_or_store(phantom_store, tmp_path):
    train_student(phantom_store, tmp_path / "s.pt", _config(iterations=3))
    other = _config(iterations=3)
    other.mean_teacher.weight = 0.5
    with pytest.raises(CheckpointError, match="mean_teacher"):
        train_student(phantom_store, tmp_path / "s.pt", other, resume=True)
    fake_round(phantom_store)
    with pytest.raises(CheckpointError, match="round"):
        train_student(phantom_store, tmp_path / "s.pt", _config(iterations=3), round_index=1, resume=True)
    root = open_store(phantom_store)
    meta = list_metas(root)[-1]
    root[f"volumes/{meta.volume_id}"].attrs["meta"] = {**meta.model_dump(mode="json"), "sha256": "changed"}
    with pytest.raises(CheckpointError, match="store changed"):
        train_student(phantom_store, tmp_path / "s.pt", _config(iterations=3), resume=True)


def test_training_with_a_round_uses_the_sam_term(phantom_store, tmp_path):
    with pytest.raises(ConfigError, match="round 1"):
        train_student(phantom_store, tmp_path / "s.pt", _config(iterations=2), round_index=1)
    fake_round(phantom_store)
    seen = []
    result = train_student(phantom_store, tmp_path / "s.pt", _config(iterations=2), round_index=1,
                           on_step=lambda i, info: seen.append(info))
    assert all("sam" in info and info["sam"] > 0 and info["w_sam"] > 0 for info in seen)
    assert result.last["sam"] == seen[-1]["sam"]
    assert load_student(tmp_path / "s.pt")[2]["round"] == 1


def test_supervised_only_draws_no_unlabeled_patches(phantom_store, tmp_path):
    cfg = _config(iterations=2)
    cfg.mean_teacher.enabled = False
    seen = []
    train_student(phantom_store, tmp_path / "s.pt", cfg, on_step=lambda i, info: seen.append(info))
    assert seen and all(set(info) == {"ce", "dice", "loss", "lr"} for info in seen)


def test_train_cli_with_config_and_resume(phantom_store, tmp_path):
    import json

    from typer.testing import CliRunner

    from semisam.pipeline.cli import app

    config = tmp_path / "train.json"
    config.write_text(json.dumps(_config(iterations=2).model_dump(mode="json")))
    out = tmp_path / "cli.pt"
    runner = CliRunner()
    proc = runner.invoke(app, ["train", str(phantom_store), "--out", str(out), "--config", str(config),
                               "--no-progress"])
    assert proc.exit_code == 0, proc.output
    assert load_student(out)[2]["iteration"] == 2
    proc = runner.invoke(app, ["train", str(phantom_store), "--out", str(out), "--config", str(config),
                               "--resume", "--iterations", "3", "--no-progress"])
    assert proc.exit_code == 2 and "another config" in proc.output  # iterations differ: refused
    proc = runner.invoke(app, ["train", str(phantom_store), "--out", str(out), "--round", "4",
                               "--config", str(config), "--no-progress"])
    assert proc.exit_code == 2 and "round 4" in proc.output


@pytest.mark.parametrize("student", [
    StudentSpec(architecture="monai.VNet", patch_size=(32, 32, 32)),  # the smallest VNet patch
    StudentSpec(architecture="monai.DynUNet", channels=(4, 8, 16), strides=(2, 2),
                num_res_units=1, patch_size=(16, 16, 16)),
], ids=["vnet", "dynunet"])
def test_training_accepts_vnet_and_dynunet(phantom_store, tmp_path, student):
    """Mean Teacher + supervised steps on 48x48x32 phantoms; the checkpoint holds that network."""
    cfg = _config(iterations=2)
    cfg.student = student
    seen = []
    train_student(phantom_store, tmp_path / "s.pt", cfg, on_step=lambda i, info: seen.append(info))
    assert len(seen) == 2 and all(np.isfinite(info["loss"]) for info in seen)
    model, spec, meta = load_student(tmp_path / "s.pt")
    assert spec == student and meta["iteration"] == 2
    assert type(model).__name__ == student.architecture.removeprefix("monai.")


def test_patch_validator_uses_16_for_vnet_and_the_strides_otherwise(tmp_path):
    """VNet ignores ``strides``: a patch of 48 fits it although the strides multiply to 32."""
    import json

    from semisam.schemas.training import load_train_config

    vnet = StudentSpec(architecture="monai.VNet", strides=(2, 2, 2, 2, 2), patch_size=(48, 48, 32))
    assert TrainConfig(student=vnet).student.size_divisor == 16
    dyn = StudentSpec(architecture="monai.DynUNet", channels=(4, 8, 16), strides=(2, 4),
                      patch_size=(16, 16, 12))
    with pytest.raises(ValueError, match=r"product of the strides \(8\)"):
        TrainConfig(student=dyn)
    config = tmp_path / "train.json"  # what `semisam train --config` reads
    config.write_text(json.dumps({"student": {"architecture": "monai.VNet",
                                              "patch_size": [112, 112, 81]}}))
    with pytest.raises(ConfigError, match="field 'student'.*patch_size.*16"):
        load_train_config(config)
    config.write_text(json.dumps({"student": {"architecture": "monai.VNet",
                                              "patch_size": [112, 112, 80]}}))
    assert load_train_config(config).student.architecture == "monai.VNet"
