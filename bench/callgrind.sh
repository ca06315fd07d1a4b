#!/bin/bash
# User-space instructions per message under callgrind: a figure that does not
# move with the machine's noise, for A/B of two builds of moonwire.
#
#   bench/callgrind.sh [echo|relay|lua-floor] [BINARY]
#
# (lua-floor: BINARY is build/mw_bench_lua_floor, see below.)
# Runs BINARY (build/moonwire) under callgrind on a free port of 127.0.0.1
# with scripts/echo.lua or scripts/relay.lua and drives it with
# build/mw_loadgen (echo: 20 connections x 4 in flight; relay: 200
# connections, 1 publisher, window 4; 64-byte text): 1 s to warm up (pools,
# Lua's heap), then a second run whose middle is measured: once its
# connections are all open (/metrics), callgrind's counters are zeroed
# (callgrind_control -z), and 4 s later dumped (callgrind_control -d) while
# the load still runs. The message counts are the server's own
# (/metrics: moonwire_messages_in_total, _out_total, at the zero and at the
# dump), so neither startup, nor handshakes, nor how many messages a slow or
# busy machine lets through moves the figure. It prints the window's
# instructions per message the server read, per delivery for relay, and the
# calls to malloc, calloc and realloc per message, which the pools keep near
# 0; then one JSON line of the same (bench/run.py's callgrind-* scenarios).
# The window's profile stays in build/bench/callgrind.out for
# callgrind_annotate.
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
    lua-floor) ;;
    *) echo "usage: bench/callgrind.sh [echo|relay|lua-floor] [BINARY]" >&2; exit 2 ;;
esac
for tool in valgrind callgrind_control; do
    command -v $tool >/dev/null || { echo "callgrind.sh: $tool is not installed" >&2; exit 2; }
done

# lua-floor: one on_message call in liblua alone (bench/lua_floor.c), with
# conn's __index a function (as moonwire's) and a table: each run 100,000
# and 200,000 times under callgrind, the difference over 100,000 per call.
if [ "$scenario" = lua-floor ]; then
    floor=$bin
    [ "$floor" != build/moonwire ] || floor=build/mw_bench_lua_floor
    per_call() {
        local a b
        a=$(valgrind --tool=callgrind --callgrind-out-file=/dev/null "$floor" 100000 "$1" 2>&1 |
            sed -n 's/.*Collected : //p')
        b=$(valgrind --tool=callgrind --callgrind-out-file=/dev/null "$floor" 200000 "$1" 2>&1 |
            sed -n 's/.*Collected : //p')
        [ -n "$a" ] && [ -n "$b" ] || { echo "callgrind.sh: $floor $1 did not run" >&2; exit 1; }
        echo $(((b - a) / 100000))
    }
    fn=$(per_call function)
    tab=$(per_call table)
    echo "lua-floor: $fn instructions a call with __index a function, $tab with a table"
    printf '{"instructions_per_msg": %d, "table_index_per_msg": %d}\n' "$fn" "$tab"
    exit 0
fi
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

# Everything runs some 50 times slower under valgrind: no time limit for hooks.
conf=$(mktemp /tmp/mw-callgrind-XXXXXX.lua)
printf 'return { log = { level = "warn" }, lua = { time_limit = 0 } }\n' > "$conf"
rm -f "$out" "$out".*
valgrind --tool=callgrind --callgrind-out-file="$out.run" "$bin" --config "$conf" \
    --listen "127.0.0.1:$port" --script "$script" 2> build/bench/callgrind.log &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; rm -f "$conf"' EXIT
for _ in $(seq 100); do
    (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || { cat build/bench/callgrind.log >&2; exit 1; }
    sleep 0.2
done

# The server's counters of messages in and out and its open connections,
# as "IN OUT OPEN".
counts() {
    /usr/bin/python3 - "$port" <<'PY'
import sys, urllib.request
text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=30).read().decode()
val = {ln.split()[0]: int(float(ln.split()[1])) for ln in text.splitlines()
       if ln.startswith("moonwire_")}
print(val["moonwire_messages_in_total"], val["moonwire_messages_out_total"],
      val["moonwire_connections"])
PY
}

conns=${load[2]}
build/mw_loadgen -u "ws://127.0.0.1:$port" -q "${load[@]}" -d 1 --drain 2 \
    > build/bench/callgrind-warmup.json
build/mw_loadgen -u "ws://127.0.0.1:$port" -q "${load[@]}" --warmup 30 -d 1 --drain 2 \
    > build/bench/callgrind.json &
gen=$!
trap 'kill "$pid" "$gen" 2>/dev/null || true; rm -f "$conf"' EXIT
open=0
for _ in $(seq 200); do
    read -r _ _ open < <(counts)
    [ "$open" -ge "$conns" ] && break
    sleep 0.1
done
[ "$open" -ge "$conns" ] || { echo "callgrind.sh: $open of $conns connections open" >&2; exit 1; }
sleep 0.5
# The counters are read just before and just after each callgrind_control
# (a vgdb round trip): the messages of that moment are counted half.
mark() {
    local a b c d
    read -r a b _ < <(counts)
    callgrind_control "$1" "$pid" >/dev/null 2>&1
    read -r c d _ < <(counts)
    echo $(((a + c) / 2)) $(((b + d) / 2))
}
read -r in0 out0 < <(mark -z)
sleep 4
read -r in1 out1 < <(mark -d)
kill "$gen" 2>/dev/null || true
wait "$gen" 2>/dev/null || true
kill "$pid"
wait "$pid" 2>/dev/null || true
# The dump of the window is the run's file with ".1"; what came after it
# (the exit) goes to the run's file itself.
[ -f "$out.run.1" ] || { echo "callgrind.sh: no dump of the measured window" >&2; exit 1; }
mv "$out.run.1" "$out"
rm -f "$out.run"
/usr/bin/python3 - "$out" "$scenario" $((in1 - in0)) $((out1 - out0)) <<'PY'
import json, re, sys
out, scenario, n, delivered = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
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
if not total or not n or (scenario == "relay" and not delivered):
    sys.exit(f"callgrind.sh: nothing measured ({total} instructions, {n} messages)")
line = f"{scenario}: {total:,} instructions, {n:,} messages in: {total / n:,.0f} per message"
if scenario == "relay":
    line += f", {total / delivered:,.0f} per delivery ({delivered:,} deliveries)"
print(line)
print(f"{scenario}: {allocs:,} calls to malloc, calloc or realloc: {allocs / n:.4f} per message")
# The same as one JSON line, last, for bench/run.py's callgrind-* scenarios.
print(json.dumps({"instructions": total, "messages": n,
                  "instructions_per_msg": round(total / n, 1),
                  "deliveries": delivered if scenario == "relay" else None,
                  "instructions_per_delivery": round(total / delivered, 1)
                  if scenario == "relay" else None,
                  "allocs_per_msg": round(allocs / n, 4)}))
PY
