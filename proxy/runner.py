"""Running an aiohttp application on a socket until SIGINT/SIGTERM, with a port-0 friendly bind."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Callable, Sequence

from aiohttp import web


def bind(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A listening socket; port 0 picks a free one (read it back with ``getsockname``). With
    ``reuse_port`` several processes can listen on the same port and the kernel spreads connections."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


async def serve_forever(app: web.Application, sock: socket.socket, on_ready: Callable[[], None],
                        runner_factory: Callable[..., web.AppRunner] = web.AppRunner, grace_s: float = 5.0,
                        more_socks: Sequence[socket.socket] = ()) -> None:
    """Serve ``app`` on ``sock`` (and on ``more_socks``, by the same runner); call ``on_ready`` once listening; on
    SIGINT/SIGTERM stop cleanly: stop accepting, run the app's on_shutdown hooks, wait up to ``grace_s`` for
    requests in progress, then clean up."""
    runner = runner_factory(app, access_log=None, handle_signals=False, shutdown_timeout=grace_s)
    await runner.setup()
    for listening in (sock, *more_socks):
        await web.SockSite(runner, listening).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    on_ready()
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
