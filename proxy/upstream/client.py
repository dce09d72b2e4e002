"""The signed HTTP client for the upstream: warm keep-alive connections (`connections`), one method, `call`.

Each call is sent the way the official SDK sends it (``POST /`` with every business parameter in the
query and an empty body), signed with ACS3-HMAC-SHA256 over the minimal header set, with a new date
and nonce per attempt. The client never retries: whether and when to try again is the admission
layer's decision, because a retry spends quota.

Send timing, by construction: the caller takes a connection *before* its send slot
(`UpstreamClient.connection`, which may open one: TCP and TLS), then calls `call` with it once the slot
has come. `call` writes the whole request (head and empty body) with one ``transport.write`` and does
not wait between checking the slot's send window and that write, so the stamp handed to ``on_sent`` is
the moment the bytes were handed to the transport (for TLS, asyncio encrypts and writes them to the
socket within that same call whenever the socket's buffer has room, as it has on an idle keep-alive
connection).

HTTP/1.1 is spoken with h11 (a sans-I/O protocol state machine) over asyncio streams, because the
send must be one write on a connection already in hand, which aiohttp's client does not offer.

Every failure without an HTTP answer is translated here, once, into `UpstreamTimeout` or
`UpstreamUnreachable` (`proxy.upstream.errors`); `SendWindowMissed` means nothing was written.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import uuid
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final
from urllib.parse import urlencode

import h11
from yarl import URL

from proxy.actions import API_VERSION
from proxy.signing import Credentials, format_date, sign_v3
from proxy.upstream.connections import Connection, ConnectionPool
from proxy.upstream.errors import SendWindowMissed, UpstreamInvalidAnswer, UpstreamTimeout, UpstreamUnreachable

#: Largest upstream answer read by default (CAMS answers are a few KiB; ``--upstream-max-answer-bytes``).
MAX_ANSWER_BYTES: Final = 1024 * 1024
READ_CHUNK: Final = 64 * 1024


@dataclass(frozen=True)
class UpstreamResponse:
    """An HTTP answer from the upstream, body untouched."""

    status: int
    body: bytes
    content_type: str
    request_id: str | None
    retry_after_ms: int | None
    elapsed: float
    #: Event-loop time at which the request bytes were written to the socket.
    sent_at: float | None = None


def _new_nonce() -> str:
    return uuid.uuid4().hex


def _utc_now() -> datetime:
    return datetime.now(UTC)


def tls_context(ca_file: Path | None = None) -> ssl.SSLContext:
    """Certificate and host name checks on; trust ``ca_file`` if given, else the system store (which
    honours ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``)."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    context.set_alpn_protocols(["http/1.1"])
    return context


def _decoded(body: bytes, encoding: str, limit: int = MAX_ANSWER_BYTES) -> bytes:
    """The body without its Content-Encoding, never more than ``limit`` bytes (a compressed answer that would
    expand past it is an invalid answer, so a small gzip bomb cannot take the gateway's memory)."""
    if encoding in ("", "identity"):
        return body
    if encoding in ("gzip", "x-gzip"):
        return _inflate(body, 16 + zlib.MAX_WBITS, limit)
    if encoding == "deflate":
        try:
            return _inflate(body, zlib.MAX_WBITS, limit)
        except zlib.error:
            return _inflate(body, -zlib.MAX_WBITS, limit)
    raise UpstreamUnreachable(f"the upstream answered with an unknown Content-Encoding {encoding!r}")


def _inflate(body: bytes, wbits: int, limit: int) -> bytes:
    inflater = zlib.decompressobj(wbits=wbits)
    out = inflater.decompress(body, limit + 1)
    if len(out) > limit:
        raise UpstreamInvalidAnswer(f"the answer expands to more than {limit} bytes")
    return out


