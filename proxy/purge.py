"""Purging cached answers by key or by tag, on every replica (Redis and each L1), and the CAMS audit
callback that purges the templates it names.

A purge deletes each key through the cache, so with Redis the entry leaves Redis first and every
replica's L1 then drops it on the invalidation notice (`proxy.cache.tiered`). A fill already in flight
when the purge runs may still store its answer afterwards: that answer was asked for before the purge
finished, which the caller cannot distinguish from asking just before the purge.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from proxy.cache.base import Cache
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


class Purger:
    def __init__(self, cache: Cache, index: TagIndex) -> None:
        self._cache = cache
        self._index = index

    @property
    def index(self) -> TagIndex:
        return self._index

    async def _delete(self, keys: Iterable[str]) -> list[str]:
        done = sorted(set(keys))
        for key in done:
            await self._cache.delete(key)
        return done

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

    async def purge(self, keys: Iterable[str] = (), tags: Mapping[str, Sequence[str]] | None = None) -> list[str]:
        """Delete ``keys`` and every key under ``tags``; the keys deleted (sorted)."""
        return await self._delete({*keys, *(await self.keys_for(tags or {}))})

    async def audit(self, events: Iterable[AuditEvent]) -> list[str]:
        """Purge what an audit callback names. Template events: the template's code (every language) within
        the spaces bound to its WABA, or, when no WABA answer has taught us those spaces yet, that code in
        every space. WABA events: the WABA's answers. Other types (phone updates) change no cached answer."""
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
