"""The V3/V1 signer and verifier, against the golden vectors and the official SDK's own signer."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from alibabacloud_tea_openapi.utils import Utils
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy import signing
from proxy.secret import Secret
from proxy.signing import (
    Credentials,
    ReceivedRequest,
    SignatureError,
    canonical_request,
    sign_v1,
    sign_v3,
    verify_v1,
    verify_v3,
)
from tests.support import VECTORS as VECTOR_DIR

VECTORS = json.loads((VECTOR_DIR / "sdk_signatures.json").read_text())
BY_KIND = {kind: [v for v in VECTORS["vectors"] if v["kind"] == kind]
           for kind in {v["kind"] for v in VECTORS["vectors"]}}
SDK_EXTRA = ("user-agent", "accept", "x-acs-credentials-provider")


def credentials_of(inputs: dict[str, str | None]) -> Credentials:
    token = inputs["security_token"]
    return Credentials(str(inputs["access_key_id"]), Secret(str(inputs["access_key_secret"])),
                       Secret(token) if token else None)


@pytest.mark.parametrize("vector", BY_KIND["sdk_e2e_v3_acs3_hmac_sha256"], ids=lambda v: v["name"])
def test_v3_signer_equals_sdk_vectors(vector: dict) -> None:
    sent = vector["request"]["headers"]
    headers = sign_v3(
        credentials=credentials_of(vector["inputs"]),
        host=sent["host"], action=sent["x-acs-action"], version=sent["x-acs-version"],
        query=vector["request"]["query"], date=sent["x-acs-date"], nonce=sent["x-acs-signature-nonce"],
        extra_headers=[(name, sent[name]) for name in SDK_EXTRA],
    )
    assert dict(headers)["Authorization"] == sent["Authorization"]
    signed = [(k, v) for k, v in headers if k != "Authorization"]
    assert canonical_request("POST", "/", vector["request"]["query"], signed,
                             VECTORS["empty_body_sha256"]) == vector["derived"]["canonical_request"]
    assert signing.string_to_sign(vector["derived"]["canonical_request"]) == vector["derived"]["string_to_sign"]


@pytest.mark.parametrize("vector", BY_KIND["helper_v3_minimal_headers"], ids=lambda v: v["name"])
def test_v3_minimal_header_set_equals_vectors(vector: dict) -> None:
    inputs = vector["inputs"]
    h = inputs["headers"]
    headers = sign_v3(credentials=credentials_of(inputs), host=h["host"], action=h["x-acs-action"],
                      version=h["x-acs-version"], query=inputs["query"], date=h["x-acs-date"],
                      nonce=h["x-acs-signature-nonce"])
    assert dict(headers)["Authorization"] == vector["authorization"]


@pytest.mark.parametrize("vector", BY_KIND["sdk_e2e_v1_hmac_sha1"], ids=lambda v: v["name"])
def test_v1_signer_equals_sdk_vectors(vector: dict) -> None:
    query = vector["request"]["query"]
    secret = Secret(vector["inputs"]["access_key_secret"])
    assert signing.v1_string_to_sign("POST", query) == vector["derived"]["string_to_sign"]
    assert sign_v1(secret, "POST", query) == vector["signature"]


def test_published_documentation_examples() -> None:
    v3, v1 = VECTORS["published_doc_crosscheck"]
    i = v3["inputs"]
    signed = canonical_request(i["method"], i["pathname"], i["query"], i["headers"], VECTORS["empty_body_sha256"])
    signature = signing.hmac_sha256_hex(Secret(i["access_key_secret"]), signing.string_to_sign(signed))
    _, names = signing.canonical_headers(i["headers"])
    assert signing.authorization_header(i["access_key_id"], names, signature) == v3["authorization"]
    assert sign_v1(Secret(v1["inputs"]["access_key_secret"]), v1["inputs"]["method"],
                   v1["inputs"]["params"]) == v1["signature"]


# Values with every character class the encodings disagree on.
awkward_text = st.text(
    alphabet=st.sampled_from(list("aZ09-_.~ *+/=&%?#é中😀\t,;:'\"")) | st.characters(codec="utf-8"),
    max_size=24,
)


@settings(max_examples=300, deadline=None)
@given(query=st.dictionaries(st.sampled_from(["TemplateCode", "TemplateName", "Language", "CustSpaceId",
                                              "IsvCode", "TemplateType"]), awkward_text, max_size=6),
       date=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 1, 1)),
       nonce=st.text(alphabet="0123456789abcdef", min_size=32, max_size=32),
       secret=st.text(min_size=1, max_size=40).filter(lambda s: "\x00" not in s))
def test_v3_signer_equals_sdk_utils_on_arbitrary_values(query: dict[str, str], date: datetime, nonce: str,
                                                        secret: str) -> None:
    """Our signer and the SDK's `Utils.get_authorization` agree byte for byte."""
    stamp = date.strftime(signing.DATE_FORMAT)
    credentials = Credentials("LTAI5tHypothesis", Secret(secret))
    ours = dict(sign_v3(credentials=credentials, host="cams.ap-southeast-1.aliyuncs.com",
                        action="GetChatappTemplateDetail", version="2020-06-06", query=query, date=stamp,
                        nonce=nonce))
    request = SimpleNamespace(pathname="/", method="POST", query=query,
                              headers={k: v for k, v in ours.items() if k != "Authorization"})
    theirs = Utils.get_authorization(request, "ACS3-HMAC-SHA256", signing.EMPTY_BODY_SHA256,
                                     "LTAI5tHypothesis", secret)
    assert ours["Authorization"] == theirs


# ------------------------------------------------------------------------------------ verifier

