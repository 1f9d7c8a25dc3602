// QuoteBoard front end: a dense table whose cells flash on a change. Values arrive as custom
// messages ({t: "rows", rows: {SYM: [bid, ask, last, change, changePct, volume, bidSize, askSize]}})
// carrying only the rows that changed; a view asks for the full table when it is rendered.
const COLS = [["Symbol", "sym"], ["Bid", "num"], ["Ask", "num"], ["Last", "num"], ["Chg", "chg"],
              ["Chg %", "chg"], ["Volume", "vol"], ["", "x"]];

function fmt(v, kind) {
  if (v === null || v === undefined || Number.isNaN(v)) return "—";
  if (kind === "vol") {
    if (v >= 1e9) return (v / 1e9).toFixed(2) + "B";
    if (v >= 1e6) return (v / 1e6).toFixed(2) + "M";
    if (v >= 1e3) return (v / 1e3).toFixed(1) + "K";
    return String(Math.round(v));
  }
  if (kind === "pct") return (v > 0 ? "+" : "") + (v * 100).toFixed(2) + "%";
  if (kind === "chg") return (v > 0 ? "+" : "") + v.toFixed(2);
  return v.toLocaleString(undefined, {minimumFractionDigits: 2, maximumFractionDigits: 4});
}

function render({ model, el }) {
  el.classList.add("anb-board");
  const root = document.createElement("div");
  root.className = "anb-board-root";
  const head = document.createElement("div");
  head.className = "anb-board-head";
  const title = document.createElement("span");
  title.className = "anb-board-title";
  const status = document.createElement("span");
  status.className = "anb-board-status";
  const add = document.createElement("input");
  add.className = "anb-board-add";
  add.placeholder = "+ add symbol";
  add.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && add.value.trim()) {
      model.send({ t: "add", symbol: add.value.trim().toUpperCase() });
      add.value = "";
    }
  });
  head.append(title, status, add);
  const table = document.createElement("table");
  table.className = "anb-board-table";
  const thead = document.createElement("thead");
  const hr = document.createElement("tr");
  for (const [name, kind] of COLS) {
    const th = document.createElement("th");
    th.textContent = name;
    if (kind === "sym") th.className = "left";
    hr.append(th);
  }
  thead.append(hr);
  const tbody = document.createElement("tbody");
  table.append(thead, tbody);
  root.append(head, table);
  el.append(root);

  const rows = new Map();   // symbol -> {tr, cells, values}

  function rowFor(sym) {
    let r = rows.get(sym);
    if (r) return r;
    const tr = document.createElement("tr");
    tr.dataset.symbol = sym;
    const cells = [];
    COLS.forEach(([, kind], i) => {
      const td = document.createElement("td");
      if (kind === "sym") { td.textContent = sym; td.className = "sym"; }
      else if (kind === "x") {
        const b = document.createElement("button");
        b.className = "anb-board-remove"; b.title = "remove " + sym; b.textContent = "×";
        b.addEventListener("click", (e) => { e.stopPropagation(); model.send({ t: "remove", symbol: sym }); });
        td.append(b);
      } else { td.textContent = "—"; td.className = "num"; }
      cells.push(td); tr.append(td);
    });
    tr.addEventListener("click", () => {
      for (const other of tbody.querySelectorAll("tr.selected")) other.classList.remove("selected");
      tr.classList.add("selected");
      model.send({ t: "pick", symbol: sym });
    });
    r = { tr, cells, values: [] };
    rows.set(sym, r);
    return r;
  }

  function layout() {
    const symbols = model.get("symbols");
    title.textContent = model.get("title");
    for (const [sym, r] of rows) if (!symbols.includes(sym)) { r.tr.remove(); rows.delete(sym); }
    symbols.forEach((sym) => tbody.append(rowFor(sym).tr));
  }

  function flash(td, up) {
    td.classList.remove("flash-up", "flash-down");
    void td.offsetWidth;                       // restart the animation
    td.classList.add(up ? "flash-up" : "flash-down");
  }

  function apply(data) {
    for (const [sym, v] of Object.entries(data)) {
      if (!model.get("symbols").includes(sym)) continue;
      const r = rowFor(sym);
      // v = [bid, ask, last, chg, chgPct, volume]
      const shown = [v[0], v[1], v[2], v[3], v[4], v[5]];
      const kinds = ["num", "num", "num", "chg", "pct", "vol"];
      shown.forEach((value, i) => {
        const td = r.cells[i + 1];
        const old = r.values[i];
        const text = fmt(value, kinds[i]);
        if (td.textContent !== text) {
          td.textContent = text;
          if (old !== undefined && old !== null && value !== null && i < 3 && value !== old) flash(td, value > old);
        }
        if (i === 3 || i === 4) td.className = "num " + (v[3] > 0 ? "up" : v[3] < 0 ? "down" : "");
      });
      r.values = shown;
    }
  }

  model.on("msg:custom", (msg) => {
    if (msg.t === "rows") apply(msg.rows);
    else if (msg.t === "status") status.textContent = msg.text;
  });
  model.on("change:symbols", layout);
  model.on("change:title", layout);
  layout();
  model.send({ t: "hello" });               // ask for the whole table (a new or re-rendered view)
}

export default { render };
