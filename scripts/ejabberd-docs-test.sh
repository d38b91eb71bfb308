#!/usr/bin/env bash
# The ejabberd set-up exactly as the docs say (issue 17, "set up on the first try"): the shell
# blocks marked `<!-- ejabberd-setup N -->` in ejabberd/mod_server_trust/README.md and
# crates/sidecar/README.md run as they stand, in the order of N, with the package built by
# scripts/package.sh, on the real ejabberd 23.01 of Debian (scripts/ejabberd-setup.sh), and
# end with verona.lit (ejabberd) and capulet.lit (a real Prosody 0.12 with the installed
# module) becoming buddies over real s2s.
#
# The machine is never changed: everything runs in private namespaces (`unshare --mount --net
# --pid`): a private loopback (the docs' fixed addresses 127.0.0.1:5267 and :5280 collide
# with nothing), the package installed into a private overlay of /usr, /etc and /var
# (scripts/private-system.sh: the system's ejabberd config, dpkg database and any installed
# server-trust are untouched), a private /run, a fresh /var/lib/ejabberd, and every process
# killed with the namespace at the end.
#
# What cannot run here and how it is stood in for, in the blocks' shell:
#   systemctl restart ejabberd            -> ejabberdctl stop/stopped/start/started, as
#                                            Debian's ejabberd.service does (PID 1 is not systemd)
#   systemctl daemon-reload               -> nothing
#   (boot)                                -> systemd-tmpfiles --create (/run/ejabberd)
#   systemctl enable --now server-trust-sidecar
#                                         -> the INSTALLED unit's ExecStartPre and ExecStart,
#                                            run as its User= (read from the unit file)
# The blocks' yaml (`<!-- ejabberd-setup ejabberd.yml -->`) is used as it stands too, after
# what a Debian ejabberd.yml already holds (host, certificate, the s2s listener, dialback).
#   bash scripts/ejabberd-docs-test.sh        (as root; after scripts/package.sh)
#   SERVER_TRUST_DEB=path/to.deb bash scripts/ejabberd-docs-test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
export PATH="$HOME/.cargo/bin:$PATH"
say() { echo "ejabberd-docs-test: $*"; }
fail() { echo "ejabberd-docs-test: FAIL: $*" >&2; exit 1; }

if [ -z "${DOCS_TEST_INSIDE:-}" ]; then
  [ "$(id -u)" = 0 ] || fail "must run as root (namespaces, dpkg in the private overlay)"
  # SERVER_TRUST_DEB: another build of the package (e.g. a debug one); default the newest.
  deb=${SERVER_TRUST_DEB:-$(ls -t target/deb/server-trust_*_"$(dpkg --print-architecture)".deb 2>/dev/null | head -1 || true)}
  [ -n "$deb" ] || fail "no package in target/deb: run bash scripts/package.sh first"
  for c in ejabberdctl erlc prosody openssl curl; do
    command -v "$c" >/dev/null || fail "$c missing: run bash scripts/setup.sh and bash scripts/ejabberd-setup.sh"
  done
  ls -d /usr/lib/erlang/lib/p1_oauth2-* >/dev/null 2>&1 || fail "erlang-p1-oauth2 missing: bash scripts/ejabberd-setup.sh"
  before=$(dpkg-query -W -f='${Status} ${Version}' server-trust 2>/dev/null || echo "not installed")
  rc=0
  DOCS_TEST_INSIDE=1 DOCS_TEST_DEB="$(realpath "$deb")" timeout 600 \
    unshare --mount --propagation private --net --pid --fork --kill-child --mount-proc bash "$0" || rc=$?
  after=$(dpkg-query -W -f='${Status} ${Version}' server-trust 2>/dev/null || echo "not installed")
  [ "$before" = "$after" ] || fail "server-trust was '$before' before the test and is '$after' now"
  [ "$rc" = 0 ] || fail "exit $rc (see above)"
  say "PASS: the set-up as the READMEs say it, verona.lit and capulet.lit are buddies"
  exit 0
