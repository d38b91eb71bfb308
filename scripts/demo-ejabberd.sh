#!/usr/bin/env bash
# The second demo: ejabberd 23.01 (verona.lit, with mod_server_trust and the sidecar) and
# Prosody 0.12 (montague.lit) become XEP-0267 server buddies on loopback through the CLI.
# Installs what is missing (Prosody, ejabberd), builds, starts both servers and the sidecar,
# runs the handshake with the CLI, prints both rosters, the audit log, the stanzas that crossed
# s2s and the timings, then stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
bash scripts/setup.sh
bash scripts/ejabberd-setup.sh
cargo run --quiet --example demo_ejabberd
