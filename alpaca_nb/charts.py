"""Plotly charts of bars and equity: ``candles``, ``LiveChart`` and ``equity_curve``.

::

    from alpaca_nb.charts import candles, LiveChart, equity_curve
    candles(api.bars(["AAPL", "MSFT"], "1Day", "2024-01-01", "2024-03-29"), ma=(20,))
    LiveChart(api, "AAPL")            # a FigureWidget that follows the stream
    equity_curve(api, period="1M")

Times are shown in New York time (the exchange's clock) without a zone suffix; gaps where the
data has no bars (nights, weekends, holidays) are removed with rangebreaks. The figures set no
template, so they follow ``plotly.io.templates.default`` (``"plotly"``, or ``"plotly_dark"`` for
JupyterLab's dark theme); their backgrounds are transparent and their text mid-grey, so they read
on a light and on a dark notebook alike.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

log = logging.getLogger(__name__)

__all__ = ["LiveChart", "candles", "equity_curve"]

UP = "#26a69a"           # teal-green and coral-red: distinct on white and on #111 backgrounds,
DOWN = "#ef5350"         # and for red-green colour blindness by brightness as well as hue
MA_COLOURS = ("#f5a623", "#7e57c2", "#29b6f6", "#ec407a")
GRID = "rgba(128,128,128,0.18)"
INK = "#8b93a1"          # axis and title text: readable on white and on JupyterLab's dark grey
NY = "America/New_York"
_BAR_COLUMNS = ("open", "high", "low", "close", "volume")


# ------------------------------------------------------------------ helpers

def _ny_naive(index: pd.DatetimeIndex) -> pd.DatetimeIndex:
    """Timestamps as New York wall-clock time without a zone (plotly draws naive times as given;
    naive input is taken to be New York time already)."""
    index = pd.DatetimeIndex(index)
    if index.tz is not None:
        index = index.tz_convert(NY).tz_localize(None)
    return index


def _x(index: Any) -> list[str]:
    """New York wall-clock times as ISO strings: a FigureWidget would send datetimes as integer
    nanoseconds, which plotly.js cannot tell from numbers."""
    return list(_ny_naive(pd.DatetimeIndex(index)).strftime("%Y-%m-%dT%H:%M:%S"))


def _step(index: pd.DatetimeIndex) -> pd.Timedelta:
    """The bar interval: the most common distance between consecutive bars (1 day if unknown)."""
    if len(index) < 2:
        return pd.Timedelta(days=1)
    diffs = pd.Series(np.diff(index.as_unit("ns").asi8))
    diffs = diffs[diffs > 0]
    return pd.Timedelta(int(diffs.mode().iloc[0])) if len(diffs) else pd.Timedelta(days=1)


def rangebreaks(index: pd.DatetimeIndex) -> list[dict[str, Any]]:
    """Plotly rangebreaks that hide the stretches without bars in ``index`` (New York naive):
    weekends when the data has none, weekdays without any bar (holidays), and for intraday data
    the hours outside the earliest-to-latest bar time of day (nights)."""
    index = pd.DatetimeIndex(index).sort_values()
    if len(index) < 2:
        return []
    out: list[dict[str, Any]] = []
    days = index.normalize().unique()
    every_day = pd.date_range(days[0], days[-1], freq="D")
    weekend = every_day[every_day.day_of_week >= 5]
    skip_weekends = len(weekend) > 0 and not bool((days.day_of_week >= 5).any())
    if skip_weekends:
        out.append({"bounds": ["sat", "mon"]})
    missing = every_day.difference(days)
    if skip_weekends:
        missing = missing[missing.day_of_week < 5]
    if len(missing):
        out.append({"values": [d.strftime("%Y-%m-%d") for d in missing]})
    step = _step(index)
    if step < pd.Timedelta(days=1):
        hours = (index - index.normalize()) / pd.Timedelta(hours=1)
        first, last = float(hours.min()), float(hours.max() + step / pd.Timedelta(hours=1))
        if last - first < 24 - 1e-9:
            out.append({"bounds": [round(last, 4), round(first, 4)], "pattern": "hour"})
    return out


def _by_symbol(bars: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """``{symbol: frame indexed by timestamp}`` from an ``api.bars`` frame (MultiIndex
    ``(symbol, timestamp)``) or one symbol's frame (DatetimeIndex)."""
    if not isinstance(bars, pd.DataFrame):
        raise TypeError(f"bars must be a DataFrame from api.bars(...), got {type(bars).__name__}")
    missing = [c for c in ("open", "high", "low", "close") if c not in bars.columns]
    if missing:
        raise ValueError(f"bars is missing column(s) {', '.join(missing)}; expected the frame of api.bars(...) "
                         "with open, high, low, close and volume")
    if isinstance(bars.index, pd.MultiIndex):
        if bars.index.nlevels != 2:
            raise ValueError("bars must be indexed by (symbol, timestamp) or by timestamp")
        return {str(sym): frame.droplevel(0) for sym, frame in bars.groupby(level=0, sort=False)}
    if not isinstance(bars.index, pd.DatetimeIndex):
        raise TypeError("bars must be indexed by (symbol, timestamp) or by a DatetimeIndex")
    return {"": bars}


