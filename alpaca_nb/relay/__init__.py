"""The stream relay: one Alpaca stream connection shared by every notebook, workbook and machine.

Alpaca allows one market-data stream connection per account (a second is refused with 406) and
one trade-updates connection. Inside one process alpaca_nb's streams already share a socket; the
relay does the same across processes. It holds the upstream connections once and serves
Alpaca's own stream protocol on loopback::

    alpaca-nb relay                      # foreground until Ctrl-C; keys from the environment
    api = alpaca_nb.connect()            # finds the running relay; api.stream(...) unchanged
    # alpaca-py: StockDataStream(key, secret, url_override="ws://127.0.0.1:8766/v2/iex")
    #            CryptoDataStream(key, secret, url_override="ws://127.0.0.1:8766/v1beta3/crypto/us")
    #            TradingStream(key, secret, url_override="ws://127.0.0.1:8766/stream")

* Data (``/v2/{feed}``, ``/v1beta1/{boats,overnight}``, crypto's ``/v1beta3/crypto/us`` with
  its order books) and trade updates (``/stream``) with Alpaca's handshake, messages,
  errors and JSON or msgpack framing, so alpaca_nb, the Excel live cells and the unchanged
  official SDKs work through it.
* Subscriptions are reference-counted: upstream carries the union of what the clients want;
  each client receives only its own symbols and its own acknowledgements; a symbol is
  unsubscribed upstream when its last client leaves; a request over the plan's limit gets
  Alpaca's error (405) for that client only. A client that subscribes a crypto order book the
  upstream already carries gets the whole book first (``r: true``), as after Alpaca's own
  subscriptions.
* Frames are passed on as Alpaca sent them: a data frame is scanned for each message's type and
  symbol, not decoded (only msgpack clients need a decoded copy), and written straight to each
  client's socket.
* Upstream drops are handled once, here: reconnect with backoff, resubscribe, and a status
  message to the clients, which stay connected (alpaca_nb clients then refill their tables
  from REST and reconcile their order book, as after a reconnect of their own). A client
  that cannot keep up is cut off with 407 "slow client" without slowing the others; nothing
  queues without bound.
* Security: loopback by default; clients authenticate with the same keys the relay holds
  (compared in constant time) or with a token; the secret is never logged nor written to the
  discovery file.
* Redis: ``publish=`` also publishes every upstream message (channels
  ``{prefix}:{path}:{symbol}``, e.g. ``alpaca-nb:v2/iex:AAPL``, and ``{prefix}:trade_updates``);
  ``source=`` serves clients from another machine's publishing relay, whose upstream then also
  carries the symbols only remote clients want. Trade updates are private to the account:
  protect ``{prefix}:trade_updates`` with Redis ACLs.

Layout (imports run one way, top to bottom): ``_relay`` (the server and its lifecycle),
``_redis`` (publisher and source), ``_endpoints`` (one endpoint: clients, union, frames),
``_clients`` (the downstream protocols, per-client outboxes), ``_upstream`` (the relay's own
connections), ``_fanout`` (reference counts and per-client selection).
"""

from ._relay import DEFAULT_PORT, Relay, RelayError

__all__ = ["DEFAULT_PORT", "Relay", "RelayError"]
