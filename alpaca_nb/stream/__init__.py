"""Background-thread streams: live quotes, trades, bars and trade updates in tables, callbacks
and notebook cells, with no asyncio in sight (it works the same in Jupyter, a script or Excel).

::

    stream = api.stream(quotes=["AAPL", "MSFT"], bars=["SPY"], trade_updates=True)
    stream.table.df              # one row per symbol: bid/ask, last trade, last bar, updates...
    stream.quotes.df             # the same columns as api.latest_quotes()
    stream.on("quote", lambda q: ..., max_hz=5)   # coalesced: latest per symbol, at most 5/s
    stream.on("orderbook", lambda book: ...)     # a crypto pair's book: bids/asks after each change
    stream.show()                # a table in the notebook cell, updated in place
    stream.orders.df             # the session's orders as trade updates report them
    stream.subscribe(trades=["NVDA"]); stream.unsubscribe(quotes=["MSFT"])
    stream.status                # connected / reconnecting (attempt N: why) / stopped (why)
    stream.close()               # or: with api.stream(...) as stream: ...

Alpaca allows one connection per account and endpoint, so every stream made in this process
with the same keys shares one socket (a hub): each stream is a view with its own subscriptions,
tables and callbacks; the hub subscribes the union and unsubscribes what no open view needs, and
the last view to close closes the socket. The socket lives in a daemon thread that only parses
and files messages; callbacks, display updates and REST refills run on a second thread at bounded
rates. Both threads belong to the connection: when ``close()`` returns they have ended (a callback
that never returns, or a REST call stuck in the client's transport, can hold the second one) and
no chore starts a request after it. Every queue is bounded: market data keeps the latest value per symbol, events (trade updates,
status changes) wait in queues of at most 10,000, the oldest dropped with a warning, and a
callback receives what happens from its registration on.
Drops (including a silent socket) are retried with capped exponential backoff and jitter, every
subscription is restored and the table is refilled from REST; 402 (bad keys) stops at once and
406 (another client holds the connection) waits long before trying again.

Crypto pairs ("BTC/USD", any symbol with a "/") travel on Alpaca's crypto stream
(``/v1beta3/crypto/us``), a second shared hub: ``api.stream(quotes=["BTC/USD", "AAPL"])`` opens
(or joins) both sockets and fills one set of tables from both. ``"*"`` subscribes every stock,
``"*/*"`` every crypto pair (``"*"`` on the crypto stream's wire), on any channel.

``msgpack=True`` asks both market-data sockets for Alpaca's msgpack codec (binary frames, what
alpaca-py always uses) instead of JSON text; the trade-updates socket stays JSON. The codec is a
property of the shared connection: the view that opens it chooses.

Layout of this package (imports run one way, top to bottom; none of them imports the client):

* ``__init__``  the public face: :class:`Stream` (a view), :func:`open_stream`, ``live_table``
* ``_trading``  the trade-updates hub and the local order book it keeps
* ``_data``     the market-data hub: auth, subscriptions, plan errors (402/406/409/405)
* ``_display``  the live table in a notebook cell
* ``_hub``      one socket, its thread, reconnect with backoff, status
* ``_table``    LiveTable and the Store the socket thread writes into
* ``_fanout``   the fan-out thread: coalesced callbacks, bounded queues
* ``_socket``   websocket-client framing (JSON and msgpack), send helpers
"""

from __future__ import annotations

import atexit
import logging
import re
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd

from .. import frames
from .._config import Settings, mask_key_id
from ..errors import AlpacaConnectionError, AuthenticationError
from ._data import DataHub, SubscriptionError
from ._display import LiveDisplay
from ._display import show as _show
from ._fanout import EventListener, Listener, MarketListener, StatusListener
from ._hub import Hub, Reconnect, StreamStatus
from ._table import ALL_PAIRS, CHANNELS, WILDCARDS, BookTable, LiveTable, to_update
from ._trading import OrderBook, TradingHub, book_frame, order_update

