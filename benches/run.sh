#!/usr/bin/env bash
# Runs the benchmarks of server-trust (see benches/README.md):
#   benches/run.sh                the criterion benchmarks (benches/core.rs), then a summary of
#                                 the medians against the goals (~1.5 min on 2 cores)
#   benches/run.sh is_trusted     only those whose name contains "is_trusted" (args go to criterion)
#   benches/run.sh prosody        the two-Prosody benchmarks (benches/prosody.rs, ~1 min)
# Honors CARGO_TARGET_DIR. Needs only bash, cargo, sed, awk.
set -euo pipefail

cd "$(dirname "$0")/.."
if [[ ${1:-} == prosody ]]; then
    exec cargo bench --bench prosody
fi
target=${CARGO_TARGET_DIR:-$(cargo metadata --format-version 1 --no-deps \
    | sed -E 's/.*"target_directory":"([^"]*)".*/\1/')}
crit="$target/criterion"
log=$(mktemp "${TMPDIR:-/tmp}/server-trust-bench.XXXXXX")
marker="$log.start"
touch "$marker"
trap 'rm -f "$log" "$marker"' EXIT

cargo bench --bench core -- "$@" 2>&1 | tee "$log"

# Median (ns) of one benchmark, only if measured by this run; empty otherwise.
median() {
    local f="$crit/$1/new/estimates.json"
    [[ -f $f && $f -nt $marker ]] || return 0
    sed -E 's/.*"median":\{"confidence_interval":\{[^}]*\},"point_estimate":([0-9.eE+-]+).*/\1/' "$f"
}

fmt() { # ns -> human
    awk -v t="$1" 'BEGIN {
        if (t == "") { print "-"; exit }
        if (t < 1e3) printf "%.2f ns", t; else if (t < 1e6) printf "%.2f us", t / 1e3;
        else if (t < 1e9) printf "%.2f ms", t / 1e6; else printf "%.2f s", t / 1e9 }'
}

verdict() { # value limit -> PASS/FAIL (or - when not measured)
    awk -v v="$1" -v l="$2" 'BEGIN { if (v == "") print "-"; else print (v <= l ? "PASS" : "FAIL") }'
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "") print ""; else printf "%.2f", a / b }'; }

echo
echo "=== server-trust benchmark summary ($(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) CPUs) ==="
grep -E '^fixture: roster.toml' "$log" | sed 's/^fixture: /  /' || true
for k in hit miss; do
    f=$(median "is_trusted/ffi_$k"); h=$(median "is_trusted/hashset_$k"); r=$(ratio "$f" "$h")
    printf '  st_is_trusted %-4s  ffi %-10s HashSet %-10s ratio %-6s goal <= 1.5x  %s\n' \
        "$k" "$(fmt "$f")" "$(fmt "$h")" "${r:+${r}x}" "$(verdict "$r" 1.5)"
done
o=$(median engine_open/100k_peers)
printf '  Engine::open 100k peers   %-10s goal <= 150 ms  %s\n' "$(fmt "$o")" "$(verdict "$o" 150e6)"
on=$(median poll_1000_pending/watch_on); off=$(median poll_1000_pending/watch_off)
printf '  poll, 1000 pending, watch on   %-10s (idle: should be an atomic swap, well under 1 us)  %s\n' \
    "$(fmt "$on")" "$(verdict "$on" 1000)"
printf '  poll, 1000 pending, watch off  %-10s (scans every pending file)\n' "$(fmt "$off")"
grep -E '^diagnostic: ' "$log" | sed 's/^diagnostic: /  /' || true
echo "  breakdown:"
for b in is_trusted_parts/engine_hit_no_ffi is_trusted_parts/engine_miss_no_ffi \
    is_trusted_parts/rwlock_hashset_hit \
    is_trusted_parts/domain_new_normal_miss engine_open_parts/read_to_string \
    engine_open_parts/toml_parse_roster_file engine_open_parts/btreemap_into_hashmap \
    engine_open_parts/json_parse_same_roster; do
    m=$(median "$b")
    [[ -n $m ]] && printf '    %-42s %s\n' "$b" "$(fmt "$m")"
done
echo "(medians; full reports in $crit)"
