#!/usr/bin/env bash
# Builds Prosody 13.0.1 once from ../shared/vendor/prosody-13.0.1.tar.gz into a cache folder
# and prints its prefix (DIR/bin/prosody, DIR/bin/prosodyctl). Recipe: ../shared/vendor/README.md.
# Prints nothing and exits 3 when the tarball is missing: callers must say so loudly.
set -euo pipefail
cd "$(dirname "$0")/.."
tarball=${PROSODY13_TARBALL:-../shared/vendor/prosody-13.0.1.tar.gz}
prefix=${PROSODY13_PREFIX:-/var/cache/server-trust/prosody-13.0.1}  # readable by the prosody user
[ -f "$tarball" ] || exit 3
if [ ! -x "$prefix/bin/prosody" ]; then
  need=()
  for pkg in liblua5.4-dev libidn2-dev libssl-dev lua5.4 lua-socket lua-expat lua-filesystem lua-sec lua-unbound make gcc; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need+=("$pkg")
  done
  if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
  build=$(mktemp -d)
  tar xzf "$tarball" -C "$build"
  (cd "$build"/prosody-13.0.1 \
    && ./configure --ostype=debian --lua-version=5.4 --with-lua-include=/usr/include/lua5.4 --prefix="$prefix" >/dev/null \
    && make -j2 >/dev/null && make install >/dev/null 2>&1) >&2
  rm -rf "$build"
fi
echo "$prefix"
