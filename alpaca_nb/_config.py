"""Credentials, endpoints, the sandbox/paper/live choice, pre-trade limits, secret masking.

Resolution order for every setting: explicit argument, then environment variable, then default.
Without keys anywhere the client talks to an embedded sandbox started in this process (the only
place the client side imports the sandbox). With keys it is paper trading unless ``paper=False``,
and live trading additionally needs ``allow_live=True`` or ``ALPACA_NB_ALLOW_LIVE=1``.
"""

from __future__ import annotations

import atexit
import hashlib
import hmac
import ipaddress
import logging
import os
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal
from urllib.parse import urlsplit

log = logging.getLogger("alpaca_nb")

Mode = Literal["sandbox", "paper", "live"]

PAPER_URL = "https://paper-api.alpaca.markets"
LIVE_URL = "https://api.alpaca.markets"
DATA_URL = "https://data.alpaca.markets"
STREAM_URL = "wss://stream.data.alpaca.markets"

# Pre-trade guard defaults: generous, so they only stop fat fingers.
DEFAULT_MAX_ORDER_NOTIONAL = 1_000_000.0
DEFAULT_MAX_ORDER_QTY = 100_000.0
DEFAULT_PRICE_COLLAR = 0.25
DEFAULT_RATE_LIMIT = 200       # requests per minute, Alpaca's trading API limit
DEFAULT_DATA_RATE_LIMIT = 200  # market data per minute: Alpaca's basic plan (Algo Trader Plus: 10,000)
RATE_APIS = ("trading", "data")

_OFF = {"", "off", "none", "0", "false", "no"}
_ON = {"1", "true", "yes", "on"}


