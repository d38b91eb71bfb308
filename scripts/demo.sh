#!/usr/bin/env bash
# The main job: two real Prosody servers become XEP-0267 server buddies on loopback.
# Builds everything, starts montague.lit and capulet.lit, runs the handshake with the CLI,
# prints both rosters and stops the servers.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
bash scripts/setup.sh
cargo run --quiet --example demo
