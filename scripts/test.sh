#!/usr/bin/env bash
# Runs every check and test of the workspace, the way CI does.
# Installs redis-server first when it is missing (the Redis tests start their
# own servers on free loopback ports; none uses a server already running).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1; then
  echo "redis-server not found: installing it (Debian: apt-get install -y redis-server)"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server
fi
redis-server --version

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
