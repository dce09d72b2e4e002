"""Alibaba Cloud request signatures, both sides: ACS3-HMAC-SHA256 (V3) and the legacy RPC HMAC-SHA1 (V1).

Pure functions: values in, values out. The date and the nonce are arguments and the clock is the
caller's, so every output is reproducible and byte-for-byte comparable with the official SDK
(`alibabacloud_tea_openapi.utils.Utils.get_authorization`; the golden vectors are ``tests/vectors/``).

V3 rules, as the SDK implements them:

* canonical query: keys sorted by code point, each ``key=quote(value, safe='~')`` (RFC 3986, UTF-8);
  keys are not encoded; ``None`` values are left out; an empty value gives ``Key=``.
* canonical headers: every signed header, name lower-cased, value ``str.strip()``-ed, sorted by name;
  repeated names join their sorted values with ``,``.
* ``StringToSign = "ACS3-HMAC-SHA256\\n" + hex(sha256(CanonicalRequest))``, signature is the lower-case
  hex HMAC-SHA256 of it keyed with the AccessKey secret, no key derivation.

Wire encoding is not canonical encoding: the SDK sends the query with ``quote_plus`` (space as ``+``,
``*`` and ``/`` literal), so a verifier form-decodes the received query and re-encodes it.

The verifier (`verify_v3`, `verify_v1`) never raises anything but `SignatureError`, whose ``code``
and ``http_status`` are what the upstream gateway answers. Nonce replay needs state, so it is left to
the caller: the verified result carries the nonce.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final
from urllib.parse import quote

from proxy.secret import Secret

ALGORITHM: Final = "ACS3-HMAC-SHA256"
EMPTY_BODY_SHA256: Final = hashlib.sha256(b"").hexdigest()
DATE_FORMAT: Final = "%Y-%m-%dT%H:%M:%SZ"
DEFAULT_MAX_SKEW: Final = timedelta(minutes=15)

#: Headers that, when present, the upstream requires to be signed (beyond ``x-acs-*``). Not
#: ``content-type``: the async SDK sends an unsigned ``application/octet-stream`` one.
MUST_SIGN_HEADERS: Final = frozenset({"host"})
#: Headers a V3 request cannot do without.
REQUIRED_V3_HEADERS: Final = (
    "host",
    "x-acs-action",
    "x-acs-version",
    "x-acs-date",
    "x-acs-signature-nonce",
    "x-acs-content-sha256",
)

Pairs = Iterable[tuple[str, str]]


@dataclass(frozen=True)
class Credentials:
    """An AccessKey pair, optionally an STS one (with its security token)."""

    access_key_id: str
    access_key_secret: Secret
    security_token: Secret | None = None

    def __repr__(self) -> str:
        token = "***" if self.security_token else None
        return f"Credentials(access_key_id={self.access_key_id!r}, secret=***, security_token={token})"


def signature_mismatch_message(to_sign: str) -> str:
    """CAMS's own ``SignatureDoesNotMatch`` message: the string the server signed follows the only colon, which
    is where the legacy SDK (``aliyun-python-sdk-core``) reads it to tell a wrong secret from a wrong string. It
    holds no secret: the string to sign is made of the request's own parts."""
    return f"Specified signature is not matched with our calculation. server string to sign is:{to_sign}"


class SignatureError(Exception):
    """A request whose signature the upstream would refuse; ``code`` and ``http_status`` say how."""

    def __init__(self, code: str, message: str, http_status: int = 400) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.http_status = http_status


# --------------------------------------------------------------------------------------------- V3


def percent_encode(value: str) -> str:
    """RFC 3986 percent-encoding of a UTF-8 string: only ``A-Za-z0-9-_.~`` stay literal."""
    return quote(value, safe="~", encoding="utf-8")


def canonical_query(params: Mapping[str, str | None] | Pairs) -> str:
    """The canonical query string: sorted ``key=encoded(value)`` pairs joined by ``&``."""
    pairs = params.items() if isinstance(params, Mapping) else params
    kept = sorted((k, v) for k, v in pairs if v is not None)
    return "&".join(f"{key}={percent_encode(value)}" for key, value in kept)


def canonical_headers(headers: Mapping[str, str] | Pairs) -> tuple[str, str]:
    """``(canonical_headers, signed_headers)`` over every header given."""
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    grouped: dict[str, list[str]] = {}
    for name, value in pairs:
        grouped.setdefault(name.lower(), []).append(str(value).strip())
    names = sorted(grouped)
    lines = "".join(f"{name}:{','.join(sorted(grouped[name]))}\n" for name in names)
    return lines, ";".join(names)


def canonical_request(
    method: str,
    uri: str,
    query: Mapping[str, str | None] | Pairs,
    headers: Mapping[str, str] | Pairs,
    payload_sha256: str,
) -> str:
    """The V3 canonical request. ``headers`` are exactly the signed ones."""
    header_lines, signed = canonical_headers(headers)
    return f"{method}\n{uri or '/'}\n{canonical_query(query)}\n{header_lines}\n{signed}\n{payload_sha256}"


