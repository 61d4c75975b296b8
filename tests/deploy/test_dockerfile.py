"""deploy/Dockerfile against what its base image and Ray's cluster launcher need (issue 26,
items 15-16). Docker cannot run here, so the file is read: the apt package list, the user setup.

What the launcher runs inside the container is read from the installed Ray's own command
runner, so a Ray upgrade that needs another tool fails here rather than at `ray up`."""

from __future__ import annotations

import inspect
import re
import shlex
from pathlib import Path

import pytest

DOCKERFILE = Path(__file__).resolve().parents[2] / "deploy" / "Dockerfile"


def _text() -> str:
    return DOCKERFILE.read_text()


def _run_commands(text: str) -> list[str]:
    """Every ``RUN`` instruction, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(ln for ln in text.splitlines()
                                            if not ln.lstrip().startswith("#")))
    return [ln[4:].strip() for ln in joined.splitlines() if ln.startswith("RUN ")]


def apt_packages(text: str) -> set[str]:
    """The packages of every ``apt-get install`` in the Dockerfile."""
    packages: set[str] = set()
    for run in _run_commands(text):
        for part in run.split("&&"):
            words = shlex.split(part)
            if words[:2] == ["apt-get", "install"]:
                packages |= {w for w in words[2:] if not w.startswith("-")}
    return packages


def launcher_needs() -> dict[str, str]:
    """Package -> the line of Ray's docker command runner that runs its tool in the container."""
    from ray.autoscaler._private import command_runner

    source = inspect.getsource(command_runner.DockerCommandRunner)
    ssh = inspect.getsource(command_runner.SSHCommandRunner)
    needs = {}
    for package, pattern, text in (("rsync", r"rsync -e '\{.*\} exec -i'", source),
                                   ("sudo", r"sudo chown", source),
                                   ("openssh-client", r'"ssh"', ssh)):
        match = re.search(pattern, text)
        if match:
            needs[package] = match.group(0)
    return needs


def test_ray_launcher_still_runs_these_tools():
    """The need is read from Ray itself; if Ray stops using a tool this says so (and the
    package can leave the image)."""
    assert set(launcher_needs()) == {"rsync", "sudo", "openssh-client"}, launcher_needs()


def test_image_has_what_ray_launcher_runs():
    packages = apt_packages(_text())
    assert {"python3", "python3-venv", "wget", "tini"} <= packages, packages
    for package, used in launcher_needs().items():
        assert package in packages, f"deploy/Dockerfile lacks {package} (Ray runs: {used})"


def test_user_has_passwordless_sudo():
    """The launcher's `sudo chown` runs non-interactively: a password prompt would hang it."""
    text = _text()
    user = re.findall(r"^USER (\S+)$", text, re.MULTILINE)[-1]
    assert re.search(rf"echo '{user} ALL=\(ALL\) NOPASSWD:ALL' > /etc/sudoers\.d/{user}", text)
    assert f"chmod 0440 /etc/sudoers.d/{user}" in text


def test_uid_1000_is_freed_before_useradd():
    """Ubuntu 24.04 bases (the CUDA image's) ship user `ubuntu` with UID 1000: `useradd --uid
    1000` failed ("UID 1000 is not unique") until that user is removed first."""
    text = _text()
    base = re.search(r"^ARG CUDA_IMAGE=(\S+)$", text, re.MULTILINE).group(1)
    runs = " ".join(_run_commands(text))
    useradd = runs.index("useradd ")
    if "ubuntu24" in base or "noble" in base:
        removal = runs.find("userdel --remove ubuntu")
        assert 0 <= removal < useradd, "user ubuntu (UID 1000) must be removed before useradd"
    assert re.search(r"^ARG USER_UID=1000$", text, re.MULTILINE)


@pytest.mark.parametrize("text, expected", [
    ("RUN apt-get update && apt-get install -y --no-install-recommends a b \\\n    c && rm x\n",
     {"a", "b", "c"}),
    ("# RUN apt-get install -y commented\nRUN echo hi\n", set()),
])
def test_apt_packages_reader(text, expected):
    assert apt_packages(text) == expected
