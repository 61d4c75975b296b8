"""The SEMISAM_* environment variables: one validated settings model, read where they are used,
refused in one line naming the variable, listed by `semisam config`."""

from __future__ import annotations

import json
import os

import pytest

from semisam.pipeline.demo import demo_config
from semisam.pipeline.presentation.render import markdown_tables
from semisam.schemas import ConfigError, MaskerKind, SamFamily, SamType, StorageConfig
from semisam.schemas.settings import (
    Settings,
    TableStyle,
    describe_settings,
    env_name,
    load_settings,
)
from semisam.store import worker_env
from semisam.store.remote import env_storage
from semisam.training.checkpoint import HOLD_ENV, hold_after_checkpoint
from tests.pipeline.cli_invoke import invoke

NAMES = [env_name(f) for f in Settings.model_fields]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """No SEMISAM_* variable of the calling shell leaks into these tests."""
    for name in list(os.environ):
        if name.upper().startswith("SEMISAM_"):
            monkeypatch.delenv(name)


def test_every_variable_the_product_reads_is_a_field():
    assert NAMES == ["SEMISAM_MASKER", "SEMISAM_SAM_CHECKPOINT", "SEMISAM_SAM_TYPE",
                     "SEMISAM_SAM_FAMILY", "SEMISAM_STORAGE", "SEMISAM_TABLES",
                     "SEMISAM_HOLD_AFTER_CHECKPOINT"]
    assert HOLD_ENV == "SEMISAM_HOLD_AFTER_CHECKPOINT"
    assert all(info.description for info in Settings.model_fields.values())


def test_defaults_when_unset():
    s = load_settings()
    assert (s.masker, s.sam_checkpoint, s.storage, s.tables, s.hold_after_checkpoint) == (
        None, None, None, None, None)
    assert s.sam_type == SamType.vit_b and s.sam_family == SamFamily.sam


def test_environment_sets_each_value(monkeypatch, tmp_path):
    storage_file = tmp_path / "storage.json"
    storage_file.write_text(json.dumps({"endpoint_url": "http://minio:9000", "anon": True}))
    monkeypatch.setenv("SEMISAM_MASKER", "random_walker")
    monkeypatch.setenv("SEMISAM_SAM_CHECKPOINT", str(tmp_path / "sam.pth"))
    monkeypatch.setenv("SEMISAM_SAM_TYPE", "vit_l")
    monkeypatch.setenv("SEMISAM_SAM_FAMILY", "medsam")
    monkeypatch.setenv("SEMISAM_STORAGE", str(storage_file))
    monkeypatch.setenv("SEMISAM_TABLES", "Markdown")  # case-insensitive, as before
    monkeypatch.setenv("SEMISAM_HOLD_AFTER_CHECKPOINT", str(tmp_path / "hold"))
    s = load_settings()
    assert s.masker == MaskerKind.random_walker and s.sam_checkpoint == tmp_path / "sam.pth"
    assert s.sam_type == SamType.vit_l and s.sam_family == SamFamily.medsam
    assert s.storage == StorageConfig(endpoint_url="http://minio:9000", anon=True)
    assert s.tables == TableStyle.markdown and s.hold_after_checkpoint == tmp_path / "hold"
    monkeypatch.setenv("SEMISAM_STORAGE", '{"region": "eu-west-1"}')  # inline JSON too
    assert load_settings().storage == StorageConfig(region="eu-west-1")
    assert env_storage() == StorageConfig(region="eu-west-1")
    monkeypatch.setenv("SEMISAM_TABLES", "")  # empty = unset
    assert load_settings().tables is None


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("SEMISAM_MASKER", "medsam2", "SEMISAM_MASKER: Input should be 'litemedsam', 'sam' or "
     "'random_walker' (got 'medsam2')"),
    ("SEMISAM_SAM_TYPE", "vit_x", "SEMISAM_SAM_TYPE: Input should be 'vit_b', 'vit_l' or "
     "'vit_h' (got 'vit_x')"),
    ("SEMISAM_SAM_FAMILY", "SAM2", "SEMISAM_SAM_FAMILY: Input should be 'sam' or 'medsam' "
     "(got 'SAM2')"),
    ("SEMISAM_TABLES", "fancy", "SEMISAM_TABLES: Input should be 'rich' or 'markdown' "
     "(got 'fancy')"),
    ("SEMISAM_STORAGE", "{not json", "SEMISAM_STORAGE: not JSON nor a readable JSON file"),
    ("SEMISAM_STORAGE", "/no/such/storage.json", "SEMISAM_STORAGE: not JSON nor a readable"),
    ("SEMISAM_STORAGE", '{"endpoint_url": "minio"}', "SEMISAM_STORAGE: field 'endpoint_url': "
     "endpoint_url must be a URL like http://host:9000, got 'minio'"),
    ("SEMISAM_STORAGE", '{"options": {"secret": "x"}}', "SEMISAM_STORAGE: field 'options': "
     "credentials do not belong in the config (secret)"),
])
def test_bad_value_is_one_line_naming_the_variable(monkeypatch, name, value, expected):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    text = str(info.value)
    assert text.startswith(expected) and "\n" not in text, text
    # every command refuses it the same way before running: one line, exit 2, no traceback
    result = invoke("inspect", "/no/such/store.zarr", code=2)
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert lines == [f"error: {text}"] and "Traceback" not in result.output


