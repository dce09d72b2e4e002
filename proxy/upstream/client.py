"""The signed HTTP client for the upstream: one keep-alive aiohttp session, one method, `call`.

Each call is sent the way the official SDK sends it (``POST /`` with every business parameter in the
query and an empty body), signed with ACS3-HMAC-SHA256 over the minimal header set, with a new date
and nonce per attempt. The client never retries: whether and when to try again is the admission
layer's decision, because a retry spends quota.

aiohttp's exceptions are translated here, once, into `UpstreamTimeout` and `UpstreamUnreachable`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlencode

import aiohttp
from yarl import URL

from proxy.actions import API_VERSION
from proxy.upstream.signing import Credentials, format_date, sign_v3


class UpstreamError(Exception):
    """The upstream gave no HTTP answer."""


class UpstreamTimeout(UpstreamError):
    """No complete answer within the timeout."""


class UpstreamUnreachable(UpstreamError):
    """The connection failed (refused, reset, DNS, TLS)."""


@dataclass(frozen=True)
class UpstreamResponse:
    """An HTTP answer from the upstream, body untouched."""

    status: int
    body: bytes
    content_type: str
    request_id: str | None
    retry_after_ms: int | None
    elapsed: float


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
        self, action: str, params: Mapping[str, str], *, version: str = API_VERSION, method: str = "POST"
    ) -> UpstreamResponse:
        """Send one signed call; return the answer whatever its status, or raise `UpstreamError`."""
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
        try:
            async with self._session.request(
                method, target, headers=headers, data=b"", timeout=self._timeout, allow_redirects=False
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
        )
