"""Tenant scope: an authenticated tenant limited to its own customer spaces (and IsvCodes) is refused outside them
with CAMS's Ram.PermissionDeny, before the cache is read (an entry another tenant filled is not served to it) and
without an upstream call."""

from __future__ import annotations

import json
from pathlib import Path

import requests

from tests.integration.test_gateway_sdk import gateway_env, sim_calls
from tests.support import SEED_SPACE, SEED_TEMPLATE, start_cli

WABA = "QueryChatappBindWaba"
CHECKOUT, BILLING = "scope-checkout-token-0001", "scope-billing-token-0002"


def test_a_tenant_outside_its_spaces_is_refused_without_a_cache_read_or_quota(sim_url: str, tmp_path: Path) -> None:
    tenants = tmp_path / "tenants.json"
    tenants.write_text(json.dumps({"require_authentication": True, "tenants": {
        "checkout": {"tokens": [CHECKOUT], "cust_space_ids": [SEED_SPACE], "isv_codes": ["isv-checkout"]},
        "billing": {"tokens": [BILLING], "cust_space_ids": ["78000000000009"]}}}))
    gateway = start_cli(["serve", "--port", "0", "--upstream", sim_url, "--tenants", str(tenants)],
                        tmp_path / "gateway.log", env=gateway_env(), ready_text="gateway ready")

    def get(token: str, query: str) -> tuple[int, str, str]:
        answer = requests.get(f"{gateway.url}/v1/{WABA}?{query}", headers={"Authorization": f"Bearer {token}"},
                              timeout=10)
        return answer.status_code, str(answer.json()["Code"]), answer.headers.get("X-Cache", "")

    try:
        assert get(CHECKOUT, f"CustSpaceId={SEED_SPACE}") == (200, "OK", "MISS")
        assert get(CHECKOUT, f"CustSpaceId={SEED_SPACE}") == (200, "OK", "HIT")
        calls = sim_calls(sim_url, WABA)
        # The entry is in the cache, but billing may not read that space: refused, not served from the cache.
        assert get(BILLING, f"CustSpaceId={SEED_SPACE}")[:2] == (400, "Ram.PermissionDeny")
        template = requests.get(f"{gateway.url}/v1/GetChatappTemplateDetail?CustWabaId={SEED_SPACE}&Language=en_US"
                                f"&TemplateCode={SEED_TEMPLATE}", headers={"Authorization": f"Bearer {BILLING}"},
                                timeout=10)
        assert (template.status_code, template.json()["Code"]) == (400, "Ram.PermissionDeny")  # the deprecated name
        assert get(CHECKOUT, f"CustSpaceId={SEED_SPACE}&IsvCode=isv-other")[:2] == (400, "Ram.PermissionDeny")
        assert get(CHECKOUT, "CustSpaceId=78000000000009")[:2] == (400, "Ram.PermissionDeny")
        assert sim_calls(sim_url, WABA) == calls  # no quota spent on a refusal
    finally:
        gateway.stop()
