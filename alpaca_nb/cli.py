"""The ``alpaca-nb`` command: ``sandbox`` (run the local server), ``relay`` (share one stream
connection between processes), ``demo`` (headless tour)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence


def _sandbox_parser(sub) -> None:
    p = sub.add_parser("sandbox", help="run the local Alpaca-compatible sandbox server",
                       description="Serve Alpaca's trading and market-data APIs (REST and both "
                                   "WebSockets) on one loopback port until interrupted.")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 = any free port)")
    p.add_argument("--seed", type=int, default=7, help="seed of the synthetic market (default 7)")
    p.add_argument("--db", metavar="FILE", help="SQLite file that keeps accounts, orders and "
                                                "positions across restarts (default: in memory)")
    p.add_argument("--market", choices=("always-open", "calendar"), default="always-open",
                   help="always-open (24/7, default) or calendar (NYSE sessions)")
    p.add_argument("--rate-limit", type=int, metavar="N",
                   help="answer 429 past N requests per minute per key (default: off)")
    p.add_argument("--chaos", metavar="SPEC",
                   help="fault injection, e.g. '503=0.1,lose=0.3,scope=/v2/orders,ws_drop=30' "
                        "(see alpaca_nb.sandbox.Chaos)")
    p.add_argument("--start", metavar="TIME", help="virtual clock start, RFC-3339 (default: now)")
    p.add_argument("--speed", type=float, default=1.0, help="virtual seconds per real second")
    p.add_argument("--quote-rate", type=float, metavar="N",
                   help="flood each data-stream connection with N quotes/s (load tests)")
    p.add_argument("--data-plan", choices=("unlimited", "basic"), default="unlimited",
                   help="market-data plan of the default account: unlimited (default) or basic "
                        "(Alpaca's free plan: no real-time SIP, 30 stream symbols)")
    p.add_argument("--log-level", default="INFO")


def run_sandbox(args: argparse.Namespace) -> int:
    from aiohttp import web

    from .sandbox.app import SandboxConfig, create_app

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    try:
        config = SandboxConfig(seed=args.seed, market=args.market, db=args.db,
                               rate_limit=args.rate_limit, chaos=args.chaos, start=args.start,
                               speed=args.speed, quote_rate=args.quote_rate,
                               data_plan=args.data_plan)
    except ValueError as exc:
        print(f"alpaca-nb sandbox: {exc}", file=sys.stderr)
        return 2

    async def serve() -> None:
        runner = web.AppRunner(create_app(config), handle_signals=False, access_log=None,
                                shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, args.host, args.port)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        host = f"[{args.host}]" if ":" in args.host else args.host
        print(f"alpaca-nb sandbox listening on http://{host}:{port} "
              f"(streams ws://{host}:{port}/v2/iex and /stream; market {config.market}, "
              f"seed {config.seed}, key id {config.key_id}, data plan {config.data_plan})",
              flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    try:
        asyncio.run(serve())
    except OSError as exc:
        print(f"alpaca-nb sandbox: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


RELAY_HELP = """\
Hold the account's stream connections once (market data and trade updates) and serve Alpaca's
own stream protocol to any number of local clients: alpaca_nb streams in other notebooks and
processes (alpaca_nb.connect() finds the relay by itself), the Excel live cells, and the
official alpaca-py StockDataStream / TradingStream with
url_override="ws://127.0.0.1:8766/v2/iex" or ".../stream".

Keys and URLs come from the environment, as connect() reads them (APCA_API_KEY_ID,
APCA_API_SECRET_KEY, APCA_API_BASE_URL, APCA_API_STREAM_URL); with no keys the relay serves an
embedded sandbox. Clients authenticate with the same keys (or with the token in
ALPACA_NB_RELAY_TOKEN). Runs in the foreground until Ctrl-C or SIGTERM, then closes every
connection and removes its discovery file.

