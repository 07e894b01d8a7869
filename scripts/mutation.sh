#!/usr/bin/env bash
# Mutation testing (issue 33): plant one small bug at a time in a core module and check that its
# tests fail. Not part of the default CI run; run it nightly or after changing a core module.
#
#   scripts/mutation.sh MODULE [BUDGET_S]      e.g. scripts/mutation.sh parl_robot/robot/safety.py 1200
#   scripts/mutation.sh all [BUDGET_S]         every module below, the budget split between them
#
# Each module is mutated with mutmut against only the fast tests that exercise it (listed below), in
# a copy of the working tree under $MUTATION_DIR (default /tmp/parl_robot_mutation), so a run never
# touches the checkout. A run stopped by its budget keeps its results and the next run resumes.
# It prints killed/total and the surviving mutants; `mutmut show NAME` in the run directory shows one.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
[[ -x "$PYTHON" ]] || PYTHON="$(command -v python3)"
MUTMUT="${MUTMUT:-$(dirname "$PYTHON")/mutmut}"
MUTATION_DIR="${MUTATION_DIR:-${TMPDIR:-/tmp}/parl_robot_mutation}"

tests_for() {
  case "$1" in
    parl_robot/robot/safety.py)
      echo "tests/test_safety_and_controller.py tests/test_safety_invariants.py" ;;
    parl_robot/robot/arm_controller.py)
      echo "tests/test_safety_and_controller.py tests/test_interbotix_backend.py tests/test_arm_controller.py" ;;
    parl_robot/data/episode_store.py)
      echo "tests/test_episode_store_durability.py" ;;
    parl_robot/perception/success.py)
      echo "tests/test_success_reward.py" ;;
    parl_robot/rl/action_optimizer.py)
      echo "tests/test_optimizer_and_calql_invariants.py" ;;
    parl_robot/rl/losses.py)
      echo "tests/test_rl_core.py tests/test_optimizer_and_calql_invariants.py tests/test_reference_options.py" ;;
    parl_robot/rl/agent.py)
      echo "tests/test_rl_core.py tests/test_optimizer_and_calql_invariants.py tests/test_reference_options.py tests/test_control_step.py tests/test_trainer.py tests/test_interventions_learning.py tests/test_agent_contract.py tests/test_openvla.py tests/test_operator_ui.py" ;;
    operator_ui/app.py)
      echo "tests/test_operator_ui.py" ;;
    parl_robot/rl/static_optimizer.py|parl_robot/rl/control_step.py)
      echo "tests/test_control_step.py tests/test_optimizer_and_calql_invariants.py" ;;
    parl_robot/rl/replay_buffer.py)
      echo "tests/test_replay_buffer.py tests/test_rl_core.py tests/test_trainer.py tests/test_interventions_learning.py tests/test_reference_options.py" ;;
    parl_robot/rl/fair_lock.py)
      echo "tests/test_fair_lock.py" ;;
    parl_robot/robot/teleop.py)
      echo "tests/test_teleop.py" ;;
    parl_robot/rl/scalar_log.py)
      echo "tests/test_scalar_log.py" ;;
    parl_robot/robot/widowx.py)  # (calibration and backend tests use it too, but take minutes per mutant)
      echo "tests/test_widowx.py tests/test_arm_controller.py" ;;
    parl_robot/rl/weight_transport.py|parl_robot/rl/acting_weights.py)
      echo "tests/test_weight_transport.py" ;;
    parl_robot/gumbel.py)
      echo "tests/test_control_step.py tests/test_openvla.py" ;;
    parl_robot/rl/checkpoint.py)
      echo "tests/test_checkpoint.py" ;;
    parl_robot/rl/action_cache.py)
      echo "tests/test_action_cache.py tests/test_replay_buffer.py tests/test_rl_core.py" ;;
    parl_robot/data/learning_curve.py)
      echo "tests/test_learning_curve.py tests/test_episode_store_and_launcher.py" ;;
    parl_robot/data/hdf5_export.py)
      echo "tests/test_hdf5_export.py tests/test_episode_store_and_launcher.py" ;;
    parl_robot/rl/executed_action.py)
      echo "tests/test_rl_core.py" ;;
    parl_robot/rl/filtered_bc.py)
      echo "tests/test_replay_buffer.py tests/test_rl_core.py tests/test_trainer.py tests/test_reference_options.py" ;;
    parl_robot/rl/network_modes.py)
      echo "tests/test_agent_contract.py tests/test_rl_core.py tests/test_trainer.py" ;;
    parl_robot/rl/policy_updates.py|parl_robot/rl/trainer.py)
      echo "tests/test_policy_updates.py tests/test_trainer.py tests/test_rl_core.py tests/test_interventions_learning.py tests/test_reference_options.py tests/test_scalar_log.py" ;;
    parl_robot/robot/workspace.py)  # the calibration tool tests also use it, at minutes per mutant
      echo "tests/test_workspace.py tests/test_calibration_and_detection.py" ;;
    parl_robot/robot/backend.py)
      echo "tests/test_interbotix_backend.py tests/test_arm_controller.py tests/test_calibration_tools.py" ;;
    parl_robot/robot/interbotix_emulator.py)
      echo "tests/test_interbotix_backend.py" ;;
    parl_robot/data/episode.py)
      echo "tests/test_episode_store_and_launcher.py tests/test_episode_store_durability.py tests/test_replay_buffer.py tests/test_hdf5_export.py" ;;
    parl_robot/data/lerobot_export.py)
      echo "tests/test_lerobot_export.py" ;;
    *) return 1 ;;
  esac
}
MODULES=(parl_robot/robot/safety.py parl_robot/data/episode_store.py parl_robot/perception/success.py
         parl_robot/rl/action_optimizer.py parl_robot/rl/losses.py parl_robot/robot/arm_controller.py
         parl_robot/rl/agent.py operator_ui/app.py parl_robot/rl/static_optimizer.py parl_robot/rl/control_step.py
         parl_robot/rl/replay_buffer.py parl_robot/rl/fair_lock.py parl_robot/robot/teleop.py parl_robot/rl/scalar_log.py
         parl_robot/robot/widowx.py parl_robot/rl/weight_transport.py parl_robot/rl/acting_weights.py parl_robot/gumbel.py
         parl_robot/rl/checkpoint.py parl_robot/rl/action_cache.py parl_robot/data/learning_curve.py
         parl_robot/data/hdf5_export.py parl_robot/rl/executed_action.py parl_robot/rl/filtered_bc.py
         parl_robot/rl/network_modes.py parl_robot/rl/policy_updates.py parl_robot/rl/trainer.py
         parl_robot/robot/workspace.py parl_robot/robot/backend.py parl_robot/robot/interbotix_emulator.py
         parl_robot/data/episode.py parl_robot/data/lerobot_export.py)

