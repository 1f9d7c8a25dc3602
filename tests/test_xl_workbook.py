"""excel/alpaca_nb.xlsm as Excel would open it, read with openpyxl and as a zip: every formula
names an existing formula of alpaca_nb.xl with an accepted number of arguments, the xlwings
config sheet points at alpaca_nb.xl, the buttons run existing macros, and no key is stored."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import openpyxl
import pytest
from _xl_support import connect_to

from alpaca_nb import xl
from alpaca_nb.sandbox import DEFAULT_SECRET_KEY
from alpaca_nb.xl._sheets import split_args

EXCEL = Path(__file__).resolve().parent.parent / "excel"
WORKBOOK = EXCEL / "alpaca_nb.xlsm"
CALL = re.compile(r"\b(ALPACA_\w+)\s*\(")


def calls(formula: str) -> list[tuple[str, list[str]]]:
    """Every ALPACA_ call in a formula (nested ones too), with its argument texts."""
    out = []
    for match in CALL.finditer(formula):
        depth, quoted = 1, False
        i = match.end()
        while depth:
            ch = formula[i]
            if ch == '"':
                quoted = not quoted
            elif not quoted:
                depth += {"(": 1, ")": -1}.get(ch, 0)
            i += 1
        out.append((match.group(1), split_args(formula[match.end():i - 1])))
    return out


def accepts(fn, count: int) -> bool:
    params = list(inspect.signature(fn).parameters.values())
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return count >= len([p for p in params if p.kind is not p.VAR_POSITIONAL])
    required = len([p for p in params if p.default is p.empty])
    return required <= count <= len(params)


@pytest.fixture(scope="module")
def book():
    return openpyxl.load_workbook(WORKBOOK, keep_vba=True)


def test_the_sheets_and_their_formulas(book):
    assert book.sheetnames == ["Quotes", "History", "Portfolio", "Ticket", "xlwings.conf"]
    found: dict[str, list[str]] = {}
    for ws in book.worksheets:
        for row in ws.iter_rows():
            for c in row:
                if isinstance(c.value, str) and c.value.startswith("="):
                    for name, args in calls(c.value):
                        assert name in xl.FORMULAS, f"{ws.title}!{c.coordinate}: {name} does not exist"
                        assert accepts(xl.FORMULAS[name], len(args)), f"{ws.title}!{c.coordinate}: {c.value}"
                        found.setdefault(ws.title, []).append(name)
    assert "ALPACA_BDP" in found["Quotes"] and "ALPACA_BDH" in found["History"]
    assert found["Portfolio"].count("ALPACA_BDS") >= 3
    assert found["Ticket"].count("ALPACA_TICKET") == found["Ticket"].count("ALPACA_STATUS") >= 5
    assert book["Quotes"]["B5"].value == "=ALPACA_BDP(A5:A24,B4:F4)"
    assert book["History"]._charts                      # the chart of the BDH table


def test_the_workbook_formulas_evaluate_against_a_sandbox(book, account):
    """The Quotes grid and a Ticket row, evaluated as refresh() does on macOS."""
    from alpaca_nb.xl._sheets import evaluate

    connect_to(account)

    def reader(ws):
        def read(ref):
            return [[c.value for c in row] for row in ws[ref.replace("$", "")]] if ":" in ref \
                else [[ws[ref.replace("$", "")].value]]
        return read

    grid = evaluate(book["Quotes"]["B5"].value, xl.FORMULAS, reader(book["Quotes"]))
    assert len(grid) == 20 and all(len(r) == 5 for r in grid)
    assert all(isinstance(r[0], float) for r in grid)
    ticket = evaluate(book["Ticket"]["I5"].value, xl.FORMULAS, reader(book["Ticket"]))
    assert ticket[0][1] == "ready"
    assert evaluate(book["Ticket"]["I6"].value, xl.FORMULAS, reader(book["Ticket"])) is None   # empty row


def test_the_config_sheet_points_at_alpaca_nb_xl(book):
    conf = {r[0]: r[1] for r in book["xlwings.conf"].iter_rows(values_only=True) if r[0]}
    assert conf["UDF Modules"] == "alpaca_nb.xl"
    assert conf["Use UDF Server"] is True
    assert {"Interpreter_Win", "Interpreter_Mac", "Debug UDFs"} <= set(conf)


def test_named_ranges_of_the_live_quotes(book):
    names = book.defined_names
    assert names["LiveSymbols"].attr_text == "Quotes!$H$5:$H$9"
    assert names["LiveQuotes"].attr_text == "Quotes!$J$4"
    assert [book["Quotes"][f"H{r}"].value for r in range(5, 10)] == ["AAPL", "MSFT", "NVDA", "SPY", "QQQ"]


def embedded_vba(path: Path) -> dict[str, str]:
    """The VBA modules of a workbook (name -> source), as Excel's VBA editor shows them."""
    from oletools.olevba import VBA_Parser

    parser = VBA_Parser(str(path))
    try:
        return {name.rsplit(".", 1)[0]: code for _, _, name, code in parser.extract_macros()}
    finally:
        parser.close()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")      # oletools' use of pyparsing
