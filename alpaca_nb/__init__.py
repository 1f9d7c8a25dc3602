"""alpaca_nb: the Alpaca brokerage API as typed pandas frames, notebook widgets, live streams and
Excel formulas, with a local sandbox that needs no keys and no network.

::

    import alpaca_nb as anb

    api = anb.connect()            # keys from APCA_API_KEY_ID/APCA_API_SECRET_KEY; none -> sandbox
    api.account()                  # pd.Series
    api.bars(["AAPL", "MSFT"], "1Min", "2024-01-02", "2024-01-05")   # (symbol, timestamp) frame
    api.buy("AAPL", 10)            # validated, guarded, never duplicated

    anb.positions()                # shortcuts use the client of the last connect() call
"""

from __future__ import annotations

__version__ = "0.1.0"

import functools
import inspect
import logging
import threading
from typing import Any

from . import cache
from ._config import _UNSET, resolve
from .client import Alpaca
from .errors import (
    AlpacaConnectionError,
    AlpacaError,
    AuthenticationError,
    BadRequestError,
    ForbiddenError,
    InsufficientBuyingPower,
    NotFoundError,
    OrderStateUnknown,
    OrderValidationError,
    PreTradeCheckError,
    RateLimitError,
    ServerError,
    UnprocessableError,
)

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "connect", "Alpaca", "default_client", "cache", "__version__",
    # shortcuts on the default client
    "account", "positions", "position", "orders", "order", "assets", "asset", "clock", "calendar",
    "activities", "portfolio_history", "bars", "trades", "quotes", "iter_bars", "iter_trades",
    "iter_quotes", "latest_bars", "latest_trades", "latest_quotes", "snapshots", "corporate_actions",
    "submit_order",
    "buy", "sell", "replace_order", "cancel_order", "cancel_all_orders", "close_position",
    "close_all_positions",
    # errors
    "AlpacaError", "BadRequestError", "AuthenticationError", "ForbiddenError",
    "InsufficientBuyingPower", "NotFoundError", "UnprocessableError", "RateLimitError",
    "ServerError", "AlpacaConnectionError", "OrderStateUnknown", "OrderValidationError",
    "PreTradeCheckError",
]

_default: Alpaca | None = None
_default_lock = threading.Lock()


def connect(*, key_id: str | None = None, secret_key: str | None = None, paper: bool = True,
            sandbox: Any = None, base_url: str | None = None, data_url: str | None = None,
            stream_url: str | None = None, allow_live: bool | None = None, feed: str | None = None,
            max_order_notional: float | None = _UNSET, max_order_qty: float | None = _UNSET,
            price_collar: float | None = _UNSET, check_buying_power: bool = _UNSET,
            guard_cache: float | None = _UNSET, rate_limit: int | dict[str, int] | None = None,
            timeout: tuple[float, float] = (5.0, 30.0), retries: int = 5,
            reconcile_timeout: float = 5.0) -> Alpaca:
    """Connect to Alpaca (paper by default) or to a local sandbox, and make it the default client
    of the module-level shortcuts (``anb.account()``, ``anb.bars(...)``...).

    Which environment: explicit keys/URLs, else the environment variables APCA_API_KEY_ID,
    APCA_API_SECRET_KEY, APCA_API_BASE_URL, APCA_API_DATA_URL (and APCA_API_STREAM_URL); with no
    keys at all, an embedded sandbox is started in this process (a log line says so).
    ``sandbox=True`` forces the embedded sandbox; ``sandbox=<Sandbox>`` uses that one.
    Live trading needs ``paper=False`` and ``allow_live=True`` (or ALPACA_NB_ALLOW_LIVE=1).

    Args:
        feed: default market-data feed ("iex", "sip", ...); None lets the server choose.
        max_order_notional: pre-trade limit in dollars per order (default 1,000,000;
            env ALPACA_NB_MAX_ORDER_NOTIONAL; None turns it off).
        max_order_qty: shares per order (default 100,000; env ALPACA_NB_MAX_ORDER_QTY).
        price_collar: how far from the last trade a limit/stop price may sit on the side where it
            could fill at a bad price (a buy above the market, a sell below), as a fraction
            (default 0.25; env ALPACA_NB_PRICE_COLLAR).
        check_buying_power: compare orders that open or add to a position with the account's
            buying power (default True; env ALPACA_NB_BUYING_POWER_CHECK=off turns it off).
        guard_cache: seconds the guard reuses the account's buying power and positions
            (default 3; env ALPACA_NB_GUARD_CACHE; 0 or None asks every time).
        rate_limit: client-side requests per minute: one number for both APIs, or
            ``{"trading": 200, "data": 10_000}`` (defaults 200 each: Alpaca's trading limit and
            its basic data plan; env ALPACA_NB_TRADING_RATE_LIMIT, ALPACA_NB_DATA_RATE_LIMIT).
        timeout: (connect, read) seconds per request attempt.
        retries: attempts per read request and per order, cancel or close request.
        reconcile_timeout: seconds to keep looking for an order (cancel, close) whose answer was
            lost before resending it or raising OrderStateUnknown (default 5).

    Raises:
        ValueError: inconsistent arguments (half a key pair, a bad limit).
        PermissionError: live trading without the explicit opt-in; nothing is sent.
    """
    global _default
    if retries < 1 or isinstance(retries, bool) or not isinstance(retries, int):
        raise ValueError(f"retries must be a positive whole number of attempts; got {retries!r}")
    if isinstance(reconcile_timeout, bool) or not isinstance(reconcile_timeout, (int, float)) \
            or not reconcile_timeout >= 0:
        raise ValueError(f"reconcile_timeout must be seconds (0 or more); got {reconcile_timeout!r}")
    if not (isinstance(timeout, tuple) and len(timeout) == 2 and all(
            isinstance(t, (int, float)) and not isinstance(t, bool) and t > 0 for t in timeout)):
        raise ValueError(f"timeout must be (connect seconds, read seconds), both positive; got {timeout!r}")
    settings = resolve(key_id=key_id, secret_key=secret_key, paper=paper, sandbox=sandbox,
                       base_url=base_url, data_url=data_url, stream_url=stream_url,
                       allow_live=allow_live, feed=feed, max_order_notional=max_order_notional,
                       max_order_qty=max_order_qty, price_collar=price_collar, rate_limit=rate_limit,
                       check_buying_power=check_buying_power, guard_cache=guard_cache)
    api = Alpaca(settings, timeout=(float(timeout[0]), float(timeout[1])), retries=retries,
                 reconcile_timeout=float(reconcile_timeout))
    with _default_lock:
        _default = api
    return api


