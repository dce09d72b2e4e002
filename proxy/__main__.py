"""The command line: ``cams-proxy simulate`` (and, from the gateway on, ``serve``).

Each command builds its frozen settings from flags and the environment (`proxy.config`), stops with
one line per invalid setting (exit status 2), and otherwise runs until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Mapping, Sequence

from proxy import __version__
from proxy.config import (
    GATEWAY_OPTIONS,
    SIMULATOR_OPTIONS,
    ConfigError,
    GatewaySettings,
    SimulatorSettings,
    add_options,
    default_environ,
)
from proxy.logs import configure, get_logger


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


def run_gateway(settings: GatewaySettings) -> None:
    from proxy.runner import bind, serve_forever
    from proxy.tenants import TenantsFileError, load_tenants
    from proxy.web.app import create_app
    from proxy.web.server import runner_for

    log = get_logger("proxy.gateway")
    try:
        directory = load_tenants(settings.tenants_file)
    except TenantsFileError as exc:
        raise ConfigError([f"invalid setting --tenants={str(settings.tenants_file)!r}: {exc}"]) from exc
    app = create_app(settings, directory)
    sock = bind(settings.host, settings.port)
    host, port = sock.getsockname()[:2]

    def ready() -> None:
        log.info(
            "gateway ready",
            url=f"http://{host}:{port}/",
            upstream=settings.upstream,
            access_key_id=settings.access_key_id,
            cache="redis" if settings.redis_url else "memory",
            caps={name: settings.cap(name) for name in ("GetChatappTemplateDetail", "QueryChatappBindWaba")},
            tenants=len(directory.tenants),
            tenant_auth=directory.require_authentication,
        )

    asyncio.run(serve_forever(app, sock, ready, runner_factory=runner_for))


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    env = default_environ() if environ is None else environ
    args = build_parser().parse_args(argv)
    try:
        if args.command == "simulate":
            settings = SimulatorSettings.from_sources(args, env)
            configure(settings.log_level, settings.log_format)
            run_simulator(settings)
        elif args.command == "serve":
            gateway = GatewaySettings.from_sources(args, env)
            configure(gateway.log_level, "json" if gateway.json_logs(sys.stderr.isatty()) else "console")
            run_gateway(gateway)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"cams-proxy {args.command}: {problem}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"cams-proxy {args.command}: cannot listen: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
