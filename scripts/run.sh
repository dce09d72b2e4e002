#!/usr/bin/env bash
# `make run`: the CAMS simulator and the gateway in front of it (in-memory cache, the embedded default),
# sharing the simulator's demo key pair. Ctrl-C (or SIGTERM) stops both and exits 0 (143 for SIGTERM); either
# of them exiting on its own stops the other and fails. A port already taken (SIM_PORT, PROXY_PORT) is refused
# before anything starts: the gateway is never pointed at some other server that answers there.
set -euo pipefail
trap 'exit 0' INT  # until the processes start (see below)
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=$ROOT/.venv/bin/python
SIM_PORT="${SIM_PORT:-8081}"
PROXY_PORT="${PROXY_PORT:-8080}"
START_TIMEOUT_S=${RUN_START_TIMEOUT_S:-30}

say() { echo "make run: $*" >&2; }
die() { say "$*"; exit 1; }

[ -x "$PY" ] || die "no Python at $PY: run make venv"

# Started in the background of another script, a shell ignores SIGINT and cannot trap it; its children (which
# set their own handlers) would still stop on a Ctrl-C to the group, and that would look like a crash. Start
# again with SIGINT at its default, so that the trap below sees it.
# (An INT trap from the first line: a Ctrl-C before anything started exits 0, and one that lands in a command
# substitution, which would swallow it, is still seen. Where SIGINT is ignored the trap does not take, and
# `trap -p` says so.)
if [[ "$(trap -p INT)" == "trap -- '' "* ]] && [ -z "${CAMS_RUN_SIGINT_RESET:-}" ]; then
  export CAMS_RUN_SIGINT_RESET=1
  exec "$PY" -c 'import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execvp(sys.argv[1], sys.argv[1:])' \
    bash "$ROOT/scripts/run.sh" "$@"
fi
unset CAMS_RUN_SIGINT_RESET

# The Python helpers below ignore SIGINT: a Ctrl-C is this script's to handle (by the trap, once they are done),
# and one that reached a helper starting up would print a traceback.
helper() { (trap '' INT && exec "$PY" "$@"); }

# Both ports free, bound exactly as the two commands will bind them (on their --host, PROXY_HOST / SIM_HOST).
helper - "${SIM_HOST:-127.0.0.1}" "$SIM_PORT" "${PROXY_HOST:-127.0.0.1}" "$PROXY_PORT" <<'PY' || exit 1
import errno
import sys

from proxy.runner import bind

sim_host, sim_port, proxy_host, proxy_port = sys.argv[1:]
problems = []
if sim_port == proxy_port:
    problems.append(f"SIM_PORT and PROXY_PORT are both {sim_port}: give them different ports")
else:
    for what, env, host, port, other in (("the simulator", "SIM_PORT", sim_host, sim_port, 18081),
                                         ("the gateway", "PROXY_PORT", proxy_host, proxy_port, 18080)):
        try:
            bind(host, int(port)).close()
        except (ValueError, OverflowError):
            problems.append(f"{env}={port!r} is not a port number")
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                problems.append(f"port {port} ({what}, {env}) is already in use by another process: stop it, or "
                                f"move {what}: {env}={other} make run")
            else:
                problems.append(f"{what} cannot listen on {host}:{port} ({exc.strerror or exc}): set {env}")
for problem in problems:
    print(f"make run: {problem}", file=sys.stderr)
sys.exit(1 if problems else 0)
PY

DEMO=$(helper -c 'from proxy.simulator.settings import DEMO_ACCESS_KEY_ID as key_id, DEMO_ACCESS_KEY_SECRET as secret; print(key_id, secret)')
DEMO_ID=${DEMO% *}
DEMO_SECRET=${DEMO#* }

SIM_PID=""
GATEWAY_PID=""
STOPPING=0
stop() {  # stop PID: SIGTERM, then SIGKILL if it is still there after the gateway's drain (20 s) and some
  local pid=$1
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 250); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  say "process $pid did not stop within 25 s: killing it"
  kill -KILL "$pid" 2>/dev/null || true
}
stop_all() {  # the gateway first (it drains its calls to the simulator), then the simulator
  [ "$STOPPING" = 1 ] && return
  STOPPING=1
  stop "$GATEWAY_PID"
  stop "$SIM_PID"
  wait 2>/dev/null || true
}
trap 'stop_all' EXIT
trap 'stop_all; exit 0' INT
trap 'stop_all; exit 143' TERM
trap 'stop_all; exit 129' HUP

"$PY" -m proxy simulate --port "$SIM_PORT" --log-level warning &
SIM_PID=$!

# Healthy, and the simulator started here: /__sim/health names its process.
set +e
helper - "http://127.0.0.1:${SIM_PORT}/__sim/health" "$SIM_PID" "$START_TIMEOUT_S" <<'PY'
import json, os, sys, time, urllib.request

url, pid, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
deadline = time.monotonic() + timeout
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit(3)
    try:
        with urllib.request.urlopen(url, timeout=1) as answer:
            body = json.load(answer)
    except (OSError, ValueError):
        time.sleep(0.05)
        continue
    sys.exit(0 if isinstance(body, dict) and body.get("pid") == pid else 4)
sys.exit(5)
PY
ready=$?
set -e
case "$ready" in
  0) ;;
  3) die "the simulator exited during start-up (its message is above)" ;;
  4) die "another server answers on port ${SIM_PORT}, not the simulator started here: free the port, or move it: SIM_PORT=18081 make run" ;;
  5) die "the simulator did not answer http://127.0.0.1:${SIM_PORT}/__sim/health within ${START_TIMEOUT_S} s" ;;
  *) exit "$ready" ;;  # interrupted
esac

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
  "$PY" -m proxy serve --port "$PROXY_PORT" --upstream "http://127.0.0.1:${SIM_PORT}" --log-format console &
GATEWAY_PID=$!

# Run until a signal (the traps above exit), or until one of the two exits on its own: stop the other, fail.
set +e
wait -n  # the two background jobs
status=$?
set -e
if ! kill -0 "$GATEWAY_PID" 2>/dev/null; then
  say "the gateway exited (status $status): stopping the simulator"
else
  say "the simulator exited (status $status): stopping the gateway"
fi
stop_all
exit $((status == 0 ? 1 : status))