class UpstreamClient:
    """Signs and sends calls to one endpoint with one set of credentials (which may be rotated)."""

    def __init__(
        self,
        endpoint: str | URL,
        credentials: Callable[[], Credentials],
        *,
        timeout: float = 8.0,
        connect_timeout: float = 3.0,
        keepalive_s: float = 4.0,
        connections: int = 32,
        ca_file: Path | None = None,
        clock: Callable[[], datetime] = _utc_now,
        nonce: Callable[[], str] = _new_nonce,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
    ) -> None:
        self._endpoint = URL(str(endpoint))
        if not self._endpoint.is_absolute() or self._endpoint.scheme not in {"http", "https"}:
            raise ValueError(f"upstream endpoint must be an http(s) URL, got {endpoint!s}")
        self._host = self._endpoint.raw_authority
        host = self._endpoint.raw_host or ""
        port = self._endpoint.port or (443 if self._endpoint.scheme == "https" else 80)
        context = tls_context(ca_file) if self._endpoint.scheme == "https" else None
        self.pool = ConnectionPool(host.strip("[]"), port, ssl_context=context, server_hostname=host.strip("[]"),
                                   connect_timeout=connect_timeout, keepalive_s=keepalive_s, limit=connections)
        self._credentials = credentials
        self._timeout = timeout
        self._clock = clock
        self._nonce = nonce
        self._max_answer_bytes = max_answer_bytes

    @property
    def endpoint(self) -> URL:
        return self._endpoint

    async def connection(self) -> Connection:
        """A connection in hand for the next call (opened now if none is warm): take it before the slot."""
        return await self.pool.checkout()

    def give_back(self, connection: object) -> None:
        """A connection taken with `connection` that was not used (no slot came)."""
        if isinstance(connection, Connection):
            self.pool.give_back(connection)

    def prewarm(self, count: int) -> None:
        """Have ``count`` connections idle or opening (while misses wait for their turn)."""
        self.pool.prewarm(count)

    async def close(self) -> None:
        await self.pool.close()

    def _request_bytes(self, connection: Connection, action: str, params: Mapping[str, str], version: str,
                       method: str) -> bytes:
        query = dict(sorted(params.items()))
        headers = sign_v3(credentials=self._credentials(), host=self._host, action=action, version=version,
                          query=query, date=format_date(self._clock()), nonce=self._nonce(), method=method)
        raw_query = urlencode(query)
        target = f"/?{raw_query}" if raw_query else "/"
        wire_headers = [*headers, ("accept", "application/json"), ("content-length", "0")]
        protocol = connection.protocol
        return b"".join((protocol.send(h11.Request(method=method, target=target, headers=wire_headers)) or b"",
                         protocol.send(h11.EndOfMessage()) or b""))

    async def call(
        self,
        action: str,
        params: Mapping[str, str],
        *,
        version: str = API_VERSION,
        method: str = "POST",
        connection: Connection | None = None,
        on_sent: Callable[[float], None] | None = None,
        send_by: float | None = None,
    ) -> UpstreamResponse:
        """Send one signed call; return the answer whatever its status, or raise `UpstreamError`.

        ``connection``: taken with `connection` before the slot (without it, one is taken now: for callers
        with no slot). ``send_by`` (loop time): a call that can no longer be written by then, or whose
        connection was closed by the peer meanwhile, is not sent at all (`SendWindowMissed`; the connection
        goes back to the pool when still usable). ``on_sent(loop_time)`` is called right after the write."""
        loop = asyncio.get_running_loop()
        if connection is None:
            connection = await self.connection()
        if send_by is not None and loop.time() > send_by:
            self.pool.give_back(connection)
            raise SendWindowMissed("too late for the slot before sending")
        if connection.writer.transport.is_closing() or connection.reader.at_eof():
            self.pool.discard(connection)
            raise SendWindowMissed("the connection was closed by the upstream before the slot")
        try:
            data = self._request_bytes(connection, action, params, version, method)
        except BaseException:
            self.pool.discard(connection)
            raise
        started = time.monotonic()
        # From here to the write nothing awaits: the check above and the stamp below are the same moment.
        connection.writer.write(data)
        sent_at = loop.time()
        connection.requests += 1
        if on_sent is not None:
            on_sent(sent_at)
        try:
            async with asyncio.timeout(self._timeout):
                response, body = await self._read_answer(connection)
        except TimeoutError as exc:
            self.pool.discard(connection)
            raise UpstreamTimeout(f"{action}: no answer within {self._timeout}s") from exc
        except (UpstreamUnreachable, UpstreamInvalidAnswer):
            self.pool.discard(connection)
            raise
        except (OSError, h11.ProtocolError, zlib.error) as exc:
            self.pool.discard(connection)
            raise UpstreamUnreachable(f"{action}: {type(exc).__name__}") from exc
        except BaseException:
            self.pool.discard(connection)  # cancelled mid-answer: the connection cannot be reused
            raise
        self.pool.checkin(connection)
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in response.headers}
        retry_after = headers.get("x-acs-retry-after", "")
        try:
            decoded = _decoded(body, headers.get("content-encoding", "").strip().lower(), self._max_answer_bytes)
        except zlib.error as exc:
            raise UpstreamInvalidAnswer(f"{action}: the answer's Content-Encoding does not decode") from exc
        return UpstreamResponse(
            status=response.status_code,
            body=decoded,
            content_type=headers.get("content-type", ""),
            request_id=headers.get("x-acs-request-id"),
            retry_after_ms=int(retry_after) if retry_after.isdigit() else None,
            elapsed=time.monotonic() - started,
            sent_at=sent_at,
        )

    async def _read_answer(self, connection: Connection) -> tuple[h11.Response, bytes]:
        protocol = connection.protocol
        response: h11.Response | None = None
        chunks: list[bytes] = []
        size = 0
        while True:
            event = protocol.next_event()
            if event is h11.NEED_DATA:
                data = await connection.reader.read(READ_CHUNK)
                protocol.receive_data(data)  # b"" is the peer's EOF: h11 turns it into an error or the end
                if not data and protocol.their_state is not h11.DONE and response is None:
                    raise UpstreamUnreachable("the upstream closed the connection without an answer")
                continue
            if isinstance(event, h11.InformationalResponse):
                continue
            if isinstance(event, h11.Response):
                response = event
                declared = dict(event.headers).get(b"content-length", b"")
                if declared.isdigit() and int(declared) > self._max_answer_bytes:
                    raise UpstreamInvalidAnswer(f"the answer declares {int(declared)} bytes, more than "
                                                f"{self._max_answer_bytes}")
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > self._max_answer_bytes:
                    raise UpstreamInvalidAnswer(f"the answer is larger than {self._max_answer_bytes} bytes")
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                if response is None:
                    raise UpstreamUnreachable("the upstream ended a message before its status line")
                return response, b"".join(chunks)
            elif isinstance(event, h11.ConnectionClosed):
                raise UpstreamUnreachable("the upstream closed the connection mid-answer")
