"""Build excel/alpaca_nb.xlsm from xlwings' standalone quickstart workbook. Nobody edits the
workbook by hand: change this script and run it again::

    python excel/build_workbook.py [--out excel/alpaca_nb.xlsm]

What it does: ``xlwings quickstart alpaca_nb --standalone`` (the xlwings VBA module embedded,
so no add-in is needed for the macros), then with openpyxl: the config sheet is activated as
``xlwings.conf`` with ``UDF Modules = alpaca_nb.xl`` and ``Use UDF Server = TRUE`` (the buttons'
Python runs in the same process as the formulas, so the live-quote thread outlives the click);
the sheets Quotes, History, Portfolio and Ticket get their formulas, named ranges and a chart;
last, buttons (shapes named after their Python entry point, each running the template's
``SampleCall`` macro, which calls ``alpaca_nb.main()``) are added to the drawing parts, which
openpyxl does not write. No key is written anywhere: the formulas connect with the keys
of the environment, or to the embedded sandbox.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from xml.sax.saxutils import quoteattr

import openpyxl
from openpyxl.chart import LineChart, Reference
from openpyxl.formatting.rule import CellIsRule
from openpyxl.styles import Font, PatternFill
from openpyxl.workbook.defined_name import DefinedName

HERE = Path(__file__).resolve().parent
NAME = "alpaca_nb"
MODULE = "alpaca_nb.xl"

QUOTE_SYMBOLS = ["AAPL", "MSFT", "NVDA", "AMZN", "GOOG", "META", "TSLA", "AMD", "NFLX", "INTC",
                 "ORCL", "CSCO", "PEP", "KO", "DIS", "BA", "JPM", "SPY", "QQQ", "IWM"]
QUOTE_FIELDS = ["bid", "ask", "last", "change_pct", "volume"]
LIVE_SYMBOLS = ["AAPL", "MSFT", "NVDA", "SPY", "QQQ"]
TICKET_COLUMNS = ["symbol", "side", "qty", "type", "limit_price", "stop_price", "time_in_force",
                  "nonce", "ticket", "state", "order id", "status", "order status", "filled qty",
                  "avg price"]
TICKET_ROWS = 10
MODE = '=ALPACA_BDS("mode")'

# sheet -> [(label, entry point = shape name, first column, first row, last column, last row)] (0-based cells)
BUTTONS = {
    "Quotes": [("Start live", "start_quotes", 14, 1, 16, 2), ("Stop live", "stop_quotes", 17, 1, 19, 2),
               ("Refresh", "refresh", 20, 1, 22, 2)],
    "History": [("Refresh", "refresh", 4, 0, 6, 2)],
    "Portfolio": [("Refresh", "refresh", 4, 0, 6, 1)],
    "Ticket": [("Send tickets", "send_tickets", 4, 0, 6, 2), ("Refresh", "refresh", 7, 0, 9, 2)],
}

BOLD = Font(bold=True)
HEAD = PatternFill("solid", fgColor="DDEBF7")
LIVE = PatternFill("solid", fgColor="FF0000")


# Every button runs the template's own macro, ``SampleCall`` (RunPython "import <workbook name>;
# <workbook name>.main()", i.e. ``alpaca_nb.main()``), which dispatches on Application.Caller: the
# name of the clicked shape, which is the entry point's name. "[0]!Name" is how Excel stores a
# shape's macro of the same workbook; a call with arguments in a shape's macro attribute is not
# a documented form, and the template has no other Sub to assign.
BUTTON_MACRO = "[0]!SampleCall"


def quickstart(workdir: Path) -> Path:
    """``xlwings quickstart alpaca_nb --standalone``; returns the workbook it made."""
    subprocess.run([sys.executable, "-m", "xlwings.cli", "quickstart", NAME, "--standalone"],
                   cwd=workdir, check=True, capture_output=True)
    return workdir / NAME / f"{NAME}.xlsm"


def header(ws, row: int, col: int, values: list[str]) -> None:
    for i, value in enumerate(values):
        c = ws.cell(row=row, column=col + i, value=value)
        c.font, c.fill = BOLD, HEAD


def mode_banner(ws, cell: str) -> None:
    ws[cell.replace("B", "A")] = "mode"
    ws[cell] = MODE
    ws.conditional_formatting.add(cell, CellIsRule(operator="equal", formula=['"LIVE"'], fill=LIVE,
                                                   font=Font(bold=True, color="FFFFFF")))


def config_sheet(wb) -> None:
    ws = wb["_xlwings.conf"]
    ws.title = "xlwings.conf"
    for row in ws.iter_rows(min_col=1, max_col=2):
        key = row[0].value
        if key == "UDF Modules":
            row[1].value = MODULE
        elif key == "Use UDF Server":
            row[1].value = True


def quotes_sheet(ws) -> None:
    ws["A1"] = "Quotes: a BDP grid (one formula fills it) and live quotes (Start/Stop)"
    ws["A1"].font = Font(bold=True, size=14)
    mode_banner(ws, "B2")
    header(ws, 4, 1, ["symbol", *QUOTE_FIELDS])
    for i, symbol in enumerate(QUOTE_SYMBOLS):
        ws.cell(row=5 + i, column=1, value=symbol)
    last = 4 + len(QUOTE_SYMBOLS)
    ws["B5"] = f"=ALPACA_BDP(A5:A{last},B4:{chr(ord('A') + len(QUOTE_FIELDS))}4)"
    ws["H4"] = "live symbols"
    ws["H4"].font, ws["H4"].fill = BOLD, HEAD
    for i, symbol in enumerate(LIVE_SYMBOLS):
        ws.cell(row=5 + i, column=8, value=symbol)
    ws["J3"] = "live quotes (written by Start live, at most 4 times a second)"
    ws.column_dimensions["Q"].width = 20


def history_sheet(ws) -> None:
    ws["A1"], ws["B1"] = "symbols", "AAPL"
    ws["A2"], ws["B2"] = "fields", "close"
    ws["A3"], ws["B3"] = "start", dt.datetime(2025, 1, 2)
    ws["B3"].number_format = "yyyy-mm-dd"
    ws["A4"], ws["B4"] = "end (empty: now)", None
    ws["A5"], ws["B5"] = "options", "Per=1Day"
    for cell in ("A1", "A2", "A3", "A4", "A5"):
        ws[cell].font = BOLD
    ws["A7"] = "=ALPACA_BDH(B1,B2,B3,B4,B5)"
    for row in range(8, 8 + 400):
        ws.cell(row=row, column=1).number_format = "yyyy-mm-dd"
    chart = LineChart()
    chart.title = "close"
    chart.height, chart.width = 9, 18
    chart.add_data(Reference(ws, min_col=2, min_row=7, max_row=7 + 400), titles_from_data=True)
    chart.set_categories(Reference(ws, min_col=1, min_row=8, max_row=7 + 400))
    ws.add_chart(chart, "E4")


def portfolio_sheet(ws) -> None:
    mode_banner(ws, "B1")
    ws["A3"] = "Account"
    ws["D3"] = "Positions"
    ws["D40"] = "Orders (all, newest 50)"
    for cell in ("A3", "D3", "D40"):
        ws[cell].font = Font(bold=True, size=12)
    ws["A4"] = '=ALPACA_BDS("account")'
    ws["D4"] = '=ALPACA_BDS("positions")'
    ws["D41"] = '=ALPACA_BDS("orders","Status=all","Limit=50")'


def ticket_sheet(ws) -> None:
    ws["A1"] = "Tickets: formulas stage orders, the Send button places each ready ticket once"
    ws["A1"].font = Font(bold=True, size=14)
    mode_banner(ws, "B2")
    header(ws, 4, 1, TICKET_COLUMNS)
    ws.append([])
    example = ["AAPL", "buy", 1, "market", None, None, "day", 1]
    for i, value in enumerate(example):
        ws.cell(row=5, column=1 + i, value=value)
    for row in range(5, 5 + TICKET_ROWS):
        args = ",".join(f"{c}{row}" for c in "ABCDEFGH")
        ws[f"I{row}"] = f"=ALPACA_TICKET({args})"        # an empty row gives an empty cell
        ws[f"M{row}"] = f"=ALPACA_STATUS(I{row})"
    ws["A17"] = ("Change the nonce to stage another order with the same content; Send places each "
                 "ready ticket once (client_order_id = ticket id), however often it is pressed.")


def build(out: Path) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        source = quickstart(Path(tmp))
        wb = openpyxl.load_workbook(source, keep_vba=True)
        config_sheet(wb)
        first = wb["Sheet1"]
        first.title = "Quotes"
        quotes_sheet(first)
        wb.defined_names["LiveSymbols"] = DefinedName(
            "LiveSymbols", attr_text=f"Quotes!$H$5:$H${4 + len(LIVE_SYMBOLS)}")
        wb.defined_names["LiveQuotes"] = DefinedName("LiveQuotes", attr_text="Quotes!$J$4")
        for title, fill in (("History", history_sheet), ("Portfolio", portfolio_sheet), ("Ticket", ticket_sheet)):
            fill(wb.create_sheet(title, index=len(wb.sheetnames) - 1))
        for ws in wb.worksheets:
            ws.sheet_view.tabSelected = ws.title == "Quotes"
        wb.active = 0
        staged = Path(tmp) / "staged.xlsm"
        wb.save(staged)
        out.parent.mkdir(parents=True, exist_ok=True)
        add_buttons(staged, out, BUTTONS)
    return out


# ------------------------------------------------------------------ buttons (drawing shapes)

XDR = "http://schemas.openxmlformats.org/drawingml/2006/spreadsheetDrawing"
A = "http://schemas.openxmlformats.org/drawingml/2006/main"
R = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
DRAWING_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/drawing"
DRAWING_TYPE = "application/vnd.openxmlformats-officedocument.drawing+xml"


def shape(shape_id: int, label: str, entry: str, c0: int, r0: int, c1: int, r1: int) -> str:
    return (
        f'<xdr:twoCellAnchor editAs="absolute">'
        f'<xdr:from><xdr:col>{c0}</xdr:col><xdr:colOff>0</xdr:colOff><xdr:row>{r0}</xdr:row><xdr:rowOff>0</xdr:rowOff></xdr:from>'
        f'<xdr:to><xdr:col>{c1}</xdr:col><xdr:colOff>0</xdr:colOff><xdr:row>{r1}</xdr:row><xdr:rowOff>0</xdr:rowOff></xdr:to>'
        f'<xdr:sp macro={quoteattr(BUTTON_MACRO)} textlink="">'
        f'<xdr:nvSpPr><xdr:cNvPr id="{shape_id}" name={quoteattr(entry)} descr={quoteattr(label)}/><xdr:cNvSpPr/></xdr:nvSpPr>'
        f'<xdr:spPr><a:prstGeom prst="roundRect"><a:avLst/></a:prstGeom>'
        f'<a:solidFill><a:srgbClr val="2F5597"/></a:solidFill></xdr:spPr>'
        f'<xdr:txBody><a:bodyPr vertOverflow="clip" horzOverflow="clip" rtlCol="0" anchor="ctr"/><a:lstStyle/>'
        f'<a:p><a:pPr algn="ctr"/><a:r><a:rPr lang="en-US" sz="1100" b="1"><a:solidFill><a:srgbClr val="FFFFFF"/>'
        f'</a:solidFill></a:rPr><a:t>{label}</a:t></a:r></a:p></xdr:txBody></xdr:sp><xdr:clientData/></xdr:twoCellAnchor>')


def _attrs(element: bytes) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in re.findall(rb'([\w:]+)="([^"]*)"', element)}


def _relationships(xml: bytes) -> list[dict[str, str]]:
    return [_attrs(e) for e in re.findall(rb"<Relationship [^>]*>", xml)]


def _sheet_paths(files: dict[str, bytes]) -> dict[str, str]:
    """Sheet title -> its part name (xl/worksheets/sheetN.xml)."""
    targets = {r["Id"]: r["Target"] for r in _relationships(files["xl/_rels/workbook.xml.rels"])}
    out = {}
    for element in re.findall(rb"<sheet [^>]*>", files["xl/workbook.xml"]):
        attrs = _attrs(element)
        target = targets[attrs["r:id"]].lstrip("/")
        out[attrs["name"]] = target if target.startswith("xl/") else "xl/" + target
    return out


def add_buttons(source: Path, out: Path, buttons: dict[str, list[tuple]]) -> None:
    with zipfile.ZipFile(source) as zin:
        files = {n: zin.read(n) for n in zin.namelist()}
        order = zin.namelist()
    sheets = _sheet_paths(files)
    next_id = 1000
    for title, specs in buttons.items():
        sheet = sheets[title]
        folder, base = sheet.rsplit("/", 1)
        rels_name = f"{folder}/_rels/{base}.rels"
        rels = files.get(rels_name, b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
                                    b'<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"></Relationships>')
        anchors = ""
        for label, entry, *box in specs:
            next_id += 1
            anchors += shape(next_id, label, entry, *box)
        existing = [r["Target"] for r in _relationships(rels) if r.get("Type") == DRAWING_REL]
        if existing:
            part = "xl/drawings/" + existing[0].rsplit("/", 1)[1]
            xml = files[part]            # openpyxl writes the chart's drawing unprefixed: <wsDr xmlns=...>
            if b"xmlns:xdr=" not in xml:
                xml = re.sub(rb"<(\w+:)?wsDr ", lambda m: m.group(0) + f'xmlns:xdr="{XDR}" '.encode(), xml, count=1)
            if b"xmlns:a=" not in xml:
                xml = re.sub(rb"<(\w+:)?wsDr ", lambda m: m.group(0) + f'xmlns:a="{A}" '.encode(), xml, count=1)
            end = re.search(rb"</(\w+:)?wsDr>", xml).start()
            files[part] = xml[:end] + anchors.encode() + xml[end:]
            continue
        n = 1 + max([int(m) for m in re.findall(r"xl/drawings/drawing(\d+)\.xml", " ".join(files))] or [0])
        part = f"xl/drawings/drawing{n}.xml"
        files[part] = (f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
                       f'<xdr:wsDr xmlns:xdr="{XDR}" xmlns:a="{A}">{anchors}</xdr:wsDr>').encode()
        order.append(part)
        rid = f"rIdBtn{n}"
        rels = rels.replace(b"</Relationships>", f'<Relationship Id="{rid}" Type="{DRAWING_REL}" '
                            f'Target="/{part}"/></Relationships>'.encode())
        if rels_name not in files:
            order.append(rels_name)
        files[rels_name] = rels
        xml = files[sheet]
        if b"xmlns:r=" not in xml[:600]:
            xml = xml.replace(b"<worksheet ", f'<worksheet xmlns:r="{R}" '.encode(), 1)
        tag = f'<drawing r:id="{rid}"/>'.encode()
        for follower in (b"<legacyDrawing", b"<tableParts", b"<extLst", b"</worksheet>"):
            if follower in xml:
                xml = xml.replace(follower, tag + follower, 1)
                break
        files[sheet] = xml
        files["[Content_Types].xml"] = files["[Content_Types].xml"].replace(
            b"</Types>", f'<Override PartName="/{part}" ContentType="{DRAWING_TYPE}"/></Types>'.encode())
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
        for name in order:
            zout.writestr(name, files[name])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE / f"{NAME}.xlsm")
    args = parser.parse_args(argv)
    path = build(args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
