"""Run every benchmark side by side in one process and write ``docs/benchmarks.md``.

Numbers are ratios measured in one run on one machine; absolute figures are for orientation only.
"""

from __future__ import annotations

import platform
import sys
import timeit
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

from alibabacloud_tea_openapi.utils import Utils

from proxy.secret import Secret
from proxy.upstream.signing import EMPTY_BODY_SHA256, Credentials, sign_v3

ROOT = Path(__file__).resolve().parent.parent
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


def per_second(fn: object, number: int = 20_000) -> float:
    best = min(timeit.repeat(fn, number=number, repeat=5))  # type: ignore[arg-type]
    return number / best


def main() -> None:
    ours_rate, sdk_rate = per_second(ours), per_second(sdk)
    lines = [
        "# Benchmarks",
        "",
        f"Written by `make bench` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {platform.machine()}, "
        f"{platform.processor() or 'cpu'}, Python {sys.version.split()[0]}, {platform.system()}.",
        "Ratios are measured side by side in one run; absolute numbers vary with the machine's load.",
        "",
        "## Signing (pure, no I/O)",
        "",
        "| signer | signatures/s | ratio |",
        "| --- | ---: | ---: |",
        f"| `proxy.upstream.signing.sign_v3` | {ours_rate:,.0f} | {ours_rate / sdk_rate:.2f}x |",
        f"| SDK `Utils.get_authorization` | {sdk_rate:,.0f} | 1.00x |",
        "",
        "Either way signing costs tens of microseconds, far below one upstream call (~80 ms); it is not on the",
        "cache-hit path at all.",
        "",
    ]
    (ROOT / "docs" / "benchmarks.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
