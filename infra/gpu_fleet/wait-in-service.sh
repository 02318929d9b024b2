#!/usr/bin/env bash
# Blocks while the instance sits in the Auto Scaling warm pool (target lifecycle state "Warmed:*"), so the worker
# takes messages only once it is in service. Outside an Auto Scaling group (no such metadata) it returns at once.
set -uo pipefail
imds() {
  local token
  token=$(curl -sf -X PUT "http://169.254.169.254/latest/api/token" -H "X-aws-ec2-metadata-token-ttl-seconds: 60") || return 1
  curl -sf -H "X-aws-ec2-metadata-token: ${token}" "http://169.254.169.254/latest/meta-data/$1"
}
while true; do
  state=$(imds autoscaling/target-lifecycle-state) || exit 0
  case "${state}" in
    Warmed:*) sleep 5 ;;
    *) exit 0 ;;
  esac
done
