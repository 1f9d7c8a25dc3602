"""Who gets what: reference-counted subscriptions and the per-client filter of each frame.

A :class:`Subscriber` is anything with its own subscriptions: a local client connection, or a
remote relay that reaches this one through Redis. The :class:`Feed` of an endpoint holds them
all; the union of their subscriptions is what the upstream (or Redis) carries, so a symbol stays
subscribed upstream exactly as long as one subscriber wants it.

The hot path works on the upstream's bytes. A data frame as Alpaca writes it (a JSON array of
flat messages, each starting ``{"T":...,"S":...``) is not decoded: one scan finds the type and
symbol of every message (:meth:`Frame.scan`). Subscribers with the same subscriptions share one
selection per frame; a JSON client that wants the whole frame gets the upstream bytes untouched,
one that wants part of it gets the bytes of its messages joined into a new array (still as
Alpaca sent them), and every distinct selection is encoded once per codec. Only msgpack clients,
and frames the scan cannot vouch for (control messages, order books, other layouts), are decoded.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterable
from typing import Any

import msgpack
import orjson

from .._stream_protocol import CHANNELS

log = logging.getLogger(__name__)

# message type -> the channel that carries it (corrections and cancel errors come with trades)
TYPE_CHANNEL = {"t": "trades", "q": "quotes", "b": "bars", "u": "updatedBars", "d": "dailyBars",
                "s": "statuses", "l": "lulds", "i": "imbalances", "c": "trades", "x": "trades",
                "o": "orderbooks"}
ALL = object()         # a selection that is the whole frame

# The start of a data message as Alpaca writes it, its type and symbol in one group. It cannot
# match inside a JSON string (whose quotes are escaped), so when a frame holds as many '{' as
# matches, every object of the frame is a message starting with its type and symbol.
_MESSAGE = re.compile(rb'\{"T":"([^"\\]+","S":"[^"\\]+)"')
_START = b'{"T":"'
_NEXT = b',{"T":"'          # what separates two messages of a compact array
_TYPE_SYMBOL = b'","S":"'


class Subscriber:
    """Subscriptions of one client (or remote relay): ``subs[channel]`` is an insertion-ordered
    dict of symbols (``*`` = all). ``signature`` is the same for subscribers with the same
    subscriptions, which share one selection per frame."""

    fanout = True           # takes part in the local fan-out

    def __init__(self) -> None:
        self.subs: dict[str, dict[str, None]] = {ch: {} for ch in CHANNELS}
        self.signature: Any = ()
        self._memo: dict[tuple[str, str], bool] = {}

    def replace(self, subs: dict[str, dict[str, None]]) -> None:
        self.subs = subs
        self.signature = tuple(sorted((ch, frozenset(v)) for ch, v in subs.items() if v))
        self._memo = {}

    def proposed(self, change: dict[str, list[str]], *, add: bool) -> dict[str, dict[str, None]]:
        """A copy of the subscriptions with ``change`` added or removed."""
        out = {ch: dict(v) for ch, v in self.subs.items()}
        for ch, symbols in change.items():
            items = out.setdefault(ch, {})
            for s in symbols:
                if add:
                    items.setdefault(s, None)
                else:
                    items.pop(s, None)
        return out

    def wants(self, key: tuple[str, str]) -> bool:
        hit = self._memo.get(key)
        if hit is None:
            channel = TYPE_CHANNEL.get(key[0])
            items = self.subs.get(channel) if channel else None
            hit = self._memo[key] = bool(items) and (key[1] in items or "*" in items)
        return hit

    def select(self, keys: Iterable[tuple[str, str]], count: int) -> Any:
        """ALL, None (nothing) or the tuple of wanted keys of a frame."""
        wanted = tuple(k for k in keys if self.wants(k))
        if not wanted:
            return None
        return ALL if len(wanted) == count else wanted

    def deliver(self, frame: Frame, selection: Any) -> None:
        raise NotImplementedError


def union(subscribers: Iterable[Subscriber]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {ch: set() for ch in CHANNELS}
    for sub in subscribers:
        for ch, symbols in sub.subs.items():
            out.setdefault(ch, set()).update(symbols)
    return out


class Frame:
    """One upstream data frame: its bytes, the ``(type, symbol)`` of its messages, and encodings
    made on demand (each selection once per codec).

    Built by :meth:`scan` from the bytes alone, or from the decoded ``messages`` (frames the
    scan cannot vouch for). ``keys`` are the distinct ``(type, symbol)`` pairs in order.
    """

    __slots__ = ("_cache", "_found", "_messages", "_names", "_parts", "keys", "payload")

    def __init__(self, payload: bytes, messages: list[Any] | None = None, *,
                 found: list[bytes] | None = None):
        self.payload = payload
        self._messages = messages
        self._found = found              # each message's 'T","S":"S' bytes, from the scan
        self._parts: list[bytes] | None = None
        self._cache: dict[tuple[bool, Any], bytes] = {}
        if found is not None:
            self._names = {raw: tuple(part.decode() for part in raw.split(_TYPE_SYMBOL))
                           for raw in dict.fromkeys(found)}
            self.keys = dict.fromkeys(self._names.values())
        else:
            self._names = {}
            self.keys = {}
            for m in messages:
                if type(m) is dict:
                    self.keys[(m.get("T"), m.get("S"))] = None

    @classmethod
    def scan(cls, payload: bytes) -> Frame | None:
        """The frame of a JSON array of data messages that each start with ``{"T":"..",
        "S":".."`` and hold no other object (Alpaca's stock and crypto trades, quotes, bars,
        statuses...), without decoding it; None for anything else (decode it, then use
        ``Frame(payload, messages)``)."""
        if payload[:1] != b"[" or payload[-1:] != b"]":
            return None
        found = _MESSAGE.findall(payload)
        if not found or payload.count(b"{") != len(found):
            return None
        try:
            return cls(payload, found=found)
        except UnicodeDecodeError:
            return None

    @property
    def messages(self) -> list[Any]:
        """The decoded messages (decoded on first use)."""
        if self._messages is None:
            self._messages = orjson.loads(self.payload)
        return self._messages

    def _split(self) -> list[bytes] | None:
        """Each message's bytes as sent, less its leading ``{"T":"`` (scanned compact frames;
        None otherwise)."""
        if self._parts is None and self._found is not None:
            payload = self.payload
            parts = payload[1:-1].split(_NEXT)
            if len(parts) == len(self._found) and payload.startswith(_START, 1):
                parts[0] = parts[0][len(_START):]
                self._parts = parts
            else:
                self._found = None          # (whitespace between messages): decode instead
        return self._parts

    def by_symbol(self) -> dict[str, bytes]:
        """The messages of each symbol as one JSON array, in order, as Alpaca sent them."""
        parts = self._split()
        if parts is not None:
            names = self._names
            groups: dict[str, list[bytes]] = {}
            for raw, part in zip(self._found, parts, strict=True):
                groups.setdefault(names[raw][1], []).append(part)
            return {symbol: _array(group) for symbol, group in groups.items()}
        by: dict[str, list[Any]] = {}
        for m in self.messages:
            if type(m) is dict and isinstance(m.get("S"), str):
                by.setdefault(m["S"], []).append(m)
        return {symbol: orjson.dumps(group) for symbol, group in by.items()}

    def encoded(self, selection: Any, use_msgpack: bool) -> bytes | None:
        """The frame's ``selection`` (ALL or a tuple of keys) in JSON or msgpack; None when the
        frame, passed on undecoded so far, turns out not to be JSON."""
        key = (use_msgpack, selection)
        data = self._cache.get(key)
        if data is None:
            try:
                data = self._encode(selection, use_msgpack)
            except orjson.JSONDecodeError:
                log.warning("relay: malformed upstream frame not sent to a client: %r", self.payload[:80])
                data = b""
            self._cache[key] = data
        return data or None

    def _encode(self, selection: Any, use_msgpack: bool) -> bytes:
        if not use_msgpack:
            return self.payload if selection is ALL else self._json_of(set(selection))
        wanted = None if selection is ALL else set(selection)
        return msgpack.packb([to_msgpack(m) for m in self.messages if wanted is None or (
            type(m) is dict and (m.get("T"), m.get("S")) in wanted)], use_bin_type=True)

    def _json_of(self, wanted: set[tuple[str, str]]) -> bytes:
        """A JSON array of the messages whose ``(type, symbol)`` is ``wanted``, in order."""
        parts = self._split()
        if parts is not None:
            raws = {raw for raw, name in self._names.items() if name in wanted}
            return _array([p for raw, p in zip(self._found, parts, strict=True) if raw in raws])
        return orjson.dumps([m for m in self.messages if type(m) is dict and (m.get("T"), m.get("S")) in wanted])


def _array(parts: list[bytes]) -> bytes:
    """Split messages (see Frame._split) joined into a compact JSON array again."""
    return b'[{"T":"' + _NEXT.join(parts) + b"]" if parts else b"[]"


def fan_out(frame: Frame, subscribers: Iterable[Subscriber]) -> None:
    """Deliver ``frame`` to every subscriber that wants part of it (one selection per distinct
    subscription set)."""
    keys = frame.keys
    count = len(keys)
    if not count:
        return
    selections: dict[Any, Any] = {}
    for sub in subscribers:
        if not sub.fanout:
            continue
        signature = sub.signature
        try:
            selection = selections[signature]
        except KeyError:
            selection = selections[signature] = sub.select(keys, count)
        if selection is not None:
            sub.deliver(frame, selection)


# ------------------------------------------------------------------ JSON -> msgpack

NS = 1_000_000_000
_SECONDS: dict[str, int] = {}          # 'YYYY-MM-DDTHH:MM:SS' + zone -> Unix seconds
_UTC_SECONDS: dict[str, int] = {}      # 'YYYY-MM-DDTHH:MM:SS' (zone Z) -> Unix seconds
_SCALE = [10 ** (9 - n) for n in range(10)]


def iso_to_ns(text: str) -> int:
    """'2024-03-04T14:30:00.123456789Z' -> Unix nanoseconds (any fraction length, Z or offset)."""
    if text[-1:] == "Z" and text[19:20] == ".":       # the usual form: UTC with a fraction
        secs = _UTC_SECONDS.get(text[:19])
        frac = text[20:-1]
        if secs is not None and len(frac) <= 9 and frac.isdigit() and frac.isascii():
            return secs * NS + int(frac) * _SCALE[len(frac)]
    head, _, rest = text.partition(".")
    frac = ""
    if rest:
        i = 0
        while i < len(rest) and rest[i].isdigit():
            i += 1
        frac, zone = rest[:i], rest[i:]
    else:
        head, zone = head[:19], head[19:]
    key = head + zone
    secs = _SECONDS.get(key)
    if secs is None:
        stamp = dt.datetime.fromisoformat(head + ("+00:00" if zone in ("", "Z", "z") else zone))
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=dt.timezone.utc)
        secs = int(stamp.timestamp())
        if len(_SECONDS) > 4096:
            _SECONDS.clear()
            _UTC_SECONDS.clear()
        _SECONDS[key] = secs
        if zone == "Z" and len(head) == 19:
            _UTC_SECONDS[head] = secs
    return secs * NS + (int(frac[:9].ljust(9, "0")) if frac else 0)


def to_msgpack(message: Any) -> Any:
    """A JSON data message as Alpaca's msgpack codec sends it: ``t`` as a Timestamp (ext -1)."""
    if type(message) is dict:
        t = message.get("t")
        if type(t) is str:
            return {**message, "t": msgpack.Timestamp(*divmod(iso_to_ns(t), NS))}
    return message
