#!/usr/bin/env bash
# Installs the stagehub worker on a Deep Learning AMI, run by the launch template's user data as root:
# a virtual environment on top of the AMI's PyTorch (CUDA build), the worker's requirements, a system user,
# and the systemd units (the worker, and the lifecycle hook helper), which it enables and starts.
# Expects /etc/stagehub/worker.env to exist. If anything fails, the launch hook is never completed and Auto
# Scaling replaces the instance when the hook times out.
set -euo pipefail
APP_DIR=/opt/stagehub/app
VENV=/opt/stagehub/venv

# The PyTorch DLAMIs keep torch in /opt/pytorch; any other AMI falls back to python3 (torch then comes from pip).
BASE_PYTHON=/opt/pytorch/bin/python
[ -x "${BASE_PYTHON}" ] || BASE_PYTHON=$(command -v python3)

"${BASE_PYTHON}" -m venv --system-site-packages "${VENV}"
# A venv made from a venv's python sees the base interpreter's packages, not that venv's: a .pth file puts the
# AMI's environment (its CUDA torch) on the path, after the worker's own packages.
site_of() { "$1" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }
BASE_SITE=$(site_of "${BASE_PYTHON}")
VENV_SITE=$(site_of "${VENV}/bin/python")
[ "${BASE_SITE}" = "${VENV_SITE}" ] || echo "${BASE_SITE}" > "${VENV_SITE}/stagehub-base-python.pth"
"${VENV}/bin/python" -m pip install --quiet --upgrade pip
"${VENV}/bin/python" -m pip install --quiet --requirement "${APP_DIR}/worker-requirements.txt"
"${VENV}/bin/python" -c "import torch" 2>/dev/null || "${VENV}/bin/python" -m pip install --quiet torch

id -u stagehub >/dev/null 2>&1 || useradd --system --home-dir /opt/stagehub --shell /usr/sbin/nologin stagehub
# GPU device nodes belong to the video/render groups on some AMIs.
for group in video render; do getent group "${group}" >/dev/null && usermod -aG "${group}" stagehub; done
set -a; . /etc/stagehub/worker.env; set +a
mkdir -p "${MODEL_CACHE_DIR}"
chown -R stagehub:stagehub "${MODEL_CACHE_DIR}" /opt/stagehub
chmod 0755 "${APP_DIR}/wait-in-service.sh"

install -m 0644 "${APP_DIR}/stagehub-worker.service" /etc/systemd/system/stagehub-worker.service
install -m 0644 "${APP_DIR}/stagehub-lifecycle.service" /etc/systemd/system/stagehub-lifecycle.service
# Run as root: installed outside /opt/stagehub, which belongs to the worker's user.
install -m 0755 -o root -g root "${APP_DIR}/lifecycle.sh" /usr/local/sbin/stagehub-lifecycle
systemctl daemon-reload
systemctl enable stagehub-worker.service stagehub-lifecycle.service
# --no-block: in the warm pool the worker's start waits (wait-in-service.sh) until the instance is in service.
systemctl start --no-block stagehub-worker.service
# Last: it completes the launch lifecycle hook, so the instance counts as capacity only once the worker is installed.
systemctl start --no-block stagehub-lifecycle.service
