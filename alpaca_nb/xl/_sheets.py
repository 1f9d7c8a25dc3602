"""The macros' view of a workbook through xlwings, and formulas evaluated outside Excel.

Only the macros use this module (the formulas never touch a workbook). It imports xlwings
lazily, so the formulas work as plain Python functions where xlwings cannot drive Excel.

:func:`fill_formulas` is how :func:`alpaca_nb.xl.refresh` fills the sheets on macOS, where
classic xlwings has no user-defined functions: each ``=ALPACA_...`` formula's arguments
(references, text, numbers, TRUE/FALSE) are read, the Python function is called and its result
written in the formula's place. The formulas are kept on a hidden sheet, so the next refresh
finds them again and clears what the previous result covered.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, Protocol

__all__ = ["FormulaError", "XwGrid", "caller_book", "ask_send_or_refresh", "clicked_button", "confirm_with", "fill_formulas", "named_values",
           "open_book", "parse_formula"]

STORE_SHEET = "_alpaca_formulas"
_CALL = re.compile(r"^\s*=\s*(?:_xludf\.)?([A-Za-z_][A-Za-z0-9_.]*)\s*\((.*)\)\s*$", re.DOTALL)
_REF = re.compile(r"^(?:(?:'[^']+'|[A-Za-z0-9_.]+)!)?\$?[A-Za-z]{1,3}\$?\d+(?::\$?[A-Za-z]{1,3}\$?\d+)?$")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


class FormulaError(ValueError):
    """A formula this module cannot evaluate."""


def _xw():
    try:
        import xlwings as xw
    except ImportError:
        raise ImportError("the Excel macros need xlwings: pip install 'alpaca_nb[excel]'") from None
    return xw


def caller_book() -> Any:
    """The workbook whose button called the macro (``xw.Book.caller()``)."""
    return _xw().Book.caller()


def clicked_button(book: Any) -> str | None:
    """The name of the shape whose macro is running (Excel's ``Application.Caller``), or None
    when Excel does not tell (macOS, where xlwings reaches Excel through AppleScript, or a
    macro run from the VBA editor)."""
    try:
        caller = book.app.api.Caller
    except Exception:
        return None
    return caller if isinstance(caller, str) else None


def open_book(book: Any) -> Any:
    """An open workbook by name or path (or an xlwings Book as is)."""
    return _xw().Book(book) if isinstance(book, str) else book


def named_values(book: Any, name: str) -> list[list[Any]]:
    """The values of a workbook-level named range, as rows."""
    try:
        rng = book.names[name].refers_to_range
    except Exception as exc:
        raise ValueError(f"the workbook has no range named {name!r}") from exc
    return rng.options(ndim=2).value


def confirm_with(book: Any) -> Callable[[str], bool]:
    """An OK/Cancel dialog in Excel."""
    def confirm(message: str) -> bool:
        return book.app.alert(message, title="alpaca_nb: LIVE trading", buttons="ok_cancel",
                              mode="critical") == "ok"
    return confirm


def ask_send_or_refresh(book: Any) -> str | None:
    """Where the clicked button is unknown (macOS): a dialog asks whether to send the tickets of
    the active sheet (Yes) or only refresh (No); returns "send_tickets", "refresh" or None."""
    answer = book.app.alert("Send the ready tickets of this sheet?\n\nYes: send them. No: only refresh "
                            "the sheets. Cancel: do nothing.", title="alpaca_nb", buttons="yes_no_cancel")
    return {"yes": "send_tickets", "no": "refresh"}.get(answer)


class XwGrid:
    """An xlwings sheet as a :class:`~._tickets.Grid`: its values from A1 to the last used cell."""

    def __init__(self, sheet: Any):
        self._sheet = sheet

    def values(self) -> list[list[Any]]:
        last = self._sheet.used_range.last_cell
        return self._sheet.range((1, 1), (last.row, last.column)).options(ndim=2).value

    def write(self, row: int, column: int, values: list[list[Any]]) -> None:
        self._sheet.range((row + 1, column + 1)).value = values


# ------------------------------------------------------------------ formulas outside Excel

def split_args(body: str) -> list[str]:
    """Top-level arguments of a formula call (commas inside quotes or parentheses kept)."""
    args, depth, quoted, current = [], 0, False, []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == '"':
            if quoted and i + 1 < len(body) and body[i + 1] == '"':
                current.append('""')
                i += 2
                continue
            quoted = not quoted
        elif not quoted and ch in "({":
            depth += 1
        elif not quoted and ch in ")}":
            depth -= 1
        elif not quoted and depth == 0 and ch == ",":
            args.append("".join(current).strip())
            current = []
            i += 1
            continue
        current.append(ch)
        i += 1
    if "".join(current).strip() or args:
        args.append("".join(current).strip())
    return args


def parse_formula(formula: str) -> tuple[str, list[str]] | None:
    """(function name, argument texts) of a formula that is one call, else None."""
    match = _CALL.match(formula or "")
    if not match:
        return None
    return match.group(1).upper(), split_args(match.group(2))


def argument(token: str, read: Callable[[str], Any]) -> Any:
    """The value of one argument text: a reference (read through ``read``), "text", a number,
    TRUE/FALSE, or nothing (None)."""
    if token == "":
        return None
    if token.startswith('"') and token.endswith('"') and len(token) >= 2:
        return token[1:-1].replace('""', '"')
    if _NUMBER.match(token):
        return float(token)
    if token.upper() in ("TRUE", "FALSE"):
        return token.upper() == "TRUE"
    if _REF.match(token):
        return read(token)
    raise FormulaError(f"cannot evaluate the argument {token!r} outside Excel; use cell references, "
                       "text or numbers")


class FormulaSheet(Protocol):
    """What :func:`fill_formulas` needs of a sheet."""

    name: str

    def formulas(self) -> list[tuple[int, int, str]]: ...           # (row, column, formula), 1-based

    def read(self, reference: str) -> list[list[Any]]: ...           # values of a reference, as rows

    def write(self, row: int, column: int, values: list[list[Any]]) -> None: ...


def evaluate(formula: str, functions: Mapping[str, Callable[..., Any]], read: Callable[[str], Any]) -> Any:
    """The result of one ``=ALPACA_...`` formula, computed by the Python function."""
    parsed = parse_formula(formula)
    if parsed is None or parsed[0] not in functions:
        raise FormulaError(f"not an Alpaca formula: {formula!r}")
    name, tokens = parsed
    return functions[name](*(argument(t, read) for t in tokens))


def fill_sheet(sheet: FormulaSheet, functions: Mapping[str, Callable[..., Any]],
               stored: dict[tuple[int, int], tuple[str, int, int]]) -> None:
    """Evaluate the sheet's Alpaca formulas (those on it and those ``stored`` from an earlier
    fill: (row, column) -> (formula, rows, columns written)) and write each result in place,
    clearing what a previous, larger result covered. Updates ``stored``."""
    for row, column, formula in sheet.formulas():
        parsed = parse_formula(formula)
        if parsed and parsed[0] in functions:
            stored[(row, column)] = (formula, *stored.get((row, column), (formula, 1, 1))[1:])
    for (row, column), (formula, old_rows, old_cols) in sorted(stored.items()):
        try:
            result = evaluate(formula, functions, sheet.read)
        except FormulaError as exc:
            result = f"#ALPACA! {exc}"
        block = result if isinstance(result, list) else [[result]]
        rows, cols = len(block), max((len(r) for r in block), default=1)
        blank = [[None] * max(cols, old_cols) for _ in range(max(rows, old_rows))]
        for r, line in enumerate(block):
            blank[r][:len(line)] = line
        sheet.write(row, column, blank)
        stored[(row, column)] = (formula, rows, cols)


class _XwFormulaSheet:
    def __init__(self, sheet: Any):
        self._sheet = sheet
        self.name = sheet.name

    def formulas(self) -> list[tuple[int, int, str]]:
        used = self._sheet.used_range
        grid = used.options(ndim=2).formula
        out = []
        for r, line in enumerate(grid):
            for c, text in enumerate(line):
                if isinstance(text, str) and "ALPACA_" in text.upper():
                    out.append((used.row + r, used.column + c, text))
        return out

    def read(self, reference: str) -> list[list[Any]]:
        if "!" in reference:
            sheet_name, ref = reference.rsplit("!", 1)
            return self._sheet.book.sheets[sheet_name.strip("'")].range(ref).options(ndim=2).value
        return self._sheet.range(reference).options(ndim=2).value

    def write(self, row: int, column: int, values: list[list[Any]]) -> None:
        self._sheet.range((row, column)).value = values


def fill_formulas(book: Any, functions: Mapping[str, Callable[..., Any]], *, only: str | None = None) -> None:
    """Fill every sheet of an xlwings workbook, or the sheet named ``only`` (see the module
    docstring)."""
    names = [s.name for s in book.sheets]
    store = book.sheets[STORE_SHEET] if STORE_SHEET in names else book.sheets.add(STORE_SHEET, after=names[-1])
    store.visible = False
    rows = store.used_range.options(ndim=2).value if store.used_range.value is not None else []
    stored: dict[str, dict[tuple[int, int], tuple[str, int, int]]] = {}
    for line in rows:
        if len(line) >= 6 and line[0] and line[3]:     # formulas are stored without their "="
            stored.setdefault(line[0], {})[(int(line[1]), int(line[2]))] = ("=" + line[3], int(line[4]), int(line[5]))
    for sheet in book.sheets:
        if sheet.name == STORE_SHEET or (only is not None and sheet.name != only):
            continue
        mine = stored.setdefault(sheet.name, {})
        fill_sheet(_XwFormulaSheet(sheet), functions, mine)
    out = [[name, r, c, f.lstrip().lstrip("="), nr, nc] for name, cells in stored.items() for (r, c), (f, nr, nc) in cells.items()]
    store.clear_contents()
    if out:
        store.range("A1").value = out
