"""Stored volume metadata names its source by file name and sha256; the absolute path (hospital
paths name people and sites) only with `ingest --record-paths`. Stores ingested before that,
which hold absolute paths, still read, run a round and export."""

from __future__ import annotations

import json
from pathlib import Path

import zarr

from semisam.pipeline.ingest import IngestStatus, ingest
from semisam.pipeline.phantoms import write_phantom_set
from semisam.pipeline.rounds.driver import run_round
from semisam.schemas import RoundConfig, volume_path
from semisam.store import list_metas, open_store, read_image
from tests.pipeline.cli_invoke import invoke

COUNT = 3
SHAPE = (40, 40, 24)


def _sources(tmp_path: Path) -> tuple[Path, Path]:
    return write_phantom_set(tmp_path / "hospital" / "patient_x", count=COUNT, shape=SHAPE)


def _attrs_text(store: Path) -> str:
    """Every ``zarr.json`` of the store (metadata and attributes of every group and array)."""
    return "\n".join(p.read_text() for p in sorted(store.rglob("zarr.json")))


def _old_style(store: Path) -> dict[str, str]:
    """Rewrite each volume's metadata as stores ingested before names were recorded hold it
    (``source`` = absolute path, no ``source_path`` key); {id: that path}."""
    root = open_store(store)
    paths = {}
    for meta in list_metas(root):
        data = meta.model_dump(mode="json")
        assert "source_path" in data, "expected a store ingested with --record-paths"
        data["source"] = paths[meta.volume_id] = data.pop("source_path")
        root[volume_path(meta.volume_id)].attrs["meta"] = data
    return paths


def test_default_ingest_stores_names_and_hashes_only(tmp_path):
    images, labels = _sources(tmp_path)
    store = tmp_path / "s.zarr"
    result = invoke("ingest", str(images), "--labels", str(labels), "--store", str(store),
                    "--json")
    assert len(json.loads(result.stdout)["volumes"]) == COUNT
    text = _attrs_text(store)
    assert str(tmp_path) not in text and "patient_x" not in text and "hospital" not in text
    for meta in list_metas(open_store(store, read_only=True)):
        assert meta.source == f"{meta.volume_id}.nii.gz" and meta.source_path is None
        assert meta.recorded_path is None and len(meta.sha256) == 64
    raw = json.loads((store / "volumes" / "phantom_000" / "zarr.json").read_text())
    assert "source_path" not in raw["attributes"]["meta"]  # readable by older semisam too


def test_record_paths_on_request_and_a_rerun_changes_only_that(tmp_path):
    images, labels = _sources(tmp_path)
    store = tmp_path / "s.zarr"
    invoke("ingest", str(images), "--labels", str(labels), "--store", str(store),
           "--record-paths")
    root = open_store(store, read_only=True)
    for meta in list_metas(root):
        assert meta.source == f"{meta.volume_id}.nii.gz"
        assert meta.source_path == str((images / meta.source).resolve())
    before = read_image(root, "phantom_001")
    # a rerun without the flag removes the paths, touches nothing else, reports unchanged
    report = ingest(store, [images], labels_dir=labels)
    assert [v.status for v in report.volumes] == [IngestStatus.unchanged] * COUNT
    assert str(tmp_path) not in _attrs_text(store)
    assert (read_image(open_store(store, read_only=True), "phantom_001") == before).all()
    # and one with the flag records them again
    assert ingest(store, [images], labels_dir=labels, record_paths=True).ok
    assert all(m.source_path for m in list_metas(open_store(store, read_only=True)))


def test_changed_source_refused_by_name_not_path(tmp_path):
    images, labels = _sources(tmp_path)
    store = tmp_path / "s.zarr"
    assert ingest(store, [images], labels_dir=labels).ok
    other = tmp_path / "elsewhere"
    other.mkdir()
    write_phantom_set(tmp_path / "gen", count=1, shape=SHAPE, seed=99)
    (tmp_path / "gen" / "images" / "phantom_000.nii.gz").rename(other / "phantom_000.nii.gz")
    report = ingest(store, [other / "phantom_000.nii.gz"])
    reason = report.failed[0].reason
    assert "already exists from phantom_000.nii.gz with a different sha256" in reason


def test_old_store_with_absolute_paths_reads_runs_and_exports(local_ray, trained_student,
                                                               tmp_path):
    images, labels = _sources(tmp_path)
    store = tmp_path / "old.zarr"
    assert ingest(store, [images], labels_dir=labels, labeled={"phantom_000"},
                  record_paths=True).ok
    paths = _old_style(store)
    metas = {m.volume_id: m for m in list_metas(open_store(store, read_only=True))}
    assert metas["phantom_001"].source_name == "phantom_001.nii.gz"
    assert metas["phantom_001"].recorded_path == paths["phantom_001"]
    invoke("inspect", str(store))
    summary = run_round(store, 1, trained_student, RoundConfig(masker={"kind": "random_walker"}),
                        show_progress=False)
    assert summary.done == COUNT - 1
    again = run_round(store, 1, trained_student, RoundConfig(masker={"kind": "random_walker"}),
                      show_progress=False)  # resume: nothing left to do, nothing redone
    assert again.done == COUNT - 1
    out = tmp_path / "ome"
    invoke("export", str(store), "--round", "1", "--to", str(out), "--format", "ome-zarr",
           "--volume", "phantom_001", "--record-paths")
    attrs = dict(zarr.open_group(str(out / "phantom_001.ome.zarr"), mode="r").attrs)["semisam"]
    assert attrs["source_file"] == "phantom_001.nii.gz"
    assert attrs["source_path"] == paths["phantom_001"]
    # a rerun of the default ingest over the old store leaves names only, arrays as they were
    report = ingest(store, [images], labels_dir=labels, labeled={"phantom_000"})
    assert [v.status for v in report.volumes] == [IngestStatus.unchanged] * COUNT
    assert str(tmp_path / "hospital") not in _attrs_text(store / "volumes")


def test_export_record_paths_without_a_recorded_path(local_ray, trained_student, tmp_path):
    images, labels = _sources(tmp_path)
    store = tmp_path / "s.zarr"
    assert ingest(store, [images], labels_dir=labels, labeled=set()).ok
    run_round(store, 1, trained_student, RoundConfig(masker={"kind": "random_walker"}),
              show_progress=False)
    out = tmp_path / "ome"
    result = invoke("export", str(store), "--round", "1", "--to", str(out), "--format",
                    "ome-zarr", "--volume", "phantom_002", "--record-paths")
    assert "volume 'phantom_002': the store records no source path" in result.output
    attrs = dict(zarr.open_group(str(out / "phantom_002.ome.zarr"), mode="r").attrs)["semisam"]
    assert attrs["source_file"] == "phantom_002.nii.gz" and attrs["source_path"] is None
    assert str(tmp_path / "hospital") not in _attrs_text(store)
