"""The miss path under a WAN profile: the loopback backlog of `bench.miss`, with real time on every hop.

Every hop that crosses a network in production goes through its own network stand-in (``cams-proxy netem``,
docs/netem.md), a real process on loopback:

* **upstream**: gateway ──HTTPS──▶ stand-in ──TCP──▶ simulator. TLS terminated by the stand-in (the gateway
  trusts its generated CA with ``--upstream-ca-file``), 60 ms before each new connection's TLS handshake, 40 ± 10 ms
  one way, idle connections closed after 5 s: CAMS's Singapore endpoint from the same region. One stand-in for the
  single gateway, one shared by the replicas (they all call the same endpoint).
* **Redis** (replicas only): each replica ──TCP──▶ its own stand-in ──▶ one fresh redis-server, 60 ± 30 ms one way
  and 120 ms (one round trip) before a new connection's first byte, never idle-closed (Redis's own default,
  ``timeout 0``); the replicas run with ``--redis-timeout-s 1``.

The gateways run at the shipped defaults: δ adapts to the measured spread of answer times (here the path's
±10 ms each way: a one-way spread of 20 ms, plus the send guard), and each row notes δ after its run and the
ceiling by design 1 / (1 + δ). The simulator answers in a fixed 80 ms (`FIXED_SIMULATOR`), so the spread is the
path's. The Redis path's jitter does not enter δ: the shared budget's slots are moments on Redis's clock, turned
into local moments with the replica's estimate of that clock (`proxy.replica.clock`), not "when the
reply came".

Utilisation is `bench.miss`'s: (calls − 1) / span of the answers / cap. Behind a WAN an answer trails its upstream
call by the simulator's 80 ms, the way back's 40 ± 10 ms and, with replicas, Redis round trips over the
60 ± 30 ms path (storing the answer, releasing the lease), so these rows also stamp every call where it reaches
the simulator (`bench.tap`, a loopback relay between the stand-in and the simulator) and report the utilisation
of those arrivals too; the target verdict uses the arrivals' figure (`ActionResult.measured_utilisation`).

    BENCH_QUICK=1 .venv/bin/python -m bench.wan     # only these rows (20 + 30 misses), printed; writes nothing
    .venv/bin/python -m bench.wan                   # the same with the full 100 + 150 misses

`make bench` (bench/__main__.py) runs them after the loopback miss path, against the same simulator, and puts
all rows in one table (`miss_table`).
"""

from __future__ import annotations

import signal
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Final
from urllib.parse import urlsplit

import requests

from bench.common import QUICK, TEMPLATE
from bench.miss import MISS_GATEWAY_FLAGS, ActionResult, MissRun, learn, run_misses
from bench.procs import Netem, Proc, Procs
from bench.tap import ArrivalTap
from proxy.netem.settings import split_host_port


@dataclass(frozen=True)
class NetPath:
    """One stand-in's profile (both directions alike)."""

    tls: bool
    handshake_ms: float
    latency_ms: float
    jitter_ms: float
    idle_close_s: float

    def describe(self) -> str:
        idle = f"idle connections closed after {self.idle_close_s:g} s" if self.idle_close_s else "no idle close"
        setup = "before the TLS handshake" if self.tls else "before the first byte"
        return (f"{'TLS, ' if self.tls else 'plain TCP, '}{self.latency_ms:g} ± {self.jitter_ms:g} ms one way, "
                f"{self.handshake_ms:g} ms {setup} of each new connection, {idle}")


UPSTREAM_PATH: Final = NetPath(tls=True, handshake_ms=60, latency_ms=40, jitter_ms=10, idle_close_s=5)
REDIS_PATH: Final = NetPath(tls=False, handshake_ms=120, latency_ms=60, jitter_ms=30, idle_close_s=0)
#: The miss-path rows' simulator: a fixed 80 ms answer, so answer times (and δ) vary only with the path.
FIXED_SIMULATOR: Final = "simulator-fixed-latency"
REDIS_TIMEOUT_S: Final = 1
REPLICAS: Final = 3
TEMPLATE_MISSES: Final = 20 if QUICK else 100
WABA_MISSES: Final = 30 if QUICK else 150
#: Each stand-in's jitter seed is this plus its number, so a run's draws are reproducible.
SEED: Final = 1000
WAN_FLAGS: Final = MISS_GATEWAY_FLAGS
LABEL_SINGLE: Final = (f"WAN (TLS {UPSTREAM_PATH.handshake_ms:g} ms handshake, {UPSTREAM_PATH.latency_ms:g}"
                       f"±{UPSTREAM_PATH.jitter_ms:g} ms), 1 gateway")
