"""The relay's per-client selection of upstream frames, on the bytes alone (Frame.scan) and on the
decoded messages, must give every client exactly the same frames: the same messages, in the same
order, in JSON and in msgpack, for Alpaca's compact frames and for layouts the scan does not take.

(A pure function of the frame's bytes, tested here without sockets; the same paths run through
real sockets in test_relay.py, test_relay_crypto.py and test_relay_redis.py.)
"""

from __future__ import annotations

import itertools

import msgpack
import orjson
import pandas as pd
import pytest

from alpaca_nb.relay._fanout import ALL, Frame, Subscriber, fan_out


def quote(symbol: str, t: str = "2024-03-04T14:30:00.123456789Z", **extra) -> dict:
    return {"T": "q", "S": symbol, "bx": "V", "bp": 170.12, "bs": 3, "ax": "V", "ap": 170.15, "as": 2,
            "c": ["R"], "t": t, "z": "C", **extra}


COMPACT = orjson.dumps([
    quote("AAPL"), {"T": "t", "S": "MSFT", "i": 1, "x": "V", "p": 410.5, "s": 100, "c": ["@"],
                    "t": "2024-03-04T14:30:00.5Z", "z": "C"},
    quote("AAPL", "2024-03-04T14:30:01Z"), {"T": "c", "S": "MSFT", "x": "V", "oi": 1, "ci": 2},
    {"T": "b", "S": "SPY", "o": 1.0, "h": 2.0, "l": 0.5, "c": 1.5, "v": 10, "t": "2024-03-04T14:30:00Z"},
    {"T": "n", "S": "AAPL", "headline": "not a market-data channel"},
    {"T": "s", "S": "NVDA", "sc": "H", "sm": "Trading Halt", "t": "2024-03-04T14:30:00.000000001Z"},
    quote("BRK.B"), quote("MSFT", "2024-03-04T09:30:00.1-05:00"),
])
FRAMES = {
    "compact": COMPACT,
    "one message": orjson.dumps([quote("AAPL")]),
    "crypto pairs": orjson.dumps([quote("BTC/USD"), quote("ETH/USD"), quote("BTC/USD")]),
    # layouts the scan must not take at face value (they are decoded instead)
    "spaces after commas": b'[{"T":"q","S":"AAPL","bp":1}, {"T":"q","S":"MSFT","bp":2}]',
    "pretty": b'[ {"T": "q", "S": "AAPL", "bp": 1},\n {"T": "t", "S": "MSFT", "p": 2} ]',
    "a message inside a string": orjson.dumps([
        {"T": "s", "S": "AAPL", "sm": '{"T":"q","S":"MSFT"},{"T":"q","S":"NVDA"}'}, quote("MSFT")]),
    "escaped slash": b'[{"T":"q","S":"BTC\\/USD","bp":1},{"T":"q","S":"ETH/USD","bp":2}]',
    "symbol before type": b'[{"S":"AAPL","T":"q","bp":1},{"T":"q","S":"MSFT","bp":2}]',
    "order books": orjson.dumps([{"T": "o", "S": "BTC/USD", "t": "2024-03-04T14:30:00.5Z",
                                  "b": [{"p": 1.0, "s": 2.0}], "a": [{"p": 1.1, "s": 1.0}], "r": True},
                                 quote("BTC/USD")]),
    "no symbol": b'[{"T":"q","bp":1},{"T":"q","S":"MSFT","bp":2}]',
}
SUBSCRIPTIONS = [
    {"quotes": ["AAPL"]}, {"quotes": ["*"]}, {"trades": ["MSFT"]}, {"quotes": ["AAPL", "MSFT"], "trades": ["MSFT"]},
    {"bars": ["SPY"], "statuses": ["*"]}, {"quotes": ["BTC/USD"], "orderbooks": ["BTC/USD"]},
    {"quotes": ["ETH/USD"]}, {"quotes": ["BRK.B", "NVDA"]}, {"quotes": ["ZZZZ"]},
]


class Recorder(Subscriber):
    """A subscriber that keeps what the fan-out gives it, in both codecs."""

    def __init__(self, subs: dict[str, list[str]]):
        super().__init__()
        self.replace(self.proposed(subs, add=True))
        self.json: list[bytes] = []
        self.msgpack: list[bytes] = []

    def deliver(self, frame, selection) -> None:
        self.json.append(frame.encoded(selection, False))
        self.msgpack.append(frame.encoded(selection, True))


def decoded_frame(payload: bytes) -> Frame:
    messages = orjson.loads(payload)
    return Frame(payload, messages if isinstance(messages, list) else [messages])