class Secret:
    """A secret string that never shows itself: repr, str, format and pickle are masked/refused."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        if not isinstance(value, str) or not value:
            raise TypeError("a secret must be a non-empty string")
        object.__setattr__(self, "_value", value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Secret):
            other = other._value
        return isinstance(other, str) and hmac.compare_digest(self._value, other)

    def __hash__(self) -> int:
        return hash(("Secret", len(self._value)))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Secret is immutable")

    def __reduce__(self):
        raise TypeError("secrets cannot be pickled; connect again in the other process")


def mask_key_id(key_id: str) -> str:
    """Enough of a key id to recognise it, not to use it: 'PKAB…WXYZ'."""
    return key_id if len(key_id) <= 8 else f"{key_id[:4]}…{key_id[-4:]}"


@dataclass(frozen=True, repr=False)
class Settings:
    """Everything a client needs to reach one Alpaca environment."""

    mode: Mode
    key_id: str
    secret: Secret
    base_url: str            # trading REST, e.g. https://paper-api.alpaca.markets
    data_url: str            # market-data REST
    stream_url: str          # market-data stream base; the feed path (/v2/iex) is appended
    feed: str | None = None  # default market-data feed (None = the server's default)
    max_order_notional: float | None = DEFAULT_MAX_ORDER_NOTIONAL
    max_order_qty: float | None = DEFAULT_MAX_ORDER_QTY
    price_collar: float | None = DEFAULT_PRICE_COLLAR
    rate_limit: int = DEFAULT_RATE_LIMIT               # trading API requests per rate_window
    relay: str | None = None  # a stream relay (ws://127.0.0.1:8766) serving both streams
    data_rate_limit: int = DEFAULT_DATA_RATE_LIMIT     # market-data requests per rate_window
    rate_window: float = 60.0                          # seconds (Alpaca counts per minute)
    check_buying_power: bool = True                    # the guard's buying-power check
    guard_cache: float = 3.0                           # seconds the guard reuses account/positions

    @property
    def trading_stream_url(self) -> str:
        """The trade-updates WebSocket: the trading host with ws(s):// and /stream (the relay's
        /stream when streaming through a relay)."""
        return (self.relay or _ws_scheme(self.base_url)) + "/stream"

    def __repr__(self) -> str:
        via = f", relay={self.relay!r}" if self.relay else ""
        return (f"Settings(mode={self.mode!r}, key_id={mask_key_id(self.key_id)!r}, "
                f"secret='********', base_url={self.base_url!r}, data_url={self.data_url!r}, "
                f"stream_url={self.stream_url!r}{via})")

    def __reduce__(self):
        raise TypeError("settings hold credentials and cannot be pickled; connect again instead")


def _ws_scheme(url: str) -> str:
    url = url.rstrip("/")
    if url.startswith("https://"):
        return "wss://" + url[8:]
    if url.startswith("http://"):
        return "ws://" + url[7:]
    return url


def _is_loopback(url: str) -> bool:
    return is_loopback_host(urlsplit(url).hostname or "")


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _env_float(env: Mapping[str, str], name: str, default: float | None) -> float | None:
    raw = env.get(name)
    if raw is None:
        return default
    if raw.strip().lower() in _OFF:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not a number (or 'off')") from None
    return value


def _limit(name: str, value: Any, env: Mapping[str, str], env_name: str, default: float) -> float | None:
    """A guard limit from the argument (None turns it off), else the environment, else default."""
    if value is _UNSET:
        value = _env_float(env, env_name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number or None (off), got {type(value).__name__}")
    if not value > 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return float(value)


def _rate_limits(value: Any, env: Mapping[str, str]) -> dict[str, Any]:
    """Requests per minute for each API: ``rate_limit=N`` (both), ``rate_limit={"trading": N,
    "data": M}`` (either may be left out), else ALPACA_NB_TRADING_RATE_LIMIT /
    ALPACA_NB_DATA_RATE_LIMIT, else 200 each. ALPACA_NB_RATE_WINDOW shortens the 60 s window
    (the limits then count per that many seconds; for tests)."""
    given: dict[str, Any] = {}
    if isinstance(value, Mapping):
        unknown = set(value) - set(RATE_APIS)
        if unknown:
            raise ValueError(f"rate_limit keys must be 'trading' and/or 'data'; got {sorted(map(str, unknown))}")
        given = dict(value)
    elif value is not None:
        given = {api: value for api in RATE_APIS}
    out: dict[str, Any] = {}
    for api, field_name, default in (("trading", "rate_limit", DEFAULT_RATE_LIMIT),
                                     ("data", "data_rate_limit", DEFAULT_DATA_RATE_LIMIT)):
        limit = given.get(api)
        env_name = f"ALPACA_NB_{api.upper()}_RATE_LIMIT"
        if limit is None and env.get(env_name):
            try:
                limit = int(env[env_name])
            except ValueError:
                raise ValueError(f"environment variable {env_name}={env[env_name]!r} is not a whole "
                                 "number of requests per minute") from None
        if limit is None:
            limit = default
        if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
            raise ValueError(f"rate_limit for the {api} API must be a positive whole number of "
                             f"requests per minute, e.g. rate_limit={{'trading': 200, 'data': 10_000}}; "
                             f"got {limit!r}")
        out[field_name] = limit
    window = _env_float(env, "ALPACA_NB_RATE_WINDOW", 60.0)
    if window is None or not window > 0:
        raise ValueError("ALPACA_NB_RATE_WINDOW must be positive seconds")
    out["rate_window"] = window
    return out


def _guard_extras(check_buying_power: Any, guard_cache: Any, env: Mapping[str, str]) -> dict[str, Any]:
    """The buying-power check switch (ALPACA_NB_BUYING_POWER_CHECK=off) and how long the guard
    reuses what it learned of the account and positions (ALPACA_NB_GUARD_CACHE seconds)."""
    if check_buying_power is _UNSET:
        raw = env.get("ALPACA_NB_BUYING_POWER_CHECK")
        check_buying_power = True if raw is None else raw.strip().lower() not in _OFF
    if not isinstance(check_buying_power, bool):
        raise TypeError(f"check_buying_power must be True or False, got {check_buying_power!r}")
    if guard_cache is _UNSET:
        guard_cache = _env_float(env, "ALPACA_NB_GUARD_CACHE", 3.0) or 0.0
    if guard_cache is None:
        guard_cache = 0.0
    if isinstance(guard_cache, bool) or not isinstance(guard_cache, (int, float)) or guard_cache < 0:
        raise ValueError(f"guard_cache must be seconds (0 or None: always ask the server), got {guard_cache!r}")
    return {"check_buying_power": check_buying_power, "guard_cache": float(guard_cache)}


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


_UNSET: Any = _Unset()


def resolve(*, key_id: str | None = None, secret_key: str | None = None, paper: bool = True,
            sandbox: Any = None, base_url: str | None = None, data_url: str | None = None,
            stream_url: str | None = None, allow_live: bool | None = None, feed: str | None = None,
            max_order_notional: Any = _UNSET, max_order_qty: Any = _UNSET,
            price_collar: Any = _UNSET, rate_limit: Any = None,
            check_buying_power: Any = _UNSET, guard_cache: Any = _UNSET,
            env: Mapping[str, str] | None = None) -> Settings:
    """Work out which environment to talk to. See :func:`alpaca_nb.connect` for the rules.

    Raises:
        ValueError: half a key pair, an unknown feed, a bad limit.
        PermissionError: live trading without ``allow_live=True`` / ``ALPACA_NB_ALLOW_LIVE=1``.
    """
    env = os.environ if env is None else env
    if feed is not None and feed not in ("iex", "sip", "delayed_sip", "boats", "overnight", "otc", "test"):
        raise ValueError(f"feed must be one of iex, sip, delayed_sip, boats, overnight, otc, test; got {feed!r}")
    guard = dict(
        max_order_notional=_limit("max_order_notional", max_order_notional, env,
                                  "ALPACA_NB_MAX_ORDER_NOTIONAL", DEFAULT_MAX_ORDER_NOTIONAL),
        max_order_qty=_limit("max_order_qty", max_order_qty, env, "ALPACA_NB_MAX_ORDER_QTY",
                             DEFAULT_MAX_ORDER_QTY),
        price_collar=_limit("price_collar", price_collar, env, "ALPACA_NB_PRICE_COLLAR",
                            DEFAULT_PRICE_COLLAR),
        **_rate_limits(rate_limit, env),
        **_guard_extras(check_buying_power, guard_cache, env),
        feed=feed,
    )

    if sandbox is not None and sandbox is not False:
        sb = embedded_sandbox() if sandbox is True else sandbox
        if not all(hasattr(sb, a) for a in ("url", "stream_url", "key_id", "secret_key")):
            raise TypeError("sandbox must be True or a running alpaca_nb.sandbox.Sandbox")
        return Settings("sandbox", sb.key_id, Secret(sb.secret_key), sb.url, sb.url, sb.stream_url, **guard)

    if (key_id is None) != (secret_key is None):
        missing = "secret_key" if secret_key is None else "key_id"
        raise ValueError(f"give both key_id and secret_key ({missing} is missing)")
    names = ("key_id", "secret_key")
    if key_id is None:
        key_id, secret_key = env.get("APCA_API_KEY_ID"), env.get("APCA_API_SECRET_KEY")
        names = ("APCA_API_KEY_ID", "APCA_API_SECRET_KEY")
        if bool(key_id) != bool(secret_key):
            missing = "APCA_API_SECRET_KEY" if not secret_key else "APCA_API_KEY_ID"
            raise ValueError(f"{missing} is not set while its partner is; set both or neither")
    if not key_id:
        if base_url or data_url:
            raise ValueError("base_url/data_url given without keys; pass key_id and secret_key")
        sb = embedded_sandbox()
        log.warning("alpaca_nb: no Alpaca keys found, using the embedded sandbox at %s "
                    "(simulated market, no real orders). Set APCA_API_KEY_ID and "
                    "APCA_API_SECRET_KEY to trade on paper.", sb.url)
        return Settings("sandbox", sb.key_id, Secret(sb.secret_key), sb.url, sb.url, sb.stream_url, **guard)
    if not isinstance(key_id, str) or not isinstance(secret_key, str):
        raise TypeError("key_id and secret_key must be strings")
    for name, value in zip(names, (key_id, secret_key)):
        if not value.isascii() or not value.isprintable() or " " in value:
            # an HTTP library would refuse the header and quote its value in the error (or a
            # server would echo it back): the key must not get that far
            raise ValueError(f"{name} contains a space, a line break or a character that is not "
                             f"printable ASCII (copied with the key?); Alpaca keys are letters and "
                             f"digits. Its {len(value)} characters are not shown.")

    base_url = (base_url or env.get("APCA_API_BASE_URL") or (PAPER_URL if paper else LIVE_URL)).rstrip("/")
    base_url = base_url.removesuffix("/v2")
    host = urlsplit(base_url).hostname or ""
    if host == "paper-api.alpaca.markets":
        mode: Mode = "paper"
    elif host == "api.alpaca.markets":
        mode = "live"
    elif _is_loopback(base_url):
        mode = "sandbox"
    else:
        mode = "paper" if paper else "live"
    if mode == "live":
        if paper:
            raise PermissionError(
                f"{base_url} is the live trading API but paper=True (the default). Pass "
                "paper=False and allow_live=True (or set ALPACA_NB_ALLOW_LIVE=1) to trade real "
                "money; nothing was sent.")
        allowed = allow_live if allow_live is not None else \
            env.get("ALPACA_NB_ALLOW_LIVE", "").strip().lower() in _ON
        if not allowed:
            raise PermissionError(
                f"{base_url} is live trading with real money. Pass allow_live=True (or set "
                "ALPACA_NB_ALLOW_LIVE=1) together with paper=False to allow it; nothing was sent.")

    data_url = (data_url or env.get("APCA_API_DATA_URL") or
                (base_url if mode == "sandbox" else DATA_URL)).rstrip("/")
    stream_url = stream_url or env.get("APCA_API_STREAM_URL")
    if not stream_url:
        stream_url = STREAM_URL if urlsplit(data_url).hostname == "data.alpaca.markets" else data_url
    stream_url = _ws_scheme(stream_url.rstrip("/"))
    settings = Settings(mode, key_id, Secret(secret_key), base_url, data_url, stream_url, **guard)
    relay = find_relay(settings, env)
    if relay:
        log.info("alpaca_nb: streaming through the relay at %s", relay)
        settings = replace(settings, stream_url=relay, relay=relay)
    return settings


# ------------------------------------------------------------------ stream relay discovery

def key_fingerprint(key_id: str) -> str:
    """What a relay's discovery file says about its keys: enough to match, nothing to use."""
    return hashlib.sha256(b"alpaca-nb relay " + key_id.encode()).hexdigest()[:24]


