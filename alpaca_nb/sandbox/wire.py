"""Wire helpers shared by the sandbox's trading and market-data APIs.

Errors are raised as :class:`ApiError` anywhere inside a handler and answered by the app's
middleware in Alpaca's shape (``{"code": ..., "message": ...}`` plus context fields). Query
parsing helpers raise the same error with the status and code Alpaca uses, so a handler reads as a
list of checks. Timestamps are formatted the way each Alpaca surface formats them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from .._stream_protocol import iso_ns  # noqa: F401  (re-exported for the sandbox modules)
from .clock import NS, NY, UTC, from_ns, ny_midnight_ns, to_ns

log = logging.getLogger(__name__)

JSON_CONTENT_TYPE = "application/json; charset=UTF-8"


class ApiError(Exception):
    """An answer in Alpaca's error shape: HTTP status, numeric code, message, context fields."""

    def __init__(self, status: int, code: int | None, message: str, **extra: Any):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if self.code is not None:
            body["code"] = self.code
        body["message"] = self.message
        body.update(self.extra)
        return body

    def response(self, headers: dict[str, str] | None = None) -> web.Response:
        return json_response(self.body(), status=self.status, headers=headers)


# Constructors for the errors every route raises, with Alpaca's codes (protocol ref. section 3).
def unprocessable(message: str, **extra: Any) -> ApiError:
    """422 / 40010001: a field is missing, malformed or out of range."""
    return ApiError(422, 40010001, message, **extra)


def rejected(message: str, **extra: Any) -> ApiError:
    """422 / 42210000: well-formed, but a business rule refuses it."""
    return ApiError(422, 42210000, message, **extra)


def forbidden(message: str, **extra: Any) -> ApiError:
    """403 / 40310000: the account's state forbids it (buying power, qty, shorting)."""
    return ApiError(403, 40310000, message, **extra)


def not_found(message: str, **extra: Any) -> ApiError:
    """404 / 40410000."""
    return ApiError(404, 40410000, message, **extra)


def bad_request(message: str, **extra: Any) -> ApiError:
    """400 / 40010000: malformed request (market-data parameters, page tokens)."""
    return ApiError(400, 40010000, message, **extra)


UNAUTHORIZED = ApiError(401, 40110000, "request is not authorized")


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS)


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """An orjson-encoded response; ``obj`` may already be encoded bytes."""
    body = obj if isinstance(obj, (bytes, bytearray, memoryview)) else dumps(obj)
    resp = web.Response(body=body, status=status, headers=headers)
    resp.content_type = "application/json"
    resp.charset = "UTF-8"
    return resp


async def read_json(request: web.Request) -> dict[str, Any]:
    """The request's JSON object body; 422 when it is not a JSON object."""
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise unprocessable("request body format is invalid") from None
    if not isinstance(body, dict):
        raise unprocessable("request body format is invalid")
    return body


# ---------------------------------------------------------------- parsing query/body values

_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


def parse_bool(value: Any, name: str, default: bool | None = None) -> bool | None:
    """Booleans as Alpaca accepts them: JSON true/false or the strings in any case."""
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise unprocessable(f"invalid {name}: {value!r} is not a boolean")


_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_time(value: Any, name: str, *, error=None) -> int | None:
    """RFC-3339 timestamp (any offset, fractions allowed) or ``YYYY-MM-DD`` (New York midnight)
    to epoch nanoseconds; None when absent. ``error`` makes the ApiError (422 by default)."""
    if value is None or value == "":
        return None
    make = error or unprocessable
    text = str(value).strip()
    try:
        if _DATE_RE.match(text):
            return ny_midnight_ns(dt.date.fromisoformat(text))
        frac_ns = 0
        m = re.match(r"^(.*T\d{2}:\d{2}:\d{2})\.(\d+)(.*)$", text)
        if m:  # fromisoformat keeps only microseconds; keep every digit of the fraction
            text = m.group(1) + m.group(3)
            frac_ns = int((m.group(2) + "000000000")[:9])
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise make(f"invalid {name}: {value!r} is not an RFC-3339 timestamp or date") from None
    if when.tzinfo is None:
        raise make(f"invalid {name}: {value!r} has no time zone offset")
    return to_ns(when) + frac_ns


def parse_int(value: Any, name: str, *, default: int | None = None, lo: int | None = None,
              hi: int | None = None, error=None) -> int | None:
    if value is None or value == "":
        return default
    make = error or unprocessable
    try:
        number = int(str(value).strip())
    except ValueError:
        raise make(f"invalid {name}: {value!r} is not an integer") from None
    if (lo is not None and number < lo) or (hi is not None and number > hi):
        bounds = f"between {lo} and {hi}" if lo is not None and hi is not None else \
            (f"at least {lo}" if lo is not None else f"at most {hi}")
        raise make(f"invalid {name}: must be {bounds}")
    return number


