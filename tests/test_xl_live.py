"""The live quote writer through its range-writer interface: a real in-process target that
records every write, fed by a real sandbox stream flooding quotes."""

from __future__ import annotations

import threading
import time

import pytest
from conftest import poll

import alpaca_nb as anb
from alpaca_nb import xl
from alpaca_nb.sandbox import Sandbox
from alpaca_nb.stream import open_hubs

SYMBOLS = ["AAPL", "MSFT", "SPY"]


class RecordingRange:
    """A range that keeps what was written last (as cells do) and records every write."""

    def __init__(self):
        self.created_in = threading.current_thread()
        self.writes: list[tuple[float, list[list]]] = []
        self.closed_in: threading.Thread | None = None
        self.lock = threading.Lock()

    def write(self, values):
        with self.lock:
            self.writes.append((time.monotonic(), [list(r) for r in values]))

    def close(self):
        self.closed_in = threading.current_thread()

    @property
    def cells(self):
        with self.lock:
            return self.writes[-1][1] if self.writes else None


@pytest.fixture(scope="module")
def flood():
    with Sandbox(seed=7, quote_rate=2000) as sb:
        yield sb


@pytest.fixture
def api(flood):
    client = anb.connect(sandbox=flood)
    yield client
    xl.stop_quotes()
    client.close()


def test_the_writer_writes_whole_tables_at_the_bound_from_its_own_thread(api):
    targets: list[RecordingRange] = []

    def factory():
        targets.append(RecordingRange())
        return targets[-1]

    writer = xl.start_quotes(SYMBOLS, target=factory, max_hz=4.0)
    assert poll(lambda: len(targets[0].writes) if targets else 0, lambda n: n >= 6, timeout=30) >= 6
    target = targets[0]
    assert target.created_in is writer._thread and target.created_in is not threading.current_thread()
    with target.lock:
        writes = list(target.writes)
    for _, values in writes:                      # one write per update: the whole table at once
        assert values[0] == ["symbol", "bid", "ask", "mid", "last", "bid_size", "ask_size", "quote_time"]
        assert [r[0] for r in values[1:]] == SYMBOLS
    times = [t for t, _ in writes]
    for i, start in enumerate(times):             # never more than 4 per second (+1 for a late one)
        assert sum(1 for t in times[i:] if t < start + 1.0) <= 4 + 1
    last = writes[-1][1]
    quote_columns = (1, 2, 3, 5, 6)               # bid, ask, mid, sizes ("last" needs a trade)
    assert all(isinstance(row[i], float) and row[i] > 0 for row in last[1:] for i in quote_columns)
    assert len({tuple(map(tuple, v[1:])) for _, v in writes}) > 1     # the values tick


def test_stop_ends_the_thread_promptly_and_leaves_the_last_values(api):
    target = RecordingRange()
    writer = xl.start_quotes(SYMBOLS, target=lambda: target, max_hz=10.0)
    poll(lambda: len(target.writes), lambda n: n >= 3, timeout=30)
    xl.stop_quotes()
    assert not writer.running and target.closed_in is writer._thread
    count, cells = len(target.writes), target.cells
    assert cells is not None and all(row[i] is not None for row in cells[1:] for i in (1, 2, 3, 5, 6, 7))
    time.sleep(0.5)                               # nothing more is written after the stop
    assert len(target.writes) == count and target.cells == cells


def test_stop_within_a_second(api):
    """The writer's own promise: stop() returns True when its thread ended within 1 s, even
    while it waits for its next slot (max_hz=1)."""
    target = RecordingRange()
    writer = xl.start_quotes(["AAPL"], target=lambda: target, max_hz=1.0)
    poll(lambda: len(target.writes), lambda n: n >= 1, timeout=30)
    assert writer.stop(timeout=1.0) is True


def test_the_writer_uses_the_process_shared_stream_and_a_restart_replaces_it(api):
    own = api.stream(quotes=["NVDA"])                 # another view on the same account
    try:
        hubs = len(open_hubs())
        targets: list[RecordingRange] = []

        def factory():
            targets.append(RecordingRange())
            return targets[-1]

        first = xl.start_quotes(SYMBOLS, target=factory)
        poll(lambda: len(targets[0].writes) if targets else 0, lambda n: n >= 1, timeout=30)
        assert len(open_hubs()) == hubs                # no second socket for the account
        second = xl.start_quotes(SYMBOLS, target=factory)   # the same target: the old writer stops
        assert not first.running and second.running and list(xl._writers.values()) == [second]
        xl.stop_quotes()
        assert not second.running and not xl._writers
        assert own.status.state == "connected" and len(open_hubs()) == hubs   # our view lives on
    finally:
        own.close()


def test_bad_arguments(api):
    with pytest.raises(ValueError, match="max_hz"):
        xl.start_quotes(["AAPL"], target=RecordingRange, max_hz=0)
    with pytest.raises(ValueError, match="symbols"):
        xl.start_quotes(["AA PL"], target=RecordingRange)
    assert not xl._writers


def test_a_target_that_fails_to_open_is_reported(api):
    def broken():
        raise OSError("no such workbook")

    writer = xl.start_quotes(["AAPL"], target=broken)
    assert poll(lambda: writer.running, lambda r: not r) is False
    assert isinstance(writer.error, OSError)
