"""The relay's proof: three client processes (two alpaca_nb streams found through the discovery
file, one official alpaca-py StockDataStream with url_override) stream through one relay from
one sandbox account, while the relay's upstream connections are killed every few seconds.

The sandbox confirms one data-stream connection; each client gets exactly its own symbols;
clients stay connected (the relay served exactly one connection per client) and get data again
after each reconnect; trade updates keep flowing and the alpaca_nb client's order book
reconciles the fills that happened while the relay's trade-updates connection was down.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from _relay_helpers import start_relay
from _stream_helpers import server_connections, wait_for
from _ws_proxy import WsProxy
from conftest import new_account

import alpaca_nb as anb
from alpaca_nb.sandbox import Sandbox
from alpaca_nb.stream import Reconnect

HERE = Path(__file__).resolve().parent
CYCLES = 4


class ClientProcess:
    """One _relay_client.py process and the JSON lines it prints."""

    def __init__(self, args: list[str], env: dict[str, str]):
        self.proc = subprocess.Popen([sys.executable, str(HERE / "_relay_client.py"), *args], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, bufsize=1)
        self.lines: queue.Queue = queue.Queue()
        self.data: list[tuple[float, dict[str, int]]] = []
        self.ready: dict | None = None
        self.book: dict | None = None
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            msg = json.loads(line)
            if msg["event"] == "data":
                self.data.append((msg["t"], msg["symbols"]))
            elif msg["event"] == "ready":
                self.ready = msg
            elif msg["event"] == "book":
                self.book = msg

    def symbols(self, since: float = 0.0) -> set[str]:
        return {s for t, counts in list(self.data) if t >= since for s in counts}

    def first_after(self, since: float, symbols: set[str]) -> float | None:
        """When every symbol of ``symbols`` had arrived after ``since`` (None: not yet)."""
        seen: set[str] = set()
        for t, counts in list(self.data):
            if t >= since:
                seen |= set(counts)
                if symbols <= seen:
                    return t
        return None

    def send(self, command: str) -> None:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send("quit")
                self.proc.wait(15)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()


@pytest.fixture
def world(relay_dir):
    """A sandbox of its own (so its connection counts are this test's), an account, a proxy on
    the trading path that can hold the trade-updates connection down, and a relay (in a
    session, at real speed: the market data follows NYSE sessions)."""
    with Sandbox(seed=7, start="2024-03-06T15:00:00Z") as sb:
        account = new_account(sb)
        with WsProxy(sb.url) as proxy:
            yield sb, account, proxy


def test_three_processes_through_one_relay_while_upstream_is_killed(world, relay_dir):
    sb, account, proxy = world
    relay = start_relay(account, discovery=True, settings=anb._config.resolve(
        base_url=proxy.url, data_url=sb.url, stream_url=sb.stream_url, key_id=account.key_id,
        secret_key=account.secret_key, env={"ALPACA_NB_RELAY": "off"}),
        reconnect=Reconnect(base=0.2, cap=1.0, conflict=2.0, ping_interval=2.0, stale_timeout=5.0))
    env = {**os.environ, "APCA_API_KEY_ID": account.key_id, "APCA_API_SECRET_KEY": account.secret_key,
           "APCA_API_BASE_URL": proxy.url, "APCA_API_DATA_URL": sb.url,
           "APCA_API_STREAM_URL": sb.stream_url, "ALPACA_NB_RELAY_DIR": str(relay_dir),
           "PYTHONPATH": str(HERE.parent)}
    env.pop("ALPACA_NB_RELAY", None)
    wants = {"one": {"AAPL", "MSFT"}, "two": {"NVDA", "AMD"}, "sdk": {"SPY", "AAPL"}}
    clients = {
        "one": ClientProcess(["anb", "AAPL,MSFT", "--trade-updates"], env),
        "two": ClientProcess(["anb", "NVDA,AMD"], env),
        "sdk": ClientProcess(["alpacapy", "SPY,AAPL", relay.url + "/v2/iex"], env),
    }
    rest = requests.Session()
    rest.headers.update({"APCA-API-KEY-ID": account.key_id, "APCA-API-SECRET-KEY": account.secret_key})
    try:
        for name, client in clients.items():
            wait_for(lambda c=client: c.ready, 60, what=f"client {name} to start")
        assert clients["one"].ready["relay"] == relay.url          # found by discovery
        assert clients["one"].ready["status"] == f"connected via relay {relay.url}"
        for name, client in clients.items():
            wait_for(lambda c=client, n=name: c.first_after(0, wants[n]), 60, what=f"{name}'s first data")
        # one account, one data connection and one trade-updates connection at the sandbox
        assert server_connections(sb) == {"data": 1, "trading": 1}
        assert relay.data["v2/iex"].source.server["quotes"] == {"AAPL", "MSFT", "NVDA", "AMD", "SPY"}

        data_upstream = relay.data["v2/iex"].source
        trading_upstream = relay.trading.source
        gaps, orders = [], []
        for cycle in range(CYCLES):
            time.sleep(2.0)
            connections = data_upstream.connections
            trading_connections = trading_upstream.connections
            # kill the data upstream at the sandbox, hold the trading one down at the proxy
            proxy.send("block")
            requests.post(f"{sb.url}/sandbox/streams/drop", json={"kind": "data"}, timeout=10,
                          headers={"APCA-API-KEY-ID": sb.key_id, "APCA-API-SECRET-KEY": sb.secret_key})
            # an order fills while the relay cannot hear about it
            resp = rest.post(f"{sb.url}/v2/orders", json={"symbol": "AAPL", "qty": "1", "side": "buy",
                                                          "type": "market", "time_in_force": "day"}, timeout=10)
            resp.raise_for_status()
            orders.append(resp.json()["id"])
            wait_for(lambda: rest.get(f"{sb.url}/v2/orders/{orders[-1]}", timeout=10).json()["status"] == "filled",
                     30, what="the order to fill")
            proxy.send("unblock")
            wait_for(lambda n=connections: data_upstream.connections > n, 60, what="the data upstream to reconnect")
            reconnected = time.time()
            wait_for(lambda n=trading_connections: trading_upstream.connections > n, 60,
                     what="the trading upstream to reconnect")
            for name, client in clients.items():
                t = wait_for(lambda c=client, n=name, r=reconnected: c.first_after(r, wants[n]), 60,
                             what=f"{name}'s data after reconnect {cycle + 1}")
                gaps.append(t - reconnected)
        # nobody ever saw another client's symbols, and nobody reconnected
        for name, client in clients.items():
            assert client.symbols() == wants[name], name
        assert relay.served == {"data": 3, "trading": 1}
        assert server_connections(sb) == {"data": 1, "trading": 1}
        # the order book of the alpaca_nb client knows every fill, missed events included
        one = clients["one"]

        def book_filled():
            one.book = None
            one.send("book")
            wait_for(lambda: one.book, 30, what="the order book")
            return all(one.book["orders"].get(oid) == "filled" for oid in orders)

        wait_for(book_filled, 60, what="the order book to reconcile")
        assert one.book["stats"]["data_connections"] == 1 and one.book["stats"]["trading_connections"] == 1
        assert one.book["stats"]["reconciliations"] >= 1 + CYCLES
        print(f"\nrelay proof: data again after each upstream reconnect within "
              f"max {max(gaps):.3f} s, median {sorted(gaps)[len(gaps) // 2]:.3f} s ({len(gaps)} samples)")
    finally:
        for client in clients.values():
            client.close()
        relay.stop()
