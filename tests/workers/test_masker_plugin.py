"""A masker kind added from outside semisam: one folder (a package) and one registry call.

The package lives in ``plugin_site/`` (settings, masker, the module that calls `register`, and
the ``semisam.maskers`` entry point that names it); nothing of semisam is edited for it. The
round config finds the kind through the entry point, validates its section, applies its
defaults and leaves its declared fields out of the fingerprint; a real `semisam run-round`
(its own local Ray) then masks every volume with it on the workers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from semisam.schemas import ConfigError, RoundConfig, load_round_config, masker_kinds
from semisam.store import open_store
from semisam.store.rounds import read_output, read_record, read_round_meta
from semisam.store.volumes import list_metas
from semisam.workers.fusion import confidence_to_uint8, margin
from semisam.workers.maskers import SPECS, masker_spec

SITE = Path(__file__).with_name("plugin_site")
SEMISAM = str(Path(sys.executable).with_name("semisam"))


@pytest.fixture
def plugin_on_path(monkeypatch: pytest.MonkeyPatch):
    """``plugin_site`` importable and its entry point visible; the kind forgotten afterwards."""
    monkeypatch.syspath_prepend(str(SITE))
    monkeypatch.setattr(masker_kinds, "_loaded", False)
    yield
    for table in (SPECS, masker_kinds.PLUGIN_SETTINGS, masker_kinds.MASKER_DEFAULTS):
        table.pop("box", None)
    for name in [m for m in sys.modules if m.startswith("semisam_box_masker")]:
        del sys.modules[name]
    masker_kinds._loaded = False


def test_builtin_config_reads_the_same_with_a_plugin_installed(plugin_on_path):
    before = RoundConfig().model_dump_json()
    assert "box" in masker_kinds.known_kinds()  # found through the entry point
    assert RoundConfig().model_dump_json() == before  # no section for a kind nobody chose
    assert "box" not in RoundConfig().masker.model_dump()


def test_plugin_kind_is_validated_defaulted_and_fingerprinted(plugin_on_path, tmp_path):
    cfg = RoundConfig.model_validate({"masker": {"kind": "box", "box": {"inside": 0.75,
                                                                          "trace_dir": "/x"}}})
    assert type(cfg.masker.box).__name__ == "BoxSettings" and cfg.masker.box.inside == 0.75
    assert cfg.prompts.positive_points == 0  # the kind's own default (built-in default: 1)
    assert masker_spec("box").fingerprint_exclusions == ("trace_dir",)
    assert cfg.fingerprint_payload()["masker"]["box"] == {"inside": 0.75, "outside": 0.0}
    again = RoundConfig.model_validate_json(cfg.model_dump_json())  # as a stored round reads it
    assert again == cfg and again.masker.box.trace_dir == Path("/x")
    default_box = RoundConfig().with_overrides({"masker.kind": "box"})  # the CLI's --masker box
    assert default_box.masker.box.inside == 0.875 and default_box.prompts.positive_points == 0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"masker": {"kind": "box", "box": {"inside": 2}}}))
    with pytest.raises(ConfigError) as err:
        load_round_config(bad)
    assert "masker.box" in str(err.value) and "inside" in str(err.value)
    assert "\n" not in str(err.value)
    bad.write_text(json.dumps({"masker": {"boxx": {}}}))
    with pytest.raises(ConfigError, match="masker.boxx: not a masker kind's section"):
        load_round_config(bad)


def test_unknown_kind_names_the_known_ones(plugin_on_path):
    with pytest.raises(ConfigError, match=r"unknown masker 'boxx' \(known: litemedsam, sam, "
                                          r"random_walker, box\)"):
        RoundConfig().with_overrides({"masker.kind": "boxx"})


def test_a_round_runs_with_the_plugin_kind(phantom_store, trained_student, tmp_path):
    """`semisam run-round --masker box` with the plugin installed (PYTHONPATH): every volume
    is masked by the plugin's masker, built on the worker that wrote it, with the config's
    settings; the prompted slices' confidence is the box's probability."""
    trace = tmp_path / "trace"
    trace.mkdir()
    cfg = tmp_path / "round.json"
    cfg.write_text(json.dumps({"masker": {"box": {"inside": 0.8125, "trace_dir": str(trace)}},
                               "runtime": {"workers": 1}}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(SITE), *filter(None, [os.environ.get("PYTHONPATH")])])}
    done = subprocess.run(
        [SEMISAM, "run-round", str(phantom_store), "--round", "1", "--student",
         str(trained_student), "--config", str(cfg), "--masker", "box", "--no-progress"],
        capture_output=True, text=True, timeout=900, env=env, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    root = open_store(phantom_store, read_only=True)
    meta = read_round_meta(root, 1)
    assert meta is not None and meta.config["masker"]["kind"] == "box"
    assert meta.config["masker"]["box"]["inside"] == 0.8125
    assert meta.config["prompts"]["positive_points"] == 0
    unlabeled = [m.volume_id for m in list_metas(root) if not m.labeled]
    assert len(unlabeled) == 4
    inside_code = confidence_to_uint8(margin(np.full(1, 0.8125, np.float32), 0.5))[0]
    pids = set()
    for vid in unlabeled:
        record = read_record(root, 1, vid)
        assert record is not None and record.status.value == "done", vid
        assert record.stats is not None and record.stats.slices_prompted > 0
        pids.add(record.worker_pid)
        confidence = read_output(root, 1, "confidence", vid)
        assert (confidence == inside_code).any(), vid  # the box's probability, as stored
    built = {int(p.stem.split("-")[1]) for p in trace.glob("built-*.json")}
    assert pids <= built  # each worker that wrote a volume built the plugin's masker
    notes = [json.loads(p.read_text()) for p in trace.glob("built-*.json")]
    assert all(n["inside"] == 0.8125 for n in notes)


def test_a_broken_plugin_is_one_line_naming_it(plugin_on_path, monkeypatch, tmp_path):
    info = tmp_path / "broken_masker-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-masker\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[semisam.maskers]\nbroken = no_such_masker_module\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError) as err:
        RoundConfig().with_overrides({"masker.kind": "box"})
    assert str(err.value).startswith("masker plugin 'broken' (no_such_masker_module): cannot "
                                     "be loaded (ModuleNotFoundError")
    assert "\n" not in str(err.value)
