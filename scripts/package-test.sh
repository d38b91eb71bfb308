#!/usr/bin/env bash
# Installs the package built by scripts/package.sh, exercises the INSTALLED files (a C program
# built with pkg-config; the Prosody handshake with the installed module, native library and
# CLI, servers running as the prosody user), then purges the package whatever happened.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
deb=$(ls -t target/deb/server-trust_*_"$(dpkg --print-architecture)".deb | head -1)
echo "package-test: installing $deb"
dpkg -i "$deb" >/dev/null
trap 'dpkg --purge server-trust >/dev/null && echo "package-test: purged"' EXIT

libdir=/usr/lib/$(dpkg-architecture -qDEB_HOST_MULTIARCH)
readelf -d "$libdir/libserver_trust.so.0" | grep -q 'SONAME.*\[libserver_trust.so.0\]' \
  || { echo "package-test: libserver_trust.so.0 lacks its SONAME" >&2; exit 1; }
others=$(nm -D --defined-only "$libdir/libserver_trust.so.0" | awk '{print $3}' | grep -v '^st_' || true)
[ -z "$others" ] || { echo "package-test: exports beyond st_*: $others" >&2; exit 1; }

tmp=$(mktemp -d)
# shellcheck disable=SC2046
cc -std=c99 -Wall -Wextra -Werror -pedantic tests/c/handshake.c $(pkg-config --cflags --libs server-trust) -o "$tmp/handshake"
"$tmp/handshake" "$tmp/store" | tail -1
rm -rf "$tmp"

SERVER_TRUST_INSTALLED=1 cargo test -p server-trust --test it -- --exact \
  handshake_over_s2s::subscribe_only_on_request_prompt_then_approve_by_cli \
  deployment::prosody_runs_as_its_own_user_and_the_root_cli_keeps_the_store_its
echo "package-test: the installed package passed"
