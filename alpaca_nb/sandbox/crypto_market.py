"""The sandbox's 24/7 crypto market: bars, trades, quotes and order books for the pairs of
``crypto_assets.csv``, deterministic from the seed, computed on demand.

The same three layers as the stock market (:mod:`.market`), on UTC days and without sessions:

Daily layer
    Every UTC day gets open, high, low, close, volume and trade count from the multi-scale noise
    path of :mod:`._noise` (the open is the previous close plus a small gap). The market mode
    (always-open or calendar) does not matter: crypto trades every minute of every day.
Minute layer
    The 1,440 minutes of a UTC day come from its daily bar through :func:`._minutes.minute_columns`
    (exact integer sums), so a 1Day bar is exactly the aggregate of its minutes.
Tick layer
    Each minute's trades come from its minute bar (first at the open, last at the close, touching
    high and low, sizes summing to the volume), each with the taker side (``B`` when the price
    ticked up or stayed, ``S`` when it ticked down), and one quote just before each trade, with
    the trade at the ask for a buyer taker and at the bid for a seller taker. The order book is
    the latest quote plus deeper levels one price increment apart (:meth:`CryptoMarket.book`).

Prices are multiples of the pair's ``price_increment`` (generated as whole cents of the price
divided by ``100 * price_increment``, so the stock market's rounding helpers apply unchanged);
volumes and sizes are whole multiples of a per-pair lot (``min_trade_increment``), kept as
integers inside (so aggregates are exact) and written as decimal numbers. Daily bars are
stamped at 00:00 UTC. All instants are integer nanoseconds since the epoch.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
import uuid
from dataclasses import dataclass
from decimal import Decimal
from importlib import resources
from typing import Any, NamedTuple

import numpy as np

from ._bars import EMPTY_BARS, TRADE_ID_STRIDE, UNIT_WEEK, Bars, BarTick, Timeframe
from ._lru import Lru
from ._minutes import ALL_DAY, DaySpec, allocate, minute_columns, reflect, round_price
from ._noise import Draws, hash_at, key_of, noise_path, normal_at, regime, unit
from .clock import DAY_NS, MINUTE_NS

__all__ = ["CryptoMarket", "CryptoQuote", "CryptoTicks", "CryptoTrade", "is_crypto_symbol"]

_ASSET_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_DNS, "crypto.sandbox.alpaca-nb")
_ANCHOR_DAY = dt.date(2025, 6, 2).toordinal() - dt.date(1970, 1, 1).toordinal()
BOOK_LEVELS = 10


def is_crypto_symbol(symbol: str) -> bool:
    """True for a pair written ``BASE/QUOTE`` (Alpaca's crypto symbology)."""
    return "/" in symbol


class CryptoTrade(NamedTuple):
    """One trade: ``t`` ns, price (quote currency), size (base units), trade id, taker side."""

    t: int
    price: float
    size: float
    id: int
    taker: str


class CryptoQuote(NamedTuple):
    """One top-of-book quote: ``t`` ns, prices in the quote currency, sizes in base units."""

    t: int
    bid: float
    bid_size: float
    ask: float
    ask_size: float


@dataclass(frozen=True, eq=False)
class CryptoTicks:
    """One minute's trades and quotes (columnar, sorted by time). Sizes are base units."""

    trade_t: np.ndarray
    price: np.ndarray
    size: np.ndarray
    trade_id: np.ndarray
    taker: np.ndarray        # <U1 "B" / "S"
    quote_t: np.ndarray
    bid: np.ndarray
    bid_size: np.ndarray
    ask: np.ndarray
    ask_size: np.ndarray

    def __len__(self) -> int:
        return len(self.trade_t)


@dataclass(frozen=True)
class _Pair:
    symbol: str
    key: int
    price: float
    volume: float
    trades: int
    sigma: float                 # daily volatility of the log price
    lot: float                   # volume unit (min_trade_increment)
    lot_places: int
    increment: float             # price increment
    price_places: int
    scale: float                 # generated prices are price * scale (whole cents = increments)
    spread: float                # typical relative spread
    asset: dict

    def prices(self, scaled: np.ndarray) -> np.ndarray:
        """Generated (scaled, whole-cent) prices to multiples of the price increment."""
        return np.round(np.rint(np.asarray(scaled) * 100.0) * self.increment, self.price_places)

    def sizes(self, lots: np.ndarray) -> np.ndarray:
        return np.round(np.asarray(lots, dtype=np.float64) * self.lot, self.lot_places)


def _places(text: str) -> int:
    exponent = Decimal(text).normalize().as_tuple().exponent
    return max(0, -int(exponent))


def _load_pairs(seed: int) -> list[_Pair]:
    text = resources.files(__package__).joinpath("crypto_assets.csv").read_text(encoding="utf-8")
    rows = csv.DictReader(io.StringIO("\n".join(
        ln for ln in text.splitlines() if ln and not ln.startswith("#"))))
    out = []
    for row in rows:
        symbol = row["symbol"]
        key = key_of("sandbox-crypto", seed, symbol)
        jitter = unit(hash_at(key, np.arange(2)))
        price, inc = float(row["price"]), float(row["price_increment"])
        asset = {
            "id": str(uuid.uuid5(_ASSET_NAMESPACE, symbol)),
            "class": "crypto",
            "exchange": "CRYPTO",
            "symbol": symbol,
            "name": row["name"],
            "status": "active",
            "tradable": symbol.endswith("/USD"),      # the sandbox's accounts hold dollars only
            "marginable": False,
            "shortable": False,
            "easy_to_borrow": False,
            "fractionable": True,
            "attributes": [],
            "maintenance_margin_requirement": 100,
            "margin_requirement_long": "100",
            "margin_requirement_short": "100",
            "min_order_size": row["min_order_size"],
            "min_trade_increment": row["min_trade_increment"],
            "price_increment": row["price_increment"],
        }
        out.append(_Pair(
            symbol=symbol, key=key, price=price, volume=float(row["volume"]),
            trades=int(row["trades"]),
            sigma=float(row["volatility"]) * (0.9 + 0.2 * jitter[0]) / math.sqrt(365),
            lot=float(row["min_trade_increment"]), lot_places=_places(row["min_trade_increment"]),
            increment=inc, price_places=_places(row["price_increment"]), scale=0.01 / inc,
            spread=(1.0 + 3.0 * jitter[1]) * 1e-4, asset=asset))
    return out


def utc_day(ns: int) -> dt.date:
    """The UTC date containing the instant ``ns``."""
    return dt.date(1970, 1, 1) + dt.timedelta(days=ns // DAY_NS)


def utc_midnight_ns(day: dt.date) -> int:
    return (day.toordinal() - dt.date(1970, 1, 1).toordinal()) * DAY_NS


class CryptoMarket:
    """The synthetic 24/7 crypto market (see the module docstring).

    Bars returned here are :class:`.market.Bars` whose volumes are integer lots; use
    :meth:`wire_bars` (or :meth:`bar_tick`) for volumes in base units.
    """

    MINUTE_CACHE = 512
    TICK_CACHE = 8192

    def __init__(self, *, seed: int):
        self.seed = int(seed)
        self._pairs = {p.symbol: p for p in _load_pairs(self.seed)}
        self._by_id = {p.asset["id"]: p.asset for p in self._pairs.values()}
        self._legacy = {s.replace("/", ""): s for s in self._pairs}
        self.symbols: list[str] = sorted(self._pairs)
        self._minutes: Lru[tuple[str, int], Bars] = Lru(self.MINUTE_CACHE)
        self._ticks: Lru[tuple[str, int], CryptoTicks] = Lru(self.TICK_CACHE)
        self._anchors: dict[str, float] = {}

    # ------------------------------------------------------------ assets

    def asset(self, symbol_or_id: str) -> dict | None:
        """The Asset object for ``BTC/USD``, the legacy ``BTCUSD`` form, or an asset id."""
        symbol = self.resolve(symbol_or_id)
        if symbol is not None:
            return dict(self._pairs[symbol].asset, attributes=[])
        found = self._by_id.get(str(symbol_or_id).lower())
        return dict(found, attributes=[]) if found else None

    def assets(self) -> list[dict]:
        return [self.asset(s) for s in self.symbols]

    def resolve(self, symbol: str) -> str | None:
        """The pair's symbol for ``BTC/USD`` or ``BTCUSD`` (case-insensitive), else None."""
        text = str(symbol).upper()
        if text in self._pairs:
            return text
        return self._legacy.get(text)

    def has(self, symbol: str) -> bool:
        return symbol in self._pairs

    def pair(self, symbol: str) -> _Pair:
        try:
            return self._pairs[symbol]
        except KeyError:
            raise KeyError(f"unknown crypto pair {symbol!r}") from None

    # ------------------------------------------------------------ daily layer

    def _daily(self, pair: _Pair, days: np.ndarray) -> tuple[np.ndarray, ...]:
        """Scaled o, h, l, c, volume lots and trade counts of UTC days (days since the epoch)."""
        days = np.asarray(days, dtype=np.int64)
        x = days.astype(np.float64)
        anchor = self._anchors.get(pair.symbol)
        if anchor is None:
            anchor = self._anchors[pair.symbol] = float(
                noise_path(pair.key, pair.sigma, np.array([float(_ANCHOR_DAY)]))[0])
        noise = noise_path(pair.key, pair.sigma, np.concatenate([x, x + 1.0]))
        both = math.log(pair.price * pair.scale) - anchor + noise
        x_open, x_close = both[:len(x)], both[len(x):]
        vol = regime(pair.key, x)
        sig = pair.sigma * vol
        z = normal_at(pair.key ^ 0xC5B1, days[:, None] * 8 + np.arange(4)).T
        e = -np.log1p(-unit(hash_at(pair.key ^ 0xC5B2, days[:, None] * 8 + np.arange(2)))).T
        o = round_price(np.exp(x_open + 0.05 * sig * z[0]))
        c = round_price(np.exp(x_close))
        h = np.maximum(round_price(np.maximum(o, c) * np.exp(0.3 * sig * e[0])), np.maximum(o, c))
        low = np.minimum(round_price(np.minimum(o, c) * np.exp(-0.3 * sig * e[1])), np.minimum(o, c))
        n = np.maximum(np.round(pair.trades * np.exp(0.25 * z[1]) * np.sqrt(vol)), 4 * 1440)
        n = n.astype(np.int64)
        lots = pair.volume / pair.lot * np.exp(0.3 * z[2] - 0.045) * np.sqrt(vol)
        v = np.maximum(np.round(lots), n + 1440).astype(np.int64)
        return o, h, low, c, v, n

    # ------------------------------------------------------------ minute layer

    def minute_bars(self, symbol: str, day: dt.date) -> Bars:
        """The 1,440 minute bars of UTC date ``day`` (volumes in lots). Cached."""
        self.prefetch_minutes(symbol, [day])
        return self._minutes.get((symbol, day.toordinal()))

    def prefetch_minutes(self, symbol: str, days: list[dt.date]) -> None:
        """Generate the minutes of several UTC days at once (the same bars, cheaper)."""
        pair = self.pair(symbol)
        missing = [d for d in dict.fromkeys(days) if (symbol, d.toordinal()) not in self._minutes]
        if not missing:
            return
        epoch = dt.date(1970, 1, 1).toordinal()
        ords = np.array([d.toordinal() - epoch for d in missing], dtype=np.int64)
        o, h, low, c, v, n = self._daily(pair, ords)
        specs = [DaySpec(key=key_of(pair.key, "minutes", int(d)), start_ns=int(d) * DAY_NS,
                         minutes=1440, segment=ALL_DAY, open=float(o[i]), high=float(h[i]),
                         low=float(low[i]), close=float(c[i]), volume=int(v[i]),
                         trade_count=int(n[i]))
                 for i, d in enumerate(ords)]
        for day, cols in zip(missing, minute_columns(specs)):
            t, mo, mh, ml, mc, mv, mn, mvw = cols
            bars = Bars(t, pair.prices(mo), pair.prices(mh), pair.prices(ml), pair.prices(mc),
                        mv, mn, np.clip(pair.prices(mvw), pair.prices(ml), pair.prices(mh)))
            self._minutes[(symbol, day.toordinal())] = bars

    def _vw_places(self, symbol: str) -> int:
        """Decimal places of an aggregated bar's VWAP: two more than the pair's prices."""
        return self.pair(symbol).price_places + 2

    def wire_bars(self, symbol: str, bars: Bars) -> Bars:
        """``bars`` with volumes in base units (float)."""
        return Bars(bars.t, bars.o, bars.h, bars.l, bars.c, self.pair(symbol).sizes(bars.v), bars.n,
                    bars.vw)

    def bar_tick(self, symbol: str, bars: Bars, i: int) -> BarTick:
        row = bars.row(i)
        return row._replace(volume=float(self.pair(symbol).sizes(np.array([row.volume]))[0]))

    def minute_count(self, start_ns: int, end_ns: int) -> int:
        """How many minutes (minute bars: every minute trades) start in [start_ns, end_ns] (ns,
        both inclusive)."""
        return max(0, end_ns // MINUTE_NS + (start_ns // -MINUTE_NS) + 1)

    # ------------------------------------------------------------ bars as of now

    def visible_minutes(self, symbol: str, day: dt.date, now_ns: int) -> Bars:
        """The minute bars of UTC ``day`` whose minute has closed by ``now_ns``."""
        if utc_midnight_ns(day) + MINUTE_NS > now_ns:
            return EMPTY_BARS
        bars = self.minute_bars(symbol, day)
        if bars.t[-1] + MINUTE_NS <= now_ns:
            return bars
        return bars.take(slice(0, int(np.searchsorted(bars.t, now_ns - MINUTE_NS, side="right"))))

    def intraday_bars(self, symbol: str, timeframe: Timeframe, day: dt.date, now_ns: int) -> Bars:
        """The ``timeframe`` bars of one UTC day, buckets aligned from 00:00 UTC, a bucket in
        progress being the aggregate of its closed minutes."""
        minutes = self.visible_minutes(symbol, day, now_ns)
        if timeframe.minutes == 1 or not len(minutes):
            return minutes
        day0 = utc_midnight_ns(day)
        width = timeframe.minutes * MINUTE_NS
        bucket = (minutes.t - day0) // width
        starts = np.flatnonzero(np.diff(bucket, prepend=-1))
        return minutes.aggregate(starts, day0 + bucket[starts] * width, vw_places=self._vw_places(symbol))

    def day_bar(self, symbol: str, day: dt.date, now_ns: int) -> BarTick | None:
        """UTC ``day``'s bar as of ``now_ns`` (volume in lots), None before its first minute."""
        bars = self.visible_minutes(symbol, day, now_ns)
        if not len(bars):
            return None
        return bars.aggregate(np.array([0]), np.array([utc_midnight_ns(day)]),
                              vw_places=self._vw_places(symbol)).row(0)

    def daily_bars(self, symbol: str, first: dt.date, last: dt.date, now_ns: int) -> Bars:
        """1Day bars (stamped 00:00 UTC) of the UTC days in [first, last] as of ``now_ns``."""
        last = min(last, utc_day(now_ns - MINUTE_NS)) if now_ns >= MINUTE_NS else first - dt.timedelta(1)
        if last < first:
            return EMPTY_BARS
        days = [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
        self.prefetch_minutes(symbol, days)
        rows = [self.day_bar(symbol, d, now_ns) for d in days]
        rows = [r for r in rows if r is not None]
        if not rows:
            return EMPTY_BARS
        cols = list(zip(*rows))
        return Bars(np.array(cols[0], np.int64), *(np.array(c, np.float64) for c in cols[1:5]),
                    np.array(cols[5], np.int64), np.array(cols[6], np.int64),
                    np.array(cols[7], np.float64))

    def period_bars(self, symbol: str, timeframe: Timeframe, year: int, now_ns: int) -> Bars:
        """Weekly (Monday-Sunday, UTC) or N-monthly bars stamped in ``year``, aggregates of the
        daily bars, stamped at their first day's 00:00 UTC."""
        if timeframe.unit == UNIT_WEEK:
            first = dt.date(year, 1, 1) - dt.timedelta(days=6)
            last = dt.date(year, 12, 31) + dt.timedelta(days=6)
        else:
            first, last = dt.date(year, 1, 1), dt.date(year, 12, 31)
        days = self.daily_bars(symbol, first, last, now_ns)
        if not len(days):
            return EMPTY_BARS
        dates = [utc_day(int(t)) for t in days.t]
        if timeframe.unit == UNIT_WEEK:
            group = np.array([d.toordinal() - d.weekday() for d in dates], dtype=np.int64)
            stamps = np.array([utc_midnight_ns(dt.date.fromordinal(int(g))) for g in group])
        else:
            group = np.array([(d.year * 12 + d.month - 1) // timeframe.amount for d in dates],
                             dtype=np.int64)
            stamps = np.array([utc_midnight_ns(dt.date(int(g * timeframe.amount) // 12,
                                                       int(g * timeframe.amount) % 12 + 1, 1))
                               for g in group])
        starts = np.flatnonzero(np.diff(group, prepend=group[0] - 1))
        bars = days.aggregate(starts, stamps[starts], vw_places=self._vw_places(symbol))
        keep = np.array([utc_day(int(s)).year == year for s in stamps[starts]])
        return bars.take(keep)

    def latest_bar(self, symbol: str, now_ns: int) -> BarTick | None:
        """The last minute bar closed by ``now_ns`` (volume in base units)."""
        minute = (now_ns - MINUTE_NS) // MINUTE_NS * MINUTE_NS
        bars = self.minute_bars(symbol, utc_day(minute))
        return self.bar_tick(symbol, bars, int((minute % DAY_NS) // MINUTE_NS))

    def snapshot(self, symbol: str, now_ns: int) -> dict[str, Any]:
        """Latest trade, quote and minute bar, today's (UTC) daily bar so far and yesterday's."""
        today = utc_day(now_ns)
        daily = self.day_bar(symbol, today, now_ns)
        if daily is None:            # the first minute of the day has not closed yet
            today -= dt.timedelta(days=1)
            daily = self.day_bar(symbol, today, now_ns)
        prev = self.day_bar(symbol, today - dt.timedelta(days=1), now_ns)
        lots = self.pair(symbol).sizes
        return {"latestTrade": self.trade_at(symbol, now_ns),
                "latestQuote": self.quote_at(symbol, now_ns),
                "minuteBar": self.latest_bar(symbol, now_ns),
                "dailyBar": daily._replace(volume=float(lots(np.array([daily.volume]))[0])),
                "prevDailyBar": prev._replace(volume=float(lots(np.array([prev.volume]))[0]))}

    # ------------------------------------------------------------ tick layer

    def ticks(self, symbol: str, minute_ns: int) -> CryptoTicks:
        """Trades and quotes of the minute starting at ``minute_ns`` (cached)."""
        key = (symbol, minute_ns)
        hit = self._ticks.get(key)
        if hit is not None:
            return hit
        pair = self.pair(symbol)
        bars = self.minute_bars(symbol, utc_day(minute_ns))
        i = int((minute_ns % DAY_NS) // MINUTE_NS)
        ticks = self._make_ticks(pair, bars, i)
        self._ticks[key] = ticks
        return ticks

    def _make_ticks(self, pair: _Pair, bars: Bars, i: int) -> CryptoTicks:
        t0 = int(bars.t[i])
        o, h, low, c = (float(x) for x in (bars.o[i], bars.h[i], bars.l[i], bars.c[i]))
        v, n = int(bars.v[i]), int(bars.n[i])
        minute_no = t0 // MINUTE_NS
        rnd = Draws(key_of(pair.key, "ticks", minute_no))
        offsets = np.sort(rnd.integers(0, MINUTE_NS - 2 * n - 1, n)) + 2 * np.arange(n, dtype=np.int64) + 1
        a, b = rnd.integers(1, n - 1, 2)
        if a == b:
            b = 1 + (a % (n - 2))
        anchors = sorted([(0, o), (int(a), h), (int(b), low), (n - 1, c)])
        ax = np.array([p for p, _ in anchors], dtype=np.int64)
        ay = np.array([q for _, q in anchors], dtype=np.float64)
        walk = np.concatenate(([0.0], np.cumsum(rnd.normal(n - 1)))) * ((h - low) / math.sqrt(n) * 0.5)
        grid = np.arange(n, dtype=np.float64)
        raw = np.interp(grid, ax, ay) + walk - np.interp(grid, ax, walk[ax])
        inc = pair.increment
        price = np.clip(np.round(np.rint(reflect(raw, low, h) / inc) * inc, pair.price_places), low, h)
        price[ax] = ay
        size_lots = 1 + allocate(v - n, np.exp(1.1 * rnd.normal(n)), 0)
        first_side = rnd.uniform(1)[0] < 0.5
        up = np.diff(price, prepend=price[0] + (0.0 if first_side else -inc)) >= 0
        up[0] = first_side
        taker = np.where(up, "B", "S")
        # the quote just before each trade: a buyer takes the ask, a seller hits the bid
        width = np.maximum(np.round(np.rint(price * pair.spread * (0.5 + rnd.uniform(n)) / inc) * inc,
                                    pair.price_places), inc)
        bid = np.round(np.where(up, price - width, price), pair.price_places)
        ask = np.round(np.where(up, price, price + width), pair.price_places)
        book_lots = np.maximum(1.0, np.round(rnd.exponential(2 * n) * (v / n) * 10)).reshape(2, n)
        bid_lots = np.where(up, book_lots[0], np.maximum(book_lots[0], size_lots))
        ask_lots = np.where(up, np.maximum(book_lots[1], size_lots), book_lots[1])
        trade_t = t0 + offsets
        return CryptoTicks(trade_t, price, pair.sizes(size_lots),
                           minute_no * TRADE_ID_STRIDE + np.arange(n, dtype=np.int64), taker,
                           trade_t - 1, bid, pair.sizes(bid_lots), ask, pair.sizes(ask_lots))

    def _tick_before(self, symbol: str, ns: int, quotes: bool) -> tuple[CryptoTicks, int]:
        self.pair(symbol)
        minute = ns // MINUTE_NS * MINUTE_NS
        while True:
            ticks = self.ticks(symbol, minute)
            times = ticks.quote_t if quotes else ticks.trade_t
            i = int(np.searchsorted(times, ns, side="right")) - 1
            if i >= 0:
                return ticks, i
            minute -= MINUTE_NS

    def trade_at(self, symbol: str, ns: int) -> CryptoTrade:
        """The latest trade at or before ``ns``. Raises KeyError for an unknown pair."""
        tk, i = self._tick_before(symbol, ns, quotes=False)
        return CryptoTrade(int(tk.trade_t[i]), float(tk.price[i]), float(tk.size[i]),
                           int(tk.trade_id[i]), str(tk.taker[i]))

    def quote_at(self, symbol: str, ns: int) -> CryptoQuote:
        """The latest quote at or before ``ns``. Raises KeyError for an unknown pair."""
        tk, i = self._tick_before(symbol, ns, quotes=True)
        return CryptoQuote(int(tk.quote_t[i]), float(tk.bid[i]), float(tk.bid_size[i]),
                           float(tk.ask[i]), float(tk.ask_size[i]))

    def book(self, symbol: str, ns: int, levels: int = BOOK_LEVELS) -> dict[str, Any]:
        """The order book at ``ns``: ``t`` (the quote's time), ``bids`` (best first) and
        ``asks`` (best first), each a list of (price, size). Level 0 is the latest quote; deeper
        levels step one increment further (``k`` increments for level ``k``) with sizes drawn from
        the quote's time, so the book is a pure function of the quote."""
        q = self.quote_at(symbol, ns)
        pair = self.pair(symbol)
        inc, places = pair.increment, pair.price_places
        k = np.arange(1, levels, dtype=np.int64)
        steps = np.cumsum(k)
        sizes = pair.sizes(np.maximum(1.0, np.round(
            -np.log1p(-unit(hash_at(key_of(pair.key, "book", q.t), np.arange(2 * len(k)))))
            * pair.volume / pair.lot / 1440 * 0.05)))
        bids = [(q.bid, q.bid_size)] + [
            (float(np.round(q.bid - s * inc, places)), float(z)) for s, z in zip(steps, sizes[:len(k)])
            if q.bid - s * inc > 0]
        asks = [(q.ask, q.ask_size)] + [
            (float(np.round(q.ask + s * inc, places)), float(z)) for s, z in zip(steps, sizes[len(k):])]
        return {"t": q.t, "bids": bids, "asks": asks}

