"""The sandbox's equity asset list (``assets.csv``) and its Alpaca Asset wire objects
(protocol 2.9)."""

from __future__ import annotations

import csv
import io
import uuid
from importlib import resources

__all__ = ["EXCHANGE_TAPE", "asset_object", "load_assets"]

EXCHANGE_TAPE = {"NYSE": "A", "NASDAQ": "C", "ARCA": "B", "AMEX": "B", "BATS": "B"}
_ASSET_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_DNS, "sandbox.alpaca-nb")


def load_assets() -> list[dict]:
    """The rows of assets.csv (comment lines skipped) as dicts of strings."""
    text = resources.files(__package__).joinpath("assets.csv").read_text(encoding="utf-8")
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    return list(csv.DictReader(io.StringIO("\n".join(lines))))


def asset_object(row: dict) -> dict:
    """The Alpaca Asset wire object (protocol 2.9) for a row of assets.csv."""
    flag = lambda name: row[name] == "1"
    long_req, short_req = row["margin_long"], row["margin_short"]
    return {
        "id": str(uuid.uuid5(_ASSET_NAMESPACE, row["symbol"])),
        "class": "us_equity",
        "exchange": row["exchange"],
        "symbol": row["symbol"],
        "name": row["name"],
        "status": row["status"],
        "tradable": flag("tradable"),
        "marginable": flag("marginable"),
        "shortable": flag("shortable"),
        # borrow_status (2026-06-05) supersedes easy_to_borrow, which alpaca-py still requires
        "borrow_status": "ETB" if flag("easy_to_borrow") else "HTB",
        "easy_to_borrow": flag("easy_to_borrow"),
        "fractionable": flag("fractionable"),
        "attributes": row["attributes"].split(),
        "maintenance_margin_requirement": int(long_req),
        "margin_requirement_long": long_req,
        "margin_requirement_short": short_req,
    }
