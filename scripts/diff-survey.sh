#!/usr/bin/env bash
# diff-survey.sh: which commands' replies differ from redis-server's, family by family.
#
# Runs the differential tests (tests/tests/t20_differential.rs) in survey mode: no
# shrinking, every generated sequence run to its end, commands redoubt does not know yet
# left out (so one missing family does not hide the others), and prints one table per
# family and protocol plus one example per mismatching command.
#
# usage: scripts/diff-survey.sh [FILTER]       e.g. scripts/diff-survey.sh strings
# Environment: PROPTEST_CASES (default 64), DIFF_SEED (a number or `random`),
#              DIFF_SKIP_UNKNOWN (default 1; 0 keeps unknown commands in).
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp "${TMPDIR:-/tmp}/diff-survey.XXXXXX")
filter=${1:-}
DIFF_SURVEY=1 DIFF_SKIP_UNKNOWN=${DIFF_SKIP_UNKNOWN:-1} \
    cargo test -q -p redoubt-tests --test t20_differential -- --nocapture --test-threads 1 $filter >"$out" 2>&1 || true
# The survey prints its report on stdout; keep each report once.
awk '
    /^survey \[/ { on = 1; key = $0; if (seen[key]++) { on = 0 } }
    /^thread .* panicked/ { on = 0 }
    /^test result:/ { print; on = 0 }
    on { print }
' "$out"
echo "(full output: $out)"
