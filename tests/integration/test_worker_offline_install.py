"""The worker installs offline from its locked closure and starts against moto, as install.sh does on the AMI.

1. `pip download` of exactly `worker.lock` (hash-checked) for this machine's Python and platform, the command
   the wheels asset is bundled with (from PyPI or pip's cache: the only step that may use the network);
2. a fresh virtual environment whose only outside packages are torch and what torch needs, through a `.pth`
   file, as install.sh puts the AMI's PyTorch environment behind the worker's venv;
3. install.sh's own install: `pip install --no-index --find-links WHEELS --require-hashes --no-deps -r worker.lock`,
   then `pip check` (the closure is complete);
4. the worker's code asset, exactly as staged for the instance, run as `python -m gpu_worker.process` against
   the moto stack with the tiny models: it reports ready (gpu_worker/readiness.py) and stops on SIGTERM.
"""

from __future__ import annotations

import importlib.metadata
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from gpu_worker.readiness import READY_PREFIX
from gpu_worker.tiny_models import local_models_env
from infra.gpu_fleet.bundle import download_command, worker_code_path
from infra.gpu_fleet.versions import FILES_DIR, FROM_THE_AMI, LOCK_FILE

pytestmark = pytest.mark.slow
HERE_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
READY_TIMEOUT_S = 240


def _closure(names: tuple[str, ...]) -> set[str]:
    """The installed distributions of `names` and everything they require (markers evaluated here)."""
    seen: set[str] = set()
    pending = list(names)
    while pending:
        name = pending.pop()
        key = name.lower().replace("_", "-")
        if key in seen:
            continue
        try:
            distribution = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        seen.add(key)
        for text in distribution.requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append(requirement.name)
    return seen


def _ami_environment(target: Path) -> Path:
    """A site directory holding only torch and its closure (links into this venv), like the AMI's /opt/pytorch."""
    target.mkdir()
    for name in _closure(FROM_THE_AMI):
        distribution = importlib.metadata.distribution(name)
        site = Path(str(distribution.locate_file("")))
        tops = {Path(str(f)).parts[0] for f in distribution.files or [] if not str(f).startswith("..")}
        for top in tops:
            if (site / top).exists() and not (target / top).exists():
                (target / top).symlink_to(site / top)
    return target


def test_the_locked_closure_installs_offline_and_the_worker_starts(
    tmp_path: Path, stack_environment: dict[str, str], tiny_models_dir: Path
) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run(download_command(LOCK_FILE, wheels, python_version=HERE_PYTHON), check=True, timeout=600)
    base_python = Path(sys.base_prefix) / "bin" / f"python{HERE_PYTHON}"
    venv = tmp_path / "venv"
    subprocess.run([str(base_python), "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(site) / "stagehub-base-python.pth").write_text(str(_ami_environment(tmp_path / "ami-site")) + "\n")
    install = (FILES_DIR / "install.sh").read_text()
    assert "--no-index" in install  # the flags below are install.sh's
    offline = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    offline |= {"PIP_NO_INDEX": "1", "PIP_CONFIG_FILE": os.devnull}
    # This venv has no pip of its own (a fresh AMI venv does): run this machine's pip for it, offline.
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-index", "--find-links",
         str(wheels), "--require-hashes", "--no-deps", "--requirement", str(LOCK_FILE)],
        check=True,
        env=offline,
        timeout=600,
    )  # fmt: skip
    check = subprocess.run(
        [sys.executable, "-m", "pip", "--python", python, "check"], capture_output=True, text=True, env=offline
    )
    assert check.returncode == 0, check.stdout + check.stderr

    app = worker_code_path(grace_s=60)  # the code asset as the instance unpacks it
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        **stack_environment,
        **local_models_env(tiny_models_dir),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "DEVICE": "cpu",
        "STAGEHUB_STATE_DIR": str(state_dir),
        "STAGEHUB_SLOT": "cpu",
        "HF_HUB_OFFLINE": "1",
    }
    worker = subprocess.Popen(
        [python, "-m", "gpu_worker.process"], cwd=app, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not (state_dir / f"{READY_PREFIX}cpu").exists():
            assert worker.poll() is None, worker.communicate()[0].decode()[-3000:]
            assert time.monotonic() < deadline, "the worker did not report ready"
            time.sleep(0.5)
        worker.send_signal(signal.SIGTERM)
        output = worker.communicate(timeout=120)[0].decode()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert worker.returncode == 0, output[-3000:]
    assert "stopped" in output
    assert (
        str(venv)
        in subprocess.run(
            [python, "-c", "import diffusers; print(diffusers.__file__)"], capture_output=True, text=True, check=True
        ).stdout
    )  # the worker's packages come from its own venv, not from this one
