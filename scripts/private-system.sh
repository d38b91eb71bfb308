# Sourced by package-test.sh and ejabberd-docs-test.sh: a private copy of the system to
# install the package into, so the machine's own files (an installed server-trust, ejabberd's
# config, dpkg's database) are never written.
#
# private_system DIR: in the current mount namespace (the caller runs under `unshare --mount`,
# so nothing here is seen outside it) lays a writable overlay over /usr, /etc and /var (on
# Debian 12 /bin, /sbin and /lib are links into /usr); what is written there goes to DIR,
# which the caller deletes. Nested calls work: an overlay can be the lower layer of another.
private_system() {
  local dir=$1 d
  for d in usr etc var; do
    mkdir -p "$dir/$d.up" "$dir/$d.work"
    mount -t overlay "server-trust-test-$d" \
      -o "lowerdir=/$d,upperdir=$dir/$d.up,workdir=$dir/$d.work" "/$d"
  done
}
