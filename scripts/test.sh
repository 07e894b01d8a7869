#!/usr/bin/env bash
# Runs the test suite (fast tests and the multi-process ROS 2 integration test); sets up .venv.
# Extra arguments go to pytest, e.g. `scripts/test.sh -m slow` for the slow ones.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
cd "$ROOT"
if [ "$#" -eq 0 ]; then set -- -m "not slow"; fi
exec python -m pytest "$@"
