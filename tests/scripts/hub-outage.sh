#!/usr/bin/env bash
# Time-to-converge after a hub outage, with the real binaries on 127.0.0.1.
#
#   tests/scripts/hub-outage.sh [BIN_DIR]      (default target/release; build it first with
#                                               cargo build --release -p shelfsync-hub -p shelfsync-edge)
#
# Starts a demo hub and the Berlin store's agent in a temporary directory, stops the hub
# (SIGTERM), sells twice at the till while it is down, starts the hub again after
# OUTAGE_SECS (default 40) on the same port, and prints how long the agent then took to
# converge: link online, outbox empty, cursor at the hub's head. Any SHELFSYNC_EDGE_*
# variable in the environment reaches the agent (docs/benchmarks.md uses that to compare
# breaker settings). Every process it starts is stopped by its pid; it stops by itself.
set -euo pipefail
BIN=$(cd "${1:-target/release}" && pwd)
OUTAGE=${OUTAGE_SECS:-40}
WORK=$(mktemp -d)
BERLIN=01935701-0000-7000-8000-000000000001
COFFEE=01939d01-0000-7000-8000-000000000001
hub_pid= agent_pid=
cleanup() {
  for pid in $agent_pid $hub_pid; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# A port nothing answers on (the hub must come back on the same one).
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
HUB_PORT=$((20000 + RANDOM % 20000))
while port_in_use "$HUB_PORT"; do HUB_PORT=$((20000 + RANDOM % 20000)); done
HUB=http://127.0.0.1:$HUB_PORT

# wait_for SECONDS COMMAND...: runs COMMAND every 0.1 s until it succeeds, at most SECONDS.
wait_for() {
  local deadline=$((SECONDS + $1)); shift
  until "$@"; do
    if ((SECONDS >= deadline)); then echo "gave up waiting for: $*" >&2; exit 1; fi
    sleep 0.1
  done
}
start_hub() {
  "$BIN/shelfsync-hub" demo --data-dir "$WORK/hub" --listen "127.0.0.1:$HUB_PORT" >>"$WORK/hub.log" 2>&1 &
  hub_pid=$!
}
status() { curl -sf "$AGENT/v1/status"; }
field() { grep -o "\"$1\":[^,}]*" <<<"$2" | cut -d: -f2- | tr -d '"'; }
converged() {
  local s
  s=$(status) || return 1
  [[ $(field link "$s") == online && $(field outbox_depth "$s") == 0 && $(field cursor "$s") == $(field hub_head "$s") ]]
}

start_hub
wait_for 30 test -s "$WORK/hub/store-tokens/$BERLIN"
SHELFSYNC_EDGE_STORE_ID=$BERLIN SHELFSYNC_EDGE_HUB_URL=$HUB \
  SHELFSYNC_EDGE_HUB_TOKEN=$(cat "$WORK/hub/store-tokens/$BERLIN") SHELFSYNC_EDGE_LISTEN=127.0.0.1:0 \
  SHELFSYNC_EDGE_DATA_DIR="$WORK/berlin" "$BIN/shelfsync-edge" run >"$WORK/agent.out" 2>"$WORK/agent.log" &
agent_pid=$!
wait_for 30 grep -q 'listening on' "$WORK/agent.out"
AGENT=$(grep -o 'http://[0-9.:]*' "$WORK/agent.out" | head -1)
KEY="Authorization: Bearer $(cat "$WORK/berlin/terminal-key")"
wait_for 30 converged

kill "$hub_pid" && wait "$hub_pid" || true                      # the hub is down
down_at=$SECONDS
for n in 1 2; do
  r=01940000-0000-7000-8000-00000000c00$n
  curl -sf -o /dev/null -X POST "$AGENT/v1/inventory/reservations" -H "$KEY" -H 'Content-Type: application/json' \
    -d "{\"product_id\":\"$COFFEE\",\"store_id\":\"$BERLIN\",\"quantity\":1,\"reservation_id\":\"$r\"}"
  curl -sf -o /dev/null -X POST "$AGENT/v1/inventory/reservations/$r/commit" -H "$KEY"
done
sleep $((OUTAGE - (SECONDS - down_at)))
echo "after ${OUTAGE} s down: $(status)"

start_hub                                                         # the hub is back
back=$(date +%s.%N)
wait_for 120 converged
done_at=$(date +%s.%N)
echo "converged $(echo "$done_at $back" | awk '{printf "%.1f", $1 - $2}') s after the hub was back"