# Besides the sources and tests, what the tests read: copied into the run directory and, by mutmut,
# into its mutants/ tree where the tests run.
DATA_PATHS=(pytest.ini config benchmarks launch calibration package.xml setup.py resource)

run_module() {  # MODULE BUDGET_S
  local module="$1" budget="$2" tests run_dir name
  tests="$(tests_for "$module")" || { echo "no test selection for $module; known: ${MODULES[*]}" >&2; return 2; }
  name="${module//\//.}"; name="${name%.py}"
  run_dir="$MUTATION_DIR/$name"
  mkdir -p "$run_dir"
  # Fresh sources every run; mutmut's own results (mutants/*.meta) are kept so a run can resume.
  for path in parl_robot operator_ui tests "${DATA_PATHS[@]}"; do
    [[ -e "$REPO/$path" ]] && rm -rf "${run_dir:?}/$path" && cp -r "$REPO/$path" "$run_dir/$path"
  done
  {
    echo "[mutmut]"
    echo "source_paths="; echo "    parl_robot"; echo "    operator_ui"
    echo "only_mutate=$module"
    # mutmut runs the tests in mutants/: the task configs and data files must be there too.
    echo "also_copy="; for path in "${DATA_PATHS[@]}"; do echo "    $path"; done
    echo "pytest_add_cli_args="; echo "    -p"; echo "    no:cacheprovider"; echo "    -q"; echo "    -m"; echo "    not slow"
    echo "pytest_add_cli_args_test_selection="; for test in $tests; do echo "    $test"; done
  } > "$run_dir/setup.cfg"
  echo "== $module: tests $tests, budget ${budget}s, in $run_dir"
  local deadline=$((SECONDS + budget)) survivors
  # mutmut maps tests to functions once (mutants/mutmut-stats.json); a changed test file needs a new map.
  for test in $tests; do
    [[ "$REPO/$test" -nt "$run_dir/mutants/mutmut-stats.json" ]] && rm -f "$run_dir/mutants/mutmut-stats.json"
  done
  mutmut_run() {  # [MUTANT_NAME...]; PYTHONPATH would put the unmutated sources ahead of mutmut's copy
    local left=$((deadline - SECONDS))
    ((left > 10)) || { echo "   (budget spent)"; return 0; }
    (cd "$run_dir" && env -u PYTHONPATH MUJOCO_GL=egl OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 \
       timeout --signal=INT --kill-after=30 "$left" "$MUTMUT" run --max-children "${MUTATION_JOBS:-1}" "$@" \
       >>run.log 2>&1) || echo "   (stopped: budget reached or mutmut failed; see $run_dir/run.log)"
  }
  mutmut_run
  # mutmut keeps a verdict once reached; survivors (and mutants that had no test then) are tried again
  # so that new tests count.
  survivors=$(cd "$run_dir" && "$MUTMUT" results --all true 2>/dev/null | awk -F': ' '$2 == "survived" || $2 == "no tests" { print $1 }')
  [[ -z "$survivors" ]] || mutmut_run $survivors
  (cd "$run_dir" && "$MUTMUT" results --all true 2>/dev/null | awk -v module="$module" '
      /: / { status = substr($0, index($0, ": ") + 2); total++; count[status]++; if (status != "killed") survivors = survivors "\n   " $0 }
      END {
        tested = total - count["not checked"]
        printf "   %s: killed %d of %d tested (%d mutants, %d not checked in the budget, %d without tests)\n",
               module, count["killed"] + count["timeout"], tested, total, count["not checked"], count["no tests"]
        if (survivors != "") print "   not killed:" survivors
      }')
}

[[ $# -ge 1 ]] || { sed -n '2,11p' "$0"; exit 2; }
BUDGET="${2:-1800}"
if [[ "$1" == all ]]; then
  for module in "${MODULES[@]}"; do run_module "$module" $((BUDGET / ${#MODULES[@]})); done
else
  run_module "$1" "$BUDGET"
fi
