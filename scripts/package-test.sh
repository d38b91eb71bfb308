#!/usr/bin/env bash
# Tests the package built by scripts/package.sh as installed: its contents, a C program built
# with pkg-config, the Prosody handshake with the installed module, native library and CLI
# (servers running as the prosody user), the ejabberd side's folders, unit and example
# config, the installed README's links, and purge.
#
# The machine is never changed: the package is installed into a private overlay of /usr, /etc
# and /var in a private mount namespace (scripts/private-system.sh), and everything written
# there is thrown away. A server-trust an admin installed stays as it was (checked at the end
# with `dpkg --verify`), whether or not one is there.
#   bash scripts/package-test.sh           everything (as root)
#   PACKAGE_TEST_QUICK=1 ...                without the cargo-driven Prosody scenarios
#   SERVER_TRUST_DEB=path/to.deb ...        another build of the package (default: the newest)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
deb=$(realpath "${SERVER_TRUST_DEB:-$(ls -t target/deb/server-trust_*_"$(dpkg --print-architecture)".deb | head -1)}")
fail() { echo "package-test: FAIL: $*" >&2; exit 1; }

if [ -n "${PACKAGE_TEST_SELFCHECK:-}" ]; then
  . scripts/private-system.sh
  tmp=$(mktemp -d /tmp/server-trust-package-selfcheck.XXXXXX)
  trap 'rm -rf "$tmp"' EXIT
  private_system "$tmp/root"
  echo "package-test: self-check: an admin's installed copy stays where it was"
  dpkg -i "$deb" >/dev/null
  mkdir -p /etc/server-trust && echo '# the admin edited this' > /etc/server-trust/sidecar.toml
  sums=$(md5sum /usr/bin/server-trust /usr/bin/server-trust-sidecar /etc/server-trust/sidecar.toml)
  PACKAGE_TEST_SELFCHECK= PACKAGE_TEST_QUICK=1 PACKAGE_TEST_NO_SELFCHECK=1 bash "$0" > "$tmp/inner.log" 2>&1 \
    || { cat "$tmp/inner.log"; fail "self-check: the test failed with a copy installed"; }
  grep -q 'is INSTALLED on this system: it is not touched' "$tmp/inner.log" \
    || { cat "$tmp/inner.log"; fail "self-check: the test did not notice the installed copy"; }
  dpkg-query -W -f='${Status}' server-trust | grep -q 'ok installed' || fail "self-check: the installed copy is gone"
  dpkg --verify server-trust || fail "self-check: the installed copy's files changed"
  [ "$sums" = "$(md5sum /usr/bin/server-trust /usr/bin/server-trust-sidecar /etc/server-trust/sidecar.toml)" ] \
    || fail "self-check: files of the installed copy or the admin's config changed"
  echo "package-test: self-check passed: with a copy installed, the test left it (dpkg --verify clean, config kept)"
  exit 0
fi

if [ -z "${PACKAGE_TEST_INSIDE:-}" ]; then
  # Outside: the contents, then the rest in a private namespace, then proof nothing changed.
  contents=$(dpkg-deb -c "$deb")
  for f in ./usr/bin/server-trust-sidecar ./lib/systemd/system/server-trust-sidecar.service \
           ./usr/share/server-trust/sidecar.toml ./usr/share/server-trust/ejabberd/mod_server_trust/conf/mod_server_trust.yml \
           ./usr/share/man/man8/server-trust-sidecar.8.gz ./usr/share/doc/server-trust/README.md; do
    grep -q " $f\$" <<<"$contents" || fail "$deb lacks $f"
  done
  control=$(dpkg-deb --ctrl-tarfile "$deb" | tar -t)
  for s in postinst prerm postrm; do
    grep -qx "./$s" <<<"$control" || fail "$deb lacks its $s"
  done
  before=$(dpkg-query -W -f='${Status} ${Version}' server-trust 2>/dev/null || echo "not installed")
  if dpkg-query -W -f='${Status}' server-trust 2>/dev/null | grep -q 'ok installed'; then
    printf '\n!!! package-test: server-trust %s is INSTALLED on this system: it is not touched.\n!!! The package is tested in a private overlay of /usr, /etc and /var instead.\n\n' \
      "$(dpkg-query -W -f='${Version}' server-trust)"
    dpkg --verify server-trust || fail "the installed server-trust does not verify BEFORE the test (dpkg --verify)"
  fi
  PACKAGE_TEST_INSIDE=1 unshare --mount --propagation private bash "$0"
  after=$(dpkg-query -W -f='${Status} ${Version}' server-trust 2>/dev/null || echo "not installed")
  [ "$before" = "$after" ] || fail "server-trust was '$before' before the test and is '$after' now"
  if [ "$before" != "not installed" ]; then
    dpkg --verify server-trust || fail "the installed server-trust's files changed (dpkg --verify)"
    echo "package-test: the installed server-trust is as it was ($after, dpkg --verify clean)"
  elif [ -z "${PACKAGE_TEST_NO_SELFCHECK:-}" ]; then
    # Nothing installed here, so the case above was not exercised: play it in a private
    # system where an admin installed the package and set up the sidecar, run this test
    # (quick) there, and check the admin's copy and files are untouched.
    PACKAGE_TEST_SELFCHECK=1 unshare --mount --propagation private bash "$0"
  fi
  exit 0
fi

