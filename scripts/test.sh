#!/usr/bin/env bash
# The test command (README, .ci/run): installs what is missing, builds, lints, tests.
# Every test talks only to 127.0.0.0/8 and stops the servers it starts.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
bash scripts/setup.sh                   # Prosody 0.12, Lua 5.4, C compiler, pkg-config, lintian
bash scripts/ejabberd-setup.sh          # ejabberd 23.01 + p1_oauth2 for the sidecar's tests

# Prosody 13.0.1 from the vendored tarball, built once into a cache folder (~1 min).
loud() { printf '\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n!!! %s\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\n' "$1"; }
if prefix=$(bash scripts/prosody13.sh); then
  export SERVER_TRUST_PROSODY13="$prefix"
  echo "test: Prosody 13 at $prefix"
else
  export SERVER_TRUST_SKIP_PROSODY13=1
  loud "PROSODY 13 NOT TESTED: ../shared/vendor/prosody-13.0.1.tar.gz is missing"
fi

cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo bench --workspace --no-run --quiet          # benches must build; they run via benches/run.sh
cargo build --release --workspace --quiet   # before the tests: tests/it/source_build builds it too, beside running labs
cargo test --workspace --lib --bins --tests --examples --no-fail-fast
cargo test -p server-trust --doc --quiet
# The README's main job, and its ejabberd twin, as a newcomer runs them.
bash scripts/demo.sh
bash scripts/demo-ejabberd.sh
if [ -n "${SERVER_TRUST_PROSODY13:-}" ]; then
  # Every Prosody scenario again, with both lab servers on Prosody 13 (the deployment tests
  # above already ran 13-13 and 0.12-13 pairs).
  echo "test: the Prosody scenarios on Prosody 13"
  SERVER_TRUST_LAB_PROSODY=13 cargo test -p server-trust --test it
fi

# The Debian package: built, lintian-checked, then installed into a private overlay (an
# admin's installed copy is never touched) and exercised from the installed files.
bash scripts/package.sh
bash scripts/package-test.sh
bash scripts/ejabberd-docs-test.sh     # the ejabberd set-up exactly as the READMEs say it, with the .deb

[ -z "${SERVER_TRUST_SKIP_PROSODY13:-}" ] || loud "PROSODY 13 NOT TESTED: ../shared/vendor/prosody-13.0.1.tar.gz is missing"
echo "test: all passed"
