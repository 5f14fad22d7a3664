#!/usr/bin/env bash
# Start Ray on an AWS node, labelled from the instance metadata (IMDSv2) so that
# placement and the cost ledger know each node's zone, instance type and market.
# Usage: node_start.sh head|worker [--agent on|off]
#   worker --agent on: also start the spot-notice agent (python -m tuner.spot.agent) on spot instances.
# TUNER_IMDS_URL points it at another metadata service; TUNER_DRY_RUN=1 prints the commands.
set -euo pipefail
role=${1:?usage: node_start.sh head|worker [--agent on|off]}
agent=off
if [ "${2:-}" = "--agent" ]; then agent=${3:?--agent needs on or off}; fi
imds=${TUNER_IMDS_URL:-http://169.254.169.254}
run=${TUNER_DRY_RUN:+echo}

token=$(curl -sf -m 5 -X PUT "$imds/latest/api/token" -H "X-aws-ec2-metadata-token-ttl-seconds: 300")
md() { curl -sf -m 5 -H "X-aws-ec2-metadata-token: $token" "$imds/latest/meta-data/$1"; }
zone=$(md placement/availability-zone)
region=$(md placement/region)
itype=$(md instance-type)
market=$(md instance-life-cycle)  # spot | on-demand
labels="ray.io/availability-zone=$zone,ray.io/availability-region=$region,tuner.io/instance-type=$itype,ray.io/market-type=$market"

if [ "$role" = head ]; then
  # The dashboard has no authentication: loopback only; `ray dashboard` tunnels to it over SSH.
  $run ray start --head --port=6379 --num-cpus=0 --dashboard-host=127.0.0.1 \
    --autoscaling-config="$HOME/ray_bootstrap_config.yaml" --labels="$labels"
else
  $run ray start --address="${RAY_HEAD_IP:?set by the cluster launcher}:6379" --labels="$labels"
  if [ "$agent" = on ] && [ "$market" = spot ]; then
    agent_cmd=(python3 -m tuner.spot.agent --provider aws --endpoint "$imds")
    if [ -n "$run" ]; then echo "${agent_cmd[@]}"; else nohup "${agent_cmd[@]}" >/tmp/tuner-agent.log 2>&1 & fi
  fi
fi
