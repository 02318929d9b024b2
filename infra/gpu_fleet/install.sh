#!/usr/bin/env bash
# Installs the stagehub worker on the pinned Deep Learning AMI, offline, run by the launch template's user data as
# root after it unpacked the worker's code to /opt/stagehub/app and its wheels to /opt/stagehub/wheels:
# a virtual environment on top of the AMI's PyTorch (its CUDA torch, the version the tests run), the locked
# closure installed from the wheels with `--no-index --require-hashes` (no package index is ever reached), a
# system user, log shipping, and the systemd units, which it enables and starts. Expects /etc/stagehub/worker.env.
# If anything fails, the launch hook is never completed with CONTINUE: it times out, is abandoned and Auto Scaling
# replaces the instance.
set -euo pipefail
APP_DIR=/opt/stagehub/app
WHEELS=/opt/stagehub/wheels
VENV=/opt/stagehub/venv
LOG_DIR=/var/log/stagehub

# The PyTorch DLAMIs keep torch in /opt/pytorch; the worker needs that torch (there is none in the wheels).
BASE_PYTHON=/opt/pytorch/bin/python
[ -x "${BASE_PYTHON}" ] || BASE_PYTHON=$(command -v python3)

"${BASE_PYTHON}" -m venv --system-site-packages "${VENV}"
# A venv made from a venv's python sees the base interpreter's packages, not that venv's: a .pth file puts the
# AMI's environment (its CUDA torch) on the path, after the worker's own packages.
site_of() { "$1" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }
BASE_SITE=$(site_of "${BASE_PYTHON}")
VENV_SITE=$(site_of "${VENV}/bin/python")
[ "${BASE_SITE}" = "${VENV_SITE}" ] || echo "${BASE_SITE}" > "${VENV_SITE}/stagehub-base-python.pth"
"${VENV}/bin/python" -m pip install --quiet --disable-pip-version-check --no-index --find-links "${WHEELS}" \
  --require-hashes --no-deps --requirement "${APP_DIR}/worker.lock"
"${VENV}/bin/python" -c "import torch, diffusers, transformers, gpu_worker.readiness" 2>&1 \
  || { echo "the worker's environment does not import: torch must come from the AMI" >&2; exit 1; }

id -u stagehub >/dev/null 2>&1 || useradd --system --home-dir /opt/stagehub --shell /usr/sbin/nologin stagehub
# GPU device nodes belong to the video/render groups on some AMIs.
for group in video render; do getent group "${group}" >/dev/null && usermod -aG "${group}" stagehub; done
set -a; . /etc/stagehub/worker.env; set +a
mkdir -p "${MODEL_CACHE_DIR}" "${COMPILE_CACHE_DIR}" "${LOG_DIR}"
chown -R stagehub:stagehub "${MODEL_CACHE_DIR}" "${COMPILE_CACHE_DIR}" /opt/stagehub "${LOG_DIR}"

# Logs: the units append to files in /var/log/stagehub, rotated daily; the AMI's CloudWatch agent ships them
# to the stack's log group (retention set there). An AMI without the agent keeps them on disk only.
cat > /etc/logrotate.d/stagehub <<'ROTATE'
/var/log/stagehub/*.log {
  daily
  rotate 3
  compress
  missingok
  copytruncate
}
ROTATE
AGENT=/opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl
if [ -x "${AGENT}" ]; then
  sed "s|@LOG_GROUP@|${WORKER_LOG_GROUP}|g" "${APP_DIR}/cloudwatch-agent.json" > /opt/stagehub/cloudwatch-agent.json
  "${AGENT}" -a fetch-config -m ec2 -s -c file:/opt/stagehub/cloudwatch-agent.json
else
  echo "no CloudWatch agent on this AMI: worker logs stay in ${LOG_DIR}" >&2
fi

for unit in stagehub-worker.service stagehub-lifecycle.service stagehub-unhealthy.service; do
  install -m 0644 "${APP_DIR}/${unit}" "/etc/systemd/system/${unit}"
done
systemctl daemon-reload
systemctl enable stagehub-worker.service stagehub-lifecycle.service
# --no-block: in the warm pool the worker's start waits (readiness wait-in-service) until the instance is in service.
systemctl start --no-block stagehub-worker.service
# It completes the launch lifecycle hook once every worker process reports ready (gpu_worker/readiness.py).
systemctl start --no-block stagehub-lifecycle.service
