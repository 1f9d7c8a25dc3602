"""What every panel shares: a worker pool for REST calls, readable error lines, the mode badge,
the style sheet, and number formatting.

Threads: button handlers run on the kernel's shell thread, so they only read the panel, start
work on the panel's pool and return; the shell stays free for the next click (ipywidgets
#1349/#3468). Results and stream updates are written into display-only widgets (HTML labels)
from the worker or the stream's fan-out thread under the panel's lock; widgets the user types
into are never written from a thread, so an echo of the user's own edit cannot be lost. Widget
state changes go out as comm messages on ipykernel's thread-safe IOPub socket (6 and 7.x).
"""

from __future__ import annotations

import html
import logging
import math
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import ipywidgets as w

from ..errors import AlpacaError

log = logging.getLogger("alpaca_nb.widgets")

CSS = """
<style>
.anb-panel { font-family: var(--jp-ui-font-family, system-ui, sans-serif); font-size: 13px;
  color: var(--jp-ui-font-color1, #1f2328); background: var(--jp-layout-color1, #fff);
  border: 1px solid var(--jp-border-color2, #d0d7de); border-radius: 8px; padding: 10px 12px;
  box-shadow: 0 1px 2px rgba(0,0,0,.06); }
.anb-panel .widget-label, .anb-panel label { color: var(--jp-ui-font-color2, #57606a); font-size: 12px; }
.anb-title { font-weight: 600; font-size: 14px; letter-spacing: .2px; }
.anb-badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 11px;
  font-weight: 700; letter-spacing: .6px; vertical-align: middle; }
.anb-badge-sandbox { background: #dbeafe; color: #1e40af; }
.anb-badge-paper { background: #fef3c7; color: #92400e; }
.anb-badge-live { background: #dc2626; color: #fff; }
.anb-live-banner { background: #dc2626; color: #fff; font-weight: 700; text-align: center;
  border-radius: 4px; padding: 2px 0; letter-spacing: 1px; }
.anb-num { font-variant-numeric: tabular-nums; font-family: var(--jp-code-font-family, ui-monospace, monospace); }
.anb-muted { color: var(--jp-ui-font-color2, #57606a); }
.anb-up { color: #16a34a; } .anb-down { color: #dc2626; }
.anb-msg { min-height: 18px; font-size: 12px; }
.anb-msg .widget-html-content { line-height: 1.4; }
.anb-msg-error { color: #b91c1c; background: rgba(220,38,38,.08); border-left: 3px solid #dc2626;
  padding: 3px 8px; border-radius: 3px; }
.anb-msg-ok { color: #15803d; background: rgba(22,163,74,.08); border-left: 3px solid #16a34a;
  padding: 3px 8px; border-radius: 3px; }
.anb-msg-info { color: var(--jp-ui-font-color1, #1f2328); background: rgba(59,130,246,.08);
  border-left: 3px solid #3b82f6; padding: 3px 8px; border-radius: 3px; }
[data-jp-theme-light="false"] .anb-msg-ok, .vscode-dark .anb-msg-ok { color: #4ade80; }
[data-jp-theme-light="false"] .anb-msg-error, .vscode-dark .anb-msg-error { color: #fca5a5; }
.anb-side .widget-toggle-button { font-weight: 700; letter-spacing: .5px; }
.anb-side .widget-toggle-button:nth-child(1).mod-active { background: #16a34a; color: #fff; }
.anb-side .widget-toggle-button:nth-child(2).mod-active { background: #dc2626; color: #fff; }
.anb-submit-buy button, button.anb-submit-buy { background: #16a34a; color: #fff; font-weight: 700; }
.anb-submit-sell button, button.anb-submit-sell { background: #dc2626; color: #fff; font-weight: 700; }
button.anb-submit-buy:disabled, button.anb-submit-sell:disabled { opacity: .45; }
.anb-invalid input, .anb-invalid select { border-color: #dc2626 !important;
  box-shadow: 0 0 0 1px #dc2626 inset; }
.anb-quote { border-left: 1px solid var(--jp-border-color2, #d0d7de); padding-left: 12px; }
.anb-panel .widget-text, .anb-panel .widget-dropdown, .anb-panel .widget-combobox { width: 100%;
  margin: 0; box-sizing: border-box; }
.anb-panel .widget-toggle-buttons { margin: 0; }
.anb-panel .widget-toggle-buttons .widget-toggle-button { margin: 0 4px 0 0; }
.anb-kv td { padding: 3px 4px; white-space: nowrap; } .anb-kv td:first-child { color: var(--jp-ui-font-color2, #57606a); }
.anb-kv td:last-child { text-align: right; }
.anb-table { border-collapse: collapse; width: 100%; }
.anb-table th { text-align: right; font-weight: 600; font-size: 11px; text-transform: uppercase;
  letter-spacing: .4px; color: var(--jp-ui-font-color2, #57606a); padding: 3px 8px;
  border-bottom: 1px solid var(--jp-border-color2, #d0d7de); }
.anb-table td { text-align: right; padding: 3px 8px; border-bottom: 1px solid var(--jp-border-color3, #eaeef2); }
.anb-table th:first-child, .anb-table td:first-child { text-align: left; }
.anb-row { align-items: center; border-bottom: 1px solid var(--jp-border-color3, #eaeef2); }
.anb-row:hover { background: var(--jp-layout-color2, #f6f8fa); }
.anb-cell { padding: 0 6px; text-align: right; }
.anb-cell-left { text-align: left; }
.anb-head { font-weight: 600; font-size: 11px; text-transform: uppercase; letter-spacing: .4px;
  color: var(--jp-ui-font-color2, #57606a); border-bottom: 1px solid var(--jp-border-color2, #d0d7de); }
.anb-card-figure { font-size: 20px; font-weight: 600; }
.anb-panel .widget-hbox, .anb-panel .widget-vbox { gap: 6px; }
.anb-dashboard .widget-hbox, .anb-dashboard { gap: 12px; }
.anb-small-button button, button.anb-small-button { font-size: 11px; padding: 0 8px; height: 24px; }
</style>
"""

