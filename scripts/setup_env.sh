#!/usr/bin/env bash
# Creates (or reuses) the project's virtual environment in .venv with everything the demo and
# the tests need. Sourced by scripts/demo.sh and scripts/test.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${PARL_ROBOT_VENV:-$ROOT/.venv}"
STAMP="$VENV/.parl_robot_deps"
DEPS_HASH="$(cat "$ROOT/setup.py" "$ROOT/scripts/setup_env.sh" | sha256sum | cut -c1-16)"
PYTHON="${PYTHON:-python3}"

if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$DEPS_HASH" ]; then
  echo "== setting up $VENV"
  if "$PYTHON" -c "import rclpy" 2>/dev/null; then
    # A sourced ROS 2 distro provides rclpy and the message packages: see them from the venv.
    "$PYTHON" -m venv --system-site-packages "$VENV"
    ROS_WHEELS=()
  else
    "$PYTHON" -m venv "$VENV"
    ROS_WHEELS=(ros-kilted-rclpy ros-rmw-fastrtps-cpp ros-kilted-std-msgs ros-kilted-sensor-msgs
                ros-kilted-geometry-msgs ros-kilted-std-srvs)
  fi
  "$VENV/bin/pip" install -q --upgrade pip
  # CPU torch first and pinned, so nothing later pulls a multi-GB CUDA build.
  "$VENV/bin/pip" install -q torch==2.13.0
  "$VENV/bin/pip" install -q "${ROS_WHEELS[@]}" mujoco opencv-python-headless flask pyyaml numpy h5py pytest pytest-timeout selenium pyarrow tensorboard
  # with the `openvla` extra (setup.py): the tiny-model tests run the whole OpenVLA path on CPU
  "$VENV/bin/pip" install -q --no-build-isolation -e "$ROOT[openvla]" 2>/dev/null || "$VENV/bin/pip" install -q -e "$ROOT[openvla]"
  echo "$DEPS_HASH" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
export MUJOCO_GL="${MUJOCO_GL:-egl}"
