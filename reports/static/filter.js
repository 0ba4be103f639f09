// Client-side filters for the leaderboard tables: text search on the method name, method kind
// and task family (the controls in #filters), and a column chooser on every table.filterable.
// Plain DOM, no dependencies; hidden rows and columns get the "hidden" attribute/class only.
(function () {
  "use strict";

  function value(id) {
    var el = document.getElementById(id);
    return el ? el.value : "";
  }

  function applyFilters() {
    var text = value("filter-text").trim().toLowerCase();
    var kind = value("filter-kind");
    var task = value("filter-task");
    var shown = 0, total = 0;
    Array.prototype.forEach.call(document.querySelectorAll("table.filterable"), function (table) {
      var section = table.closest("section.board");
      var family = section ? section.getAttribute("data-family") : "";
      var sectionVisible = !task || !section || family === task;
      if (section) section.hidden = !sectionVisible;
      Array.prototype.forEach.call(table.tBodies[0] ? table.tBodies[0].rows : [], function (row) {
        var name = (row.getAttribute("data-method") || "").toLowerCase();
        var ok = sectionVisible && (!text || name.indexOf(text) !== -1) &&
                 (!kind || row.getAttribute("data-kind") === kind);
        row.hidden = !ok;
        total += 1;
        if (ok) shown += 1;
      });
    });
    var count = document.getElementById("filter-count");
    if (count) count.textContent = (text || kind || task) ? shown + " of " + total + " rows shown" : "";
  }

  function headerLabel(th) {
    var button = th.querySelector("button.sort-btn");
    var node = button ? button.firstChild : th.firstChild;
    return ((node && node.textContent) || th.textContent || "").trim();
  }

  function setColumn(table, index, visible) {
    Array.prototype.forEach.call(table.rows, function (row) {
      var cell = row.cells[index];
      if (cell) cell.classList.toggle("col-hidden", !visible);
    });
  }

  function addColumnChooser(table) {
    if (!table.tHead) return;
    var header = table.tHead.rows[table.tHead.rows.length - 1];
    var box = document.createElement("details");
    box.className = "col-toggles";
    var summary = document.createElement("summary");
    summary.textContent = "Columns";
    box.appendChild(summary);
    Array.prototype.forEach.call(header.cells, function (th, index) {
      if (th.classList.contains("method") || th.classList.contains("rank")) return;  // always shown
      var label = document.createElement("label");
      var box_ = document.createElement("input");
      box_.type = "checkbox";
      box_.checked = true;
      box_.setAttribute("data-column", String(index));
      box_.addEventListener("change", function () { setColumn(table, index, box_.checked); });
      label.appendChild(box_);
      label.appendChild(document.createTextNode(" " + headerLabel(th)));
      box.appendChild(label);
    });
    var wrap = table.closest(".table-wrap") || table;
    wrap.parentNode.insertBefore(box, wrap);
  }

  function init() {
    Array.prototype.forEach.call(document.querySelectorAll("table.filterable"), addColumnChooser);
    ["filter-text", "filter-kind", "filter-task"].forEach(function (id) {
      var el = document.getElementById(id);
      if (!el) return;
      el.addEventListener("input", applyFilters);
      el.addEventListener("change", applyFilters);
    });
    applyFilters();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
