#!/usr/bin/env bash
# `make cluster`: docker-compose.yml's topology as local processes, for machines that cannot pull images.
#
#   redis-server     127.0.0.1:REDIS_PORT (6379)       compose: redis
#   the simulator    127.0.0.1:SIM_PORT (8081)         compose: simulator
#   N gateways       127.0.0.1:GATEWAY_PORTS (8091..)  compose: gateway-1..N  (N: the servers in nginx.conf)
#   nginx            127.0.0.1:LB_PORT (8080)          compose: lb
#
# Kept in step with compose by construction: the gateways' settings come from deploy/compose/gateway.env (the
# env_file of compose's gateways), nginx's configuration is derived from deploy/compose/nginx.conf, and each
# process gets the same flags as its compose service, with 127.0.0.1 and the local ports in place of service
# names. tests/integration/test_topology.py checks the rest. Start order and health checks follow compose's
# depends_on: Redis and the simulator, then the gateways (/readyz), then nginx.
#
# Everything it writes (logs, Redis dir, nginx prefix, pid files) goes to CLUSTER_DIR (.cluster). Ctrl-C (exit
# status 0) or SIGTERM (143) stops every process it started; so does any of them exiting, which is reported with
# the end of its log (exit status 1).
set -euo pipefail
trap 'exit 0' INT  # until the processes start (see below)
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${CLUSTER_PYTHON:-$ROOT/.venv/bin/python}
RUN=${CLUSTER_DIR:-$ROOT/.cluster}
REDIS_PORT=${REDIS_PORT:-6379}
SIM_PORT=${SIM_PORT:-8081}
LB_PORT=${LB_PORT:-8080}
GATEWAY_PORT_BASE=${GATEWAY_PORT_BASE:-8091}
START_TIMEOUT_S=${CLUSTER_START_TIMEOUT_S:-60}
COMPOSE_DIR=$ROOT/deploy/compose
HOST=127.0.0.1

say() { echo "cluster: $*" >&2; }
die() { say "$*"; exit 1; }

[ -x "$PY" ] || die "no Python at $PY: run make venv (or set CLUSTER_PYTHON)"

# Started in the background of another script, a shell ignores SIGINT and cannot trap it, while the processes
# below set their own handlers: a Ctrl-C to the group would stop them behind this script's back, and their exits
# would look like crashes. Start again with SIGINT at its default, so that the INT trap below runs.
# (An INT trap from the first line: a Ctrl-C before anything started exits 0, and one that lands in a command
# substitution, which would swallow it, is still seen. Where SIGINT is ignored the trap does not take, and
# `trap -p` says so.)
if [[ "$(trap -p INT)" == "trap -- '' "* ]] && [ -z "${CAMS_CLUSTER_SIGINT_RESET:-}" ]; then
  export CAMS_CLUSTER_SIGINT_RESET=1
  exec "$PY" -c 'import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execvp(sys.argv[1], sys.argv[1:])' \
    bash "$ROOT/scripts/cluster.sh" "$@"
fi
unset CAMS_CLUSTER_SIGINT_RESET

REDIS_SERVER=$(command -v redis-server || true)
[ -n "$REDIS_SERVER" ] || die "redis-server not found: run make redis (Debian: apt-get install redis-server)"
NGINX=$(command -v nginx || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; } || true)
[ -n "$NGINX" ] || die "nginx not found: run scripts/ensure-nginx.sh (Debian: apt-get install nginx-light)"

# The replicas: one per `server gateway-N:8080` line of compose's nginx.conf, as in docker-compose.yml.
REPLICAS=$(grep -cE '^[[:space:]]*server[[:space:]]+gateway-[0-9]+:8080[[:space:];]' "$COMPOSE_DIR/nginx.conf" || true)
[ "$REPLICAS" -ge 1 ] || die "no 'server gateway-N:8080' line in $COMPOSE_DIR/nginx.conf"
if [ -n "${GATEWAY_PORTS:-}" ]; then
  read -r -a PORTS <<<"${GATEWAY_PORTS//,/ }"
  [ "${#PORTS[@]}" -eq "$REPLICAS" ] || die "GATEWAY_PORTS has ${#PORTS[@]} ports, the topology $REPLICAS gateways"
else
  PORTS=()
  for ((i = 0; i < REPLICAS; i++)); do PORTS+=($((GATEWAY_PORT_BASE + i))); done
fi

