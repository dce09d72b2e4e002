"""Scale rows, part 2: RSS per cached entry at 10k and 100k entries, memory cache and tiered L1, and its section.

A real gateway (`bench.scale_server`) writes N entries into its own cache object once its resources are open, before
it serves, and reads VmRSS before and after (and after indexing the purge tags, without Redis).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from bench.common import QUICK
from bench.procs import Proc, Procs
from bench.scale_gateways import SHIPPED, Scaled, Template, budget_flags, expect_hits, flags_text, mib, start_scaled
from bench.scale_server import vm_rss

MEMORY_SIZES: Final = (5_000, 20_000) if QUICK else (10_000, 100_000)


@dataclass(frozen=True)
class MemoryRow:
    cache: str  # "memory" or "tiered"
    entries: int
    flags: tuple[str, ...]
    figures: dict[str, Any]
    #: VmRSS read by this process from /proc/PID/status once the server was ready.
    pid_rss: int
    command: str

    def _per(self, value: float) -> float:
        return value / self.entries

    @property
    def cache_per_entry(self) -> float:
        return self._per(self.figures["rss_cache"] - self.figures["rss_before"])

    @property
    def tags_per_entry(self) -> float:
        return self._per(self.figures["rss_after"] - self.figures["rss_cache"])

    @property
    def total_per_entry(self) -> float:
        return self._per(self.figures["rss_after"] - self.figures["rss_before"])

    @property
    def counted_per_entry(self) -> float:
        """Bytes per entry ``--memory-max-bytes`` counts (the answer cache's body bytes and the tag index)."""
        caches = self.figures["memory"]["caches"]
        tags = caches.get("tag_index", {}).get("used_bytes", 0)  # none in process with Redis
        return self._per(caches["cache"]["used_bytes"] + tags)


@dataclass(frozen=True)
class MemoryRun:
    rows: list[MemoryRow]
    checks: list[str]


def memory_row(scaled: Scaled, cache: str, template: Template) -> MemoryRow:
    pid_rss = vm_rss(scaled.proc.pid)
    figures = scaled.figures
    if figures["cache_entries"] != scaled.entries or figures["evictions"] or figures.get("tags_forgotten"):
        raise RuntimeError(f"{scaled.proc.name}: {figures['cache_entries']} entries held of {scaled.entries}, "
                           f"{figures['evictions']} evictions, {figures.get('tags_forgotten')} forgotten by tags")
    expect_hits(scaled.proc, scaled.entries, template.body)
    return MemoryRow(cache, scaled.entries, scaled.flags, figures, pid_rss, scaled.proc.command)


def run_memory(procs: Procs, simulator: Proc, redis: Proc, template: Template) -> MemoryRun:
    rows = []
    for cache in ("memory", "tiered"):
        for entries in MEMORY_SIZES:
            flags = (*SHIPPED, *budget_flags(entries, len(template.body), redis=cache == "tiered"))
            print(f"  {cache}, {entries:,} entries ...", flush=True)
            scaled = start_scaled(procs, f"scale-{cache}-{entries}", simulator, template, entries, flags,
                                  redis.url if cache == "tiered" else None)
            rows.append(memory_row(scaled, cache, template))
            procs.stop(scaled.proc)
    checks = ["each gateway held every entry it was given (`len` of its in-process cache), with no eviction and, "
              "in memory mode, no entry forgotten by the purge-tag index; a few paths answered `X-Cache: HIT` with "
              "their entry's body (after the RSS readings)",
              "VmRSS read by this process from `/proc/PID/status` once each server was ready matches the server's "
              "own last reading within "
              + f"{max(abs(r.pid_rss - r.figures['rss_after']) for r in rows) / 1024 / 1024:.1f} MiB"]
    return MemoryRun(rows, checks)


def memory_section(run: MemoryRun) -> list[str]:
    memory = [r for r in run.rows if r.cache == "memory"]
    tiered = [r for r in run.rows if r.cache == "tiered"]
    largest = max(memory, key=lambda r: r.entries)
    lines = [
        "### Memory per cached entry",
        "",
        f"**No numeric target: the figure is the result.** Memory cache at {largest.entries:,} entries: "
        f"**{largest.total_per_entry:,.0f} B per entry** with its purge tags, "
        f"{largest.total_per_entry / largest.counted_per_entry:.2f}× what `--memory-max-bytes` counts for it"
        + (f"; tiered L1 at {max(tiered, key=lambda r: r.entries).entries:,} entries: "
           f"**{max(tiered, key=lambda r: r.entries).total_per_entry:,.0f} B per entry**" if tiered else "") + ".",
        "",
        "A real gateway (`bench.scale_server`: `create_app` served by the gateway's runner) writes N entries into "
        "its own cache object once its resources are open, before it serves: the memory cache, or the tiered "
        "cache's own `set` (Redis `SET`, the L1, the bus notice) with `--redis-url` and the shipped "
        "`--l1-max-ttl-s 10`. Each entry is a template answer of the same shape and length, with its own template "
        "code (distinct bytes, distinct keys from `ReadThrough.key_for`). Without Redis each entry is also indexed "
        "under its purge tags (`space:…`, `template:…`) as a fill indexes it. VmRSS from `/proc/self/status` "
        "after a full `gc.collect()`: before the fill, after the cache writes, after the tags.",
        "",
        "| cache | entries | flags | RSS before | RSS after | RSS / entry: cache | + purge tags | total | body "
        "bytes | counted by `--memory-max-bytes` / entry | fill |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in run.rows:
        f = row.figures
        tags = f"{row.tags_per_entry:,.0f} B" if f["tags"] else "— (Redis holds them)"
        lines.append(f"| {row.cache} | {row.entries:,} | {flags_text(row.flags)} | {mib(f['rss_before'])} | "
                     f"{mib(f['rss_after'])} | {row.cache_per_entry:,.0f} B | {tags} | "
                     f"**{row.total_per_entry:,.0f} B** | {f['body_bytes']:,} | {row.counted_per_entry:,.0f} B | "
                     f"{f['fill_s']:.1f} s |")
    lines += [
        "",
        f"Reading: an entry costs its body plus about {largest.cache_per_entry - largest.figures['body_bytes']:,.0f} B "
        f"in the memory cache (the `Entry`, its key string, the LRU slot, the body's object header and malloc's "
        f"rounding) and {largest.tags_per_entry:,.0f} B more for its purge tags, so {largest.total_per_entry:,.0f} B "
        f"in all at {largest.entries:,} entries, against {largest.counted_per_entry:,.0f} B that `--memory-max-bytes` "
        f"counts (body bytes in the cache's share, the tag index's own estimate): the budget undercounts a "
        f"process's real footprint by about {largest.total_per_entry / largest.counted_per_entry:.2f}×."
        + (f" A tiered L1 entry costs {max(tiered, key=lambda r: r.entries).cache_per_entry:,.0f} B." if tiered
           else "")
        + " Without Redis the tag index, not the cache, binds first for answers with a template code of their own: "
        "its 1/8 share holds fewer entries than the cache's 3/4 (at the default 64 MiB, about 14,000 against "
        "27,000); the flags above are sized so both hold N (`budget_flags`).",
        "",
        "Checked:",
        "",
        *(f"- {check}" for check in run.checks),
        "",
    ]
    return lines
