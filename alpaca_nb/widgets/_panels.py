"""PositionsPanel, OrdersPanel and AccountCard: tables and figures that follow the stream.

Each refreshes from REST on its worker pool when the trade-updates stream reports something
(coalesced: a burst of fills is one refresh after the one in flight) and, for positions, prices
from the trades stream. Rows are ipywidgets (HTML cells and buttons); a row's cells are updated
in place, and the rows are rebuilt only when the set of positions or orders changes.
"""

from __future__ import annotations

import html
import logging
from decimal import Decimal
from typing import Any

import ipywidgets as w
import pandas as pd

from ..errors import OrderValidationError
from ._base import ConfirmBox, Panel, money, number, pct, price_ok, qty_text, tone

log = logging.getLogger("alpaca_nb.widgets")

_OPEN = {"new", "accepted", "pending_new", "partially_filled", "held", "pending_replace",
         "accepted_for_bidding", "pending_cancel"}


def _cell(text: str, *, width: str, left: bool = False, cls: str = "") -> w.HTML:
    cell = w.HTML(f'<span class="{cls}">{text}</span>', layout=w.Layout(width=width))
    cell.add_class("anb-cell")
    cell.add_class("anb-num")
    if left:
        cell.add_class("anb-cell-left")
    return cell


def _head(names: list[tuple[str, str]]) -> w.HBox:
    cells = [_cell(html.escape(n), width=wd, left=(i == 0)) for i, (n, wd) in enumerate(names)]
    row = w.HBox(cells)
    row.add_class("anb-head")
    return row


def _small_button(text: str, style: str = "", tooltip: str = "") -> w.Button:
    button = w.Button(description=text, button_style=style, tooltip=tooltip,
                      layout=w.Layout(width="auto", height="26px", margin="1px 2px"))
    button.add_class("anb-small-button")
    return button


def _show_rows(table: w.VBox, rows: list[w.Widget], empty: str) -> None:
    """Put new rows in the table (or a line saying it is empty) and close the old ones."""
    previous = table.children
    table.children = tuple(rows) or (w.HTML(f'<div class="anb-muted" style="padding:8px 6px">{empty}</div>'),)
    for child in previous:
        child.close()


def parse_close_amount(text: str) -> dict[str, Any]:
    """A row's close field: "" or "all" -> everything, "25%" -> percentage, "10" -> qty.

    Raises:
        OrderValidationError: not a number, not positive, or a percentage over 100.
    """
    raw = (text or "").strip().lower().replace(",", "")
    if raw in ("", "all"):
        return {}
    percent = raw.endswith("%")
    number_text = raw.rstrip("%").strip()
    try:
        value = Decimal(number_text)
    except ArithmeticError:
        raise OrderValidationError(f"Close: {text!r} is not an amount; type shares (10), a percentage (50%) or all") from None
    if not value.is_finite() or value <= 0:
        raise OrderValidationError(f"Close: {text!r} must be a positive amount")
    if percent:
        if value > 100:
            raise OrderValidationError(f"Close: {text!r} is more than 100%")
        return {"percentage": float(value)}
    return {"qty": float(value)}


# ------------------------------------------------------------------ positions

POSITION_COLUMNS = [("Symbol", "80px"), ("Qty", "70px"), ("Avg entry", "90px"), ("Last", "90px"),
                    ("Market value", "110px"), ("Unrealized P&L", "120px"), ("P&L %", "80px"),
                    ("Close", "170px")]


