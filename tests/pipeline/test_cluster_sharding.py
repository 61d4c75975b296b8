"""A round on a multi-node Ray cluster (three Ray nodes on loopback with different resources):
the volumes are sharded over every node, the records and `inspect` say which node did which
volume, and the driver logs a per-node summary.

The driver waits for every worker before the first dispatch (`runtime.startup_grace_s`, set far
beyond any start-up time here), and with one volume in flight per worker each of the three gets
one of the first three volumes however slowly the machine starts them.
"""

from __future__ import annotations

import json
import subprocess

import pytest
from ray.cluster_utils import Cluster

from semisam.pipeline.phantoms import make_phantom
from semisam.schemas import VolumeMeta
from semisam.store import list_metas, open_store, read_record, write_volume
from tests.conftest import SPACING, phantom_affine
from tests.pipeline.test_resume import SEMISAM
from tests.pipeline.test_review import invoke


def _store(path, count: int = 8, labeled: int = 2, shape=(72, 72, 48)):
    root = open_store(path, create=True)
    for i in range(count):
        image, label = make_phantom(shape, seed=300 + i)
        meta = VolumeMeta(volume_id=f"big{i:02d}", source="phantom", source_format="npy",
                          sha256=str(i), shape=shape, spacing=SPACING,
                          affine=phantom_affine().tolist(),
                          image_dtype="float32", labeled=i < labeled)
        write_volume(root, meta, image, label if i < labeled else None)
    return path


@pytest.fixture
def three_node_cluster():
    """Head (1 CPU), a worker with 1 CPU and an ``ssd`` resource, one with 2 CPUs and ``bigmem``."""
    cluster = Cluster(initialize_head=True, connect=False,
                      head_node_args={"num_cpus": 1, "resources": {"head": 1},
                                      "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1, resources={"ssd": 1})
        cluster.add_node(num_cpus=2, resources={"bigmem": 2})
        cluster.wait_for_nodes()
        yield cluster
    finally:
        cluster.shutdown()


def test_round_shards_over_every_node(three_node_cluster, trained_student, tmp_path):
    cluster = three_node_cluster
    store = _store(tmp_path / "s.zarr")
    node_ids = {n.node_id[:8] for n in [cluster.head_node, *cluster.worker_nodes]}
    assert len(node_ids) == 3
    cfg = tmp_path / "round.json"
    runtime = {"workers": 3, "tasks_in_flight": 1, "spread": True, "startup_grace_s": 3600}
    cfg.write_text(json.dumps({"masker": {"kind": "random_walker"}, "runtime": runtime}))
    proc = subprocess.run(
        [SEMISAM, "run-round", str(store), "--round", "1", "--student", str(trained_student),
         "--config", str(cfg), "--address", cluster.address, "--no-progress"],
        capture_output=True, text=True, timeout=1200, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    root = open_store(store, read_only=True)
    ids = [m.volume_id for m in list_metas(root) if not m.labeled]
    records = {vid: read_record(root, 1, vid) for vid in ids}
    assert all(r is not None and r.status.value == "done" for r in records.values()), records
    nodes = {vid: r.node for vid, r in records.items()}
    workers = [ln for ln in proc.stderr.splitlines() if " up: " in ln]
    assert {n.rsplit("/", 1)[-1] for n in nodes.values()} == node_ids, (nodes, workers)
    for node in set(nodes.values()):  # the driver's per-node summary
        assert f"node {node}: " in proc.stderr

    out = json.loads(invoke("inspect", str(store), "--round", "1", "--json").stdout)
    assert {row["volume_id"]: row["node"] for row in out["volumes"]} == nodes
    table = invoke("inspect", str(store), "--round", "1").stdout
    assert "node" in table
