"""The composition root: `open_gateway(settings)` opens every resource of one gateway process on one exit stack
and yields a `Gateway`, whose `Gateway.status` is the one account of its state.

Only the web layer and the CLI import this package; nothing below it does.
"""

from proxy.gateway.core import Gateway, Readiness, in_process_cache
from proxy.gateway.open import open_gateway

__all__ = ["Gateway", "Readiness", "in_process_cache", "open_gateway"]
