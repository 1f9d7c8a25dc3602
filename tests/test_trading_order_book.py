"""The client's trade-updates order book orders the states of one order that share an instant:
an order is ``accepted``, ``pending_new`` and ``new`` (and may fill) at one ``updated_at``, and
a REST snapshot taken in between can arrive after the stream's newer state."""

from __future__ import annotations

from alpaca_nb.stream._trading import OrderBook

T = "2024-03-05T15:00:00.123456Z"


def state(status: str, filled: str = "0", updated_at: str = T) -> dict:
    return {"id": "0b0e4c2a-1111-4a4a-9d9d-000000000001", "status": status, "filled_qty": filled,
            "updated_at": updated_at, "submitted_at": T}


def test_equal_timestamps_never_take_the_book_back_to_an_earlier_state():
    book = OrderBook()
    assert book.apply(state("accepted"))
    assert book.apply(state("pending_new"))
    assert book.apply(state("new"))
    assert not book.apply(state("accepted"))            # a stale snapshot of the same instant
    assert book.get(state("new")["id"])["status"] == "new"
    assert book.apply(state("partially_filled", "5"))
    assert not book.apply(state("partially_filled", "3"))
    assert book.apply(state("filled", "10"))
    assert not book.apply(state("new"))
    assert book.get(state("new")["id"])["status"] == "filled"


def test_a_later_timestamp_wins_whatever_its_status():
    book = OrderBook()
    assert book.apply(state("filled", "10"))
    later = state("accepted", updated_at="2024-03-05T15:00:00.123457Z")   # e.g. a replacement chain
    assert book.apply(later)
    assert book.get(later["id"])["status"] == "accepted"
    assert book.open_ids() == [later["id"]]
