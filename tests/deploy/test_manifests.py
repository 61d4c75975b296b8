"""deploy/: every YAML parses, the fields the docs rely on are there, and every `semisam`
command line in the manifests and the docs parses against the real CLI (no option that does not
exist). The image is not built here (no Docker engine in the test environment)."""

from __future__ import annotations

import copy
import json
import re
import shlex
from pathlib import Path

import pytest
import tomllib
import typer.main
import yaml

from semisam.pipeline.cli import app
from semisam.schemas import RoundConfig

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCS = [DEPLOY / "README.md", ROOT / "docs" / "cluster.md"]


def parse_semisam(argv: list[str]) -> tuple[str, dict]:
    """Parse ``semisam <command> ...`` (argv without ``semisam``) with the real typer app.

    Returns:
        ``(command name, parsed parameters)``; raises the CLI's usage error for an unknown
        command or option, a missing required one, or a bad value.
    """
    group = typer.main.get_command(app)
    name, *rest = argv
    command = group.get_command(None, name)
    assert command is not None, f"semisam has no command {name!r}"
    return name, command.make_context(name, rest).params


def _yaml(name: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all((DEPLOY / name).read_text()) if doc is not None]


def _dockerfile_arg(name: str) -> str:
    match = re.search(rf"^ARG {name}=(\S+)$", (DEPLOY / "Dockerfile").read_text(), re.MULTILINE)
    assert match, f"deploy/Dockerfile has no ARG {name}=..."
    return match.group(1)


def _rayjob() -> tuple[dict, dict]:
    docs = {d["kind"]: d for d in _yaml("rayjob.yaml")}
    return docs["RayJob"], docs["ConfigMap"]


def _env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container["env"]}


def test_every_yaml_parses():
    files = sorted(DEPLOY.glob("*.yaml"))
    assert {f.name for f in files} >= {"ray-cluster.yaml", "rayjob.yaml"}
    for f in files:
        assert _yaml(f.name), f


def test_parse_semisam_rejects_unknown_options():
    with pytest.raises(Exception, match="No such option"):
        parse_semisam(["run-round", "s3://b/x", "--round", "1", "--student", "s.pt", "--gpus", "1"])
    assert parse_semisam(["export", "d.zarr", "--round", "2", "--to", "out"])[1]["round_index"] == 2


def test_dockerfile():
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^ARG CUDA_IMAGE=nvidia/cuda:\S+-runtime-", text, re.MULTILINE)
    assert re.search(r"^FROM \$\{CUDA_IMAGE\}$", text, re.MULTILINE)
    users = re.findall(r"^USER (\S+)$", text, re.MULTILINE)
    assert users and users[-1] not in ("root", "0"), "the image must end as a non-root user"
    assert re.search(r"^RUN pip install \. ", text, re.MULTILINE)
    assert "wget" in text  # KubeRay's probes use it
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    folders = {d.split("/")[0] for d in pyproject["tool"]["setuptools"]["package-dir"].values()}
    for folder in folders:
        copied = re.search(rf"^COPY {folder} \./{folder}$", text, re.MULTILINE)
        assert copied, f"image misses {folder}/"


def test_every_package_folder_is_packaged():
    """`pip install .` (the image) must ship every subpackage, e.g. the CLI's commands/."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapped = {folder: pkg for pkg, folder in setuptools["package-dir"].items()}
    for folder, pkg in mapped.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder).parts
            name = ".".join((pkg, *rel))
            assert name in setuptools["packages"], f"{name} ({init.parent}) is not packaged"


def test_ray_cluster_config_is_valid_for_ray():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = _yaml("ray-cluster.yaml")[0]
    validate_config(prepare_config(copy.deepcopy(config)))  # Ray's own schema and checks
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    gpu = [t for name, t in types.items() if name != config["head_node_type"]
           and t.get("resources", {}).get("GPU", 0) >= 1]
    assert gpu and all(t["max_workers"] >= 1 for t in gpu)
    docker = config["docker"]
    assert docker["image"] == _rayjob()[0]["spec"]["rayClusterSpec"]["headGroupSpec"]["template"][
        "spec"]["containers"][0]["image"]
    options = " ".join(docker["run_options"])
    assert ":/shared" in options and "TORCHINDUCTOR_CACHE_DIR=/shared/" in options
    assert any("ray start --head" in c for c in config["head_start_ray_commands"])
    workers = config["worker_start_ray_commands"]
    assert any("ray start --address=$RAY_HEAD_IP:6379" in c for c in workers)


def test_rayjob_runs_a_round_on_s3_with_a_shared_compile_cache():
    job, config_map = _rayjob()
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]
    assert spec["submissionMode"] == "K8sJobMode" and spec["shutdownAfterJobFinishes"] is True
    assert spec["backoffLimit"] >= 1  # retries resume from the store
    argv = shlex.split(spec["entrypoint"])
    assert argv[0] == "semisam"
    name, params = parse_semisam(argv[1:])
    assert name == "run-round" and params["store"].startswith("s3://")
    assert params["address"] == "auto" and params["gpus_per_worker"] >= 1

    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == _dockerfile_arg("RAY_VERSION")
    head = cluster["headGroupSpec"]["template"]["spec"]
    (group,) = cluster["workerGroupSpecs"]
    worker = group["template"]["spec"]
    assert int(worker["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    for pod in (head, worker):
        container = pod["containers"][0]
        assert pod["securityContext"]["runAsNonRoot"] is True
        env = _env(container)
        assert env["AWS_REGION"]["value"]
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):  # from a secret, never inline
            assert "value" not in env[key] and env[key]["valueFrom"]["secretKeyRef"]["name"]
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        shared = mounts["shared"]
        assert "persistentVolumeClaim" in volumes["shared"]
        assert env["TORCHINDUCTOR_CACHE_DIR"]["value"].startswith(shared + "/")
        for path in (params["student"], params["masker_checkpoint"]):  # the driver runs on the head
            assert str(path).startswith(shared + "/")
        assert volumes["round-config"]["configMap"]["name"] == config_map["metadata"]["name"]
        assert str(params["config"]).startswith(mounts["round-config"] + "/")

    key = Path(params["config"]).name
    round_config = RoundConfig.model_validate(json.loads(config_map["data"][key]))
    assert round_config.masker.sam.compile
    assert str(round_config.masker.sam.compile_cache_dir) == _env(head["containers"][0])[
        "TORCHINDUCTOR_CACHE_DIR"]["value"]


def _doc_commands(path: Path) -> list[list[str]]:
    """Every ``semisam <command> ...`` of the fenced bash blocks (continuations joined); synopsis
    lines with ``[optional]`` parts are skipped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", path.read_text(), re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0]
            if "semisam " not in line or "[" in line:
                continue
            argv = shlex.split(line)
            for i, token in enumerate(argv[:-1]):
                if token == "semisam" and not argv[i + 1].startswith(("-", "/")):
                    commands.append(argv[i + 1:])
                    break
    return commands


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_documented_commands_parse(doc):
    commands = _doc_commands(doc)
    assert commands, doc
    for argv in commands:
        parse_semisam(argv)


def test_job_submission_is_documented_with_no_wait():
    text = (DEPLOY / "README.md").read_text().replace("\\\n", " ")
    submits = [ln for ln in text.splitlines() if ln.lstrip().startswith("ray job submit")]
    assert submits and all("--no-wait" in ln and " -- semisam run-round " in re.sub(r"\s+", " ", ln)
                           for ln in submits)
    assert "Resubmitting resumes" in text