MODE_TEXT = {"sandbox": "SANDBOX", "paper": "PAPER", "live": "LIVE"}


def style_sheet() -> w.HTML:
    """The panels' CSS (one small HTML widget; displaying it twice is harmless)."""
    return w.HTML(CSS, layout=w.Layout(display="none"))


def mode_badge(mode: str) -> str:
    text = MODE_TEXT.get(mode, str(mode).upper())
    return f'<span class="anb-badge anb-badge-{html.escape(mode)}">{html.escape(text)}</span>'


def error_text(exc: BaseException) -> str:
    """One readable line for an exception (never a traceback, never a secret: the client's
    exceptions are already masked)."""
    if isinstance(exc, AlpacaError):
        status = f" (HTTP {exc.status})" if getattr(exc, "status", None) else ""
        message = getattr(exc, "message", None) or str(exc)
        return f"{message}{status}"
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, (ValueError, TypeError)) else f"{type(exc).__name__}: {text}"


def price_ok(value: Any) -> bool:
    """A usable price: a positive finite number (not None, NaN or 0)."""
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def money(value: Any, *, sign: bool = False, places: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    text = f"{abs(value):,.{places}f}"
    if sign:
        return ("+$" if value > 0 else "-$" if value < 0 else "$") + text
    return ("-$" if value < 0 else "$") + text


def number(value: Any, *, places: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if float(value).is_integer() and places == 0:
        return f"{value:,.0f}"
    return f"{value:,.{places}f}"


def qty_text(value: Any) -> str:
    """A quantity as typed: whole shares without decimals, fractions (crypto's 0.000015 BTC) to
    up to 9 places, trailing zeros dropped."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.9f}".rstrip("0")


def pct(value: Any, *, sign: bool = True) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value * 100:+.2f}%" if sign else f"{value * 100:.2f}%"


def tone(value: Any) -> str:
    """CSS class for a signed figure."""
    try:
        return "anb-up" if value > 0 else "anb-down" if value < 0 else ""
    except TypeError:
        return ""


class Message(w.HTML):
    """A one-line status or error message (thread-safe to set)."""

    def __init__(self) -> None:
        super().__init__("")
        self.add_class("anb-msg")
        self.kind = ""
        self.text = ""

    def show(self, text: str, kind: str = "info") -> None:
        self.kind, self.text = kind, text
        self.value = f'<div class="anb-msg-{kind}">{html.escape(text)}</div>' if text else ""

    def clear(self) -> None:
        self.show("")


class Panel(w.VBox):
    """Base of the panels: owns a small worker pool and the stream views it opens."""

    _pool_size = 2

    def __init__(self, api: Any, *, title: str, children: tuple[w.Widget, ...] = (), **kwargs: Any):
        if not hasattr(api, "submit_order") or not hasattr(api, "mode"):
            raise TypeError(f"the first argument must be the client from alpaca_nb.connect(), got {type(api).__name__}")
        self._api = api
        self._lock = threading.RLock()
        self._pool = ThreadPoolExecutor(max_workers=self._pool_size,
                                        thread_name_prefix=f"alpaca-nb-{type(self).__name__}")
        self._streams: list[Any] = []
        self._closing = False
        self._refreshing = False
        self._refresh_again = False
        self.message = Message()
        self.header = w.HTML(self._header_html(title))
        super().__init__(children=(style_sheet(), self.header) + tuple(children) + (self.message,), **kwargs)
        self.add_class("anb-panel")

    def _header_html(self, title: str) -> str:
        mode = self._api.mode
        banner = '<div class="anb-live-banner">LIVE TRADING · REAL MONEY</div>' if mode == "live" else ""
        return (f'{banner}<div style="display:flex;justify-content:space-between;align-items:center">'
                f'<span class="anb-title">{html.escape(title)}</span>{mode_badge(mode)}</div>')

    @property
    def api(self) -> Any:
        return self._api

    def run(self, what: str, fn: Callable[[], Any], done: Callable[[Any], None] | None = None) -> Future:
        """Run ``fn`` on the panel's pool; ``done(result)`` runs there too. An exception is shown
        as "``what`` failed: <message>" in the panel and logged at debug level."""
        def job() -> Any:
            try:
                result = fn()
                if done is not None:
                    done(result)
                return result
            except Exception as exc:      # shown to the user; the panel stays usable
                log.debug("%s failed", what, exc_info=True)
                if not self._closing:
                    self.message.show(f"{what} failed: {error_text(exc)}", "error")
                raise

        try:
            return self._pool.submit(job)
        except RuntimeError:             # the pool is shut down: the panel was closed
            future: Future = Future()
            future.set_exception(RuntimeError(f"{type(self).__name__} is closed"))
            return future

    def refresh(self) -> Future | None:
        """Fetch and redraw on the pool. Coalesced: a request while one runs makes exactly one
        more run after it (returns None then)."""
        with self._lock:
            if self._refreshing:
                self._refresh_again = True
                return None
            self._refreshing = True
        return self.run("Refreshing", self._refresh_loop)

    def _refresh_loop(self) -> None:
        while True:
            try:
                self._fetch_and_render()
            except BaseException:
                with self._lock:
                    self._refreshing = self._refresh_again = False
                raise
            with self._lock:
                if not self._refresh_again or self._closing:
                    self._refreshing = False
                    return
                self._refresh_again = False

    def _fetch_and_render(self) -> None:          # overridden by panels that refresh
        pass

    def open_stream(self, **kwargs: Any) -> Any:
        stream = self._api.stream(**kwargs)
        with self._lock:
            if self._closing:
                stream.close()
                raise RuntimeError(f"{type(self).__name__} is closed")
            self._streams.append(stream)
        return stream

    def close(self) -> None:
        """Stop the panel's streams and workers and close its widgets. Idempotent."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            streams, self._streams = self._streams, []
        for stream in streams:
            try:
                stream.close()
            except Exception:            # pragma: no cover - closing is best effort
                log.debug("closing a panel stream failed", exc_info=True)
        self._pool.shutdown(wait=False, cancel_futures=True)
        for child in self.children:
            child.close()
        super().close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._api.mode}>"


def confirm_row(text: str, on_yes: Callable[[], None], on_no: Callable[[], None], *,
                yes: str = "Confirm", danger: bool = True) -> w.HBox:
    """A "text [Confirm] [Cancel]" row."""
    label = w.HTML(f"<b>{html.escape(text)}</b>")
    ok = w.Button(description=yes, button_style="danger" if danger else "primary",
                  layout=w.Layout(width="auto"))
    cancel = w.Button(description="Cancel", layout=w.Layout(width="auto"))
    ok.on_click(lambda _: on_yes())
    cancel.on_click(lambda _: on_no())
    row = w.HBox([label, ok, cancel], layout=w.Layout(align_items="center"))
    row.add_class("anb-confirm")
    return row


class ConfirmBox(w.VBox):
    """Where a panel asks "text [Confirm] [Cancel]" before a destructive action."""

    def ask(self, text: str, action: Callable[[], Any]) -> None:
        """Show the question; Confirm hides it and runs ``action``, Cancel hides it."""
        self.children = (confirm_row(text, lambda: (self.hide(), action()), self.hide),)

    def hide(self) -> None:
        for child in self.children:
            child.close()
        self.children = ()
