"""Capture what the official SDK puts on the wire and compare it with our signer, byte for byte.

A stdlib HTTP server records the raw request; the SDK's timestamp and nonce are fixed; our signer,
given the same inputs (the form-decoded query, the SDK's extra signed headers), must produce the same
``Authorization``. Values cover spaces, ``*``, ``~``, ``+``, ``/`` and non-ASCII characters.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlsplit

import pytest
from alibabacloud_cams20200606 import models
from alibabacloud_cams20200606.client import Client
from alibabacloud_tea_openapi.models import Config
from alibabacloud_tea_openapi.utils import Utils
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.secret import Secret
from proxy.signing import Credentials, sign_v3

AK, SK = "LTAI5tCaptureKey01", "capture-secret/with+odd=chars"
FIXED_DATE, FIXED_NONCE = "2026-11-23T08:00:00Z", "0123456789abcdef0123456789abcdef"


class Capture(BaseHTTPRequestHandler):
    captured: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        Capture.captured.append({"method": "POST", "path": self.path, "headers": list(self.headers.items()),
                                 "body": body})
        payload = b'{"RequestId":"r","Code":"OK","Message":"SUCCESS","Success":true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def capture_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Capture)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def fixed_sdk(capture_server: str) -> Iterator[Client]:
    patched = {"get_timestamp": Utils.get_timestamp, "get_nonce": Utils.get_nonce}
    Utils.get_timestamp = staticmethod(lambda: FIXED_DATE)  # type: ignore[method-assign]
    Utils.get_nonce = staticmethod(lambda: FIXED_NONCE)  # type: ignore[method-assign]
    yield Client(Config(access_key_id=AK, access_key_secret=SK, endpoint=capture_server, protocol="HTTP"))
    for name, original in patched.items():
        setattr(Utils, name, original)


def ours_for(captured: dict[str, Any]) -> str:
    headers = {k.lower(): v for k, v in captured["headers"]}
    query = dict(parse_qsl(urlsplit(captured["path"]).query, keep_blank_values=True))
    signed = dict(sign_v3(
        credentials=Credentials(AK, Secret(SK)), host=headers["host"], action=headers["x-acs-action"],
        version=headers["x-acs-version"], query=query, date=headers["x-acs-date"],
        nonce=headers["x-acs-signature-nonce"],
        extra_headers=[(n, headers[n]) for n in ("user-agent", "accept", "x-acs-credentials-provider")],
    ))
    return signed["Authorization"]


def sdk_authorization(captured: dict[str, Any]) -> str:
    return next(v for k, v in captured["headers"] if k.lower() == "authorization")


def test_sdk_capture_matches_our_signer_for_both_actions(fixed_sdk: Client) -> None:
    Capture.captured.clear()
    fixed_sdk.get_chatapp_template_detail(models.GetChatappTemplateDetailRequest(
        cust_space_id="28251486512358", language="en_US", template_code="744c4b5c79c9432497a075bdfca36bf5"))
    fixed_sdk.query_chatapp_bind_waba(models.QueryChatappBindWabaRequest(cust_space_id="28251486512358"))
    assert len(Capture.captured) == 2
    for captured in Capture.captured:
        headers = {k.lower(): v for k, v in captured["headers"]}
        assert headers["x-acs-date"] == FIXED_DATE and headers["x-acs-signature-nonce"] == FIXED_NONCE
        assert captured["body"] == b""
        assert sdk_authorization(captured) == ours_for(captured)


awkward = st.text(alphabet=st.sampled_from(list("aZ09 *~+/=&%é中😀-_.")), min_size=1, max_size=16)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(code=awkward, name=awkward, isv=st.one_of(st.none(), awkward))
def test_sdk_capture_matches_on_awkward_values(fixed_sdk: Client, code: str, name: str, isv: str | None) -> None:
    Capture.captured.clear()
    fixed_sdk.get_chatapp_template_detail(models.GetChatappTemplateDetailRequest(
        cust_space_id="28251486512358", language="en_US", template_code=code, template_name=name,
        isv_code=isv, template_type="WHATSAPP"))
    (captured,) = Capture.captured
    assert sdk_authorization(captured) == ours_for(captured)
