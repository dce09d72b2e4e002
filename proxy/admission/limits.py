"""The gateway's per-action limits (pure): the cap each action's upstream budget is kept at, how many misses one
tenant may have waiting for it, and that one upstream call fits in a request's deadline.

Plain functions of the configured values; `proxy.settings.GatewaySettings` calls them and words the problems:

* the cap is the documented per-account cap (`proxy.actions`) unless overridden; an override above the
  documented cap is a problem unless the operator says the account's cap was raised (the upstream would throttle
  a budget kept above its real cap);
* every process spaces its grants at that cap, whatever ``--workers``: there is no per-worker split, because the
  workers of one host reserve their slots from one host budget (`proxy.admission.host_budget`) and replicas
  from the shared one (`proxy.admission.shared`), which space the slots of all of them;
* a tenant may have `DEFAULT_QUEUE_BOUND` misses of one action waiting for a slot, unless overridden;
* the timeout of one upstream call may not be longer than the request deadline (when there is one, > 0).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from proxy.actions import ACTIONS

DEFAULT_QUEUE_BOUND: Final = 200


def budget_cap(action: str, overrides: Mapping[str, int] | None = None) -> int:
    """Upstream calls per second ``action`` is budgeted at: its override, else its documented cap."""
    return (overrides or {}).get(action, ACTIONS[action].cap_per_second)


def caps_above_documented(overrides: Mapping[str, int] | None) -> list[tuple[str, int, int]]:
    """``(action, cap, documented cap)`` for each override above its action's documented cap, in their order."""
    return [(name, cap, ACTIONS[name].cap_per_second) for name, cap in (overrides or {}).items()
            if cap > ACTIONS[name].cap_per_second]


def tenant_queue_bound(action: str, overrides: Mapping[str, int] | None = None) -> int:
    """Most misses of ``action`` one tenant may have waiting: its override, else `DEFAULT_QUEUE_BOUND`."""
    return (overrides or {}).get(action, DEFAULT_QUEUE_BOUND)


def timeout_exceeds_deadline(upstream_timeout_s: float, deadline_s: float) -> bool:
    """Whether one upstream call could outlast the request deadline (a deadline of 0 or less bounds nothing)."""
    return deadline_s > 0 and upstream_timeout_s > deadline_s