def string_to_sign(canonical: str) -> str:
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    return f"{ALGORITHM}\n{digest}"


def hmac_sha256_hex(secret: Secret, message: str) -> str:
    return hmac.new(secret.reveal().encode("utf-8"), message.encode("utf-8"), hashlib.sha256).hexdigest()


def authorization_header(access_key_id: str, signed_headers: str, signature: str) -> str:
    return f"{ALGORITHM} Credential={access_key_id},SignedHeaders={signed_headers},Signature={signature}"


def format_date(moment: datetime) -> str:
    """``x-acs-date`` / ``Timestamp`` format: UTC, whole seconds."""
    return moment.astimezone(UTC).strftime(DATE_FORMAT)


def parse_date(value: str) -> datetime:
    return datetime.strptime(value, DATE_FORMAT).replace(tzinfo=UTC)


def sign_v3(
    *,
    credentials: Credentials,
    host: str,
    action: str,
    version: str,
    query: Mapping[str, str | None],
    date: str,
    nonce: str,
    method: str = "POST",
    body: bytes = b"",
    extra_headers: Sequence[tuple[str, str]] = (),
) -> list[tuple[str, str]]:
    """Signed headers for one V3 call, ``Authorization`` last.

    Signs the minimal set the upstream requires (``host`` and the ``x-acs-*`` headers, plus the STS
    pair when the credentials carry a token) and any ``extra_headers`` (the SDK adds ``accept``,
    ``user-agent``, ``x-acs-credentials-provider``). Every header returned is signed.
    """
    headers: list[tuple[str, str]] = [
        ("host", host),
        ("x-acs-version", version),
        ("x-acs-action", action),
        ("x-acs-date", date),
        ("x-acs-signature-nonce", nonce),
        ("x-acs-content-sha256", hashlib.sha256(body).hexdigest()),
        *extra_headers,
    ]
    if credentials.security_token is not None:
        headers.append(("x-acs-accesskey-id", credentials.access_key_id))
        headers.append(("x-acs-security-token", credentials.security_token.reveal()))
    canonical = canonical_request(method, "/", query, headers, headers[5][1])
    _, signed = canonical_headers(headers)
    signature = hmac_sha256_hex(credentials.access_key_secret, string_to_sign(canonical))
    headers.append(("Authorization", authorization_header(credentials.access_key_id, signed, signature)))
    return headers


@dataclass(frozen=True)
class ParsedAuthorization:
    algorithm: str
    access_key_id: str
    signed_headers: tuple[str, ...]
    signature: str


def parse_authorization(value: str) -> ParsedAuthorization:
    """Split ``ACS3-HMAC-SHA256 Credential=…,SignedHeaders=…,Signature=…``."""
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise SignatureError(
            "IncompleteSignature", f"The signature algorithm must be {ALGORITHM}; got {algorithm[:40]!r}."
        )
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, eq, field_value = part.strip().partition("=")
        if not eq:
            raise SignatureError("IncompleteSignature", "The Authorization header is malformed.")
        fields[name] = field_value
    try:
        credential, signed, signature = fields["Credential"], fields["SignedHeaders"], fields["Signature"]
    except KeyError as exc:
        raise SignatureError(
            "IncompleteSignature", f"The Authorization header lacks {exc.args[0]}."
        ) from exc
    if not credential or not signed or not signature:
        raise SignatureError("IncompleteSignature", "The Authorization header has an empty field.")
    return ParsedAuthorization(algorithm, credential, tuple(signed.split(";")), signature)


@dataclass(frozen=True)
class ReceivedRequest:
    """What a server saw: method, form-decoded query pairs, headers in any case, raw body."""

    method: str
    query: tuple[tuple[str, str], ...]
    headers: tuple[tuple[str, str], ...]
    body: bytes = b""

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        for key, value in self.headers:
            if key.lower() == lowered:
                return value
        return None


@dataclass(frozen=True)
class VerifiedCaller:
    """A request whose signature checked out."""

    access_key_id: str
    nonce: str
    signed_at: datetime
    scheme: str  # "v3" or "v1"


CredentialLookup = Callable[[str], Credentials | None]


def _check_date(value: str | None, now: datetime, max_skew: timedelta, field: str) -> datetime:
    if not value:
        raise SignatureError(f"Missing{field}", f"{field} is mandatory for this action.")
    try:
        signed_at = parse_date(value)
    except ValueError as exc:
        raise SignatureError(
            "InvalidTimeStamp.Format", f"Specified time stamp or date value is not well formatted: {value[:40]!r}."
        ) from exc
    if abs(now - signed_at) > max_skew:
        raise SignatureError(
            "InvalidTimeStamp.Expired",
            f"Specified time stamp or date value is expired: {value} is more than "
            f"{int(max_skew.total_seconds() // 60)} minutes from the server time.",
        )
    return signed_at


def _check_token(credentials: Credentials, presented: str | None) -> None:
    expected = credentials.security_token
    if expected is None:
        return
    if presented is None:
        raise SignatureError("MissingSecurityToken", "SecurityToken is mandatory for this AccessKeyId.")
    if not expected.matches(presented):
        raise SignatureError(
            "InvalidSecurityToken.MismatchWithAccessKey", "The security token does not match the AccessKeyId."
        )


