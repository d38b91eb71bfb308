#!/usr/bin/env bash
# Coverage-guided fuzzing with libFuzzer (cargo fuzz) on this machine's stable toolchain
# (RUSTC_BOOTSTRAP=1 lets cargo fuzz pass its sanitizer flags). Corpora are kept as
# corpora/<target>.tar.gz; this unpacks them, runs, and packs the grown corpus back.
#   bash fuzz/run.sh TARGET [RUNS [SECONDS]]
#     TARGET: domain | store_files | c_abi | sidecar_json; RUNS default 10000000; SECONDS, if
#     given, ends the run after that long even short of RUNS (libFuzzer's -max_total_time).
#   FUZZ_SANITIZER=none runs without AddressSanitizer (cargo fuzz -s none): about 4x the
#     executions per second for c_abi, whose ASan runs would take CPU-hours to reach 10M.
set -euo pipefail
cd "$(dirname "$0")"
target=${1:?usage: fuzz/run.sh domain|store_files|c_abi|sidecar_json [RUNS [SECONDS]]}
runs=${2:-10000000}
limit=()
[ -n "${3:-}" ] && limit=(-max_total_time="$3")
san=()
[ -n "${FUZZ_SANITIZER:-}" ] && san=(-s "$FUZZ_SANITIZER")
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
mkdir -p corpus/"$target"
[ -f corpora/"$target".tar.gz ] && tar xzf corpora/"$target".tar.gz -C corpus/"$target"
dict=()
[ -f dicts/"$target".dict ] && dict=(-dict=dicts/"$target".dict)   # e.g. TOML table headers
RUSTC_BOOTSTRAP=1 cargo fuzz run -O "${san[@]}" "$target" corpus/"$target" -- -runs="$runs" -max_len=1024 "${dict[@]}" "${limit[@]}"
RUSTC_BOOTSTRAP=1 cargo fuzz cmin -O "${san[@]}" "$target" corpus/"$target"
mkdir -p corpora && tar czf corpora/"$target".tar.gz -C corpus/"$target" .