LABEL_REPLICAS: Final = (f"WAN (TLS {UPSTREAM_PATH.handshake_ms:g} ms handshake, {UPSTREAM_PATH.latency_ms:g}"
                         f"±{UPSTREAM_PATH.jitter_ms:g} ms; Redis {REDIS_PATH.latency_ms:g}±{REDIS_PATH.jitter_ms:g} "
                         f"ms), {REPLICAS} replicas")


def _netloc(url: str) -> str:
    return urlsplit(url).netloc


def _stand_in(procs: Procs, name: str, target: str, path: NetPath, seed: int) -> Netem:
    return procs.netem(name, target, tls=path.tls, handshake_ms=path.handshake_ms, latency_ms=path.latency_ms,
                       jitter_ms=path.jitter_ms, idle_close_s=path.idle_close_s, seed=seed)


def _traffic(name: str, netem: Netem) -> str:
    """What went through a stand-in; raises when nothing did (the gateway would not have been behind it)."""
    stats = netem.stats()
    if not stats.get("accepted") or not stats.get("bytes_up") or not stats.get("bytes_down"):
        raise RuntimeError(f"{netem.proc.name}: no traffic went through the stand-in: {stats}")
    text = (f"{name}: {stats['accepted']} connections accepted, {stats['idle_closed']} idle-closed, "
            f"{int(str(stats['bytes_up'])):,} bytes up and {int(str(stats['bytes_down'])):,} down")
    failed = {key: stats.get(key) for key in ("tls_failed", "target_failed") if stats.get(key)}
    return text + (f", failures {failed}" if failed else "")


@dataclass
class Upstream:
    """The upstream path: the stand-in, the arrival tap behind it (in front of the simulator), the gateway's
    ``--upstream`` and its CA flag."""

    netem: Netem
    tap: ArrivalTap
    url: str
    ca_flags: tuple[str, ...]


def _budget(name: str, url: str) -> str:
    """What a replica's coordinator did with its shared slots (from ``/readyz``)."""
    try:
        redis = requests.get(f"{url}/readyz", timeout=5).json().get("redis", {})
    except (requests.RequestException, ValueError) as exc:
        return f"{name}: no /readyz ({type(exc).__name__})"
    clock = redis.get("redis_clock", {})
    return (f"{name}: {redis.get('shared_slots')} shared slots used, {redis.get('late_slots')} given up for a late "
            f"wake-up, {redis.get('late_replies')} for a late reply; Redis clock from {clock.get('samples')} samples, "
            f"best round trip {clock.get('best_rtt_ms')} ms")


def fixed_simulator(procs: Procs) -> Proc:
    """A simulator that answers in a fixed 80 ms (no processing jitter): what the miss-path rows run against."""
    return procs.simulator(FIXED_SIMULATOR, latency_ms=80, jitter_ms=0)


def margin_ms(url: str) -> float:
    """The gateway's δ now, ms (``/readyz``; one per process, the same for both actions)."""
    return float(requests.get(f"{url}/readyz", timeout=5).json()["queues"][TEMPLATE]["margin_ms"])


def clock_allowance_ms(url: str) -> float:
    """What a replica adds to the shared spacing for the replicas' estimates of Redis's clock, ms (``/readyz``:
    twice the error bound of its estimate, the fastest recent round trip to Redis; 0 without Redis)."""
    redis = requests.get(f"{url}/readyz", timeout=5).json().get("redis") or {}
    allowance = (redis.get("redis_clock") or {}).get("allowance_ms")
    return float(allowance) if allowance is not None else 0.0