def test_use_sites_read_the_model(monkeypatch, tmp_path):
    monkeypatch.setenv("SEMISAM_TABLES", "markdown")
    assert markdown_tables() is True
    monkeypatch.setenv("SEMISAM_TABLES", "rich")
    assert markdown_tables() is False
    monkeypatch.setenv("SEMISAM_MASKER", "random_walker")
    cfg, note = demo_config(1)
    assert cfg.masker.kind == MaskerKind.random_walker and "SEMISAM_MASKER" in note
    ckpt = tmp_path / "medsam_vit_b.pth"
    monkeypatch.setenv("SEMISAM_SAM_CHECKPOINT", str(ckpt))
    monkeypatch.setenv("SEMISAM_SAM_FAMILY", "medsam")
    cfg, _ = demo_config(1)
    assert cfg.masker.kind == MaskerKind.sam and cfg.masker.sam.checkpoint == ckpt
    assert cfg.masker.sam.family == SamFamily.medsam and cfg.masker.sam.model_type == SamType.vit_b


def test_hold_returns_at_once_without_its_file(monkeypatch, tmp_path):
    hold_after_checkpoint(tmp_path / "state.pt")  # unset
    monkeypatch.setenv(HOLD_ENV, str(tmp_path / "absent"))
    hold_after_checkpoint(tmp_path / "state.pt")  # set, no file


def test_workers_get_storage_settings_as_inline_json(monkeypatch, tmp_path):
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION",
                 "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    assert worker_env() == {}
    path = tmp_path / "storage.json"
    path.write_text(json.dumps({"endpoint_url": "http://minio:9000", "region": "r1"}))
    monkeypatch.setenv("SEMISAM_STORAGE", str(path))
    env = worker_env()
    assert set(env) == {"SEMISAM_STORAGE"}  # a worker on another node has no copy of the file
    monkeypatch.setenv("SEMISAM_STORAGE", env["SEMISAM_STORAGE"])
    assert load_settings().storage == StorageConfig(endpoint_url="http://minio:9000", region="r1")


def test_config_command_lists_every_variable(monkeypatch):
    monkeypatch.setenv("SEMISAM_TABLES", "markdown")
    monkeypatch.setenv("SEMISAM_SAM_TYPE", "vit_h")
    monkeypatch.setenv("SEMISAM_TABEL", "rich")  # a typo: listed as unknown
    out = invoke("config").output
    rows = {ln.split("|")[1].strip(): [c.strip() for c in ln.split("|")[2:5]]
            for ln in out.splitlines() if ln.startswith("| SEMISAM_")}
    assert sorted(rows) == sorted(NAMES)
    assert rows["SEMISAM_SAM_TYPE"][:2] == ["vit_h", "vit_b"]
    assert rows["SEMISAM_MASKER"][0] == "unset" and rows["SEMISAM_TABLES"][0] == "markdown"
    assert all(desc for _, _, desc in rows.values())
    assert "SEMISAM_TABEL is set but is not a semisam setting" in out
    listing = json.loads(invoke("config", "--json").output)
    assert [v["name"] for v in listing["variables"]] == NAMES and listing["unknown"] == ["SEMISAM_TABEL"]
    hold = next(v for v in listing["variables"] if v["name"] == HOLD_ENV)
    assert hold["for_tests"] is True and hold["value"] is None
    assert describe_settings({"SEMISAM_SAM_TYPE": "vit_l"}).variables[2].value == "vit_l"


def test_help_names_the_config_command():
    out = " ".join(invoke("--help").output.split())  # whatever the terminal's width
    assert "`semisam config` lists them" in out and "SEMISAM_*" in out
