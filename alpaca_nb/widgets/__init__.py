"""Notebook trading panels on ipywidgets 8 (and anywidget for the quote board).

::

    from alpaca_nb.widgets import OrderTicket, PositionsPanel, OrdersPanel, AccountCard, QuoteBoard, Dashboard
    Dashboard(api)                        # everything in one layout
    OrderTicket(api, "AAPL")              # one panel

Every panel takes the client (``api = alpaca_nb.connect()``), does its REST work on a small
worker pool of its own (a click never blocks the kernel), follows the stream from the stream's
fan-out thread, shows errors as one readable line, and has ``close()``. The secret key is never
put into widget state (it stays in the client).

Layout of this package:

* ``_base``     the panel base: worker pool, messages, style sheet, mode badge, formatting
* ``_ticket``   OrderTicket
* ``_panels``   PositionsPanel, OrdersPanel, AccountCard
* ``_board``    QuoteBoard (anywidget: ``_board.js``, ``_board.css``)
"""

from __future__ import annotations

from typing import Any

import ipywidgets as _w

from ._base import Panel, style_sheet
from ._board import QuoteBoard
from ._board import _symbols as _board_symbols
from ._panels import AccountCard, OrdersPanel, PositionsPanel
from ._ticket import OrderTicket

__all__ = ["AccountCard", "Dashboard", "OrderTicket", "OrdersPanel", "PositionsPanel", "QuoteBoard"]

DEFAULT_SYMBOLS = ("AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "META", "TSLA", "SPY")


class Dashboard(_w.VBox):
    """The account card on top, the quote board beside the order ticket, positions and orders in
    tabs below; a click on a board row loads the symbol into the ticket.

    Args:
        api: the client. symbols: the board's symbols (default: eight large caps and SPY).
    """

    def __init__(self, api: Any, symbols: Any = DEFAULT_SYMBOLS, *, max_hz: float = 4.0):
        symbols = _board_symbols(symbols)
        self.account = AccountCard(api)
        self.ticket = OrderTicket(api, symbol=symbols[0])
        self.board = QuoteBoard(api, symbols, max_hz=max_hz, ticket=self.ticket)
        self.positions = PositionsPanel(api)
        self.orders = OrdersPanel(api)
        self.tabs = _w.Tab(children=(self.positions, self.orders))
        self.tabs.set_title(0, "Positions")
        self.tabs.set_title(1, "Orders")
        middle = _w.HBox([self.board, self.ticket], layout=_w.Layout(align_items="flex-start",
                                                                     flex_flow="row wrap"))
        super().__init__([style_sheet(), self.account, middle, self.tabs], layout=_w.Layout())
        self.add_class("anb-dashboard")

    def close(self) -> None:
        """Close every panel (their streams and workers) and the layout."""
        for name in ("account", "ticket", "board", "positions", "orders"):
            panel = getattr(self, name, None)
            if panel is not None:
                panel.close()
        super().close()

    def __repr__(self) -> str:
        return f"<Dashboard {self.ticket.api.mode}>"


del Panel
