"""The server side of Alpaca's stream protocols (protocol sections 5 and 6), shared by the
sandbox's streams and the stream relay.

What is here is protocol, not behaviour: the error codes and their texts, the channel names, the
two codecs (JSON text frames; msgpack binary frames with timestamps as msgpack Timestamp ext -1
and ``T`` first in every map), decoding a client's message (JSON text, msgpack binary or JSON in
a binary frame) and validating a subscribe/unsubscribe request. This module imports neither the
sandbox nor the client side.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
import struct
from typing import Any

import msgpack
import orjson
from aiohttp import WSMsgType

__all__ = ["CHANNELS", "CRYPTO_CHANNELS", "ERRORS", "FOREIGN_CHANNELS", "MIRRORED", "SYMBOL_RE", "Codec",
           "ForeignChannel", "ProtocolSyntaxError", "authorization", "credentials",
           "decode_client_message", "error_message", "is_crypto", "iso_ns", "parse_change",
           "subscription_message", "trading_request"]

NS = 1_000_000_000

CHANNELS = ("trades", "quotes", "bars", "updatedBars", "dailyBars", "statuses", "lulds", "imbalances")
MIRRORED = ("corrections", "cancelErrors")               # follow trades, never sent by clients
FOREIGN_CHANNELS = ("orderbooks", "news", "trades_v2")   # offered by other streams -> 410
# The crypto stream's (/v1beta3/crypto/{loc}, protocol 4.5): orderbooks are its own, the stock
# channels and news are another stream's (410).
CRYPTO_CHANNELS = ("trades", "quotes", "orderbooks", "bars", "updatedBars", "dailyBars")
CRYPTO_FOREIGN = ("statuses", "lulds", "imbalances", "news", "trades_v2")
SYMBOL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9./\-]{0,20}$")

# The data stream's error messages (protocol 5.6). 400 a message that cannot be parsed, or a
# malformed symbol list; 401 subscribe/unsubscribe before auth; 402 unknown keys; 403 a second
# auth; 404 no auth within the auth timeout (then closes); 405 a subscribe past the plan's
# trades + quotes limit (state unchanged); 406 a second connection of the same key to the same
# endpoint (then closes); 407 a client too slow to take what is sent (then closes); 409 ``auth``
# on a feed the account's plan lacks; 410 a channel of another stream (orderbooks, news); 500 a
# server bug. 408 "v2 not enabled" is obsolete (old Alpaca docs only) and never sent.
ERRORS = {400: "invalid syntax", 401: "not authenticated", 402: "auth failed",
          403: "already authenticated", 404: "auth timeout", 405: "symbol limit exceeded",
          406: "connection limit exceeded", 407: "slow client", 408: "v2 not enabled",
          409: "insufficient subscription", 410: "invalid subscribe action for this feed",
          500: "internal error"}


class ProtocolSyntaxError(Exception):
    """A client message that earns error 400 "invalid syntax"."""


class ForeignChannel(Exception):
    """A subscribe naming a channel of another stream: error 410."""


def credentials(headers) -> tuple[str | None, str | None]:
    """Key id and secret from APCA headers or ``Authorization: Basic`` (a request, or a
    WebSocket upgrade that authenticates in its headers)."""
    key, secret = headers.get("APCA-API-KEY-ID"), headers.get("APCA-API-SECRET-KEY")
    auth = headers.get("Authorization", "")
    if (not key or not secret) and auth[:6].lower() == "basic ":
        try:
            key, _, secret = base64.b64decode(auth[6:].strip()).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None, None
    return key, secret


def trading_request(msg, *, use_msgpack: bool) -> tuple[str, Any]:
    """What a client's frame on the trade-updates stream asks (protocol 6.2). The frame is JSON,
    or msgpack when the connection speaks msgpack and the frame is binary (JSON in a binary frame
    is read too). The answer is one of

    * ``("auth", (key, secret))`` for an auth message in either form: ``{"action":"auth",
      "key":...,"secret":...}`` or ``{"action":"authenticate","data":{"key_id":...,
      "secret_key":...}}`` (alpaca-py); key and secret are as sent (maybe None or not a str);
    * ``("listen", streams)``: the ``trade_updates`` streams a listen message names (maybe none);
    * ``("error", reply)``: the error message to send back (not a map, or an unknown action).
    """
    message = _decode_trading(msg, use_msgpack)
    if not isinstance(message, dict):
        return "error", {"stream": "error", "data": {"error_message": "invalid message"}}
    action = message.get("action")
    data = message.get("data") if isinstance(message.get("data"), dict) else {}
    if action == "auth":
        return "auth", (message.get("key"), message.get("secret"))
    if action == "authenticate":
        return "auth", (data.get("key_id"), data.get("secret_key"))
    if action == "listen":
        streams = data.get("streams")
        return "listen", [s for s in streams if s == "trade_updates"] if isinstance(streams, list) else []
    return "error", {"stream": "error", "data": {"error_message": f"unrecognized action: {action!r}"}}


def _decode_trading(msg, use_msgpack: bool) -> Any:
    undecodable = (ValueError, TypeError, msgpack.UnpackException)
    if msg.type == WSMsgType.BINARY and use_msgpack:
        try:
            return msgpack.unpackb(msg.data, raw=False)
        except undecodable:
            pass
    try:
        return orjson.loads(msg.data)
    except orjson.JSONDecodeError:
        return None


def authorization(authorized: bool, *, action: str = "authenticate", missing: bool = False,
                  message: str | None = None) -> dict[str, Any]:
    """The trade-updates stream's ``authorization`` reply; ``missing`` (no key or secret given)
    adds the text Alpaca sends then (alpaca-ts #23)."""
    data: dict[str, Any] = {"status": "authorized" if authorized else "unauthorized", "action": action}
    if missing and not authorized:
        message = "must provide key_id and secret_key or oauth_token"
    if message:
        data["message"] = message
    return {"stream": "authorization", "data": data}


def error_message(code: int) -> dict[str, Any]:
    """``{"T":"error","code":code,"msg":...}`` with Alpaca's text for ``code``."""
    return {"T": "error", "code": code, "msg": ERRORS[code]}


def iso_ns(ns: int) -> str:
    """Market-data timestamps as Alpaca writes them: RFC-3339 UTC with nanoseconds and the
    fraction's trailing zeros trimmed (Go's RFC3339Nano): '2022-03-18T14:02:09.722539521Z',
    '2022-09-08T13:30:00.19411456Z', '2024-01-02T14:30:00Z'."""
    secs, frac = divmod(int(ns), NS)
    base = dt.datetime.fromtimestamp(secs, tz=dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{frac:09d}".rstrip("0") + "Z" if frac else f"{base}Z"


class Codec:
    """JSON text frames or msgpack binary frames; ``ts`` makes the codec's timestamp value."""

    _PLACE_NS = 1_000_000_000 * NS + 123_456_789          # flood placeholder time (2001)

    def __init__(self, use_msgpack: bool):
        self.msgpack = use_msgpack
        self.opcode = WSMsgType.BINARY if use_msgpack else WSMsgType.TEXT
        self._packer = msgpack.Packer(use_bin_type=True)

    @classmethod
    def for_headers(cls, headers) -> Codec:
        """The codec a client asked for on the upgrade: msgpack when ``Content-Type`` says
        ``application/msgpack``, JSON otherwise."""
        return cls(headers.get("Content-Type", "").lower().startswith("application/msgpack"))

    def ts(self, ns: int) -> Any:
        ns = int(ns)
        return msgpack.Timestamp.from_unix_nano(ns) if self.msgpack else iso_ns(ns)

    def encode(self, messages: list[dict] | dict) -> bytes:
        return self._packer.pack(messages) if self.msgpack else orjson.dumps(messages)

    @property
    def placeholder(self) -> bytes:
        if self.msgpack:
            return self._packer.pack(msgpack.Timestamp.from_unix_nano(self._PLACE_NS))
        return orjson.dumps(iso_ns(self._PLACE_NS))

    def stamp(self, ns: int) -> bytes:
        """The encoded timestamp that replaces :attr:`placeholder` (same encoding rules)."""
        if self.msgpack:
            sec, nsec = divmod(ns, NS)
            return b"\xd7\xff" + struct.pack(">Q", (nsec << 34) | sec)
        return orjson.dumps(iso_ns(ns))


def decode_client_message(msg) -> dict:
    """A client's message (JSON text, msgpack binary or JSON binary) as a dict.

    Raises:
        ProtocolSyntaxError: not decodable, or not a map.
    """
    undecodable = (ValueError, TypeError, msgpack.UnpackException)
    try:
        if msg.type == WSMsgType.TEXT:
            data = orjson.loads(msg.data)
        else:
            try:
                data = msgpack.unpackb(msg.data, raw=False)
            except undecodable:
                data = orjson.loads(msg.data)
    except undecodable:
        raise ProtocolSyntaxError from None
    if not isinstance(data, dict):
        raise ProtocolSyntaxError
    return data


def is_crypto(path: str) -> bool:
    """Whether a stream path (``v1beta3/crypto/us``, with or without the leading slash) is the
    crypto stream's."""
    return path.lstrip("/").startswith("v1beta3/crypto/")


def parse_change(data: dict, *, crypto: bool = False) -> dict[str, list[str]]:
    """The channels and symbols of a subscribe/unsubscribe message, ``{channel: [symbols]}``
    (unknown keys and the mirrored corrections/cancelErrors are ignored, as Alpaca does);
    ``crypto`` for the crypto stream's channels.

    Raises:
        ForeignChannel: a channel of another stream (410).
        ProtocolSyntaxError: a channel value that is not a list of well-formed symbols (400).
    """
    channels, foreign = (CRYPTO_CHANNELS, CRYPTO_FOREIGN) if crypto else (CHANNELS, FOREIGN_CHANNELS)
    wanted: dict[str, list[str]] = {}
    for name, value in data.items():
        if name == "action" or name in MIRRORED:
            continue
        if name in foreign:
            raise ForeignChannel(name)
        if name not in channels:
            continue
        if not isinstance(value, list) or not all(
                isinstance(s, str) and (s == "*" or SYMBOL_RE.match(s)) for s in value):
            raise ProtocolSyntaxError
        wanted[name] = value
    return wanted


def subscription_message(subs: dict[str, Any], *, crypto: bool = False) -> dict[str, Any]:
    """The ``subscription`` acknowledgement for a connection's whole subscription ``subs``
    (``{channel: iterable of symbols}``): every channel listed, corrections and cancelErrors
    mirroring trades; ``crypto``: the crypto stream's six channels."""
    if crypto:
        return {"T": "subscription", **{name: list(subs.get(name, ())) for name in CRYPTO_CHANNELS}}
    msg: dict[str, Any] = {"T": "subscription"}
    for name in ("trades", "quotes", "bars", "updatedBars", "dailyBars", "statuses", "lulds"):
        msg[name] = list(subs.get(name, ()))
    msg["corrections"] = list(subs.get("trades", ()))
    msg["cancelErrors"] = list(subs.get("trades", ()))
    msg["imbalances"] = list(subs.get("imbalances", ()))
    return msg
