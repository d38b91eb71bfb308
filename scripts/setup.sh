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

need=()
for pkg in prosody lua5.4 lua-unbound openssl gcc g++ git pkg-config lintian dpkg-dev python3-slixmpp; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  # Keep Debian's postinst from starting a system-wide Prosody on *:5269 (our labs bind
  # 127.0.x.y:5269 and must not collide with it).
  made_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    made_policy=1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  [ -n "$made_policy" ] && rm -f /usr/sbin/policy-rc.d
fi
prosodyctl about 2>/dev/null | grep -m1 -i "^prosody" || true

echo "setup: building the workspace (library, CLI, Lua bridge)"
cargo build --workspace --quiet
