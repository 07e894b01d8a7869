#!/usr/bin/env bash
# Sim fine-tuning demo (pot_to_sink, config/profiles/demo.yaml): sets up .venv, records scripted demos, launches the ROS 2
# graph (sim bridge, reward detector, learner, episode manager) and ends by itself.
# Extra arguments go to `parl-robot demo`, e.g. `scripts/demo.sh episodes:=20 policy:=gaussian`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
cd "$ROOT"
exec parl-robot demo "$@"
