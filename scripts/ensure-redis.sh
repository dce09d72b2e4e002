#!/usr/bin/env bash
# The suite starts its own redis-server on a free port; this makes sure the binary exists.
set -euo pipefail
if command -v redis-server >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "redis-server not found: installing Debian's redis-server package" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends redis-server >/dev/null
  # The package starts a system service; the suite does not use it.
  (service redis-server stop || systemctl stop redis-server || true) >/dev/null 2>&1
  command -v redis-server >/dev/null && exit 0
fi
echo "redis-server is required by the test suite: install it (Debian/Ubuntu: sudo apt-get install redis-server; macOS: brew install redis) and re-run make test" >&2
exit 1
