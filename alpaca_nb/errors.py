"""Errors raised by alpaca_nb.

Every non-2xx answer from Alpaca becomes an :class:`AlpacaError` subclass that carries the HTTP
``status``, Alpaca's numeric ``code`` and its ``message``. Problems found before any request is
sent (bad arguments, a refused pre-trade check) raise :class:`OrderValidationError` or another
``ValueError``/``TypeError`` whose message names the argument and what would be valid.

None of these objects ever holds a secret key: messages are built from the method, the path and
Alpaca's answer only.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AlpacaError", "BadRequestError", "AuthenticationError", "ForbiddenError",
    "InsufficientBuyingPower", "NotFoundError", "UnprocessableError", "RateLimitError",
    "ServerError", "AlpacaConnectionError", "OrderStateUnknown", "OrderValidationError",
    "PreTradeCheckError", "BuyingPowerCheckError", "error_from_response", "outcome_unknown",
]


class AlpacaError(Exception):
    """An error answer from Alpaca (or a request that could not get one).

    Attributes:
        status: HTTP status (None when no answer arrived at all).
        code: Alpaca's numeric error code, e.g. 40310000 (None when the body had none).
        message: Alpaca's message, e.g. "insufficient buying power".
        body: the decoded JSON error body (context fields such as ``buying_power``).
        method, path: the request that failed (no query string, no credentials).
        attempts: how many times the request was tried.
    """

    def __init__(self, message: str, *, status: int | None = None, code: int | None = None,
                 body: dict[str, Any] | None = None, method: str | None = None,
                 path: str | None = None, attempts: int = 1):
        self.message = message
        self.status = status
        self.code = code
        self.body = dict(body or {})
        self.method = method
        self.path = path
        self.attempts = attempts
        super().__init__(self._describe())

    def _describe(self) -> str:
        parts = []
        if self.status is not None:
            parts.append(str(self.status))
        if self.code is not None:
            parts.append(f"code {self.code}")
        head = f"[{', '.join(parts)}] " if parts else ""
        where = f" ({self.method} {self.path})" if self.method and self.path else ""
        tries = f"; gave up after {self.attempts} attempts" if self.attempts > 1 else ""
        return f"{head}{self.message}{where}{tries}"

    _extra: tuple[str, ...] = ()      # a subclass's own keyword arguments, kept by pickling

    def __reduce__(self):
        kw = dict(status=self.status, code=self.code, body=self.body, method=self.method,
                  path=self.path, attempts=self.attempts)
        kw.update((name, getattr(self, name)) for name in self._extra)
        return (_rebuild, (type(self), self.message, kw))


def _rebuild(cls, message, kw):
    return cls(message, **kw)


class BadRequestError(AlpacaError):
    """400: the request was malformed (e.g. a market-data parameter)."""


class AuthenticationError(AlpacaError):
    """401: the key id or secret was refused. Check the keys and paper/live choice."""


class ForbiddenError(AlpacaError):
    """403: the account's state forbids it (buying power, available quantity, shorting)."""


class InsufficientBuyingPower(ForbiddenError):
    """403 with "insufficient buying power"; ``body`` holds ``buying_power`` and ``cost_basis``."""


class NotFoundError(AlpacaError):
    """404: no such order, position, asset or endpoint."""


class UnprocessableError(AlpacaError):
    """422: a field is invalid or a business rule refused the request."""


class RateLimitError(AlpacaError):
    """429: too many requests. ``retry_after`` is the server's advice in seconds (or None)."""

    _extra = ("retry_after",)

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any):
        self.retry_after = retry_after
        super().__init__(message, **kw)


class ServerError(AlpacaError):
    """5xx: Alpaca failed; idempotent requests were already retried."""


class AlpacaConnectionError(AlpacaError):
    """No answer: the connection failed, was dropped or timed out (after retries if idempotent).

    ``sent`` is False only when the request certainly never reached the server (the connection
    was refused or could not be made in time); otherwise the server may have acted on it.
    """

    _extra = ("sent",)

    def __init__(self, message: str, *, sent: bool = True, **kw: Any):
        self.sent = sent
        super().__init__(message, **kw)


