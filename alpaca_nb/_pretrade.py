"""What the pre-trade guard can know without asking the server.

* Prices: the latest trade (else the quote midpoint) of an open, connected stream of this client
  that carries the symbol. Streams register themselves through a duck-typed hook
  (``observer.add(stream)``, see :func:`alpaca_nb.stream.open_stream`); nothing here imports the
  stream package. Without such a stream, one REST request for the latest trade.
* Buying power and positions: kept ``ttl`` seconds after they were fetched (one request each).
  The client's own submissions update them the careful way (buying power goes down by what the
  guard estimated the order takes; a pending buy can only raise a position, a pending sell only
  lower it, so each symbol keeps a range), its cancels and closes drop them, and so does every
  trade update of an open trade-updates stream except those of orders already counted.

The caches only ever let an order through: a refusal that rests on them is checked again with
fresh figures (see ``Alpaca.check_order``), so a stale figure cannot refuse an order the server
would take, and the server's own checks still apply to whatever the guard lets through.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import weakref
from collections import deque
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["PreTradeView"]

OWN_ORDERS_KEPT = 1000
_COUNTED_EVENTS = frozenset({"pending_new", "accepted", "new", "fill", "partial_fill"})


class PreTradeView:
    """Prices, buying power and positions for :class:`alpaca_nb.orders.Guard`, from what the
    client already knows when it can.

    Args:
        transport: the client's transport (``trading(method, path)``).
        market: has ``last_trade_price(symbol)`` (one REST request).
        ttl: seconds to keep the account's buying power and positions (0: always ask).
    """

    def __init__(self, transport, market, *, ttl: float, clock=time.monotonic):
        self._transport = transport
        self._market = market
        self.ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._sources: list[weakref.ref] = []
        self._power: dict[str, float | None] = {}     # buying_power, non_marginable_buying_power
        self._power_until = -math.inf
        self._positions: dict[str, list[float]] | None = None    # symbol -> [lowest, highest]
        self._positions_until = -math.inf
        self._own: deque[str] = deque(maxlen=OWN_ORDERS_KEPT)
        self._used_cache = False

    # ------------------------------------------------------------------ the stream's hook
    def add(self, source: Any) -> None:
        """Register an open stream: its latest prices serve the guard, and its trade updates
        (when it has them) keep the account figures honest. Called by the stream itself."""
        with self._lock:
            self._sources = [r for r in self._sources if r() is not None] + [weakref.ref(source)]
        if "trading" in getattr(source, "connections", {}):
            source.on("trade_update", self._on_trade_update)

    def _on_trade_update(self, update: Mapping[str, Any]) -> None:
        order = update.get("order") if isinstance(update.get("order"), Mapping) else {}
        with self._lock:
            own = order.get("client_order_id") in self._own
        if update.get("event") in _COUNTED_EVENTS and own:
            return                    # our own order: counted when it was placed
        self.forget()

    # ------------------------------------------------------------------ for the guard
    def last_price(self, symbol: str) -> float | None:
        """The latest trade price (or quote midpoint) from a stream, else from REST."""
        for ref in list(self._sources):
            source = ref()
            if source is None:
                continue
            try:
                price = _stream_price(source, symbol)
            except Exception:
                log.debug("stream price for %s unavailable", symbol, exc_info=True)
                price = None
            if price:
                return price
        return self._market.last_trade_price(symbol)

    def buying_power(self, *, cash_only: bool = False) -> float | None:
        """The account's buying power in dollars (None when the server gives none);
        ``cash_only``: its non-marginable buying power (what crypto, bought with cash, may use)."""
        key = "non_marginable_buying_power" if cash_only else "buying_power"
        with self._lock:
            if self._clock() < self._power_until:
                self._used_cache = True
                return self._power.get(key)
        account = self._transport.trading("GET", "/v2/account") or {}
        powers: dict[str, float | None] = {}
        for name in ("buying_power", "non_marginable_buying_power"):
            try:
                powers[name] = float(account.get(name))
            except (TypeError, ValueError):
                powers[name] = None
        with self._lock:
            self._power, self._power_until = powers, self._clock() + self.ttl
        return powers[key]

    def cash_buying_power(self) -> float | None:
        """:meth:`buying_power` with ``cash_only=True``."""
        return self.buying_power(cash_only=True)

    def position_qty(self, symbol: str) -> float:
        """The signed position in ``symbol`` when it is surely long (> 0) or surely short (< 0)
        whatever this client's pending orders do; 0.0 when flat or not sure."""
        key = symbol.replace("/", "")
        with self._lock:
            positions = self._positions if self._clock() < self._positions_until else None
            if positions is not None:
                self._used_cache = True
        if positions is None:
            body = self._transport.trading("GET", "/v2/positions") or []
            positions = {}
            for p in body:
                try:
                    qty = float(p.get("qty") or 0)
                except (TypeError, ValueError):
                    continue
                qty = -abs(qty) if str(p.get("side") or "").lower() == "short" else qty
                positions[str(p.get("symbol"))] = [qty, qty]
            with self._lock:
                self._positions, self._positions_until = positions, self._clock() + self.ttl
        low, high = positions.get(key, (0.0, 0.0))
        return low if low > 0 else high if high < 0 else 0.0

    # ------------------------------------------------------------------ what the client did
    def sending(self, body: Mapping[str, Any]) -> None:
        """An order of this client is about to be sent (its trade updates may come before its
        answer): they are not news to the kept figures."""
        with self._lock:
            self._own.append(body["client_order_id"])

    def is_own(self, client_order_id: Any) -> bool:
        """Whether this client generated or sent ``client_order_id`` (among its last
        ``OWN_ORDERS_KEPT`` submissions)."""
        with self._lock:
            return client_order_id in self._own

    def placed(self, body: Mapping[str, Any], cost: float | None) -> None:
        """An order of this client was accepted: count it in the kept figures."""
        with self._lock:
            if cost is None:
                self._power_until = -math.inf
            else:
                self._power = {k: None if v is None else v - cost for k, v in self._power.items()}
            if self._positions is not None:
                if "qty" not in body:
                    self._positions_until = -math.inf
                else:
                    span = self._positions.setdefault(body["symbol"].replace("/", ""), [0.0, 0.0])
                    if body["side"] == "buy":
                        span[1] += float(body["qty"])
                    else:
                        span[0] -= float(body["qty"])

    def forget(self, *, positions: bool = True) -> bool:
        """Drop the kept figures; returns whether a check used any of them since the last call."""
        with self._lock:
            self._power_until = -math.inf
            if positions:
                self._positions_until = -math.inf
            used, self._used_cache = self._used_cache, False
        return used

    def fresh_start(self) -> None:
        """Before a check: note that no kept figure was used yet."""
        with self._lock:
            self._used_cache = False


def _stream_price(stream: Any, symbol: str) -> float | None:
    """The latest trade price, else the quote midpoint, of an open and connected stream that
    carries ``symbol``; None otherwise."""
    if getattr(stream, "closed", True):
        return None
    status = stream.connections.get("crypto" if "/" in symbol else "data")
    if status is None or not status.connected:
        return None
    subs = stream.subscriptions
    star = "*/*" if "/" in symbol else "*"       # the stream's wildcards: every crypto pair, every stock
    if symbol in subs.get("trades", ()) or star in subs.get("trades", ()):
        row = stream.trades.snapshot(symbols=[symbol])
        price = float(row["price"].iloc[0]) if len(row) else math.nan
        if math.isfinite(price) and price > 0:
            return price
    if symbol in subs.get("quotes", ()) or star in subs.get("quotes", ()):
        row = stream.quotes.snapshot(symbols=[symbol])
        if len(row):
            bid, ask = float(row["bid_price"].iloc[0]), float(row["ask_price"].iloc[0])
            if math.isfinite(bid) and math.isfinite(ask) and 0 < bid <= ask:
                return (bid + ask) / 2
    return None