def expected(payload: bytes, subs: dict[str, list[str]]) -> list[dict]:
    """What a client with ``subs`` must see of a frame, written out from Alpaca's rules."""
    channel = {"q": "quotes", "t": "trades", "c": "trades", "x": "trades", "b": "bars", "s": "statuses",
               "o": "orderbooks"}
    out = []
    for m in orjson.loads(payload):
        wanted = subs.get(channel.get(m.get("T"), ""), [])
        if "*" in wanted or m.get("S") in wanted:
            out.append(m)
    return out


@pytest.mark.parametrize("name", FRAMES)
def test_every_client_gets_the_same_messages_from_the_bytes_as_from_the_decoded_frame(name):
    payload = FRAMES[name]
    scanned = Frame.scan(payload) or decoded_frame(payload)
    if name in ("compact", "one message", "crypto pairs", "spaces after commas"):
        assert Frame.scan(payload) is not None, "Alpaca's layout is taken without decoding"
    else:
        assert Frame.scan(payload) is None
    assert list(scanned.keys) == list(decoded_frame(payload).keys)
    for path in (scanned, decoded_frame(payload)):
        clients = [Recorder(subs) for subs in SUBSCRIPTIONS]
        fan_out(path, clients)
        for subs, client in zip(SUBSCRIPTIONS, clients, strict=True):
            want = expected(payload, subs)
            if not want:
                assert client.json == [] and client.msgpack == []
                continue
            (json_frame,), (msgpack_frame,) = client.json, client.msgpack
            assert orjson.loads(json_frame) == want, (name, subs)
            unpacked = msgpack.unpackb(msgpack_frame)
            assert [{k: v for k, v in m.items() if k != "t"} for m in unpacked] == \
                   [{k: v for k, v in m.items() if k != "t"} for m in want]
            # msgpack as Alpaca's: the keys in the order sent (T first), the time a Timestamp
            assert [list(m) for m in unpacked] == [list(m) for m in want]
            assert all(isinstance(m["t"], msgpack.Timestamp) for m in unpacked if "t" in m)
            assert [m["t"].to_unix_nano() for m in unpacked if "t" in m] == \
                   [pd.Timestamp(m["t"]).value for m in want if "t" in m]
    # a client that wants the whole frame gets the upstream bytes themselves
    everything = Recorder({"quotes": ["*"], "trades": ["*"], "bars": ["*"], "statuses": ["*"], "orderbooks": ["*"]})
    if all(m.get("T") in ("q", "t", "c", "b", "s", "o") and "S" in m for m in orjson.loads(payload)):
        fan_out(scanned, [everything])
        assert everything.json == [payload]


def test_selections_are_encoded_once_and_by_symbol_keeps_the_bytes():
    frame = Frame.scan(COMPACT)
    clients = [Recorder({"quotes": ["AAPL"]}) for _ in range(3)] + [Recorder({"trades": ["MSFT"]})]
    fan_out(frame, clients)
    assert clients[0].json[0] is clients[1].json[0] is clients[2].json[0]
    groups = frame.by_symbol()
    assert list(groups) == ["AAPL", "MSFT", "SPY", "NVDA", "BRK.B"]
    for symbol, data in groups.items():
        assert orjson.loads(data) == [m for m in orjson.loads(COMPACT) if m["S"] == symbol]
        assert data == orjson.dumps([m for m in orjson.loads(COMPACT) if m["S"] == symbol])   # bytes as sent
    assert decoded_frame(COMPACT).by_symbol().keys() == groups.keys()
    for selection in itertools.chain([ALL], ((k,) for k in frame.keys)):
        assert orjson.loads(frame.encoded(selection, False)) == \
               orjson.loads(decoded_frame(COMPACT).encoded(selection, False))
        assert frame.encoded(selection, True) == decoded_frame(COMPACT).encoded(selection, True)


def test_a_frame_that_is_not_json_after_all_is_passed_on_as_sent_and_never_half_decoded():
    """The scan does not validate JSON: such a frame (Alpaca sends none) reaches JSON clients as
    the upstream sent it, and no msgpack client; the fan-out goes on for everyone."""
    payload = b'[{"T":"q","S":"AAPL","bp":},{"T":"q","S":"MSFT","bp":1}]'
    frame = Frame.scan(payload)
    assert frame is not None
    every, aapl = Recorder({"quotes": ["*"]}), Recorder({"quotes": ["AAPL"]})
    fan_out(frame, [every, aapl])
    assert every.json == [payload]
    assert aapl.json == [b'[{"T":"q","S":"AAPL","bp":}]']
    assert every.msgpack == aapl.msgpack == [None]           # (DataClient.deliver sends nothing then)
