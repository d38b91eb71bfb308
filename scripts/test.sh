#!/usr/bin/env bash
# The test command (README, .ci/run): installs what is missing, builds, lints, tests.
# Every test talks only to 127.0.0.0/8 and stops the servers it starts.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
bash scripts/setup.sh
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo bench --workspace --no-run --quiet          # benches must build; they run via bench/run.sh
cargo test --workspace --lib --bins --tests --examples --no-fail-fast
cargo test -p server-trust --doc --quiet
