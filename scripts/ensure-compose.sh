#!/usr/bin/env bash
# The suite checks that docker-compose.yml loads with docker-compose v1 (`docker-compose config`, no daemon
# needed; tests/integration/test_topology.py); this makes sure the command exists. Quick when it does.
set -euo pipefail
if command -v docker-compose >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "docker-compose not found: installing Debian's docker-compose package (no Docker daemon)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends docker-compose >/dev/null 2>&1 \
    || echo "apt-get install docker-compose failed" >&2
  command -v docker-compose >/dev/null && exit 0
fi
if command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
  echo "docker-compose (v1) not found: the suite checks docker-compose.yml with Docker's compose plugin only" >&2
  exit 0
fi
echo "docker-compose is required by the test suite: install it (Debian/Ubuntu: sudo apt-get install docker-compose; elsewhere Docker's compose plugin) and re-run make test" >&2
exit 1