class PositionsPanel(Panel):
    """Open positions: qty, avg entry, last, market value, unrealized P&L in $ and % (green/red),
    a per-row Close (all, shares, or a percentage typed in the row's field) and Close all with a
    confirmation. Refreshes on fills (trade updates) and prices (trades).

    ``rows`` maps symbol -> the row's widgets; ``refresh()`` re-reads the positions.
    """

    def __init__(self, api: Any):
        self.table = w.VBox()
        self.close_all_button = _small_button("Close all", "danger", "close every position with market orders")
        self.close_all_button.on_click(lambda _: self.ask_close_all())
        self._confirm = ConfirmBox()
        self.summary = w.HTML()
        toolbar = w.HBox([self.summary, self.close_all_button],
                         layout=w.Layout(justify_content="space-between", align_items="center"))
        super().__init__(api, title="Positions", children=(toolbar, _head(POSITION_COLUMNS), self.table, self._confirm))
        self.rows: dict[str, dict[str, Any]] = {}
        self.frame = pd.DataFrame()
        self._stream = None
        self.refresh()
        self.run("Opening the stream", self._follow)

    def _follow(self) -> None:
        stream = self.open_stream(trade_updates=True)
        self._stream = stream
        stream.on("trade_update", lambda u: self.refresh() if u.get("event") in ("fill", "partial_fill") else None,
                  max_hz=4)
        stream.on("trade", self._on_trade, max_hz=2)
        self._resubscribe()

    def _resubscribe(self) -> None:
        stream = self._stream
        if stream is None:
            return
        held = set(self.rows)
        now = set(stream.subscriptions.get("trades", []))
        if held - now:
            stream.subscribe(trades=sorted(held - now))
        if now - held:
            stream.unsubscribe(trades=sorted(now - held))

    def _fetch_and_render(self) -> None:
        frame = self._api.positions()
        with self._lock:
            self.frame = frame
            if set(frame.index) != set(self.rows):
                self._rebuild(frame)
            for symbol in frame.index:
                self._render_row(symbol, frame.loc[symbol])
            self._render_summary()
        self._resubscribe()

    def _rebuild(self, frame: pd.DataFrame) -> None:
        rows: dict[str, dict[str, Any]] = {}
        children = []
        for symbol in frame.index:
            cells = [_cell(html.escape(symbol), width=POSITION_COLUMNS[0][1], left=True, cls="anb-title")]
            cells += [_cell("", width=wd) for _, wd in POSITION_COLUMNS[1:-1]]
            amount = w.Text(placeholder="all", layout=w.Layout(width="70px", height="26px"))
            button = _small_button("Close", "", f"close {symbol} (all, shares, or a percentage)")
            button.on_click(lambda _, s=symbol: self.close_position(s))
            row = w.HBox(cells + [w.HBox([amount, button], layout=w.Layout(width=POSITION_COLUMNS[-1][1]))])
            row.add_class("anb-row")
            rows[symbol] = {"row": row, "cells": cells, "amount": amount, "button": button}
            children.append(row)
        _show_rows(self.table, children, "No open positions.")
        self.rows = rows

    def _render_row(self, symbol: str, pos: pd.Series, last: float | None = None) -> None:
        row = self.rows.get(symbol)
        if row is None:
            return
        qty = float(pos["qty"])
        entry = float(pos["avg_entry_price"])
        price = last if last is not None else float(pos["current_price"])
        value = qty * price if last is not None else float(pos["market_value"])
        pl = (price - entry) * qty if last is not None else float(pos["unrealized_pl"])
        plpc = (price / entry - 1) * (1 if qty >= 0 else -1) if last is not None and entry else float(pos["unrealized_plpc"])
        texts = [qty_text(qty), number(entry), number(price), money(value),
                 f'<span class="{tone(pl)}">{money(pl, sign=True)}</span>',
                 f'<span class="{tone(plpc)}">{pct(plpc)}</span>']
        for cell, text in zip(row["cells"][1:], texts):
            if cell.value != text:
                cell.value = text

    def _render_summary(self) -> None:
        frame = self.frame
        if frame.empty:
            self.summary.value = '<span class="anb-muted">0 positions</span>'
            return
        pl = float(frame["unrealized_pl"].sum())
        self.summary.value = (f'<span class="anb-muted">{len(frame)} position(s) · market value </span>'
                              f'<b class="anb-num">{money(float(frame["market_value"].sum()))}</b>'
                              f'<span class="anb-muted"> · unrealized </span>'
                              f'<b class="anb-num {tone(pl)}">{money(pl, sign=True)}</b>')

    def _on_trade(self, trade: dict[str, Any]) -> None:
        symbol, price = trade.get("symbol"), trade.get("price")
        if not price_ok(price):
            return
        with self._lock:
            if symbol in self.rows and symbol in self.frame.index:
                self._render_row(symbol, self.frame.loc[symbol], last=float(price))

    # -- closing
    def close_position(self, symbol: str, *, confirmed: bool = False) -> bool:
        """What a row's Close does (the amount comes from the row's field). Returns True when a
        close was sent."""
        row = self.rows.get(symbol)
        if row is None:
            self.message.show(f"{symbol} is not an open position", "error")
            return False
        try:
            amount = parse_close_amount(row["amount"].value)
        except OrderValidationError as exc:
            self.message.show(str(exc), "error")
            return False
        what = ("all of " if not amount else f"{amount['percentage']:g}% of " if "percentage" in amount
                else f"{amount['qty']:g} shares of ") + symbol
        if self._api.mode == "live" and not confirmed:
            self._confirm.ask(f"Close {what} with a market order?", lambda: self.close_position(symbol, confirmed=True))
            return False
        row["button"].disabled = True
        self.message.show(f"Closing {what}…", "info")

        def done(order: Any) -> None:
            self.message.show(f"Close order for {what} sent (order {str(order.name)[:8]}, {order['status']})", "ok")

        future = self.run(f"Closing {symbol}", lambda: self._api.close_position(symbol, **amount), done)
        future.add_done_callback(lambda _: setattr(row["button"], "disabled", False))
        return True

    def ask_close_all(self) -> None:
        """What Close all does: asks for confirmation first."""
        n = len(self.rows)
        self._confirm.ask(f"Close all {n} position(s) and cancel open orders?", self.close_all)

    def close_all(self) -> None:
        """Close every position (cancelling open orders first), without asking."""
        self._confirm.hide()
        self.message.show("Closing all positions…", "info")

        def done(result: pd.DataFrame) -> None:
            failed = result[result["status"] >= 300] if "status" in result else result.iloc[0:0]
            if len(failed):
                self.message.show(f"{len(result) - len(failed)} closed, {len(failed)} failed: "
                                  + "; ".join(f"{s}: {m}" for s, m in failed["message"].items()), "error")
            else:
                self.message.show(f"Close orders sent for {len(result)} position(s)", "ok")

        self.run("Closing all positions", lambda: self._api.close_all_positions(cancel_orders=True), done)

    def __repr__(self) -> str:
        return f"<PositionsPanel {self._api.mode}>"