def test_buttons_run_the_templates_sample_call_which_dispatches_on_the_clicked_shape():
    """Every button is assigned the quickstart template's own Sub ``SampleCall`` (no macro call
    with arguments, a form Excel does not document for a shape), that Sub runs ``main()`` of the
    module named like the workbook, i.e. ``alpaca_nb.main``, and each shape's name is a button
    of :data:`alpaca_nb.xl.BUTTONS`."""
    import alpaca_nb
    import xlwings

    with zipfile.ZipFile(WORKBOOK) as z:
        vba = z.read("xl/vbaProject.bin")
        shapes = [(name, macro) for n in z.namelist() if n.startswith("xl/drawings/drawing")
                  for macro, name in re.findall(r'<xdr:sp macro="([^"]*)".*?<xdr:cNvPr id="\d+" name="([^"]+)"',
                                                z.read(n).decode())]
    template = Path(xlwings.__file__).parent / "quickstart_standalone.xlsm"
    with zipfile.ZipFile(template) as z:
        assert vba == z.read("xl/vbaProject.bin")      # xlwings' VBA modules, unchanged
    sample = embedded_vba(WORKBOOK)["Module1"]
    assert re.search(r"^Sub SampleCall\(\)", sample, re.M)
    assert 'mymodule = Left(ThisWorkbook.Name, (InStrRev(ThisWorkbook.Name, "."' in sample
    assert 'RunPython "import " & mymodule & ";" & mymodule & ".main()"' in sample
    assert "RunPython" in embedded_vba(WORKBOOK)["xlwings"]
    assert WORKBOOK.stem == "alpaca_nb" and alpaca_nb.main is xl.main
    assert sorted(shapes) == sorted([("refresh", "[0]!SampleCall")] * 4 + [
        ("send_tickets", "[0]!SampleCall"), ("start_quotes", "[0]!SampleCall"), ("stop_quotes", "[0]!SampleCall")])
    assert set(xl.BUTTONS) == {"send_tickets", "start_quotes", "stop_quotes", "refresh"}


def test_a_button_name_runs_its_macro_and_an_unknown_one_is_refused():
    with pytest.raises(ValueError, match=r"no alpaca_nb button is named 'Button 1'; the buttons are 'send_tickets'"):
        xl.run_button("Button 1")
    assert xl.run_button("stop_quotes") is None         # no writer running: nothing to stop


def test_no_key_is_stored_anywhere_in_the_file():
    secrets = [DEFAULT_SECRET_KEY.encode()]
    with zipfile.ZipFile(WORKBOOK) as z:
        for name in z.namelist():
            data = z.read(name)
            for secret in secrets:
                assert secret not in data, name
            assert b"APCA-API-SECRET-KEY" not in data and b"secret_key" not in data.lower(), name
            assert not re.search(rb"APCA_API_(KEY_ID|SECRET_KEY)\s*=", data), name


def test_the_build_script_makes_the_same_workbook(tmp_path, book):
    out = tmp_path / "rebuilt.xlsm"
    subprocess.run([sys.executable, str(EXCEL / "build_workbook.py"), "--out", str(out)], check=True,
                   capture_output=True)
    rebuilt = openpyxl.load_workbook(out, keep_vba=True)
    assert rebuilt.sheetnames == book.sheetnames
    for ws in book.worksheets:
        mine = [[c.value for c in row] for row in ws.iter_rows()]
        assert [[c.value for c in row] for row in rebuilt[ws.title].iter_rows()] == mine, ws.title


class OpenpyxlSheet:
    """An openpyxl worksheet as the FormulaSheet that refresh() fills on macOS."""

    def __init__(self, ws):
        self.ws = ws
        self.name = ws.title

    def formulas(self):
        return [(c.row, c.column, c.value) for row in self.ws.iter_rows() for c in row
                if isinstance(c.value, str) and c.value.startswith("=")]

    def read(self, reference):
        cells = self.ws[reference.replace("$", "")]
        if not isinstance(cells, tuple):
            return [[cells.value]]
        return [[c.value for c in row] for row in cells]

    def write(self, row, column, values):
        for r, line in enumerate(values):
            for c, value in enumerate(line):
                self.ws.cell(row=row + r, column=column + c).value = value   # cell(value=None) keeps the old one


def test_refresh_without_udfs_fills_the_sheets_in_place_and_again(account, tmp_path):
    """macOS has no UDFs: refresh() evaluates the formulas and writes the results in their place,
    remembering the formulas for the next refresh; a smaller result clears what the last covered."""
    from alpaca_nb.xl._sheets import fill_sheet

    connect_to(account)
    wb = openpyxl.load_workbook(WORKBOOK, keep_vba=True)
    quotes, stored = OpenpyxlSheet(wb["Quotes"]), {}
    fill_sheet(quotes, xl.FORMULAS, stored)
    ws = wb["Quotes"]
    assert ws["B2"].value == "sandbox"                       # the mode banner
    assert all(isinstance(ws.cell(row=r, column=c).value, float) for r in range(5, 25) for c in range(2, 5))
    assert stored[(5, 2)][1:] == (20, 5)
    ws["A6"] = None                                          # an empty symbol cell: an empty row
    fill_sheet(quotes, xl.FORMULAS, stored)
    assert ws["B6"].value is None and isinstance(ws["B7"].value, float)
    ws["B5"] = "=ALPACA_BDP(A5:A10,B4:F4)"                  # the user types a smaller grid
    fill_sheet(quotes, xl.FORMULAS, stored)
    assert isinstance(ws["B10"].value, float) and ws["B11"].value is None and ws["F24"].value is None
    assert stored[(5, 2)] == ("=ALPACA_BDP(A5:A10,B4:F4)", 6, 5)
    path = tmp_path / "filled.xlsm"
    wb.save(path)
    again = openpyxl.load_workbook(path, keep_vba=True)
    assert isinstance(again["Quotes"]["B5"].value, float)