def _ma_windows(ma: Any) -> tuple[int, ...]:
    if ma is None:
        return ()
    values = (ma,) if isinstance(ma, int) else tuple(ma)
    for w in values:
        if isinstance(w, bool) or not isinstance(w, int) or w < 2:
            raise ValueError(f"ma must be bar counts of at least 2, such as ma=(20, 50); got {ma!r}")
    return values


def _style_axes(fig: go.Figure) -> None:
    """Grid, spikes and a transparent background with mid-grey text, so a figure reads the same
    under the default plotly template in a light notebook and in JupyterLab's dark theme."""
    fig.update_layout(paper_bgcolor="rgba(0,0,0,0)", plot_bgcolor="rgba(0,0,0,0)",
                      font={"color": INK}, legend={"bgcolor": "rgba(0,0,0,0)"},
                      modebar={"bgcolor": "rgba(0,0,0,0)", "color": INK})
    fig.update_xaxes(linecolor=GRID, showgrid=True, gridcolor=GRID, zeroline=False, rangeslider_visible=False,
                     showspikes=True, spikemode="across", spikesnap="cursor", spikethickness=1,
                     spikedash="dot", spikecolor="rgba(128,128,128,0.6)")
    fig.update_yaxes(showgrid=True, gridcolor=GRID, zeroline=False, side="right", linecolor=GRID)


# ------------------------------------------------------------------ candles

def candles(bars: pd.DataFrame, *, ma: int | Sequence[int] | None = None, volume: bool = True,
            title: str | None = None, cols: int | None = None, height: int | None = None) -> go.Figure:
    """Candlestick chart of bars, with a volume subplot and optional moving averages.

    Args:
        bars: the frame of ``api.bars(...)`` (MultiIndex ``(symbol, timestamp)``; several symbols
            make a grid of small multiples) or one symbol's bars indexed by timestamp. Times are
            drawn in New York time (naive timestamps are taken as New York time).
        ma: moving-average windows in bars, e.g. ``20`` or ``(20, 50)`` (simple, of the close).
        volume: draw the volume bars under each candle chart.
        title: the figure title (default: the symbol, or none for a grid).
        cols: columns of the small-multiples grid (default: up to 3).
        height: pixels (default: 520 for one symbol, 330 per grid row).

    Returns:
        A ``plotly.graph_objects.Figure`` (no template set: it follows ``plotly.io.templates.default``).

    Raises:
        TypeError/ValueError: ``bars`` is not a bars frame, a bad ``ma`` or ``cols``.
    """
    groups = _by_symbol(bars)
    windows = _ma_windows(ma)
    n = max(len(groups), 1)
    if cols is None:
        cols = min(n, 3)
    elif isinstance(cols, bool) or not isinstance(cols, int) or cols < 1:
        raise ValueError(f"cols must be a positive number of columns, got {cols!r}")
    grid_rows = math.ceil(n / cols)
    per = 2 if volume else 1
    names = list(groups)
    titles: list[str] = []
    for r in range(grid_rows):
        for sub in range(per):
            for c in range(cols):
                i = r * cols + c
                titles.append(names[i] if (sub == 0 and i < n and n > 1) else "")
    heights = ([0.76, 0.24] if volume else [1.0]) * grid_rows
    fig = make_subplots(rows=grid_rows * per, cols=cols, shared_xaxes=False, row_heights=heights,
                        vertical_spacing=0.03 if n == 1 else 0.045, horizontal_spacing=0.06,
                        subplot_titles=titles if n > 1 else None)
    for i, (symbol, frame) in enumerate(groups.items()):
        frame = frame.sort_index()
        x = _ny_naive(frame.index)
        row, col = (i // cols) * per + 1, i % cols + 1
        label = symbol or "price"
        fig.add_trace(go.Candlestick(
            x=x, open=frame["open"], high=frame["high"], low=frame["low"], close=frame["close"],
            name=label, showlegend=False,
            increasing={"line": {"color": UP, "width": 1}, "fillcolor": UP},
            decreasing={"line": {"color": DOWN, "width": 1}, "fillcolor": DOWN}), row=row, col=col)
        for k, w in enumerate(windows):
            fig.add_trace(go.Scatter(
                x=x, y=frame["close"].rolling(w, min_periods=w).mean(), mode="lines",
                name=f"MA {w}", legendgroup=f"ma{w}", showlegend=(i == 0),
                line={"color": MA_COLOURS[k % len(MA_COLOURS)], "width": 1.4},
                hovertemplate=f"MA {w} %{{y:,.2f}}<extra></extra>"), row=row, col=col)
        breaks = rangebreaks(x)
        fig.update_xaxes(rangebreaks=breaks, row=row, col=col)
        if volume and "volume" in frame.columns:
            up = (frame["close"] >= frame["open"]).to_numpy()
            fig.add_trace(go.Bar(
                x=x, y=frame["volume"], name=f"{label} volume", showlegend=False,
                marker={"color": np.where(up, UP, DOWN).tolist(), "opacity": 0.55, "line": {"width": 0}},
                hovertemplate="vol %{y:,.0f}<extra></extra>"), row=row + 1, col=col)
            fig.update_xaxes(rangebreaks=breaks, matches=_axis_name(fig, row, col), showticklabels=True,
                             row=row + 1, col=col)
            fig.update_xaxes(showticklabels=False, row=row, col=col)
            fig.update_yaxes(tickformat="~s", row=row + 1, col=col)
    _style_axes(fig)
    if title is None and n == 1:
        title = names[0] or None
    fig.update_layout(
        title={"text": title, "x": 0.01, "xanchor": "left"} if title else None,
        height=height or (520 if n == 1 else 330 * grid_rows),
        margin={"l": 10, "r": 10, "t": 50 if (title or n > 1) else 20, "b": 10},
        hovermode="x unified" if n == 1 else "closest", bargap=0.15,
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "xanchor": "right", "x": 1.0},
    )
    return fig


