"""The masker registry is the one place that knows what a masker kind implies.

A toy spec registered here (no pipeline file edited) is what the round's checkpoint
resolution, fingerprint, driver-side vetting, ``--masker-checkpoint`` handling and builder use.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from semisam.pipeline.rounds.state import check_checkpoints, current_fingerprint, masker_checkpoint
from semisam.schemas import CheckpointError, ConfigError, MaskerConfig, RoundConfig
from semisam.workers.maskers import SPECS, MaskerSpec, build_masker, masker_spec, register
from semisam.workers.maskers.random_walker import RandomWalkerMasker
from tests.conftest import untrained_student

TOY_WEIGHTS = "toy-masker-weights"
TOY_FILE: list[Path] = []  # where the toy kind's weights lie (set by the fixture)


def _toy_checkpoint(config: MaskerConfig) -> Path | None:
    """The toy kind's weights file (a real spec would read its config section)."""
    return TOY_FILE[0]


def _toy_vet(config: MaskerConfig) -> None:
    path = _toy_checkpoint(config)
    if not path.is_file() or path.read_text() != TOY_WEIGHTS:
        raise CheckpointError(f"{path}: not a toy masker checkpoint")


@pytest.fixture
def toy_spec(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> MaskerSpec:
    """A spec with a checkpoint and its own vetting, registered for ``random_walker``."""
    monkeypatch.setitem(SPECS, "random_walker", SPECS["random_walker"])  # restored afterwards
    monkeypatch.setattr(sys.modules[__name__], "TOY_FILE", [tmp_path / "toy.bin"])
    return register(MaskerSpec("random_walker", "random_walker",
                               build=lambda c, d: RandomWalkerMasker(c.random_walker),
                               checkpoint=_toy_checkpoint, vet=_toy_vet))


def test_round_bookkeeping_follows_the_registered_spec(toy_spec, tmp_path):
    student_ckpt_path = untrained_student(tmp_path / "student.pt", 2, None)
    cfg = RoundConfig().with_overrides({"masker.kind": "random_walker"})
    (tmp_path / "toy.bin").write_text("something else")
    assert masker_checkpoint(cfg) == tmp_path / "toy.bin"
    with pytest.raises(CheckpointError, match="toy.bin: not a toy masker checkpoint"):
        check_checkpoints(cfg, student_ckpt_path)
    before = current_fingerprint(cfg, student_ckpt_path)
    (tmp_path / "toy.bin").write_text(TOY_WEIGHTS)
    check_checkpoints(cfg, student_ckpt_path)  # vetted by the spec, then the student loads
    after = current_fingerprint(cfg, student_ckpt_path)
    assert after[2] is not None and after[2] != before[2]  # the masker's bytes are hashed
    assert after[0] != before[0]
    assert isinstance(build_masker(cfg.masker), RandomWalkerMasker)


def test_builtin_kinds_keep_their_checkpoint_rules(tmp_path):
    ckpt = tmp_path / "sam.pth"
    for kind in ("sam", "litemedsam"):
        cfg = RoundConfig().with_overrides({"masker.kind": kind})
        spec = masker_spec(cfg.masker.kind)
        assert spec.given_checkpoint(cfg.masker) is None
        spec.set_checkpoint(cfg.masker, ckpt)
        assert masker_checkpoint(cfg) == ckpt == spec.given_checkpoint(cfg.masker)
        assert "checkpoint" in spec.fingerprint_exclusions
        assert "checkpoint" not in cfg.fingerprint_payload()["masker"][spec.section]
    walker = RoundConfig().with_overrides({"masker.kind": "random_walker"})
    with pytest.raises(ConfigError, match="random_walker masker takes no checkpoint"):
        masker_spec("random_walker").set_checkpoint(walker.masker, ckpt)
    assert masker_checkpoint(walker) is None
    assert masker_spec("litemedsam").defaults["prompts"]["positive_points"] == 0
    assert masker_spec("random_walker").defaults == {}


def test_unknown_kind_is_one_line():
    with pytest.raises(ConfigError, match="field 'masker.kind': unknown masker 'nope'"):
        masker_spec("nope")


def test_with_overrides_gives_the_chosen_maskers_defaults():
    default = RoundConfig()
    walker = default.with_overrides({"masker.kind": "random_walker", "runtime.workers": None})
    assert default.prompts.positive_points == 0  # LiteMedSAM's
    assert walker.prompts.positive_points == RoundConfig.model_fields["prompts"].default_factory(
    ).positive_points
    assert default.masker.kind == "litemedsam"  # the original is not mutated
    with pytest.raises(ConfigError, match="^option: "):
        default.with_overrides({"runtime.workers": -3})


def test_round_bookkeeping_imports_no_torch():
    code = ("import sys, semisam.pipeline.rounds.state, semisam.pipeline.commands.round; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
