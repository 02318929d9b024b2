#!/usr/bin/env bash
# Answers this instance's Auto Scaling lifecycle hooks (installed as /usr/local/sbin/stagehub-lifecycle, run as
# root by stagehub-lifecycle.service with the worker's settings in its environment):
#  - launch: completes "${LAUNCH_HOOK_NAME}" with CONTINUE. The unit starts after install.sh has installed the worker,
#    and again on every boot, because an instance leaving the warm pool waits at the launch hook a second time.
#    Auto Scaling opens the action a little before or after boot, so it retries for a while; after a plain reboot
#    there is no action to complete and the retries run out harmlessly.
#  - termination: when the instance's target lifecycle state becomes "Terminated", stops the worker (SIGTERM: it
#    finishes what it can within its grace and returns the rest of its messages to the queue), then completes
#    "${LIFECYCLE_HOOK_NAME}" with CONTINUE so the instance goes at once instead of at the hook's timeout. The
#    worker's supervisor watches for the same state and completes the hook itself; this is the backstop for a
#    worker that is not running. Whichever completes second gets an error, which is ignored.
set -uo pipefail
LAUNCH_RETRY_S=600
POLL_S=5

imds() {
  local token
  token=$(curl -sf -X PUT "http://169.254.169.254/latest/api/token" -H "X-aws-ec2-metadata-token-ttl-seconds: 60") || return 1
  curl -sf -H "X-aws-ec2-metadata-token: ${token}" "http://169.254.169.254/latest/meta-data/$1"
}

complete_action() {
  aws autoscaling complete-lifecycle-action --auto-scaling-group-name "${ASG_NAME}" --lifecycle-hook-name "$1" \
    --instance-id "${instance_id}" --lifecycle-action-result CONTINUE >/dev/null 2>&1
}

until instance_id=$(imds instance-id); do sleep "${POLL_S}"; done
launch_pending=true
started=${SECONDS}
while true; do
  if ${launch_pending}; then
    if complete_action "${LAUNCH_HOOK_NAME}"; then
      echo "completed the launch lifecycle action"
      launch_pending=false
    elif (( SECONDS - started > LAUNCH_RETRY_S )); then
      launch_pending=false
    fi
  fi
  if [ "$(imds autoscaling/target-lifecycle-state)" = "Terminated" ]; then
    echo "terminating: stopping the worker"
    systemctl stop stagehub-worker.service
    for _ in 1 2 3 4 5; do complete_action "${LIFECYCLE_HOOK_NAME}" && break; sleep "${POLL_S}"; done
    echo "completed the termination lifecycle action"
    exit 0
  fi
  sleep "${POLL_S}"
done
