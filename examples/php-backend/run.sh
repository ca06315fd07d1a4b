#!/usr/bin/env bash
# The PHP example: a PHP app (php -S) logs users in and signs their tokens,
# moonwire serves the chat, Redis carries the queue and the archive, and a
# PHP worker stores the archive in SQLite.
#
#   examples/php-backend/run.sh            # http://127.0.0.1:8080/ until Ctrl-C
#   PORT=9080 examples/php-backend/run.sh  # another port for the pages
#
# Starts, from Debian's packages: redis-server on REDIS_PORT (PORT+10),
# moonwire on MW_PORT (PORT+1), php -S on PORT and worker.php; stops them all
# by PID on Ctrl-C or when one of them exits. worker.php runs for a bounded
# time (WORKER_MAX_SECONDS, 300 s; WORKER_MAX_ENTRIES, 0: no bound) and is
# started again. CHAT_JWT_SECRET and MW_API_KEY are made for the run unless
# set. Logs and the SQLite archive go to WORK_DIR (a temporary directory,
# removed at the end, unless given). Build first (make build).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
port=${PORT:-8080}
mw_port=${MW_PORT:-$((port + 1))}
redis_port=${REDIS_PORT:-$((port + 10))}
bin=${MW_BIN:-$root/build/moonwire}
worker_max_seconds=${WORKER_MAX_SECONDS:-300}
worker_max_entries=${WORKER_MAX_ENTRIES:-0}

for cmd in redis-server redis-cli php "$bin"; do
  command -v "$cmd" >/dev/null || { echo "missing: $cmd (make deps-test; make build)" >&2; exit 1; }
done
modules=$(php -m)
for ext in redis curl sqlite3 pcntl; do
  grep -qx "$ext" <<<"$modules" || { echo "missing: PHP's $ext (apt-get install php-cli php-redis php-curl php-sqlite3)" >&2; exit 1; }
done

if [ -n "${WORK_DIR:-}" ]; then
  work=$WORK_DIR
  mkdir -p "$work"
  keep_work=1
else
  work=$(mktemp -d /tmp/moonwire-php.XXXXXX)
  keep_work=0
fi
mkdir -p "$work/sessions"
pids=()

# Last started, first stopped, one after the other: the worker while Redis
# is still there to finish with, the pages, moonwire (which drains), Redis last.
stop() {
  local i pid
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    pid=${pids[i]}
    kill -TERM "$pid" 2>/dev/null || continue
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  [ "$keep_work" = 1 ] || rm -rf "$work"
}
trap stop EXIT
trap 'exit 0' INT   # Ctrl-C: an ordered stop, not a failure (make run-php stays quiet)
trap 'exit 0' TERM

# What both sides must share, made for this run unless given.
secret() { php -r 'echo bin2hex(random_bytes(32));'; }
export CHAT_JWT_SECRET=${CHAT_JWT_SECRET:-$(secret)}
export MW_API_KEY=${MW_API_KEY:-$(secret)}
export PHP_ORIGINS="http://127.0.0.1:$port http://localhost:$port"
export MW_API_URL="http://127.0.0.1:$mw_port" MW_WS_PORT=$mw_port
export REDIS_HOST=127.0.0.1 REDIS_PORT=$redis_port
export ARCHIVE_DB=${ARCHIVE_DB:-$work/archive.sqlite}

redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
  --dir "$work" --logfile "$work/redis.log" &
pids+=($!)
for _ in $(seq 100); do
  redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break
  sleep 0.05
done

cd "$root"   # moonwire.conf.lua's paths are relative to the repository
"$bin" --config "$here/moonwire.conf.lua" --listen "127.0.0.1:$mw_port" \
  --redis "redis://127.0.0.1:$redis_port" > "$work/moonwire.log" 2>&1 &
pids+=($!)

php -S "127.0.0.1:$port" -t "$here/public" \
  -d session.save_path="$work/sessions" -d display_errors=stderr > "$work/php.log" 2>&1 &
pids+=($!)

start_worker() {
  php "$here/worker.php" --max-seconds "$worker_max_seconds" --max-entries "$worker_max_entries" \
    >> "$work/worker.log" 2>&1 &
  worker_pid=$!
  pids+=("$worker_pid")
}
start_worker

echo "moonwire + PHP: http://127.0.0.1:$port/ (moonwire on $mw_port, Redis on $redis_port)"
echo "logs in $work; Ctrl-C stops everything"

# Until something other than the worker exits. The worker's bounded run
# ending is its restart; a worker that failed is started again after 1 s.
while :; do
  gone=""
  status=0
  wait -n -p gone "${pids[@]}" || status=$?
  if [ -z "$gone" ]; then [ "$status" != 127 ] && continue; break; fi
  left=()
  for pid in "${pids[@]}"; do [ "$pid" = "$gone" ] || left+=("$pid"); done
  pids=("${left[@]}")
  if [ "$gone" = "$worker_pid" ]; then
    if [ "$status" != 0 ]; then
      echo "worker.php exited with status $status (see $work/worker.log); starting it again in 1 s" >&2
      sleep 1
    fi
    start_worker
    continue
  fi
  break
done
for f in "$work"/*.log; do echo "== $f"; tail -5 "$f"; done >&2
echo "a process of the example exited; stopping the rest" >&2
exit 1
