#!/usr/bin/env bash
# The one bench command: builds every bench of the workspace once (release), runs each
# scenario with its same-run baseline several times, then prints one table (median, min,
# max, baseline, ratio, goal, met) and one JSON line per scenario.
#
#   tests/scripts/bench.sh                 # every bench, full sizes (about an hour here)
#   tests/scripts/bench.sh local_sales     # only these bench targets
#   tests/scripts/bench.sh --quick         # tiny sizes, one run each, no verdict (CI)
#
# The knobs each bench reads (RUNS, STREAMS, ...) pass through the environment. --quick
# builds in the test profile, which CI has already built, and proves each scenario still
# runs end to end; it judges no goal.
set -euo pipefail
cd "$(dirname "$0")/../.."

quick=0
targets=()
for arg in "$@"; do
    case "$arg" in
        --quick) quick=1 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        -*) echo "bench.sh: unknown option $arg (try --help)" >&2; exit 2 ;;
        *) targets+=("$arg") ;;
    esac
done

# Every bench target of the workspace, as `package:bench`.
all=(
    shelfsync-hub:append_http
    shelfsync-hub:upload_ingest
    shelfsync-hub:ingest_schema
    shelfsync-hub:sse_fanout
    shelfsync-hub:catalog_push
    shelfsync-hub:cluster_pg
    shelfsync-hub:fleet_page
    shelfsync-hub:analytics_lag
    shelfsync-hub:verify_log
    shelfsync-edge:local_sales
    shelfsync-edge:local_reads
    shelfsync-edge:sync_drain
    shelfsync-edge:allocations
    shelfsync-edge:retention
)
selected=()
for entry in "${all[@]}"; do
    if [ ${#targets[@]} -eq 0 ]; then
        selected+=("$entry")
        continue
    fi
    for t in "${targets[@]}"; do
        [ "${entry#*:}" = "$t" ] && selected+=("$entry")
    done
done
if [ ${#selected[@]} -eq 0 ]; then
    echo "bench.sh: no bench named ${targets[*]}; the benches are: ${all[*]#*:}" >&2
    exit 2
fi

report_dir=$(mktemp -d)
trap 'rm -rf "$report_dir"' EXIT
export SHELFSYNC_BENCH_REPORT="$report_dir/results.jsonl"
# The push benches open thousands of sockets.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# Scenarios reported so far.
reported() {
    if [ -f "$SHELFSYNC_BENCH_REPORT" ]; then wc -l <"$SHELFSYNC_BENCH_REPORT"; else echo 0; fi
}

for entry in "${selected[@]}"; do
    package=${entry%%:*}
    bench=${entry#*:}
    echo "== $bench"
    before=$(reported)
    if [ "$quick" = 1 ]; then
        SHELFSYNC_BENCH_QUICK=1 cargo test -q -p "$package" --bench "$bench"
    else
        cargo bench -q -p "$package" --bench "$bench"
    fi
    after=$(reported)
    if [ "$after" -le "$before" ]; then
        echo "bench.sh: $bench ran but reported no scenario" >&2
        exit 1
    fi
done

rows="$SHELFSYNC_BENCH_REPORT.md"
echo
echo "== results ($( [ "$quick" = 1 ] && echo "quick: sizes too small to judge" || echo "goals judged"))"
echo "| scenario | median | min | max | runs | baseline (median) | ratio median (min-max) | goal | met |"
echo "|---|---:|---:|---:|---:|---|---|---|---|"
cat "$rows"
echo
cat "$SHELFSYNC_BENCH_REPORT"