def parse_decimal(value: Any, name: str, *, positive: bool = True) -> float | None:
    """A money or quantity field sent as a JSON string or number; None when absent."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise unprocessable(f"invalid {name}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise unprocessable(f"invalid {name}") from None
    if not math.isfinite(number):
        raise unprocessable(f"invalid {name}")
    if positive and number <= 0:
        raise unprocessable(f"{name} must be > 0")
    return number


def parse_choice(value: Any, name: str, choices: Iterable[str], default: str | None = None) -> str | None:
    if value is None or value == "":
        return default
    text = str(value)
    allowed = tuple(choices)
    if text not in allowed:
        raise unprocessable(f"invalid {name}: {text!r} (expected one of {', '.join(allowed)})")
    return text


def parse_list(value: Any) -> list[str]:
    """A comma-separated query value (or a JSON list) as a list of non-empty strings."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        items = value
    else:
        items = str(value).split(",")
    return [s.strip() for s in items if s and s.strip()]


# ---------------------------------------------------------------- formatting

def fmt_money(value: float | None, places: int = 10) -> str | None:
    """Trading-API numbers are JSON strings without float noise: 103820.56 -> "103820.56"."""
    if value is None:
        return None
    text = f"{value:.{places}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def iso_nano(ns: int) -> str:
    """RFC-3339 UTC as Alpaca's Go services write it (``time.RFC3339Nano``): every digit of the
    fraction up to nanoseconds, trailing zeros trimmed, no fraction at all on a whole second:
    '2022-04-19T17:45:05.024916716Z', '2019-06-12T22:47:07.99658Z', '2024-01-02T14:31:10Z'."""
    secs, frac = divmod(int(ns), NS)
    base = _SECONDS.get(secs)
    if base is None:                    # orders and events repeat a few seconds many times
        if len(_SECONDS) >= 4096:
            _SECONDS.clear()
        base = _SECONDS[secs] = dt.datetime.fromtimestamp(secs, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if not frac:
        return base + "Z"
    return f"{base}.{frac:09d}".rstrip("0") + "Z"


_SECONDS: dict[int, str] = {}           # epoch second -> "YYYY-MM-DDTHH:MM:SS" (UTC)


def iso_us(ns: int | None) -> str | None:
    """Trading-API object timestamps (orders, account, activities): Alpaca stores them to the
    microsecond and writes them as :func:`iso_nano` does, '2021-03-16T18:38:01.942282Z',
    '2019-06-12T22:47:07.99658Z'. The ``timestamp`` of a trade update keeps nanoseconds
    (:func:`iso_nano`)."""
    if ns is None:
        return None
    return iso_nano(int(ns) // 1000 * 1000)


def iso_ny(ns: int, *, fraction: bool = False) -> str:
    """Clock timestamps carry the America/New_York offset: '2022-05-17T09:30:00-04:00'."""
    when = from_ns(ns, NY)
    text = when.isoformat(timespec="microseconds" if fraction else "seconds")
    return text


# ---------------------------------------------------------------- WebSocket registry

@dataclass(eq=False)
class Connection:
    """One open WebSocket: ``kind`` is "data" or "trading", ``endpoint`` e.g. "v2/iex"."""

    ws: web.WebSocketResponse
    kind: str
    endpoint: str
    key_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Connections:
    """Every open WebSocket, so the app can enforce connection limits and drop them on demand."""

    def __init__(self) -> None:
        self._open: set[Connection] = set()

    def add(self, conn: Connection) -> Connection:
        self._open.add(conn)
        return conn

    def discard(self, conn: Connection) -> None:
        self._open.discard(conn)

    def find(self, *, kind: str | None = None, endpoint: str | None = None,
             key_id: str | None = None) -> list[Connection]:
        return [c for c in self._open
                if (kind is None or c.kind == kind)
                and (endpoint is None or c.endpoint == endpoint)
                and (key_id is None or c.key_id == key_id)]

    def __len__(self) -> int:
        return len(self._open)

    def drop(self, *, kind: str | None = None, abrupt: bool = True) -> int:
        """Close matching sockets; ``abrupt`` aborts the TCP connection without a close frame,
        as a network failure would. Returns how many were dropped."""
        victims = self.find(kind=kind)
        for conn in victims:
            self.discard(conn)
            transport = conn.ws._req.transport if conn.ws._req is not None else None
            if abrupt and transport is not None:
                transport.abort()
            else:
                asyncio.ensure_future(conn.ws.close(code=1001, message=b"server shutdown"))
        return len(victims)

    async def close_all(self) -> None:
        conns = list(self._open)
        self._open.clear()
        await asyncio.gather(*(c.ws.close(code=1001, message=b"server shutdown") for c in conns),
                             return_exceptions=True)
