#!/usr/bin/env bash
# Runs a command while N CPU-bound busy loops compete with it (default 2: a 2-core machine fully
# loaded by other work), then prints the command's wall time and exit status. For checking that the
# README's commands pass on a busy machine:
#   bash scripts/with_load.sh bash scripts/test.sh
#   LOAD_THREADS=2 bash scripts/with_load.sh bash scripts/demo.sh
set -uo pipefail
THREADS="${LOAD_THREADS:-2}"
pids=()
for _ in $(seq "$THREADS"); do
  python3 -c "while True: pass" &
  pids+=("$!")
done
trap 'kill "${pids[@]}" 2>/dev/null' EXIT
start=$(date +%s)
"$@"
status=$?
echo "with_load: '$*' under $THREADS busy threads: exit $status after $(( $(date +%s) - start )) s" >&2
exit "$status"