fi

# ---- Inside: private mount, network and PID namespaces (this shell is PID 1). ----
ip link set lo up
ip addr add 127.0.0.2/8 dev lo 2>/dev/null || true   # capulet.lit (127.0.0.0/8 is on lo anyway)
. scripts/private-system.sh
tmp=$(mktemp -d /tmp/server-trust-docs-test.XXXXXX)
ok=""
cleanup() {
  # Everything here dies with the PID namespace anyway; stopped first so the files are quiet.
  ejabberdctl stop >/dev/null 2>&1 || true
  local pids
  pids=$(cat "$tmp/sidecar.pid" "$tmp/prosody.pid" 2>/dev/null || true)
  [ -z "$pids" ] || { kill $pids 2>/dev/null || true; for _ in $(seq 1 50); do kill -0 $pids 2>/dev/null || break; sleep 0.1; done; }
  if [ -z "$ok" ]; then
    say "logs kept in $tmp (ejabberd: $tmp/ejabberd-logs, sidecar: $tmp/sidecar.log, prosody: $tmp/prosody/prosody.log)"
    cp -r /var/log/ejabberd "$tmp/ejabberd-logs" 2>/dev/null || true
  else
    rm -rf "$tmp" || true
  fi
}
trap cleanup EXIT
private_system "$tmp/root"
# A fresh machine's runtime folder and ejabberd home (no mnesia from anyone else).
mount -t tmpfs -o mode=0755 st-run /run && mkdir -p /run/lock
systemd-tmpfiles --create   # as at boot: /run/ejabberd (Debian's tmpfiles.d/ejabberd.conf)
mount -t tmpfs -o mode=0700 st-ejabberd /var/lib/ejabberd && chown ejabberd:ejabberd /var/lib/ejabberd
rm -rf /var/log/ejabberd/* /etc/server-trust /etc/ejabberd/modules.d/mod_server_trust.yml
printf '127.0.0.1 localhost verona.lit\n127.0.0.2 capulet.lit\n' > /etc/hosts
if dpkg-query -W -f='${Status}' server-trust 2>/dev/null | grep -q 'ok installed'; then
  dpkg --purge server-trust >/dev/null   # in the private overlay only: the docs start from none
fi

# The docs' blocks, in order.
python3 - "$tmp/blocks" ejabberd/mod_server_trust/README.md crates/sidecar/README.md <<'PY'
import os, re, sys
out, files = sys.argv[1], sys.argv[2:]
os.makedirs(out)
found = {}
for f in files:
    text = open(f).read()
    for m in re.finditer(r"<!-- ejabberd-setup (\S+) -->\n```(\w+)\n(.*?)```", text, re.S):
        name, lang, body = m.groups()
        if name in found:
            sys.exit(f"ejabberd-docs-test: block {name} is marked twice ({found[name]} and {f})")
        found[name] = f
        open(os.path.join(out, name), "w").write(body)
steps = sorted(int(n) for n in found if n.isdigit())
if not steps or steps != list(range(1, len(steps) + 1)) or "ejabberd.yml" not in found:
    sys.exit(f"ejabberd-docs-test: marked blocks {sorted(found)}: want 1..N without gaps and ejabberd.yml")
open(os.path.join(out, "count"), "w").write(str(len(steps)))
for n in steps:
    print(f"ejabberd-docs-test: block {n} from {found[str(n)]}")
PY
n_blocks=$(cat "$tmp/blocks/count")

# What stands in for systemd (see the top of this file).
cat > "$tmp/prelude.sh" <<EOF
tmp=$tmp
EOF
cat >> "$tmp/prelude.sh" <<'EOF'
systemctl() {
  case "$*" in
    "restart ejabberd")
      echo "(test: no systemd) systemctl restart ejabberd: ejabberdctl stop, start, started"
      ejabberdctl stop >/dev/null 2>&1 && ejabberdctl stopped >/dev/null 2>&1 || true
      ejabberdctl start && ejabberdctl started ;;
    "daemon-reload") echo "(test: no systemd) systemctl daemon-reload: nothing to do" ;;
    "enable --now server-trust-sidecar")
      local unit=/lib/systemd/system/server-trust-sidecar.service user pre start
      user=$(sed -n 's/^User=//p' "$unit"); pre=$(sed -n 's/^ExecStartPre=//p' "$unit")
      start=$(sed -n 's/^ExecStart=//p' "$unit")
      echo "(test: no systemd) systemctl enable --now server-trust-sidecar: as $user: $pre; then $start"
      # shellcheck disable=SC2086
      runuser -u "$user" -- $pre || return 1
      # shellcheck disable=SC2086
      (umask 0027; exec runuser -u "$user" -- $start) > "$tmp/sidecar.log" 2>&1 &
      echo $! > "$tmp/sidecar.pid"
      for _ in $(seq 1 100); do curl -sf http://127.0.0.1:5267/v1/health >/dev/null && return 0; sleep 0.1; done
      echo "the sidecar did not answer on 127.0.0.1:5267"; cat "$tmp/sidecar.log"; return 1 ;;
    *) echo "ejabberd-docs-test: the docs run 'systemctl $*', which this test cannot stand in for" >&2; return 1 ;;
  esac
}
set -e -o pipefail
EOF

# What a Debian ejabberd.yml already has, then the README's yaml as it stands. The listen and
# modules lists get the s2s listener and dialback, on the private loopback.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 -subj /CN=verona.lit \
  -addext subjectAltName=DNS:verona.lit -keyout "$tmp/v.key" -out "$tmp/v.crt" 2>/dev/null
write_ejabberd_yml() {
  cat "$tmp/v.crt" "$tmp/v.key" > /etc/ejabberd/verona.pem
  chown root:ejabberd /etc/ejabberd/verona.pem && chmod 640 /etc/ejabberd/verona.pem
  {
    printf '## Written by scripts/ejabberd-docs-test.sh: the part every ejabberd.yml has...\n'
    printf 'hosts:\n  - verona.lit\nloglevel: info\ncertfiles:\n  - /etc/ejabberd/verona.pem\n'
    printf 'acme:\n  auto: false\noutgoing_s2s_families: [ipv4]\n\n'
    printf '## ...and the README'"'"'s block (ejabberd/mod_server_trust/README.md, step 2):\n'
    sed -e '/^listen:$/a\  - port: 5269\n    ip: 127.0.0.1\n    module: ejabberd_s2s_in' \
        -e '/^modules:$/a\  mod_s2s_dialback: {}\n  mod_disco: {}' "$tmp/blocks/ejabberd.yml"
  } > /etc/ejabberd/ejabberd.yml
}

# The peer: Prosody 0.12 serving capulet.lit on 127.0.0.2 with the installed module.
start_prosody() {
  local p=$tmp/prosody
  mkdir -p "$p/certs" "$p/data" "$p/store"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 -subj /CN=capulet.lit \
    -addext subjectAltName=DNS:capulet.lit -keyout "$p/certs/capulet.lit.key" -out "$p/certs/capulet.lit.crt" 2>/dev/null
  cat > "$p/prosody.cfg.lua" <<EOF
-- capulet.lit for scripts/ejabberd-docs-test.sh
run_as_root = true
pidfile = "$p/prosody.pid"
data_path = "$p/data"
certificates = "$p/certs"
log = { debug = "$p/prosody.log" }
use_ipv6 = false
interfaces = { "127.0.0.2" }
local_interfaces = { "127.0.0.2" }
unbound = { resolvconf = false; hoststxt = "/etc/hosts"; forward = "127.0.0.1"; options = { ["local-zone:"] = "lit. static" } }
s2s_require_encryption = true
s2s_secure_auth = false
modules_enabled = { "tls"; "dialback"; "disco"; "server_trust" }
server_trust_store = "$p/store"
admins = { "admin@capulet.lit" }
VirtualHost "capulet.lit"
EOF
  prosody --config "$p/prosody.cfg.lua" -F > "$p/console.log" 2>&1 &
  echo $! > "$tmp/prosody.pid"
  for _ in $(seq 1 100); do
    (exec 3<>/dev/tcp/127.0.0.2/5269) 2>/dev/null && return 0
    sleep 0.1
  done
  cat "$p/console.log"; fail "Prosody (capulet.lit) did not listen on 127.0.0.2:5269"
}

# Each block runs in its own shell, as an admin's copy-paste into one shell would: the
# variables the blocks set (HOST, step 1) are carried over.
run_block() {
  say "---- running block $1 as the docs show it:"
  sed 's/^/    | /' "$tmp/blocks/$1"
  (cd "$(dirname "$DOCS_TEST_DEB")" && bash -c ". $tmp/prelude.sh; . $tmp/shell-state 2>/dev/null || true; . $tmp/blocks/$1; declare -p HOST > $tmp/shell-state 2>/dev/null || true") \
    || fail "block $1 failed"
}

# Blocks 1 .. N-1, then the peer asks, then the last block (the first buddy) answers.
for n in $(seq 1 $((n_blocks - 1))); do
  run_block "$n"
  if [ "$n" = 1 ]; then
    say "ejabberd.yml: the README's block after the host's own settings"
    write_ejabberd_yml
  fi
done
# Where the steps must have left things.
[ "$(stat -c '%U %a' /etc/server-trust/ejabberd-api.token)" = "ejabberd 600" ] || fail "API token file: $(stat -c '%U %a' /etc/server-trust/ejabberd-api.token)"
[ "$(stat -c '%U %a' /etc/server-trust/hook.token)" = "ejabberd 600" ] || fail "hook token file: $(stat -c '%U %a' /etc/server-trust/hook.token)"
for _ in $(seq 1 100); do
  ejabberdctl server_trust_status verona.lit 2>/dev/null | grep -q 'sidecar=up' && break
  sleep 0.2
done
ejabberdctl server_trust_status verona.lit | grep -q 'sidecar=up' \
  || fail "the module does not reach the sidecar: $(ejabberdctl server_trust_status verona.lit 2>&1)"
say "the module reaches the sidecar: $(ejabberdctl server_trust_status verona.lit)"

start_prosody
say "capulet.lit (Prosody) asks verona.lit to be buddies"
server-trust --store "$tmp/prosody/store" --host capulet.lit request verona.lit
pending=/var/lib/ejabberd/server_trust/verona.lit/pending/capulet.lit.toml
for _ in $(seq 1 200); do [ -f "$pending" ] && break; sleep 0.1; done
[ -f "$pending" ] || fail "no pending request from capulet.lit on the ejabberd side (logs: $tmp)"
say "the request is pending on verona.lit, nothing approved: $(grep '^decision' "$pending")"
run_block "$n_blocks"

# Both servers' rosters say both, and ejabberd's own check says trusted.
both() { local out; out=$(server-trust --store "$1" --host "$2" show "$3" 2>/dev/null) && [[ "$out" == "$3: both "* ]]; }
for _ in $(seq 1 200); do
  both /var/lib/ejabberd/server_trust verona.lit capulet.lit && both "$tmp/prosody/store" capulet.lit verona.lit && break
  sleep 0.1
done
server-trust --store /var/lib/ejabberd/server_trust --host verona.lit show capulet.lit
server-trust --store "$tmp/prosody/store" --host capulet.lit show verona.lit
both /var/lib/ejabberd/server_trust verona.lit capulet.lit || fail "verona.lit's roster does not hold capulet.lit as both"
both "$tmp/prosody/store" capulet.lit verona.lit || fail "capulet.lit's roster does not hold verona.lit as both"
[ "$(ejabberdctl server_trust_is_trusted verona.lit capulet.lit '')" = true ] || fail "ejabberd's is_trusted says no"
say "verona.lit and capulet.lit are buddies (both rosters: both; ejabberd is_trusted: true)"
ok=1