# ------------------------------------------------------------------ orders

ORDER_COLUMNS = [("Symbol", "110px"), ("Time", "70px"), ("Side", "45px"), ("Type", "80px"), ("Qty", "60px"),
                 ("Filled", "60px"), ("Price", "110px"), ("Status", "120px"), ("", "170px")]


class OrdersPanel(Panel):
    """Open and recent orders, bracket legs under their parent; per-row Cancel and Replace (new
    qty, limit or stop), Cancel all with confirmation; follows trade updates.

    ``rows`` maps order id -> the row's widgets; ``replace(order_id, ...)`` is what the Replace
    editor's Send does.
    """

    def __init__(self, api: Any, *, limit: int = 30):
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 500:
            raise ValueError(f"limit must be a number of orders between 1 and 500, got {limit!r}")
        self.limit = limit
        self.table = w.VBox()
        self.cancel_all_button = _small_button("Cancel all", "danger", "cancel every open order")
        self.cancel_all_button.on_click(lambda _: self.ask_cancel_all())
        self._confirm = ConfirmBox()
        self.editor = w.VBox()
        self.summary = w.HTML()
        toolbar = w.HBox([self.summary, self.cancel_all_button],
                         layout=w.Layout(justify_content="space-between", align_items="center"))
        super().__init__(api, title="Orders", children=(toolbar, _head(ORDER_COLUMNS), self.table, self.editor,
                                                        self._confirm))
        self.rows: dict[str, dict[str, Any]] = {}
        self.frame = pd.DataFrame()
        self._shape: tuple = ()
        self.refresh()
        self.run("Opening the stream", self._follow)

    def _follow(self) -> None:
        stream = self.open_stream(trade_updates=True)
        stream.on("trade_update", lambda _u: self.refresh(), max_hz=4)

    def _fetch_and_render(self) -> None:
        frame = self._api.orders(status="all", limit=self.limit, nested=True, tz="America/New_York")
        with self._lock:
            self.frame = frame
            shape = tuple(frame.index) + tuple(frame["status"])
            if shape != self._shape:
                self._shape = shape
                self._rebuild(frame)
            n_open = int(frame["status"].isin(_OPEN).sum())
            self.summary.value = f'<span class="anb-muted">{n_open} open · {len(frame)} shown</span>'

    def _rebuild(self, frame: pd.DataFrame) -> None:
        rows: dict[str, dict[str, Any]] = {}
        children = []
        for oid, order in frame.iterrows():
            leg = pd.notna(order.get("parent_id"))
            status = str(order["status"])
            price = " ".join(p for p in (
                f"L {number(order['limit_price'])}" if pd.notna(order["limit_price"]) else "",
                f"S {number(order['stop_price'])}" if pd.notna(order["stop_price"]) else "") if p) or "—"
            qty = qty_text(order["qty"]) if pd.notna(order["qty"]) else money(order["notional"])
            when = order["submitted_at"] if pd.notna(order["submitted_at"]) else order["created_at"]
            side_cls = "anb-up" if order["side"] == "buy" else "anb-down"
            name = ("&nbsp;&nbsp;└ " if leg else "") + html.escape(str(order["symbol"]))
            kind = str(order["type"]).replace("_", " ")
            if order.get("order_class") in ("bracket", "oco", "oto") and not leg:
                kind += f" · {order['order_class']}"
            status_cls = "anb-up" if status == "filled" else "anb-down" if status in ("rejected", "canceled", "expired") else ""
            cells = [_cell(name, width=ORDER_COLUMNS[0][1], left=True, cls="" if leg else "anb-title"),
                     _cell(when.strftime("%H:%M:%S") if pd.notna(when) else "—", width=ORDER_COLUMNS[1][1], cls="anb-muted"),
                     _cell(str(order["side"]).upper(), width=ORDER_COLUMNS[2][1], cls=side_cls),
                     _cell(html.escape(kind), width=ORDER_COLUMNS[3][1]),
                     _cell(qty, width=ORDER_COLUMNS[4][1]),
                     _cell(qty_text(order["filled_qty"]), width=ORDER_COLUMNS[5][1]),
                     _cell(price, width=ORDER_COLUMNS[6][1]),
                     _cell(status.replace("_", " "), width=ORDER_COLUMNS[7][1], cls=status_cls)]
            actions: list[w.Widget] = []
            entry: dict[str, Any] = {"order": order}
            if status in _OPEN:
                cancel = _small_button("Cancel", "", "cancel this order")
                cancel.on_click(lambda _, o=oid: self.cancel(o))
                actions.append(cancel)
                entry["cancel"] = cancel
                if not leg or order["type"] in ("limit", "stop", "stop_limit"):
                    replace = _small_button("Replace", "", "change qty or prices")
                    replace.on_click(lambda _, o=oid: self.open_editor(o))
                    actions.append(replace)
                    entry["replace"] = replace
            row = w.HBox(cells + [w.HBox(actions, layout=w.Layout(width=ORDER_COLUMNS[-1][1]))])
            row.add_class("anb-row")
            entry["row"] = row
            rows[str(oid)] = entry
            children.append(row)
        _show_rows(self.table, children, "No orders yet.")
        self.rows = rows

    # -- actions
    def cancel(self, order_id: str) -> None:
        """What a row's Cancel does."""
        entry = self.rows.get(order_id, {})
        if "cancel" in entry:
            entry["cancel"].disabled = True
        self.message.show(f"Canceling order {order_id[:8]}…", "info")
        self.run(f"Canceling order {order_id[:8]}", lambda: self._api.cancel_order(order_id),
                 lambda _: self.message.show(f"Cancel requested for order {order_id[:8]}", "ok"))

    def open_editor(self, order_id: str) -> None:
        """What a row's Replace does: an editor with the order's qty and prices."""
        order = self.rows[order_id]["order"]
        qty = w.Text(value=qty_text(order["qty"]) if pd.notna(order["qty"]) else "", layout=w.Layout(width="90px"))
        limit = w.Text(value=f"{order['limit_price']:.2f}" if pd.notna(order["limit_price"]) else "",
                       layout=w.Layout(width="100px"), disabled=pd.isna(order["limit_price"]))
        stop = w.Text(value=f"{order['stop_price']:.2f}" if pd.notna(order["stop_price"]) else "",
                      layout=w.Layout(width="100px"), disabled=pd.isna(order["stop_price"]))
        send = _small_button("Send", "primary")
        close = _small_button("Close")
        fields = {"qty": qty, "limit_price": limit, "stop_price": stop}

        def do_send(_: Any) -> None:
            changes = {k: f.value.strip() for k, f in fields.items() if not f.disabled and f.value.strip()}
            self.replace(order_id, **changes)

        send.on_click(do_send)
        close.on_click(lambda _: self._close_editor())
        row = w.HBox([w.HTML(f"<b>Replace {html.escape(str(order['symbol']))} {order_id[:8]}</b>"),
                      w.HTML("Qty"), qty, w.HTML("Limit"), limit, w.HTML("Stop"), stop, send, close],
                     layout=w.Layout(align_items="center", padding="6px 0"))
        self._close_editor()
        self.editor.children = (row,)
        self.editor_fields = fields
        self.editor_send = send

    def _close_editor(self) -> None:
        for child in self.editor.children:
            child.close()
        self.editor.children = ()

    def replace(self, order_id: str, **changes: Any) -> None:
        """Send a replacement (only the fields that differ from the order are sent)."""
        order = self.rows.get(order_id, {}).get("order")
        if order is not None:
            changes = {k: v for k, v in changes.items()
                       if not (pd.notna(order.get(k)) and _same(v, order.get(k)))}
        if not changes:
            self.message.show("Replace: change the qty, limit or stop price first", "error")
            return
        self.message.show(f"Replacing order {order_id[:8]}…", "info")

        def done(new: Any) -> None:
            self._close_editor()
            self.message.show(f"Order {order_id[:8]} replaced by {str(new.name)[:8]} ({new['status']})", "ok")
            self.refresh()

        self.run(f"Replacing order {order_id[:8]}", lambda: self._api.replace_order(order_id, **changes), done)

    def ask_cancel_all(self) -> None:
        n = int(self.frame["status"].isin(_OPEN).sum()) if not self.frame.empty else 0
        self._confirm.ask(f"Cancel all {n} open order(s)?", self.cancel_all)

    def cancel_all(self) -> None:
        """Cancel every open order, without asking."""
        self.message.show("Canceling all open orders…", "info")
        self.run("Canceling all orders", self._api.cancel_all_orders,
                 lambda r: self.message.show(f"Cancel requested for {len(r)} order(s)", "ok"))

    def __repr__(self) -> str:
        return f"<OrdersPanel {self._api.mode}>"


