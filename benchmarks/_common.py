"""What every benchmark shares: the sandbox in its own process (so it never competes with the
measured client for the GIL) and the default sandbox account's keys."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import requests

from alpaca_nb.sandbox import DEFAULT_KEY_ID as KEY_ID
from alpaca_nb.sandbox import DEFAULT_SECRET_KEY as SECRET

HEADERS = {"APCA-API-KEY-ID": KEY_ID, "APCA-API-SECRET-KEY": SECRET}

__all__ = ["KEY_ID", "SECRET", "HEADERS", "sandbox_process", "tradable_symbols"]


@contextmanager
def sandbox_process(extra: Sequence[str] = (), *, source: str | None = None) -> Iterator[str]:
    """``alpaca-nb sandbox --port 0 [extra]`` in a child process; yields its base URL.
    ``source``: run the ``alpaca_nb`` of that checkout directory instead (side-by-side runs)."""
    proc = subprocess.Popen([sys.executable, "-m", "alpaca_nb.cli", "sandbox", "--port", "0",
                             "--log-level", "WARNING", *extra], stdout=subprocess.PIPE, text=True,
                            cwd=source)
    try:
        line = proc.stdout.readline()
        if "listening on " not in line:
            raise RuntimeError(f"the sandbox did not start: {line!r}")
        yield line.split("listening on ")[1].split()[0]
    finally:
        proc.terminate()
        proc.wait(10)


def tradable_symbols(url: str, count: int) -> list[str]:
    """The first ``count`` active, tradable, plain-letter symbols of the sandbox, sorted."""
    assets = requests.get(f"{url}/v2/assets", headers=HEADERS, timeout=30).json()
    symbols = sorted(a["symbol"] for a in assets
                     if a["status"] == "active" and a["tradable"] and a["symbol"].isalpha())
    return symbols[:count]
