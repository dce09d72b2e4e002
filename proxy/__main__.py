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
from proxy.config import SIMULATOR_OPTIONS, ConfigError, SimulatorSettings, add_options, default_environ
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


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    env = default_environ() if environ is None else environ
    args = build_parser().parse_args(argv)
    try:
        if args.command == "simulate":
            settings = SimulatorSettings.from_sources(args, env)
            configure(settings.log_level, settings.log_format)
            run_simulator(settings)
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