def _same(text: Any, value: Any) -> bool:
    try:
        return abs(float(str(text).replace(",", "")) - float(value)) < 1e-9
    except (TypeError, ValueError):
        return False


# ------------------------------------------------------------------ account

class AccountCard(Panel):
    """Equity, day P&L, cash and buying power, with the mode (SANDBOX / PAPER / LIVE, LIVE in
    red) always visible; refreshes on fills and with its ↻ button."""

    def __init__(self, api: Any):
        self.figures = w.HTML()
        self.refresh_button = _small_button("↻", "", "refresh")
        self.refresh_button.on_click(lambda _: self.refresh())
        super().__init__(api, title="Account", children=(w.HBox([self.figures, self.refresh_button],
                                                                layout=w.Layout(align_items="center",
                                                                                justify_content="space-between")),))
        self.account: pd.Series | None = None
        self.refresh()
        self.run("Opening the stream", self._follow)

    def _follow(self) -> None:
        stream = self.open_stream(trade_updates=True)
        stream.on("trade_update", lambda u: self.refresh() if u.get("event") in ("fill", "partial_fill") else None,
                  max_hz=2)

    def _fetch_and_render(self) -> None:
        account = self._api.account()
        equity, last = float(account["equity"]), float(account["last_equity"])
        day = equity - last
        day_pct = day / last if last else float("nan")
        items = [("Equity", money(equity), ""), ("Day P&L", f"{money(day, sign=True)} ({pct(day_pct)})", tone(day)),
                 ("Cash", money(float(account["cash"])), ""), ("Buying power", money(float(account["buying_power"])), "")]
        cells = "".join(f'<div style="min-width:150px"><div class="anb-muted" style="font-size:11px;'
                        f'text-transform:uppercase;letter-spacing:.4px">{k}</div>'
                        f'<div class="anb-card-figure anb-num {c}">{v}</div></div>' for k, v, c in items)
        self.figures.value = f'<div style="display:flex;gap:24px;flex-wrap:wrap">{cells}</div>'
        self.account = account
        self.message.clear()

    def __repr__(self) -> str:
        return f"<AccountCard {self._api.mode}>"

