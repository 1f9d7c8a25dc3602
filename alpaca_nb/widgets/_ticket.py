"""OrderTicket: a broker's order ticket in a notebook cell.

One ticket submission is one order. The ticket holds one client_order_id at a time; Submit
sends the ticket with that id, and the id is spent once the order is placed. A second click
(a double click's second message reaches the kernel before the button's disabled state reaches
the browser) or a re-run of ``ticket.submit()`` finds the submission in flight or already placed
and sends nothing. Changing any field, or pressing "New order", arms the ticket again with a new
id. A failed attempt keeps its id, so trying again cannot place a second order either (Alpaca
refuses a repeated client_order_id and the client reconciles a lost answer by that id).
"""

from __future__ import annotations

import html
import logging
import math
import re
import threading
import time
from decimal import Decimal, InvalidOperation
from typing import Any

import ipywidgets as w

from ..errors import OrderValidationError, PreTradeCheckError
from ..orders import (
    check_crypto_increments,
    new_client_order_id,
    order_body,
    order_choices,
)
from ._base import (
    Message,
    Panel,
    confirm_row,
    error_text,
    money,
    number,
    price_ok,
    qty_text,
)

log = logging.getLogger("alpaca_nb.widgets")

TYPES = (("Market", "market"), ("Limit", "limit"), ("Stop", "stop"), ("Stop limit", "stop_limit"),
         ("Trailing stop", "trailing_stop"))
TIF = (("Day", "day"), ("GTC", "gtc"), ("At the open (OPG)", "opg"), ("At the close (CLS)", "cls"),
       ("IOC", "ioc"), ("FOK", "fok"))
INCREMENTS = ("min_order_size", "min_trade_increment", "price_increment")
# argument names in the client's messages -> the ticket's labels, most specific first
LABELS = (("take_profit.limit_price", "Take profit"), ("stop_loss.stop_price", "Stop loss"),
          ("stop_loss.limit_price", "Stop loss"), ("take_profit", "Take profit"), ("stop_loss", "Stop loss"),
          ("limit_price", "Limit price"), ("stop_price", "Stop price"), ("trail_price", "Trail"),
          ("trail_percent", "Trail"), ("time_in_force", "Time in force"), ("extended_hours", "Extended hours"),
          ("notional", "Amount"), ("qty", "Qty"), ("symbol", "Symbol"), ("order_class", "Bracket"))
# a crypto pair's increments in a trader's words
WORDS = ((" (min_order_size)", ""), ("min_trade_increment", "quantity step"), ("price_increment", "price step"))
STATUS_RANK = {"pending_new": 1, "new": 1, "accepted": 1, "held": 1, "pending_replace": 2,
               "partially_filled": 3, "filled": 4, "canceled": 4, "expired": 4, "rejected": 4,
               "done_for_day": 4, "replaced": 4, "stopped": 4, "suspended": 4}
_ACTIVE = {"pending_new", "new", "accepted", "held", "partially_filled", "pending_replace"}


def _labelled(message: str) -> tuple[str, str]:
    """(the ticket field a client message is about, the message in the ticket's words)."""
    for _, label in LABELS:
        if message.startswith(label + ":"):
            return label, message
    hits = []
    for name, label in LABELS:
        found = re.search(rf"(?<![\w.]){re.escape(name)}(?![\w])", message)
        if found:
            hits.append((found.start(), label))
    field = min(hits)[1] if hits else ""          # the argument the message names first
    text = message
    for name, label in LABELS:
        text = re.sub(rf"(?<![\w.]){re.escape(name)}(?![\w])", label, text)
    for wire, words in WORDS:
        text = text.replace(wire, words)
    # a pair's increments: "Qty=0.00015 is not ...; e.g. Qty=0.0001" -> "Qty: 0.00015 is not ...; e.g. 0.0001"
    if field and text.startswith(field + "=") and ("step" in text or "minimum order size" in text):
        text = field + ": " + text[len(field) + 1:].replace(f"e.g. {field}=", "e.g. ")
    return field, text


