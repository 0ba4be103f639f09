// Sort any table.sortable by clicking a header button. Cells sort by their data-sort value
// (numeric when it parses as a number, text otherwise); empty values always go last.
(function () {
  "use strict";

  function keyOf(cell) {
    if (!cell) return { empty: true };
    var raw = cell.hasAttribute("data-sort") ? cell.getAttribute("data-sort") : cell.textContent;
    raw = (raw || "").trim();
    if (raw === "" || raw.toLowerCase() === "nan") return { empty: true };
    var n = Number(raw);
    return isNaN(n) ? { text: raw.toLowerCase() } : { num: n };
  }

  function compare(a, b) {
    if (a.empty || b.empty) return 0;  // handled by the caller
    if (a.num !== undefined && b.num !== undefined) return a.num - b.num;
    var x = a.num !== undefined ? String(a.num) : a.text;
    var y = b.num !== undefined ? String(b.num) : b.text;
    return x < y ? -1 : x > y ? 1 : 0;
  }

  function sortTable(table, index, th) {
    var body = table.tBodies[0];
    if (!body) return;
    var current = th.getAttribute("aria-sort");
    var first = th.getAttribute("data-first") === "desc" ? "descending" : "ascending";
    var dir = current ? (current === "ascending" ? "descending" : "ascending") : first;
    var sign = dir === "ascending" ? 1 : -1;
    var rows = Array.prototype.slice.call(body.rows).map(function (row, i) {
      return { row: row, key: keyOf(row.cells[index]), i: i };
    });
    rows.sort(function (p, q) {
      if (p.key.empty !== q.key.empty) return p.key.empty ? 1 : -1;
      return sign * compare(p.key, q.key) || p.i - q.i;
    });
    rows.forEach(function (r) { body.appendChild(r.row); });
    Array.prototype.forEach.call(th.parentNode.cells, function (cell) { cell.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", dir);
  }

  function init() {
    Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
      if (!table.tHead) return;
      var header = table.tHead.rows[table.tHead.rows.length - 1];
      Array.prototype.forEach.call(header.cells, function (th, index) {
        var button = th.querySelector("button.sort-btn");
        if (!button) return;
        button.addEventListener("click", function () { sortTable(table, index, th); });
      });
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
