"""Order tickets that recalculation cannot duplicate.

``ALPACA_TICKET`` only *stages* a ticket: it validates the order (and runs the pre-trade guard)
and files it in this process under a ticket id derived from the order's content, the account
and a nonce the sheet chooses. Excel may call it any number of times: the same arguments give the
same id and nothing reaches the account. The Send button (:func:`send`) places each staged ticket
shown on the sheet with ``client_order_id = ticket id``; Alpaca refuses a second order with the
same client_order_id, and the client first asks whether that order exists, so a second press, a
double click or a new Python process cannot place it twice. A new order with the same content
needs a new nonce.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from ..errors import AlpacaError, NotFoundError
from ..orders import order_body

log = logging.getLogger(__name__)

__all__ = ["READY", "TICKET_ID", "Grid", "Ticket", "Tickets"]

TICKET_ID = re.compile(r"^xl-[0-9a-f]{24}$")
READY = "ready"
RECHECK_SECONDS = 5.0      # a ticket the guard refused is checked again after this long


class Grid(Protocol):
    """A sheet as the macros see it: its values from A1, and block writes at 0-based offsets."""

    def values(self) -> list[list[Any]]: ...

    def write(self, row: int, column: int, values: list[list[Any]]) -> None: ...


@dataclass(frozen=True)
class Ticket:
    ticket_id: str
    order: dict[str, Any]        # keyword arguments of api.submit_order (client_order_id included)
    state: str                   # "ready" or why not
    checked_at: float = 0.0      # time.monotonic() of the guard's check


def _scope(api: Any) -> str:
    settings = api.settings
    return f"{settings.base_url}|{settings.key_id}"


class Tickets:
    """The staged tickets of this process and the orders sent for them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._staged: dict[str, Ticket] = {}
        self._sent: dict[str, str] = {}         # ticket id -> order id
        self._send_lock = threading.Lock()

    def stage(self, api: Any, order: dict[str, Any], *, nonce: str) -> Ticket:
        """Validate ``order`` (submit_order keyword arguments without client_order_id) and file it.

        Raises:
            OrderValidationError: a bad order argument (no ticket is made).
        """
        body = order_body(order["symbol"], order.get("qty"), order.get("side"), order.get("type"),
                                  order.get("time_in_force"), limit_price=order.get("limit_price"),
                                  stop_price=order.get("stop_price"),
                                  extended_hours=order.get("extended_hours", False),
                                  client_order_id="x")
        body.pop("client_order_id")
        order = dict(order, time_in_force=body["time_in_force"])     # the default made explicit
        content = orjson.dumps({"order": body, "nonce": nonce, "account": _scope(api)},
                               option=orjson.OPT_SORT_KEYS, default=str)
        ticket_id = "xl-" + hashlib.sha256(content).hexdigest()[:24]
        with self._lock:
            known = self._staged.get(ticket_id)
        if known is not None and (known.state == READY or time.monotonic() - known.checked_at < RECHECK_SECONDS):
            return known                         # a recalculation storm stops here
        state = READY
        try:
            api.check_order(dict(body, client_order_id=ticket_id))    # the pre-trade guard
        except AlpacaError as exc:
            state = exc.message
        except ValueError as exc:                # PreTradeCheckError is a ValueError too
            state = str(exc)
        ticket = Ticket(ticket_id, dict(order, client_order_id=ticket_id), state, time.monotonic())
        with self._lock:
            current = self._staged.get(ticket_id)
            if current is None or current.state != READY:
                self._staged[ticket_id] = ticket
            return self._staged[ticket_id]

    def get(self, ticket_id: str) -> Ticket | None:
        with self._lock:
            return self._staged.get(ticket_id)

    def send(self, api: Any, grid: Grid, *, confirm: Callable[[str], bool] | None = None) -> list[tuple[str, str, str]]:
        """Place the ready tickets shown on ``grid`` (a cell holding a ticket id with "ready" to
        its right), each once, and write [order id, status] into the two cells right of the state
        cell. In live mode ``confirm(message)`` must return True first, else nothing is sent.

        Returns (ticket id, order id or "", status or error text) per ticket found.
        """
        found = _tickets_on(grid.values())
        if not found:
            return []
        with self._send_lock:
            fresh = [tid for tid, _, _ in found if tid not in self._sent]
            if api.mode == "live" and fresh:
                message = (f"Send {len(fresh)} order(s) to the LIVE account (real money)?\n"
                           + "\n".join(_describe(self.get(t)) for t in fresh))
                if confirm is None or not confirm(message):
                    log.info("send_tickets: live sending was not confirmed; nothing sent")
                    return []
            results = []
            for ticket_id, row, column in found:
                order_id, status = self._send_one(api, ticket_id)
                grid.write(row, column + 2, [[order_id or None, status]])
                results.append((ticket_id, order_id, status))
            return results

    def _send_one(self, api: Any, ticket_id: str) -> tuple[str, str]:
        ticket = self.get(ticket_id)
        try:
            try:
                placed = api.order(client_order_id=ticket_id)      # sent before (or elsewhere)
            except NotFoundError:
                if ticket is None:
                    return "", ("#ALPACA! this ticket was not staged in this Python session; "
                                "recalculate (Refresh) and send again")
                if ticket.state != READY:
                    return "", f"#ALPACA! {ticket.state}"
                placed = api.submit_order(**ticket.order)
        except AlpacaError as exc:
            return "", f"#ALPACA! {exc.message}"
        except (ValueError, TypeError) as exc:
            return "", f"#ALPACA! {exc}"
        order_id = str(placed.get("id"))
        with self._lock:
            self._sent[ticket_id] = order_id
        return order_id, str(placed.get("status"))


def _tickets_on(values: list[list[Any]]) -> list[tuple[str, int, int]]:
    """(ticket id, row, column) of each ready ticket on the sheet, first occurrence only."""
    out: list[tuple[str, int, int]] = []
    seen: set[str] = set()
    for r, row in enumerate(values):
        for c, value in enumerate(row):
            if isinstance(value, str) and TICKET_ID.match(value) and value not in seen:
                state = row[c + 1] if c + 1 < len(row) else None
                if state == READY:
                    seen.add(value)
                    out.append((value, r, c))
    return out


def _describe(ticket: Ticket | None) -> str:
    if ticket is None:
        return "?"
    o = ticket.order
    price = "".join(f" {k.split('_')[0]} {o[k]}" for k in ("limit_price", "stop_price") if o.get(k) is not None)
    return f"{o['side']} {o.get('qty')} {o['symbol']} {o['type']}{price} {o['time_in_force']}"
