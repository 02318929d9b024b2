"""What the GPU fleet runs, stated once: the torch the tests run (requirements.txt), the Deep Learning AMI built
for that torch, the AMI's Python, and the platform the worker's wheels are locked and downloaded for.

torch comes from the AMI (its CUDA build lives in the AMI's PyTorch environment, `/opt/pytorch`); everything
else the worker imports comes from `worker.lock` (hashes, this Python, this platform), shipped as an asset and
installed with `pip --no-index`. `python -m infra.gpu_fleet.ami` resolves the AMI of `TORCH_MINOR` per region
and pins its id in cdk.json (`gpuAmiIds`).
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
FILES_DIR = Path(__file__).resolve().parent
LOCK_FILE = FILES_DIR / "worker.lock"


def pinned_version(package: str, requirements: Path = REPO_ROOT / "requirements.txt") -> str:
    """The `==` pin of `package` in a requirements file."""
    for line in requirements.read_text().splitlines():
        name, _, version = line.split("#")[0].strip().partition("==")
        if name.split("[")[0].strip().lower() == package:
            return version.strip()
    raise LookupError(f"{package} is not pinned in {requirements}")


TORCH_VERSION = pinned_version("torch")
TORCH_MINOR = ".".join(TORCH_VERSION.split("+")[0].split(".")[:2])
# The DLAMI family for that torch (AWS publishes one SSM parameter per family, pointing at its newest build).
DLAMI_FAMILY = f"oss-nvidia-driver-gpu-pytorch-{TORCH_MINOR}-ubuntu-24.04"
DLAMI_SSM_PARAMETER = f"/aws/service/deeplearning/ami/x86_64/{DLAMI_FAMILY}/latest/ami-id"
DLAMI_NAME_PATTERN = f"Deep Learning OSS Nvidia Driver AMI GPU PyTorch {TORCH_MINOR}* (Ubuntu 24.04)*"
# The Python of the AMI's PyTorch environment (Ubuntu 24.04 DLAMIs: 3.12), and the wheels that fit it. The lock
# is resolved for the oldest Python it must serve, the tests' (3.11): one set of versions for the tests and the
# fleet, with the hashes of every wheel of each, so the same lock downloads cp311 wheels here and cp312 ones there.
WORKER_PYTHON = "3.12"
LOCK_PYTHON = "3.11"
WORKER_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "linux_x86_64")
# What the AMI provides: never locked, never shipped (torch, and what only torch needs).
FROM_THE_AMI = ("torch",)