def margins_note(urls: Sequence[str]) -> tuple[str, list[float], float]:
    """δ of each gateway after a run, and the ceiling by design, as a note; the δ values; and the widest clock
    allowance, ms (0 for one gateway). With replicas the shared slots are spaced ``(1 + δ)(1 + a)`` apart over the
    cap (``a``: the widest clock allowance), so the ceiling is ``1 / ((1 + δ)(1 + a))``."""
    values = [margin_ms(url) for url in urls]
    widest = max(values)
    if len(urls) == 1:
        return (f"δ after the run {values[0]:.1f} ms (ceiling by design 1 / (1 + δ) = "
                f"{1 / (1 + widest / 1000):.3f})", values, 0.0)
    allowances = [clock_allowance_ms(url) for url in urls]
    allowance = max(allowances)
    return (f"δ after the run {' / '.join(f'{v:.1f}' for v in values)} ms, clock allowance a "
            f"{' / '.join(f'{v:.1f}' for v in allowances)} ms (ceiling by design 1 / ((1 + δ)(1 + a)) = "
            f"{1 / ((1 + widest / 1000) * (1 + allowance / 1000)):.3f})", values, allowance)


def _spacing(r: ActionResult, margin_ms: float, allowance_ms: float = 0.0) -> str:
    """How the arrivals were spaced against the design interval T = (1 s + δ)(1 + a) / cap (``a``: the replicas'
    clock allowance), and slots left unused."""
    interval = (1 + margin_ms / 1000) * (1 + allowance_ms / 1000) / r.cap
    gaps = [later - earlier for earlier, later in zip(r.arrivals, r.arrivals[1:], strict=False)]
    if not gaps:
        return f"`{r.action}`: fewer than 2 arrivals stamped"
    unused = sum(round(gap / interval) - 1 for gap in gaps if gap > 1.5 * interval)
    ordered = sorted(gaps)
    return (f"`{r.action}` arrivals {ordered[0] * 1000:.0f}–{ordered[-1] * 1000:.0f} ms apart (median "
            f"{ordered[len(ordered) // 2] * 1000:.0f} ms, T = {interval * 1000:.0f} ms), {unused} slot"
            f"{'' if unused == 1 else 's'} left unused (gaps over 1.5 T)")


@contextmanager
def _upstream(procs: Procs, simulator: Proc, name: str, seed: int,
              path: NetPath = UPSTREAM_PATH) -> Iterator[Upstream]:
    tap = ArrivalTap(split_host_port(_netloc(simulator.url)))
    try:
        netem = _stand_in(procs, name, tap.start(), path, seed)
        if netem.ca is None:
            raise RuntimeError(f"{name} printed no ca= path: {netem.proc.log_tail()}")
        yield Upstream(netem, tap, f"https://{netem.listen}", ("--upstream-ca-file", str(netem.ca)))
    finally:
        tap.stop()


def wan_single(procs: Procs, simulator: Proc, *, templates: int = TEMPLATE_MISSES,
               wabas: int = WABA_MISSES) -> MissRun:
    """One fresh memory-cache gateway behind the upstream stand-in."""
    with _upstream(procs, simulator, "netem-upstream-wan", SEED) as up:
        gateway = procs.gateway("gateway-miss-wan", up.url, extra=(*WAN_FLAGS, *up.ca_flags))
        cold = learn(gateway.url, simulator.url, margin_ms)
        results = run_misses(gateway.url, simulator.url, templates=templates, wabas=wabas, arrivals=up.tap.arrivals)
        margin_note, (margin,), _allowance = margins_note([gateway.url])
        notes = (margin_note, cold.note(), *(_spacing(r, margin) for r in results),
                 _traffic("upstream stand-in", up.netem))
        procs.stop(gateway)
        procs.stop(up.netem.proc)
    return MissRun(1, results, [up.netem.command, gateway.command], LABEL_SINGLE, notes)