def _axis_name(fig: go.Figure, row: int, col: int) -> str:
    """The plotly axis id ("x", "x3"...) of a subplot, for ``matches``."""
    ref = fig.get_subplot(row, col)
    name = ref.xaxis.plotly_name             # "xaxis", "xaxis3"
    return "x" + name[len("xaxis"):]


# ------------------------------------------------------------------ equity

def equity_curve(api: Any, *, period: str = "1M", timeframe: str | None = None,
                 height: int = 420) -> go.Figure:
    """Equity and profit/loss from ``api.portfolio_history(period=..., timeframe=...)``: equity
    as a line, the P&L since the start of the period as green/red bars beneath it.

    Raises:
        AlpacaError: the history could not be fetched; ValueError: a bad period/timeframe.
    """
    hist = api.portfolio_history(period=period, timeframe=timeframe)
    return equity_figure(hist, height=height)


def equity_figure(hist: pd.DataFrame, *, height: int = 420) -> go.Figure:
    """The figure of :func:`equity_curve` from a ``portfolio_history`` frame (no I/O)."""
    x = _ny_naive(hist.index)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.7, 0.3], vertical_spacing=0.04)
    fig.add_trace(go.Scatter(x=x, y=hist["equity"], mode="lines", name="Equity",
                             line={"color": "#29b6f6", "width": 2}, fill="tozeroy",
                             fillcolor="rgba(41,182,246,0.08)",
                             hovertemplate="equity $%{y:,.2f}<extra></extra>"), row=1, col=1)
    pl = hist["profit_loss"].fillna(0.0)
    fig.add_trace(go.Bar(x=x, y=pl, name="P&L", marker={"color": np.where(pl >= 0, UP, DOWN).tolist()},
                         hovertemplate="P&L $%{y:,.2f}<extra></extra>"), row=2, col=1)
    low, high = hist["equity"].min(), hist["equity"].max()
    if pd.notna(low) and pd.notna(high):
        pad = max((high - low) * 0.1, abs(high) * 0.001, 1.0)
        fig.update_yaxes(range=[low - pad, high + pad], row=1, col=1)
    fig.update_yaxes(tickprefix="$", tickformat=",.0f", row=1, col=1)
    fig.update_yaxes(tickprefix="$", tickformat=",.0f", row=2, col=1)
    fig.update_xaxes(rangebreaks=rangebreaks(x))
    _style_axes(fig)
    fig.update_layout(height=height, margin={"l": 10, "r": 10, "t": 40, "b": 10}, showlegend=False,
                      title={"text": "Equity and P&L", "x": 0.01, "xanchor": "left"}, hovermode="x unified")
    return fig


# ------------------------------------------------------------------ live chart

