#!/usr/bin/env bash
# Installs what server-trust needs on a fresh Debian 12 machine (run as root), then builds
# the workspace. Idempotent: skips what is already there.
#   prosody lua5.4 lua-unbound  real Prosody 0.12 servers for the tests and the demo
#   openssl                     self-signed certificates for the lab servers
#   gcc g++                     the C ABI test compiles against include/server_trust.h
#   pkg-config lintian dpkg-dev the Debian package test (build, check, C program via pkg-config)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

# Rust first, before anything is installed: without it every later step is wasted (Debian 12
# ships rustc 1.63; the workspace needs its rust-version).
want=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml | head -1)
have=""
if command -v cargo >/dev/null && command -v rustc >/dev/null; then
  have=$(rustc --version 2>/dev/null | awk '{print $2}')
  cargo_v=$(cargo --version 2>/dev/null | awk '{print $2}')
  # The older of the two decides (a stray old cargo first on PATH breaks the build too).
  if [ -z "$cargo_v" ] || [ "$(printf '%s\n' "$have" "$cargo_v" | sort -V | head -1)" = "$cargo_v" ]; then
    have=$cargo_v
  fi
fi
if [ -z "$have" ] || [ "$(printf '%s\n' "$want" "$have" | sort -V | head -1)" != "$want" ]; then
  cat >&2 <<EOF
setup: server-trust needs Rust $want or later (cargo and rustc); found: ${have:-no cargo/rustc on PATH}.
setup: nothing was installed. Get a current Rust with rustup (Debian 12's rustc 1.63 is too old):
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y
  . "\$HOME/.cargo/env"
setup: then run this script again (with rustup already there: rustup update stable).
EOF
  exit 2
fi

need=()
for pkg in prosody lua5.4 lua-unbound openssl gcc g++ git pkg-config lintian dpkg-dev python3-slixmpp; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  # Keep Debian's postinst from starting a system-wide Prosody on *:5269 (our labs bind
  # 127.0.x.y:5269 and must not collide with it).
  # It blocks every service start on the machine: removed however this script ends (apt
  # failing included), and only when this script made it.
  made_policy=""
  drop_policy() { [ -z "$made_policy" ] || rm -f /usr/sbin/policy-rc.d; made_policy=""; }
  trap drop_policy EXIT
  trap "exit 1" INT TERM HUP   # a signal ends the script through the EXIT trap too
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    made_policy=1
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  drop_policy
fi
prosodyctl about 2>/dev/null | grep -m1 -i "^prosody" || true

echo "setup: building the workspace (library, CLI, Lua bridge)"
cargo build --workspace --quiet
