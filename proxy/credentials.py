"""Where the AccessKey comes from, and how a rotation reaches the signer without a restart.

* `StaticSource`: ``ALIBABA_CLOUD_ACCESS_KEY_ID`` / ``_SECRET`` (/ ``_SECURITY_TOKEN``) read at start-up.
* `ChainSource`: the Alibaba Cloud default credential chain, through the official ``alibabacloud-credentials``
  package (environment, the CLI profile, the credentials file ``ALIBABA_CLOUD_CREDENTIALS_FILE`` or
  ``~/.alibabacloud/credentials.ini``, OIDC, the ECS RAM role, a credentials URI; STS AssumeRole profiles
  refresh themselves before they expire). Used when the two environment variables are not set.

The signer reads `current()` on every call: a plain attribute, never I/O. `ChainSource.run` keeps it
fresh in the background, once a second, with the package's async API (the event loop never blocks):
it asks the chain again (which refreshes STS tokens when due), and rebuilds the chain when the
credentials file changed on disk (the package caches what it read from the file; a rotated key
would otherwise need a restart). A refresh that fails keeps the last good credentials and is logged;
the upstream's own answer (``InvalidAccessKeyId``, ``InvalidSecurityToken.Expired``) says if they lapsed.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, Protocol

from proxy.logs import get_logger
from proxy.secret import Secret
from proxy.signing import Credentials

log = get_logger("proxy.credentials")
REFRESH_INTERVAL_S: Final = 1.0
START_TIMEOUT_S: Final = 10.0


class CredentialsUnavailable(Exception):
    """No credentials could be found at start-up."""


class CredentialSource(Protocol):
    def current(self) -> Credentials: ...

    async def run(self) -> None: ...


class StaticSource:
    def __init__(self, credentials: Credentials) -> None:
        self._credentials = credentials

    def current(self) -> Credentials:
        return self._credentials

    async def run(self) -> None:
        return None


def credentials_file() -> Path:
    configured = os.environ.get("ALIBABA_CLOUD_CREDENTIALS_FILE")
    return Path(configured) if configured else Path.home() / ".alibabacloud" / "credentials.ini"


def _default_client() -> Any:
    from alibabacloud_credentials.client import Client  # type: ignore[import-untyped]

    return Client()


def _from_model(model: Any) -> Credentials:
    token = getattr(model, "security_token", None)
    key_id, secret = getattr(model, "access_key_id", None), getattr(model, "access_key_secret", None)
    if not key_id or not secret:
        raise CredentialsUnavailable("the credential chain returned an incomplete AccessKey")
    return Credentials(str(key_id), Secret(str(secret)), Secret(str(token)) if token else None)


class ChainSource:
    def __init__(self, client_factory: Callable[[], Any] = _default_client,
                 interval_s: float = REFRESH_INTERVAL_S) -> None:
        self._factory = client_factory
        self._interval = interval_s
        self._client: Any = None
        self._credentials: Credentials | None = None
        self._file_state: tuple[float, int] | None = None
        self.rotations = 0

    def current(self) -> Credentials:
        if self._credentials is None:
            raise RuntimeError("ChainSource.start() was not awaited")
        return self._credentials

    async def _file_signature(self) -> tuple[float, int] | None:
        try:
            stat = await asyncio.to_thread(os.stat, credentials_file())
        except OSError:
            return None
        return stat.st_mtime, stat.st_size

    async def _fetch(self) -> Credentials:
        model = await self._client.get_credential_async()
        return _from_model(model)

    async def start(self) -> Credentials:
        """Find credentials through the chain; raises `CredentialsUnavailable` saying where it looked."""
        self._client = self._factory()
        self._file_state = await self._file_signature()
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                self._credentials = await self._fetch()
        except (Exception, TimeoutError) as exc:
            raise CredentialsUnavailable(
                "no AccessKey found: set ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET, or a "
                f"credentials file ({credentials_file()}, or ALIBABA_CLOUD_CREDENTIALS_FILE), or run with an ECS "
                f"RAM role or OIDC ({type(exc).__name__}: {str(exc)[:200]})") from exc
        log.info("credentials from the default chain", access_key_id=self._credentials.access_key_id,
                 sts=self._credentials.security_token is not None)
        return self._credentials

    async def refresh(self) -> bool:
        """Ask the chain again (rebuilt if the credentials file changed); True if the credentials changed."""
        state = await self._file_signature()
        if state != self._file_state:
            self._file_state = state
            self._client = self._factory()  # the package caches the file's contents: read it again
        fresh = await self._fetch()
        old = self._credentials
        if old is not None and (fresh.access_key_id, fresh.access_key_secret.reveal(),
                                fresh.security_token.reveal() if fresh.security_token else None) == (
                old.access_key_id, old.access_key_secret.reveal(),
                old.security_token.reveal() if old.security_token else None):
            return False
        self._credentials = fresh
        self.rotations += 1
        log.info("credentials rotated", access_key_id=fresh.access_key_id, sts=fresh.security_token is not None)
        return True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.refresh()
            except Exception as exc:
                log.warning("credential refresh failed; keeping the last credentials", error=type(exc).__name__)