NOW = datetime(2026, 11, 23, 8, 0, 0, tzinfo=UTC)
KEY = Credentials("LTAI5tVerify", Secret("verify-secret"))
STS = Credentials("STS.Verify", Secret("sts-secret"), Secret("token+/="))
LOOKUP = {KEY.access_key_id: KEY, STS.access_key_id: STS}.get
QUERY = {"CustSpaceId": "28251486512358", "Language": "en_US", "TemplateName": "hello world*~/+é"}


def received(credentials: Credentials = KEY, query: dict[str, str] = QUERY, when: datetime = NOW,
             extra: tuple[tuple[str, str], ...] = (), body: bytes = b"") -> ReceivedRequest:
    headers = sign_v3(credentials=credentials, host="127.0.0.1:8081", action="GetChatappTemplateDetail",
                      version="2020-06-06", query=query, date=signing.format_date(when), nonce="n" * 32,
                      body=body)
    return ReceivedRequest("POST", tuple(query.items()), tuple(headers) + extra, body)


def refused(request: ReceivedRequest, now: datetime = NOW) -> SignatureError:
    with pytest.raises(SignatureError) as caught:
        verify_v3(request, LOOKUP, now)
    return caught.value


def test_verify_accepts_a_good_request_and_returns_the_caller() -> None:
    caller = verify_v3(received(), LOOKUP, NOW)
    assert (caller.access_key_id, caller.nonce, caller.scheme) == ("LTAI5tVerify", "n" * 32, "v3")


def test_verify_accepts_unsigned_content_type_like_the_async_sdk_sends() -> None:
    verify_v3(received(extra=(("Content-Type", "application/octet-stream"), ("Accept-Encoding", "gzip"))),
              LOOKUP, NOW)


def test_verify_accepts_sts_with_its_token_and_refuses_a_wrong_token() -> None:
    verify_v3(received(STS), LOOKUP, NOW)
    other = Credentials(STS.access_key_id, STS.access_key_secret, Secret("other-token"))
    assert refused(received(other)).code == "InvalidSecurityToken.MismatchWithAccessKey"


def test_verify_refuses_tampered_query() -> None:
    good = received()
    tampered = ReceivedRequest(good.method, (*good.query[:-1], ("TemplateName", "other")), good.headers)
    assert refused(tampered).code == "SignatureDoesNotMatch"


def test_verify_refuses_unknown_key_with_404() -> None:
    error = refused(received(Credentials("LTAI5tNobody", Secret("x"))))
    assert (error.code, error.http_status) == ("InvalidAccessKeyId.NotFound", 404)


def test_verify_refuses_a_wrong_secret() -> None:
    assert refused(received(Credentials(KEY.access_key_id, Secret("wrong")))).code == "SignatureDoesNotMatch"


@pytest.mark.parametrize("offset", [timedelta(minutes=16), -timedelta(minutes=16), timedelta(days=3)])
def test_verify_refuses_dates_more_than_15_minutes_off(offset: timedelta) -> None:
    assert refused(received(when=NOW + offset)).code == "InvalidTimeStamp.Expired"
    verify_v3(received(when=NOW + offset / abs(offset / timedelta(minutes=14))), LOOKUP, NOW)


@pytest.mark.parametrize("header", ["x-acs-extra", "X-Acs-Trace", "Host"])
def test_verify_refuses_unsigned_host_or_x_acs_headers(header: str) -> None:
    good = received()
    if header == "Host":
        # A second host header value that is not part of the signed set is still a host header; model
        # the "host present but not signed" case by signing without it.
        headers = tuple((k, v) for k, v in good.headers if k != "Authorization")
        names = ";".join(sorted(k for k, _ in headers if k != "host"))
        auth = dict(good.headers)["Authorization"].split(",SignedHeaders=")[0]
        forged = ReceivedRequest("POST", good.query, (*headers, ("Authorization",
                                 f"{auth},SignedHeaders={names},Signature=00")))
        assert refused(forged).code == "IncompleteSignature"
        return
    assert refused(received(extra=((header, "1"),))).code == "IncompleteSignature"


def test_verify_checks_the_body_hash() -> None:
    good = received(body=b"")
    with_body = ReceivedRequest(good.method, good.query, good.headers, b"CustSpaceId=1")
    assert refused(with_body).code == "SignatureDoesNotMatch"


@pytest.mark.parametrize("value", ["", "Bearer abc", "ACS3-HMAC-SHA256 Credential=a", "ACS3-HMAC-SHA256 x",
                                   "ACS3-HMAC-SHA256 Credential=,SignedHeaders=host,Signature=1"])
def test_verify_refuses_malformed_authorization(value: str) -> None:
    good = received()
    headers = (*tuple((k, v) for k, v in good.headers if k != "Authorization"), ("Authorization", value))
    assert refused(ReceivedRequest("POST", good.query, headers)).code == "IncompleteSignature"


def test_verify_v1_round_trip_and_tamper() -> None:
    params = {"Action": "QueryChatappBindWaba", "Version": "2020-06-06", "Format": "json",
              "Timestamp": signing.format_date(NOW), "SignatureNonce": "abc", "SignatureMethod": "HMAC-SHA1",
              "SignatureVersion": "1.0", "AccessKeyId": KEY.access_key_id, "CustSpaceId": "a b+c"}
    params["Signature"] = sign_v1(KEY.access_key_secret, "GET", params)
    assert verify_v1("GET", list(params.items()), LOOKUP, NOW).access_key_id == KEY.access_key_id
    params["CustSpaceId"] = "other"
    with pytest.raises(SignatureError, match="SignatureDoesNotMatch"):
        verify_v1("GET", list(params.items()), LOOKUP, NOW)


def test_empty_body_hash_constant() -> None:
    assert signing.EMPTY_BODY_SHA256 == hashlib.sha256(b"").hexdigest() == VECTORS["empty_body_sha256"]
