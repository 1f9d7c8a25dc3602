"""The buffered WebSocket frame reader, over a real socket pair: every frame size class,
fragmented messages, control frames in between, and bytes arriving in arbitrary pieces."""

from __future__ import annotations

import os
import random
import socket
import threading

import pytest

from alpaca_nb.stream._socket import (
    BINARY,
    CLOSE,
    PING,
    PONG,
    TEXT,
    Closed,
    FrameReader,
)


def frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bytes | None = None, rsv: int = 0) -> bytes:
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | rsv | opcode])
    flag = 0x80 if mask else 0
    if n < 126:
        head += bytes([flag | n])
    elif n < 65536:
        head += bytes([flag | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([flag | 127]) + n.to_bytes(8, "big")
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        head += mask
    return head + payload


def read_all(wire: bytes, *, chunks: list[int] | None = None) -> list[tuple[int, bytes]]:
    """Send ``wire`` through a socket pair in the given piece sizes; read every message."""
    a, b = socket.socketpair()
    b.settimeout(5)

    def writer():
        i = 0
        for size in chunks or [len(wire)]:
            a.sendall(wire[i:i + size])
            i += size
        a.sendall(wire[i:])
        a.close()

    t = threading.Thread(target=writer)
    t.start()
    reader = FrameReader(b)
    out: list[tuple[int, bytes]] = []
    try:
        while True:
            out.extend((op, bytes(p)) for op, p in reader.read())
    except Closed:
        pass
    finally:
        t.join()
        b.close()
    return out


MESSAGES = [(TEXT, b'[{"T":"q"}]'), (BINARY, os.urandom(300)), (TEXT, b"x" * 125), (TEXT, b"y" * 126),
            (TEXT, b"z" * 65535), (BINARY, os.urandom(65536)), (TEXT, b"w" * 300_000), (TEXT, b"")]


def test_every_size_class_in_one_read_and_byte_by_byte_pieces():
    wire = b"".join(frame(op, p) for op, p in MESSAGES)
    assert read_all(wire) == MESSAGES
    rng = random.Random(7)
    pieces = [rng.choice([1, 2, 3, 7, 100, 4096, 70_000]) for _ in range(400)]
    assert read_all(wire, chunks=pieces) == MESSAGES


def test_fragmented_messages_with_control_frames_in_between():
    wire = (frame(TEXT, b'[{"T":', fin=False) + frame(PING, b"hi") + frame(0, b'"q","S"', fin=False)
            + frame(0, b':"AAPL"}]') + frame(PONG, b"") + frame(TEXT, b"[]")
            + frame(CLOSE, (1000).to_bytes(2, "big") + b"bye"))
    got = read_all(wire, chunks=[5] * 20)
    assert got == [(PING, b"hi"), (TEXT, b'[{"T":"q","S":"AAPL"}]'), (PONG, b""), (TEXT, b"[]"),
                   (CLOSE, b"\x03\xe8bye")]


def test_a_masked_frame_is_unmasked():
    assert read_all(frame(TEXT, b"hello masked world", mask=b"\x01\x02\x03\x04")) == [(TEXT, b"hello masked world")]


@pytest.mark.parametrize("wire", [frame(TEXT, b"x", rsv=0x40),            # compression never negotiated
                                  frame(0, b"orphan continuation")])
def test_protocol_violations_end_the_connection(wire):
    a, b = socket.socketpair()
    a.sendall(wire)
    try:
        with pytest.raises(Closed):
            FrameReader(b).read()
    finally:
        a.close()
        b.close()
