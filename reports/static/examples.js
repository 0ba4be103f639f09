// The example browser's filters: a text search over the shown rows and a toggle (all, correct,
// incorrect, disagreement). Plain DOM on rows rendered by the server; nothing is built from text.
(function () {
  "use strict";

  function apply() {
    var box = document.getElementById("ex-text");
    var text = box ? box.value.trim().toLowerCase() : "";
    var picked = document.querySelector("input[name=ex-show]:checked");
    var show = picked ? picked.value : "all";
    var shown = 0, total = 0;
    Array.prototype.forEach.call(document.querySelectorAll("table.examples tbody tr"), function (row) {
      var ok = !text || (row.getAttribute("data-text") || "").indexOf(text) !== -1;
      if (show === "correct" || show === "incorrect") ok = ok && row.getAttribute("data-state") === show;
      if (show === "disagree") ok = ok && row.classList.contains("disagree");
      row.hidden = !ok;
      total += 1;
      if (ok) shown += 1;
    });
    var count = document.getElementById("ex-count");
    if (count) count.textContent = shown + " of " + total + " rows shown";
  }

  function init() {
    var box = document.getElementById("ex-text");
    if (box) box.addEventListener("input", apply);
    Array.prototype.forEach.call(document.querySelectorAll("input[name=ex-show]"), function (r) {
      r.addEventListener("change", apply);
    });
    apply();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
