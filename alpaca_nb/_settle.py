"""Requests that change orders or positions, made safe when their answer is lost.

A POST, PATCH or DELETE whose answer never arrived (the connection dropped, the read timed out, a
5xx came back) may have acted on the server, or may still be queued there. Sending it again
blindly can act twice or report the wrong outcome ("already canceled" for a cancel that worked,
an empty list for a cancel-all that canceled everything), so :class:`Settler` first looks for its
effect, with backoff, for a bounded time; only then is the request sent again, and only where
a repeat cannot act twice. When the effect still cannot be seen, it raises
:class:`~alpaca_nb.errors.OrderStateUnknown` saying how to check, never "nothing happened".
:func:`_multi_status` turns the 207 multi-status answers of cancel-all and close-all (settled
rows included) into frames.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any

import pandas as pd

from . import frames
from .errors import (
    AlpacaConnectionError,
    AlpacaError,
    OrderStateUnknown,
    RateLimitError,
    ServerError,
    outcome_unknown,
)

log = logging.getLogger(__name__)

__all__ = ["NOT_ACTED", "NOT_SEEN", "Settler", "created_since"]

NOT_ACTED = "no attempt was acted on (each was refused with 429 or never reached the server)"

NOT_SEEN: Any = type("NotSeen", (), {"__repr__": lambda self: "NOT_SEEN"})()
SINCE_SLACK_S = 1.0       # how far before the call's start an order found afterwards may be dated


class Settler:
    """Runs one state-changing request to a known outcome.

    Args:
        transport: the :class:`~alpaca_nb._http.Transport`.
        rounds: attempts of the request itself.
        window: seconds to keep looking for the effect of a request whose answer was lost
            (the request may still be queued on the server).
        backoff: (first, cap) seconds between looks and between attempts.
    """

    def __init__(self, transport, *, rounds: int = 5, window: float = 5.0,
                 backoff: tuple[float, float] = (0.25, 2.0), sleep: Callable[[float], None] = time.sleep):
        self.transport = transport
        self.rounds = rounds
        self.window = window
        self.backoff = backoff
        self.sleep = sleep
        self._random = random.Random()

    def run(self, send: Callable[[], Any], *, look: Callable[[], Any] | None, resend: bool,
            unknown: Callable[[], str], refused: Callable[[AlpacaError, bool], Any] | None = None,
            nothing_done: str | None = None, client_order_id: str | None = None,
            poll: bool = True) -> tuple[Any, bool]:
        """Send until the outcome is known; returns ``(result, some_answer_was_lost)``.

        Args:
            send: makes the request once (no transport retries) and returns its result.
            look: after a lost answer, the request's effect if it can be seen, else NOT_SEEN
                (None: nothing to look at; the request is simply sent again).
            resend: whether sending again after a lost answer cannot act twice.
            unknown: the message when the outcome stays unknown (says how to check).
            refused: called with a 4xx error and whether an earlier answer was lost; returns a
                result, or NOT_SEEN to raise the error.
            nothing_done: a note for the final error when no attempt can have reached the server.
            poll: keep looking for ``window`` seconds (False: look once, then send again).

        Raises:
            OrderStateUnknown: an answer was lost and the effect could not be seen.
            AlpacaError: a refusal (4xx), or the last failure when none could have acted.
        """
        lost = False
        failure: AlpacaError | None = None
        deadline: float | None = None
        attempt = 0
        for attempt in range(1, self.rounds + 1):
            try:
                return send(), lost
            except (AlpacaConnectionError, ServerError, RateLimitError) as exc:
                failure = exc
            except AlpacaError as exc:
                if lost and look is not None:
                    found = self._look(look)          # refused because the lost one worked?
                    if found is not NOT_SEEN:
                        return found, lost
                if refused is not None:
                    result = refused(exc, lost)
                    if result is not NOT_SEEN:
                        return result, lost
                raise
            if outcome_unknown(failure):
                lost = True
                log.warning("%s %s: %s (attempt %d of %d); looking for its effect before anything "
                            "else", failure.method, failure.path, failure, attempt, self.rounds)
                if look is not None:
                    if deadline is None:
                        deadline = time.monotonic() + (self.window if poll else 0.0)
                    found = self._poll(look, deadline)
                    if found is not NOT_SEEN:
                        return found, lost
                if not resend:
                    break
            if attempt < self.rounds:
                self.sleep(self._delay(attempt, failure))
        assert failure is not None
        if lost:
            raise OrderStateUnknown(unknown(), status=failure.status, code=failure.code,
                                    body=failure.body, method=failure.method, path=failure.path,
                                    attempts=attempt, client_order_id=client_order_id) from failure
        extra = {"retry_after": failure.retry_after} if isinstance(failure, RateLimitError) else {}
        if isinstance(failure, AlpacaConnectionError):
            extra = {"sent": failure.sent}
        final = type(failure)(failure.message, status=failure.status, code=failure.code,
                              body=failure.body, method=failure.method, path=failure.path,
                              attempts=attempt, **extra)
        if nothing_done:
            final.add_note(f"alpaca_nb: {nothing_done}")
        raise final from failure

    def server_since(self, started: float) -> pd.Timestamp:
        """The server's time (UTC) when a call that began at monotonic ``started`` began, less
        a little slack: what the call created is dated after it (GET /v2/clock)."""
        body = self.transport.trading("GET", "/v2/clock") or {}
        now = pd.Timestamp(body["timestamp"]).tz_convert("UTC")
        return now - pd.Timedelta(seconds=time.monotonic() - started + SINCE_SLACK_S)

    def _poll(self, look: Callable[[], Any], deadline: float) -> Any:
        """Look until the effect shows or the deadline passes (at least once)."""
        delay = self.backoff[0]
        while True:
            found = self._look(look)
            left = deadline - time.monotonic()
            if found is not NOT_SEEN or left <= 0:
                return found
            self.sleep(min(delay, left))
            delay = min(delay * 2, self.backoff[1])

    @staticmethod
    def _look(look: Callable[[], Any]) -> Any:
        try:
            return look()
        except (AlpacaConnectionError, ServerError, RateLimitError) as exc:
            log.info("looking for the effect of a lost answer failed: %s", exc)
            return NOT_SEEN

    def _delay(self, attempt: int, failure: AlpacaError) -> float:
        base, cap = self.backoff
        delay = self._random.uniform(0, min(cap, base * 2 ** (attempt - 1)))
        if isinstance(failure, RateLimitError) and failure.retry_after:
            delay = max(delay, failure.retry_after)
        return delay


def created_since(order: dict[str, Any], since: pd.Timestamp) -> bool:
    """Whether an order (JSON) was created at or after ``since``."""
    stamp = order.get("created_at") or order.get("submitted_at")
    try:
        return stamp is not None and pd.Timestamp(stamp).tz_convert("UTC") >= since
    except (TypeError, ValueError):
        return False


_MULTI_CONTEXT = ("available", "existing_qty", "held_for_orders")
_FINAL_STATUSES = frozenset({"filled", "canceled", "expired", "replaced", "rejected", "done_for_day",
                             "pending_cancel", "stopped", "suspended"})


def _multi_status(body: list[dict[str, Any]], key: str) -> pd.DataFrame:
    """A 207 multi-status answer as a frame: ``key`` (id or symbol), status (HTTP), code,
    message, the refusal's context fields (close-all), then the order fields (``order_id``,
    ``order_status`` and the columns of :meth:`Alpaca.orders`), NA where Alpaca sent none."""
    heads, orders = [], []
    for item in body:
        inner = item.get("body") if isinstance(item.get("body"), dict) else {}
        is_order = "client_order_id" in inner or "submitted_at" in inner
        head = {key: item.get(key), "status": item.get("status"),
                "code": None if is_order else inner.get("code"),
                "message": None if is_order else inner.get("message")}
        if key == "symbol":
            for name in _MULTI_CONTEXT:
                head[name] = None if is_order else inner.get(name)
        heads.append(head)
        orders.append(inner if is_order else {})
    columns = [key, "status", "code", "message"] + (list(_MULTI_CONTEXT) if key == "symbol" else [])
    frame = pd.DataFrame({
        name: (pd.Series([h[name] for h in heads], dtype=frames.STR) if name in (key, "message") else
               pd.array([h[name] for h in heads], dtype="Int64") if name in ("status", "code") else
               pd.to_numeric(pd.Series([h[name] for h in heads], dtype=object), errors="coerce").astype("float64"))
        for name in columns}, columns=columns)
    detail = frames.orders_frame(orders).reset_index().rename(columns={"id": "order_id", "status": "order_status"})
    detail = detail.drop(columns=[c for c in ("symbol",) if key == "symbol"] + (["order_id"] if key == "id" else []))
    return pd.concat([frame, detail.set_index(frame.index)], axis=1)
