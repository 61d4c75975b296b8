"""A 3-node Ray cluster on loopback (`ray.cluster_utils.Cluster`); one worker node is removed
while its worker is inside a volume; the two remaining nodes finish the round.

The cluster lives in a subprocess (a pytest process can hold one Ray only, and the session's
`local_ray` is another); the test reads the store and the subprocess's JSON report.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from semisam.pipeline.presentation.verify import verify_round
from semisam.schemas import VolumeStatus
from semisam.store import list_metas, open_store, read_record
from tests.conftest import build_phantom_store

ROOT = Path(__file__).resolve().parents[2]


def _title(proc: psutil.Process) -> str:
    try:
        return (proc.cmdline() or [""])[0]
    except psutil.Error:
        return ""


def _remove_busy_node(cluster, report: dict, stop: threading.Event) -> None:
    """Remove the first non-head node seen running ``VolumeActor.process`` (mid-volume)."""
    raylets = {n.all_processes["raylet"][0].process.pid: n for n in cluster.worker_nodes}
    while not stop.is_set():
        for proc in psutil.Process().children(recursive=True):
            if _title(proc).startswith("ray::VolumeActor.process") and proc.ppid() in raylets:
                time.sleep(0.05)
                node = raylets[proc.ppid()]
                report.update(removed_node=node.node_id, victim_pid=proc.pid,
                              removed_at=time.time())
                cluster.remove_node(node)
                return
        time.sleep(0.02)


def cluster_round(store: str, student: str, out: str) -> None:
    """Subprocess body: 3 single-CPU nodes, a round with 3 workers, one node removed."""
    import ray
    from ray.cluster_utils import Cluster

    from semisam.pipeline.rounds.driver import run_round
    from semisam.schemas import RoundConfig

    mem = 80 * 1024 * 1024
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "include_dashboard": False, "object_store_memory": mem})
    for _ in range(2):
        cluster.add_node(num_cpus=1, object_store_memory=mem)
    report: dict = {}
    stop = threading.Event()
    try:
        ray.init(address=cluster.address, logging_level="WARNING")
        cluster.wait_for_nodes()
        watcher = threading.Thread(target=_remove_busy_node, args=(cluster, report, stop), daemon=True)
        watcher.start()
        cfg = RoundConfig(masker={"kind": "random_walker"})
        cfg.runtime.workers, cfg.runtime.tasks_in_flight = 3, 1
        summary = run_round(store, 1, Path(student), cfg, address=cluster.address,
                            show_progress=False)
        stop.set()
        report["summary"] = summary.model_dump(mode="json")
    finally:
        stop.set()
        ray.shutdown()
        cluster.shutdown()
        Path(out).write_text(json.dumps(report))


def test_remove_a_worker_node_mid_round(tmp_path, trained_student):
    store = build_phantom_store(tmp_path / "store.zarr", count=14, labeled=2, seed=9)
    out = tmp_path / "report.json"
    code = ("import sys; from tests.pipeline.test_multinode import cluster_round; "
            "cluster_round(*sys.argv[1:])")
    proc = subprocess.Popen([sys.executable, "-c", code, str(store), str(trained_student), str(out)],
                            cwd=ROOT, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        log, _ = proc.communicate(timeout=420)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever Ray left of that session
        except ProcessLookupError:
            pass
    assert proc.returncode == 0, log[-3000:]
    report = json.loads(out.read_text())
    assert "removed_node" in report, "no worker was seen mid-volume on a worker node"
    summary = report["summary"]
    assert summary["done"] == 12 and summary["failed"] == 0 and summary["status"] == "finished"

    root = open_store(store, read_only=True)
    recs = [read_record(root, 1, m.volume_id) for m in list_metas(root) if not m.labeled]
    assert all(r.status == VolumeStatus.done for r in recs)
    assert any(r.attempt == 2 for r in recs), "the interrupted volume was not retried"
    removed = report["removed_node"][:8]
    late = [r for r in recs if r.attempt > 1]
    assert all(removed not in (r.node or "") for r in late), [r.node for r in late]
    # How the remaining volumes spread over the two surviving nodes depends on how fast their
    # actors start on a loaded machine (CI once saw one node take all 12), so it is not asserted.
    assert verify_round(root, str(store), 1).ok
