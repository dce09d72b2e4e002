"""The signed HTTP client for the upstream: one keep-alive aiohttp session, one method, `call`.

Each call is sent the way the official SDK sends it (``POST /`` with every business parameter in the
query and an empty body), signed with ACS3-HMAC-SHA256 over the minimal header set, with a new date
and nonce per attempt. The client never retries: whether and when to try again is the admission
layer's decision, because a retry spends quota.

aiohttp's exceptions are translated here, once, into `UpstreamTimeout` and `UpstreamUnreachable`
(`proxy.upstream.errors`).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import SimpleNamespace
from urllib.parse import urlencode

import aiohttp
from yarl import URL

from proxy.actions import API_VERSION
from proxy.upstream.errors import SendWindowMissed, UpstreamTimeout, UpstreamUnreachable
from proxy.upstream.signing import Credentials, format_date, sign_v3


@dataclass(frozen=True)
class UpstreamResponse:
    """An HTTP answer from the upstream, body untouched."""

    status: int
    body: bytes
    content_type: str
    request_id: str | None
    retry_after_ms: int | None
    elapsed: float
    #: Event-loop time at which the request headers were written (None without `create_session`).
    sent_at: float | None = None


async def _on_headers_sent(
    _session: aiohttp.ClientSession, context: SimpleNamespace, _params: aiohttp.TraceRequestHeadersSentParams
) -> None:
    request_context = context.trace_request_ctx
    if isinstance(request_context, dict):
        at = asyncio.get_running_loop().time()
        request_context["headers_sent"] = at
        on_sent = request_context.get("on_sent")
        if on_sent is not None:
            on_sent(at)


async def _check_send_window(
    _session: aiohttp.ClientSession, context: SimpleNamespace, _params: object
) -> None:
    """Once the connection is in hand (the last wait before the headers are written), refuse to send
    a call that has missed its slot's send window."""
    request_context = context.trace_request_ctx
    if isinstance(request_context, dict):
        send_by = request_context.get("send_by")
        if isinstance(send_by, float) and asyncio.get_running_loop().time() > send_by:
            raise SendWindowMissed("the connection came too late for the slot")


def create_session(*, connect_timeout: float = 3.0, connections: int = 32) -> aiohttp.ClientSession:
    """The one long-lived session: keep-alive pool, connect timeout, and a trace hook that records when
    each request's headers hit the socket (the grant-to-send delay the budget must cover)."""
    trace = aiohttp.TraceConfig()
    trace.on_request_headers_sent.append(_on_headers_sent)
    trace.on_connection_reuseconn.append(_check_send_window)
    trace.on_connection_create_end.append(_check_send_window)
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections, keepalive_timeout=60.0, enable_cleanup_closed=True),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout),
        trace_configs=[trace],
        auto_decompress=True,
        skip_auto_headers=("User-Agent",),
    )


def _new_nonce() -> str:
    return uuid.uuid4().hex


def _utc_now() -> datetime:
    return datetime.now(UTC)


class UpstreamClient:
    """Signs and sends calls to one endpoint with one set of credentials (which may be rotated)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        endpoint: str | URL,
        credentials: Callable[[], Credentials],
        *,
        timeout: float = 8.0,
        clock: Callable[[], datetime] = _utc_now,
        nonce: Callable[[], str] = _new_nonce,
    ) -> None:
        self._session = session
        self._endpoint = URL(str(endpoint))
        if not self._endpoint.is_absolute() or self._endpoint.scheme not in {"http", "https"}:
            raise ValueError(f"upstream endpoint must be an http(s) URL, got {endpoint!s}")
        self._host = self._endpoint.raw_authority
        self._credentials = credentials
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._clock = clock
        self._nonce = nonce

    @property
    def endpoint(self) -> URL:
        return self._endpoint

    async def call(
        self,
        action: str,
        params: Mapping[str, str],
        *,
        version: str = API_VERSION,
        method: str = "POST",
        on_sent: Callable[[float], None] | None = None,
        send_by: float | None = None,
    ) -> UpstreamResponse:
        """Send one signed call; return the answer whatever its status, or raise `UpstreamError`.

        ``on_sent(loop_time)`` is called as soon as the request headers are written (with a session
        from `create_session`). With ``send_by`` (loop time), a call that cannot have its connection by then
        is not sent: `SendWindowMissed`."""
        if send_by is not None and asyncio.get_running_loop().time() > send_by:
            raise SendWindowMissed("too late for the slot before sending")
        query = dict(sorted(params.items()))
        headers = sign_v3(
            credentials=self._credentials(),
            host=self._host,
            action=action,
            version=version,
            query=query,
            date=format_date(self._clock()),
            nonce=self._nonce(),
            method=method,
        )
        url = self._endpoint.with_path("/").with_query(None)
        raw_query = urlencode(query)
        target = URL(f"{url}?{raw_query}", encoded=True) if raw_query else url
        started = time.monotonic()
        trace_context: dict[str, object] = {"on_sent": on_sent, "send_by": send_by}
        try:
            async with self._session.request(
                method, target, headers=headers, data=b"", timeout=self._timeout, allow_redirects=False,
                trace_request_ctx=trace_context,
            ) as response:
                body = await response.read()
        except TimeoutError as exc:
            raise UpstreamTimeout(f"{action}: no answer within {self._timeout.total}s") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamUnreachable(f"{action}: {type(exc).__name__}") from exc
        retry_after = response.headers.get("x-acs-retry-after", "")
        return UpstreamResponse(
            status=response.status,
            body=body,
            content_type=response.headers.get("Content-Type", ""),
            request_id=response.headers.get("x-acs-request-id"),
            retry_after_ms=int(retry_after) if retry_after.isdigit() else None,
            elapsed=time.monotonic() - started,
            sent_at=sent_at if isinstance(sent_at := trace_context.get("headers_sent"), float) else None,
        )
