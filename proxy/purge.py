"""Purging cached answers by key or by tag, on every replica (Redis and each L1), and the CAMS audit
callback that purges the templates it names.

A purge deletes each key through the cache, so with Redis the entry leaves Redis first and every
replica's L1 then drops it on the invalidation notice (`proxy.cache.tiered`). A fill already in flight
when the purge runs may still store its answer afterwards: that answer was asked for before the purge
finished, which the caller cannot distinguish from asking just before the purge.

A purge reports what it removed, not what it was asked for: each delete says whether an entry was there
(Redis's DEL count, or this replica's L1), so a key named twice, or a tag purged twice, counts once. Keys
found under a tag that hold nothing (the index keeps a key for a while after its entry leaves) are not
reported; keys named outright that hold nothing are (`PurgeResult.not_cached`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from proxy.cache.base import Cache, CacheError
from proxy.cache.tagindex import TagIndex
from proxy.tags import tag


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One element of a CAMS ``ChatAppAudit`` callback (only the fields the cache needs)."""

    waba_id: str
    template_code: str = ""
    kind: str = "template"  # V2's Type; V1 items are template audits


#: V2 event types that change a template answer, and those that change a WABA answer (cams-api.md §6).
TEMPLATE_EVENTS = frozenset({"template", "templateCategoryUpdate", "templateQualityUpdate"})
WABA_EVENTS = frozenset({"wabaReviewUpdate", "wabaAccountUpdate"})


@dataclass(frozen=True, slots=True)
class PurgeResult:
    """What a purge did. ``purged``: the keys whose entry it removed; ``not_cached``: the keys named outright
    (not found under a tag) that held no entry. Both sorted."""

    purged: list[str]
    not_cached: list[str]


class Purger:
    def __init__(self, cache: Cache, index: TagIndex) -> None:
        self._cache = cache
        self._index = index

    @property
    def index(self) -> TagIndex:
        return self._index

    async def _delete(self, keys: Iterable[str]) -> list[str]:
        """Delete every one of ``keys``; the keys that held an entry (sorted). If the cache could not be reached
        for some key, every other key is still deleted, then the first `CacheError` is raised."""
        removed: list[str] = []
        failure: CacheError | None = None
        for key in sorted(set(keys)):
            try:
                if await self._cache.delete(key):
                    removed.append(key)
            except CacheError as exc:
                failure = failure or exc
        if failure is not None:
            raise failure
        return removed

    async def keys_for(self, tags: Mapping[str, Sequence[str]]) -> set[str]:
        """The cached keys carrying any of ``tags`` ({"CustSpaceId": [...], "TemplateCode": [...],
        "WabaId": [...]}); a WABA id also covers every customer space it is bound to."""
        names: list[str] = []
        for kind, values in tags.items():
            for value in values:
                names.append(tag(kind, value))
                if kind == "WabaId":
                    names += [f"space:{space}" for space in await self._index.spaces(value)]
        return await self._index.keys(names)

    async def purge(self, keys: Iterable[str] = (), tags: Mapping[str, Sequence[str]] | None = None) -> PurgeResult:
        """Delete ``keys`` and every key under ``tags``: which entries were removed, and which of ``keys`` held
        none. Raises `CacheError` if the cache (or the tag index) could not be reached."""
        named = set(keys)
        removed = await self._delete(named | await self.keys_for(tags or {}))
        return PurgeResult(purged=removed, not_cached=sorted(named.difference(removed)))

    async def audit(self, events: Iterable[AuditEvent]) -> list[str]:
        """Purge what an audit callback names. Template events: the template's code (every language) within
        the spaces bound to its WABA, or, when no WABA answer has taught us those spaces yet, that code in
        every space. WABA events: the WABA's answers. Other types (phone updates) change no cached answer.
        The keys whose entry was removed (sorted)."""
        found: set[str] = set()
        for event in events:
            if event.kind in WABA_EVENTS:
                found |= await self._index.keys([f"waba:{event.waba_id}"])
                continue
            if event.kind not in TEMPLATE_EVENTS or not event.template_code:
                continue
            by_code = await self._index.keys([f"template:{event.template_code}"])
            spaces = await self._index.spaces(event.waba_id)
            if spaces:
                by_code &= await self._index.keys([*(f"space:{space}" for space in spaces),
                                                   f"waba:{event.waba_id}"])
            found |= by_code
        return await self._delete(found)
