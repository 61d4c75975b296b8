"""Resuming a round begun by an older semisam: its stored fingerprint was computed over the
config fields that version had, so it differs; the stored config decides instead."""

from __future__ import annotations

import pytest

from semisam.pipeline.rounds.state import checkpoints_vetted, current_fingerprint, plan_round
from semisam.schemas import RoundConfig, RoundError, VolumeRecord, VolumeStatus
from semisam.store import open_store, read_round_meta, write_record, write_round_meta


def _as_if_older(root, round_index: int, drop: tuple[str, ...], **changes) -> None:
    """Rewrite round ``round_index``'s meta as an older semisam would have left it: the config
    without the fields in ``drop`` (dotted paths), other values set by ``changes`` (dotted
    path -> value), and another fingerprint."""
    meta = read_round_meta(root, round_index)
    config = meta.config
    for dotted in drop:
        *parents, leaf = dotted.split(".")
        node = config
        for p in parents:
            node = node[p]
        del node[leaf]
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        node = config
        for p in parents:
            node = node[p]
        node[leaf] = value
    meta.config = config
    meta.fingerprint = "0" * 64
    write_round_meta(root, meta)


@pytest.fixture
def begun(phantom_store, trained_student):
    """Round 1 planned with the default config and one volume recorded done."""
    root = open_store(phantom_store)
    plan = plan_round(root, 1, RoundConfig(masker={"kind": "random_walker"}), trained_student)
    write_record(root, 1, VolumeRecord(volume_id=plan.todo[0], status=VolumeStatus.done))
    return root, plan.todo[0]


def test_fields_added_since_take_their_defaults_and_the_round_resumes(begun, trained_student,
                                                                      caplog):
    root, done_id = begun
    _as_if_older(root, 1, drop=("masker.sam.fp8", "fusion.masker_weight", "runtime.spread"))
    config = RoundConfig(masker={"kind": "random_walker"})
    assert checkpoints_vetted(root, 1, config, current_fingerprint(config, trained_student))
    plan = plan_round(root, 1, config, trained_student)
    assert plan.resumed and plan.done == [done_id] and done_id not in plan.todo
    assert "older semisam" in caplog.text
    assert read_round_meta(root, 1).fingerprint == current_fingerprint(config, trained_student)[0]


def test_a_different_value_is_still_refused(begun, trained_student):
    root, _ = begun
    _as_if_older(root, 1, drop=("masker.sam.fp8",), prompts__box_margin=9)
    config = RoundConfig(masker={"kind": "random_walker"})
    assert not checkpoints_vetted(root, 1, config, current_fingerprint(config, trained_student))
    with pytest.raises(RoundError, match="--force"):
        plan_round(root, 1, config, trained_student)


def test_a_field_that_no_longer_exists_is_refused(begun, trained_student):
    root, _ = begun
    _as_if_older(root, 1, drop=(), prompts__retired_option=3)
    with pytest.raises(RoundError, match="--force"):
        plan_round(root, 1, RoundConfig(masker={"kind": "random_walker"}), trained_student)


def test_other_checkpoint_bytes_are_refused(begun, trained_student, tmp_path):
    root, _ = begun
    _as_if_older(root, 1, drop=("masker.sam.fp8",))
    other = tmp_path / "student.pt"
    other.write_bytes(trained_student.read_bytes() + b"\0")
    config = RoundConfig(masker={"kind": "random_walker"})
    assert not checkpoints_vetted(root, 1, config, current_fingerprint(config, other))
    with pytest.raises(RoundError, match="--force"):
        plan_round(root, 1, config, other)


def test_a_round_begun_before_a_new_default_keeps_its_behaviour(begun, trained_student):
    """`prompts.component` came with the default 'prior'; a round begun before it ran 'largest'
    and resumes so with the same command; asking for 'prior' explicitly is another round."""
    from semisam.pipeline.rounds.state import keep_begun_behaviour

    root, done_id = begun
    _as_if_older(root, 1, drop=("prompts.component", "prompts.component_prior"))
    config = keep_begun_behaviour(root, 1, RoundConfig(masker={"kind": "random_walker"}))
    assert config.prompts.component == "largest"
    plan = plan_round(root, 1, config, trained_student)
    assert plan.resumed and plan.done == [done_id] and done_id not in plan.todo
    explicit = keep_begun_behaviour(root, 1, RoundConfig(masker={"kind": "random_walker"},
                                                         prompts={"component": "prior"}))
    assert explicit.prompts.component == "prior"
    with pytest.raises(RoundError, match="--force"):
        plan_round(root, 1, explicit, trained_student)


def test_a_round_whose_prior_had_no_box_resumes_unless_the_box_is_used(phantom_store,
                                                                         trained_student):
    """The prior's box (`StructurePrior.box`) and `prompts.prior_box` came later: a round begun
    before them resumes (unset, `prior_box` acts only with a masker adapted on loose boxes,
    which such a round cannot have had); set on, it is another round."""
    from semisam.workers.components import with_store_priors

    root = open_store(phantom_store)
    config = with_store_priors(RoundConfig(masker={"kind": "random_walker"}), root)
    priors = config.prompts.component_prior
    assert priors and all(p.box is not None for p in priors.values())
    plan = plan_round(root, 1, config, trained_student)
    write_record(root, 1, VolumeRecord(volume_id=plan.todo[0], status=VolumeStatus.done))
    _as_if_older(root, 1, drop=("prompts.prior_box", "prompts.prior_box_grow",
                                "prompts.prior_box_min_agreement",
                                *(f"prompts.component_prior.{v}.box" for v in priors)))
    plan = plan_round(root, 1, config, trained_student)
    assert plan.resumed and len(plan.done) == 1
    boxed = config.model_copy(update={"prompts": config.prompts.model_copy(
        update={"prior_box": True})})
    with pytest.raises(RoundError, match="--force"):
        plan_round(root, 1, boxed, trained_student)
