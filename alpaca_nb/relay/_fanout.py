"""Who gets what: reference-counted subscriptions and the per-client filter of each frame.

A :class:`Subscriber` is anything with its own subscriptions: a local client connection, or a
remote relay that reaches this one through Redis. The :class:`Feed` of an endpoint holds them
all; the union of their subscriptions is what the upstream (or Redis) carries, so a symbol stays
subscribed upstream exactly as long as one subscriber wants it.

Each frame from upstream is parsed once; its distinct ``(type, symbol)`` pairs are matched
against each subscriber (memoised per subscriber until its subscriptions change) and every
distinct selection is encoded once per codec: a JSON client that wants the whole frame gets the
upstream bytes untouched, clients with the same selection share one encoding.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import msgpack
import orjson

from .._stream_protocol import CHANNELS

# message type -> the channel that carries it (corrections and cancel errors come with trades)
TYPE_CHANNEL = {"t": "trades", "q": "quotes", "b": "bars", "u": "updatedBars", "d": "dailyBars",
                "s": "statuses", "l": "lulds", "i": "imbalances", "c": "trades", "x": "trades",
                "o": "orderbooks"}
ALL = object()         # a selection that is the whole frame


class Subscriber:
    """Subscriptions of one client (or remote relay): ``subs[channel]`` is an insertion-ordered
    dict of symbols (``*`` = all)."""

    def __init__(self) -> None:
        self.subs: dict[str, dict[str, None]] = {ch: {} for ch in CHANNELS}
        self._memo: dict[tuple[str, str], bool] = {}

    def replace(self, subs: dict[str, dict[str, None]]) -> None:
        self.subs = subs
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
    """One upstream frame: its bytes, its messages, and encodings made on demand."""

    __slots__ = ("_cache", "keys", "messages", "payload")

    def __init__(self, payload: bytes, messages: list[Any]):
        self.payload = payload
        self.messages = messages
        self.keys: dict[tuple[str, str], None] = {}
        for m in messages:
            if type(m) is dict:
                self.keys[(m.get("T"), m.get("S"))] = None
        self._cache: dict[tuple[bool, Any], bytes] = {}

    def encoded(self, selection: Any, use_msgpack: bool) -> bytes:
        key = (use_msgpack, selection)
        data = self._cache.get(key)
        if data is None:
            if selection is ALL:
                chosen = self.messages
            else:
                wanted = set(selection)
                chosen = [m for m in self.messages if type(m) is dict and (m.get("T"), m.get("S")) in wanted]
            if use_msgpack:
                data = msgpack.packb([to_msgpack(m) for m in chosen], use_bin_type=True)
            elif selection is ALL:
                data = self.payload
            else:
                data = orjson.dumps(chosen)
            self._cache[key] = data
        return data


def fan_out(frame: Frame, subscribers: Iterable[Subscriber]) -> None:
    count = len(frame.keys)
    if not count:
        return
    for sub in subscribers:
        selection = sub.select(frame.keys, count)
        if selection is not None:
            sub.deliver(frame, selection)


# ------------------------------------------------------------------ JSON -> msgpack

_SECONDS: dict[str, int] = {}


def iso_to_ns(text: str) -> int:
    """'2024-03-04T14:30:00.123456789Z' -> Unix nanoseconds (any fraction length, Z or offset)."""
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
        _SECONDS[key] = secs
    return secs * 1_000_000_000 + (int(frac[:9].ljust(9, "0")) if frac else 0)


def to_msgpack(message: Any) -> Any:
    """A JSON data message as Alpaca's msgpack codec sends it: ``t`` as a Timestamp (ext -1)."""
    if type(message) is dict and isinstance(message.get("t"), str):
        message = dict(message)
        message["t"] = msgpack.Timestamp.from_unix_nano(iso_to_ns(message["t"]))
    return message
