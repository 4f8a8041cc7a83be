#!/usr/bin/env bash
# Runs the HTTP caching conformance suite behind cache-tests.fyi through the
# HTTP layer (cache-runtime/examples/conformance_proxy.rs, a reverse proxy in
# front of the suite's origin), on memory and on Redis, in the default mode
# and in gateway mode, and prints the counts by kind.
#
#   scripts/conformance.sh                # the suite from the npm registry
#   CACHE_TESTS=DIR scripts/conformance.sh  # a checkout of github http-tests/cache-tests
#   BACKENDS=memory MODES=default scripts/conformance.sh  # one run of four
#
# The default mode is counted with every test (its default TTL stores what
# the suite's `freshness-none` prerequisite says must not be, so that gate
# would hide most tests); gateway mode with the prerequisites honoured, as
# cache-tests.fyi counts. Needs node, npm and redis-server.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work="$root/target/conformance"
mkdir -p "$work"

suite=${CACHE_TESTS:-}
if [ -z "$suite" ]; then
  if [ ! -d "$work/node_modules/http-cache-tests" ]; then
    (cd "$work" && npm install --silent --no-audit --no-fund http-cache-tests)
  fi
  suite="$work/node_modules/http-cache-tests"
elif [ ! -d "$suite/node_modules" ]; then
  (cd "$suite" && npm install --silent --no-audit --no-fund --omit=dev)
fi
engine="$suite"
[ -f "$suite/test-engine/cli.mjs" ] && engine="$suite/test-engine"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing listens on port $1" >&2; return 1
}
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT

cargo build --quiet -p cache-runtime --features http --example conformance_proxy
proxy="$root/target/debug/examples/conformance_proxy"

origin=$(free_port)
(cd "$suite" && npm_config_protocol=http npm_config_port="$origin" \
  npm_config_pidfile="$work/origin.pid" exec node "$engine/server/server.mjs") >"$work/origin.log" 2>&1 &
pids+=($!)
redis=$(free_port)
redis-server --port "$redis" --bind 127.0.0.1 --save "" --appendonly no >"$work/redis.log" 2>&1 &
pids+=($!)
wait_port "$origin"
wait_port "$redis"

for backend in ${BACKENDS:-memory redis}; do
  for mode in ${MODES:-default gateway}; do
    listen=$(free_port)
    flags=(--listen "127.0.0.1:$listen" --origin "http://127.0.0.1:$origin")
    [ "$backend" = redis ] && flags+=(--redis "redis://127.0.0.1:$redis/")
    [ "$mode" = gateway ] && flags+=(--gateway)
    "$proxy" "${flags[@]}" 2>"$work/proxy-$backend-$mode.log" &
    pid=$!
    wait_port "$listen"
    results="$work/results-$backend-$mode.json"
    (cd "$suite" && npm_config_base="http://127.0.0.1:$listen" npm_config_id="" \
      npm_package_config_id="" node --no-warnings "$engine/cli.mjs") >"$results"
    kill "$pid"
    echo "== $backend, $mode mode"
    prerequisites=()
    [ "$mode" = gateway ] && prerequisites=(--prerequisites)
    node "$root/scripts/conformance/count.mjs" "$suite" "$results" "${prerequisites[@]}"
  done
done