def wan_replicas(procs: Procs, simulator: Proc, *, replicas: int = REPLICAS, templates: int = TEMPLATE_MISSES,
                 wabas: int = WABA_MISSES) -> MissRun:
    """``replicas`` fresh gateways behind one upstream stand-in, each reaching one fresh redis-server through its
    own Redis stand-in; the misses spread round-robin."""
    with _upstream(procs, simulator, "netem-upstream-wan-replicas", SEED + 1) as up:
        redis = procs.redis("redis-wan")
        paths = [_stand_in(procs, f"netem-redis-wan-{n}", _netloc(redis.url), REDIS_PATH, SEED + 1 + n)
                 for n in range(1, replicas + 1)]
        gateways = [procs.gateway(f"gateway-miss-wan-replica-{n}", up.url, redis_url=f"redis://{path.listen}/0",
                                  extra=(*WAN_FLAGS, *up.ca_flags, "--redis-timeout-s", str(REDIS_TIMEOUT_S)))
                    for n, path in enumerate(paths, 1)]
        cold = learn([g.url for g in gateways], simulator.url, margin_ms)
        results = run_misses([g.url for g in gateways], simulator.url, templates=templates, wabas=wabas,
                             arrivals=up.tap.arrivals)
        margin_note, margins, allowance = margins_note([g.url for g in gateways])
        notes = (margin_note, cold.note(), *(_spacing(r, max(margins), allowance) for r in results),
                 _traffic("upstream stand-in", up.netem),
                 *(_traffic(f"Redis stand-in {n}", path) for n, path in enumerate(paths, 1)),
                 *(_budget(f"replica {n}", gateway.url) for n, gateway in enumerate(gateways, 1)))
        for proc in (*reversed(gateways), *(p.proc for p in reversed(paths)), redis, up.netem.proc):
            procs.stop(proc)
    commands = [up.netem.command, redis.command, *(p.command for p in paths), *(g.command for g in gateways)]
    label = LABEL_REPLICAS if replicas == REPLICAS else LABEL_REPLICAS.replace(f"{REPLICAS} replicas",
                                                                               f"{replicas} replicas")
    return MissRun(replicas, results, commands, label, notes)


def run_wan(procs: Procs, simulator: Proc, *, templates: int = TEMPLATE_MISSES,
            wabas: int = WABA_MISSES) -> list[MissRun]:
    """Both WAN rows, one gateway then `REPLICAS` replicas, against ``simulator`` (direct, for reset and stats)."""
    print(f"miss path under a WAN profile, one gateway ({templates} + {wabas} misses at once) ...", flush=True)
    single = wan_single(procs, simulator, templates=templates, wabas=wabas)
    print(f"miss path under a WAN profile, {REPLICAS} replicas ({templates} + {wabas} misses at once) ...",
          flush=True)
    return [single, wan_replicas(procs, simulator, templates=templates, wabas=wabas)]


# ----------------------------------------------------------------------------------- the report


def _met(met: bool) -> str:
    return "yes" if met else "**no**"


def miss_table(runs: Sequence[MissRun]) -> list[str]:
    """One Markdown table of every miss-path run, loopback and WAN, one row per (run, action)."""
    lines = [
        "| path, gateways | action | misses sent (per gateway) | upstream calls | throttled | max in any 1 s / cap | "
        "span first→last answer | calls/s | utilisation | utilisation from arrivals | target met | last answer "
        "after | answers |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | :---: | ---: | --- |",
    ]
    for run in runs:
        for r in run.results:
            answers = ", ".join(f"{code or '?'} {n}" for code, n in r.answers.items())
            sent = f"{r.sent} ({' + '.join(map(str, r.per_gateway))})" if run.replicas > 1 else str(r.sent)
            tapped = r.arrival_utilisation
            lines.append(f"| {run.label} | `{r.action}` | {sent} | {r.upstream_calls} | {r.throttled} | "
                         f"{r.max_in_any_1s} / {r.cap} | {r.span_s:.2f} s | {r.calls_per_s:.2f} | "
                         f"{r.utilisation:.3f} | {'—' if tapped is None else f'{tapped:.3f}'} | {_met(run.met(r))} | "
                         f"{r.wall_s:.2f} s | {answers} |")
    return lines


