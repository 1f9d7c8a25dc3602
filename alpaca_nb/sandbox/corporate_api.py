"""``GET /v1/corporate-actions`` (protocol 4.6), served from :mod:`.corporate`.

Answer: ``{"corporate_actions": {"forward_splits": [...], "cash_dividends": [...], ...},
"next_page_token": <str|null>}``, one array per type that has records on the page (plural key),
records shaped as Alpaca's (dates ``YYYY-MM-DD``, rates JSON numbers, ``id`` a UUID).

Parameters: ``symbols``, ``cusips``, ``types`` (comma lists), ``start``/``end`` (``YYYY-MM-DD``,
inclusive, default the sandbox's today), ``ids`` (comma list; not with any other filter, at most
``limit`` of them), ``limit``, ``page_token``, ``sort`` (``asc``|``desc``), ``cas_region``
(``us``|``non_us``|``all``) and ``data_quality`` (``complete``|``all``).

What the sandbox decides where Alpaca's behaviour is not pinned down:

* ``start``/``end`` select by ``process_date`` (third-party reading of Alpaca's docs); records
  are sorted by (process_date, type, symbol, id) and ``sort=desc`` reverses that order.
* An action is listed from its announcement date on (some days before its ex-date) as of the
  sandbox clock; ``data_quality=all`` lists the same records (every sandbox record is complete);
  ``cas_region=non_us`` lists none (the asset list is US only).
* ``limit`` is 1-1000, default 100; a page holds at most ``limit`` records across all types,
  and ``next_page_token`` (base64 of the last record's id) is null on the last page.
* Errors are ``400 {"message": ...}`` like the rest of the data API, with the sandbox's
  wording: an unknown type, a malformed date, ``end`` before ``start``, a bad limit or sort or
  region or data quality, a bad page token, ``ids`` combined with another filter, more ids than
  ``limit``.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
from collections.abc import Callable

from aiohttp import web

from . import app as _app
from .clock import ny_date
from .corporate import TYPES, Action
from .data_api import bad, parse_symbols
from .wire import json_response

__all__ = ["setup"]

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_FILTERS = ("symbols", "cusips", "types", "start", "end", "data_quality")


def _list(q, name: str) -> list[str]:
    return [item.strip() for item in (q.get(name) or "").split(",") if item.strip()]


def _date(q, name: str, default: dt.date) -> dt.date:
    value = q.get(name)
    if value in (None, ""):
        return default
    try:
        if not _DATE_RE.match(value):
            raise ValueError
        return dt.date.fromisoformat(value)
    except ValueError:
        raise bad(f"Invalid format for parameter {name}: error parsing '{value}' as 2006-01-02 date") from None


def _choice(q, name: str, choices: tuple[str, ...]) -> str:
    value = q.get(name) or choices[0]
    if value not in choices:
        raise bad(f"invalid {name}: {value!r} (expected {' or '.join(choices)})")
    return value


def select(load: Callable[[list[str]], list[Action]], q, today: dt.date) -> tuple[list[Action], str | None]:
    """The page that query ``q`` asks for (sorted by :meth:`Action.sort_key`), and the next
    page's token. ``load(symbols)`` gives the actions of those symbols (all for []); it is
    called once the query is known to be valid. Raises ApiError 400 for a bad parameter."""
    raw_limit = q.get("limit")
    try:
        limit = DEFAULT_LIMIT if raw_limit in (None, "") else int(raw_limit)
    except ValueError:
        raise bad(f"Invalid format for parameter limit: error parsing '{raw_limit}' as integer") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise bad(f"invalid limit: must be between 1 and {MAX_LIMIT}")
    desc = _choice(q, "sort", ("asc", "desc")) == "desc"
    region = _choice(q, "cas_region", ("us", "non_us", "all"))
    _choice(q, "data_quality", ("complete", "all"))
    ids = _list(q, "ids")
    types = _list(q, "types")
    for name in types:
        if name not in TYPES:
            raise bad(f"invalid types: {name!r} (expected a comma-separated list of {', '.join(TYPES)})")
    start, end = _date(q, "start", today), _date(q, "end", today)
    if ids:
        given = [name for name in _FILTERS if q.get(name)]
        if given:
            raise bad(f"ids cannot be combined with other filters ({', '.join(given)})")
        if len(ids) > limit:
            raise bad(f"too many ids: at most limit ({limit}) ids per request")
        wanted = set(ids)
        chosen = [a for a in load([]) if a.id in wanted]
    else:
        if end < start:
            raise bad("end should not be before start")
        symbols = set(parse_symbols(q.get("symbols"), required=False))
        cusips = set(_list(q, "cusips"))
        kinds = set(types)
        chosen = [a for a in load(sorted(symbols))
                  if start <= a.process_date <= end
                  and (not symbols or a.symbol in symbols)
                  and (not cusips or a.cusip in cusips or a.new_cusip in cusips)
                  and (not kinds or a.type in kinds)]
    chosen = sorted((a for a in chosen if a.announced <= today and region != "non_us"),
                    key=Action.sort_key)
    if desc:
        chosen.reverse()
    token = q.get("page_token")
    if token:
        try:
            last = base64.b64decode(token, validate=True).decode()
            position = [a.id for a in chosen].index(last)
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise bad("invalid page token") from None
        chosen = chosen[position + 1:]
    page = chosen[:limit]
    more = len(chosen) > limit
    return page, base64.b64encode(page[-1].id.encode()).decode() if more else None


async def corporate_actions(request: web.Request) -> web.Response:
    corporate = request.app[_app.MARKET].corporate
    today = ny_date(request.app[_app.CLOCK].now_ns())

    def load(symbols: list[str]) -> list[Action]:
        if not symbols:
            return corporate.all()
        return [a for s in symbols for a in corporate.for_symbol(s)]

    page, token = select(load, request.query, today)
    grouped: dict[str, list[dict]] = {}
    for action in page:
        grouped.setdefault(action.type + "s", []).append(action.wire())
    return json_response({"corporate_actions": grouped, "next_page_token": token})


def setup(app: web.Application) -> None:
    """Add ``GET /v1/corporate-actions``."""
    app.router.add_get("/v1/corporate-actions", corporate_actions)
