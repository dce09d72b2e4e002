"""The buffered access log: every recorded line written once, in order, in structlog's shapes; a full buffer
drops and counts, never blocks the event loop; close writes the rest."""

from __future__ import annotations

import asyncio
import io
import os
import threading
from pathlib import Path

import orjson
from hypothesis import given
from hypothesis import strategies as st

from proxy import access_log
from proxy.access_log import (
    AccessLog,
    LineSink,
    chunks,
    render_console,
    render_console_slowly,
    render_json,
    render_json_slowly,
)
from proxy.metrics import Metrics

AT = 1_764_950_400.25  # 2025-12-05T16:00:00.25Z


@given(st.lists(st.text(alphabet="ab c", max_size=30), max_size=40), st.integers(min_value=1, max_value=64))
def test_chunks_cut_only_at_line_ends_and_lose_nothing(lines: list[str], limit: int) -> None:
    text = "".join(line + "\n" for line in lines)
    pieces = chunks(text, limit)
    assert "".join(pieces) == text
    for piece in pieces:
        assert piece.endswith("\n") or not text
        assert len(piece) <= limit or piece.count("\n") == 1  # only a single over-long line is longer


def test_lines_have_structlogs_fields_and_redact_credential_names() -> None:
    record = (AT, "req-1", "GET", "/v1/QueryChatappBindWaba", 200, 0.42,
              {"action": "QueryChatappBindWaba", "tenant": "checkout", "cache": "HIT", "token_hint": "x"})
    document = orjson.loads(render_json(record))
    assert document == {"request_id": "req-1", "method": "GET", "path": "/v1/QueryChatappBindWaba", "status": 200,
                        "duration_ms": 0.42, "action": "QueryChatappBindWaba", "tenant": "checkout",
                        "cache": "HIT", "token_hint": "***", "event": "request", "level": "info",
                        "timestamp": "2025-12-05T16:00:00.250000Z"}
    line = render_console(record)
    assert line.startswith("2025-12-05T16:00:00.250000Z [info     ] request ")
    assert "cache=HIT" in line and "status=200" in line and "tenant=checkout" in line and "token_hint=***" in line


INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)  # what orjson writes
RECORDS = st.tuples(
    st.floats(min_value=0, max_value=4e9), st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True),
    st.sampled_from(["GET", "POST", "PUT"]), st.text(max_size=40), st.integers(min_value=100, max_value=599),
    st.floats(min_value=0, max_value=1e7).map(lambda ms: round(ms, 2)),
    st.dictionaries(st.text(max_size=12), st.one_of(st.text(max_size=20), INT64, st.none()), max_size=5))


@given(st.lists(RECORDS, min_size=1, max_size=4))
def test_lines_from_a_kept_shape_are_the_lines_rendered_from_scratch(records: list[access_log.Record]) -> None:
    for record in records + records:  # the second time from the kept shapes
        assert render_json(record) == render_json_slowly(record)
        assert render_console(record) == render_console_slowly(record)
        assert orjson.loads(render_json(record))["request_id"] == record[1]


def test_the_kept_shapes_are_bounded() -> None:
    for i in range(access_log.MAX_SHAPES + 10):
        render_json((AT, "r", "GET", f"/path-{i}", 404, 0.1, {"code": "InvalidAction.NotFound"}))
    assert 0 < len(access_log._JSON_SHAPES) <= access_log.MAX_SHAPES


def test_a_batch_written_by_descriptor_reaches_a_file_and_a_pipe_whole_and_in_order(tmp_path: Path) -> None:
    text = "".join(f"line {i} {'x' * (i % 97)}\n" for i in range(400))  # about 25 KB, many PIPE_BUFs
    with (tmp_path / "log").open("w") as stream:
        LineSink(stream).write(text)
    assert (tmp_path / "log").read_text() == text
    read_end, write_end = os.pipe()
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.extend(iter(lambda: os.read(read_end, 65536), b"")))
    reader.start()
    with os.fdopen(write_end, "w") as stream:
        LineSink(stream).write(text)
    reader.join(10)
    os.close(read_end)
    assert b"".join(received).decode() == text


async def test_every_recorded_line_is_written_once_in_order() -> None:
    stream = io.StringIO()
    log = AccessLog(json_lines=True, sink=LineSink(stream))
    for i in range(5000):
        log.record(AT, f"r{i}", "GET", "/", 200, 1.0, {"cache": "HIT"})
        if i % 1000 == 0:
            await log.flush()
    await log.close()
    ids = [orjson.loads(line)["request_id"] for line in stream.getvalue().splitlines()]
    assert ids == [f"r{i}" for i in range(5000)]
    assert (log.written, log.dropped, log.buffered) == (5000, 0, 0)


class BlockedStream(io.StringIO):
    """A stream whose writes wait until released (a log reader that stopped reading)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.entered = threading.Event()

    def write(self, text: str) -> int:
        self.entered.set()
        self.release.wait(30)
        return super().write(text)


async def test_a_blocked_sink_fills_the_bound_then_drops_and_counts_without_blocking_the_loop() -> None:
    stream = BlockedStream()
    reports: list[tuple[int, int]] = []
    log = AccessLog(json_lines=False, sink=LineSink(stream), max_buffered=100,
                    report=lambda dropped, total: reports.append((dropped, total)))
    log.record(AT, "first", "GET", "/", 200, 1.0, {})
    flushing = asyncio.create_task(log.flush())  # the writer thread now waits inside the stream
    await asyncio.to_thread(stream.entered.wait, 10)
    ticks = 0
    for i in range(250):  # the event loop keeps running while the sink is blocked
        log.record(AT, f"r{i}", "GET", "/", 200, 1.0, {})
        await asyncio.sleep(0)
        ticks += 1
    assert ticks == 250 and not flushing.done()
    assert (log.buffered, log.dropped) == (100, 150)
    stream.release.set()
    await flushing
    await log.close()
    assert (log.written, log.dropped) == (101, 150)  # the first line and the 100 that fitted
    assert reports and reports[-1][1] == 150 and sum(dropped for dropped, _ in reports) == 150
    assert len(stream.getvalue().splitlines()) == 101
    metrics = Metrics(tenants=())
    metrics.count_access_log_dropped(log.dropped)
    metrics.count_access_log_dropped(log.dropped)  # a running total: counted once
    assert "cams_proxy_access_log_dropped_total 150.0" in metrics.exposition().decode()
