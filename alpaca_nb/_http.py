"""HTTP transport: one ``requests.Session`` with timeouts, a rate limiter per API (trading and
market data, each fed only by its own server's rate headers), retries with backoff for reads,
and Alpaca error mapping.

Retries: GET and HEAD are retried on 429 (after the server's Retry-After), 500, 502, 503, 504 and
connection failures, with exponential backoff and full jitter, within a bounded number of attempts
and a bounded total time. Nothing else is retried here: a POST, PATCH or DELETE whose answer was
lost may already have acted (placed, replaced, canceled, closed), and repeating it blindly would
report the wrong result (or act twice); :mod:`alpaca_nb._settle` retries those after finding
out what happened.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import orjson
import requests
import urllib3
from requests.adapters import HTTPAdapter

from . import __version__
from ._config import Secret, Settings
from .errors import AlpacaConnectionError, error_from_response

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
READ_METHODS = frozenset({"GET", "HEAD"})   # retried here; the rest is settled by the caller


class RateLimiter:
    """At most ``limit`` requests in any ``window`` seconds, as the server counts them, and no
    more than the server's ``X-RateLimit-*`` headers say are left.

    A sliding-window log: each request holds one of ``limit`` slots from the moment it is sent
    until ``window`` seconds after its answer arrived (or it failed). A request can reach the
    server only between those two moments, so no ``window`` at the server ever sees more than
    ``limit`` requests, whatever the network delays (a token bucket, or a log of send times,
    admits up to twice the limit across a window boundary). Up to ``limit`` requests go at
    once; the next waits for the oldest answer to leave the window.

    When the server reports (``X-RateLimit-Remaining`` / ``X-RateLimit-Reset``) that fewer
    requests are left than the log would allow, requests are spread evenly over the time left
    until the reset, and none is sent once it reports zero. Thread-safe; waiting releases the lock.

    Use: ``slot = limiter.acquire()`` before sending, ``limiter.release(slot)`` once the answer
    (or the failure) is in.
    """

    def __init__(self, limit: int, *, window: float = 60.0, clock=time.monotonic, sleep=None):
        if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
            raise ValueError(f"limit must be a positive whole number of requests, got {limit!r}")
        if not window > 0:
            raise ValueError(f"window must be positive seconds, got {window!r}")
        self.limit = limit
        self.window = float(window)
        self._clock = clock
        self._sleep = sleep            # None: wait on the condition (woken early by a release)
        self._cond = threading.Condition()
        self._done: deque[float] = deque()   # answer times still inside the window, ascending
        self._in_flight = 0
        self._server_remaining: int | None = None
        self._server_reset = 0.0       # in our monotonic clock
        self._next_paced = 0.0         # earliest time of the next request when pacing to the server
        self.waited = 0.0              # total seconds spent waiting (observable, for users and tests)

    @property
    def per_minute(self) -> float:
        return self.limit * 60.0 / self.window

    @property
    def server_remaining(self) -> int | None:
        """Requests the server last said are left in its window (None: it said nothing yet, or
        its window has reset since)."""
        with self._cond:
            if self._server_remaining is not None and self._clock() >= self._server_reset:
                return None
            return self._server_remaining

    def acquire(self, cancel: threading.Event | None = None) -> float | None:
        """Wait until a request may be sent; returns its slot (the send time), or None when
        ``cancel`` was set before a slot was free (then no slot is held)."""
        with self._cond:
            while True:
                if cancel is not None and cancel.is_set():
                    return None
                now = self._clock()
                delay = self._delay_locked(now)
                if delay == 0.0:
                    self._in_flight += 1
                    return now
                if self._sleep is None:        # a release wakes the waiters early
                    started = time.monotonic()
                    if cancel is not None:     # an Event cannot wake a Condition: look often
                        delay = _CANCEL_POLL if delay == _UNTIL_RELEASE else min(delay, _CANCEL_POLL)
                    self._cond.wait(None if delay == _UNTIL_RELEASE else delay)
                    self.waited += time.monotonic() - started
                else:
                    delay = 0.001 if delay == _UNTIL_RELEASE else delay
                    self.waited += delay
                    self._cond.release()
                    try:
                        self._sleep(delay)
                    finally:
                        self._cond.acquire()

    def release(self, slot: float) -> None:
        """The request of ``slot`` is over (answered or failed): its slot leaves the window
        ``window`` seconds from now."""
        with self._cond:
            self._in_flight -= 1
            self._done.append(self._clock())
            self._cond.notify_all()

    def _delay_locked(self, now: float) -> float:
        """0.0 when a request may go now, else seconds to wait (_UNTIL_RELEASE: until an
        answer arrives)."""
        done = self._done
        while done and done[0] + self.window <= now:
            done.popleft()
        if self._in_flight + len(done) >= self.limit:
            return done[0] + self.window - now if done else _UNTIL_RELEASE
        if self._server_remaining is not None and now >= self._server_reset:
            self._server_remaining = None            # the server's window has reset
        if self._server_remaining is not None:
            if self._server_remaining <= 0:
                return max(self._server_reset - now, 1e-3)
            if now < self._next_paced:
                return self._next_paced - now
            self._server_remaining -= 1
            left = self.limit - self._in_flight - len(done) - 1
            spread = (self._server_reset - now) / max(self._server_remaining + 1, 1)
            self._next_paced = now + spread if self._server_remaining < left else 0.0
        return 0.0

    def observe(self, headers: Mapping[str, str], *, wall_now: float | None = None) -> None:
        """Take the server's view from a response's ``X-RateLimit-*`` headers."""
        remaining, reset = headers.get("X-RateLimit-Remaining"), headers.get("X-RateLimit-Reset")
        if remaining is None or reset is None:
            return
        try:
            remaining_n, reset_at = int(remaining), float(reset)
        except ValueError:
            return
        wall = time.time() if wall_now is None else wall_now
        # reset is Unix seconds on the server's clock; never trust it for more than a window
        seconds_left = min(max(reset_at - wall, 0.0), max(self.window, 60.0))
        with self._cond:
            self._server_remaining = remaining_n
            self._server_reset = self._clock() + seconds_left


_UNTIL_RELEASE = -1.0
_CANCEL_POLL = 0.02     # seconds between looks at a cancel event while waiting for a slot


class _AlpacaAuth(requests.auth.AuthBase):
    """Adds the APCA key headers at send time; its repr never shows the secret."""

    def __init__(self, key_id: str, secret: Secret):
        self._key_id = key_id
        self._secret = secret

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["APCA-API-KEY-ID"] = self._key_id
        r.headers["APCA-API-SECRET-KEY"] = self._secret.reveal()
        return r

    def __repr__(self) -> str:
        return "<AlpacaAuth ********>"


class Transport:
    """Sends requests to one Alpaca environment.

    Args:
        settings: resolved credentials and URLs.
        timeout: (connect, read) seconds for each attempt.
        max_attempts: tries per read (GET/HEAD) request (1 = no retry).
        max_retry_time: seconds after which a read stops being retried.
        backoff: (base, cap) seconds of the exponential backoff; each wait is uniform in
            [0, min(cap, base * 2**n)] ("full jitter").
    """

    def __init__(self, settings: Settings, *, timeout: tuple[float, float] = (5.0, 30.0),
                 max_attempts: int = 5, max_retry_time: float = 60.0,
                 backoff: tuple[float, float] = (0.5, 8.0)):
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.settings = settings
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.max_retry_time = max_retry_time
        self.backoff = backoff
        self.limiters = {"trading": RateLimiter(settings.rate_limit, window=settings.rate_window),
                         "data": RateLimiter(settings.data_rate_limit, window=settings.rate_window)}
        self._random = random.Random()
        session = requests.Session()
        session.auth = _AlpacaAuth(settings.key_id, settings.secret)
        session.headers.update({"User-Agent": f"alpaca-nb/{__version__}", "Accept": "application/json"})
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=8, max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.trust_env = False   # no .netrc credentials or proxies picked up behind the user's back
        self._session = session

    def close(self) -> None:
        self._session.close()

    def __repr__(self) -> str:
        return f"<Transport {self.settings.base_url} mode={self.settings.mode}>"

    def __reduce__(self):
        raise TypeError("a Transport holds credentials and cannot be pickled")

    # ------------------------------------------------------------------ requests
    def trading(self, method: str, path: str, **kw: Any) -> Any:
        """A trading-API request (``path`` starts with /v2/), paced by the trading limiter."""
        return self.request(method, self.settings.base_url + path, api="trading", **kw)

    def data(self, path: str, params: Mapping[str, Any] | None = None, *, raw: bool = False,
             retry: bool | None = None, cancel: threading.Event | None = None) -> Any:
        """A market-data GET (``path`` starts with /v2/stocks/), paced by the data limiter."""
        return self.request("GET", self.settings.data_url + path, params=params, raw=raw, api="data",
                            retry=retry, cancel=cancel)

    def request(self, method: str, url: str, *, params: Mapping[str, Any] | None = None,
                json: Any = None, raw: bool = False, retry: bool | None = None,
                api: str = "trading", cancel: threading.Event | None = None) -> Any:
        """Send one request and return its decoded JSON (None for an empty body; the raw bytes
        when ``raw``).

        ``retry`` defaults to True for GET/HEAD and False otherwise. ``api`` ("trading" or
        "data") names the rate limiter that paces it and reads its answer's rate headers.
        Once ``cancel`` is set no attempt starts any more (a wait for a rate-limit slot or
        between retries ends at once); an attempt already on the wire is not interrupted.

        Raises:
            AlpacaError subclass for an error answer (after retries if retried);
            AlpacaConnectionError when no answer arrived (``sent=False`` when the request
            certainly never reached the server, as when ``cancel`` stopped it first).
        """
        method = method.upper()
        retry = method in READ_METHODS if retry is None else retry
        limiter = self.limiters[api]
        path = urlsplit(url).path
        body = orjson.dumps(json) if json is not None else None
        headers = {"Content-Type": "application/json"} if body is not None else None
        params = _clean_params(params)
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            slot = limiter.acquire(cancel)
            if slot is None:
                raise AlpacaConnectionError(f"{method} {path} canceled before it was sent", method=method,
                                            path=path, attempts=attempt - 1, sent=attempt > 1)
            t0 = time.perf_counter()
            try:
                resp = self._session.request(method, url, params=params, data=body, headers=headers,
                                             timeout=self.timeout, allow_redirects=False, stream=True)
                content = _read_body(resp)
            except (requests.ConnectionError, requests.Timeout, urllib3.exceptions.HTTPError) as exc:
                limiter.release(slot)
                reason = _reason(exc)
                log.debug("%s %s failed: %s (attempt %d)", method, path, reason, attempt)
                delay = self._retry_delay(retry, attempt, started, None)
                if delay is None:
                    raise AlpacaConnectionError(
                        f"no answer from {urlsplit(url).netloc}: {reason}", method=method,
                        path=path, attempts=attempt, sent=not _not_sent(exc)) from None
                _pause(delay, cancel)
                continue
            except BaseException:
                limiter.release(slot)
                raise
            limiter.release(slot)
            limiter.observe(resp.headers)
            status = resp.status_code
            log.debug("%s %s -> %d in %.1f ms", method, path, status, (time.perf_counter() - t0) * 1e3)
            if status < 300:
                if raw:
                    return content
                return orjson.loads(content) if content else None
            retry_after = _retry_after(resp.headers.get("Retry-After"))
            if status in RETRY_STATUSES:
                delay = self._retry_delay(retry, attempt, started, retry_after)
                if delay is not None:
                    log.info("%s %s answered %d; retrying in %.2f s (attempt %d of %d)",
                             method, path, status, delay, attempt, self.max_attempts)
                    _pause(delay, cancel)
                    continue
            # an answer that quotes the secret (a proxy or server echoing the request) loses it here
            content = content.replace(self.settings.secret.reveal().encode(), b"********")
            raise error_from_response(status, _decode(content), method=method, path=path,
                                      attempts=attempt, retry_after=retry_after)

    def _retry_delay(self, retry: bool, attempt: int, started: float,
                     retry_after: float | None) -> float | None:
        """Seconds to wait before the next attempt, or None to give up."""
        if not retry or attempt >= self.max_attempts:
            return None
        base, cap = self.backoff
        delay = self._random.uniform(0, min(cap, base * 2 ** (attempt - 1)))
        if retry_after is not None:
            delay = max(delay, retry_after)
        if time.monotonic() - started + delay > self.max_retry_time:
            return None
        return delay


def _pause(seconds: float, cancel: threading.Event | None) -> None:
    """Sleep ``seconds``, or less once ``cancel`` is set."""
    if cancel is None:
        time.sleep(seconds)
    else:
        cancel.wait(seconds)


def _read_body(resp: requests.Response) -> bytes:
    """The whole (decompressed) body in one read: the socket is drained in C without taking the
    GIL back for every 10 KB chunk, which matters when a page downloads on a background thread
    while the main thread parses the previous one."""
    try:
        content = resp.raw.read(decode_content=True) or b""
    except BaseException:
        resp.close()                 # a half-read connection is never reused
        raise
    resp.raw.release_conn()          # fully read: back to the pool for the next request
    return content


def _clean_params(params: Mapping[str, Any] | None) -> dict[str, str] | None:
    """Query values as Alpaca expects them: no Nones, lowercase booleans, comma-joined lists."""
    if not params:
        return None
    out: dict[str, str] = {}
    for key, value in params.items():
        if value is None:
            continue
        if isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, (list, tuple)):
            out[key] = ",".join(str(v) for v in value)
        else:
            out[key] = str(value)
    return out


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _decode(content: bytes) -> Any:
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        return content.decode("utf-8", "replace")


def _not_sent(exc: BaseException) -> bool:
    """The connection could not be made (refused, unresolvable, connect timeout): the request
    never reached the server."""
    if isinstance(exc, (requests.ConnectTimeout, urllib3.exceptions.NewConnectionError,
                        urllib3.exceptions.ConnectTimeoutError)):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError))


def _reason(exc: BaseException) -> str:
    """A short cause without the request (which would carry headers) attached."""
    if isinstance(exc, (requests.Timeout, urllib3.exceptions.TimeoutError)):
        return "timed out"
    text = str(exc.args[0]) if exc.args else type(exc).__name__
    for marker in ("RemoteDisconnected", "Connection refused", "Connection reset", "Connection aborted",
                   "Connection broken"):
        if marker in text:
            return (marker.lower().replace("remotedisconnected", "connection closed without an answer")
                    .replace("connection broken", "connection broken in the middle of the answer"))
    return type(exc).__name__