def profile_text(replicas: int = REPLICAS) -> str:
    """What the WAN rows are, for the report."""
    return (
        f"The WAN rows put every network hop through its own network stand-in (`cams-proxy netem`, "
        f"docs/netem.md), a real process on loopback. Upstream: the gateway calls the simulator over HTTPS through "
        f"one stand-in ({UPSTREAM_PATH.describe()}; the gateway trusts the stand-in's generated CA with "
        f"`--upstream-ca-file`), a fresh one per row, shared by the {replicas} replicas. Redis: each replica "
        f"reaches one fresh redis-server through its own stand-in ({REDIS_PATH.describe()}) with "
        f"`--redis-timeout-s {REDIS_TIMEOUT_S}`. Every row runs at the shipped defaults: δ adapts to the measured "
        "spread of answer times (on the WAN rows, the upstream path's jitter plus the send guard; the simulator of "
        "these rows answers in a fixed 80 ms, so the spread is the path's), and each row's notes give δ after the "
        "run and the ceiling by design, 1 / (1 + δ), and for replicas 1 / ((1 + δ)(1 + a)) with the clock allowance "
        "a (about the fastest round trip to Redis: some 65 ms on this Redis path, docs/architecture.md). The Redis "
        "path's jitter does not enter δ: a shared slot is a "
        "moment on Redis's clock, turned into a local moment with the replica's estimate of that clock, not the "
        "moment its reply arrived. "
        "*Utilisation* is computed as for the loopback rows, from the client's answers; behind a WAN an answer "
        f"trails its upstream call by the simulator's 80 ms, the way back's {UPSTREAM_PATH.latency_ms:g} ± "
        f"{UPSTREAM_PATH.jitter_ms:g} ms and, for replicas, Redis round trips (storing the answer, releasing the "
        "fill lease) over the jittery Redis path, so over a short backlog that span can be hundreds of ms off. The "
        "WAN rows therefore also stamp every call where it reaches the simulator (`bench/tap.py`: a plain TCP relay "
        "on loopback between the stand-in and the simulator, reading `x-acs-action`): *utilisation from arrivals* "
        "= (calls − 1) / (last arrival − first) / cap, and *target met* uses it where there is one."
    )


def notes_text(runs: Sequence[MissRun]) -> str:
    """How each WAN row's arrivals were spaced and what went through its stand-ins (their ``/__net/stats``)."""
    return " ".join(f"{run.label}: " + "; ".join(run.notes) + "." for run in runs if run.notes)


def reading_text(runs: Sequence[MissRun]) -> str:
    """One sentence per WAN row for the report's reading."""
    def one(run: MissRun) -> str:
        figures = " and ".join(f"{a.measured_utilisation:.3f} of the {a.cap}/s cap for `{a.action}` from arrivals "
                               f"({a.utilisation:.3f} from answers; {a.throttled} throttled, `max_in_any_1s` "
                               f"{a.max_in_any_1s})" for a in run.results)
        failed = [f"`{a.action}`" for a in run.results if not run.met(a)]
        verdict = "meets the target" if not failed else "does **not** meet the target for " + ", ".join(failed)
        return f"{run.label}: {figures}, which {verdict}"

    return ("*Under a WAN profile* (shipped defaults, δ adaptive; see each row's notes for δ and the ceiling): "
            + "; ".join(one(run) for run in runs) + ".")


def summary(runs: Sequence[MissRun]) -> str:
    rows: list[str] = []
    for run in runs:
        rows.append(f"miss path, {run.label}:")
        for r in run.results:
            tapped = r.arrival_utilisation
            rows.append(f"  {r.action:<26} {r.upstream_calls} calls, {r.calls_per_s:.2f}/s of cap {r.cap} = "
                        f"{r.utilisation:.3f} (from arrivals: {'-' if tapped is None else f'{tapped:.3f}'}), "
                        f"throttled {r.throttled}, max_in_any_1s {r.max_in_any_1s}, "
                        f"answers {r.answers}: {'met' if run.met(r) else 'NOT MET'} "
                        f"(>= {run.target}, 0 throttled, <= cap)")
        rows += [f"  {note}" for note in run.notes]
    return "\n".join(rows)


def _stop_on_signal(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"stopped by signal {signal.Signals(signum).name}")


def main() -> None:
    """Only the WAN rows, against a fresh simulator: printed, nothing written."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop_on_signal)
    with tempfile.TemporaryDirectory(prefix="cams-bench-wan-") as tmp, Procs(Path(tmp)) as procs:
        try:
            simulator = fixed_simulator(procs)
            runs = run_wan(procs, simulator)
        except BaseException:
            for proc in procs.started:
                print(f"--- {proc.name} (pid {proc.pid}): {proc.command}\n{proc.log_tail()}", file=sys.stderr)
            raise
    print()
    if QUICK:
        print("BENCH_QUICK=1: a shortened run to check the harness; its numbers are not for reading.\n")
    print(summary(runs))
    print()
    print(profile_text())
    print()
    print("\n".join(miss_table(runs)))
    print()
    print("\n".join(["```sh", simulator.command, *(c for run in runs for c in run.commands), "```"]))


if __name__ == "__main__":
    main()
