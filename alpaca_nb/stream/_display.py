"""Live tables in notebook cells, updated in place from the fan-out thread.

How output from a background thread reaches the right cell changed under us: ipykernel 7.0 made
the parent header (which tells the front end which cell a message belongs to) a per-thread
context variable, so output from a thread that never set one went out without a parent and was
dropped (ipykernel #1450; 7.x later fell back to "the latest cell" again, #1451, and added
``set_thread_parent``, #1546). ipykernel 6 always stamps thread output with the latest cell.
Neither is right for a table that keeps updating after other cells ran. So the cell's parent
header is captured on the main thread when ``show()`` runs, and every update is sent with that
parent explicitly, through the kernel session onto the IOPub socket (``kernel.iopub_socket`` is
ipykernel's thread-safe ``BackgroundSocket`` in both 6 and 7: sends are queued to the IOPub thread).
This touches no global or thread-local parent state, so it cannot misroute other output.
"""

from __future__ import annotations

import html
import logging
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

from ._fanout import Changes, Listener

log = logging.getLogger("alpaca_nb.stream")

DEFAULT_COLUMNS = ("bid_price", "bid_size", "ask_price", "ask_size", "last_price", "last_size",
                   "bar_close", "bar_volume", "status_code", "updates", "updated_at")
MAX_ROWS = 200


class KernelChannel:
    """Sends display messages belonging to one notebook cell, from any thread."""

    def __init__(self, session: Any, socket: Any, topic: bytes, parent: dict[str, Any]):
        self._session = session
        self._socket = socket
        self._topic = topic
        self.parent = parent

    @classmethod
    def for_current_cell(cls) -> KernelChannel | None:
        """The channel of the cell being executed, or None outside a Jupyter kernel."""
        try:
            from IPython import get_ipython
        except ImportError:
            return None
        shell = get_ipython()
        pub = getattr(shell, "display_pub", None)
        session, socket = getattr(pub, "session", None), getattr(pub, "pub_socket", None)
        if session is None or socket is None:
            return None
        getter = getattr(shell, "get_parent", None)
        parent = getter() if callable(getter) else getattr(shell, "parent_header", None)
        if not parent:
            kernel = getattr(shell, "kernel", None)
            getter = getattr(kernel, "get_parent", None)
            parent = getter("shell") if callable(getter) else None
        topic = getattr(pub, "topic", b"display_data")
        return cls(session, socket, topic if isinstance(topic, bytes) else b"display_data", dict(parent or {}))

    def send(self, msg_type: str, data: dict[str, str], display_id: str) -> None:
        content = {"data": data, "metadata": {}, "transient": {"display_id": display_id}}
        self._session.send(self._socket, msg_type, content, parent=self.parent, ident=self._topic)


class LiveDisplay(Listener):
    """One displayed table: re-rendered when its rows or the stream's status change, at most
    ``max_hz`` times per second. ``stop()`` freezes it."""

    def __init__(self, stream: Any, table: Any, channel: KernelChannel | None, *, max_hz: float,
                 columns: Sequence[str] | None):
        super().__init__(None, max_hz, stream)
        self.table = table
        self.channel = channel
        self.display_id = uuid.uuid4().hex
        self.columns = list(columns) if columns is not None else None
        self.types = frozenset(table._types)
        self._dirty = True
        self.updates = 0
        self._send_lock = threading.Lock()    # the last ("stopped") rendering is really the last
        self._finished = False
        self.fn = self._render_and_send

    # the Listener protocol
    def offer(self, changes: Changes) -> None:
        if self._dirty:
            return
        if changes.statuses:
            self._dirty = True
            return
        wants = [self.owner._wants(ch) for ch in self.table._channels]
        for t in self.types:
            for symbol in changes.market.get(t, ()):
                if any(w(symbol) for w in wants):
                    self._dirty = True
                    return

    def pending(self) -> bool:
        return self._dirty

    def deliver(self) -> None:
        self._dirty = False
        self._render_and_send()

    def _render_and_send(self, final: bool = False) -> None:
        with self._send_lock:
            if self._finished:
                return
            self._finished = final
            bundle = self.render(final=final)
            if self.channel is not None:
                self.channel.send("update_display_data", bundle, self.display_id)
                self.updates += 1

    # rendering
    def render(self, *, final: bool = False) -> dict[str, str]:
        frame = self.table.df
        if self.columns is not None:
            frame = frame[[c for c in self.columns if c in frame.columns]]
        elif self.table.channel is None:
            frame = frame[[c for c in DEFAULT_COLUMNS if c in frame.columns]]
        shown = frame.head(MAX_ROWS)
        status = "stopped" if final else str(self.owner.status)
        stamp = time.strftime("%H:%M:%S")
        more = f" · first {MAX_ROWS} of {len(frame)} rows" if len(frame) > MAX_ROWS else ""
        caption = f"alpaca_nb live · {status} · {stamp}{more}"
        body = shown.to_html(na_rep="", float_format=lambda v: f"{v:,.4f}".rstrip("0").rstrip("."),
                             border=0)
        return {"text/html": f'<div class="alpaca-nb-live"><div style="font-size:smaller;opacity:.7">'
                             f"{html.escape(caption)}</div>{body}</div>",
                "text/plain": f"{caption}\n{shown.to_string()}"}

    def stop(self) -> None:
        """Stop updating (the last rendering stays in the cell)."""
        self.cancel()
        with self._send_lock:
            self._finished = True

    def finish(self) -> None:
        """Final rendering (status "stopped"), then stop."""
        if not self.active:
            return
        self.cancel()
        try:
            self._render_and_send(final=True)
        except Exception:
            log.debug("final display update failed", exc_info=True)

    def __repr__(self) -> str:
        return f"<LiveDisplay {self.display_id[:8]} of {self.table!r}, {self.updates} update(s)>"


def show(stream: Any, table: Any, *, max_hz: float, columns: Sequence[str] | None) -> LiveDisplay:
    """Display ``table`` in the current cell and register its live updates on the fan-out.

    Raises:
        RuntimeError: not running under IPython (a plain script has no cell to update).
    """
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        get_ipython = None
    if get_ipython is None or get_ipython() is None:
        raise RuntimeError("show() displays a live table in a notebook cell and needs IPython/Jupyter; "
                           "in a script read stream.table.df or use stream.on(...) callbacks")
    channel = KernelChannel.for_current_cell()
    live = LiveDisplay(stream, table, channel, max_hz=max_hz, columns=columns)
    display(live.render(), raw=True, display_id=live.display_id)
    if channel is None:
        log.info("show(): not running in a Jupyter kernel; the table is displayed once, not updated")
        return live
    live._dirty = False
    stream._add_listener(live, ("data",))
    return live
