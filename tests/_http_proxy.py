"""A real TCP proxy on loopback that records the HTTP request lines passing through it.

Tests put it between the client and a sandbox to count attempts and see which query a request
carried, without touching the client's transport. It forwards bytes unchanged in both directions.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from urllib.parse import parse_qs, urlsplit

_REQUEST_LINE = re.compile(rb"(GET|POST|PATCH|DELETE|PUT|HEAD) (/\S*) HTTP/1\.[01]\r\n")


class RecordingProxy:
    """``with RecordingProxy(upstream_url) as proxy: ... proxy.url ... proxy.requests``"""

    def __init__(self, upstream_url: str):
        parts = urlsplit(upstream_url)
        self._upstream = (parts.hostname, parts.port)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._requests: list[tuple[str, str]] = []
        self._times: list[float] = []           # time.monotonic() when each request line arrived
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._closed = False
        self._accept = threading.Thread(target=self._accept_loop, daemon=True, name="test-proxy")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def requests(self) -> list[tuple[str, str]]:
        """(method, path?query) of every request seen so far."""
        with self._lock:
            return list(self._requests)

    def count(self, method: str | None = None, path: str | None = None) -> int:
        return len(self.matching(method, path))

    def matching(self, method: str | None = None, path: str | None = None) -> list[tuple[str, dict]]:
        """(path, query dict) of requests with this method whose path starts with ``path``."""
        out = []
        for m, target in self.requests:
            parts = urlsplit(target)
            if (method is None or m == method) and (path is None or parts.path.startswith(path)):
                out.append((parts.path, {k: v[0] for k, v in parse_qs(parts.query).items()}))
        return out

    def times(self, method: str | None = None, path: str | None = None) -> list[float]:
        """``time.monotonic()`` at which each matching request line reached the proxy."""
        with self._lock:
            pairs = list(zip(self._requests, self._times))
        return [t for (m, target), t in pairs
                if (method is None or m == method) and (path is None or urlsplit(target).path.startswith(path))]

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()
            self._times.clear()

    def __enter__(self) -> RecordingProxy:
        self._accept.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closed = True
        self._listener.close()
        for s in list(self._sockets):
            try:
                s.close()
            except OSError:
                pass

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self._upstream, timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            self._sockets += [client, upstream]
            for args in ((client, upstream, True), (upstream, client, False)):
                t = threading.Thread(target=self._pump, args=args, daemon=True)
                t.start()

    def _pump(self, src: socket.socket, dst: socket.socket, record: bool) -> None:
        buffer = b""
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if record:
                    buffer = (buffer + data)[-8192:]
                    for match in _REQUEST_LINE.finditer(buffer):
                        with self._lock:
                            self._requests.append((match.group(1).decode(), match.group(2).decode()))
                            self._times.append(time.monotonic())
                    last = None
                    for last in _REQUEST_LINE.finditer(buffer):
                        pass
                    if last is not None:
                        buffer = buffer[last.end():]
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