def default_client() -> Alpaca:
    """The client the shortcuts use: the last one :func:`connect` returned, or a new
    ``connect()`` (environment keys, else the embedded sandbox) on first use."""
    with _default_lock:
        if _default is not None:
            return _default
    return connect()


def _shortcut(name: str):
    method = getattr(Alpaca, name)

    @functools.wraps(method)
    def shortcut(*args: Any, **kwargs: Any) -> Any:
        return getattr(default_client(), name)(*args, **kwargs)

    params = list(inspect.signature(method).parameters.values())[1:]
    shortcut.__signature__ = inspect.Signature(params)
    shortcut.__doc__ = f"``default_client().{name}(...)``\n\n{method.__doc__ or ''}"
    shortcut.__qualname__ = name
    shortcut.__module__ = __name__
    return shortcut


account = _shortcut("account")
positions = _shortcut("positions")
position = _shortcut("position")
orders = _shortcut("orders")
order = _shortcut("order")
assets = _shortcut("assets")
asset = _shortcut("asset")
clock = _shortcut("clock")
calendar = _shortcut("calendar")
activities = _shortcut("activities")
portfolio_history = _shortcut("portfolio_history")
bars = _shortcut("bars")
trades = _shortcut("trades")
quotes = _shortcut("quotes")
iter_bars = _shortcut("iter_bars")
iter_trades = _shortcut("iter_trades")
iter_quotes = _shortcut("iter_quotes")
latest_bars = _shortcut("latest_bars")
latest_trades = _shortcut("latest_trades")
latest_quotes = _shortcut("latest_quotes")
snapshots = _shortcut("snapshots")
corporate_actions = _shortcut("corporate_actions")
submit_order = _shortcut("submit_order")
buy = _shortcut("buy")
sell = _shortcut("sell")
replace_order = _shortcut("replace_order")
cancel_order = _shortcut("cancel_order")
cancel_all_orders = _shortcut("cancel_all_orders")
close_position = _shortcut("close_position")
close_all_positions = _shortcut("close_all_positions")


def __getattr__(name: str) -> Any:
    """``anb.widgets`` and ``anb.charts`` are imported on first use (one line opens the
    dashboard: ``anb.widgets.Dashboard(api)``), so ``import alpaca_nb`` stays light; so is
    ``anb.main``, the entry point of the Excel workbook's buttons (:func:`alpaca_nb.xl.main`)."""
    if name in ("widgets", "charts"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    if name == "main":          # the Excel buttons: xlwings' SampleCall runs alpaca_nb.main()
        from .xl import main

        return main
    raise AttributeError(f"module 'alpaca_nb' has no attribute {name!r}")