# Inside the private mount namespace.
. scripts/private-system.sh
tmp=$(mktemp -d /tmp/server-trust-package-test.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
private_system "$tmp/root"
echo "package-test: installing $deb (private overlay)"
if [ -z "${SERVER_TRUST_DEB:-}" ]; then
  # README.md's install line, as written (a version bump must update the README too).
  dpkg -i target/deb/server-trust_0.1.0_amd64.deb >/dev/null
else
  dpkg -i "$deb" >/dev/null
fi

libdir=/usr/lib/$(dpkg-architecture -qDEB_HOST_MULTIARCH)
readelf -d "$libdir/libserver_trust.so.0" | grep -q 'SONAME.*\[libserver_trust.so.0\]' \
  || fail "libserver_trust.so.0 lacks its SONAME"
others=$(nm -D --defined-only "$libdir/libserver_trust.so.0" | awk '{print $3}' | grep -v '^st_' || true)
[ -z "$others" ] || fail "exports beyond st_*: $others"

# The ejabberd side (the Debian package's postinst, when the ejabberd user exists).
if getent passwd ejabberd >/dev/null; then
  [ "$(stat -c '%U:%G %a' /etc/server-trust)" = "root:ejabberd 750" ] \
    || fail "/etc/server-trust is $(stat -c '%U:%G %a' /etc/server-trust)"
  [ "$(stat -c '%U:%G %a' /var/lib/ejabberd/server_trust)" = "ejabberd:ejabberd 750" ] \
    || fail "/var/lib/ejabberd/server_trust is $(stat -c '%U:%G %a' /var/lib/ejabberd/server_trust)"
  echo "package-test: postinst made /etc/server-trust (root:ejabberd 750) and the store (ejabberd 750)"
else
  echo "package-test: no ejabberd user: the ejabberd folders are not checked (bash scripts/ejabberd-setup.sh)"
fi
# The unit: systemd's own checker, offline (PID 1 need not be systemd). Any complaint fails,
# warnings included (an unknown key is only a warning to systemd).
out=$(systemd-analyze verify /lib/systemd/system/server-trust-sidecar.service 2>&1) \
  || fail "systemd-analyze verify: $out"
[ -z "$out" ] || fail "systemd-analyze verify complains: $out"
echo "package-test: systemd-analyze verify server-trust-sidecar.service: clean"
# Every relative link of the installed README resolves to an installed file.
python3 - /usr/share/doc/server-trust/README.md <<'PY' || fail "dead links in the installed README"
import os, re, sys
readme = sys.argv[1]
links = [t for t in re.findall(r"\]\(([^)\s]+)\)", open(readme).read()) if not re.match(r"[a-z]+:|#", t)]
dead = [t for t in links if not os.path.isfile(os.path.join(os.path.dirname(readme), t.split("#")[0]))]
if dead:
    print("package-test: dead links in %s: %s" % (readme, ", ".join(dead)), file=sys.stderr)
    sys.exit(1)
print("package-test: all %d relative links of the installed README resolve" % len(links))
PY

cc_tmp=$(mktemp -d)
# shellcheck disable=SC2046
cc -std=c99 -Wall -Wextra -Werror -pedantic tests/c/handshake.c $(pkg-config --cflags --libs server-trust) -o "$cc_tmp/handshake"
"$cc_tmp/handshake" "$cc_tmp/store" | tail -1
rm -rf "$cc_tmp"

if [ -z "${PACKAGE_TEST_QUICK:-}" ]; then
  SERVER_TRUST_INSTALLED=1 cargo test -p server-trust --test it -- --exact \
    handshake_over_s2s::subscribe_only_on_request_prompt_then_approve_by_cli \
    deployment::prosody_runs_as_its_own_user_and_the_root_cli_keeps_the_store_its
fi

# Purge: what the package and the set-up made in /etc/server-trust goes, the store stays.
if [ -d /var/lib/ejabberd/server_trust ]; then
  server-trust-sidecar gen-token --out /etc/server-trust/hook.token --owner ejabberd 2>/dev/null
  echo "decision = \"approve\"" > /var/lib/ejabberd/server_trust/kept-by-purge
fi
dpkg --purge server-trust >/dev/null
[ ! -e /usr/bin/server-trust-sidecar ] && [ ! -e /lib/systemd/system/server-trust-sidecar.service ] \
  || fail "purge left the programs or the unit"
if [ -d /var/lib/ejabberd/server_trust ]; then
  [ ! -e /etc/server-trust ] || fail "purge left /etc/server-trust: $(ls -A /etc/server-trust)"
  [ -f /var/lib/ejabberd/server_trust/kept-by-purge ] || fail "purge removed the store"
  echo "package-test: purged: /etc/server-trust removed, the store kept"
fi
# Installed before ejabberd (no ejabberd user; this overlay's /etc/passwd only): the
# postinst says what to run once ejabberd is there, and that makes the folders.
if getent passwd ejabberd >/dev/null; then
  rm -rf /var/lib/ejabberd/server_trust
  userdel ejabberd 2>/dev/null; getent group ejabberd >/dev/null && groupdel ejabberd
  msg=$(dpkg -i "$deb" 2>&1 >/dev/null)
  grep -q 'dpkg-reconfigure server-trust' <<<"$msg" || fail "installed before ejabberd, the postinst did not say what to run: $msg"
  [ ! -e /etc/server-trust ] && [ ! -e /var/lib/ejabberd/server_trust ] || fail "folders made without an ejabberd user"
  groupadd --system ejabberd && useradd --system -g ejabberd -d /var/lib/ejabberd -s /usr/sbin/nologin ejabberd
  dpkg-reconfigure server-trust
  [ "$(stat -c '%U:%G %a' /etc/server-trust)" = "root:ejabberd 750" ] && \
    [ "$(stat -c '%U:%G %a' /var/lib/ejabberd/server_trust)" = "ejabberd:ejabberd 750" ] \
    || fail "dpkg-reconfigure after ejabberd did not make the folders"
  echo "package-test: installed before ejabberd: the postinst says so, dpkg-reconfigure makes the folders"
  dpkg --purge server-trust >/dev/null
fi
echo "package-test: the installed package passed"
