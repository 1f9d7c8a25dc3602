"""The formulas as Excel sees them: xlwings' own Windows decorators and its own VBA-wrapper
generator (``xlwings.udfs.generate_vba_wrapper``, what "Import Functions" runs) applied to
alpaca_nb.xl. pywin32 does not exist here, so its modules are stubbed for this test only
(xlwings imports them at the top of udfs.py but the decorators and the generator never call
them)."""

from __future__ import annotations

import importlib
import inspect
import io
import re
import sys
import types

import pytest

UDFS = ("ALPACA_BDP", "ALPACA_BDH", "ALPACA_BDS", "ALPACA_TICKET", "ALPACA_STATUS")


@pytest.fixture
def windows_xl(monkeypatch):
    """alpaca_nb.xl imported afresh with xlwings' Windows decorators; everything restored after."""
    for name in ("pythoncom", "pywintypes", "win32com", "win32com.client"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    sys.modules["win32com.client"].Dispatch = lambda *a, **k: None
    sys.modules["pythoncom"].CoInitialize = lambda: None   # an executor initializer, never run here
    sys.modules["win32com"].client = sys.modules["win32com.client"]
    monkeypatch.delitem(sys.modules, "xlwings.udfs", raising=False)
    udfs = importlib.import_module("xlwings.udfs")
    import xlwings

    monkeypatch.setattr(xlwings, "func", udfs.xlfunc)
    monkeypatch.setattr(xlwings, "arg", udfs.xlarg)
    monkeypatch.setattr(xlwings, "ret", udfs.xlret)
    for name in [m for m in sys.modules if m == "alpaca_nb.xl" or m.startswith("alpaca_nb.xl.")]:
        monkeypatch.delitem(sys.modules, name)
    module = importlib.import_module("alpaca_nb.xl")
    yield udfs, module
    for name in [m for m in sys.modules if m == "alpaca_nb.xl" or m.startswith("alpaca_nb.xl.")]:
        del sys.modules[name]     # monkeypatch puts the original modules back
    sys.modules.pop("xlwings.udfs", None)


class Workbook:
    Name = "alpaca_nb.xlsm"


def wrappers(udfs, module) -> dict[str, str]:
    out = io.StringIO()
    udfs.generate_vba_wrapper("alpaca_nb.xl", module, out, Workbook())
    code = out.getvalue()
    blocks = re.findall(r"^(Function (\w+)\(.*?^End Function)", code, re.DOTALL | re.MULTILINE)
    return {name: block for block, name in blocks}


def test_xlwings_generates_a_vba_wrapper_for_every_formula_with_its_arguments(windows_xl):
    udfs, module = windows_xl
    code = wrappers(udfs, module)
    assert sorted(code) == sorted(UDFS)
    header = {name: block.splitlines()[0] for name, block in code.items()}
    assert header["ALPACA_BDP"] == "Function ALPACA_BDP(symbols, fields, ParamArray options())"
    assert header["ALPACA_BDH"] == "Function ALPACA_BDH(symbols, fields, start, end, ParamArray options())"
    assert header["ALPACA_BDS"] == "Function ALPACA_BDS(what, ParamArray options())"
    assert header["ALPACA_TICKET"] == (
        "Function ALPACA_TICKET(symbol, side, qty, Optional type, Optional limit_price, "
        "Optional stop_price, Optional time_in_force, Optional nonce, Optional extended_hours)")
    assert header["ALPACA_STATUS"] == "Function ALPACA_STATUS(ticket_id)"
    for name, block in code.items():
        assert f'XLPy.CallUDF("alpaca_nb.xl", "{name}"' in block
        assert "Application.Volatile" not in block            # never volatile
    # the VBA ParamArray is forwarded after the fixed arguments
    assert "argsArray = Array(symbols, fields, start, end)" in code["ALPACA_BDH"]


def test_declarations_ranges_arrive_as_2d_lists_and_nothing_is_volatile_or_async(windows_xl):
    _udfs, module = windows_xl
    for name in UDFS:
        info = getattr(module, name).__xlfunc__
        assert info["category"] == "Alpaca" and info["volatile"] is False and info["async_mode"] is None
        assert info["ret"]["doc"].strip()                           # the function wizard's text
    for name in ("ALPACA_BDP", "ALPACA_BDH"):
        argmap = getattr(module, name).__xlfunc__["argmap"]
        assert argmap["symbols"]["options"] == {"ndim": 2} and argmap["fields"]["options"] == {"ndim": 2}
    ticket = module.ALPACA_TICKET.__xlfunc__["argmap"]
    assert ticket["type"]["optional"] == "market"
    assert ticket["time_in_force"]["optional"] is None      # empty: the asset class's default (day / gtc)
    for name in UDFS:                                 # every argument is described in the wizard
        for arg in getattr(module, name).__xlfunc__["args"]:
            assert not arg["doc"].startswith("Positional argument") and len(arg["doc"]) <= 255, (name, arg)


def test_the_python_signatures_match_what_xlwings_reads():
    from alpaca_nb import xl

    for name in UDFS:
        params = inspect.signature(getattr(xl, name)).parameters.values()
        assert all(p.kind in (p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL) for p in params)
