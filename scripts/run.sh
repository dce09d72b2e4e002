#!/usr/bin/env bash
# `make run`: the CAMS simulator and the gateway in front of it (in-memory cache, the embedded default),
# sharing the simulator's demo key pair. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
SIM_PORT="${SIM_PORT:-8081}"
PROXY_PORT="${PROXY_PORT:-8080}"
DEMO_ID=$($PY -c 'from proxy.config import DEMO_ACCESS_KEY_ID as v; print(v)')
DEMO_SECRET=$($PY -c 'from proxy.config import DEMO_ACCESS_KEY_SECRET as v; print(v)')

$PY -m proxy simulate --port "$SIM_PORT" --log-level warning &
SIM_PID=$!
trap 'kill $SIM_PID 2>/dev/null || true' EXIT INT TERM
for _ in $(seq 1 100); do
  if $PY -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:${SIM_PORT}/__sim/health', timeout=1)" 2>/dev/null; then break; fi
  kill -0 $SIM_PID 2>/dev/null || { echo "the simulator did not start (port ${SIM_PORT} busy? set SIM_PORT)" >&2; exit 1; }
  sleep 0.1
done

cat <<TXT

  cams-proxy gateway  http://127.0.0.1:${PROXY_PORT}/   (memory cache)
  CAMS simulator      http://127.0.0.1:${SIM_PORT}/   (demo key ${DEMO_ID}; referee: /__sim/stats)

  Try it from another terminal (run the curl twice: MISS, then HIT):
    curl -si 'http://127.0.0.1:${PROXY_PORT}/v1/GetChatappTemplateDetail?CustSpaceId=28251486512358&Language=en_US&TemplateCode=744c4b5c79c9432497a075bdfca36bf5'

  Or the official SDK, pointed at the gateway with any key:
    .venv/bin/python - <<'PY'
from alibabacloud_cams20200606.client import Client; from alibabacloud_cams20200606 import models; from alibabacloud_tea_openapi.models import Config
c = Client(Config(access_key_id="my-team", access_key_secret="unused", endpoint="127.0.0.1:${PROXY_PORT}", protocol="HTTP"))
r = c.get_chatapp_template_detail(models.GetChatappTemplateDetailRequest(cust_space_id="28251486512358", language="en_US", template_code="744c4b5c79c9432497a075bdfca36bf5")); print(r.headers["x-cache"], r.body.data.name)
PY

  Upstream calls so far: curl -s http://127.0.0.1:${SIM_PORT}/__sim/stats       Ctrl-C stops both.

TXT
ALIBABA_CLOUD_ACCESS_KEY_ID="$DEMO_ID" ALIBABA_CLOUD_ACCESS_KEY_SECRET="$DEMO_SECRET" \
  $PY -m proxy serve --port "$PROXY_PORT" --upstream "http://127.0.0.1:${SIM_PORT}" --log-format console
