"""``cams-proxy netem``: bind the relay and its operator endpoints, print one ready line, run until a signal.

Guarantees: both sockets are bound (port 0 resolved) and the TLS material is ready before the ready line
``netem listening listening=HOST:PORT url=http://ADMIN_HOST:ADMIN_PORT/ [ca=PATH]`` is logged; on SIGINT/SIGTERM
the listener stops accepting and open connections are closed. Non-guarantees: bytes still queued at shutdown are
not delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import ssl
from pathlib import Path

from aiohttp import web

from proxy.logs import get_logger
from proxy.netem.admin import create_admin_app
from proxy.netem.relay import Relay
from proxy.netem.settings import NetemSettings
from proxy.netem.tls import generate, generated_context, server_context, write_ca
from proxy.options import ConfigError
from proxy.runner import bind


def tls_material(settings: NetemSettings) -> tuple[ssl.SSLContext | None, Path | None]:
    """The server context (None without --tls) and the CA file written for clients (None unless generated).
    Blocking: called before the event loop starts."""
    if not settings.tls:
        return None, None
    if settings.cert is not None and settings.key is not None:
        try:
            return server_context(settings.cert, settings.key), None
        except ssl.SSLError as exc:
            raise ConfigError([f"invalid setting --cert/--key ({settings.cert}, {settings.key}): not a PEM "
                               f"certificate chain and its private key ({exc.reason or exc})"]) from exc
    pair = generate(settings.tls_name)
    return generated_context(pair), write_ca(pair, settings.ca_out)


def _address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def serve(settings: NetemSettings, context: ssl.SSLContext | None, ca: Path | None,
                listen: socket.socket, admin: socket.socket) -> None:
    log = get_logger("proxy.netem")
    relay = Relay(settings.target_address, settings.profile(), ssl_context=context, seed=settings.seed)
    acceptor = asyncio.create_task(relay.accept_forever(listen))
    runner = web.AppRunner(create_admin_app(relay), access_log=None, handle_signals=False)
    await runner.setup()
    await web.SockSite(runner, admin).start()
    sweeper = asyncio.create_task(relay.sweep_idle())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    fields: dict[str, object] = {"listening": _address(listen), "url": f"http://{_address(admin)}/",
                                 "target": settings.target, "tls": context is not None}
    if ca is not None:
        fields["ca"] = str(ca)
    profile = relay.profile
    log.info("netem listening", **fields, handshake_ms=profile.handshake_ms, up_ms=profile.up.base_ms,
             up_jitter_ms=profile.up.jitter_ms, down_ms=profile.down.base_ms, down_jitter_ms=profile.down.jitter_ms,
             idle_close_s=profile.idle_close_s, seed=settings.seed)
    try:
        await stop.wait()
    finally:
        acceptor.cancel()
        listen.close()
        sweeper.cancel()
        await relay.close_all()
        await runner.cleanup()
        log.info("netem stopped", **relay.stats())


def run_netem(settings: NetemSettings) -> None:
    """Run the stand-in until SIGINT/SIGTERM (raises OSError when a port cannot be bound)."""
    context, ca = tls_material(settings)
    listen = bind(settings.host, settings.port)
    admin = bind(settings.admin_host, settings.admin_port)
    asyncio.run(serve(settings, context, ca, listen, admin))