__all__ = [
    "CHANNELS",
    "EVENTS",
    "LiveTable",
    "Orders",
    "Reconnect",
    "Stream",
    "StreamConflictWarning",
    "StreamStatus",
    "SubscriptionError",
    "close_all",
    "live_table",
    "open_stream",
]

log = logging.getLogger(__name__)

# callback event -> (wire type, channel) for market data; None for the others
EVENTS: dict[str, tuple[str, str] | None] = {
    "quote": ("q", "quotes"), "trade": ("t", "trades"), "bar": ("b", "bars"),
    "updated_bar": ("u", "updated_bars"), "daily_bar": ("d", "daily_bars"),
    "trading_status": ("s", "statuses"), "orderbook": ("o", "orderbooks"), "trade_update": None,
    "status": None,
}
FEEDS = ("iex", "sip", "delayed_sip", "boats", "overnight", "test")
CRYPTO_LOC = "us"
_SYMBOL = re.compile(r"^[A-Z0-9][A-Z0-9./\-]{0,20}$")
_STATE_RANK = {"connected": 0, "connecting": 1, "reconnecting": 2, "stopped": 3}

_HUBS: dict[tuple[str, str, str], Hub] = {}
_HUBS_LOCK = threading.RLock()


class StreamConflictWarning(UserWarning):
    """Another client holds this account's stream connection (406); the stream keeps trying."""


# ------------------------------------------------------------------ argument checks

def _symbols(value: Any, name: str) -> list[str]:
    """A channel argument as a list of upper-case symbols; raises for anything else."""
    if isinstance(value, str):
        items: list[Any] = [p for p in value.split(",")]
    elif isinstance(value, (list, tuple, set, frozenset, dict, pd.Index)):
        items = list(value)
    else:
        raise TypeError(f"{name} must be a symbol or a list of symbols such as ['AAPL', 'MSFT'], "
                        f"got {type(value).__name__}")
    if not items:
        raise ValueError(f"{name} is empty; give at least one symbol (or '*' for every stock, "
                         f"'{ALL_PAIRS}' for every crypto pair)")
    out: dict[str, None] = {}
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"{name} must contain symbol strings; got {item!r} ({type(item).__name__})")
        symbol = item.strip().upper()
        if symbol not in WILDCARDS and not _SYMBOL.match(symbol):
            raise ValueError(f"{name}: {item!r} is not a valid symbol (letters, digits, '.', '/', '-'; "
                             f"or '*' for every stock, '{ALL_PAIRS}' for every crypto pair)")
        out[symbol] = None
    return list(out)


def _channel_args(args: dict[str, Any], *, allow_empty: bool) -> dict[str, list[str]]:
    """{wire channel: symbols} from keyword arguments named after the public channels."""
    out: dict[str, list[str]] = {}
    for name, value in args.items():
        if name not in CHANNELS:
            raise ValueError(f"unknown channel {name!r}; expected one of {', '.join(CHANNELS)}")
        if value is None or (allow_empty and isinstance(value, (list, tuple, set)) and not value):
            continue
        out[CHANNELS[name][0]] = symbols = _symbols(value, name)
        if name == "orderbooks" and any("/" not in s for s in symbols):
            raise ValueError(f"orderbooks: order books stream for crypto pairs only (such as 'BTC/USD', "
                             f"or '{ALL_PAIRS}' for every pair); got {', '.join(s for s in symbols if '/' not in s)}")
        if name == "statuses" and any("/" in s for s in symbols):
            raise ValueError(f"statuses: trading statuses stream for stocks only (Alpaca's crypto stream has "
                             f"none); got {', '.join(s for s in symbols if '/' in s)}")
    return out


def _max_hz(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"max_hz must be a positive number of deliveries per second or None, got {value!r}")
    return float(value)


