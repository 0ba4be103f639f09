// Shareable views: the filter text, kind and task, each table's sort column and direction, its
// hidden columns and each Pareto plot's axes live in the URL's hash (#q=lora&s0=3.d&h0=5,6&p0=4.0),
// written as the reader changes them and restored on load, so a link opens the same view. Loaded
// after sort.js, filter.js and pareto.js: it drives their own controls (events, clicks) to restore.
// A hash without "=" is an ordinary anchor and is left alone.
(function () {
  "use strict";
  var FILTERS = { q: "filter-text", kind: "filter-kind", task: "filter-task" };
  var restoring = false;

  function tables() { return Array.prototype.slice.call(document.querySelectorAll("table")); }
  function plots() { return Array.prototype.slice.call(document.querySelectorAll("figure.pareto-plot")); }

  function headerCells(table) {
    return table.tHead ? Array.prototype.slice.call(table.tHead.rows[table.tHead.rows.length - 1].cells) : [];
  }

  function chooser(table) {
    var wrap = table.closest(".table-wrap") || table;
    var prev = wrap.previousElementSibling;
    return prev && prev.matches("details.col-toggles") ? prev : null;
  }

  function read() {
    var p = new URLSearchParams();
    Object.keys(FILTERS).forEach(function (k) {
      var el = document.getElementById(FILTERS[k]);
      if (el && el.value) p.set(k, el.value);
    });
    tables().forEach(function (table, i) {
      headerCells(table).forEach(function (th, c) {
        var dir = th.getAttribute("aria-sort");
        if (dir) p.set("s" + i, c + "." + (dir === "ascending" ? "a" : "d"));
      });
      var box = chooser(table);
      if (box) {
        var off = Array.prototype.filter.call(box.querySelectorAll("input[data-column]"), function (x) { return !x.checked; })
          .map(function (x) { return x.getAttribute("data-column"); });
        if (off.length) p.set("h" + i, off.join(","));
      }
    });
    plots().forEach(function (fig, i) {
      var x = fig.querySelector("select.pareto-x"), y = fig.querySelector("select.pareto-y");
      if (x && y && (!x.options[x.selectedIndex].defaultSelected || !y.options[y.selectedIndex].defaultSelected)) {
        p.set("p" + i, x.value + "." + y.value);
      }
    });
    return p.toString();
  }

  function write() {
    if (restoring) return;
    var text = read(), hash = location.hash.slice(1);
    if (!text && hash.indexOf("=") === -1) return;  // nothing to keep; an anchor stays
    history.replaceState(null, "", text ? "#" + text : location.pathname + location.search);
  }

  function fire(el, type) { el.dispatchEvent(new Event(type, { bubbles: true })); }

  function restore() {
    var hash = location.hash.slice(1);
    if (hash.indexOf("=") === -1) return;
    var p = new URLSearchParams(hash), all = tables(), figs = plots();
    restoring = true;
    try {
      Object.keys(FILTERS).forEach(function (k) {
        var el = document.getElementById(FILTERS[k]);
        if (el && p.has(k)) { el.value = p.get(k); fire(el, "input"); }
      });
      p.forEach(function (value, key) {
        var i = Number(key.slice(1)), parts = value.split(".");
        if (key[0] === "s" && all[i]) {
          var th = headerCells(all[i])[Number(parts[0])], button = th && th.querySelector("button.sort-btn");
          if (!button) return;
          var want = parts[1] === "a" ? "ascending" : "descending";
          for (var n = 0; n < 2 && th.getAttribute("aria-sort") !== want; n++) button.click();
        } else if (key[0] === "h" && all[i]) {
          var box = chooser(all[i]);
          value.split(",").forEach(function (c) {
            var input = box && box.querySelector('input[data-column="' + Number(c) + '"]');
            if (input && input.checked) { input.checked = false; fire(input, "change"); }
          });
        } else if (key[0] === "p" && figs[i]) {
          var x = figs[i].querySelector("select.pareto-x"), y = figs[i].querySelector("select.pareto-y");
          if (x && y && x.querySelector('option[value="' + Number(parts[0]) + '"]') &&
              y.querySelector('option[value="' + Number(parts[1]) + '"]')) {
            x.value = String(Number(parts[0])); y.value = String(Number(parts[1]));
            fire(x, "change");
          }
        }
      });
    } finally {
      restoring = false;
    }
  }

  function init() {
    restore();
    document.addEventListener("input", write);
    document.addEventListener("change", write);
    document.addEventListener("click", function (e) {
      if (e.target.closest && e.target.closest("button.sort-btn")) write();
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
