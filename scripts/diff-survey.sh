#!/usr/bin/env bash
# diff-survey.sh: which commands' replies differ from redis-server's, family by family.
#
# Runs the differential tests (tests/tests/t20_differential.rs) in survey mode: no
# shrinking, every generated sequence run to its end, commands redoubt does not know yet
# left out (so one missing family does not hide the others). Prints one table per family
# and protocol, with one example per mismatching command, then a one-line summary.
#
# usage: scripts/diff-survey.sh [FILTER]       e.g. scripts/diff-survey.sh strings
# Environment: PROPTEST_CASES (default 64), DIFF_SEED (a number or `random`),
#              DIFF_SKIP_UNKNOWN (default 1; 0 keeps unknown commands in).
set -euo pipefail
cd "$(dirname "$0")/.."
report=$(mktemp "${TMPDIR:-/tmp}/diff-survey.XXXXXX")
log="$report.log"
filter=${1:-}
export DIFF_SURVEY=1 DIFF_SURVEY_OUT="$report" DIFF_SKIP_UNKNOWN="${DIFF_SKIP_UNKNOWN:-1}" RUST_BACKTRACE=0
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run -p redoubt-tests --test t20_differential --no-fail-fast $filter >"$log" 2>&1 || true
else
    cargo test -p redoubt-tests --test t20_differential -- $filter >"$log" 2>&1 || true
fi
if [ ! -s "$report" ]; then
    echo "no survey report: the tests did not run (see $log)" >&2
    tail -20 "$log" >&2
    exit 1
fi
cat "$report"
echo "=== summary"
grep -h '^survey \[' "$report" | sort
echo "(report: $report, test log: $log)"