def _timeout(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {value!r}")
    return float(value)


def _feed(value: Any, settings: Settings) -> str:
    feed = value if value is not None else (settings.feed or "iex")
    if feed not in FEEDS:
        raise ValueError(f"feed must be one of {', '.join(FEEDS)}; got {feed!r}")
    return feed


def stream_url(settings: Settings, path: str) -> str:
    """``{stream_url}/{path}``; a query string on ``stream_url`` is kept at the end (the
    sandbox's load options use one)."""
    base, _, query = settings.stream_url.partition("?")
    return f"{base.rstrip('/')}/{path}" + (f"?{query}" if query else "")


def data_stream_url(settings: Settings, feed: str) -> str:
    """``{stream_url}/v2/{feed}`` (``/v1beta1/{feed}`` for boats and overnight)."""
    return stream_url(settings, f"{'v1beta1' if feed in ('boats', 'overnight') else 'v2'}/{feed}")


def crypto_stream_url(settings: Settings, loc: str = CRYPTO_LOC) -> str:
    """``{stream_url}/v1beta3/crypto/{loc}``."""
    return stream_url(settings, f"v1beta3/crypto/{loc}")


def _split(changes: dict[str, list[str]]) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """{wire: symbols} -> (stock part, crypto part); a symbol with a "/" is a crypto pair."""
    stocks = {w: [s for s in v if "/" not in s] for w, v in changes.items()}
    crypto = {w: [s for s in v if "/" in s] for w, v in changes.items()}
    return {w: v for w, v in stocks.items() if v}, {w: v for w, v in crypto.items() if v}


# ------------------------------------------------------------------ the view

class Orders:
    """The session's orders as the trade-updates stream reports them (see :class:`OrderBook`).

    ``df`` has the columns of ``api.orders()``, indexed by id, newest first.
    """

    def __init__(self, stream: Stream):
        self._stream = stream

    def _book(self) -> OrderBook | None:
        hub = self._stream._trading
        return hub.book if hub is not None else None

    @property
    def df(self) -> pd.DataFrame:
        return self.snapshot()

    def snapshot(self, *, tz: str | None = None) -> pd.DataFrame:
        book = self._book()
        return book_frame(book, tz=tz) if book is not None else frames.orders_frame([], tz=tz)

    def get(self, order_id: str) -> pd.Series:
        """One order of the book. Raises KeyError when the stream has not seen it."""
        book = self._book()
        order = book.get(order_id) if book is not None else None
        if order is None:
            raise KeyError(f"order {order_id!r} is not in the stream's order book")
        return frames.order_series(order)

    def __len__(self) -> int:
        book = self._book()
        return len(book) if book is not None else 0

    def __repr__(self) -> str:
        return f"<Orders {len(self)} order(s)>"


class Stream:
    """A started stream (make one with ``api.stream(...)``); see the module docstring.

    Attributes:
        table: the wide :class:`LiveTable` (every channel, one row per symbol).
        quotes, trades, bars, updated_bars, daily_bars, statuses: one-channel LiveTables.
        orderbooks: the crypto order books (a :class:`BookTable`, ``df`` like ``api.orderbook()``).
        orders: the local order book (with ``trade_updates=True``).
    """

    def __init__(self, settings: Settings, *, feed: str, data_rest: Callable[..., Any] | None,
                 trading_rest: Callable[..., Any] | None, reconnect: Reconnect, use_msgpack: bool = False):
        self._settings = settings
        self._feed = feed
        self._msgpack = use_msgpack
        self._data_rest = data_rest
        self._trading_rest = trading_rest
        self._options = reconnect
        self._subs: dict[str, dict[str, None]] = {}
        self._data: DataHub | None = None
        self._crypto: DataHub | None = None
        self._trading: TradingHub | None = None
        self._lock = threading.RLock()
        self._closed = False
        self._since = 0
        self._crypto_since = 0
        self._listeners: list[tuple[Listener, tuple[str, ...]]] = []
        self.table = LiveTable(self)
        self.quotes = LiveTable(self, "quotes")
        self.trades = LiveTable(self, "trades")
        self.bars = LiveTable(self, "bars")
        self.updated_bars = LiveTable(self, "updated_bars")
        self.daily_bars = LiveTable(self, "daily_bars")
        self.statuses = LiveTable(self, "statuses")
        self.orderbooks = BookTable(self)
        self.orders = Orders(self)

    # ------------------------------------------------------------------ for LiveTable & listeners
    def _stores(self) -> list[tuple[Any, Callable[[str], bool]]]:
        """(store, takes-symbol) of each market-data hub this view uses (stocks, crypto)."""
        return [(h.store, h.takes) for h in (self._data, self._crypto) if h is not None]

    def _hubs(self) -> list[Hub]:
        return [h for h in (self._data, self._crypto, self._trading) if h is not None]

    def _subscribed(self, channel: str) -> list[str]:
        return list(self._subs.get(CHANNELS[channel][0], ()))

    def _wants(self, channel: str) -> Callable[[str], bool]:
        subs = self._subs.get(CHANNELS[channel][0], {})
        stocks, pairs = "*" in subs, ALL_PAIRS in subs
        if stocks or pairs:
            return lambda symbol: isinstance(symbol, str) and (
                symbol in subs or (pairs if "/" in symbol else stocks))
        return subs.__contains__

    # ------------------------------------------------------------------ connecting
    def _attach(self, kind: str, timeout: float, subs: dict[str, list[str]] | None = None) -> Hub:
        """Join (or open) the process-wide connection of ``kind`` and wait until it is up;
        ``subs`` are this view's first subscriptions (data)."""
        settings = self._settings
        if kind == "data":
            url = data_stream_url(settings, self._feed)
        elif kind == "crypto":
            url = crypto_stream_url(settings)
        else:
            url = settings.trading_stream_url
        key = (kind, url, settings.key_id)
        with _HUBS_LOCK:
            hub = _HUBS.get(key)
            new = hub is None or hub.closed
            if new:
                common = dict(url=url, key_id=settings.key_id, secret=settings.secret, options=self._options,
                              via=getattr(settings, "relay", None))
                if kind == "trading":
                    hub = TradingHub(rest=self._trading_rest, **common)
                else:
                    hub = DataHub(feed=self._feed, rest=self._data_rest, use_msgpack=self._msgpack,
                                  crypto_loc=CRYPTO_LOC if kind == "crypto" else None, **common)
                _HUBS[key] = hub
            else:
                if hub.options != self._options:
                    log.info("%s stream %s is already open; its reconnect settings apply", kind, url)
                if kind != "trading" and hub.use_msgpack != self._msgpack:
                    log.info("%s stream %s is already open with the %s codec; it is shared as it is",
                             kind, url, "msgpack" if hub.use_msgpack else "JSON")
            with hub.lock:
                hub.views.add(self)
            if kind == "data":
                self._data, self._since = hub, hub.generation
            elif kind == "crypto":
                self._crypto, self._crypto_since = hub, hub.generation
            else:
                self._trading = hub
            if subs:
                hub.change(self, add=subs, wait=None)
            for listener, kinds in self._listeners:
                if ("data" if kind == "crypto" else kind) in kinds:
                    hub.fanout.add(listener)
            if new:
                hub.start()
        status = hub.wait_ready(timeout)
        if hub.fatal is not None:
            what = "the keys" if hub.fatal.code != 409 else "the subscription of"
            raise AuthenticationError(
                f"the {kind} stream refused {what} {mask_key_id(settings.key_id)}: {hub.fatal} "
                f"({url}); nothing is streaming", code=hub.fatal.code)
        if hub.conflicted and not status.connected:
            message = (f"another client holds this account's {kind} stream connection ({url}: 406 "
                       "connection limit exceeded); the stream keeps trying with a long backoff. "
                       "Close the other notebook, script or SDK stream using these keys.")
            warnings.warn(message, StreamConflictWarning, stacklevel=4)
        elif not status.connected and hub.connections == 0:
            raise AlpacaConnectionError(f"could not open the {kind} stream at {url} within {timeout:g} s: "
                                        f"{status.reason or status.state}")
        elif not status.connected:
            log.warning("%s stream %s is %s; this view starts without it", kind, url, status)
        return hub

    def _add_listener(self, listener: Listener, kinds: Sequence[str]) -> Listener:
        """Register a listener on the fan-out of the named hubs ("data": stocks and crypto,
        "trading"), now and when they attach later."""
        kinds = tuple(kinds)
        with self._lock:
            self._check_open()
            self._listeners.append((listener, kinds))
            for hub in self._hubs():
                if ("data" if hub.kind == "crypto" else hub.kind) in kinds:
                    hub.fanout.add(listener)
        return listener

    # ------------------------------------------------------------------ public API
    @property
    def status(self) -> StreamStatus:
        """The worst state of this stream's connections (``stopped`` once closed)."""
        if self._closed:
            return StreamStatus("stopped", "stream", reason="closed")
        states = [h.status for h in self._hubs()]
        if not states:
            return StreamStatus("connecting", "stream")
        return max(states, key=lambda s: _STATE_RANK.get(s.state, 0))

    @property
    def connections(self) -> dict[str, StreamStatus]:
        """Status per connection: ``{"data": ..., "crypto": ..., "trading": ...}`` (those this
        stream uses)."""
        return {h.kind: h.status for h in self._hubs()}

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def subscriptions(self) -> dict[str, list[str]]:
        """This stream's own subscriptions, by channel (the shared socket carries the union)."""
        return {name: list(self._subs.get(wire, ())) for name, (wire, _) in CHANNELS.items()
                if self._subs.get(wire)}

    @property
    def stats(self) -> dict[str, Any]:
        """Counters: frames received, market-data messages applied, malformed messages skipped,
        connections made (per hub), fan-out cycles."""
        out: dict[str, Any] = {}
        if self._data is not None:
            out.update(data_frames=self._data.frames, messages=self._data.store.applied,
                       malformed=self._data.malformed, data_connections=self._data.connections,
                       data_fanout_cycles=self._data.fanout.cycles)
        if self._crypto is not None:
            out.update(crypto_frames=self._crypto.frames, crypto_messages=self._crypto.store.applied,
                       crypto_malformed=self._crypto.malformed, crypto_connections=self._crypto.connections)
        if self._trading is not None:
            out.update(trading_frames=self._trading.frames, trading_connections=self._trading.connections,
                       reconciliations=self._trading.reconciled)
        return out

    def subscribe(self, quotes: Any = None, trades: Any = None, bars: Any = None, *,
                  updated_bars: Any = None, daily_bars: Any = None, statuses: Any = None,
                  orderbooks: Any = None, timeout: float = 5.0) -> None:
        """Add symbols to channels (from any thread, before or after the connection is up).

        Each argument is a symbol, a comma-separated string or a list; ``"*"`` means every
        stock symbol, ``"*/*"`` every crypto pair; crypto pairs ("BTC/USD") go to the crypto
        stream. When connected, waits up to ``timeout`` seconds for the server to confirm;
        otherwise the subscription is sent as soon as the connection is (re)established.

        Raises:
            ValueError/TypeError: no channel given, an empty list, a non-string symbol.
            RuntimeError: the stream is closed.
            SubscriptionError: the server refused (e.g. 405 symbol limit exceeded).
        """
        changes = _channel_args(dict(quotes=quotes, trades=trades, bars=bars, updated_bars=updated_bars,
                                     daily_bars=daily_bars, statuses=statuses, orderbooks=orderbooks),
                               allow_empty=False)
        if not changes:
            raise ValueError("subscribe() needs at least one channel, e.g. subscribe(quotes=['AAPL'])")
        timeout = _timeout(timeout)
        with self._lock:
            self._check_open()
        for kind, part in zip(("data", "crypto"), _split(changes)):
            if part:
                hub = (self._data if kind == "data" else self._crypto) or self._attach(kind, timeout)
                hub.change(self, add=part, wait=timeout)

    def unsubscribe(self, quotes: Any = None, trades: Any = None, bars: Any = None, *,
                    updated_bars: Any = None, daily_bars: Any = None, statuses: Any = None,
                    orderbooks: Any = None, timeout: float = 5.0) -> None:
        """Remove symbols from channels. The server is told only about symbols that no other open
        stream in this process still needs; their rows leave this stream's tables at once.

        Raises:
            ValueError: a symbol this stream is not subscribed to, no channel, an empty list.
            RuntimeError: the stream is closed.
        """
        changes = _channel_args(dict(quotes=quotes, trades=trades, bars=bars, updated_bars=updated_bars,
                                     daily_bars=daily_bars, statuses=statuses, orderbooks=orderbooks),
                               allow_empty=False)
        if not changes:
            raise ValueError("unsubscribe() needs at least one channel, e.g. unsubscribe(quotes=['AAPL'])")
        timeout = _timeout(timeout)
        with self._lock:
            self._check_open()
            for wire, symbols in changes.items():
                missing = [s for s in symbols if s not in self._subs.get(wire, {})]
                if missing:
                    name = next(n for n, (w, _) in CHANNELS.items() if w == wire)
                    raise ValueError(f"not subscribed to {name} for {', '.join(missing)}; "
                                     f"subscribed: {', '.join(self._subs.get(wire, {})) or 'nothing'}")
        for hub, part in zip((self._data, self._crypto), _split(changes)):
            if hub is not None and part:
                hub.change(self, remove=part, wait=timeout)

    def on(self, event: str | Sequence[str], fn: Callable[[Any], Any], *, max_hz: float | None = None,
           batch: bool = False) -> Listener:
        """Call ``fn`` for updates, off the socket thread, at most ``max_hz`` times per second.

        Events: ``"quote"``, ``"trade"``, ``"bar"``, ``"updated_bar"``, ``"daily_bar"``,
        ``"trading_status"`` (a dict per symbol: ``symbol``, ``timestamp`` as a UTC Timestamp and
        the columns of the matching table, numbers as float), ``"orderbook"`` (a crypto pair's
        whole book after each change: ``symbol``, ``timestamp``, ``bids`` best first and ``asks``
        best first, lists of ``{"price", "size"}``), ``"trade_update"`` (a dict per order:
        ``event``, ``order_id``, ``symbol``, ``status``, ``filled_qty``, ``filled_avg_price``,
        ``price``/``fill_qty`` of this fill, ``reconciled``, and the wire ``order``) and
        ``"status"`` (a :class:`StreamStatus` on every connection state change).
        Between deliveries only the latest value per symbol is kept; trade updates are all
        delivered (with ``max_hz``, the latest per order), up to 10,000 waiting for a slow ``fn``,
        after which the oldest are dropped and counted in the handle's ``dropped``. ``fn`` sees what
        happens from its registration on, never earlier events. An exception in ``fn`` is logged
        and the stream goes on. Returns a handle whose ``cancel()`` stops it.

        With ``batch=True`` (market-data events only) ``fn`` is called once per delivery with
        ``{event: [update, ...]}``, the latest update per symbol since the previous delivery;
        ``event`` may then be a list of market-data events delivered together, e.g.
        ``stream.on(["quote", "trade"], fn, max_hz=4, batch=True)``.

        Raises:
            ValueError: unknown event, bad max_hz, trade updates on a stream without them, a list
                of events without ``batch=True``, ``batch=True`` for trade updates or status.
            TypeError: ``fn`` is not callable, ``batch`` is not a bool.
        """
        if not isinstance(batch, bool):
            raise TypeError(f"batch must be True or False, got {batch!r}")
        events = list(event) if batch and isinstance(event, (list, tuple)) else [event]
        for name in events:
            if not isinstance(name, str) or name not in EVENTS:
                raise ValueError(f"unknown event {name!r}; expected one of {', '.join(EVENTS)}"
                                 + (" (a list of events needs batch=True)" if isinstance(name, (list, tuple)) else ""))
        if not events:
            raise ValueError("event is an empty list; give at least one market-data event, e.g. ['quote']")
        if not callable(fn):
            raise TypeError(f"the callback must be callable, got {type(fn).__name__}")
        hz = _max_hz(max_hz)
        if batch and any(EVENTS[name] is None for name in events):
            raise ValueError("batch=True is for market-data events (quote, trade, bar, updated_bar, "
                             "daily_bar, trading_status, orderbook); trade_update and status arrive "
                             "one by one")
        if event == "trade_update":
            if self._trading is None:
                raise ValueError("this stream has no trade updates; open it with "
                                 "api.stream(..., trade_updates=True) or use api.trade_updates(callback)")
            return self._add_listener(EventListener(fn, hz, self, order_update), ("trading",))
        if event == "status":
            return self._add_listener(StatusListener(fn, hz, self), ("data", "trading"))
        kinds = {name: EVENTS[name] for name in events}
        return self._add_listener(MarketListener(fn, hz, self, kinds, to_update, batch=batch), ("data",))

    def off(self, handle: Listener) -> None:
        """Stop a callback registered with :meth:`on` (same as ``handle.cancel()``)."""
        handle.cancel()
        with self._lock:
            self._listeners = [(li, k) for li, k in self._listeners if li is not handle]

    def show(self, *, table: LiveTable | None = None, max_hz: float = 4.0,
             columns: Sequence[str] | None = None) -> LiveDisplay:
        """Display a live table in the notebook cell and update it in place at most ``max_hz``
        times per second (works on ipykernel 6 and 7; outside Jupyter it is shown once).
        ``table`` defaults to :attr:`table` (a compact set of its columns unless ``columns``).
        Returns the display; its ``stop()`` freezes it."""
        hz = _max_hz(max_hz)
        if hz is None:
            raise ValueError("show() needs a finite max_hz (updates per second)")
        self._check_open()
        target = table if table is not None else self.table
        if not isinstance(target, LiveTable) or target._stream is not self:
            raise TypeError("table must be one of this stream's LiveTables (stream.table, stream.quotes...)")
        return _show(self, target, max_hz=hz, columns=columns)

    def close(self) -> None:
        """Stop this stream: its callbacks and displays stop; its subscriptions are dropped from
        the shared socket; the last stream to close closes the socket and its threads (within
        about a second) and its pending REST refills and reconciliations are dropped: none
        starts a request after it returns. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            listeners = [li for li, _ in self._listeners]
            self._listeners = []
        for listener in listeners:
            if isinstance(listener, LiveDisplay):
                listener.finish()
            else:
                listener.cancel()
        for hub in self._hubs():
            _detach(self, hub)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this stream is closed; open a new one with api.stream(...)")

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        subs = ", ".join(f"{k}={len(v)}" for k, v in self.subscriptions.items()) or "no symbols"
        tu = ", trade_updates" if self._trading is not None else ""
        return f"<Stream {self.status} feed={self._feed} {subs}{tu}>"


def _detach(view: Stream, hub: Hub) -> None:
    fanout = hub.fanout
    fanout.remove_owner(view)
    with _HUBS_LOCK, hub.lock:
        shared = len(hub.views) > 1
    mine = {w: [s for s in v if hub.takes(s)] for w, v in view._subs.items()} if isinstance(hub, DataHub) else {}
    mine = {w: v for w, v in mine.items() if v}
    if shared and mine:
        try:
            hub.change(view, remove=mine, wait=None)
        except Exception:                 # the socket may be down; the union is resent on reconnect
            log.debug("unsubscribe on close failed", exc_info=True)
    with _HUBS_LOCK:
        with hub.lock:
            hub.views.discard(view)
            last = not hub.views
        if last:
            for key, value in list(_HUBS.items()):
                if value is hub:
                    del _HUBS[key]
            hub.close()


# ------------------------------------------------------------------ entry points

def open_stream(settings: Settings, *, quotes: Any = None, trades: Any = None, bars: Any = None,
                updated_bars: Any = None, daily_bars: Any = None, statuses: Any = None,
                orderbooks: Any = None, trade_updates: bool = False, feed: str | None = None,
                data_rest: Callable[..., Any] | None = None, trading_rest: Callable[..., Any] | None = None,
                reconnect: Reconnect | None = None, timeout: float = 10.0, observer: Any = None,
                msgpack: bool = False) -> Stream:
    """Open a stream view (``api.stream(...)`` calls this with the client's REST callables).
    ``msgpack=True``: the market-data sockets this view opens speak msgpack (see the module
    docstring).

    Returns once the connection(s) are authenticated and the subscriptions confirmed.
    ``observer.add(stream)`` is then called (the client's pre-trade guard reads the stream's
    latest prices and listens to its trade updates through the stream's public methods).

    Raises:
        ValueError/TypeError: bad arguments (nothing is opened).
        AuthenticationError: the stream refused the keys (402 / unauthorized) or the account's
            market-data plan does not include the feed (409).
        AlpacaConnectionError: the stream endpoint could not be reached within ``timeout``.
    Warns:
        StreamConflictWarning: another client holds the connection (406); the stream returns
        with status "reconnecting" and keeps trying with a long backoff.
    """
    subs = _channel_args(dict(quotes=quotes, trades=trades, bars=bars, updated_bars=updated_bars,
                              daily_bars=daily_bars, statuses=statuses, orderbooks=orderbooks),
                         allow_empty=True)
    if not isinstance(trade_updates, bool):
        raise TypeError(f"trade_updates must be True or False, got {trade_updates!r}")
    if not isinstance(msgpack, bool):
        raise TypeError(f"msgpack must be True or False, got {msgpack!r}")
    if reconnect is None:
        reconnect = Reconnect()
    elif not isinstance(reconnect, Reconnect):
        raise TypeError("reconnect must be an alpaca_nb.stream.Reconnect(...)")
    timeout = _timeout(timeout)
    stream = Stream(settings, feed=_feed(feed, settings), data_rest=data_rest, trading_rest=trading_rest,
                    reconnect=reconnect, use_msgpack=msgpack)
    deadline = time.monotonic() + timeout
    stocks, crypto = _split(subs)
    try:
        if trade_updates:
            stream._attach("trading", timeout)
        if stocks or not (trade_updates or crypto):
            hub = stream._attach("data", max(0.1, deadline - time.monotonic()), stocks)
            if stocks and hub.status.connected:
                hub.wait_confirmed(stocks, max(0.1, deadline - time.monotonic()), since=stream._since)
        if crypto:
            hub = stream._attach("crypto", max(0.1, deadline - time.monotonic()), crypto)
            if hub.status.connected:
                hub.wait_confirmed(crypto, max(0.1, deadline - time.monotonic()), since=stream._crypto_since)
        for wire, symbols in subs.items():       # the rows in the order asked, stocks and crypto mixed
            stream._subs[wire] = dict.fromkeys(s for s in symbols if s in stream._subs.get(wire, {}))
    except BaseException:
        stream.close()
        raise
    if observer is not None:
        observer.add(stream)
    return stream


def live_table(stream: Stream | LiveTable, *, max_hz: float = 4.0, columns: Sequence[str] | None = None) -> LiveDisplay:
    """Show a stream's table (or one of its LiveTables) in the current notebook cell, updated in
    place: ``live_table(api.stream(quotes=["AAPL"]))``."""
    if isinstance(stream, LiveTable):
        return stream.show(max_hz=max_hz, columns=columns)
    if isinstance(stream, Stream):
        return stream.show(max_hz=max_hz, columns=columns)
    raise TypeError("live_table() takes a Stream (api.stream(...)) or one of its LiveTables")


def close_all() -> None:
    """Close every stream connection of this process (also run at interpreter exit)."""
    with _HUBS_LOCK:
        hubs = list(_HUBS.values())
        _HUBS.clear()
    for hub in hubs:
        for view in list(hub.views):
            view._closed = True
        hub.close()


def open_hubs() -> list[Hub]:
    """The connections currently open in this process (for diagnostics and tests)."""
    with _HUBS_LOCK:
        return list(_HUBS.values())


atexit.register(close_all)
