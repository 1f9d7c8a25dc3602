"""Helpers shared by the relay tests (not a test module): a relay for a sandbox account, raw
clients of it, and a real redis-server on a free loopback port."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass

import pytest
from _data_stream_client import AUTHENTICATED, CONNECTED, RawDataStream

from alpaca_nb import _config
from alpaca_nb.relay import Relay
from alpaca_nb.stream import Reconnect

FAST_RECONNECT = Reconnect(base=0.05, cap=0.5, conflict=2.0, ping_interval=2.0, stale_timeout=5.0)


def settings_for(account, stream_url: str | None = None) -> _config.Settings:
    """The relay's upstream settings for a sandbox account (no relay discovery)."""
    return _config.resolve(base_url=account.url, data_url=account.url,
                           stream_url=stream_url or account.stream_url, key_id=account.key_id,
                           secret_key=account.secret_key, env={"ALPACA_NB_RELAY": "off"})


def start_relay(account, **kw) -> Relay:
    kw.setdefault("port", 0)
    kw.setdefault("discovery", False)
    kw.setdefault("reconnect", FAST_RECONNECT)
    stream_url = kw.pop("stream_url", None)
    settings = kw.pop("settings", None) or (settings_for(account, stream_url) if account else None)
    return Relay(settings, **kw).start()


@dataclass
class Target:
    """What RawDataStream needs to reach a relay."""

    stream_url: str


def raw_client(relay: Relay, account, path: str = "/v2/iex", **kw) -> RawDataStream:
    """An authenticated raw data-stream client of the relay."""
    client = RawDataStream(Target(relay.url), path, **kw)
    assert client.recv() == CONNECTED
    assert client.auth(account) == AUTHENTICATED
    return client


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RedisServer:
    url: str
    port: int
    password: str | None


@pytest.fixture
def redis_server(tmp_path):
    """A real redis-server on a free loopback port, data in a temporary directory, with a
    password (so every test goes through AUTH)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (apt-get install redis-server)")
    port, password = free_port(), "relay-test-pw"
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path),
                             "--save", "", "--appendonly", "no", "--requirepass", password],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("redis-server did not start")
            time.sleep(0.05)
    try:
        yield RedisServer(f"redis://:{password}@127.0.0.1:{port}/0", port, password)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def relay_dir(tmp_path, monkeypatch):
    """Discovery files go to a temporary directory (never the user's runtime directory)."""
    folder = tmp_path / "relays"
    monkeypatch.setenv("ALPACA_NB_RELAY_DIR", str(folder))
    monkeypatch.delenv("ALPACA_NB_RELAY", raising=False)
    return folder


def env_without_keys() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("APCA_", "ALPACA_NB_RELAY"))}
