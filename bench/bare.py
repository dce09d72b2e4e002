"""The baseline: a bare aiohttp server answering every GET with one fixed body.

At start-up it fetches ``--source`` once (a gateway cache hit) and from then on answers any path
with exactly those body bytes and that Content-Type, built the way the gateway builds its answer
(``web.Response(body=..., headers={"Content-Type": ...})``). It runs in its own process on the same
server set-up as the gateway (`proxy.runner.serve_forever`: one process, ``access_log=None``), so the
difference between the two is the gateway's own request handling.

    python -m bench.bare --port PORT --source http://127.0.0.1:GW/v1/GetChatappTemplateDetail?...

``--processes N`` starts N such servers on the one port (``SO_REUSEPORT``, as ``--workers`` does), as children of
this process, which waits for them (SIGTERM stops them all): the baseline of ``--workers N``. Always plain asyncio.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys
from types import FrameType

import aiohttp
from aiohttp import web

from proxy.runner import bind, serve_forever


async def fetch(source: str) -> tuple[bytes, str]:
    async with aiohttp.ClientSession() as session, session.get(source) as response:
        if response.status != 200:
            raise SystemExit(f"bench.bare: {source} answered {response.status}")
        return await response.read(), response.headers["Content-Type"]


def create_app(body: bytes, content_type: str) -> web.Application:
    async def answer(request: web.Request) -> web.Response:
        return web.Response(body=body, headers={"Content-Type": content_type})

    app = web.Application()
    app.router.add_get("/{tail:.*}", answer)
    return app


async def main_async(port: int, source: str, reuse_port: bool = False) -> None:
    body, content_type = await fetch(source)
    sock = bind("127.0.0.1", port, reuse_port=reuse_port)

    def ready() -> None:
        print(f"bare aiohttp listening url=http://127.0.0.1:{sock.getsockname()[1]}/ bytes={len(body)} "
              f"content_type={content_type}", file=sys.stderr, flush=True)

    await serve_forever(create_app(body, content_type), sock, ready)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bare", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--source", required=True, help="URL whose answer (a gateway cache hit) to serve")
    parser.add_argument("--processes", type=int, default=1, help="servers on the one port (SO_REUSEPORT)")
    parser.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.processes <= 1:
        asyncio.run(main_async(args.port, args.source, reuse_port=args.reuse_port))
        return
    children = [subprocess.Popen([sys.executable, "-m", "bench.bare", "--port", str(args.port), "--source",
                                  args.source, "--reuse-port"]) for _ in range(args.processes)]

    def stop(_signum: int, _frame: FrameType | None) -> None:
        for child in children:
            child.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for child in children:
        child.wait()


if __name__ == "__main__":
    main()
