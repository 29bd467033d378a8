#!/usr/bin/env bash
# `make test`: the whole suite as two pytest runs side by side, split by marker so that
# every test runs in exactly one of them (a marker expression and its negation):
#   stack lane: tests marked e2e or slow (whole stacks, faults, timeouts: mostly waiting
#               on processes and clocks)
#   quick lane: everything else (mostly CPU)
# On 2 cores the waits of one lane overlap the work of the other: about 10 min instead
# of 15 serially (docs/benchmarks.md). Each lane prints its progress (prefixed by its
# name) and its ten slowest tests; this exits non-zero if either lane fails. A lane whose
# tests PYTEST_ARGS filtered out entirely (pytest's exit 5) is not a failure, unless
# both are. One serial run instead: .venv/bin/python -m pytest.
#   scripts/test-lanes.sh PYTHON [PYTEST_ARGS...]
set -uo pipefail
python="$1"
shift
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

# The images tier stays out of both (pyproject's addopts; a second -m replaces it).
declare -A lanes=(
  [stack]="(e2e or slow) and not images"
  [quick]="not (e2e or slow) and not images"
)

run_lane() {
  local name=$1
  # Each lane its own tmp_path root: two runs would otherwise number the same
  # /tmp/pytest-of-USER/pytest-N and share it.
  local temproot="${TMPDIR:-/tmp}/mfr-test-lanes/$name"
  mkdir -p "$temproot"
  # The tests' output (unbuffered: progress as it happens), prefixed line by line;
  # the lane's own exit status in a file.
  PYTHONUNBUFFERED=1 PYTEST_DEBUG_TEMPROOT="$temproot" "$python" -m pytest -m "${lanes[$name]}" --durations=10 "${@:2}" 2>&1 \
    | sed -u "s/^/[$name] /" | tee "$logs/$name.log"
  echo "${PIPESTATUS[0]}" > "$logs/$name.rc"
}

started=$(date +%s)
run_lane stack "$@" &
run_lane quick "$@" &
wait

status=0
empty=0
for name in stack quick; do
  rc=$(cat "$logs/$name.rc" 2>/dev/null || echo 1)
  # pytest's last line: "=== 12 passed, 1 skipped in 3.2s ===" (or without the = under -q)
  summary=$(grep -E '(passed|failed|error|skipped|deselected|no tests ran).* in [0-9.]+s' \
            "$logs/$name.log" | tail -1 | sed -E 's/^\[[a-z]+\] //; s/^=+ //; s/ =+$//')
  echo "make test: $name lane: ${summary:-no summary} (exit $rc)"
  case "$rc" in
    0) ;;
    5) empty=$((empty + 1)) ;;  # no test of this lane was selected
    *) status=1 ;;
  esac
done
[ "$empty" -eq 2 ] && status=5
echo "make test: both lanes done in $(( $(date +%s) - started ))s (exit $status)"
exit "$status"
