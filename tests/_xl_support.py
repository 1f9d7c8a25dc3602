"""What the Excel tests share: a client on a sandbox account made the formulas' connection."""

from __future__ import annotations

from collections.abc import Iterator

import alpaca_nb as anb
from alpaca_nb import xl


def connect_to(account, url: str | None = None, **kw) -> anb.Alpaca:
    """``anb.connect`` to a sandbox account (through ``url``, e.g. a proxy, if given); it becomes
    the default client, which the formulas use. The formulas' caches start empty."""
    xl.clear_caches()
    return anb.connect(base_url=url or account.url, data_url=url or account.url,
                       stream_url=account.stream_url, key_id=account.key_id,
                       secret_key=account.secret_key, **kw)


def client_of(account) -> Iterator[anb.Alpaca]:
    """The body of an ``api`` fixture: a connected client, closed afterwards."""
    client = connect_to(account)
    yield client
    client.close()
    xl.clear_caches()
