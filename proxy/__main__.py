"""The command line: ``cams-proxy simulate`` (and, from the gateway on, ``serve``).

Each command builds its frozen settings from flags and the environment (`proxy.options`), stops with
one line per invalid setting (exit status 2), and otherwise runs until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Mapping, Sequence

from proxy import __version__
from proxy.credentials import CredentialsUnavailable
from proxy.logs import configure, get_logger
from proxy.options import ConfigError, add_options, default_environ
from proxy.settings import GATEWAY_OPTIONS, GatewaySettings
from proxy.simulator.settings import SIMULATOR_OPTIONS, SimulatorSettings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cams-proxy",
        description="Caching, rate-limited read-through gateway for Alibaba Cloud CAMS, and its simulator.",
    )
    parser.add_argument("--version", action="version", version=f"cams-proxy {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    simulate = commands.add_parser(
        "simulate",
        help="run the CAMS simulator (signature checks, per-account caps, fixtures, faults, /__sim/stats)",
        description="Run the CAMS simulator: a faithful stand-in for the upstream CAMS API.",
    )
    add_options(simulate, SIMULATOR_OPTIONS)
    serve = commands.add_parser(
        "serve",
        help="run the gateway: cache, coalescing and the upstream budget in front of CAMS",
        description="Run the cams-proxy gateway. The AccessKey comes from ALIBABA_CLOUD_ACCESS_KEY_ID, "
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET and (STS) ALIBABA_CLOUD_SECURITY_TOKEN.",
    )
    add_options(serve, GATEWAY_OPTIONS)
    from proxy.netem.settings import NETEM_OPTIONS

    netem = commands.add_parser(
        "netem",
        help="run the network stand-in: a TCP relay adding latency, jitter, TLS, idle closes and cuts",
        description="Run the network stand-in between a client and a target (docs/netem.md); operator endpoints "
        "under /__net/ on --admin-port.",
    )
    add_options(netem, NETEM_OPTIONS)
    from proxy.operator import add_operator_commands

    add_operator_commands(commands)
    return parser


def run_simulator(settings: SimulatorSettings) -> None:
    from proxy.runner import bind, serve_forever
    from proxy.simulator.app import create_app
    from proxy.simulator.fixtures import FixtureError

    log = get_logger("proxy.simulator")
    try:
        app = create_app(settings)
    except FixtureError as exc:
        raise ConfigError([f"invalid setting --fixtures={str(settings.fixtures)!r}: {exc}"]) from exc
    sock = bind(settings.host, settings.port)
    host, port = sock.getsockname()[:2]

    def ready() -> None:
        log.info(
            "simulator listening",
            url=f"http://{host}:{port}/",
            access_keys=[c.access_key_id for c in settings.access_keys],
            caps={name: settings.cap(name) for name in ("GetChatappTemplateDetail", "QueryChatappBindWaba")},
            latency_ms=settings.latency_ms,
        )

    asyncio.run(serve_forever(app, sock, ready))


WORKER_ENV = "CAMS_PROXY_WORKER"


def supervise_workers(settings: GatewaySettings, argv: Sequence[str], env: Mapping[str, str]) -> int:
    """``--workers N``: N gateway processes on one port (SO_REUSEPORT). Stops them all on SIGINT/SIGTERM
    or when one exits.

    Without Redis the supervisor also keeps the host budget (`proxy.admission.host_budget`): one GCRA per
    action on a Unix socket in a private folder, from which every worker reserves its upstream slots, so the
    workers together never pass the cap. If the supervisor dies, the workers stop spending."""
    import os
    import shutil
    import signal
    import subprocess
    import tempfile

    from proxy.admission.host_budget import BUDGET_SOCKET_ENV, HostBudgetThread
    from proxy.runner import bind

    log = get_logger("proxy.gateway")
    # prometheus-client's multi-process mode: each worker writes its metrics under one folder and any worker's
    # /metrics reads them all. The folder must be empty at start (stale files would count old processes).
    metrics_dir = env.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(prefix="cams-proxy-metrics-")
    own_metrics_dir = "PROMETHEUS_MULTIPROC_DIR" not in env
    env = {**env, "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
    budget: HostBudgetThread | None = None
    budget_dir: str | None = None
    if not settings.redis_url:
        budget_dir = tempfile.mkdtemp(prefix="cams-proxy-budget-")  # mode 0700: only this user reaches the socket
        budget = HostBudgetThread(os.path.join(budget_dir, "budget.sock"))
        try:
            budget.start()
        except OSError:
            shutil.rmtree(budget_dir, ignore_errors=True)
            raise
        env = {**env, BUDGET_SOCKET_ENV: budget.path}
    port = settings.port
    if port == 0:
        probe = bind(settings.host, 0)
        port = probe.getsockname()[1]
        probe.close()
    ops = [] if settings.ops_port is None else ["--ops-port", str(settings.ops_port)]
    if settings.ops_port == 0:  # one port for every worker, like --port 0
        probe = bind(settings.host, 0)
        ops = ["--ops-port", str(probe.getsockname()[1])]
        probe.close()
    children = [
        subprocess.Popen([sys.executable, "-m", "proxy", *argv, "--port", str(port), *ops],
                         env={**env, WORKER_ENV: str(index)})
        for index in range(settings.workers)
    ]
    log.info("supervising gateway workers", workers=settings.workers, url=f"http://{settings.host}:{port}/",
             pids=[child.pid for child in children], budget="redis" if budget is None else "host")

    signalled: set[int] = set()

    def stop(*_: object) -> None:
        # Once per child: a second SIGTERM during a worker's graceful drain would kill it (exit status -15).
        for child in children:
            if child.poll() is None and child.pid not in signalled:
                signalled.add(child.pid)
                child.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    status = 0
    try:
        while all(child.poll() is None for child in children):
            if budget is not None and not budget.alive:  # workers would refuse every miss: stop, say why
                log.error("host budget stopped unexpectedly: stopping the workers", socket=budget.path)
                status = 1
                break
            try:
                children[0].wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                continue
    finally:
        stop()
        for child in children:
            status = status or (child.wait() or 0)
        if own_metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
        if budget is not None:
            budget.stop()
            log.info("host budget closed", **budget.status())
        if budget_dir is not None:
            shutil.rmtree(budget_dir, ignore_errors=True)
    return status


def run_gateway(settings: GatewaySettings, worker: int | None = None) -> None:

    from proxy.loops import LoopUnavailable, loop_factory, run
    from proxy.runner import bind, serve_forever
    from proxy.tenants import TenantsFileError, load_tenants
    from proxy.web.app import create_app, gateway_runner
    from proxy.web.keys import OPS_PORT

    log = get_logger("proxy.gateway")
    try:
        loop_name, _ = loop_factory(settings.loop)
    except LoopUnavailable as exc:
        raise ConfigError([str(exc)]) from exc
    try:
        directory = load_tenants(settings.tenants_file)
    except TenantsFileError as exc:
        raise ConfigError([f"invalid setting --tenants={str(settings.tenants_file)!r}: {exc}"]) from exc
    app = create_app(settings, directory)
    sock = bind(settings.host, settings.port, reuse_port=worker is not None)
    host, port = sock.getsockname()[:2]
    ops_socks = []
    if settings.ops_port is not None:
        ops_socks.append(bind(settings.host, settings.ops_port, reuse_port=worker is not None))
        app[OPS_PORT].port = ops_socks[0].getsockname()[1]

    def ready() -> None:
        log.info(
            "gateway ready",
            url=f"http://{host}:{port}/",
            ops_url=f"http://{host}:{app[OPS_PORT].port}/" if ops_socks else None,
            upstream=settings.upstream,
            access_key_id=settings.access_key_id or "(default credential chain)",
            cache="redis" if settings.redis_url else "memory",
            caps={name: settings.cap(name) for name in ("GetChatappTemplateDetail", "QueryChatappBindWaba")},
            tenants=len(directory.tenants),
            tenant_auth=directory.require_authentication,
            worker=worker,
            loop=loop_name,
        )

    run(serve_forever(app, sock, ready, runner_factory=gateway_runner, grace_s=settings.shutdown_grace_s,
                      more_socks=ops_socks), settings.loop)
    log.info("gateway stopped", worker=worker)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    env = default_environ() if environ is None else environ
    args = build_parser().parse_args(argv)
    if args.command in ("warm", "purge", "status"):
        from proxy.operator import run_operator_command

        return run_operator_command(args, env)
    try:
        if args.command == "simulate":
            settings = SimulatorSettings.from_sources(args, env)
            configure(settings.log_level, settings.log_format)
            run_simulator(settings)
        elif args.command == "netem":
            from proxy.netem.service import run_netem
            from proxy.netem.settings import NetemSettings

            netem = NetemSettings.from_sources(args, env)
            configure(netem.log_level, netem.log_format)
            run_netem(netem)
        elif args.command == "serve":
            gateway = GatewaySettings.from_sources(args, env)
            configure(gateway.log_level, "json" if gateway.json_logs(sys.stderr.isatty()) else "console")
            worker = env.get(WORKER_ENV)
            if gateway.workers > 1 and worker is None:
                return supervise_workers(gateway, list(argv if argv is not None else sys.argv[1:]), env)
            run_gateway(gateway, int(worker) if worker is not None else None)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"cams-proxy {args.command}: {problem}", file=sys.stderr)
        return 2
    except CredentialsUnavailable as exc:
        print(f"cams-proxy {args.command}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"cams-proxy {args.command}: cannot listen: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
