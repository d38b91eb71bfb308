#!/usr/bin/env bash
# Builds the Debian package target/deb/server-trust_<version>_<arch>.deb with dpkg-deb (the
# tool every .deb goes through) from a release build, then runs lintian on it.
#   bash scripts/package.sh            build and check
# What goes where is listed in README.md ("Installing"); the ejabberd set-up it serves is in
# ejabberd/mod_server_trust/README.md ("Set-up").
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

for tool in dpkg-deb lintian; do
  command -v "$tool" >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq lintian >/dev/null; }
done

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
arch=$(dpkg --print-architecture)
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)
soname="libserver_trust.so.${version%%.*}"

echo "package: building release binaries"
# One cargo run: its JSON messages also say where the CLI's build script put the man page and
# completions. (A second, differently-selected build here used to undo the first's output, so
# every run rebuilt the workspace twice.) Diagnostics still reach the terminal.
docs=$(cargo build --release --workspace --message-format=json-render-diagnostics \
  | sed -n 's/.*"reason":"build-script-executed".*"package_id":"[^"]*server-trust-cli[^"]*".*"out_dir":"\([^"]*\)".*/\1/p' | tail -1)/doc
[ -f "$docs/server-trust.1" ] || { echo "package: no man page from the CLI's build script (looked in $docs)" >&2; exit 1; }
rel=target/release
stage=target/deb/stage
rm -rf "$stage" && mkdir -p "$stage/DEBIAN"

put() { install -D -m "$1" "$2" "$stage/$3"; }
put 755 $rel/server-trust usr/bin/server-trust
put 755 $rel/server-trust-sidecar usr/bin/server-trust-sidecar
# The Prosody module and its native library, where Debian's Prosody looks for plugins.
put 644 mod_server_trust.lua usr/lib/prosody/modules/mod_server_trust.lua
put 644 $rel/libserver_trust_lua.so usr/lib/prosody/modules/server_trust_lua.so
# The C library, its header and pkg-config file.
put 644 $rel/libserver_trust.so "usr/lib/$multiarch/$soname"
ln -s "$soname" "$stage/usr/lib/$multiarch/libserver_trust.so"
put 644 include/server_trust.h usr/include/server_trust.h
sed -e "s/@VERSION@/$version/" -e "s/@MULTIARCH@/$multiarch/" packaging/server-trust.pc.in > pc.tmp
put 644 pc.tmp "usr/lib/$multiarch/pkgconfig/server-trust.pc" && rm pc.tmp
# The ejabberd module sources (ejabberdctl module_install layout) and the sidecar's unit.
mkdir -p "$stage/usr/share/server-trust/ejabberd"
cp -r ejabberd/mod_server_trust "$stage/usr/share/server-trust/ejabberd/"
find "$stage/usr/share/server-trust" -type f -exec chmod 644 {} + 
find "$stage/usr/share/server-trust" -type d -exec chmod 755 {} +
put 644 packaging/server-trust-sidecar.service lib/systemd/system/server-trust-sidecar.service
# The sidecar's example config, which the set-up steps copy to /etc/server-trust/ (not in
# /usr/share/doc, which minimal systems leave out).
put 644 packaging/sidecar.toml usr/share/server-trust/sidecar.toml
# Man page, completions, docs.
gzip -9n < "$docs/server-trust.1" > man.tmp && put 644 man.tmp usr/share/man/man1/server-trust.1.gz && rm man.tmp
gzip -9n < packaging/server-trust-sidecar.8 > man.tmp && put 644 man.tmp usr/share/man/man8/server-trust-sidecar.8.gz && rm man.tmp
put 644 "$docs/server-trust.bash" usr/share/bash-completion/completions/server-trust
put 644 "$docs/_server-trust" usr/share/zsh/vendor-completions/_server-trust
put 644 "$docs/server-trust.fish" usr/share/fish/vendor_completions.d/server-trust.fish
put 644 packaging/copyright usr/share/doc/server-trust/copyright
put 644 README.md usr/share/doc/server-trust/README.md
# Every file the README links, at the same path beside it, and what those link in turn, so no
# link of the installed README is dead (package-test.sh checks).
python3 - "$stage/usr/share/doc/server-trust" <<'PY'
import os, re, shutil, sys
dest = sys.argv[1]
todo, seen = ["README.md"], set()
while todo:
    md = todo.pop()
    for target in re.findall(r"\]\(([^)\s]+)\)", open(md, encoding="utf-8").read()):
        if re.match(r"[a-z]+:|#", target):
            continue
        path = os.path.normpath(os.path.join(os.path.dirname(md), target.split("#")[0]))
        if path in seen or path.startswith(".."):
            continue
        seen.add(path)
        if not os.path.isfile(path):
            sys.exit(f"package: {md} links {target}, which is not a file in the repository")
        os.makedirs(os.path.join(dest, os.path.dirname(path)), exist_ok=True)
        shutil.copyfile(path, os.path.join(dest, path))
        os.chmod(os.path.join(dest, path), 0o644)
        if path.endswith(".md"):
            todo.append(path)
PY
find "$stage/usr/share/doc/server-trust" -type d -exec chmod 755 {} +
printf 'server-trust (%s) unstable; urgency=medium\n\n  * Release %s.\n\n -- server-trust authors <server-trust@example.org>  %s\n' \
  "$version" "$version" "$(date -R)" | gzip -9n > cl.tmp
put 644 cl.tmp usr/share/doc/server-trust/changelog.gz && rm cl.tmp
put 644 packaging/lintian-overrides usr/share/lintian/overrides/server-trust

strip --strip-unneeded "$stage/usr/bin/"* "$stage/usr/lib/prosody/modules/server_trust_lua.so" "$stage/usr/lib/$multiarch/$soname"
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" \
    -e "s/@DEPENDS@/libc6 (>= 2.34), libgcc-s1 (>= 4.2)/" packaging/control.in > "$stage/DEBIAN/control"
# The C library: ldconfig runs after install and removal; dependents get a shlibs entry.
install -m 644 packaging/triggers "$stage/DEBIAN/triggers"
# The folders the ejabberd side needs (postinst), stopping the sidecar on removal (prerm),
# purge (postrm: never the store).
for script in postinst prerm postrm; do install -m 755 "packaging/$script" "$stage/DEBIAN/$script"; done
echo "libserver_trust ${version%%.*} server-trust (>= $version)" > "$stage/DEBIAN/shlibs"
(cd "$stage" && find usr lib -type f -exec md5sum {} + | sort -k2 > DEBIAN/md5sums)

deb="target/deb/server-trust_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "package: $deb ($(du -h "$deb" | cut -f1))"
echo "package: lintian (overrides explained in packaging/lintian-overrides)"
lintian --fail-on error,warning "$deb"