def _number(text: str, label: str) -> Decimal | None:
    """A typed number ("1,000", "$25.50", " 3 ") or None when empty."""
    text = (text or "").strip().replace(",", "").replace("$", "").replace("%", "")
    if not text:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise OrderValidationError(f"{label}: {text!r} is not a number") from None
    if not value.is_finite():
        raise OrderValidationError(f"{label}: {text!r} is not a number")
    return value


def _field(label: str, widget: w.Widget, width: str = "100%") -> w.VBox:
    box = w.VBox([w.HTML(f'<span class="widget-label">{html.escape(label)}</span>'), widget],
                 layout=w.Layout(width=width, margin="0 0 4px 0"))
    widget.layout.width = "100%"
    return box


class OrderTicket(Panel):
    """An order ticket: Symbol, Buy/Sell, Qty or Amount, order type and its prices, time in
    force, extended hours, bracket legs; the live bid/ask/last, the estimated cost and the buying
    power left beside it; inline validation (the client's rules and its pre-trade guard); a
    confirmation step (always in live mode); a status line that follows the order.

    A crypto pair ("BTC/USD") gets crypto's choices: order types market, limit and stop_limit,
    time in force gtc (the default) or ioc, no extended hours or bracket, a fractional quantity
    in coins checked against the pair's minimum and increments.

    Args:
        api: the client (``alpaca_nb.connect()``).
        symbol: the symbol to start with (e.g. "AAPL"), or None.
        confirm: ask "Confirm / Cancel" before sending (default: only in live mode, where it is
            always on whatever this says).

    Attributes (for scripts and tests): ``symbol``, ``side``, ``amount_in``, ``qty``, ``order_type``,
    ``limit_price``, ``stop_price``, ``trail``, ``trail_in``, ``time_in_force``,
    ``extended_hours``, ``bracket``, ``take_profit``, ``stop_loss``, ``confirm`` (the widgets),
    ``submit_button``, ``new_button``, ``order`` (the placed order's Series or None),
    ``client_order_id`` (the id the next/current submission uses), ``status`` and ``problem``.
    """

    def __init__(self, api: Any, symbol: str | None = None, *, confirm: bool | None = None):
        if symbol is not None and not isinstance(symbol, str):
            raise TypeError(f"symbol must be a ticker such as 'AAPL' or None, got {type(symbol).__name__}")
        live = api.mode == "live"
        self.symbol = w.Combobox(value=(symbol or "").strip().upper(), placeholder="e.g. AAPL",
                                 options=[], ensure_option=False, continuous_update=False)
        self.side = w.ToggleButtons(options=[("Buy", "buy"), ("Sell", "sell")], value="buy",
                                    style=w.ToggleButtonsStyle(button_width="141px"))
        self.side.add_class("anb-side")
        self.amount_in = w.ToggleButtons(options=[("Shares", "qty"), ("Dollars", "notional")], value="qty",
                                         style=w.ToggleButtonsStyle(button_width="141px"))
        self.amount_in.add_class("anb-amount-in")
        self.qty = w.Text(placeholder="0", continuous_update=True)
        self.order_type = w.Dropdown(options=TYPES, value="market")
        self.limit_price = w.Text(placeholder="0.00")
        self.stop_price = w.Text(placeholder="0.00")
        self.trail = w.Text(placeholder="0.00")
        self.trail_in = w.ToggleButtons(options=[("$", "price"), ("%", "percent")], value="price",
                                        style=w.ToggleButtonsStyle(button_width="40px"))
        self.time_in_force = w.Dropdown(options=TIF, value="day")
        self.extended_hours = w.Checkbox(value=False, description="Extended hours", indent=False)
        self.bracket = w.Checkbox(value=False, description="Bracket: take profit + stop loss", indent=False)
        self.take_profit = w.Text(placeholder="limit price")
        self.stop_loss = w.Text(placeholder="stop price")
        self.confirm = w.Checkbox(value=bool(confirm) or live, description="Confirm before sending",
                                  indent=False, disabled=live)
        self.submit_button = w.Button(description="Buy", disabled=True, layout=w.Layout(width="100%", height="36px"))
        self.submit_button.add_class("anb-submit-buy")
        self.new_button = w.Button(description="New order", layout=w.Layout(width="100%", display="none"))
        self.problem = Message()
        self.status = Message()
        self.quote_box = w.HTML()

        self._boxes = {
            "Symbol": _field("Symbol", self.symbol), "Qty": _field("Qty", self.qty),
            "Amount": None, "Order type": _field("Order type", self.order_type),
            "Limit price": _field("Limit price", self.limit_price),
            "Stop price": _field("Stop price", self.stop_price),
            "Trail": _field("Trail", w.HBox([self.trail, self.trail_in])),
            "Time in force": _field("Time in force", self.time_in_force),
            "Take profit": _field("Take profit", self.take_profit, "49%"),
            "Stop loss": _field("Stop loss", self.stop_loss, "49%"),
        }
        self._boxes["Trail"].children[1].children[0].layout.width = "auto"
        self._boxes["Trail"].children[1].children[0].layout.flex = "1"
        self._qty_label = self._boxes["Qty"].children[0]
        self._legs = w.HBox([self._boxes["Take profit"], self._boxes["Stop loss"]],
                            layout=w.Layout(justify_content="space-between"))
        self._confirming = w.VBox()
        form = w.VBox([
            self._boxes["Symbol"], self.side, self.amount_in, self._boxes["Qty"],
            w.HBox([self._boxes["Order type"], self._boxes["Time in force"]], layout=w.Layout()),
            self._boxes["Limit price"], self._boxes["Stop price"], self._boxes["Trail"],
            self.extended_hours, self.bracket, self._legs, self.confirm,
        ], layout=w.Layout(width="300px"))
        side_panel = w.VBox([self.quote_box], layout=w.Layout(width="250px"))
        side_panel.add_class("anb-quote")
        body = w.HBox([form, side_panel], layout=w.Layout())
        actions = w.VBox([self.problem, self._confirming, self.submit_button, self.new_button, self.status],
                         layout=w.Layout(width="300px"))
        super().__init__(api, title="Order ticket", children=(body, actions))
        self.layout.width = "600px"

        self._coid = new_client_order_id()
        self._note = ""
        self._edited_while_sending = False
        self._state = "armed"              # armed -> sending -> placed (or back to armed on failure)
        self._submit_lock = threading.RLock()   # guards _state and what the button shows
        self.order = None                  # the placed order (pd.Series)
        self._order_status: tuple[int, str] = (0, "")
        self._body: dict[str, Any] | None = None
        self._quotes: dict[str, dict[str, Any]] = {}
        self._last: dict[str, float] = {}
        self._buying_power: float | None = None
        self._positions: dict[str, float] = {}
        self._assets: set[str] = set()
        self._increments: dict[str, dict[str, float]] = {}   # crypto pair -> its asset's increments
        self._crypto: bool | None = None       # the asset class the fields are fitted to
        self._stream = None
        self._subscribed: str | None = None
        self._sent_at: float | None = None
        self.accepted_after: float | None = None    # seconds from Submit to "accepted" shown

        self._fit_asset_class()
        for widget in (self.symbol, self.side, self.amount_in, self.qty, self.order_type, self.limit_price,
                       self.stop_price, self.trail, self.trail_in, self.time_in_force, self.extended_hours,
                       self.bracket, self.take_profit, self.stop_loss):
            widget.observe(self._edited, names="value")
        self.submit_button.on_click(lambda _: self.submit())
        self.new_button.on_click(lambda _: self.new_order())
        self._layout_fields()
        self._validate()
        self.run("Loading the account", self._load)

    # ------------------------------------------------------------------ background loading
    def _load(self) -> None:
        api = self._api
        try:
            symbols: list[str] = []
            for asset_class in ("us_equity", "crypto"):
                assets = api.assets(asset_class=asset_class)
                tradable = assets[assets["tradable"].fillna(False).astype(bool)]
                symbols += sorted(tradable.index)
                if asset_class == "crypto":
                    self._increments = {str(s): {k: v for k, v in row.items() if not math.isnan(v)}
                                        for s, row in tradable[list(INCREMENTS)].iterrows()}
            self._assets = set(symbols)
            self.symbol.options = symbols
        except Exception as exc:  # noqa: BLE001 - suggestions are a convenience; the ticket works without
            log.info("OrderTicket: no asset list for suggestions (%s)", exc)
        self._refresh_account()
        stream = self.open_stream(trade_updates=True)
        self._stream = stream
        stream.on("trade_update", self._on_trade_update)
        stream.on("quote", self._on_quote, max_hz=4)
        stream.on("trade", self._on_trade, max_hz=4)
        self._follow_symbol()

    def _refresh_account(self) -> None:
        account = self._api.account()
        positions = self._api.positions()
        with self._lock:
            self._buying_power = float(account["buying_power"])
            self._positions = {str(s): float(q) for s, q in positions["qty"].items()}
        self._validate()

    def _follow_symbol(self) -> None:
        """Subscribe the stream to the ticket's symbol (and drop the previous one)."""
        stream = self._stream
        if stream is None:
            return
        with self._lock:
            wanted = self.symbol.value.strip().upper() or None
            if wanted == self._subscribed:
                return
            previous, self._subscribed = self._subscribed, wanted
        if previous:
            try:
                stream.unsubscribe(quotes=[previous], trades=[previous])
            except (ValueError, RuntimeError):
                pass
        if wanted and re.fullmatch(r"[A-Z0-9.\-/]{1,21}", wanted):
            try:
                snap = self._api.latest_quotes([wanted])
                if wanted in snap.index:
                    row = snap.loc[wanted]
                    self._on_quote({"symbol": wanted, "bid_price": row["bid_price"], "bid_size": row["bid_size"],
                                    "ask_price": row["ask_price"], "ask_size": row["ask_size"]})
                trade = self._api.latest_trades([wanted])
                if wanted in trade.index:
                    self._on_trade({"symbol": wanted, "price": trade.loc[wanted, "price"]})
            except Exception as exc:  # noqa: BLE001 - the stream fills the quote in soon
                log.info("OrderTicket: no latest quote for %s (%s)", wanted, exc)
            stream.subscribe(quotes=[wanted], trades=[wanted])
        self._render_quote()

    # ------------------------------------------------------------------ stream callbacks (fan-out thread)
    def _on_quote(self, quote: dict[str, Any]) -> None:
        with self._lock:
            self._quotes[quote["symbol"]] = quote
        if quote["symbol"] == self.symbol.value.strip().upper():
            self._render_quote()

    def _on_trade(self, trade: dict[str, Any]) -> None:
        first = trade["symbol"] not in self._last
        with self._lock:
            self._last[trade["symbol"]] = float(trade["price"])
        if trade["symbol"] == self.symbol.value.strip().upper():
            self._render_quote()
            if first:
                self._validate()

    def _on_trade_update(self, update: dict[str, Any]) -> None:
        with self._lock:
            mine = self.order is not None and update.get("order_id") == self.order.name
            mine = mine or (update.get("client_order_id") == self._sent_coid())
        if update.get("event") in ("fill", "partial_fill"):
            self.run("Refreshing the account", self._refresh_account)
        if mine:
            self._show_order(update.get("status") or "", update.get("order") or {})

    # ------------------------------------------------------------------ editing
    def _edited(self, change: dict[str, Any]) -> None:
        with self._submit_lock:
            if self._state == "placed":         # a changed ticket is a new order
                self._arm()
            elif self._state == "sending":      # ... once the one being sent is placed
                self._edited_while_sending = True
        if change["owner"] is self.symbol:
            self.symbol.value = self.symbol.value.strip().upper() if self.symbol.value else ""
            self._fit_asset_class()
            self.run("Subscribing to quotes", self._follow_symbol)
        if change["owner"] in (self.symbol, self.order_type, self.amount_in, self.bracket):
            self._layout_fields()
        self._note = ""
        self._hide_confirm()
        self._validate()

    def _fit_asset_class(self) -> None:
        """Offer the order types and times in force the symbol's asset class takes (the client's
        rules, :func:`alpaca_nb.orders.order_choices`); on a switch between stocks and crypto the
        class's defaults are selected."""
        symbol = self.symbol.value.strip().upper()
        crypto = "/" in symbol
        base, _, quote = symbol.partition("/")
        amounts = (((base, "qty"), (quote or "USD", "notional")) if crypto
                   else (("Shares", "qty"), ("Dollars", "notional")))
        if tuple(self.amount_in.options) != amounts:
            amount_in = self.amount_in.value          # new options select the first one
            self.amount_in.options = amounts
            self.amount_in.value = amount_in
        if crypto == self._crypto:
            return
        self._crypto = crypto
        types, tifs = order_choices(symbol)
        for widget, labels, allowed in ((self.order_type, TYPES, types), (self.time_in_force, TIF, tifs)):
            keep = widget.value if widget.value in allowed else allowed[0]
            widget.options = [(label, value) for label, value in labels if value in allowed]
            widget.value = tifs[0] if widget is self.time_in_force else keep
        if crypto:
            self.extended_hours.value = self.bracket.value = False
        self.bracket.layout.display = "none" if crypto else None

    def _layout_fields(self) -> None:
        kind = self.order_type.value
        show = {"Limit price": kind in ("limit", "stop_limit"), "Stop price": kind in ("stop", "stop_limit"),
                "Trail": kind == "trailing_stop"}
        for name, visible in show.items():
            self._boxes[name].layout.display = None if visible else "none"
        self.extended_hours.layout.display = None if kind == "limit" and not self._crypto else "none"
        self._legs.layout.display = None if self.bracket.value else "none"
        if self._crypto:
            base, _, quote = self.symbol.value.strip().upper().partition("/")
            label = f"Qty ({base})" if self.amount_in.value == "qty" else f"Amount ({quote})"
        else:
            label = "Qty (shares)" if self.amount_in.value == "qty" else "Amount ($)"
        self._qty_label.value = f'<span class="widget-label">{html.escape(label)}</span>'

    def order_arguments(self) -> dict[str, Any]:
        """The ticket as ``api.submit_order`` keyword arguments (without client_order_id).

        Raises:
            OrderValidationError: a field is not a number.
        """
        kind = self.order_type.value
        amount = _number(self.qty.value, "Qty" if self.amount_in.value == "qty" else "Amount")
        args: dict[str, Any] = {"symbol": self.symbol.value.strip().upper(), "side": self.side.value,
                                "type": kind, "time_in_force": self.time_in_force.value}
        args["qty" if self.amount_in.value == "qty" else "notional"] = amount
        if kind in ("limit", "stop_limit"):
            args["limit_price"] = _number(self.limit_price.value, "Limit price")
        if kind in ("stop", "stop_limit"):
            args["stop_price"] = _number(self.stop_price.value, "Stop price")
        if kind == "trailing_stop":
            trail = _number(self.trail.value, "Trail")
            args["trail_price" if self.trail_in.value == "price" else "trail_percent"] = trail
        if kind == "limit" and self.extended_hours.value:
            args["extended_hours"] = True
        if self.bracket.value:
            args["order_class"] = "bracket"
            args["take_profit"] = _number(self.take_profit.value, "Take profit")
            args["stop_loss"] = _number(self.stop_loss.value, "Stop loss")
        return args

    def _check(self) -> tuple[dict[str, Any] | None, str, str]:
        """(order body, field, message): the body when the ticket is valid, else the field to
        mark and the message to show."""
        args = self.order_arguments_or_problem()
        if isinstance(args, tuple):
            return None, args[0], args[1]
        symbol = args["symbol"]
        if not symbol:
            return None, "Symbol", "Symbol: enter a ticker, e.g. AAPL"
        if self._assets and symbol not in self._assets:
            return None, "Symbol", f"Symbol: {symbol} is not a tradable asset on this account"
        crypto = "/" in symbol
        for key, label in (("qty", "Qty"), ("notional", "Amount")):
            if key in args and args[key] is None:
                what = ("the quantity" if crypto else "the number of shares") if key == "qty" else \
                    ("the amount" if crypto else "the dollar amount")
                return None, label, f"{label}: enter {what}"
        for key, label in (("limit_price", "Limit price"), ("stop_price", "Stop price"),
                           ("trail_price", "Trail"), ("trail_percent", "Trail"),
                           ("take_profit", "Take profit"), ("stop_loss", "Stop loss")):
            if key in args and args[key] is None:
                return None, label, f"{label}: enter a price" if key != "trail_percent" else "Trail: enter a percentage"
        try:
            body = order_body(**args)
            if crypto and symbol in self._increments:
                check_crypto_increments(body, self._increments[symbol])
        except OrderValidationError as exc:
            field, text = _labelled(str(exc))
            return None, field, text
        with self._lock:
            last = self._last.get(symbol)
            power = self._buying_power
            positions = dict(self._positions)
        if last is not None and power is not None:
            try:
                self._api.guard.check(body, last_price=lambda s: last, buying_power=lambda: power,
                                      position_qty=lambda s: positions.get(s, 0.0))
            except PreTradeCheckError as exc:
                field = {"max_order_qty": "Qty", "max_order_notional": "Qty", "buying_power": "Qty",
                         "price_collar": "Limit price" if "limit_price" in body else "Stop price"}.get(exc.limit, "")
                return None, field, str(exc)
        return body, "", ""

    def order_arguments_or_problem(self) -> dict[str, Any] | tuple[str, str]:
        try:
            return self.order_arguments()
        except OrderValidationError as exc:
            return _labelled(str(exc))

    def _validate(self) -> dict[str, Any] | None:
        body, field, message = self._check()
        with self._lock:
            self._body = body
            for name, box in self._boxes.items():
                if box is None:
                    continue
                if name == field or (field == "Amount" and name == "Qty"):
                    box.add_class("anb-invalid")
                else:
                    box.remove_class("anb-invalid")
            if message:
                self.problem.show(message, "error")
            else:
                self.problem.show(self._note, "info")
            self._render_button()
        self._render_quote()
        return body

    def _render_button(self) -> None:
        with self._submit_lock:
            self._render_button_locked()

    def _render_button_locked(self) -> None:
        body, state = self._body, self._state
        side = self.side.value
        self.submit_button.remove_class("anb-submit-buy" if side == "sell" else "anb-submit-sell")
        self.submit_button.add_class("anb-submit-buy" if side == "buy" else "anb-submit-sell")
        if state == "sending":
            self.submit_button.description = "Sending…"
            self.submit_button.disabled = True
            return
        if state == "placed":
            self.submit_button.description = "Sent ✓"
            self.submit_button.disabled = True
            self.new_button.layout.display = None
            return
        self.new_button.layout.display = "none"
        self.submit_button.disabled = body is None
        self.submit_button.description = _describe(body) if body else ("Buy" if side == "buy" else "Sell")

    # ------------------------------------------------------------------ the quote side panel
    def _render_quote(self) -> None:
        symbol = self.symbol.value.strip().upper()
        with self._lock:
            q = self._quotes.get(symbol, {})
            last = self._last.get(symbol)
            power = self._buying_power
            body = self._body
        bid, ask = q.get("bid_price"), q.get("ask_price")
        # a pair's prices to its price increment (BTC/USD: whole dollars), its sizes to 4 places:
        # "63,807 × 0.1562" fits the panel where "63,807.00 × 0.156234" was cut off
        places, size = _price_places(self._increments.get(symbol)), qty_text
        if "/" in symbol:
            size = lambda v: qty_text(round(float(v), 4)) if v is not None else "—"
        rows = [("Bid", f"{number(bid, places=places)} × {size(q.get('bid_size'))}" if price_ok(bid) else "—"),
                ("Ask", f"{number(ask, places=places)} × {size(q.get('ask_size'))}" if price_ok(ask) else "—"),
                ("Last", number(last, places=places))]
        if price_ok(bid) and price_ok(ask) and ask >= bid:
            rows.append(("Spread", number(ask - bid, places=places)))
        estimate = _estimate(body, bid, ask, last)
        rows.append(("Est. cost" if self.side.value == "buy" else "Est. proceeds", money(estimate)))
        rows.append(("Buying power", money(power)))
        if power is not None and estimate is not None and self.side.value == "buy":
            left = power - estimate
            rows.append(("After order", f'<span class="{"anb-down" if left < 0 else ""}">{money(left)}</span>'))
        cells = "".join(f'<tr><td>{k}</td><td class="anb-num">{v}</td></tr>' for k, v in rows)
        title = html.escape(symbol) if symbol else "—"
        self.quote_box.value = (f'<div class="anb-title" style="margin-bottom:4px">{title}</div>'
                                f'<table class="anb-kv" style="width:100%">{cells}</table>')

    # ------------------------------------------------------------------ submitting
    @property
    def client_order_id(self) -> str:
        return self._coid

    def _sent_coid(self) -> str | None:
        return self._coid if self._state in ("sending", "placed") else None

    def _set_note(self, text: str) -> None:
        """A note under the fields that stays until the ticket changes."""
        self._note = text
        self.problem.show(text, "info")

    def _arm(self, *, keep_status: bool = False) -> None:
        """A new order: a new client_order_id (call with the submit lock held). ``keep_status``
        leaves the previous order's status line up (it still follows that order)."""
        self._note = ""
        self._state = "armed"
        self._edited_while_sending = False
        self._coid = new_client_order_id()
        if not keep_status:
            self.order = None
            self._order_status = (0, "")
            self.status.clear()

    def new_order(self) -> None:
        """Arm the ticket for another order with the same fields (a new client_order_id)."""
        with self._submit_lock:
            if self._state == "placed":
                self._arm()
        self._validate()

    def submit(self, *, confirmed: bool = False) -> bool:
        """What Submit does: validate, ask for confirmation if the ticket wants it, then send the
        order on a worker thread. Returns True when an order was sent by this call; False when
        nothing was sent (invalid, awaiting confirmation, already sending or already placed)."""
        body = self._validate()
        with self._submit_lock:
            if self._state == "sending":
                self._set_note("Already sending this order; one click places one order.")
                return False
            if self._state == "placed":
                self._set_note(f"This ticket was already sent as order {_short(self.order)}; "
                               "change it or press New order to send another.")
                return False
            if body is None:
                return False
            if self.confirm.value and not confirmed:
                self._ask_confirm(body)
                return False
            self._state = "sending"
            self._edited_while_sending = False
            with self._lock:
                self.order = None
                self._order_status = (0, "")
            self._sent_at = time.perf_counter()
            coid = self._coid
            args = self.order_arguments()
        self._hide_confirm()
        self.status.show(f"Sending: {_describe(body)}…", "info")
        self._render_button()
        self.run("Sending the order", lambda: self._place(args, coid))
        return True

    def _place(self, args: dict[str, Any], coid: str) -> None:
        try:
            order = self._api.submit_order(**args, client_order_id=coid)
        except Exception as exc:  # noqa: BLE001 - any failure is shown on the ticket
            with self._submit_lock:
                self._state = "armed"          # same client_order_id: a retry cannot duplicate
            self._render_button()              # the button is ready again before the line says so
            self.status.show(f"Not placed: {error_text(exc)}", "error")
            return
        with self._submit_lock:
            self._state = "placed"
            self.order = order
        self._show_order(str(order["status"]), None)
        with self._submit_lock:
            if self._edited_while_sending:
                self._arm(keep_status=True)
            self._render_button()

    def _show_order(self, status: str, wire: dict[str, Any] | None) -> None:
        """Show an order status unless a later one is already shown (the stream's fill can come
        before the REST answer)."""
        rank = STATUS_RANK.get(status, 1)
        with self._lock:
            if rank < self._order_status[0]:
                return
            order = self.order
            self._order_status = (rank, status)
            qty = _num((wire or {}).get("qty"), order["qty"] if order is not None else None)
            filled = _num((wire or {}).get("filled_qty"), order["filled_qty"] if order is not None else None)
            avg = _num((wire or {}).get("filled_avg_price"), order["filled_avg_price"] if order is not None else None)
        oid = _short(order) if order is not None else _short_id((wire or {}).get("id"))
        if status in ("filled",):
            text, kind = f"Filled {qty_text(filled)} at {money(avg)} · order {oid}", "ok"
        elif status == "partially_filled":
            text, kind = f"Partially filled {qty_text(filled)} of {qty_text(qty)} at {money(avg)} avg · order {oid}", "info"
        elif status in _ACTIVE:
            text, kind = f"Accepted ({status.replace('_', ' ')}) · order {oid}", "info"
        else:
            reason = (wire or {}).get("reject_reason") or (wire or {}).get("cancel_reason") or ""
            text = f"{status.replace('_', ' ').capitalize()} · order {oid}" + (f": {reason}" if reason else "")
            kind = "error" if status in ("rejected", "canceled", "expired") else "info"
        if self.accepted_after is None and self._sent_at is not None:
            self.accepted_after = time.perf_counter() - self._sent_at
        self.status.show(text, kind)

    # ------------------------------------------------------------------ confirmation
    def _ask_confirm(self, body: dict[str, Any]) -> None:
        live = " with REAL MONEY" if self._api.mode == "live" else ""
        row = confirm_row(f"{_describe(body)}{live}?", lambda: self.submit(confirmed=True), self._hide_confirm,
                          yes="Confirm", danger=self._api.mode == "live")
        self._confirming.children = (row,)
        self.submit_button.layout.display = "none"

    def _hide_confirm(self) -> None:
        if self._confirming.children:
            for child in self._confirming.children:
                child.close()
            self._confirming.children = ()
        self.submit_button.layout.display = None

    def __repr__(self) -> str:
        symbol = self.symbol.value or "no symbol"
        return f"<OrderTicket {symbol} {self._api.mode}>"