Redis: --publish also publishes every upstream message to Redis (a channel per feed and symbol,
alpaca-nb:v2/iex:AAPL, and alpaca-nb:trade_updates); --source runs a relay with no upstream of
its own that serves its clients from the publishing relay (their subscriptions reach it through
Redis). Trade updates are private to the account: protect the trade_updates channel with Redis
ACLs, and use rediss:// across machines.
"""


def _relay_parser(sub) -> None:
    p = sub.add_parser("relay", help="share one Alpaca stream connection between processes",
                       description=RELAY_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to bind (default 127.0.0.1; anything else exposes the relay "
                        "to the network)")
    p.add_argument("--port", type=int, default=8766, help="port (default 8766; 0 = any free port)")
    p.add_argument("--feed", default="iex",
                   choices=("iex", "sip", "delayed_sip", "test", "boats", "overnight"),
                   help="market-data feed connected at start (default iex; the others connect "
                        "when a client asks for them)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--publish", metavar="REDIS_URL",
                       help="also publish every upstream message to Redis (redis://[:password@]host:port/db "
                            "or rediss://)")
    group.add_argument("--source", metavar="REDIS_URL",
                       help="no upstream connection: serve clients from the relay publishing to this Redis")
    p.add_argument("--redis-prefix", default="alpaca-nb", help="prefix of the Redis channels (default alpaca-nb)")
    p.add_argument("--no-discovery", action="store_true",
                   help="do not write the discovery file (connect() then needs ALPACA_NB_RELAY)")
    p.add_argument("--log-level", default="INFO")


def run_relay(args: argparse.Namespace) -> int:
    from .relay import Relay, RelayError

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    try:
        relay = Relay(host=args.host, port=args.port, feed=args.feed, publish=args.publish,
                      source=args.source, redis_prefix=args.redis_prefix,
                      discovery=not args.no_discovery)
    except (ValueError, TypeError, PermissionError) as exc:
        print(f"alpaca-nb relay: {exc}", file=sys.stderr)
        return 2

    def ready(r) -> None:
        print(f"alpaca-nb relay listening on {r.url} (data {r.url}/v2/{r.feed}, trade updates "
              f"{r.url}/stream; Ctrl-C to stop)", flush=True)

    try:
        relay.serve_forever(on_ready=ready)
    except RelayError as exc:
        print(f"alpaca-nb relay: {exc}", file=sys.stderr)
        return 1
    print("alpaca-nb relay: stopped", flush=True)
    return 0


def _demo_parser(sub) -> None:
    p = sub.add_parser("demo", help="headless tour against the embedded sandbox (no keys needed)",
                       description="Start the embedded sandbox, print the account, positions and "
                                   "a bars frame, place an order and watch it fill on the "
                                   "trade-updates stream, stream live quotes for a few seconds, and "
                                   "write a candlestick chart to an HTML file.")
    p.add_argument("--symbol", default="AAPL", help="the stock to trade (default AAPL)")
    p.add_argument("--qty", type=int, default=10, help="shares to buy (default 10)")
    p.add_argument("--seconds", type=float, default=3.0,
                   help="how long to stream quotes (default 3)")
    p.add_argument("--chart", default=None, metavar="PATH",
                   help="where to write the chart (default: alpaca-nb-demo-chart.html in the temporary folder)")


def write_chart(api, symbol: str, end, path: str | None) -> None:
    """Three months of daily candles with volume and a 20-day average, as a standalone HTML file
    (plotly.js included, so it opens offline)."""
    import os
    import tempfile

    import pandas as pd

    from .charts import candles

    path = path or os.path.join(tempfile.gettempdir(), "alpaca-nb-demo-chart.html")
    bars = api.bars(symbol, "1Day", end - pd.Timedelta(days=92), end.date(), progress=False)
    candles(bars, ma=20, title=f"{symbol}, daily").write_html(path, include_plotlyjs=True)
    print(f"\n== chart ==\n{len(bars)} daily candles of {symbol} written to {path}")


def run_demo(args: argparse.Namespace) -> int:
    """The tour: every step prints what it did; exit status 0 when the order filled."""
    import time

    import pandas as pd

    import alpaca_nb as anb

    def show(title: str, obj) -> None:
        print(f"\n== {title} ==")
        with pd.option_context("display.width", 120, "display.max_columns", 10,
                               "display.max_rows", 20, "display.float_format", "{:,.2f}".format):
            print(obj)

    try:
        api = anb.connect(sandbox=True)
        print(f"alpaca-nb demo: connected to the embedded sandbox at {api.settings.base_url} "
              f"(mode {api.mode}; simulated market, no real money, no keys needed)")
        account = api.account()
        show("account", account[["account_number", "status", "cash", "buying_power", "equity"]])
        show("positions (before)", api.positions()[["qty", "avg_entry_price", "market_value"]])
        end = pd.Timestamp.now(tz="America/New_York").normalize() - pd.Timedelta(days=1)
        bars = api.bars([args.symbol, "MSFT"], "1Day", end - pd.Timedelta(days=6), end.date(),
                        tz="America/New_York", progress=False)
        show(f"daily bars, last week ({len(bars)} rows, index {list(bars.index.names)})", bars)
        write_chart(api, args.symbol, end, args.chart)
        symbols = [args.symbol, "MSFT"]
        with api.stream(quotes=symbols, trades=symbols, trade_updates=True) as stream:
            order = api.buy(args.symbol, args.qty)
            show(f"order placed (client_order_id {order['client_order_id']})",
                 order[["symbol", "side", "qty", "type", "status"]])
            deadline = time.monotonic() + 30      # the fill arrives on the trade-updates stream
            while time.monotonic() < deadline:
                book = stream.orders.df
                if order.name in book.index and book.loc[order.name, "status"] == "filled":
                    break
                time.sleep(0.05)
            order = api.order(order.name)
            show("order now", order[["symbol", "status", "filled_qty", "filled_avg_price", "filled_at"]])
            show("positions (after)", api.positions()[["qty", "avg_entry_price", "market_value",
                                                       "unrealized_pl"]])
            time.sleep(args.seconds)
            live = stream.table.df[["bid_price", "ask_price", "last_price", "updates", "updated_at"]]
            show(f"live quotes and trades ({args.seconds:g} s of streaming, status {stream.status})", live)
    except Exception as exc:     # the CLI reports any failure plainly and exits non-zero
        print(f"alpaca-nb demo failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if order["status"] != "filled":
        print(f"alpaca-nb demo: the order did not fill (status {order['status']})", file=sys.stderr)
        return 1
    print(f"\nalpaca-nb demo: done. The order filled: {order['filled_qty']:g} {args.symbol} "
          f"at {order['filled_avg_price']:,.2f}.")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="alpaca-nb", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _sandbox_parser(sub)
    _relay_parser(sub)
    _demo_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "sandbox":
        return run_sandbox(args)
    if args.command == "relay":
        return run_relay(args)
    if args.command == "demo":
        return run_demo(args)
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