class OrderStateUnknown(AlpacaError):
    """A request that changes orders or positions got no usable answer, and looking for its
    effect afterwards did not settle whether it happened: the order (the cancel, the close) MAY
    exist or may still appear. The message says how to check.

    Attributes:
        client_order_id: the submission's client_order_id (None for cancels and closes); a new
            submission with the same id can never place a second order.
        status, code: those of the last failure (None when no answer arrived).
    """

    _extra = ("client_order_id",)

    def __init__(self, message: str, *, client_order_id: str | None = None, **kw: Any):
        self.client_order_id = client_order_id
        super().__init__(message, **kw)


def outcome_unknown(exc: BaseException) -> bool:
    """Whether a failed request may still have acted on the server: no answer after it was sent,
    or a 5xx (a gateway timeout in particular means the request may still be queued)."""
    if isinstance(exc, AlpacaConnectionError):
        return exc.sent
    return isinstance(exc, ServerError)


class OrderValidationError(ValueError):
    """An order argument is invalid; raised before anything is sent."""


class PreTradeCheckError(OrderValidationError):
    """The pre-trade guard refused an order before it was sent.

    Attributes:
        limit: which check refused it: "max_order_notional", "max_order_qty", "buying_power"
            or "price_collar".
        value: the order's figure for that check; allowed: the most the check allows.
    """

    def __init__(self, message: str, *, limit: str, value: float, allowed: float):
        super().__init__(message)
        self.limit = limit
        self.value = value
        self.allowed = allowed

    def __reduce__(self):
        return (_rebuild_guard, (type(self), self.args[0], self.limit, self.value, self.allowed))


def _rebuild_guard(cls, message, limit, value, allowed):
    return cls(message, limit=limit, value=value, allowed=allowed)


class BuyingPowerCheckError(PreTradeCheckError, InsufficientBuyingPower):
    """The pre-trade guard's buying-power refusal (nothing was sent). It is both a
    :class:`PreTradeCheckError` and an :class:`InsufficientBuyingPower`, so
    ``except anb.InsufficientBuyingPower`` catches it as it catches Alpaca's own 403. ``status``
    and ``code`` are None (no request was made); ``body`` holds ``buying_power`` and
    ``cost_basis`` as strings, like Alpaca's answer."""

    def __init__(self, message: str, *, limit: str = "buying_power", value: float, allowed: float):
        AlpacaError.__init__(self, message, body={"buying_power": f"{allowed:.2f}",
                                                  "cost_basis": f"{value:.2f}"})
        self.args = (message,)
        self.limit = limit
        self.value = value
        self.allowed = allowed

    def __str__(self) -> str:
        return self.message


_BY_STATUS: dict[int, type[AlpacaError]] = {
    400: BadRequestError, 401: AuthenticationError, 403: ForbiddenError, 404: NotFoundError,
    422: UnprocessableError, 429: RateLimitError,
}


def error_from_response(status: int, body: Any, *, method: str | None = None,
                        path: str | None = None, attempts: int = 1,
                        retry_after: float | None = None) -> AlpacaError:
    """The AlpacaError subclass for an HTTP error answer. ``body`` is the decoded JSON (a dict),
    or the raw text when the answer was not JSON."""
    if isinstance(body, dict):
        message = str(body.get("message") or body.get("msg") or "").strip()
        code = body.get("code")
        code = int(code) if isinstance(code, (int, float, str)) and str(code).isdigit() else None
        fields = body
    else:
        message, code, fields = (str(body or "").strip()[:300]), None, {}
    message = message or _REASON.get(status, f"HTTP {status}")
    kw = dict(status=status, code=code, body=fields, method=method, path=path, attempts=attempts)
    if status == 403 and "buying power" in message.lower():
        return InsufficientBuyingPower(message, **kw)
    if status == 429:
        return RateLimitError(message, retry_after=retry_after, **kw)
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else AlpacaError)
    return cls(message, **kw)


_REASON = {400: "bad request", 401: "request is not authorized", 403: "forbidden",
           404: "not found", 422: "unprocessable request", 429: "rate limit exceeded",
           500: "internal server error", 502: "bad gateway", 503: "service unavailable",
           504: "gateway timeout"}