class LiveChart(go.FigureWidget):
    """A candlestick FigureWidget that follows the stream: seeded with recent bars, it appends
    each new bar and updates the forming candle in place from trades (and corrects a bar when an
    ``updatedBars`` message revises it).

    Cost per update does not grow with the chart: the forming candle is a one-bar trace of its
    own (restyled at most ``max_hz`` times per second), closed bars go into a short "recent"
    trace, and when that holds ``segment`` bars it is left as it is and a new one is started
    (an ``addTraces`` message with one bar). No message ever carries the history.

    Args:
        api: the client. symbol: e.g. "AAPL". timeframe: "1Min" (the stream's bars are minute bars).
        bars: how many recent bars to seed with (default 120).
        max_hz: forming-candle updates per second (default 4).

    Raises:
        ValueError: a bad symbol/timeframe/bars/max_hz; AlpacaError: the seed bars could not be fetched.
    """

    SEGMENT = 20

    def __init__(self, api: Any, symbol: str, timeframe: str = "1Min", *, bars: int = 120,
                 max_hz: float = 4.0, height: int = 440):
        if timeframe != "1Min":
            raise ValueError(f"LiveChart follows the stream's minute bars; timeframe must be '1Min', got {timeframe!r}")
        if isinstance(bars, bool) or not isinstance(bars, int) or bars < 1:
            raise ValueError(f"bars must be a positive number of bars to seed with, got {bars!r}")
        if isinstance(symbol, str):
            symbol = symbol.strip().upper()
        if not isinstance(symbol, str) or not symbol:
            raise ValueError(f"symbol must be a ticker such as 'AAPL', got {symbol!r}")
        super().__init__(make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.78, 0.22],
                                       vertical_spacing=0.03))
        self._symbol = symbol
        self._lock = threading.RLock()
        self._stream = None
        self._updates = 0
        seed = _seed_bars(api, symbol, bars)
        self._closed: list[dict[str, Any]] = []        # bars of the current "recent" segment
        self._forming: dict[str, Any] | None = None
        self._last_closed: pd.Timestamp | None = seed.index[-1] if len(seed) else None
        x = _x(seed.index)
        candle_style = {"increasing": {"line": {"color": UP, "width": 1}, "fillcolor": UP},
                            "decreasing": {"line": {"color": DOWN, "width": 1}, "fillcolor": DOWN},
                            "showlegend": False, "name": symbol}
        self._candle_style = candle_style
        with self.batch_update():
            self.add_trace(go.Candlestick(x=x, open=seed["open"], high=seed["high"], low=seed["low"],
                                          close=seed["close"], **candle_style), row=1, col=1)
            self.add_trace(_volume_bars(x, seed), row=2, col=1)
            self._forming_ix = (len(self.data), len(self.data) + 1)
            self.add_trace(go.Candlestick(x=[], open=[], high=[], low=[], close=[], **candle_style), row=1, col=1)
            self.add_trace(_volume_bars([], None), row=2, col=1)
            self._recent_ix = (len(self.data), len(self.data) + 1)
            self.add_trace(go.Candlestick(x=[], open=[], high=[], low=[], close=[], **candle_style), row=1, col=1)
            self.add_trace(_volume_bars([], None), row=2, col=1)
            _style_axes(self)
            self.update_yaxes(tickformat="~s", row=2, col=1)
            self.update_layout(height=height, margin={"l": 10, "r": 10, "t": 40, "b": 10}, showlegend=False,
                               title={"text": f"{symbol} · 1 min · live", "x": 0.01, "xanchor": "left"},
                               hovermode="x unified", bargap=0.15, uirevision=symbol)
            self.update_xaxes(type="date", rangebreaks=rangebreaks(_ny_naive(seed.index)))
        self._stream = api.stream(trades=[symbol], bars=[symbol], updated_bars=[symbol])
        self._stream.on("bar", self._on_bar)
        self._stream.on("updated_bar", self._on_bar)
        self._stream.on("trade", self._on_trade, max_hz=max_hz)

    @property
    def symbol(self) -> str:
        return self._symbol

    @property
    def updates(self) -> int:
        """How many restyle/append messages the chart has sent since it was made."""
        return self._updates

    # -- stream callbacks (the stream's fan-out thread)
    def _on_bar(self, bar: dict[str, Any]) -> None:
        ts = bar.get("timestamp")
        if ts is None or pd.isna(ts):
            return
        with self._lock:
            if self._last_closed is not None and ts < self._last_closed:
                return                  # older than the seed: already drawn
            record = {k: bar.get(k) for k in _BAR_COLUMNS}
            record["timestamp"] = ts
            if self._closed and self._closed[-1]["timestamp"] == ts:
                self._closed[-1] = record                 # an updatedBars correction
            elif self._last_closed is not None and ts == self._last_closed and not self._closed:
                return                  # the last seed bar again; its REST value is final
            else:
                self._closed.append(record)
                self._last_closed = ts
            if self._forming is not None and self._forming["timestamp"] <= ts:
                self._forming = None
            self._draw_closed()
            self._draw_forming()

    def _on_trade(self, trade: dict[str, Any]) -> None:
        price, ts = trade.get("price"), trade.get("timestamp")
        if not isinstance(price, (int, float)) or not math.isfinite(price) or ts is None or pd.isna(ts):
            return
        minute = ts.floor("min")
        with self._lock:
            if self._last_closed is not None and minute <= self._last_closed:
                return                  # that minute's bar is already closed
            f = self._forming
            size = trade.get("size") or 0.0
            if f is None or f["timestamp"] != minute:
                self._forming = {"timestamp": minute, "open": price, "high": price, "low": price,
                                 "close": price, "volume": size}
            else:
                f["high"], f["low"], f["close"] = max(f["high"], price), min(f["low"], price), price
                f["volume"] += size
            self._draw_forming()

    # -- drawing (one restyle per call)
    def _draw_forming(self) -> None:
        f = self._forming
        candle, vol = (self.data[i] for i in self._forming_ix)
        with self.batch_update():
            if f is None:
                candle.update(x=[], open=[], high=[], low=[], close=[])
                vol.update(x=[], y=[])
            else:
                x = _x([f["timestamp"]])
                candle.update(x=x, open=[f["open"]], high=[f["high"]], low=[f["low"]], close=[f["close"]])
                vol.update(x=x, y=[f["volume"]], marker_color=[UP if f["close"] >= f["open"] else DOWN])
        self._updates += 1

    def _draw_closed(self) -> None:
        if len(self._closed) > self.SEGMENT:
            # the full segment stays as drawn; a new one starts with the newest bar
            self._closed = self._closed[-1:]
            with self.batch_update():
                self.add_trace(go.Candlestick(x=[], open=[], high=[], low=[], close=[], **self._candle_style),
                               row=1, col=1)
                self.add_trace(_volume_bars([], None), row=2, col=1)
            self._recent_ix = (len(self.data) - 2, len(self.data) - 1)
        frame = pd.DataFrame(self._closed).set_index("timestamp")
        x = _x(frame.index)
        candle, vol = (self.data[i] for i in self._recent_ix)
        with self.batch_update():
            candle.update(x=x, open=frame["open"], high=frame["high"], low=frame["low"], close=frame["close"])
            up = (frame["close"] >= frame["open"]).to_numpy()
            vol.update(x=x, y=frame["volume"], marker_color=np.where(up, UP, DOWN).tolist())
        self._updates += 1

    def close(self) -> None:
        """Stop following the stream (the chart stays as drawn) and close the widget."""
        stream = self.__dict__.get("_stream")
        self.__dict__["_stream"] = None
        if stream is not None:
            stream.close()
        if "_lock" in self.__dict__:           # not when __init__ refused its arguments
            super().close()

    def __repr__(self) -> str:
        return f"<LiveChart {self._symbol} 1Min>"


