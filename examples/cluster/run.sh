#!/usr/bin/env bash
# The chat on three moonwire nodes behind nginx, sharing rooms through Redis.
#
#   examples/cluster/run.sh            # http://127.0.0.1:8080/ until Ctrl-C
#   PORT=9080 examples/cluster/run.sh  # another public port
#
# Starts redis-server, three nodes (127.0.0.1:$PORT+1..3) and nginx on $PORT,
# each from Debian's packages, in a temporary directory; stops them all by PID
# on exit. Redis may stop (or be stopped) and start again meanwhile: the nodes
# keep serving their own clients and come back to it on their own; only a
# node or nginx exiting ends the example. Run from anywhere; build first
# (make build).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
port=${PORT:-8080}
redis_port=${REDIS_PORT:-$((port + 10))}
bin=${MW_BIN:-$root/build/moonwire}
work=$(mktemp -d /tmp/moonwire-cluster.XXXXXX)
pids=()

stop() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap stop EXIT INT TERM

for cmd in redis-server nginx "$bin"; do
  command -v "$cmd" >/dev/null || { echo "missing: $cmd (make deps-test; make build)" >&2; exit 1; }
done

redis=(redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no
       --dir "$work" --logfile "$work/redis.log")
"${redis[@]}" &
redis_pid=$!
pids+=("$redis_pid")

for n in 1 2 3; do
  "$bin" --config "$root/examples/cluster/moonwire.conf.lua" --node-id "n$n" \
    --listen "127.0.0.1:$((port + n))" --redis "redis://127.0.0.1:$redis_port" \
    > "$work/n$n.log" 2>&1 &
  pids+=($!)
done

sed -e "s/@PORT@/$port/g" -e "s/@N1@/$((port + 1))/" -e "s/@N2@/$((port + 2))/" \
    -e "s/@N3@/$((port + 3))/" -e "s|@WORK@|$work|g" \
    "$root/examples/cluster/nginx.conf.in" > "$work/nginx.conf"
nginx -p "$work" -c "$work/nginx.conf" -g "daemon off;" &
pids+=($!)

echo "moonwire cluster: http://127.0.0.1:$port/ (nodes on $((port + 1))-$((port + 3)), Redis on $redis_port, PID $redis_pid)"
echo "logs in $work; Ctrl-C stops everything"

# Until a node or nginx exits. Redis exiting is said, not an end: the nodes
# serve on (degraded, what crosses nodes waiting in their outboxes) and
# reconnect when a Redis listens on its port again.
while :; do
  gone=""
  wait -n -p gone "${pids[@]}" || true
  if [ -n "$gone" ] && [ "$gone" = "$redis_pid" ]; then
    printf -v again '%q ' "${redis[@]}"
    echo "redis-server exited; the nodes keep serving their own clients and reconnect when it" \
         "is back, e.g.: $again&" >&2
    left=()
    for pid in "${pids[@]}"; do [ "$pid" = "$redis_pid" ] || left+=("$pid"); done
    pids=("${left[@]}")
    redis_pid=""
    continue
  fi
  break
done
for f in "$work"/*.log; do echo "== $f"; tail -3 "$f"; done >&2
echo "a process of the cluster exited; stopping the rest" >&2
