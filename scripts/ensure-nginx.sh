#!/usr/bin/env bash
# `make cluster` (and its test) put nginx in front of the gateway replicas; this makes sure the binary exists.
set -euo pipefail
if command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "nginx not found: installing Debian's nginx-light package (or nginx)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends nginx-light >/dev/null 2>&1 \
    || apt-get install -y -qq --no-install-recommends nginx >/dev/null
  # The package may start a system service on port 80; the cluster runs its own nginx.
  (service nginx stop || systemctl stop nginx || true) >/dev/null 2>&1
  { command -v nginx || [ -x /usr/sbin/nginx ]; } >/dev/null && exit 0
fi
echo "nginx is required by make cluster: install it (Debian/Ubuntu: sudo apt-get install nginx-light; macOS: brew install nginx) and re-run" >&2
exit 1
