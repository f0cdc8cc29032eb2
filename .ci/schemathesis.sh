#!/usr/bin/env bash
# Property-based API test: schemathesis against a real hub and a real edge agent.
#
# Builds the binaries, starts `shelfsync-hub demo` (three stores, five products, opening
# stock) and the edge agent of its Berlin store on free 127.0.0.1 ports with temporary
# data directories, validates both /openapi.json documents as OpenAPI 3.1, then runs
# schemathesis with every check (see the config), a fixed seed and a bounded number of examples per
# operation against each server, authenticated (the hub's admin token; the agent's
# manager key). Any server error, undocumented status, schema violation or accepted
# invalid input fails the step. Settings per operation are in .ci/schemathesis.toml.
#
#   bash .ci/schemathesis.sh                  # what .ci/run does
#   SCHEMATHESIS_EXAMPLES=200 SCHEMATHESIS_SEED=7 bash .ci/schemathesis.sh
#   SCHEMATHESIS_KEEP=1 bash .ci/schemathesis.sh   # keep data dirs, logs and reports
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

SCHEMATHESIS_VERSION=4.32.5
VALIDATOR_VERSION=0.9.0
seed=${SCHEMATHESIS_SEED:-20261126}
examples=${SCHEMATHESIS_EXAMPLES:-40}
venv=${SCHEMATHESIS_VENV:-$root/.venv/schemathesis}
admin_token=schemathesis-admin-token-0123456789abcdef
terminal_key=schemathesis-terminal-key-0123456789abcdef
manager_key=schemathesis-manager-key-0123456789abcdef
# Berlin Mitte, the first demo store (hub/src/seed.rs).
store=01935701-0000-7000-8000-000000000001

started=$(date +%s)
echo "== schemathesis: python tooling in $venv"
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -qF "$SCHEMATHESIS_VERSION" ||
    ! "$venv/bin/python" -c "import openapi_spec_validator" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        "schemathesis==$SCHEMATHESIS_VERSION" "openapi-spec-validator==$VALIDATOR_VERSION"
fi

echo "== schemathesis: building the binaries"
cargo build --quiet --bins -p shelfsync-hub -p shelfsync-edge
bin=${CARGO_TARGET_DIR:-$root/target}/debug

