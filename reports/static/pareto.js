// The interactive Pareto plots (figure.pareto-plot): the page carries a static SVG drawn by
// reports/pareto.py; this script redraws it when a reader picks other axes (the two selects) or
// filters the table (rows filter.js hides lose their points), with the same geometry: ranges fitted
// to the shown points and reference lines, log where the axis says so and every value is positive,
// a degenerate axis said instead of drawn, emulated runs left out of timing axes, the front
// recomputed for the points shown. Text is only ever set with textContent (names are user input).
(function () {
  "use strict";
  var NS = "http://www.w3.org/2000/svg";
  var LABEL_CHARS = 22, CHAR_W = 6.0;

  function finite(v) { return typeof v === "number" && isFinite(v); }

  function human(v) {
    var units = [["B", 1e9], ["M", 1e6], ["k", 1e3]];
    for (var i = 0; i < units.length; i++) {
      if (Math.abs(v) >= units[i][1]) return String(Number((v / units[i][1]).toPrecision(3))) + units[i][0];
    }
    return String(Number(v.toPrecision(3)));
  }

  function axisRange(values, refs, log) {
    var vals = values.filter(finite);
    if (!vals.length) return null;
    var lo = Math.min.apply(null, vals), hi = Math.max.apply(null, vals);
    if (lo === hi) return null;
    var all = vals.concat(refs.filter(finite));
    log = log && Math.min.apply(null, all) > 0;
    var t = log ? all.map(Math.log10) : all;
    lo = Math.min.apply(null, t); hi = Math.max.apply(null, t);
    var pad = (hi - lo) * 0.06;
    return [lo - pad, hi + pad, log];
  }

  function position(v, rng, a, b) {
    var t = rng[2] ? Math.log10(v) : v;
    return a + (t - rng[0]) / (rng[1] - rng[0]) * (b - a);
  }

  function ticks(rng) {
    var lo = rng[0], hi = rng[1], out = [], k;
    if (rng[2]) {
      for (k = Math.ceil(lo); k <= Math.floor(hi); k++) out.push(Math.pow(10, k));
      if (out.length >= 2) return out;
      out = [];
      for (k = Math.floor(lo); k <= Math.ceil(hi); k++) {
        [1, 2, 5].forEach(function (m) {
          var v = m * Math.pow(10, k), t = Math.log10(v);
          if (t >= lo && t <= hi) out.push(v);
        });
      }
      return out.length ? out : [Math.pow(10, (lo + hi) / 2)];
    }
    var raw = (hi - lo) / 5, mag = Math.pow(10, Math.floor(Math.log10(raw)));
    var step = [1, 2, 5, 10].map(function (m) { return m * mag; }).filter(function (s) { return s >= raw; })[0];
    var first = Math.ceil(lo / step) * step;
    for (var i = 0; first + i * step <= hi + 1e-12 * Math.abs(hi); i++) out.push(first + i * step);
    return out;
  }

  function front(xs, ys, xh, yh) {
    var sx = xh ? 1 : -1, sy = yh ? 1 : -1;
    return xs.map(function (_, i) {
      for (var j = 0; j < xs.length; j++) {
        if (j === i) continue;
        var ge = sx * xs[j] >= sx * xs[i] && sy * ys[j] >= sy * ys[i];
        var gt = sx * xs[j] > sx * xs[i] || sy * ys[j] > sy * ys[i];
        if (ge && gt) return false;
      }
      return true;
    });
  }

  function el(name, attrs, text) {
    var node = document.createElementNS(NS, name);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, String(attrs[k])); });
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function direction(q, horizontal) {
    if (horizontal) return q.hib ? "better \u2192" : "\u2190 better";
    return q.hib ? "better \u2191" : "better \u2193";
  }

  function Plot(fig) {
    this.fig = fig;
    this.svg = fig.querySelector("svg.pareto-svg");
    this.q = JSON.parse(fig.getAttribute("data-quantities"));
    this.box = this.svg.getAttribute("data-box").split(" ").map(Number);
    var nums = function (text) {
      return (text || "").split(" ").map(function (s) { return s === "nan" || s === "" ? NaN : Number(s); });
    };
    this.points = Array.prototype.map.call(this.svg.querySelectorAll("g.pt"), function (g) {
      return { g: g, name: g.getAttribute("data-method"), rank: g.getAttribute("data-rank"),
               emulated: g.getAttribute("data-emulated") === "1", v: nums(g.getAttribute("data-v")),
               lo: nums(g.getAttribute("data-lo")), hi: nums(g.getAttribute("data-hi")) };
    });
    this.xSel = fig.querySelector("select.pareto-x");
    this.ySel = fig.querySelector("select.pareto-y");
    this.tip = fig.querySelector(".pareto-tip");
    var section = fig.closest("section.board");
    this.table = (section || document).querySelector("table.filterable");
  }

  Plot.prototype.shownMethods = function () {
    if (!this.table || !this.table.tBodies[0]) return null;
    var shown = {};
    Array.prototype.forEach.call(this.table.tBodies[0].rows, function (row) {
      if (!row.hidden) shown[row.getAttribute("data-method")] = true;
    });
    return shown;
  };

  Plot.prototype.draw = function () {
    var self = this, L = this.box[0], T = this.box[1], R = this.box[2], B = this.box[3];
    var xi = Number(this.xSel.value), yi = Number(this.ySel.value);
    var qx = this.q[xi], qy = this.q[yi], filter = this.shownMethods();
    var shown = [], leftOut = 0;
    this.points.forEach(function (p) {
      var ok = finite(p.v[xi]) && finite(p.v[yi]) && (!filter || filter[p.name]);
      if (ok && p.emulated && (qx.timing || qy.timing)) { leftOut += 1; ok = false; }
      if (ok) shown.push(p);
    });
    var xs = shown.map(function (p) { return p.v[xi]; }), ys = shown.map(function (p) { return p.v[yi]; });
    // Ranges fit the points and reference lines; interval bars are cut at the frame.
    var rx = axisRange(xs, qx.refs.map(function (r) { return r[0]; }), qx.log);
    var ry = axisRange(ys, qy.refs.map(function (r) { return r[0]; }), qy.log);
    var clip = function (v, a, b) { return Math.min(Math.max(v, a), b); };
    var px = function (v) { return rx ? position(v, rx, L, R) : (L + R) / 2; };
    var py = function (v) { return ry ? position(v, ry, B, T) : (T + B) / 2; };
    var onFront = front(xs, ys, qx.hib, qy.hib);
    this.svg.setAttribute("data-x", xi);
    this.svg.setAttribute("data-y", yi);
    this.svg.setAttribute("data-x-range", rx ? rx[0] + " " + rx[1] + " " + (rx[2] ? "log" : "linear") : "");
    this.svg.setAttribute("data-y-range", ry ? ry[0] + " " + ry[1] + " " + (ry[2] ? "log" : "linear") : "");

    var axes = this.svg.querySelector("g.axes"), refs = this.svg.querySelector("g.refs");
    axes.textContent = ""; refs.textContent = "";
    [[rx, qx, true, xs], [ry, qy, false, ys]].forEach(function (a) {
      var rng = a[0], q = a[1], horizontal = a[2], vals = a[3];
      var title = q.label + (rng && rng[2] ? " (log scale)" : "") + " \u00b7 " + direction(q, horizontal);
      axes.appendChild(horizontal
        ? el("text", { "class": "axis-title x-title", x: (L + R) / 2, y: B + 38 }, title)
        : el("text", { "class": "axis-title y-title", transform: "translate(14 " + (T + B) / 2 + ") rotate(-90)" }, title));
      if (!rng) {
        var said = vals.length ? (vals.length === 1 ? "one point" : "all " + vals.length + " points") + " at " +
          human(vals[0]) + ": axis not drawn" : "no points shown";
        axes.appendChild(el("text", horizontal ? { "class": "degenerate", x: (L + R) / 2, y: B + 18, "data-axis": "x" }
                                               : { "class": "degenerate", x: L + 6, y: T + 14, "data-axis": "y" }, said));
        return;
      }
      ticks(rng).forEach(function (t) {
        if (horizontal) {
          var x = position(t, rng, L, R).toFixed(1);
          axes.appendChild(el("line", { "class": "grid", x1: x, x2: x, y1: T, y2: B }));
          axes.appendChild(el("text", { "class": "tick x-tick", x: x, y: B + 16 }, human(t)));
        } else {
          var y = position(t, rng, B, T);
          axes.appendChild(el("line", { "class": "grid", x1: L, x2: R, y1: y.toFixed(1), y2: y.toFixed(1) }));
          axes.appendChild(el("text", { "class": "tick y-tick", x: L - 6, y: (y + 4).toFixed(1) }, human(t)));
        }
      });
      q.refs.forEach(function (r) {
        var g = el("g", { "class": "ref" }), label = r[1] + ": " + human(r[0]);
        if (horizontal) {
          var x = position(r[0], rng, L, R);
          g.appendChild(el("line", { x1: x.toFixed(1), x2: x.toFixed(1), y1: T, y2: B }));
          g.appendChild(el("text", { "class": "ref-label", x: (x + 4).toFixed(1), y: T + 12 }, label));
        } else {
          var y = position(r[0], rng, B, T);
          g.appendChild(el("line", { x1: L, x2: R, y1: y.toFixed(1), y2: y.toFixed(1) }));
          g.appendChild(el("text", { "class": "ref-label end", x: R - 4, y: (y - 4).toFixed(1) }, label));
        }
        refs.appendChild(g);
      });
    });

    var fpts = [];
    shown.forEach(function (p, k) { if (onFront[k]) fpts.push([px(xs[k]), py(ys[k])]); });
    fpts.sort(function (a, b) { return a[0] - b[0] || a[1] - b[1]; });
    this.svg.querySelector("polyline.front-line").setAttribute("points",
      fpts.map(function (a) { return a[0].toFixed(1) + "," + a[1].toFixed(1); }).join(" "));

    // Labels where they fit: the front first, then by rank; a label never overlaps one placed before.
    var order = shown.map(function (p, k) { return k; });
    order.sort(function (a, b) {
      var ra = shown[a].rank === "" ? 1e9 : Number(shown[a].rank), rb = shown[b].rank === "" ? 1e9 : Number(shown[b].rank);
      return (onFront[b] - onFront[a]) || (ra - rb) || (a - b);
    });
    var placed = [], label = {};
    order.forEach(function (k) {
      var x = px(xs[k]), y = py(ys[k]), name = shown[k].name.slice(0, LABEL_CHARS);
      var box = [x + 7, y - 15, x + 7 + CHAR_W * name.length, y - 3];
      var free = box[2] <= Number(self.svg.viewBox.baseVal.width) && box[1] >= 0 && placed.every(function (b) {
        return box[2] <= b[0] || b[2] <= box[0] || box[3] <= b[1] || b[3] <= box[1];
      });
      if (free) { placed.push(box); label[k] = [box[0], y - 5]; }
    });
    var at = new Map();
    shown.forEach(function (p, k) { at.set(p, k); });
    this.points.forEach(function (p) {
      var g = p.g;
      g.textContent = "";
      if (!at.has(p)) { g.setAttribute("hidden", ""); return; }
      g.removeAttribute("hidden");
      var k = at.get(p), x = px(xs[k]), y = py(ys[k]);
      g.appendChild(el("title", {}, p.name + ": " + qx.label + " " + human(xs[k]) + ", " + qy.label + " " + human(ys[k])));
      if (ry && finite(p.lo[yi]) && finite(p.hi[yi])) {
        g.appendChild(el("line", { "class": "err", x1: x.toFixed(2), x2: x.toFixed(2),
                                   y1: clip(py(p.lo[yi]), T, B).toFixed(2), y2: clip(py(p.hi[yi]), T, B).toFixed(2) }));
      }
      if (rx && finite(p.lo[xi]) && finite(p.hi[xi])) {
        g.appendChild(el("line", { "class": "err", x1: clip(px(p.lo[xi]), L, R).toFixed(2), x2: clip(px(p.hi[xi]), L, R).toFixed(2),
                                   y1: y.toFixed(2), y2: y.toFixed(2) }));
      }
      g.appendChild(el("circle", { "class": onFront[k] ? "dot front" : "dot", cx: x.toFixed(2), cy: y.toFixed(2), r: 5 }));
      if (label[k]) {
        g.appendChild(el("text", { "class": "pt-label", x: label[k][0].toFixed(1), y: label[k][1].toFixed(1) },
                         p.name.slice(0, LABEL_CHARS)));
      }
    });
    this.svg.querySelector("text.note-text").textContent = leftOut
      ? leftOut + " row" + (leftOut !== 1 ? "s" : "") + " with emulated GEMMs left out of this timing axis: " +
        (leftOut !== 1 ? "their times measure" : "its time measures") + " the emulation, not the recipe's speed"
      : "";
    this.hideTip();
  };

  Plot.prototype.showTip = function (g, event) {
    var p = this.points.filter(function (q) { return q.g === g; })[0];
    if (!p || !this.tip) return;
    var xi = Number(this.xSel.value), yi = Number(this.ySel.value), tip = this.tip;
    tip.textContent = "";
    var name = document.createElement("strong");
    name.className = "tip-name";
    name.textContent = p.name;
    tip.appendChild(name);
    [[this.q[xi], xi], [this.q[yi], yi]].forEach(function (a) {
      var line = document.createElement("span"), i = a[1];
      line.textContent = a[0].label + ": " + human(p.v[i]) +
        (finite(p.lo[i]) && finite(p.hi[i]) ? " (95% interval " + human(p.lo[i]) + " to " + human(p.hi[i]) + ")" : "");
      tip.appendChild(line);
    });
    if (p.rank) {
      var rank = document.createElement("span");
      rank.textContent = "rank " + p.rank;
      tip.appendChild(rank);
    }
    // Points drawn on top of each other (equal values) are named together, so none is hidden by another.
    var c = g.querySelector("circle"), cx = Number(c.getAttribute("cx")), cy = Number(c.getAttribute("cy"));
    var also = this.points.filter(function (q) {
      var d = q !== p && !q.g.hasAttribute("hidden") && q.g.querySelector("circle");
      return d && Math.abs(Number(d.getAttribute("cx")) - cx) < 4 && Math.abs(Number(d.getAttribute("cy")) - cy) < 4;
    }).map(function (q) { return q.name; });
    if (also.length) {
      var more = document.createElement("span");
      more.className = "tip-also";
      more.textContent = "at the same place: " + also.join(", ");
      tip.appendChild(more);
    }
    var host = tip.parentNode.getBoundingClientRect();
    var box = g.querySelector("circle").getBoundingClientRect();
    tip.hidden = false;
    var left = box.right - host.left + 6;
    if (left + tip.offsetWidth > host.width) left = Math.max(0, box.left - host.left - tip.offsetWidth - 6);
    tip.style.left = left + "px";
    tip.style.top = Math.max(0, box.top - host.top - 4) + "px";
  };

  Plot.prototype.hideTip = function () { if (this.tip) this.tip.hidden = true; };

  Plot.prototype.init = function () {
    var self = this;
    this.fig.querySelector(".pareto-controls").hidden = false;
    [this.xSel, this.ySel].forEach(function (s) { s.addEventListener("change", function () { self.draw(); }); });
    this.svg.addEventListener("mouseover", function (e) {
      var g = e.target.closest && e.target.closest("g.pt");
      if (g) self.showTip(g, e);
    });
    this.svg.addEventListener("mouseleave", function () { self.hideTip(); });
    if (this.table && this.table.tBodies[0] && window.MutationObserver) {
      new MutationObserver(function () { self.draw(); }).observe(this.table.tBodies[0],
        { attributes: true, subtree: true, attributeFilter: ["hidden"] });
    }
    this.draw();
  };

  function init() {
    Array.prototype.forEach.call(document.querySelectorAll("figure.pareto-plot"), function (fig) {
      new Plot(fig).init();
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
