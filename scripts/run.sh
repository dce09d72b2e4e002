#!/usr/bin/env bash
# `make run`: the CAMS simulator on embedded defaults, in the foreground, with what to paste to try it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
SIM_PORT="${SIM_PORT:-8081}"
DEMO_ID=$($PY -c 'from proxy.config import DEMO_ACCESS_KEY_ID as v; print(v)')
DEMO_SECRET=$($PY -c 'from proxy.config import DEMO_ACCESS_KEY_SECRET as v; print(v)')
cat <<TXT

  CAMS simulator on http://127.0.0.1:${SIM_PORT}/ (demo key ${DEMO_ID}; Ctrl-C stops it)

  Try it from another terminal:
    curl -s http://127.0.0.1:${SIM_PORT}/__sim/stats
    .venv/bin/python - <<'PY'
from alibabacloud_cams20200606.client import Client; from alibabacloud_cams20200606 import models; from alibabacloud_tea_openapi.models import Config
c = Client(Config(access_key_id="${DEMO_ID}", access_key_secret="${DEMO_SECRET}", endpoint="127.0.0.1:${SIM_PORT}", protocol="HTTP"))
print(c.get_chatapp_template_detail(models.GetChatappTemplateDetailRequest(cust_space_id="28251486512358", language="en_US", template_code="744c4b5c79c9432497a075bdfca36bf5")).body.data.name)
PY

TXT
exec $PY -m proxy simulate --port "${SIM_PORT}"