work=$(mktemp -d "${TMPDIR:-/tmp}/shelfsync-schemathesis.XXXXXX")
pids=()
cleanup() {
    local status=$?
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [ "$status" -ne 0 ] || [ -n "${SCHEMATHESIS_KEEP:-}" ]; then
        echo "schemathesis: logs, data and reports kept in $work"
        for log in "$work"/*.stderr; do
            [ -f "$log" ] && { echo "--- tail of $log"; tail -n 20 "$log"; }
        done
    else
        rm -rf "$work"
    fi
    exit "$status"
}
trap cleanup EXIT

# Waits (bounded) for the line "<prefix>http://ADDR" on a process's stdout file; prints the URL.
listening_url() {
    local file=$1 prefix=$2 pid=$3
    for _ in $(seq 300); do
        if line=$(grep -m1 -F "$prefix" "$file" 2>/dev/null); then
            echo "${line#"$prefix"}"
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || { echo "process $pid exited before listening" >&2; return 1; }
        sleep 0.1
    done
    echo "no '$prefix' line in $file after 30 s" >&2
    return 1
}

echo "== schemathesis: starting a demo hub and Berlin's edge agent"
env -u SHELFSYNC_HUB_CONFIG SHELFSYNC_HUB_ADMIN_TOKEN=$admin_token SHELFSYNC_HUB_LOG=warn NO_COLOR=1 \
    "$bin/shelfsync-hub" demo --data-dir "$work/hub" --listen 127.0.0.1:0 \
    >"$work/hub.stdout" 2>"$work/hub.stderr" &
pids+=($!)
hub=$(listening_url "$work/hub.stdout" "shelfsync hub listening on " "${pids[0]}")
for _ in $(seq 100); do
    [ -s "$work/hub/store-tokens/$store" ] && break
    sleep 0.1
done
env -u SHELFSYNC_EDGE_CONFIG \
    SHELFSYNC_EDGE_STORE_ID=$store \
    SHELFSYNC_EDGE_HUB_URL="$hub" SHELFSYNC_EDGE_ALLOW_INSECURE_HUB=true \
    SHELFSYNC_EDGE_HUB_TOKEN="$(cat "$work/hub/store-tokens/$store")" \
    SHELFSYNC_EDGE_LISTEN=127.0.0.1:0 \
    SHELFSYNC_EDGE_DATA_DIR="$work/agent" \
    SHELFSYNC_EDGE_TERMINAL_KEY=$terminal_key \
    SHELFSYNC_EDGE_MANAGER_KEY=$manager_key \
    SHELFSYNC_EDGE_LOG=warn NO_COLOR=1 \
    "$bin/shelfsync-edge" run >"$work/agent.stdout" 2>"$work/agent.stderr" &
pids+=($!)
agent=$(listening_url "$work/agent.stdout" "shelfsync edge agent listening on " "${pids[1]}")
# The agent serves its catalog once it has bootstrapped from the hub.
for _ in $(seq 300); do
    curl -fsS "$agent/readyz" 2>/dev/null | grep -q '"bootstrapped":true' && break
    sleep 0.1
done
curl -fsS "$agent/readyz" | grep -q '"bootstrapped":true' || { echo "the agent did not bootstrap in 30 s" >&2; exit 1; }
echo "hub $hub, agent $agent"

echo "== schemathesis: both documents are valid OpenAPI 3.1"
curl -fsS "$hub/openapi.json" >"$work/hub-openapi.json"
curl -fsS "$agent/openapi.json" >"$work/agent-openapi.json"
"$venv/bin/python" - "$work/hub-openapi.json" "$work/agent-openapi.json" <<'PY'
import json, sys
from openapi_spec_validator import OpenAPIV31SpecValidator
failed = False
for path in sys.argv[1:]:
    with open(path) as f:
        document = json.load(f)
    errors = list(OpenAPIV31SpecValidator(document).iter_errors())
    for error in errors:
        print(f"{path}: {error.message} at {'/'.join(map(str, error.absolute_path))}")
    failed = failed or bool(errors)
    print(f"{path}: {'INVALID' if errors else 'valid'} OpenAPI {document.get('openapi')}")
sys.exit(1 if failed else 0)
PY

store_token=$(cat "$work/hub/store-tokens/$store")
# run NAME URL TOKEN [schemathesis options...]
# One worker: with two, Hypothesis parses lambda sources in two threads at once, which
# CPython 3.11 before 3.11.8 can fail ("AST constructor recursion depth mismatch"), and the
# servers share the same two cores anyway.
run() {
    local name=$1 url=$2 token=$3
    shift 3
    echo "== schemathesis: $name ($examples examples per operation, seed $seed)"
    (cd "$root/.ci" && SCHEMATHESIS_TOKEN=$token \
        "$venv/bin/schemathesis" --config-file schemathesis.toml run "$url/openapi.json" \
        --url "$url" \
        --seed "$seed" \
        --max-examples "$examples" \
        --workers 1 \
        --request-timeout 10 \
        --report junit --report-dir "$work/report-$name" \
        "$@")
}
status=0
run agent "$agent" "$manager_key" || status=1
# The sync routes with the store's token, before the admin run can revoke it.
run hub-sync "$hub" "$store_token" --include-path-regex '^/v1/sync/' || status=1
# Not POST /v1/enroll: its codes are single use, so a second valid request is refused
# (410 enrollment_code_used, documented), which schemathesis counts as a valid request
# rejected; hub/tests/enrollment.rs and tests/tests/enroll.rs test it.
run hub "$hub" "$admin_token" --exclude-path-regex '^/v1/(sync/|enroll$)' || status=1
echo "schemathesis: done in $(($(date +%s) - started)) s"
exit $status
