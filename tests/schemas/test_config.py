import json
from pathlib import Path

import pytest

from semisam.schemas import (
    ConfigError,
    FusionMode,
    InputError,
    RoundConfig,
    SamConfig,
    load_round_config,
    validate_volume_id,
)


def test_defaults_validate_and_round_trip():
    cfg = RoundConfig()
    again = RoundConfig.model_validate(json.loads(cfg.model_dump_json()))
    assert again == cfg


def test_unknown_field_names_file_and_field(tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"prompts": {"box_margn": 3}}))
    with pytest.raises(ConfigError) as exc:
        load_round_config(path)
    msg = str(exc.value)
    assert str(path) in msg and "prompts.box_margn" in msg and "\n" not in msg


def test_wrong_type_names_field(tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"runtime": {"workers": "many"}}))
    with pytest.raises(ConfigError, match="runtime.workers"):
        load_round_config(path)


def test_not_json(tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text("{nope")
    with pytest.raises(ConfigError, match="not a readable JSON config"):
        load_round_config(path)


def test_percentiles_must_be_ordered():
    with pytest.raises(ValueError, match="percentile_low must be < percentile_high"):
        RoundConfig.model_validate({"intensity": {"percentile_low": 99, "percentile_high": 1}})


def test_fingerprint_ignores_runtime_and_paths():
    a, b = RoundConfig(), RoundConfig()
    b.runtime.workers = 7
    b.masker.sam.checkpoint = "/somewhere/else.pth"
    b.masker.sam.compile_cache_dir = "/cache"
    b.masker.sam.compile_mode = "max-autotune-no-cudagraphs"
    assert a.fingerprint_payload() == b.fingerprint_payload()
    b.prompts.box_margin = 9
    assert a.fingerprint_payload() != b.fingerprint_payload()


def test_compile_mode_choices():
    assert SamConfig(compile_mode="max-autotune-no-cudagraphs").compile_mode.startswith("max")
    with pytest.raises(ValueError, match="compile_mode"):
        SamConfig(compile_mode="reduce-overhead")


@pytest.mark.parametrize("bad", ["a/b", "..", "a..b", "x\x01y", "", ".hidden", "a b", "a\\b"])
def test_unsafe_volume_ids_rejected(bad):
    with pytest.raises(InputError, match="not a safe path segment"):
        validate_volume_id(bad)


@pytest.mark.parametrize("good", ["la_001", "A4R1S23KR0KU2WSYHK2X", "hippocampus_001", "v-1.2"])
def test_safe_volume_ids_pass(good):
    assert validate_volume_id(good) == good


def test_example_loop_config_for_the_weight_free_masker_is_valid():
    """docs/examples/loop-weight-free.json (the README's recipe) validates and says what the
    README says it does."""
    from semisam.schemas import FusionMode, SamLoss, load_loop_config

    path = Path(__file__).resolve().parents[2] / "docs" / "examples" / "loop-weight-free.json"
    cfg = load_loop_config(path)
    assert cfg.warm_start and cfg.train.sam.loss == SamLoss.ce_dice
    assert not cfg.train.sam.confidence_weighted
    assert cfg.round.fusion.mode == FusionMode.average and cfg.round.student.flip_axes == (0, 1, 2)
    assert cfg.round.prompts.extra_axes == (0, 1)


def test_example_loop_config_for_an_adapted_masker_is_valid():
    """docs/examples/loop-adapted.json (the README's recipe with `semisam adapt`) validates:
    the masker adapted before every round, a CE + Dice SAM term of weight 1 on every voxel
    from the first step (c+'s recipe in benchmarks/la_adapt.py), students from random
    weights, the round left at its defaults."""
    from semisam.schemas import LoopConfig, RampSchedule, SamLoss, load_loop_config

    path = Path(__file__).resolve().parents[2] / "docs" / "examples" / "loop-adapted.json"
    cfg = load_loop_config(path)
    sam = cfg.train.sam
    assert cfg.adapt is not None and not cfg.warm_start
    assert (sam.enabled, sam.loss, sam.weight, sam.schedule, sam.confidence_weighted) == \
        (True, SamLoss.ce_dice, 1.0, RampSchedule.constant, False)
    assert cfg.round == LoopConfig().round


def test_gpu_recipe_in_the_throughput_guide_is_a_valid_round_config():
    """docs/throughput.md's JSON recipe validates, and asks for what the guide says it does."""
    import re

    text = (Path(__file__).resolve().parents[2] / "docs" / "throughput.md").read_text()
    recipe = json.loads(re.search(r"```json\n(.*?)```", text, re.S).group(1))
    cfg = RoundConfig.model_validate(recipe)
    assert (cfg.masker.sam.dtype, cfg.masker.sam.batch_size, cfg.masker.sam.compile) == \
        ("bfloat16", 32, True)
    assert cfg.runtime.workers * cfg.runtime.gpus_per_worker == 1.0


def test_litemedsam_rounds_get_the_masker_defaults_where_the_config_is_silent():
    from semisam.schemas import MaskerKind, RoundConfig

    cfg = RoundConfig()
    assert cfg.masker.kind == MaskerKind.litemedsam
    assert cfg.prompts.positive_points == 0 and cfg.prompts.propagate
    assert cfg.fusion.mode == FusionMode.average and cfg.fusion.largest_component
    assert cfg.fusion.min_student_agreement == 0.4
    kept = RoundConfig.model_validate({"prompts": {"positive_points": 2},
                                       "fusion": {"min_student_agreement": 0.0}})
    assert kept.prompts.positive_points == 2 and kept.fusion.min_student_agreement == 0.0
    walker = RoundConfig.model_validate({"masker": {"kind": "random_walker"}})
    assert walker.prompts.positive_points == 1 and not walker.prompts.propagate
    assert walker.fusion.mode == FusionMode.masker_on_prompted
    assert walker.fusion.min_student_agreement == 0.0


def test_masker_option_on_a_default_config_gives_that_maskers_defaults():
    """`run-round --masker random_walker` without a config: the random walker's defaults, the
    same round (fingerprint) as a config file that names the masker."""
    from semisam.pipeline.commands.round import round_config
    from semisam.schemas import RoundConfig

    by_option = round_config(None, {"masker.kind": "random_walker"})
    by_file = RoundConfig.model_validate({"masker": {"kind": "random_walker"}})
    assert by_option.fingerprint_payload() == by_file.fingerprint_payload()
    assert round_config(None, {}).fingerprint_payload() == RoundConfig().fingerprint_payload()


def test_embedding_cache_option_is_absolute_and_outside_the_fingerprint(tmp_path, monkeypatch):
    from semisam.pipeline.commands.round import round_config
    from semisam.schemas import LoopConfig, RoundConfig

    monkeypatch.chdir(tmp_path)
    cfg = round_config(None, {"masker.litemedsam.embedding_cache": "cache"})
    assert cfg.masker.litemedsam.embedding_cache == tmp_path / "cache"
    assert cfg.fingerprint_payload() == RoundConfig().fingerprint_payload()
    loop = LoopConfig()
    loop.round.masker.litemedsam.embedding_cache = Path("elsewhere")  # as `semisam loop` sets it
    assert loop.round.masker.litemedsam.embedding_cache == tmp_path / "elsewhere"