def relay_dir(env: Mapping[str, str] | None = None) -> str:
    """Where running relays leave their discovery files: ``ALPACA_NB_RELAY_DIR``, else the
    user's runtime directory (platformdirs, e.g. /run/user/1000/alpaca-nb)."""
    env = os.environ if env is None else env
    if env.get("ALPACA_NB_RELAY_DIR"):
        return env["ALPACA_NB_RELAY_DIR"]
    import warnings

    import platformdirs

    with warnings.catch_warnings():      # no XDG_RUNTIME_DIR: platformdirs falls back and warns
        warnings.simplefilter("ignore")
        return platformdirs.user_runtime_dir("alpaca-nb", appauthor=False)


def write_relay_discovery(info: dict[str, Any]) -> str:
    """Write a relay's discovery file (port, pid, key fingerprint, upstream URLs; never a
    secret) readable by this user only; returns its path."""
    import orjson

    folder = relay_dir()
    os.makedirs(folder, mode=0o700, exist_ok=True)
    path = os.path.join(folder, f"relay-{info['port']}.json")
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(orjson.dumps(info))
    os.replace(tmp, path)
    return path


def remove_relay_discovery(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _alive(url: str, pid: Any, port: Any) -> bool:
    """A relay whose process exists and whose port answers."""
    if not isinstance(pid, int) or not isinstance(port, int):
        return False
    if os.name == "posix":
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
    try:
        with socket.create_connection((urlsplit(url).hostname or "127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def find_relay(settings: Settings, env: Mapping[str, str]) -> str | None:
    """The URL of a running relay for these keys and endpoints: ``ALPACA_NB_RELAY`` (a ws://
    URL, or ``off``), else a live discovery file whose key fingerprint and upstream URLs match.
    Stale files (process gone, port closed) are ignored."""
    explicit = (env.get("ALPACA_NB_RELAY") or "").strip()
    if explicit.lower() in _OFF - {""}:
        return None
    if explicit:
        if not explicit.startswith(("ws://", "wss://")):
            raise ValueError(f"ALPACA_NB_RELAY={explicit!r} must be a ws:// URL such as "
                             "ws://127.0.0.1:8766, or 'off'")
        return explicit.rstrip("/")
    import orjson

    try:
        folder = relay_dir(env)
        names = sorted(n for n in os.listdir(folder) if n.startswith("relay-") and n.endswith(".json"))
    except OSError:
        return None
    fingerprint = key_fingerprint(settings.key_id)
    for name in names:
        try:
            with open(os.path.join(folder, name), "rb") as f:
                info = orjson.loads(f.read())
        except (OSError, ValueError):
            continue
        if (isinstance(info, dict) and info.get("key") == fingerprint
                and info.get("stream_url") == settings.stream_url
                and info.get("trading_stream_url") == settings.trading_stream_url
                and isinstance(info.get("url"), str) and _alive(info["url"], info.get("pid"), info.get("port"))):
            return info["url"]
    return None


# ------------------------------------------------------------------ the embedded sandbox

_embedded = None
_embedded_lock = threading.Lock()


def embedded_sandbox():
    """The process-wide sandbox used when no keys are configured (started on first use)."""
    global _embedded
    with _embedded_lock:
        if _embedded is None or not _embedded.running:
            from .sandbox import Sandbox

            seed = int(os.environ.get("ALPACA_NB_SANDBOX_SEED", "7"))
            _embedded = Sandbox(seed=seed).start()
            atexit.register(_embedded.stop)
        return _embedded
