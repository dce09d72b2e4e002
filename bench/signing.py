"""Signing (pure, no I/O): our V3 signer against the SDK's own, on the same request."""

from __future__ import annotations

import timeit
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace

from alibabacloud_tea_openapi.utils import Utils

from proxy.secret import Secret
from proxy.signing import EMPTY_BODY_SHA256, Credentials, sign_v3

QUERY = {"CustSpaceId": "28251486512358", "Language": "en_US", "TemplateCode": "744c4b5c79c9432497a075bdfca36bf5"}
CREDENTIALS = Credentials("LTAI5tBench", Secret("bench-secret"))


def ours() -> None:
    sign_v3(credentials=CREDENTIALS, host="cams.ap-southeast-1.aliyuncs.com", action="GetChatappTemplateDetail",
            version="2020-06-06", query=QUERY, date="2026-11-23T08:00:00Z", nonce="0" * 32)


HEADERS = {k: v for k, v in sign_v3(credentials=CREDENTIALS, host="cams.ap-southeast-1.aliyuncs.com",
                                     action="GetChatappTemplateDetail", version="2020-06-06", query=QUERY,
                                     date="2026-11-23T08:00:00Z", nonce="0" * 32) if k != "Authorization"}
REQUEST = SimpleNamespace(pathname="/", method="POST", query=QUERY, headers=HEADERS)


def sdk() -> None:
    Utils.get_authorization(REQUEST, "ACS3-HMAC-SHA256", EMPTY_BODY_SHA256, "LTAI5tBench", "bench-secret")


def per_second(fn: Callable[[], None], number: int = 20_000) -> float:
    best = min(timeit.repeat(fn, number=number, repeat=5))
    return number / best


@dataclass(frozen=True)
class SigningResult:
    ours_per_s: float
    sdk_per_s: float

    @property
    def ratio(self) -> float:
        return self.ours_per_s / self.sdk_per_s


def run_signing() -> SigningResult:
    return SigningResult(per_second(ours), per_second(sdk))


def section(result: SigningResult) -> list[str]:
    return [
        "## Signing (pure, no I/O)",
        "",
        "Best of 5 × 20,000 signatures of the same request, in the benchmark's own process (`timeit`).",
        "",
        "| signer | signatures/s | ratio |",
        "| --- | ---: | ---: |",
        f"| `proxy.upstream.signing.sign_v3` | {result.ours_per_s:,.0f} | {result.ratio:.2f}x |",
        f"| SDK `Utils.get_authorization` | {result.sdk_per_s:,.0f} | 1.00x |",
        "",
        "Either way signing costs tens of microseconds, far below one upstream call (~80 ms); it is not on the",
        "cache-hit path at all.",
        "",
    ]
