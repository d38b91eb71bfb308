#!/usr/bin/env bash
# Installs ejabberd 23.01 (Debian 12) for the ejabberd lab and tests, as root, without stdin.
# Idempotent: does nothing when everything is there.
#   ejabberd           the server (the lab runs throwaway instances; the system service is never started)
#   erlang-p1-oauth2   OAuth bearer tokens for mod_http_api (only "Suggested" by Debian's ejabberd;
#                      without it `ejabberdctl oauth_issue_token` crashes: undefined oauth2:authorize_password/3)
#   erlang-dev         kernel/include/*.hrl that ejabberd's logger.hrl includes, for erlc and module_install
# A temporary /usr/sbin/policy-rc.d (exit 101) keeps Debian's postinst from starting the system
# ejabberd and epmd; it is removed afterwards only if this script created it.
set -euo pipefail

E_INCLUDE_GLOB=/usr/lib/x86_64-linux-gnu/ejabberd-*/include/logger.hrl

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep "ok installed" >/dev/null; }

need=()
for pkg in ejabberd erlang-p1-oauth2 erlang-dev chromium chromium-driver; do
  installed "$pkg" || need+=("$pkg")
done

if [ ${#need[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "ejabberd-setup: must run as root to install ${need[*]}" >&2; exit 2; }
  echo "ejabberd-setup: installing ${need[*]}"
  made_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    made_policy=1
  fi
  # Remove our policy file however the install ends.
  trap '[ -n "$made_policy" ] && rm -f /usr/sbin/policy-rc.d' EXIT
  apt-get update -qq < /dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" < /dev/null > /dev/null
  just_installed=1
fi

# Checks: the pieces the lab relies on are there...
command -v erlc > /dev/null || { echo "ejabberd-setup: erlc missing" >&2; exit 1; }
[ -x /usr/sbin/ejabberdctl ] || { echo "ejabberd-setup: /usr/sbin/ejabberdctl missing" >&2; exit 1; }
compgen -G "$E_INCLUDE_GLOB" > /dev/null || { echo "ejabberd-setup: ejabberd headers missing" >&2; exit 1; }
ls -d /usr/lib/erlang/lib/p1_oauth2-* > /dev/null 2>&1 || { echo "ejabberd-setup: p1_oauth2 missing" >&2; exit 1; }
# ...and the install started neither the system ejabberd nor epmd. (Without an install in this
# run, a beam.smp may well be a test lab's throwaway node: only report it.)
running=$(ps -eo pid=,comm=,args= | awk '$2 == "beam.smp" || $2 == "epmd"')
if [ -n "$running" ]; then
  if [ -n "${just_installed:-}" ]; then
    echo "ejabberd-setup: the install started Erlang processes (stop them by pid):" >&2
    echo "$running" >&2
    exit 1
  fi
  echo "ejabberd-setup: note: Erlang processes running (labs?):" >&2
  echo "$running" | cut -c1-200 >&2
fi
dpkg-query -W -f='ejabberd-setup: ${Package} ${Version}\n' ejabberd erlang-p1-oauth2 erlang-dev
