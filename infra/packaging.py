"""Code packaging without Docker: source staging for the functions and the worker, and the Lambda dependency layer.

The functions' asset holds only `functions/` and `shared/`; the worker's only `gpu_worker/`, `shared/` and its
requirements. The dependency layer is `pip install --platform manylinux... --only-binary=:all:` into `python/`
(local bundling), or an empty layer when `skipLayerBuild` is set (tests: no network).

Both the functions' asset and the layer are byte-compiled by the Lambda runtime's own Python (`runtime_python()`:
pyenv's `python3.13` or one on PATH), with `--invalidation-mode unchecked-hash`: the runtime then loads the `.pyc`
files as they are, without reading the sources' timestamps and without recompiling anything on a cold start
(bytecode of another Python version is ignored, and /var/task cannot take new `.pyc` files). The paths in the
bytecode are the runtime's (/var/task, /opt/python), so the assets' hashes do not change from one synth to the
next. Without that Python the assets ship sources only (a warning says so), and every cold start compiles them.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import aws_cdk as cdk
import jsii
from aws_cdk import aws_lambda as lambda_

REPO_ROOT = Path(__file__).resolve().parent.parent
FUNCTION_PACKAGES = ("functions", "shared")
WORKER_PACKAGES = ("gpu_worker", "shared")
LAYER_REQUIREMENTS = REPO_ROOT / "functions" / "requirements.txt"
LAMBDA_RUNTIME = lambda_.Runtime.PYTHON_3_13
LAMBDA_PYTHON_VERSION = LAMBDA_RUNTIME.name.removeprefix("python")  # "3.13"
LAMBDA_ARCHITECTURE = lambda_.Architecture.ARM_64
_PIP_PLATFORMS = ("manylinux2014_aarch64", "manylinux_2_28_aarch64")
FUNCTION_ROOT = "/var/task"  # where Lambda puts the function's asset
LAYER_ROOT = "/opt"  # where Lambda puts a layer's content (python/ is on sys.path)
BYTECODE = "unchecked-hash"
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


def runtime_python(version: str = LAMBDA_PYTHON_VERSION) -> Path | None:
    """An interpreter of the Lambda runtime's Python version on this machine (pyenv's, then PATH), or None.

    pyenv's shims are passed over: they answer "command not found" for a version that is not selected.
    """
    candidates = sorted(Path.home().glob(f".pyenv/versions/{version}.*/bin/python{version}"))
    if candidates:
        return candidates[-1]
    found = shutil.which(f"python{version}")
    return Path(found) if found and "/shims/" not in found else None


def byte_compile(directory: Path, runtime_root: str, python: Path | None = None) -> bool:
    """Compile every module under `directory` with the runtime's Python, as if it lay at `runtime_root`.

    False (and a warning) when no such Python is installed: the asset then ships its sources only.
    """
    python = python or runtime_python()
    if python is None:
        warnings.warn(
            f"no python{LAMBDA_PYTHON_VERSION} found (~/.pyenv, PATH): Lambda assets ship without bytecode and every "
            "cold start compiles them",
            stacklevel=2,
        )
        return False
    command = [str(python), "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", BYTECODE]
    command += ["-s", str(directory), "-p", runtime_root, str(directory)]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return True


@functools.cache
def function_asset_dir() -> Path:
    """`functions/` and `shared/` staged and byte-compiled for the runtime (once per process: synths share it)."""
    target = Path(stage_packages(FUNCTION_PACKAGES, "stagehub-functions-"))
    byte_compile(target, FUNCTION_ROOT)
    return target


def function_code() -> lambda_.Code:
    """The functions' code: `functions/` and `shared/` with their bytecode, nothing else (no tests, infra, worker)."""
    return lambda_.Code.from_asset(str(function_asset_dir()))


def install_layer(
    requirements: Path,
    target: Path,
    python_version: str = LAMBDA_PYTHON_VERSION,
    platforms: Sequence[str] = _PIP_PLATFORMS,
) -> None:
    """pip-install the requirements' wheels for that Python and platform into `target/python`, then compile them."""
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile"]
    command += ["--requirement", str(requirements), "--target", str(target / "python")]
    command += ["--only-binary=:all:", "--implementation", "cp", "--python-version", python_version]
    for platform in platforms:
        command += ["--platform", platform]
    subprocess.run(command, check=True)
    byte_compile(target / "python", f"{LAYER_ROOT}/python", runtime_python(python_version))


@jsii.implements(cdk.ILocalBundling)
class PipLayerBundling:
    """Installs the layer's requirements for Lambda's platform with this machine's pip (no Docker)."""

    def __init__(self, requirements: Path, python_version: str) -> None:
        self._requirements = requirements
        self._python_version = python_version

    def try_bundle(self, output_dir: str, *, image: cdk.DockerImage, **_: object) -> bool:
        install_layer(self._requirements, Path(output_dir), self._python_version)
        return True


def layer_hash(python_version: str) -> str:
    """The dependency layer's inputs: the requirements, the target Python and platforms (what pip is told), and
    whether it carries bytecode (so a layer built without the runtime's Python is rebuilt once it is there)."""
    bytecode = BYTECODE if runtime_python(python_version) else "none"
    inputs = [LAYER_REQUIREMENTS.read_text(), python_version, *_PIP_PLATFORMS, LAMBDA_ARCHITECTURE.name, bytecode]
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
    python_version = LAMBDA_PYTHON_VERSION
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
