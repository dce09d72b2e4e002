"""Who is calling: every request is attributed to a tenant, optionally authenticated.

Without a tenants file (or with ``"require_authentication": false``) attribution is a label, not a
credential: the ``X-Tenant`` header, else the AccessKeyId the caller signed with (V3 ``Credential=``
or V1 ``AccessKeyId``, unverified), else ``anonymous``.

With ``"require_authentication": true`` every request must prove a tenant, and ``X-Tenant`` is
ignored:

* a bearer token (``Authorization: Bearer <token>``, or the SDK's ``x-acs-bearer-token``), compared
  by SHA-256 digest; the file may hold the token or ``sha256:<hex>`` of it;
* or a gateway-issued AccessKey pair: the SDK signs with it as it would upstream and the gateway
  verifies the V3 (or V1) signature, date and nonce with the foundation's verifier, so SDK users
  authenticate with no code change.

Failures answer in the upstream's shape (``InvalidAccessKeyId.NotFound`` 404,
``SignatureDoesNotMatch`` 400, …) before any quota is spent.

File format (JSON)::

    {"require_authentication": true,
     "tenants": {"checkout": {"weight": 1, "tokens": ["sha256:…"],
                              "access_keys": [{"id": "LTAI…", "secret": "…"}],
                              "cust_space_ids": ["2825…"], "isv_codes": ["…"]}}}

``cust_space_ids`` and ``isv_codes`` (optional) scope an authenticated tenant: a call for another space (or none),
or with another IsvCode, is refused with ``Ram.PermissionDeny`` before the cache is read, costing no quota.
Without authentication the tenant is only a label, so no scope applies.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import orjson
from multidict import CIMultiDict

from proxy.errors import RequestRejected
from proxy.logs import get_logger
from proxy.nonces import MemoryNonces, SharedNonces
from proxy.secret import Secret
from proxy.signing import (
    DEFAULT_MAX_SKEW,
    Credentials,
    ReceivedRequest,
    SignatureError,
    parse_authorization,
    verify_v1,
    verify_v3,
)

ANONYMOUS: Final = "anonymous"
log = get_logger("proxy.tenants")
TENANT_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")


class TenantsFileError(ValueError):
    """The tenants file does not fit the format."""


@dataclass(frozen=True)
class Tenant:
    name: str
    weight: float = 1.0
    #: The customer spaces (``CustSpaceId``, or the deprecated ``CustWabaId``) it may read; None: every space.
    spaces: frozenset[str] | None = None
    #: The ``IsvCode`` values it may send; None: any.
    isv_codes: frozenset[str] | None = None

    def check_scope(self, params: Mapping[str, str]) -> None:
        """Raise `RequestRejected` (CAMS's ``Ram.PermissionDeny``) for a call outside this tenant's scope. A scoped
        tenant must name a space: a call without one could read any."""
        if self.spaces is not None:
            space = params.get("CustSpaceId") or params.get("CustWabaId")
            if space is None or space not in self.spaces:
                raise RequestRejected(f"You are not authorized to operate on the specified resource: tenant "
                                      f"{self.name} may read only its own customer spaces.", code="Ram.PermissionDeny")
        if self.isv_codes is not None and "IsvCode" in params and params["IsvCode"] not in self.isv_codes:
            raise RequestRejected(f"You are not authorized to operate on the specified resource: tenant {self.name} "
                                  "may not use that IsvCode.", code="Ram.PermissionDeny")


@dataclass
class TenantDirectory:
    require_authentication: bool = False
    tenants: dict[str, Tenant] = field(default_factory=dict)
    token_digests: dict[str, str] = field(default_factory=dict)  # sha256 hex -> tenant
    access_keys: dict[str, tuple[str, Credentials]] = field(default_factory=dict)  # key id -> (tenant, creds)

    def weight(self, tenant: str) -> float:
        """The tenant's share weight in the upstream queues (1 unless the tenants file says otherwise)."""
        known = self.tenants.get(tenant)
        return known.weight if known is not None else 1.0

    def knows_token(self, token: str) -> bool:
        return _digest(token) in self.token_digests

    def credentials(self, access_key_id: str) -> Credentials | None:
        found = self.access_keys.get(access_key_id)
        return found[1] if found else None

    def replace_with(self, other: TenantDirectory) -> None:
        """Take ``other``'s contents, keeping this object (and the dicts its holders reference)."""
        self.require_authentication = other.require_authentication
        self.tenants.clear()
        self.tenants.update(other.tenants)
        self.token_digests.clear()
        self.token_digests.update(other.token_digests)
        self.access_keys.clear()
        self.access_keys.update(other.access_keys)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def parse_tenants(document: Any) -> TenantDirectory:
    if not isinstance(document, dict) or not isinstance(document.get("tenants", {}), dict):
        raise TenantsFileError('the tenants file must be an object with a "tenants" object')
    directory = TenantDirectory(require_authentication=bool(document.get("require_authentication", False)))
    for name, spec in document.get("tenants", {}).items():
        if not TENANT_NAME.match(name) or not isinstance(spec, dict):
            raise TenantsFileError(f"tenant {name[:40]!r}: names are 1-64 of A-Z a-z 0-9 . _ : - and map to objects")
        weight = spec.get("weight", 1)
        if isinstance(weight, bool) or not isinstance(weight, int | float) or weight <= 0:
            raise TenantsFileError(f"tenant {name}: weight must be a number > 0")
        scope: dict[str, frozenset[str] | None] = {}
        for field_name in ("cust_space_ids", "isv_codes"):
            values = spec.get(field_name)
            if values is not None and (not isinstance(values, list) or not values
                                       or not all(isinstance(v, str) and v for v in values)):
                raise TenantsFileError(f"tenant {name}: {field_name} must be a non-empty list of strings")
            scope[field_name] = frozenset(values) if values is not None else None
        directory.tenants[name] = Tenant(name, float(weight), scope["cust_space_ids"], scope["isv_codes"])
        for token in spec.get("tokens", []):
            if not isinstance(token, str) or len(token) < 16:
                raise TenantsFileError(f"tenant {name}: tokens must be strings of at least 16 characters")
            digest = token.removeprefix("sha256:") if token.startswith("sha256:") else _digest(token)
            directory.token_digests[digest.lower()] = name
        for key in spec.get("access_keys", []):
            valid = isinstance(key, dict) and isinstance(key.get("id"), str) and isinstance(key.get("secret"), str)
            if not valid:
                raise TenantsFileError(f"tenant {name}: access_keys are objects with string id and secret")
            if key["id"] in directory.access_keys:
                raise TenantsFileError(f"tenant {name}: AccessKey id {key['id']} is used twice")
            directory.access_keys[key["id"]] = (name, Credentials(key["id"], Secret(key["secret"])))
    if directory.require_authentication and not (directory.token_digests or directory.access_keys):
        raise TenantsFileError("require_authentication is on but no tenant has a token or an access key")
    return directory


def load_tenants(path: Path | None) -> TenantDirectory:
    if path is None:
        return TenantDirectory()
    try:
        return parse_tenants(orjson.loads(path.read_bytes()))
    except (OSError, orjson.JSONDecodeError) as exc:
        raise TenantsFileError(f"cannot read {path}: {exc}") from exc


@dataclass(frozen=True)
class CallerView:
    """The parts of an HTTP request that identify its caller."""

    method: str
    headers: tuple[tuple[str, str], ...]
    query: tuple[tuple[str, str], ...]
    form: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((v for k, v in self.headers if k.lower() == lowered), None)


def _bearer(view: CallerView) -> str | None:
    authorization = view.header("Authorization") or ""
    if authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    return view.header("x-acs-bearer-token")


def header_label(headers: Mapping[str, str]) -> str | None:
    """The tenant label the headers give (``X-Tenant``, else the V3 ``Credential``), unverified."""
    label = headers.get("X-Tenant")
    if label is not None:
        if not TENANT_NAME.match(label):
            raise RequestRejected("X-Tenant must be 1-64 of A-Z a-z 0-9 . _ : - starting with a letter or digit.",
                                  code="InvalidParameter.X-Tenant")
        return label
    authorization = headers.get("Authorization")
    if authorization and authorization.startswith("ACS3-"):
        try:
            return parse_authorization(authorization).access_key_id[:64]
        except SignatureError:
            return None
    return None


def query_label(pairs: Sequence[tuple[str, str]]) -> str | None:
    """The V1 ``AccessKeyId`` parameter, unverified."""
    for name, value in pairs:
        if name == "AccessKeyId" and value:
            return value[:64]
    return None


def _label(view: CallerView) -> str:
    return header_label(CIMultiDict(view.headers)) or query_label((*view.query, *view.form)) or ANONYMOUS


class TenantResolver:
    def __init__(self, directory: TenantDirectory, nonces: MemoryNonces | SharedNonces, *, now: Any = None) -> None:
        self.directory = directory
        self.nonces = nonces
        self._now = now or (lambda: datetime.now(UTC))

    async def identify(self, view: CallerView) -> str:
        """The caller's tenant; raises `RequestRejected` when authentication is required and fails (a replayed
        nonce included: checked on every replica when Redis is there, `proxy.nonces`)."""
        if not self.directory.require_authentication:
            return _label(view)
        token = _bearer(view)
        if token is not None:
            tenant = self.directory.token_digests.get(_digest(token))
            if tenant is None:
                raise RequestRejected("The bearer token is not valid for this gateway.", code="InvalidBearerToken",
                                      status=401)
            return tenant
        now = self._now()
        try:
            caller = self._verify(view, now)
        except SignatureError as exc:
            raise RequestRejected(exc.message, code=exc.code, status=exc.http_status) from exc
        used = self.nonces.use(caller.access_key_id, caller.nonce, caller.signed_at.timestamp(), now.timestamp())
        verdict = used if isinstance(used, str) else await used
        if verdict == "replayed":
            raise RequestRejected("Specified signature nonce was used already.", code="SignatureNonceUsed")
        if verdict == "too_old":
            raise RequestRejected("Specified time stamp or date value is expired: under load this gateway accepts "
                                  "less clock skew; sign with the current time.", code="InvalidTimeStamp.Expired")
        return self.directory.access_keys[caller.access_key_id][0]

    def _verify(self, view: CallerView, now: datetime) -> Any:
        if view.header("Authorization"):
            received = ReceivedRequest(view.method, view.query, view.headers, view.body)
            return verify_v3(received, self.directory.credentials, now, DEFAULT_MAX_SKEW)
        params: Sequence[tuple[str, str]] = (*view.query, *view.form)
        if any(name == "Signature" for name, _ in params):
            return verify_v1(view.method, params, self.directory.credentials, now, DEFAULT_MAX_SKEW)
        raise SignatureError("MissingAuthorization", "This gateway requires a tenant credential: "
                             "Authorization: Bearer <token>, or a gateway-issued AccessKey signature.", 401)



class TenantsFileWatcher:
    """Reloads the tenants file when it changes (checked every ``interval_s``: modification time, size, inode), as
    the credentials file is. A good new file replaces the directory's contents in place, in one event-loop step,
    so every holder of the directory (the resolver, the queues' weights, the metrics' tenant set) sees it at once
    and no request sees half of it; a bad one (unreadable, not the format, or holding the admin token) keeps the
    old contents, is logged at error level and shows in ``last_error`` (``/readyz`` degraded) until a good file
    replaces it. Tokens rotated in the file take effect within ``interval_s`` with no restart."""

    def __init__(self, path: Path, directory: TenantDirectory, *, interval_s: float = 2.0,
                 forbidden_token: Secret | None = None) -> None:
        self.path = path
        self.directory = directory
        self.interval_s = interval_s
        self._forbidden = forbidden_token
        self._stamp = self._read_stamp()
        self.reloads = 0
        self.last_error: str | None = None

    def _read_stamp(self) -> tuple[int, int, int] | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size, stat.st_ino

    def _load_if_changed(self) -> TenantDirectory | TenantsFileError | None:
        """In a worker thread: the new directory, the error that kept the old one, or None (unchanged)."""
        stamp = self._read_stamp()
        if stamp == self._stamp:
            return None
        self._stamp = stamp
        try:
            loaded = load_tenants(self.path)
        except TenantsFileError as exc:
            return exc
        if self._forbidden is not None and loaded.knows_token(self._forbidden.reveal()):
            return TenantsFileError("a tenant's token is PROXY_ADMIN_TOKEN: the admin token must be its own")
        return loaded

    def apply(self, outcome: TenantDirectory | TenantsFileError | None) -> None:
        if outcome is None:
            return
        if isinstance(outcome, TenantsFileError):
            self.last_error = str(outcome)
            log.error("tenants file not reloaded: keeping the tenants loaded before", path=str(self.path),
                      error=self.last_error)
            return
        self.directory.replace_with(outcome)
        self.reloads += 1
        self.last_error = None
        log.info("tenants file reloaded", path=str(self.path), tenants=len(outcome.tenants),
                 require_authentication=outcome.require_authentication)

    async def check(self) -> None:
        self.apply(await asyncio.to_thread(self._load_if_changed))

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.check()

    def status(self) -> dict[str, object]:
        return {"path": str(self.path), "reloads": self.reloads, "last_error": self.last_error}