def _lookup(lookup: CredentialLookup, access_key_id: str) -> Credentials:
    credentials = lookup(access_key_id)
    if credentials is None:
        raise SignatureError("InvalidAccessKeyId.NotFound", "Specified access key is not found.", 404)
    return credentials


def verify_v3(
    request: ReceivedRequest,
    lookup: CredentialLookup,
    now: datetime,
    max_skew: timedelta = DEFAULT_MAX_SKEW,
) -> VerifiedCaller:
    """Check a V3-signed request as the upstream gateway does; raise `SignatureError` if it fails.

    The canonical URI is always ``/`` and ``host`` is taken raw (it may carry a scheme or a path, as
    the SDKs' endpoint handling allows). Only the headers named in ``SignedHeaders`` are signed, but ``host`` and
    every ``x-acs-*`` header present must be among them.
    """
    raw = request.header("Authorization")
    if not raw:
        raise SignatureError("IncompleteSignature", "The request has no Authorization header.")
    auth = parse_authorization(raw)
    signed = set(auth.signed_headers)
    for name, _ in request.headers:
        lowered = name.lower()
        if (lowered in MUST_SIGN_HEADERS or lowered.startswith("x-acs-")) and lowered not in signed:
            raise SignatureError("IncompleteSignature", f"The header {lowered} is present but not signed.")
    for name in REQUIRED_V3_HEADERS:
        if request.header(name) is None:
            raise SignatureError("IncompleteSignature", f"The required header {name} is missing.")
    missing_signed = [name for name in auth.signed_headers if request.header(name) is None]
    if missing_signed:
        raise SignatureError(
            "IncompleteSignature", f"The signed header {missing_signed[0][:40]} is not in the request."
        )
    credentials = _lookup(lookup, auth.access_key_id)
    signed_at = _check_date(request.header("x-acs-date"), now, max_skew, "Date")
    content_sha = request.header("x-acs-content-sha256") or ""
    if content_sha != hashlib.sha256(request.body).hexdigest():
        raise SignatureError("SignatureDoesNotMatch", "x-acs-content-sha256 does not match the request body.")
    signed_pairs = [(k, v) for k, v in request.headers if k.lower() in signed]
    canonical = canonical_request(request.method.upper(), "/", request.query, signed_pairs, content_sha)
    to_sign = string_to_sign(canonical)
    expected = hmac_sha256_hex(credentials.access_key_secret, to_sign)
    if not hmac.compare_digest(expected, auth.signature):
        raise SignatureError("SignatureDoesNotMatch", signature_mismatch_message(to_sign))
    _check_token(credentials, request.header("x-acs-security-token"))
    nonce = request.header("x-acs-signature-nonce") or ""
    return VerifiedCaller(auth.access_key_id, nonce, signed_at, "v3")


# --------------------------------------------------------------------------------------------- V1


def v1_string_to_sign(method: str, params: Mapping[str, str] | Pairs) -> str:
    """``METHOD&%2F&pe(sorted pe(k)=pe(v) joined by &)`` over every parameter but ``Signature``."""
    pairs = params.items() if isinstance(params, Mapping) else params
    kept = sorted((k, v) for k, v in pairs if k != "Signature" and v is not None)
    query = "&".join(f"{percent_encode(k)}={percent_encode(v)}" for k, v in kept)
    return f"{method.upper()}&%2F&{percent_encode(query)}"


def sign_v1(secret: Secret, method: str, params: Mapping[str, str] | Pairs) -> str:
    """Base64 HMAC-SHA1 keyed with ``secret + "&"``."""
    key = (secret.reveal() + "&").encode("utf-8")
    digest = hmac.new(key, v1_string_to_sign(method, params).encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def verify_v1(
    method: str,
    params: Sequence[tuple[str, str]],
    lookup: CredentialLookup,
    now: datetime,
    max_skew: timedelta = DEFAULT_MAX_SKEW,
) -> VerifiedCaller:
    """Check a legacy RPC (V1, HMAC-SHA1) signature over the query and form-body parameters."""
    values = dict(params)
    if values.get("SignatureMethod", "HMAC-SHA1") != "HMAC-SHA1":
        raise SignatureError("IncompleteSignature", "Only SignatureMethod HMAC-SHA1 is supported.")
    for name in ("AccessKeyId", "Signature", "SignatureNonce"):
        if not values.get(name):
            raise SignatureError(f"Missing{name}", f"{name} is mandatory for this action.")
    credentials = _lookup(lookup, values["AccessKeyId"])
    signed_at = _check_date(values.get("Timestamp"), now, max_skew, "Timestamp")
    expected = sign_v1(credentials.access_key_secret, method, params)
    if not hmac.compare_digest(expected, values["Signature"]):
        raise SignatureError("SignatureDoesNotMatch", signature_mismatch_message(v1_string_to_sign(method, params)))
    _check_token(credentials, values.get("SecurityToken"))
    return VerifiedCaller(values["AccessKeyId"], values["SignatureNonce"], signed_at, "v1")
