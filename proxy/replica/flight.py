"""The leased flight: one fill per key across replicas (`proxy.flights.Flights` with Redis).

The protocol, for this process's one flight of a key:

1. expect the key's notice on the bus before looking at the lease (no notice can slip between);
2. try to take the key's fill lease (``SET NX PX``). Taken: look at the shared cache first (filled and released
   just before?), else fill, renewing the lease every third of its TTL until the fill ends, release it, and
   publish a ``fill`` notice with the entry (or a ``fail`` notice with the error); not taken: look at the shared
   cache (the holder may have finished just now), else wait for the notice until the lease's TTL or the deadline;
3. a waiter whose wait ran out before its own deadline tries to take the lease over (the holder may be gone);
   a ``fail`` notice is answered as the holder's error, with this request's own id and Retry-After, unless it is
   the holder's deadline that passed and not ours (then take the lease over).

Redis unreachable (`LeaseUnavailable`): this process fills alone. Guarantee: while Redis answers, at most one
replica holds a key's lease at a time (a holder slower than the TTL without renewing loses it); the budget, not
the lease, keeps the upstream under the cap, so a second fill of the same key costs quota but never passes it.
This module is the only one of `proxy.replica` above the cache: it reads the shared tier.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import orjson

from proxy.cache.base import Cache, CacheError, Entry
from proxy.errors import DeadlineExceeded, GatewayError, Overloaded, UpstreamFailed
from proxy.fill import JSON_TYPE, Fill, shared_fill
from proxy.flights import RunFill
from proxy.freshness import Freshness, Lifetimes
from proxy.replica.bus import Bus, Notice
from proxy.replica.leases import Leases, LeaseUnavailable
from proxy.tasks import TaskOwner


def failure_notice(key: str, origin: str, error: GatewayError) -> Notice:
    """The notice a lease holder publishes when its fill failed: the error's code, message, status and, for a
    refusal, when to retry (each waiter renders it with its own request id)."""
    retry_after = error.retry_after_s if isinstance(error, Overloaded) else None
    body = orjson.dumps({"Code": error.code, "Message": error.message, "RetryAfterS": retry_after})
    return Notice("fail", key, origin, error.status, body, JSON_TYPE)


def failure_from_notice(notice: Notice) -> GatewayError:
    """The error a waiter on another replica answers with, from a ``fail`` notice."""
    try:
        data = orjson.loads(notice.body)
        code, message, retry_after = str(data["Code"]), str(data["Message"]), data.get("RetryAfterS")
    except (orjson.JSONDecodeError, KeyError, TypeError):
        code, message, retry_after = UpstreamFailed.code, "The replica filling this key failed.", None
    if isinstance(retry_after, int | float) and not isinstance(retry_after, bool):
        refused = Overloaded(message, float(retry_after), rendered=True)  # the message says the wait already
        refused.code, refused.status = code, notice.status or refused.status
        return refused
    return GatewayError(message, code=code, status=notice.status or UpstreamFailed.status)


class LeasedFlights:
    def __init__(self, leases: Leases, bus: Bus, *, cache: Cache, lifetimes: Lifetimes,
                 wall: Callable[[], float], owner: TaskOwner) -> None:
        self.leases = leases
        self.bus = bus
        self._cache = cache
        self._lifetimes = lifetimes
        self._wall = wall
        self._owner = owner

    def _fresh(self, entry: Entry | None) -> bool:
        return entry is not None and self._lifetimes.freshness(entry.fresh_until, entry.stale_until,
                                                               self._wall()) is Freshness.FRESH

    async def _lookup_shared(self, key: str) -> Entry | None:
        """The entry every replica sees (Redis, past this replica's L1); None when the cache fails."""
        shared = getattr(self._cache, "shared_get", None)
        try:
            return await (shared(key) if shared is not None else self._cache.get(key))
        except CacheError:
            return None

    async def fill(self, key: str, run: RunFill, deadline: float, action: str) -> Fill:
        leases, bus = self.leases, self.bus
        loop = asyncio.get_running_loop()
        while True:
            notice = bus.expect(key)  # before looking at the lease: no notice can slip between
            try:
                try:
                    holder = await leases.acquire(key)
                except LeaseUnavailable:
                    return await run()  # Redis down: this process alone
                if holder:
                    entry = await self._lookup_shared(key)  # filled and released just before we took the lease?
                    if entry is not None and self._fresh(entry):
                        await leases.release(key)
                        return shared_fill(entry)
                    return await self._holding_lease(key, run)
                entry = await self._lookup_shared(key)  # the holder may have finished just now
                if entry is not None and self._fresh(entry):
                    return shared_fill(entry)
                wait_until = min(deadline, loop.time() + leases.ttl_s)
                try:
                    async with asyncio.timeout_at(wait_until):
                        got = await asyncio.shield(notice)
                except TimeoutError:
                    if loop.time() >= deadline:
                        raise DeadlineExceeded(f"The request's deadline passed while another replica filled "
                                               f"{action}.") from None
                    continue  # the holder may be gone: try to take the lease over
                if got.kind == "fail":
                    failure = failure_from_notice(got)
                    if failure.code == DeadlineExceeded.code and loop.time() < deadline:
                        continue  # the holder's own deadline passed, not ours: take the lease over
                    raise failure  # answered with this request's own id and Retry-After
                return shared_fill(Entry(got.status, got.body, self._wall(), got.content_type or JSON_TYPE,
                                         got.fresh_until, got.stale_until))
            finally:
                bus.forget(key, notice)

    async def refresh(self, key: str, run: RunFill, stale_before: float) -> bool:
        try:
            holder = await self.leases.acquire(key)
        except LeaseUnavailable:
            await run()  # Redis down: this process alone
            return True
        if not holder:  # another replica is filling or refreshing this key
            return False
        current = await self._lookup_shared(key)
        if current is not None and current.fresh_until > stale_before:
            await self.leases.release(key)  # refreshed elsewhere just now
            return False
        await self._holding_lease(key, run)
        return True

    async def _holding_lease(self, key: str, run: RunFill) -> Fill:
        """Fill while holding the key's lease: renewed every third of its TTL until the fill ends (a renewal that
        finds Redis down stops renewing), always released, and the result told to every replica."""
        leases, bus = self.leases, self.bus

        async def renew() -> None:
            while True:
                await asyncio.sleep(leases.ttl_s / 3)
                try:
                    await leases.renew(key)
                except LeaseUnavailable:
                    return

        renewer = asyncio.get_running_loop().create_task(renew())
        try:
            fill = await run()
        except GatewayError as exc:
            await bus.publish(failure_notice(key, bus.replica_id, exc))
            raise
        finally:
            renewer.cancel()
            await leases.release(key)
        await bus.publish(Notice("fill", key, bus.replica_id, fill.entry.status, fill.entry.body,
                                 fill.entry.content_type, fill.entry.fresh_until, fill.entry.stale_until))
        return fill

    def throttled(self, action: str) -> None:
        """Every replica's adaptive rate hears of the throttle. Not awaited: Redis may be slow, and the retry must
        not wait on it; nothing is told while shutting down."""
        bus = self.bus
        with contextlib.suppress(RuntimeError):
            self._owner.spawn(bus.publish(Notice("throttle", action, bus.replica_id)), name=f"throttle:{action}")
