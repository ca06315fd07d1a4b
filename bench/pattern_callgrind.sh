#!/bin/bash
# Instructions of moonwire's pattern functions against Lua 5.4's own, per
# workload of build/mw_bench_pattern, under callgrind: a ratio that does not
# move with the machine's noise (1.0: as many instructions as Lua's).
#
#   bench/pattern_callgrind.sh [BINARY]
#
# Each workload runs once with each side (--only lua|ours, 10,000 calls), and
# once with 20 calls to measure what the run costs around the calls
# (start-up, the install), which is subtracted from both.
set -eu

bin=${1:-build/mw_bench_pattern}
command -v valgrind >/dev/null || { echo "pattern_callgrind.sh: valgrind is not installed" >&2; exit 2; }
[ -x "$bin" ] || { echo "pattern_callgrind.sh: no $bin (cmake --build build --target mw_bench_pattern)" >&2; exit 2; }
out=$(mktemp -d /tmp/mw-pattern-cg-XXXXXX)
trap 'rm -rf "$out"' EXIT

instructions() { # side workload scale
    valgrind --tool=callgrind --callgrind-out-file="$out/cg" "$bin" --only "$1" --workload "$2" \
        --scale "$3" >/dev/null 2>&1
    grep -E '^(summary|totals):' "$out/cg" | head -1 | awk '{print $2}'
}

count=$("$bin" --rounds 1 --scale 0.0001 | grep -vc -E '^(workload|geometric)')
printf '%-3s %14s %14s %7s\n' "#" "lua Ir" "ours Ir" "ratio"
for w in $(seq 1 "$count"); do
    base=$(instructions lua "$w" 0.0001)
    lua=$(( $(instructions lua "$w" 0.05) - base ))
    ours=$(( $(instructions ours "$w" 0.05) - base ))
    printf '%-3s %14d %14d %7s\n' "$w" "$lua" "$ours" \
        "$(awk -v a="$ours" -v b="$lua" 'BEGIN { printf "%.3f", a / b }')"
done