def _describe(body: dict[str, Any]) -> str:
    """'Buy 10 AAPL at market', 'Sell $500 of MSFT limit 410.00'..."""
    side = body["side"].capitalize()
    amount = f"{qty_text(float(body['qty']))} {body['symbol']}" if "qty" in body else \
        f"{money(float(body['notional']))} of {body['symbol']}"
    kind = body["type"]
    if kind == "market":
        how = "at market"
    elif kind == "limit":
        how = f"limit {number(float(body['limit_price']))}"
    elif kind == "stop":
        how = f"stop {number(float(body['stop_price']))}"
    elif kind == "stop_limit":
        how = f"stop {number(float(body['stop_price']))} limit {number(float(body['limit_price']))}"
    else:
        how = (f"trailing {number(float(body['trail_price']))}" if "trail_price" in body
               else f"trailing {body['trail_percent']}%")
    extra = " + bracket" if body.get("order_class") == "bracket" else ""
    return f"{side} {amount} {how}{extra}"


def _estimate(body: dict[str, Any] | None, bid: Any, ask: Any, last: Any) -> float | None:
    if not body:
        return None
    if "notional" in body:
        return float(body["notional"])
    qty = float(body["qty"])
    price = body.get("limit_price") or body.get("stop_price")
    if price is None:
        price = ask if body["side"] == "buy" else bid
        if not price_ok(price):
            price = last
    return qty * float(price) if price else None


def _price_places(increments: dict[str, float] | None) -> int:
    """Decimal places for a price: a crypto pair's price_increment's (1 -> 0, 0.01 -> 2, at most
    9), else cents."""
    inc = (increments or {}).get("price_increment")
    if not inc:
        return 2
    return min(9, max(0, -Decimal(str(inc)).normalize().as_tuple().exponent))


def _num(value: Any, default: Any) -> float | None:
    try:
        return float(value) if value is not None else (float(default) if default is not None else None)
    except (TypeError, ValueError):
        return None


def _short(order: Any) -> str:
    return _short_id(getattr(order, "name", None))


def _short_id(oid: Any) -> str:
    return str(oid)[:8] if oid else "?"
