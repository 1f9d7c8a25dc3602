"""Charts: candles (rangebreaks, volume, moving averages, small multiples), equity_curve, and the
LiveChart following a fast sandbox clock (a minute bar closes every wall second)."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import plotly.graph_objects as go
import pytest
from _stream_helpers import FAST, connect, wait_for
from conftest import new_account

from alpaca_nb.charts import LiveChart, candles, equity_curve, rangebreaks
from alpaca_nb.sandbox import Sandbox


@pytest.fixture(scope="module")
def calendar_api():
    """A sandbox with the real exchange calendar (nights, weekends and holidays have no bars)."""
    with Sandbox(seed=7, market="calendar", start="2024-03-04T15:00:00Z", speed=60) as sb:
        client = connect(new_account(sb))
        yield client
        client.close()


@pytest.fixture(scope="module")
def fast():
    with Sandbox(**FAST) as sb:
        yield sb


def test_daily_candles_skip_weekends_and_holidays_and_draw_volume_and_averages(calendar_api):
    bars = calendar_api.bars("AAPL", "1Day", "2023-12-01", "2024-02-29", progress=False)
    fig = candles(bars, ma=(5, 20))
    kinds = [type(t).__name__ for t in fig.data]
    assert kinds == ["Candlestick", "Scatter", "Scatter", "Bar"]
    candle, ma5, ma20, volume = fig.data
    assert len(candle.x) == len(bars) == len(volume.y)
    assert list(candle.close) == list(bars["close"])
    assert ma20.name == "MA 20" and pd.isna(ma20.y[18]) and ma20.y[19] == pytest.approx(bars["close"].iloc[:20].mean())
    breaks = [b.to_plotly_json() for b in fig.layout.xaxis.rangebreaks]
    assert {"bounds": ["sat", "mon"]} in breaks
    holidays = next(b["values"] for b in breaks if "values" in b)
    assert {"2023-12-25", "2024-01-01", "2024-01-15", "2024-02-19"} <= set(holidays)
    assert fig.layout.xaxis2.rangebreaks == fig.layout.xaxis.rangebreaks       # the volume axis too
    assert fig.layout.title.text == "AAPL"
    assert fig.layout.template.to_plotly_json() == go.Figure().layout.template.to_plotly_json()
    # readable in a light and in a dark notebook: no background of its own, mid-grey text
    assert fig.layout.paper_bgcolor == fig.layout.plot_bgcolor == "rgba(0,0,0,0)"


def test_intraday_candles_hide_the_nights_in_new_york_time(calendar_api):
    bars = calendar_api.bars("MSFT", "5Min", "2024-02-26", "2024-03-01", progress=False)
    fig = candles(bars)
    first = pd.Timestamp(fig.data[0].x[0])
    assert first.tzinfo is None                                     # New York wall clock
    ny = bars.index.get_level_values("timestamp").tz_convert("America/New_York")
    assert first == ny[0].tz_localize(None)
    (hours,) = [b for b in fig.layout.xaxis.rangebreaks if b.pattern == "hour"]
    start = ny.hour.min() + ny.minute[ny.hour == ny.hour.min()].min() / 60
    assert hours.bounds[1] == pytest.approx(start)
    assert hours.bounds[0] == pytest.approx((ny.hour + ny.minute / 60).max() + 5 / 60)


def test_small_multiples_one_panel_per_symbol(calendar_api):
    bars = calendar_api.bars(["AAPL", "MSFT", "SPY", "NVDA"], "1Day", "2024-01-02", "2024-02-29", progress=False)
    fig = candles(bars, ma=10, cols=2)
    candles_ = [t for t in fig.data if isinstance(t, go.Candlestick)]
    symbols = list(dict.fromkeys(bars.index.get_level_values("symbol")))
    assert sorted(symbols) == ["AAPL", "MSFT", "NVDA", "SPY"]
    assert [c.name for c in candles_] == symbols
    assert len({c.xaxis for c in candles_}) == 4
    titles = [a.text for a in fig.layout.annotations]
    assert titles == symbols
    assert sum(isinstance(t, go.Bar) for t in fig.data) == 4
    assert [t.showlegend for t in fig.data if isinstance(t, go.Scatter)] == [True, False, False, False]


def test_rangebreaks_of_data_without_gaps_and_bad_input():
    every_day = pd.date_range("2024-01-01", periods=30, freq="D")
    assert rangebreaks(every_day) == []
    assert rangebreaks(every_day[:1]) == []
    with pytest.raises(TypeError, match="bars must be a DataFrame"):
        candles([1, 2, 3])
    with pytest.raises(ValueError, match="missing column"):
        candles(pd.DataFrame({"open": [1.0]}, index=pd.DatetimeIndex(["2024-01-02"])))
    frame = pd.DataFrame({c: [1.0, 2.0] for c in ("open", "high", "low", "close", "volume")},
                         index=pd.DatetimeIndex(["2024-01-02", "2024-01-03"]))
    with pytest.raises(ValueError, match="ma must be"):
        candles(frame, ma=1)
    with pytest.raises(ValueError, match="cols must be"):
        candles(frame, cols=0)
    assert len(candles(frame, volume=False).data) == 1


def test_equity_curve_after_trading(fast):
    api = connect(new_account(fast))
    try:
        api.buy("AAPL", 50)
        wait_for(lambda: not api.positions().empty, 20, "the fill")
        fig = equity_curve(api, period="1D")
        line, pl = fig.data
        assert line.name == "Equity" and len(line.y) >= 1 and pl.name == "P&L"
        assert fig.layout.yaxis.tickprefix == "$"
    finally:
        api.close()


def test_live_chart_appends_bars_and_updates_the_forming_candle_without_touching_the_history(fast):
    api = connect(new_account(fast))
    chart = LiveChart(api, "AAPL", bars=60)
    try:
        seed, seed_volume, forming, forming_volume, recent, recent_volume = chart.data
        assert len(seed.x) == 60 and isinstance(seed, go.Candlestick) and isinstance(seed_volume, go.Bar)
        history = (tuple(seed.x), tuple(seed.close))
        wait_for(lambda: len(chart.data[4].x) >= 3, 20, "three new closed bars")
        wait_for(lambda: len(chart.data[2].x) == 1, 20, "a forming candle")
        assert (tuple(chart.data[0].x), tuple(chart.data[0].close)) == history     # never resent
        new_times = [pd.Timestamp(x) for x in chart.data[4].x]
        assert new_times == sorted(new_times) and new_times[0] > pd.Timestamp(seed.x[-1])
        assert pd.Timestamp(chart.data[2].x[0]) >= new_times[-1]
        assert chart.data[2].high[0] >= max(chart.data[2].open[0], chart.data[2].close[0])
        # after SEGMENT closed bars the recent trace is left alone and a new one starts
        wait_for(lambda: len(chart.data) >= 8, 60, "a second recent segment")
        assert len(chart.data[4].x) == LiveChart.SEGMENT
        assert chart.updates > 3
    finally:
        chart.close()
        api.close()


def test_live_chart_rejects_bad_arguments(fast):
    api = connect(new_account(fast))
    try:
        with pytest.raises(ValueError, match="timeframe must be '1Min'"):
            LiveChart(api, "AAPL", "1Day")
        with pytest.raises(ValueError, match="bars must be"):
            LiveChart(api, "AAPL", bars=0)
        with pytest.raises(ValueError, match="symbol must be"):
            LiveChart(api, "  ")
    finally:
        api.close()


def test_demo_writes_a_chart_to_html(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("APCA_")}
    env["ALPACA_NB_CACHE_DIR"] = str(tmp_path / "demo-cache")
    path = tmp_path / "chart.html"
    done = subprocess.run([sys.executable, "-m", "alpaca_nb.cli", "demo", "--seconds", "0.2", "--chart", str(path)],
                          capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode == 0, done.stderr
    assert f"written to {path}" in done.stdout
    page = path.read_text()
    assert '"type":"candlestick"' in page and "AAPL, daily" in page and "MA 20" in page
