#!/bin/bash
# User-space instructions per message under callgrind: a figure that does not
# move with the machine's noise, for A/B of two builds of moonwire.
#
#   bench/callgrind.sh [echo|relay] [BINARY]
#
# Runs BINARY (build/moonwire) under callgrind on a free port of 127.0.0.1
# with scripts/echo.lua or scripts/relay.lua, drives it with build/mw_loadgen
# for 3 s (echo: 20 connections x 4 in flight; relay: 200 connections, 1
# publisher, window 4; 64-byte text), stops it by PID, and prints the
# instructions of the whole run (startup included: about 1%) per message the
# server read, and per delivery for relay; then the same without startup and
# exit (the instructions inside libuv's uv_run: connections set up and
# messages; startup is some 20 million instructions, which the whole run's
# figure shares among however many messages the 3 s saw, so that figure moves
# with the machine's load and this one does not); then the calls to malloc,
# calloc and realloc per message, which the pools keep near 0. The profile
# stays in build/bench/callgrind.out for callgrind_annotate.
set -eu

scenario=${1:-echo}
bin=${2:-build/moonwire}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
out=build/bench/callgrind.out
mkdir -p build/bench
case $scenario in
    echo) script=scripts/echo.lua; load=(echo -c 20 -w 4 -s 64) ;;
    relay) script=scripts/relay.lua; load=(relay -c 200 -P 1 -w 4 -s 64) ;;
    *) echo "usage: bench/callgrind.sh [echo|relay] [BINARY]" >&2; exit 2 ;;
esac
command -v valgrind >/dev/null || { echo "callgrind.sh: valgrind is not installed" >&2; exit 2; }
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

# Everything runs some 50 times slower under valgrind: no time limit for hooks.
conf=$(mktemp /tmp/mw-callgrind-XXXXXX.lua)
printf 'return { log = { level = "warn" }, lua = { time_limit = 0 } }\n' > "$conf"
valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" --config "$conf" \
    --listen "127.0.0.1:$port" --script "$script" 2> build/bench/callgrind.log &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; rm -f "$conf"' EXIT
for _ in $(seq 100); do
    (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || { cat build/bench/callgrind.log >&2; exit 1; }
    sleep 0.2
done
build/mw_loadgen -u "ws://127.0.0.1:$port" -q "${load[@]}" -d 3 --warmup 1 --drain 2 \
    > build/bench/callgrind.json
kill "$pid"
wait "$pid" 2>/dev/null || true
/usr/bin/python3 - "$out" build/bench/callgrind.json "$scenario" <<'PY'
import json, re, sys
out, result, scenario = sys.argv[1:]
d = json.load(open(result))
total = None
# Calls to libc's allocator: the file names a function once, "cfn=(7) malloc",
# then by number alone, and a "calls=" line follows each call site.
names, allocs, callee = {}, 0, None
for line in open(out):
    if line.startswith(("totals:", "summary:")):
        total = int(line.split()[1])
    m = re.match(r"(c?fn)=\((\d+)\)(?: (\S+))?", line)
    if m:
        if m.group(3):
            names[m.group(2)] = m.group(3)
        callee = names.get(m.group(2)) if m.group(1) == "cfn" else None
    elif line.startswith("calls=") and callee in ("malloc", "calloc", "realloc"):
        allocs += int(line.split()[0][6:])
        callee = None
# Messages the server read: every one sent (echo), or every one published (relay).
n = d["sent_total"] if scenario == "echo" else d["published_total"]
line = f"{scenario}: {total:,} instructions, {n:,} messages in: {total / n:,.0f} per message"
if scenario == "relay":
    line += f", {total / d['received_total']:,.0f} per delivery ({d['received_total']:,} deliveries)"
print(line)
# The loop alone: uv_run's inclusive cost, as callgrind_annotate counts it.
import subprocess
ann = subprocess.run(["callgrind_annotate", "--inclusive=yes", out], capture_output=True,
                     text=True).stdout
loop = max((int(l.split()[0].replace(",", "")) for l in ann.splitlines()
            if re.search(r":uv_run \[", l) and re.match(r"\s*[\d,]+ ", l)), default=None)
if loop is not None:
    line = f"{scenario}: {loop:,} instructions in the loop (uv_run, no startup): {loop / n:,.0f} per message"
    if scenario == "relay":
        line += f", {loop / d['received_total']:,.0f} per delivery"
    print(line)
print(f"{scenario}: {allocs:,} calls to malloc, calloc or realloc (startup and connections "
      f"included): {allocs / n:.3f} per message")
PY
