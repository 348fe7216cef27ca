# ruff: noqa: E501 - the module is JavaScript and CSS in strings, not Python lines
"""MaskView's front end: the anywidget ES module (canvas drawing, hover readout, drag-to-zoom, sliders and
selectors) and its CSS, kept as strings so the package needs no data files."""

ESM = r"""
const RAMP = [[255,255,255],[198,219,239],[107,174,214],[33,113,181],[8,48,107],[3,19,43]];
function lut(t) {                      // t in (0, 1] -> a blue ramp; 0 stays white
  const x = Math.min(1, Math.max(0, t)) * (RAMP.length - 2) + 1;
  const k = Math.min(RAMP.length - 2, Math.floor(x)), f = x - k;
  return RAMP[k].map((v, c) => Math.round(v + f * (RAMP[k + 1][c] - v)));
}
function floats(dv) {
  if (!dv || !dv.byteLength) return new Float32Array(0);
  return new Float32Array(dv.buffer.slice(dv.byteOffset, dv.byteOffset + dv.byteLength));
}
function bytes(dv) {
  if (!dv || !dv.byteLength) return new Uint8Array(0);
  return new Uint8Array(dv.buffer.slice(dv.byteOffset, dv.byteOffset + dv.byteLength));
}
function h(tag, attrs = {}, text = "") {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text) e.textContent = text;
  return e;
}
function slider(label, cls, max, value, onchange) {
  const wrap = h("label", {class: "sdsl-ctl"}, label + " ");
  const s = h("input", {type: "range", min: 0, max: max, step: 1, class: cls});
  s.value = value;
  const out = h("span", {class: "sdsl-val"}, String(value));
  s.addEventListener("input", () => { out.textContent = s.value; });
  s.addEventListener("change", () => onchange(parseInt(s.value)));
  wrap.append(s, out);
  return [wrap, s, out];
}
function bars(canvas, values, vertical, color) {
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const top = Math.max(...values, 1e-30);
  ctx.fillStyle = color;
  const n = values.length;
  for (let k = 0; k < n; k++) {
    const v = values[k] / top;
    if (vertical) {        // one bar per pixel row, growing to the right
      const y0 = Math.floor(k * canvas.height / n), y1 = Math.floor((k + 1) * canvas.height / n);
      ctx.fillRect(0, y0, v * canvas.width, Math.max(1, y1 - y0));
    } else {
      const x0 = Math.floor(k * canvas.width / n), x1 = Math.floor((k + 1) * canvas.width / n);
      ctx.fillRect(x0, canvas.height * (1 - v), Math.max(1, x1 - x0), canvas.height * v);
    }
  }
}

function render({ model, el }) {
  const t0 = performance.now();
  el.classList.add("sdsl-maskview");
  const bar = h("div", {class: "sdsl-toolbar"});
  const [bw, bs, bo] = slider("batch", "sdsl-batch", Math.max(0, model.get("n_batch") - 1), model.get("batch"),
                              (v) => { model.set("batch", v); model.save_changes(); });
  const [hw, hs, ho] = slider("head", "sdsl-head", Math.max(0, model.get("n_heads") - 1), model.get("head"),
                              (v) => { model.set("head", v); model.save_changes(); });
  if (model.get("n_batch") > 1) bar.append(bw);
  if (model.get("n_heads") > 1) bar.append(hw);
  const mode = h("select", {class: "sdsl-mode"});
  for (const m of ["density", "blocks"]) mode.append(h("option", {value: m}, m === "density" ? "nonzero density" : "block density"));
  mode.value = model.get("mode");
  mode.addEventListener("change", () => { model.set("mode", mode.value); model.save_changes(); });
  const block = h("select", {class: "sdsl-block"});
  for (const b of model.get("block_sizes")) block.append(h("option", {value: b}, `${b}x${b}`));
  block.value = String(model.get("block"));
  block.addEventListener("change", () => { model.set("block", parseInt(block.value)); model.save_changes(); });
  const nmBox = h("input", {type: "checkbox", class: "sdsl-nm"});
  nmBox.checked = model.get("show_nm");
  const nmN = h("input", {type: "number", min: 1, max: 16, class: "sdsl-nm-n", style: "width:3em"});
  const nmM = h("input", {type: "number", min: 2, max: 32, class: "sdsl-nm-m", style: "width:3em"});
  nmN.value = model.get("nm_n"); nmM.value = model.get("nm_m");
  const nmSet = () => { model.set("nm_n", parseInt(nmN.value)); model.set("nm_m", parseInt(nmM.value));
                        model.set("show_nm", nmBox.checked); model.save_changes(); };
  for (const e of [nmBox, nmN, nmM]) e.addEventListener("change", nmSet);
  const nmLabel = h("label", {class: "sdsl-ctl"}, "N:M violations ");
  nmLabel.append(nmBox, nmN, h("span", {}, ":"), nmM);
  const reset = h("button", {class: "sdsl-reset"}, "reset zoom");
  reset.addEventListener("click", () => { const s = model.get("mask_shape");
                                          model.set("view", [0, s[0], 0, s[1]]); model.save_changes(); });
  bar.append(h("span", {}, "show "), mode, h("span", {}, " block "), block, nmLabel, reset);

  const grid = h("div", {class: "sdsl-grid"});
  const canvas = h("canvas", {class: "sdsl-mask-canvas"});
  const rowsC = h("canvas", {class: "sdsl-row-profile", width: 60});
  const colsC = h("canvas", {class: "sdsl-col-profile", height: 60});
  const sel = h("div", {class: "sdsl-selection"});
  const stage = h("div", {class: "sdsl-stage"});
  stage.append(canvas, sel);
  grid.append(stage, rowsC, colsC);
  const readout = h("div", {class: "sdsl-readout"}, "hover for coordinates and density; drag to zoom");
  const hist = h("canvas", {class: "sdsl-hist", width: 520, height: 90});
  const stats = h("div", {class: "sdsl-stats"});
  const msg = h("div", {class: "sdsl-message"});
  el.append(bar, grid, readout, msg, stats, hist);
  let paints = 0;

  function current() {
    const blocks = model.get("mode") === "blocks";
    return blocks ? {data: floats(model.get("blocks_grid")), gh: model.get("blocks_h"), gw: model.get("blocks_w"),
                     area: model.get("block") * model.get("block"), blocks}
                  : {data: floats(model.get("grid")), gh: model.get("grid_h"), gw: model.get("grid_w"),
                     area: null, blocks};
  }
  function cellArea(k, n, lo, hi) { return Math.floor((k + 1) * (hi - lo) / n) - Math.floor(k * (hi - lo) / n); }
  function draw() {
    const {data, gh, gw, area} = current();
    const size = model.get("size");
    const scale = size / Math.max(gh, gw, 1);
    canvas.width = Math.max(1, Math.round(gw * scale));
    canvas.height = Math.max(1, Math.round(gh * scale));
    rowsC.height = canvas.height; colsC.width = canvas.width;
    const ctx = canvas.getContext("2d");
    ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, canvas.width, canvas.height);
    if (!gh || !gw || data.length !== gh * gw) { return; }
    const v = model.get("view");
    const dens = new Float32Array(gh * gw);
    let top = 0;
    for (let p = 0; p < gh; p++) {
      const ah = area ? 1 : cellArea(p, gh, v[0], v[1]);
      for (let q = 0; q < gw; q++) {
        const a = area ? area : ah * cellArea(q, gw, v[2], v[3]);
        const d = data[p * gw + q] / a;
        dens[p * gw + q] = d; if (d > top) top = d;
      }
    }
    const img = new ImageData(gw, gh);
    const nm = model.get("show_nm") && !area ? bytes(model.get("nm_grid")) : new Uint8Array(0);
    for (let k = 0; k < gh * gw; k++) {
      let c = dens[k] > 0 ? lut(Math.sqrt(dens[k] / top)) : [255, 255, 255];
      if (nm.length === gh * gw && nm[k]) c = [220, 30, 30];
      img.data[4 * k] = c[0]; img.data[4 * k + 1] = c[1]; img.data[4 * k + 2] = c[2]; img.data[4 * k + 3] = 255;
    }
    const off = document.createElement("canvas");
    off.width = gw; off.height = gh;
    off.getContext("2d").putImageData(img, 0, 0);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(off, 0, 0, canvas.width, canvas.height);
    const rowSums = [], colSums = new Array(gw).fill(0);
    for (let p = 0; p < gh; p++) { let s = 0; for (let q = 0; q < gw; q++) { s += data[p * gw + q]; colSums[q] += data[p * gw + q]; } rowSums.push(s); }
    bars(rowsC, rowSums, true, "#4a7ab5");
    bars(colsC, colSums, false, "#4a7ab5");
    canvas.dataset.top = String(top);
    paints += 1;
    canvas.dataset.paints = String(paints);
    if (paints === 1) {   // for benchmarks/maskview.py: render() to paint, and the wall clock (Python's time.time())
      canvas.dataset.firstPaintMs = String(performance.now() - t0);
      canvas.dataset.firstPaintEpochMs = String(Date.now());
    }
  }
  function drawHist() {
    const hh = model.get("nnz_hist");
    const ctx = hist.getContext("2d");
    ctx.clearRect(0, 0, hist.width, hist.height);
    ctx.font = "11px sans-serif"; ctx.fillStyle = "#333";
    const parts = [["nonzeros per row", hh.rows, hh.row_edges], ["nonzeros per column", hh.cols, hh.col_edges]];
    parts.forEach(([title, counts, edges], k) => {
      if (!counts || !counts.length) return;
      const x0 = k * 260, w = 240, top = Math.max(...counts, 1);
      ctx.fillStyle = "#333"; ctx.fillText(`${title}: ${edges[0].toFixed(0)} .. ${edges[edges.length - 1].toFixed(0)}`, x0, 11);
      ctx.fillStyle = "#7a9cc6";
      const bw = w / counts.length;
      counts.forEach((c, i) => { const hgt = 70 * c / top; ctx.fillRect(x0 + i * bw, 88 - hgt, Math.max(1, bw - 1), hgt); });
    });
  }
  function drawStats() {
    const s = model.get("stats");
    const rows = Object.entries(s.bytes || {}).map(([f, b]) => `<tr><td>${f}</td><td>${(b / 1024).toFixed(1)} KiB</td></tr>`).join("");
    const nm = model.get("nm_stats");
    const nmLine = nm && nm.groups !== undefined ? `<div>N:M ${nm.n}:${nm.m}: ${nm.violating.toLocaleString()} of ${nm.groups.toLocaleString()} non-empty groups violate</div>` : "";
    const bl = model.get("block_stats");
    const blLine = bl && bl.nonempty !== undefined ? `<div>blocks ${bl.block}x${bl.block} in view: ${bl.nonempty.toLocaleString()} non-empty, fill ${(100 * bl.fill).toFixed(1)}%</div>` : "";
    stats.innerHTML = `<div><b>${s.rows} x ${s.cols}</b> ${s.kind} (${s.format}), nnz ${Number(s.nnz).toLocaleString()}, density ${Number(s.density).toPrecision(3)}</div>`
      + nmLine + blLine + `<table class="sdsl-bytes"><tr><th>format</th><th>bytes</th></tr>${rows}</table>`;
    msg.textContent = model.get("message");
  }
  // hover readout and drag-to-zoom, in matrix coordinates of the current view
  function cellAt(ev) {
    const r = canvas.getBoundingClientRect();
    const {gh, gw} = current();
    const x = (ev.clientX - r.left) / r.width, y = (ev.clientY - r.top) / r.height;
    const p = Math.min(gh - 1, Math.max(0, Math.floor(y * gh))), q = Math.min(gw - 1, Math.max(0, Math.floor(x * gw)));
    return {p, q, x: Math.min(1, Math.max(0, x)), y: Math.min(1, Math.max(0, y))};
  }
  function toMatrix(frac, lo, hi) { return Math.round(lo + frac * (hi - lo)); }
  canvas.addEventListener("mousemove", (ev) => {
    const {p, q} = cellAt(ev);
    const {data, gh, gw, area, blocks} = current();
    const v = model.get("view");
    let r0, r1, c0, c1, a;
    if (blocks) { const b = model.get("block"); const o = model.get("blocks_origin");
                  r0 = o[0] + p * b; r1 = r0 + b; c0 = o[1] + q * b; c1 = c0 + b; a = area; }
    else { r0 = v[0] + Math.floor(p * (v[1] - v[0]) / gh); r1 = v[0] + Math.floor((p + 1) * (v[1] - v[0]) / gh);
           c0 = v[2] + Math.floor(q * (v[3] - v[2]) / gw); c1 = v[2] + Math.floor((q + 1) * (v[3] - v[2]) / gw);
           a = (r1 - r0) * (c1 - c0); }
    const n = data[p * gw + q] || 0;
    readout.textContent = `rows ${r0}..${r1 - 1}, cols ${c0}..${c1 - 1}: ${n} nonzeros, density ${(n / a).toPrecision(3)}`;
  });
  let start = null;
  canvas.addEventListener("mousedown", (ev) => { start = cellAt(ev); ev.preventDefault(); });
  canvas.addEventListener("mousemove", (ev) => {
    if (!start) return;
    const e = cellAt(ev), r = canvas.getBoundingClientRect();
    Object.assign(sel.style, {display: "block", left: `${Math.min(start.x, e.x) * r.width}px`, top: `${Math.min(start.y, e.y) * r.height}px`,
                              width: `${Math.abs(e.x - start.x) * r.width}px`, height: `${Math.abs(e.y - start.y) * r.height}px`});
  });
  window.addEventListener("mouseup", (ev) => {
    if (!start) return;
    const e = cellAt(ev), s = start; start = null; sel.style.display = "none";
    const v = model.get("view");
    const nv = [toMatrix(Math.min(s.y, e.y), v[0], v[1]), toMatrix(Math.max(s.y, e.y), v[0], v[1]),
                toMatrix(Math.min(s.x, e.x), v[2], v[3]), toMatrix(Math.max(s.x, e.x), v[2], v[3])];
    if (nv[1] - nv[0] < 2 || nv[3] - nv[2] < 2) return;   // a click, not a drag
    model.set("view", nv); model.save_changes();
  });
  canvas.addEventListener("mouseleave", () => { readout.textContent = "hover for coordinates and density; drag to zoom"; });

  for (const name of ["grid", "blocks_grid", "nm_grid", "mode", "size", "show_nm"]) model.on(`change:${name}`, draw);
  model.on("change:batch", () => { bs.value = model.get("batch"); bo.textContent = model.get("batch"); });
  model.on("change:head", () => { hs.value = model.get("head"); ho.textContent = model.get("head"); });
  for (const name of ["stats", "nm_stats", "block_stats", "message"]) model.on(`change:${name}`, drawStats);
  model.on("change:nnz_hist", drawHist);
  draw(); drawHist(); drawStats();
}
export default { render };
"""

CSS = """
.sdsl-maskview { font: 12px sans-serif; color: #222; }
.sdsl-toolbar { display: flex; flex-wrap: wrap; gap: 8px; align-items: center; margin-bottom: 6px; }
.sdsl-ctl { display: inline-flex; gap: 4px; align-items: center; }
.sdsl-grid { display: grid; grid-template-columns: max-content 60px; gap: 2px; }
.sdsl-stage { position: relative; line-height: 0; border: 1px solid #bbb; }
.sdsl-mask-canvas { cursor: crosshair; image-rendering: pixelated; }
.sdsl-selection { position: absolute; display: none; border: 1px dashed #d22; background: rgba(220,30,30,.1);
                  pointer-events: none; }
.sdsl-readout { margin: 4px 0; min-height: 1.2em; font-family: monospace; }
.sdsl-message { color: #a40; }
.sdsl-bytes td, .sdsl-bytes th { padding: 0 8px; text-align: right; }
"""
