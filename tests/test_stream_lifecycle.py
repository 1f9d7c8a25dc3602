"""Stream lifecycle: close() stops threads and sockets at once, context manager, interpreter
exit, and 100 open/close cycles leak no thread and no socket.

The sandbox runs in its own process here, so every TCP connection this process holds is the
client's own.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import psutil
import pytest
from _http_proxy import RecordingProxy
from _stream_helpers import FAST, wait_for
from conftest import new_account

import alpaca_nb as anb
from alpaca_nb.sandbox import Sandbox
from alpaca_nb.stream import open_hubs

KEY, SECRET = "SANDBOXKEYID", "sandbox-secret-key"


@pytest.fixture(scope="module")
def sandbox_process():
    proc = subprocess.Popen([sys.executable, "-m", "alpaca_nb.cli", "sandbox", "--port", "0",
                             "--log-level", "WARNING", "--start", "2024-03-04T14:30:00Z", "--speed", "60"],
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "listening on " in line, line
        yield line.split("listening on ")[1].split()[0]
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def api(sandbox_process):
    url = sandbox_process
    return anb.connect(base_url=url, data_url=url, stream_url="ws" + url[4:], key_id=KEY, secret_key=SECRET)


def _stream_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("alpaca-nb-") and "sandbox" not in t.name]


def _sockets(port: int) -> int:
    """This process's TCP connections to the sandbox."""
    return sum(1 for c in psutil.Process().net_connections(kind="tcp")
               if c.raddr and c.raddr.port == port and c.status != psutil.CONN_TIME_WAIT)


def test_close_stops_both_threads_and_the_socket(api, sandbox_process):
    s = api.stream(quotes=["AAPL"], trade_updates=True)
    hubs = [s._data, s._trading]
    threads = [h._thread for h in hubs] + [h.fanout._thread for h in hubs]
    assert all(t.is_alive() and t.daemon for t in threads)
    assert {t.name for t in threads} == {"alpaca-nb-data-socket", "alpaca-nb-data-fanout",
                                         "alpaca-nb-trading-socket", "alpaca-nb-trading-fanout"}
    s.close()
    # close() returns after joining them (it waits at most about a second)
    assert not any(t.is_alive() for t in threads)
    assert all(h.closed and h.status.stopped for h in hubs)
    assert not open_hubs()


@pytest.mark.parametrize("chore", ["/v2/orders", "/v2/stocks/quotes/latest"])
def test_after_close_no_thread_is_left_and_no_request_is_sent(chore):
    """close() while a REST chore (the order reconciliation, the table's refill) is failing and
    being retried: the threads are gone when close() returns, and the proxy in front of the
    REST API sees nothing after that."""
    with Sandbox(**FAST, chaos=f"503=1,scope={chore},methods=GET") as sb, RecordingProxy(sb.url) as proxy:
        account = new_account(sb)
        api = anb.connect(base_url=proxy.url, data_url=proxy.url, stream_url=account.stream_url,
                          key_id=account.key_id, secret_key=account.secret_key)
        s = api.stream(quotes=["AAPL"], trade_updates=True)
        hubs = [s._data, s._trading]
        threads = [h._thread for h in hubs] + [h.fanout._thread for h in hubs]
        wait_for(lambda: proxy.count("GET", chore), 10, "the chore's first request")
        s.close()
        assert not any(t.is_alive() for t in threads)
        sent = proxy.requests
        time.sleep(3)          # retries (the transport's within 0.5 s, the chore's within 0.5 s) would show
        assert proxy.requests == sent


def test_context_manager_closes(api):
    with api.stream(quotes=["AAPL"]) as s:
        hub = s._data
        assert s.status.connected
    assert s.closed and not hub._thread.is_alive() and not hub.fanout.alive


def test_a_hundred_open_close_cycles_leak_no_thread_and_no_socket(api, sandbox_process):
    port = int(sandbox_process.rsplit(":", 1)[1])
    warm = api.stream(quotes=["AAPL"], trade_updates=True)      # fills the REST connection pool
    warm.close()
    base_threads = set(threading.enumerate())
    for i in range(100):
        s = api.stream(quotes=["AAPL", "MSFT"], bars=["SPY"], trade_updates=(i % 2 == 0))
        if i % 10 == 0:
            s.on("quote", lambda q: None)
        s.close()
    assert not _stream_threads()
    # a leak is a thread that was not there before (threads of earlier tests may end meanwhile)
    assert not set(threading.enumerate()) - base_threads
    assert not open_hubs()
    # REST chores of streams that lived past CHORE_DELAY (a loaded machine) leave keep-alive
    # connections in the client's pool: closing the client closes them; stream sockets must be gone
    api.close()
    wait_for(lambda: _sockets(port) == 0, 10, "no socket left open")


def test_closing_at_interpreter_exit(sandbox_process):
    """A script that never calls close() still exits promptly, and cleanly."""
    url = sandbox_process
    script = textwrap.dedent(f"""
        import alpaca_nb as anb
        api = anb.connect(base_url={url!r}, data_url={url!r}, stream_url={"ws" + url[4:]!r},
                          key_id={KEY!r}, secret_key={SECRET!r})
        s = api.stream(quotes=["AAPL"], trade_updates=True)
        s.on("quote", lambda q: None)
        print("streaming", s.status)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert "streaming connected" in done.stdout
    assert "Traceback" not in done.stderr
