#!/usr/bin/env bash
# Installs server-trust from a source build (as root): builds the workspace in release mode
# (a no-op when current), then installs
#   $PREFIX/bin/server-trust, server-trust-sidecar            the admin CLI, the ejabberd sidecar
#   $PREFIX/lib/prosody/modules/mod_server_trust.lua, server_trust_lua.so   the Prosody module
#   $PREFIX/lib/libserver_trust.so.0 (+ the libserver_trust.so dev link), pkgconfig/server-trust.pc
#   $PREFIX/include/server_trust.h                            C hosts
#   $PREFIX/share/man/..., $PREFIX/share/server-trust/ejabberd/mod_server_trust/
# and prints each file. PREFIX defaults to /usr/local; DESTDIR stages the tree elsewhere (for
# a package or a test). PROFILE=debug installs a debug build instead.
#
# The Prosody module goes to $PREFIX/lib/prosody/modules, not Debian's /usr/lib/prosody/modules:
# that folder belongs to the prosody package and the server-trust .deb puts the same file
# names there, so a copy from source would fight dpkg; under /usr/local dpkg never writes.
# Prosody then needs one line in its global section, which this script prints.
# Files that a Debian package owns (dpkg -S) are never overwritten: the script refuses first.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

PREFIX=${PREFIX:-/usr/local}
DESTDIR=${DESTDIR:-}
PROFILE=${PROFILE:-release}
case "$PREFIX" in /*) ;; *) echo "install: PREFIX must be an absolute path, not '$PREFIX'" >&2; exit 2 ;; esac
case "$PROFILE" in release|debug) ;; *) echo "install: PROFILE is release or debug, not '$PROFILE'" >&2; exit 2 ;; esac

if ! command -v cargo >/dev/null; then
  cat >&2 <<EOF
install: cargo is not on PATH ($PATH): nothing was installed.
install: under sudo, root's PATH lacks your ~/.cargo/bin: run  sudo env "PATH=\$PATH" bash scripts/install.sh
install: without Rust: curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y
install:               . "\$HOME/.cargo/env"
EOF
  exit 2
fi

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
major=${version%%.*}
flag=(); [ "$PROFILE" = release ] && flag=(--release)
echo "install: building the workspace ($PROFILE)"
# One build of the whole workspace (a build of one package unifies features differently and
# would rebuild the library); its messages give the CLI build script's OUT_DIR, where the
# man page is generated. Diagnostics still go to the terminal.
docs=$(cargo build "${flag[@]}" --workspace --quiet --message-format=json-render-diagnostics \
  | sed -n 's/.*"reason":"build-script-executed".*"package_id":"[^"]*server-trust-cli[^"]*".*"out_dir":"\([^"]*\)".*/\1/p' | tail -1)/doc
target=${CARGO_TARGET_DIR:-target}
built=$target/$PROFILE

bindir=$PREFIX/bin
libdir=$PREFIX/lib
moddir=$PREFIX/lib/prosody/modules
# source|mode|destination (under $PREFIX); "link" as mode makes a symlink to the source name.
files=(
  "$built/server-trust|755|$bindir/server-trust"
  "$built/server-trust-sidecar|755|$bindir/server-trust-sidecar"
  "mod_server_trust.lua|644|$moddir/mod_server_trust.lua"
  "$built/libserver_trust_lua.so|644|$moddir/server_trust_lua.so"
  "$built/libserver_trust.so|644|$libdir/libserver_trust.so.$major"
  "libserver_trust.so.$major|link|$libdir/libserver_trust.so"
  "include/server_trust.h|644|$PREFIX/include/server_trust.h"
  "server-trust.pc|pc|$libdir/pkgconfig/server-trust.pc"
  "$docs/server-trust.1|644|$PREFIX/share/man/man1/server-trust.1"
  "packaging/server-trust-sidecar.8|644|$PREFIX/share/man/man8/server-trust-sidecar.8"
)
while IFS= read -r f; do
  files+=("$f|644|$PREFIX/share/server-trust/$f")
done < <(find ejabberd/mod_server_trust -type f | sort)

# Refuse before writing anything: a file a package owns is dpkg's to replace, not ours.
if [ -z "$DESTDIR" ] && command -v dpkg-query >/dev/null; then
  owned=()
  for f in "${files[@]}"; do
    dest=${f##*|}
    if owner=$(dpkg-query -S "$dest" 2>/dev/null); then owned+=("$owner"); fi
  done
  if [ ${#owned[@]} -gt 0 ]; then
    printf 'install: refusing: these files belong to Debian packages (dpkg -S):\n' >&2
    printf '  %s\n' "${owned[@]}" >&2
    echo "install: nothing was installed; remove the package (dpkg -r) or pick another PREFIX" >&2
    exit 1
  fi
fi
for f in "${files[@]}"; do
  src=${f%%|*}; mode=${f#*|}; mode=${mode%%|*}
  [ "$mode" = link ] || [ "$mode" = pc ] || [ -e "$src" ] \
    || { echo "install: $src is missing after the build: nothing was installed" >&2; exit 1; }
done

for f in "${files[@]}"; do
  src=${f%%|*}; mode=${f#*|}; mode=${mode%%|*}; dest=$DESTDIR${f##*|}
  case "$mode" in
    link) mkdir -p "$(dirname "$dest")" && ln -sfn "$src" "$dest" ;;
    pc) mkdir -p "$(dirname "$dest")"
        sed -e "s|^prefix=.*|prefix=$PREFIX|" -e "s|^libdir=.*|libdir=\${prefix}/lib|" \
            -e "s/@VERSION@/$version/" packaging/server-trust.pc.in > "$dest.tmp"
        chmod 644 "$dest.tmp" && mv -f "$dest.tmp" "$dest" ;;
    *) install -D -m "$mode" "$src" "$dest" ;;
  esac
  echo "install: $dest"
done
# The dynamic linker's cache, for programs linked against libserver_trust.so.0.
if [ -z "$DESTDIR" ] && command -v ldconfig >/dev/null; then ldconfig; fi

cat <<EOF
install: server-trust $version installed under $DESTDIR$PREFIX.
install: Prosody: add to the global section of /etc/prosody/prosody.cfg.lua
    plugin_paths = { "$moddir" }
  then  modules_enabled = { "server_trust" }  in a VirtualHost, and prosodyctl reload.
install: C hosts: cc app.c \$(pkg-config --cflags --libs server-trust)
EOF
