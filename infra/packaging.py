"""Code packaging without Docker: source staging for the functions and the worker, and the Lambda dependency layer.

The functions' asset holds only `functions/` and `shared/`; the worker's only `gpu_worker/`, `shared/` and its
requirements. The dependency layer is `pip install --platform manylinux... --only-binary=:all:` into `python/`
(local bundling), or an empty layer when `skipLayerBuild` is set (tests: no network).
"""

from __future__ import annotations

import atexit
import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import aws_cdk as cdk
import jsii
from aws_cdk import aws_lambda as lambda_

REPO_ROOT = Path(__file__).resolve().parent.parent
FUNCTION_PACKAGES = ("functions", "shared")
WORKER_PACKAGES = ("gpu_worker", "shared")
LAYER_REQUIREMENTS = REPO_ROOT / "functions" / "requirements.txt"
LAMBDA_RUNTIME = lambda_.Runtime.PYTHON_3_14
LAMBDA_ARCHITECTURE = lambda_.Architecture.ARM_64
_PIP_PLATFORMS = ("manylinux2014_aarch64", "manylinux_2_28_aarch64")
_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", ".mypy_cache", "tests")


def _temporary_dir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def stage_packages(packages: tuple[str, ...], prefix: str, extra_files: dict[str, str] | None = None) -> str:
    """Copy the named top-level packages (and any extra files: name -> text) into a fresh directory."""
    target = _temporary_dir(prefix)
    for package in packages:
        shutil.copytree(REPO_ROOT / package, target / package, ignore=_IGNORED)
    for name, text in (extra_files or {}).items():
        (target / name).write_text(text)
    return str(target)


def function_code() -> lambda_.Code:
    """The functions' source: `functions/` and `shared/`, nothing else (no tests, models, infra, worker)."""
    return lambda_.Code.from_asset(stage_packages(FUNCTION_PACKAGES, "stagehub-functions-"))


@jsii.implements(cdk.ILocalBundling)
class PipLayerBundling:
    """Installs the layer's requirements for Lambda's platform with this machine's pip (no Docker)."""

    def __init__(self, requirements: Path, python_version: str) -> None:
        self._requirements = requirements
        self._python_version = python_version

    def try_bundle(self, output_dir: str, *, image: cdk.DockerImage, **_: object) -> bool:
        command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        command += ["--requirement", str(self._requirements), "--target", str(Path(output_dir) / "python")]
        command += ["--only-binary=:all:", "--implementation", "cp", "--python-version", self._python_version]
        for platform in _PIP_PLATFORMS:
            command += ["--platform", platform]
        subprocess.run(command, check=True)
        return True


def layer_hash(python_version: str) -> str:
    """The dependency layer's inputs: the requirements, the target Python and platforms (what pip is told)."""
    inputs = [LAYER_REQUIREMENTS.read_text(), python_version, *_PIP_PLATFORMS, LAMBDA_ARCHITECTURE.name]
    return hashlib.sha256("\n".join(inputs).encode()).hexdigest()


def dependency_layer_code(skip_build: bool) -> lambda_.Code:
    """The dependency layer's content; an empty `python/` package directory when the build is skipped."""
    if skip_build:
        placeholder = _temporary_dir("stagehub-layer-")
        (placeholder / "python").mkdir()
        (placeholder / "python" / "README.txt").write_text("dependency layer not built (skipLayerBuild)\n")
        return lambda_.Code.from_asset(str(placeholder))
    source = _temporary_dir("stagehub-layer-src-")
    shutil.copy(LAYER_REQUIREMENTS, source / "requirements.txt")
    python_version = LAMBDA_RUNTIME.name.removeprefix("python")
    return lambda_.Code.from_asset(
        str(source),
        # The layer is what pip makes of the pinned requirements for this platform: hash those inputs, so that a
        # second synth into the same cdk.out finds the bundle already there and does not run pip again.
        asset_hash_type=cdk.AssetHashType.CUSTOM,
        asset_hash=layer_hash(python_version),
        bundling=cdk.BundlingOptions(
            image=cdk.DockerImage.from_registry("unused-local-bundling-only"),
            local=PipLayerBundling(source / "requirements.txt", python_version),
        ),
    )
