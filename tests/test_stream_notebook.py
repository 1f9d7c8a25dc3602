"""``stream.show()`` in a real Jupyter kernel, on ipykernel 7 (installed) and ipykernel 6 (a
virtual environment built once per machine by tests/_kernels.py).

The test drives the kernel with jupyter_client like a notebook front end would: a cell shows a
live table, the cell finishes, another cell runs, and ``update_display_data`` messages for the
table keep arriving on IOPub, stamped with the parent header of the cell that showed it (not the
latest cell, and not an empty one, which is what naive thread output gets on some ipykernel 7.x).
Finally a kernel restart must leave no stream connection behind on the server.
"""

from __future__ import annotations

import queue
import sys
import time

import pytest
from _stream_helpers import FAST, server_connections, wait_for
from conftest import new_account

from alpaca_nb.sandbox import Sandbox

pytest.importorskip("jupyter_client")
from _kernels import ipykernel6_python, start_kernel  # noqa: F401  (ipykernel6_python is a fixture)


@pytest.fixture(scope="module")
def sb():
    with Sandbox(**FAST) as server:
        yield server


class _IOPub:
    """Everything the kernel publishes, in order, with the time each message was read."""

    def __init__(self, kc):
        self.kc = kc
        self.messages: list[dict] = []

    def pump(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return
            try:
                self.messages.append(self.kc.get_iopub_msg(timeout=left))
            except queue.Empty:
                return

    def execute(self, code: str, timeout: float = 60) -> str:
        msg_id = self.kc.execute(code)
        end = time.monotonic() + timeout
        while True:
            msg = self.kc.get_iopub_msg(timeout=max(0.1, end - time.monotonic()))
            self.messages.append(msg)
            if (msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "status"
                    and msg["content"]["execution_state"] == "idle"):
                break
        reply = self.kc.get_shell_msg(timeout=timeout)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = self.kc.get_shell_msg(timeout=timeout)
        if reply["content"]["status"] != "ok":
            raise AssertionError("cell failed: " + "\n".join(reply["content"].get("traceback", [])))
        return msg_id

    def of(self, msg_type: str, after: int = 0) -> list[dict]:
        return [m for m in self.messages[after:] if m["msg_type"] == msg_type]

    def text(self, parent: str) -> str:
        return "".join(m["content"].get("text", "") for m in self.messages
                       if m["msg_type"] == "stream" and m["parent_header"].get("msg_id") == parent)


@pytest.mark.parametrize("kernel", ["ipykernel7", "ipykernel6"])
def test_show_updates_the_cell_in_place_after_it_finished(kernel, sb, tmp_path, request):
    python = sys.executable if kernel == "ipykernel7" else request.getfixturevalue("ipykernel6_python")
    account = new_account(sb)
    km, kc = start_kernel(python, tmp_path)
    try:
        io = _IOPub(kc)
        shown = io.execute(f"""
import ipykernel, alpaca_nb as anb
print("ipykernel", ipykernel.__version__)
api = anb.connect(base_url={account.url!r}, data_url={account.url!r}, stream_url={account.stream_url!r},
                  key_id={account.key_id!r}, secret_key={account.secret_key!r})
s = api.stream(quotes=["AAPL", "MSFT"], bars=["SPY"])
live = s.show(max_hz=5)
from alpaca_nb.stream import live_table
bars = live_table(s.bars, max_hz=2)
""")
        major = io.text(shown).split("ipykernel ")[1].split(".")[0]
        assert major == ("7" if kernel == "ipykernel7" else "6")
        first = [m for m in io.of("display_data") if m["parent_header"].get("msg_id") == shown]
        assert len(first) == 2                        # the wide table and the bars table
        display_id = first[0]["content"]["transient"]["display_id"]
        bars_id = first[1]["content"]["transient"]["display_id"]
        assert bars_id != display_id

        # another cell runs and finishes; the table must keep updating in the first cell
        later = io.execute("import time; time.sleep(0.2); x = 2 + 2")
        mark = len(io.messages)
        deadline = time.monotonic() + 20
        while len(io.of("update_display_data", mark)) < 6 and time.monotonic() < deadline:
            io.pump(0.5)
        bar_updates = [m for m in io.of("update_display_data", mark)
                       if m["content"]["transient"]["display_id"] == bars_id]
        assert bar_updates and all("SPY" in m["content"]["data"]["text/html"] for m in bar_updates)
        updates = [m for m in io.of("update_display_data", mark)
                   if m["content"]["transient"]["display_id"] == display_id]
        assert len(updates) >= 4, f"only {len(updates)} display updates arrived after the cells finished"
        for msg in updates:
            assert msg["content"]["transient"]["display_id"] == display_id
            assert msg["parent_header"].get("msg_id") == shown != later     # routed to the showing cell
            html = msg["content"]["data"]["text/html"]
            assert "AAPL" in html and "MSFT" in html and "connected" in html
        assert "text/plain" in updates[-1]["content"]["data"]

        # closing the stream sends a last rendering that says so, and the updates stop
        io.execute("s.close()")
        io.pump(1.0)
        final = [m for m in io.of("update_display_data") if m["content"]["transient"]["display_id"] == display_id]
        assert "stopped" in final[-1]["content"]["data"]["text/html"]
        mark = len(io.messages)
        io.pump(1.0)
        assert not io.of("update_display_data", mark)

        # a kernel restart with a stream still open leaves no connection behind on the server
        io.execute("s2 = api.stream(quotes=['AAPL'], trade_updates=True); s2.show()")
        assert server_connections(sb)["data"] >= 1
        km.restart_kernel(now=True)
        wait_for(lambda: server_connections(sb) == {"data": 0, "trading": 0}, 20,
                 "the server to see the kernel's sockets close")
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
