#!/usr/bin/env bash
# `make test` runs the official Node.js CAMS clients (tests/node) against the gateway: this makes sure node and npm
# exist and installs the pinned clients from tests/node/package-lock.json (npm ci, from the npm registry).
set -euo pipefail
cd "$(dirname "$0")/../tests/node"
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "node/npm not found: installing Debian's nodejs and npm packages" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
  else
    echo "node and npm are required by make test (tests/node): install them (Debian/Ubuntu: sudo apt-get install nodejs npm; macOS: brew install node) and re-run" >&2
    exit 1
  fi
fi
if [ ! -f node_modules/.installed ] || [ package-lock.json -nt node_modules/.installed ]; then
  npm ci --no-audit --no-fund --loglevel=error >/dev/null
  touch node_modules/.installed
fi