# The gateways' shared settings, read as compose reads an env_file: KEY=VALUE lines, # comments.
GATEWAY_ENV=()
while IFS= read -r line || [ -n "$line" ]; do
  case "$line" in '' | '#'*) continue ;; esac
  case "$line" in *[[:space:]\"\'\$\\]*) die "gateway.env: no quotes, spaces, \$ or \\ please: $line" ;; esac
  [[ "$line" =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "gateway.env: not KEY=VALUE: $line"
  GATEWAY_ENV+=("$line")
done <"$COMPOSE_DIR/gateway.env"

# Compose's containers see only what the compose file gives them: drop every setting of the two commands
# that this shell may carry (a stray PROXY_CAPS would make the local topology differ from compose's).
mapfile -t SCRUB < <(trap '' INT && exec "$PY" -c 'from proxy.settings import GATEWAY_OPTIONS as g
from proxy.simulator.settings import SIMULATOR_OPTIONS as s
for name in sorted({o.env for o in (*g, *s)}): print("-u"); print(name)')
[ "${#SCRUB[@]}" -gt 0 ] || die "cannot read the settings of proxy/settings.py and proxy/simulator/settings.py with $PY"

for port in "$REDIS_PORT" "$SIM_PORT" "${PORTS[@]}" "$LB_PORT"; do
  if (exec 3<>"/dev/tcp/$HOST/$port") 2>/dev/null; then
    die "port $port is already in use (an earlier cluster? make run?): free it or move it (REDIS_PORT, SIM_PORT, GATEWAY_PORTS or GATEWAY_PORT_BASE, LB_PORT)"
  fi
done

mkdir -p "$RUN/redis" "$RUN/nginx"
rm -f "$RUN"/*.log "$RUN/nginx.pid"

NAMES=()
PIDS=()
STOPPING=0
stop_all() {
  [ "$STOPPING" = 1 ] && return
  STOPPING=1
  local i pid
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do  # reverse start order: the load balancer first
    kill -TERM "${PIDS[$i]}" 2>/dev/null || true
  done
  for _ in $(seq 1 100); do
    local alive=0
    for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for ((i = 0; i < ${#PIDS[@]}; i++)); do
    if kill -0 "${PIDS[$i]}" 2>/dev/null; then
      say "${NAMES[$i]} did not stop within 10 s: killing it"
      kill -KILL "${PIDS[$i]}" 2>/dev/null || true
    fi
  done
  wait 2>/dev/null || true
}
trap 'stop_all' EXIT
trap 'say "stopping"; stop_all; exit 0' INT
trap 'say "stopping"; stop_all; exit 143' TERM
trap 'stop_all; exit 129' HUP

start() {  # start NAME LOG COMMAND...: in the background, output to LOG
  local name=$1 log=$2
  shift 2
  "$@" >"$log" 2>&1 &
  NAMES+=("$name")
  PIDS+=($!)
}

# shellcheck disable=SC2317  # called through wait_healthy
http_ok() {  # the probe compose's health checks run
  "$PY" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$1" >/dev/null 2>&1
}

# shellcheck disable=SC2317  # called through wait_healthy
redis_ok() {  # compose's: redis-cli ping
  [ "$(redis-cli -h "$HOST" -p "$REDIS_PORT" ping 2>/dev/null)" = "PONG" ]
}

wait_healthy() {  # wait_healthy NAME CHECK...: until CHECK succeeds, while NAME's process lives
  local name=$1 i pid="" log
  shift
  for ((i = 0; i < ${#NAMES[@]}; i++)); do [ "${NAMES[$i]}" = "$name" ] && pid=${PIDS[$i]}; done
  log="$RUN/$name.log"
  local deadline=$((SECONDS + START_TIMEOUT_S))
  until "$@"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      say "$name exited during start-up; the end of $log:"
      tail -n 20 "$log" >&2 || true
      exit 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      say "$name not healthy after ${START_TIMEOUT_S} s; the end of $log:"
      tail -n 20 "$log" >&2 || true
      exit 1
    fi
    sleep 0.1
  done
}

# --- redis (compose: redis:7-alpine, `redis-server --save "" --appendonly no`; health: redis-cli ping)
start redis "$RUN/redis.log" "$REDIS_SERVER" --port "$REDIS_PORT" --bind "$HOST" \
  --save "" --appendonly no --dir "$RUN/redis"
# --- the simulator (compose: `simulate --host 0.0.0.0 --port 8081`; health: /__sim/health)
start simulator "$RUN/simulator.log" env "${SCRUB[@]}" "$PY" -m proxy simulate --host "$HOST" --port "$SIM_PORT"
wait_healthy redis redis_ok
wait_healthy simulator http_ok "http://$HOST:$SIM_PORT/__sim/health"

# --- the gateways (compose: `serve --host 0.0.0.0 --port 8080`, env_file gateway.env, REDIS_URL and
#     CAMS_ENDPOINT naming the redis and simulator services; health: /readyz)
for ((i = 0; i < REPLICAS; i++)); do
  start "gateway-$((i + 1))" "$RUN/gateway-$((i + 1)).log" env "${SCRUB[@]}" "${GATEWAY_ENV[@]}" \
    "REDIS_URL=redis://$HOST:$REDIS_PORT/0" "CAMS_ENDPOINT=http://$HOST:$SIM_PORT" \
    "$PY" -m proxy serve --host "$HOST" --port "${PORTS[$i]}"
done
for ((i = 0; i < REPLICAS; i++)); do
  wait_healthy "gateway-$((i + 1))" http_ok "http://$HOST:${PORTS[$i]}/readyz"
done

# --- nginx (compose: nginx:stable-alpine with deploy/compose/nginx.conf; health: /healthz through it).
# The same file with local addresses, local log files, and temp directories under the run dir.
awk -v run="$RUN" -v listen="$HOST:$LB_PORT" -v host="$HOST" -v ports="${PORTS[*]}" '
  BEGIN { split(ports, port, " ") }
  /^[[:space:]]*error_log[[:space:]]/ { sub(/error_log[[:space:]]+[^[:space:];]+/, "error_log " run "/lb-error.log") }
  /^[[:space:]]*access_log[[:space:]]/ { sub(/access_log[[:space:]]+[^[:space:];]+/, "access_log " run "/lb-access.log") }
  /^[[:space:]]*listen[[:space:]]+8080;/ { sub(/listen[[:space:]]+8080;/, "listen " listen ";") }
  /^[[:space:]]*server[[:space:]]+gateway-[0-9]+:8080[[:space:];]/ {
    n++; sub(/gateway-[0-9]+:8080/, host ":" port[n])
  }
  { print }
  /^http[[:space:]]*\{/ {
    print "    # cluster.sh: temp files under the run dir (the compiled-in paths need root)"
    print "    client_body_temp_path " run "/nginx/client_body;"
    print "    proxy_temp_path " run "/nginx/proxy;"
    print "    fastcgi_temp_path " run "/nginx/fastcgi;"
    print "    uwsgi_temp_path " run "/nginx/uwsgi;"
    print "    scgi_temp_path " run "/nginx/scgi;"
  }
' "$COMPOSE_DIR/nginx.conf" >"$RUN/nginx.conf"
if grep -qE '^[[:space:]]*server[[:space:]]+gateway-|^[[:space:]]*listen[[:space:]]+8080;' "$RUN/nginx.conf"; then
  die "could not rewrite every address in $RUN/nginx.conf"
fi
NGINX_ARGS=(-p "$RUN/nginx/" -c "$RUN/nginx.conf" -e "$RUN/lb-error.log" -g "daemon off; pid $RUN/nginx.pid;")
"$NGINX" -t -q "${NGINX_ARGS[@]}" || die "nginx rejected $RUN/nginx.conf (see above)"
start lb "$RUN/lb.log" "$NGINX" "${NGINX_ARGS[@]}"
wait_healthy lb http_ok "http://$HOST:$LB_PORT/healthz"

GATEWAY_URLS=""
for ((i = 0; i < REPLICAS; i++)); do GATEWAY_URLS+=" http://$HOST:${PORTS[$i]}/"; done
cat <<TXT

  cams-proxy cluster (docker-compose.yml's topology, as local processes; logs in $RUN)

  load balancer   http://$HOST:$LB_PORT/   (nginx, round robin; call the gateways here)
  gateways       $GATEWAY_URLS   (Redis cache and budget)
  CAMS simulator  http://$HOST:$SIM_PORT/   (referee: /__sim/stats)
  Redis           redis://$HOST:$REDIS_PORT/0

  Try it (twice: MISS, then HIT, whichever gateway answers):
    curl -si 'http://$HOST:$LB_PORT/v1/GetChatappTemplateDetail?CustSpaceId=28251486512358&Language=en_US&TemplateCode=744c4b5c79c9432497a075bdfca36bf5'
  Upstream calls so far: curl -s http://$HOST:$SIM_PORT/__sim/stats          Ctrl-C stops them all.

TXT

# Run until a signal, or until any of them exits (then stop the others and fail).
set +e
wait -n
status=$?
for ((i = 0; i < ${#PIDS[@]}; i++)); do
  if ! kill -0 "${PIDS[$i]}" 2>/dev/null; then
    say "${NAMES[$i]} exited (status $status): stopping the others; the end of $RUN/${NAMES[$i]}.log:"
    tail -n 20 "$RUN/${NAMES[$i]}.log" >&2 || true
  fi
done
stop_all
exit 1