def _volume_bars(x: Any, frame: pd.DataFrame | None) -> go.Bar:
    if frame is None:
        return go.Bar(x=[], y=[], marker={"color": [], "opacity": 0.55, "line": {"width": 0}},
                      showlegend=False, hovertemplate="vol %{y:,.0f}<extra></extra>")
    up = (frame["close"] >= frame["open"]).to_numpy()
    return go.Bar(x=x, y=frame["volume"], showlegend=False,
                  marker={"color": np.where(up, UP, DOWN).tolist(), "opacity": 0.55, "line": {"width": 0}},
                  hovertemplate="vol %{y:,.0f}<extra></extra>")


def _seed_bars(api: Any, symbol: str, count: int) -> pd.DataFrame:
    """The last ``count`` closed minute bars before the server's clock (one symbol's frame)."""
    now = api.clock()["timestamp"]
    start = now - pd.Timedelta(minutes=count * 3 + 10)       # nights/gaps: ask for more, keep the tail
    frame = api.bars(symbol, "1Min", start=start, end=now, progress=False, cache=False)
    if isinstance(frame.index, pd.MultiIndex):
        frame = frame.droplevel(0) if len(frame) else frame.reset_index(level=0, drop=True)
    frame = frame[frame.index < now.floor("min")]
    return frame.tail(count)
