"""A real TCP proxy process that can break WebSocket connections on command.

Run as ``python tests/_ws_proxy.py UPSTREAM_HOST UPSTREAM_PORT``; it prints ``port N`` once it
listens on 127.0.0.1, then reads commands from stdin, one per line, and answers each with
``ok <command> <detail>`` on stdout:

``drop``           abort every open connection (no close frame, like a network failure)
``block``          drop everything and refuse new connections until ``unblock``
``unblock``        accept connections again
``freeze``         stop forwarding on the open connections (both ways) but keep them open: the
                   client sees a silent socket (no data, no pong)
``inject HEX``     send a text frame with these bytes to every open WebSocket client, between two
                   server frames (a malformed message from the "server")
``count``          the number of WebSocket upgrades seen so far
``quit``           exit

HTTP requests that are not WebSocket upgrades are forwarded byte for byte. :class:`WsProxy` is
the test-side handle that starts the process and sends commands.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading

if __name__ != "__main__":
    import pathlib

    _SCRIPT = pathlib.Path(__file__).resolve()


class _Conn:
    def __init__(self, client_writer: asyncio.StreamWriter, upstream_writer: asyncio.StreamWriter):
        self.client = client_writer
        self.upstream = upstream_writer
        self.frozen = False
        self.websocket = False
        self.write_lock = asyncio.Lock()

    def abort(self) -> None:
        for w in (self.client, self.upstream):
            try:
                w.transport.abort()
            except Exception:
                pass


class _Proxy:
    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.conns: set[_Conn] = set()
        self.blocked = False
        self.upgrades = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.blocked:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        except OSError:
            writer.transport.abort()
            return
        conn = _Conn(writer, up_writer)
        self.conns.add(conn)
        try:
            await asyncio.gather(self._client_to_server(reader, conn), self._server_to_client(up_reader, conn))
        except (ConnectionError, asyncio.IncompleteReadError, OSError, asyncio.CancelledError):
            pass
        finally:
            self.conns.discard(conn)
            conn.abort()

    async def _wait_thawed(self, conn: _Conn) -> None:
        while conn.frozen:
            await asyncio.sleep(0.05)

    async def _client_to_server(self, reader: asyncio.StreamReader, conn: _Conn) -> None:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            await self._wait_thawed(conn)
            conn.upstream.write(data)
            await conn.upstream.drain()
        conn.abort()

    async def _server_to_client(self, reader: asyncio.StreamReader, conn: _Conn) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        await self._wait_thawed(conn)
        conn.client.write(head)
        if head.startswith(b"HTTP/1.1 101"):
            conn.websocket = True
            self.upgrades += 1
            while True:
                frame = await _read_frame(reader)
                await self._wait_thawed(conn)
                async with conn.write_lock:
                    conn.client.write(frame)
                    await conn.client.drain()
        else:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                await self._wait_thawed(conn)
                conn.client.write(data)
                await conn.client.drain()
        conn.abort()

    async def inject(self, payload: bytes) -> int:
        n = 0
        for conn in list(self.conns):
            if conn.websocket and not conn.frozen:
                async with conn.write_lock:
                    conn.client.write(_text_frame(payload))
                    await conn.client.drain()
                n += 1
        return n

    async def command(self, line: str) -> str:
        cmd, _, arg = line.strip().partition(" ")
        if cmd == "drop":
            conns = list(self.conns)
            for conn in conns:
                conn.abort()
            return str(len(conns))
        if cmd == "block":
            self.blocked = True
            conns = list(self.conns)
            for conn in conns:
                conn.abort()
            return str(len(conns))
        if cmd == "unblock":
            self.blocked = False
            return ""
        if cmd == "freeze":
            conns = [c for c in self.conns if c.websocket]
            for conn in conns:
                conn.frozen = True
            return str(len(conns))
        if cmd == "inject":
            return str(await self.inject(bytes.fromhex(arg)))
        if cmd == "count":
            return str(self.upgrades)
        return "unknown"


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readexactly(2)
    length = head[1] & 0x7F
    ext = b""
    if length == 126:
        ext = await reader.readexactly(2)
        length = int.from_bytes(ext, "big")
    elif length == 127:
        ext = await reader.readexactly(8)
        length = int.from_bytes(ext, "big")
    mask = await reader.readexactly(4) if head[1] & 0x80 else b""
    return head + ext + mask + await reader.readexactly(length)


def _text_frame(payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        head = bytes([0x81, n])
    elif n < 65536:
        head = bytes([0x81, 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x81, 127]) + n.to_bytes(8, "big")
    return head + payload


async def _main(host: str, port: int) -> None:
    proxy = _Proxy(host, port)
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
    print(f"port {server.sockets[0].getsockname()[1]}", flush=True)
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str] = asyncio.Queue()

    def read_stdin() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line)
        loop.call_soon_threadsafe(lines.put_nowait, "quit")

    threading.Thread(target=read_stdin, daemon=True).start()
    while True:
        line = await lines.get()
        if line.strip() == "quit":
            break
        detail = await proxy.command(line)
        print(f"ok {line.strip().split(' ')[0]} {detail}", flush=True)
    server.close()
    for conn in list(proxy.conns):
        conn.abort()


class WsProxy:
    """Test-side handle: ``with WsProxy(sandbox.url) as proxy: proxy.url, proxy.send("drop")``."""

    def __init__(self, upstream_url: str):
        from urllib.parse import urlsplit

        parts = urlsplit(upstream_url)
        self._proc = subprocess.Popen([sys.executable, str(_SCRIPT), parts.hostname, str(parts.port)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self._proc.stdout.readline()
        if not line.startswith("port "):
            self._proc.kill()
            raise RuntimeError(f"proxy did not start: {line!r}")
        self.port = int(line.split()[1])
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def stream_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def send(self, command: str) -> str:
        """Run one command; returns its detail (e.g. how many connections were dropped)."""
        with self._lock:
            self._proc.stdin.write(command + "\n")
            self._proc.stdin.flush()
            answer = self._proc.stdout.readline().strip()
        if not answer.startswith("ok "):
            raise RuntimeError(f"proxy answered {answer!r} to {command!r}")
        return answer.split(" ", 2)[2] if answer.count(" ") >= 2 else ""

    def inject(self, payload: bytes) -> int:
        return int(self.send("inject " + payload.hex()))

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                self._proc.stdin.write("quit\n")
                self._proc.stdin.flush()
            except (BrokenPipeError, OSError):
                pass
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)

    def __enter__(self) -> WsProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1], int(sys.argv[2])))
