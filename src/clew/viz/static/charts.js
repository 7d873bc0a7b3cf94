// clew view: line charts drawn as inline SVG (no library, no network). Every label is a text node.
"use strict";
(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const W = 380, H = 210, M = { left: 52, right: 26, top: 24, bottom: 34 };
  const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"];
  const DASHES = ["", "6 3", "2 3", "8 3 2 3"];

  function node(tag, attrs) {
    const el = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
    return el;
  }

  function label(text, attrs) {
    const el = node("text", attrs);
    el.textContent = text;
    return el;
  }

  function extent(values) {
    let lo = Math.min(...values), hi = Math.max(...values);
    if (!isFinite(lo) || !isFinite(hi)) { lo = 0; hi = 1; }
    if (lo === hi) { lo -= Math.abs(lo) * 0.1 || 0.5; hi += Math.abs(hi) * 0.1 || 0.5; }
    return [lo, hi];
  }

  function ticks([lo, hi], n) {
    const out = [];
    for (let i = 0; i <= n; i++) out.push(lo + ((hi - lo) * i) / n);
    return out;
  }

  function fmt(v) {
    const a = Math.abs(v);
    if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(1);
    return a >= 100 ? v.toFixed(0) : v.toPrecision(3).replace(/\.?0+$/, "");
  }

  // panel: {title, lines: [{label, color, dash, points: [[x, y], ...]}], intervals: [{color, x, y, low, high}]}
  function lineChart(panel) {
    const xs = [], ys = [];
    for (const line of panel.lines) for (const [x, y] of line.points) { xs.push(x); ys.push(y); }
    for (const p of panel.intervals || []) { xs.push(p.x); ys.push(p.low, p.high); }
    const X = extent(xs), Y = extent(ys);
    const sx = (x) => M.left + ((x - X[0]) / (X[1] - X[0])) * (W - M.left - M.right);
    const sy = (y) => H - M.bottom - ((y - Y[0]) / (Y[1] - Y[0])) * (H - M.top - M.bottom);
    const svg = node("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img" });
    svg.appendChild(label(panel.title, { x: M.left, y: 15, class: "chart-title" }));
    for (const t of ticks(Y, 4)) {
      svg.appendChild(node("line", { x1: M.left, x2: W - M.right, y1: sy(t), y2: sy(t), class: "grid" }));
      svg.appendChild(label(fmt(t), { x: M.left - 4, y: sy(t) + 3, class: "tick", "text-anchor": "end" }));
    }
    for (const t of ticks(X, 3)) {
      svg.appendChild(label(fmt(t), { x: sx(t), y: H - M.bottom + 14, class: "tick", "text-anchor": "middle" }));
    }
    svg.appendChild(label("environment steps", { x: (W + M.left) / 2, y: H - 4, class: "axis", "text-anchor": "middle" }));
    for (const line of panel.lines) {
      const pts = line.points.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(" ");
      svg.appendChild(node("polyline", { points: pts, fill: "none", stroke: line.color, "stroke-width": 1.6,
        "stroke-dasharray": line.dash, class: "series" }));
    }
    for (const m of panel.markers || []) {  // a monitor detector tripped here
      const mark = node("line", { x1: sx(m.x), x2: sx(m.x), y1: M.top, y2: H - M.bottom, stroke: m.color,
        "stroke-width": 1.2, "stroke-dasharray": "2 3", class: "monitor-marker", "data-detector": m.label });
      const tip = node("title", {});
      tip.textContent = `monitor: ${m.label}`;
      mark.appendChild(tip);
      svg.appendChild(mark);
    }
    for (const p of panel.intervals || []) {
      svg.appendChild(node("line", { x1: sx(p.x), x2: sx(p.x), y1: sy(p.low), y2: sy(p.high), stroke: p.color,
        "stroke-width": 2, class: "interval" }));
      svg.appendChild(node("circle", { cx: sx(p.x), cy: sy(p.y), r: 3.5, fill: "#fff", stroke: p.color,
        "stroke-width": 2, class: "eval-point" }));
    }
    return svg;
  }

  window.ClewCharts = { lineChart, COLORS, DASHES };
})();
