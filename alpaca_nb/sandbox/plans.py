"""Market-data plans of sandbox accounts: which feeds an account may read, and how Alpaca answers
when it may not.

Each account has a ``data_plan`` (chosen with ``POST /sandbox/accounts {"data_plan": ...}``, and
for the default account with ``SandboxConfig.data_plan`` / ``alpaca-nb sandbox --data-plan``):

``unlimited`` (the default)
    Every feed in real time, no plan limit on stream symbols (the sandbox's own ceiling,
    :data:`.data_stream.SYMBOL_LIMIT`, still applies). Alpaca's Algo Trader Plus.

``basic``
    Alpaca's free plan, as Alpaca enforces it:

    * Data stream: ``/v2/sip`` answers the ``auth`` message with
      ``[{"T":"error","code":409,"msg":"insufficient subscription"}]`` and the connection stays
      unauthenticated (Alpaca: "any attempt to access a data feed not available for your
      subscription will result in an error during authentication"). ``/v2/iex`` and
      ``/v2/delayed_sip`` (SIP 15 minutes late) are open to the free plan. Trades and quotes
      together may cover at most :data:`BASIC_SYMBOL_LIMIT` distinct symbols and no ``*``; a
      subscribe past that gets ``405 symbol limit exceeded`` and changes nothing. Bars (and the
      other channels) have no limit.
    * REST, historical bars/trades/quotes: SIP data of the last 15 minutes is refused with
      ``403 {"message":"subscription does not permit querying recent SIP data"}`` (no numeric
      code) when ``feed=sip`` (or no feed: the historical endpoints default to SIP on every
      plan) and an explicit ``end`` or ``start`` lies within the last 15 minutes; without
      ``end`` the answer is the market as it was 15 minutes ago (the minute then in progress
      has no bar yet). ``feed=iex`` is real time.
    * REST, latest and snapshot endpoints: ``feed=sip`` is always refused with that 403;
      without ``feed`` they serve ``iex`` (``sip`` on ``unlimited``); ``feed=delayed_sip``
      answers as of 15 minutes ago on every plan.

    ``otc``, ``boats`` and ``overnight`` stay open to both plans ([unconfirmed]: no source says
    what the free plan gets there).

Sources: Alpaca's Market Data FAQ ("Why am I getting HTTP 403": "subscription does not permit
querying recent SIP data ... to query any SIP trades or quotes in the last 15 minutes, you need
the Algo Trader Plus subscription"); the bars reference (start/end defaults "at least 15 minutes
ago if the user doesn't have real-time access for the feed"); the latest/snapshot references
(feed default "sip if the user has the unlimited subscription, otherwise iex"); the real-time
stock data page (IEX plan: 30 symbols for trades and quotes, bars unlimited); wire captures by
users: alpacahq/alpaca-trade-api-js#188 and kzhdev/alpaca_zorro_plugin#7 (409 on ``/v2/sip``),
kzhdev/alpaca_zorro_plugin#11 (the 403 body for a recent range requested without ``feed``),
bennycode/trading-signals#1375 (the 403 from a latest endpoint with ``feed=sip``; older history
without ``feed`` comes back as SIP on the free plan).
"""

from __future__ import annotations

from .clock import NS
from .wire import ApiError

DATA_PLANS = ("unlimited", "basic")
DEFAULT_DATA_PLAN = "unlimited"
BASIC_SYMBOL_LIMIT = 30                  # trades + quotes symbols per stream on the free plan
RECENT_NS = 15 * 60 * NS                 # SIP younger than this needs a paid plan
RECENT_SIP_MESSAGE = "subscription does not permit querying recent SIP data"
_BASIC_STREAM_REFUSED = frozenset({"sip"})


def check_data_plan(value: object) -> str:
    """``value`` if it names a plan.

    Raises:
        ValueError: anything else (the message lists the plans).
    """
    if not isinstance(value, str) or value not in DATA_PLANS:
        raise ValueError(f"data_plan must be one of {', '.join(DATA_PLANS)}; got {value!r}")
    return value


def stream_allowed(plan: str, feed: str) -> bool:
    """Whether an account on ``plan`` may authenticate on the data stream of ``feed``."""
    return not (plan == "basic" and feed in _BASIC_STREAM_REFUSED)


def symbol_limit(plan: str) -> int | None:
    """Distinct trades + quotes symbols a stream may hold (None: no plan limit, ``*`` allowed)."""
    return BASIC_SYMBOL_LIMIT if plan == "basic" else None


def default_latest_feed(plan: str) -> str:
    """The feed of a latest/snapshot request that names none."""
    return "iex" if plan == "basic" else "sip"


def realtime_sip(plan: str) -> bool:
    """Whether the plan may read SIP data of the last 15 minutes over REST."""
    return plan != "basic"


def recent_sip_refused() -> ApiError:
    """Alpaca's 403 for SIP data the plan may not read yet: ``{"message": ...}``, no code."""
    return ApiError(403, None, RECENT_SIP_MESSAGE)
