// The latent explorer: every model's encoder and decoder in plain JavaScript, from folded dense layers.
// Everything it needs is in the page's JSON block; it fetches nothing.
(function () {
  "use strict";
  var DATA = JSON.parse(document.getElementById("explorer-data").textContent);
  var N = DATA.latent_dim, D = 1024, SIDE = 32, NM = DATA.models.length;
  var SVGNS = "http://www.w3.org/2000/svg";
  var PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                 "#17becf", "#bcbd22", "#393b79", "#637939", "#843c39", "#7b4173", "#5254a3"];
  var PAD_COLOR = "#e6007e";

  // ------------------------------------------------------------------ numbers
  function bytes(b64) {
    var s = atob(b64), u = new Uint8Array(s.length);
    for (var i = 0; i < s.length; i++) u[i] = s.charCodeAt(i);
    return u;
  }
  /** base64 of little-endian float32 -> Float32Array. */
  function f32(b64) {
    var u = bytes(b64), dv = new DataView(u.buffer), out = new Float32Array(u.length / 4);
    for (var k = 0; k < out.length; k++) out[k] = dv.getFloat32(4 * k, true);
    return out;
  }
  var HALF = null;  // float16 bit pattern -> value, built on first use
  function halfTable() {
    if (HALF) return HALF;
    HALF = new Float32Array(65536);
    for (var h = 0; h < 65536; h++) {
      var s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, f = h & 0x3ff;
      HALF[h] = e === 0 ? s * f * Math.pow(2, -24) : e === 31 ? (f ? NaN : s * Infinity) : s * (1 + f / 1024) * Math.pow(2, e - 15);
    }
    return HALF;
  }
  /** One stored layer's weight [nin, nout] row-major as Float32Array: float32, float16, or int8 times a column scale. */
  function weights(p) {
    var nin = p.shape[0], nout = p.shape[1], u = bytes(p.w), W = new Float32Array(nin * nout), k;
    if (p.fmt === "float16") {
      var t = halfTable();
      for (k = 0; k < W.length; k++) W[k] = t[u[2 * k] | (u[2 * k + 1] << 8)];
    } else if (p.fmt === "int8") {
      var scale = f32(p.scale);
      for (k = 0; k < W.length; k++) W[k] = (u[k] > 127 ? u[k] - 256 : u[k]) * scale[k % nout];
    } else {
      var dv = new DataView(u.buffer);
      for (k = 0; k < W.length; k++) W[k] = dv.getFloat32(4 * k, true);
    }
    return W;
  }
  function unpack(layers) {
    return layers.map(function (p) {
      return {nin: p.shape[0], nout: p.shape[1], W: weights(p), b: f32(p.b), act: p.act};
    });
  }

  /** y = act(x W + b) layer after layer (float32 weights, float64 sums); x: array of the first layer's nin values. */
  function forward(layers, x) {
    var y = x;
    for (var k = 0; k < layers.length; k++) {
      var L = layers[k], out = new Float64Array(L.nout), W = L.W, nout = L.nout, j;
      for (j = 0; j < nout; j++) out[j] = L.b[j];
      for (var i = 0; i < L.nin; i++) {
        var xi = y[i];
        if (xi === 0) continue;
        var row = i * nout;
        for (var jj = 0; jj < nout; jj++) out[jj] += xi * W[row + jj];
      }
      if (L.act === "relu") { for (j = 0; j < nout; j++) if (out[j] < 0) out[j] = 0; }
      else if (L.act === "sigmoid") { for (j = 0; j < nout; j++) out[j] = 1 / (1 + Math.exp(-out[j])); }
      y = out;
    }
    return y;
  }

  var nets = {};  // unpacked when a seed is first shown, so the page is ready after one seed's networks
  function net(mi, si) {
    var key = mi + "/" + si;
    if (!nets[key]) {
      var p = DATA.models[mi].seeds[si];
      nets[key] = {enc: unpack(p.encoder), dec: unpack(p.decoder)};
    }
    return nets[key];
  }
  // The encoders read only DATA.pixels (the others are blank in every training image and input).
  var PIXELS = DATA.pixels || null, INKABLE = new Uint8Array(D);
  if (PIXELS) PIXELS.forEach(function (i) { INKABLE[i] = 1; }); else INKABLE.fill(1);
  function encodeIdx(mi, si, image) {
    var x = PIXELS ? PIXELS.map(function (i) { return image[i]; }) : image;
    return Array.prototype.slice.call(forward(net(mi, si).enc, x), 0, N);
  }
  function decodeIdx(mi, si, z) { return Array.prototype.slice.call(forward(net(mi, si).dec, z)); }

  function modelIndex(m) {
    if (typeof m === "number") return m;
    for (var i = 0; i < NM; i++) if (DATA.models[i].name === m || DATA.models[i].label === m) return i;
    throw new Error("unknown model " + m);
  }
  function seedIndex(s) {
    var i = DATA.seeds.indexOf(Number(s));
    if (i < 0) throw new Error("unknown seed " + s);
    return i;
  }
  function summary(mi) { return DATA.models[mi].seeds[S.seed]; }
  /** Distance of code z from the training codes' mean in their own standard deviations (Mahalanobis). */
  function mahalanobis(mi, z) {
    var s = summary(mi), c = z.map(function (v, d) { return v - s.mean[d]; }), acc = 0;
    for (var i = 0; i < N; i++) for (var j = 0; j < N; j++) acc += c[i] * s.cov_inv[i][j] * c[j];
    return Math.sqrt(Math.max(acc, 0));
  }

  function gaussian() {
    var u = 1 - Math.random(), v = Math.random();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }
  function fmt(v, d) { return (v >= 0 ? "\u2007" : "") + v.toFixed(d === undefined ? 2 : d).replace("-", "\u2212"); }
  function plain(v, d) { return v.toFixed(d === undefined ? 2 : d).replace("-", "\u2212"); }
  function fmtRange(r) { return "[" + plain(r[0]) + ", " + plain(r[1]) + "]"; }
  function esc(s) { return String(s).replace(/[&<>"]/g, function (c) { return {"&": "&amp;", "<": "&lt;", ">": "&gt;", "\"": "&quot;"}[c]; }); }

  // ------------------------------------------------------------------ state
  var S = {
    seed: 0, inverted: true,
    inputs: DATA.inputs.map(function (inp, i) {
      return {name: inp.name, short: inp.short, image: f32(inp.image), color: PALETTE[i % PALETTE.length],
              selected: DATA.initial_selection.indexOf(inp.name) >= 0, fixed: true, index: i};
    }),
    pad: {image: null, drawn: false},
    black: {},      // "model/seed" -> array of n values
    codes: {},      // "model/seed/input name" -> code
    range: [],      // per model: [lo, hi] of its axes
    dragging: null, // {mi, d} while a point is dragged
    dragged: false  // a point was dragged at least once (the "drag" tip goes)
  };
  var kept = 0;

  /** An input's code: the page's own inputs come with theirs (computed in float32 when the page was written);
   *  drawings go through the page's encoder. */
  function codeOf(mi, si, inp) {
    var key = mi + "/" + si + "/" + inp.name, given = DATA.models[mi].seeds[si].codes;
    if (!S.codes[key]) S.codes[key] = inp.fixed && given ? given[inp.index].slice() : encodeIdx(mi, si, inp.image);
    return S.codes[key];
  }
  function shownInputs() {
    var list = S.inputs.filter(function (x) { return x.selected; });
    if (S.pad.drawn) list.push({name: "drawing", short: "drawing", image: S.pad.image, color: PAD_COLOR, pad: true});
    return list;
  }
  /** The code every black line starts from: the training codes' mean, which is no shown input's code. */
  function average(mi) { return summary(mi).mean.slice(); }
  function black(mi) {
    var k = mi + "/" + S.seed;
    if (!S.black[k]) S.black[k] = average(mi);
    return S.black[k];
  }

  /** A model's y range: its training codes (0.1 to 99.9 %), the shown inputs' codes and its black line. */
  function computeRange(mi) {
    var r = summary(mi).train_range, lo = r[0], hi = r[1];
    shownInputs().forEach(function (inp) {
      codeOf(mi, S.seed, inp).forEach(function (v) { lo = Math.min(lo, v); hi = Math.max(hi, v); });
    });
    black(mi).forEach(function (v) { lo = Math.min(lo, v); hi = Math.max(hi, v); });
    var pad = 0.05 * (hi - lo || 1);
    S.range[mi] = [lo - pad, hi + pad];
  }

  // ------------------------------------------------------------------ drawing helpers
  function el(name, attrs, parent) {
    var e = document.createElementNS(SVGNS, name);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(e);
    return e;
  }
  function html(tag, cls, parent, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    if (parent) parent.appendChild(e);
    return e;
  }
  function paintImage(canvas, values, inverted) {
    var ctx = canvas.getContext("2d"), tmp = document.createElement("canvas");
    tmp.width = SIDE; tmp.height = SIDE;
    var tctx = tmp.getContext("2d"), img = tctx.createImageData(SIDE, SIDE);
    for (var i = 0; i < D; i++) {
      var v = Math.max(0, Math.min(1, values[i])), g = Math.round(255 * (inverted ? 1 - v : v));
      img.data[4 * i] = img.data[4 * i + 1] = img.data[4 * i + 2] = g; img.data[4 * i + 3] = 255;
    }
    tctx.putImageData(img, 0, 0);
    ctx.imageSmoothingEnabled = false;
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    ctx.drawImage(tmp, 0, 0, canvas.width, canvas.height);
  }
  function niceTicks(lo, hi, count) {
    var span = hi - lo, step = Math.pow(10, Math.floor(Math.log10(span / count))), err = span / count / step;
    if (err >= 7.5) step *= 10; else if (err >= 3.5) step *= 5; else if (err >= 1.5) step *= 2;
    var ticks = [];
    for (var t = Math.ceil(lo / step) * step; t <= hi + 1e-9 * span; t += step) ticks.push(Math.abs(t) < 1e-12 ? 0 : t);
    return {ticks: ticks, digits: Math.max(0, -Math.floor(Math.log10(step) + 1e-9))};
  }

  // ------------------------------------------------------------------ one panel per model
  var panels = [], tap = null;  // tap: where a touch on an input's line began
  var modelsBox = document.getElementById("models");
  DATA.models.forEach(function (m, mi) {
    var box = html("div", "model", modelsBox);
    box.id = "panel-" + m.name;
    box.setAttribute("data-model", m.name);
    var h = html("h2", "", box, m.label + " ");
    html("span", "what", h, m.what || m.description || m.name);
    var pair = html("div", "pair", box);
    var svg = el("svg", {"class": "plot", id: "plot-" + m.name, role: "img",
                         "aria-label": m.label + ": the code values, one axis per value"}, pair);
    var out = html("div", "out", pair);
    html("div", "cap", out, "decoded from the black line");
    var canvas = html("canvas", "decoded", out);
    canvas.width = 160; canvas.height = 160; canvas.id = "decoded-" + m.name;
    var dist = html("div", "dist", out), zv = html("div", "zvals", out);
    panels.push({svg: svg, canvas: canvas, dist: dist, zvals: zv, W: 400, H: 300, blackLine: null, handles: [],
                 grabs: [], decoded: null});
  });

  function geometry(P) {
    var r = P.svg.getBoundingClientRect();
    P.W = Math.max(200, Math.round(r.width)); P.H = Math.max(150, Math.round(r.height));
    P.svg.setAttribute("viewBox", "0 0 " + P.W + " " + P.H);
    P.M = {top: 14, right: 14, bottom: 26, left: P.W < 300 ? 40 : 50};
  }
  function axisX(P, d) {
    var M = P.M;
    return N === 1 ? (M.left + P.W - M.right) / 2 : M.left + 22 + d * (P.W - M.left - M.right - 44) / (N - 1);
  }
  function yOf(mi, v) {
    var P = panels[mi], M = P.M, r = S.range[mi];
    return M.top + (r[1] - v) / (r[1] - r[0]) * (P.H - M.top - M.bottom);
  }
  function vOf(mi, y) {
    var P = panels[mi], M = P.M, r = S.range[mi];
    return r[1] - (y - M.top) / (P.H - M.top - M.bottom) * (r[1] - r[0]);
  }
  function points(mi, code) {
    return code.map(function (v, d) { return axisX(panels[mi], d).toFixed(1) + "," + yOf(mi, v).toFixed(1); }).join(" ");
  }

  function renderPlot(mi) {
    var P = panels[mi], svg = P.svg, M, d;
    geometry(P); M = P.M;
    computeRange(mi);
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    var t = niceTicks(S.range[mi][0], S.range[mi][1], P.H < 260 ? 5 : 8), grid = el("g", {}, svg);
    var g = el("g", {"class": "axis tick"}, svg);
    t.ticks.forEach(function (v) {
      var y = yOf(mi, v);
      el("line", {x1: M.left, x2: P.W - M.right, y1: y, y2: y, "class": v === 0 ? "zero" : "grid"}, grid);
      el("text", {x: M.left - 6, y: y + 4, "text-anchor": "end"}, g).textContent = plain(v, t.digits);
    });
    var sm = summary(mi), vio = sm.violins, half = Math.min(26, (P.W - M.left - M.right) / Math.max(N, 2) / 2.4);
    for (d = 0; d < N; d++) {
      var x = axisX(P, d), dens = vio.density[d], lo = vio.lo[d], hi = vio.hi[d], k = dens.length, left = [], right = [];
      for (var i = 0; i < k; i++) {
        var y = yOf(mi, lo + (hi - lo) * i / (k - 1)).toFixed(1);
        right.push((x + half * dens[i]).toFixed(1) + "," + y);
        left.unshift((x - half * dens[i]).toFixed(1) + "," + y);
      }
      el("polygon", {points: right.concat(left).join(" "), "class": "violin"}, svg);
      el("line", {x1: x, x2: x, y1: M.top, y2: P.H - M.bottom, "class": "axis"}, svg);
      el("text", {x: x, y: P.H - 8, "text-anchor": "middle"}, svg).textContent = "z" + (d + 1);
    }
    var area = el("g", {}, svg);
    shownInputs().forEach(function (inp) {
      var pts = points(mi, codeOf(mi, S.seed, inp));
      el("polyline", {points: pts, "class": "line" + (inp.pad ? " drawn" : ""), stroke: inp.color,
                      "data-model": DATA.models[mi].name, "data-input": inp.name}, area);
      var hit = el("polyline", {points: pts, "class": "hit", "data-input": inp.name}, area);
      el("title", {}, hit).textContent = inp.name + ": double-click (tap, on a touch screen) to decode it with both models";
      hit.addEventListener("dblclick", function (ev) { ev.preventDefault(); snap(inp); });
      // A double tap is not a dblclick everywhere (the plot takes no browser gestures): one tap snaps.
      hit.addEventListener("pointerdown", function (ev) { tap = {inp: inp, x: ev.clientX, y: ev.clientY}; });
      hit.addEventListener("pointerup", function (ev) {
        var t = tap; tap = null;
        if (ev.pointerType === "touch" && t && t.inp === inp && Math.abs(ev.clientX - t.x) + Math.abs(ev.clientY - t.y) < 12) {
          ev.preventDefault(); snap(inp);
        }
      });
    });
    P.blackLine = el("polyline", {points: points(mi, black(mi)), "class": "black", id: "black-" + DATA.models[mi].name}, area);
    P.handles = []; P.grabs = [];
    for (d = 0; d < N; d++) {
      // A wider transparent circle under each point makes it easy to catch with a finger.
      var cy = yOf(mi, black(mi)[d]);
      var grab = el("circle", {cx: axisX(P, d), cy: cy, r: 18, "class": "grab", "data-dim": d, "data-model": mi}, svg);
      var hd = el("circle", {cx: axisX(P, d), cy: cy, r: 7, "class": "handle", id: "handle-" + DATA.models[mi].name + "-" + d,
                             "data-dim": d, "data-model": mi}, svg);
      el("title", {}, hd).textContent = "drag: z" + (d + 1);
      hd.addEventListener("pointerdown", startDrag);
      grab.addEventListener("pointerdown", startDrag);
      P.handles.push(hd); P.grabs.push(grab);
    }
    P.tip = null;
    if (!S.dragged) {
      P.tip = el("text", {x: axisX(P, 0) + 12, y: yOf(mi, black(mi)[0]) - 10, "class": "drag-tip"}, svg);
      P.tip.textContent = "\u2195 drag";
    }
  }

  function updateBlack(mi) {  // moves the black line in place (a drag must keep its element)
    var P = panels[mi], z = black(mi);
    P.blackLine.setAttribute("points", points(mi, z));
    for (var d = 0; d < N; d++) {
      P.handles[d].setAttribute("cy", yOf(mi, z[d])); P.grabs[d].setAttribute("cy", yOf(mi, z[d]));
    }
    renderDecoded(mi);
  }

  function startDrag(ev) {
    ev.preventDefault();
    var t = ev.currentTarget;
    S.dragging = {mi: Number(t.getAttribute("data-model")), d: Number(t.getAttribute("data-dim"))};
    if (!S.dragged) {
      S.dragged = true;
      panels.forEach(function (P) { if (P.tip) { P.tip.remove(); P.tip = null; } });
    }
    panels[S.dragging.mi].handles[S.dragging.d].classList.add("dragging");
    dragTo(ev);
  }
  function svgY(svg, ev) {
    var pt = svg.createSVGPoint();
    pt.x = ev.clientX; pt.y = ev.clientY;
    return pt.matrixTransform(svg.getScreenCTM().inverse()).y;
  }
  function dragTo(ev) {
    if (!S.dragging) return;
    var mi = S.dragging.mi, v = vOf(mi, svgY(panels[mi].svg, ev)), r = S.range[mi];
    black(mi)[S.dragging.d] = Math.max(r[0], Math.min(r[1], v));
    updateBlack(mi);
  }
  window.addEventListener("pointermove", function (ev) { if (S.dragging) { ev.preventDefault(); dragTo(ev); } });
  function endDrag() {
    if (!S.dragging) return;
    var h = panels[S.dragging.mi].handles[S.dragging.d];
    if (h) h.classList.remove("dragging");
    S.dragging = null;
    render();  // the range may follow the new black line
  }
  window.addEventListener("pointerup", endDrag);
  window.addEventListener("pointercancel", endDrag);

  function snap(inp) {  // both models decode this input's code
    for (var mi = 0; mi < NM; mi++) S.black[mi + "/" + S.seed] = codeOf(mi, S.seed, inp).slice();
    render();
  }
  function randomBlack() {
    for (var mi = 0; mi < NM; mi++) {
      var s = summary(mi), z = black(mi);
      for (var d = 0; d < N; d++) z[d] = s.mean[d] + s.std[d] * gaussian();
    }
    render();
  }
  function resetBlack() {
    for (var mi = 0; mi < NM; mi++) S.black[mi + "/" + S.seed] = average(mi);
    render();
  }

  // ------------------------------------------------------------------ the other panels
  function renderDecoded(mi) {
    var P = panels[mi], z = black(mi);
    P.decoded = decodeIdx(mi, S.seed, z);
    paintImage(P.canvas, P.decoded, S.inverted);
    P.dist.textContent = plain(mahalanobis(mi, z), 1) + " sd from the centre";
    P.zvals.textContent = z.map(function (v, d) { return "z" + (d + 1) + " " + fmt(v); }).join("\n");
    P.zvals.style.whiteSpace = "pre";
  }

  function renderInputs() {
    var box = document.getElementById("inputs");
    box.innerHTML = "";
    S.inputs.forEach(function (inp) {
      var div = html("div", "thumb", box), c = html("canvas", "", div);
      div.title = inp.name; div.setAttribute("data-input", inp.name);
      c.width = SIDE; c.height = SIDE;
      paintImage(c, inp.image, S.inverted);
      html("span", "", div, inp.short);
      div.style.borderColor = inp.selected ? inp.color : "transparent";
      div.addEventListener("click", function () { inp.selected = !inp.selected; render(); });
    });
  }

  /** Over the page's own inputs (not drawings) for this seed: the raw range and the farthest Mahalanobis distance. */
  function shownStats(mi) {
    var lo = Infinity, hi = -Infinity, far = 0;
    S.inputs.forEach(function (inp) {
      if (!inp.fixed) return;
      var z = codeOf(mi, S.seed, inp);
      z.forEach(function (v) { lo = Math.min(lo, v); hi = Math.max(hi, v); });
      far = Math.max(far, mahalanobis(mi, z));
    });
    return {range: [lo, hi], far: far};
  }
  function renderRanges() {
    var rows = [["", function (m) { return "<th>" + esc(m.label) + "</th>"; }],
      ["the page's inputs: range of their codes", function (m, mi) { return "<td class=\"num\">" + fmtRange(shownStats(mi).range) + "</td>"; }],
      ["training codes, 1\u201399 %", function (m, mi) {
        var p = summary(mi).pct;
        return "<td class=\"num\">" + fmtRange([Math.min.apply(null, p.p1), Math.max.apply(null, p.p99)]) + "</td>"; }],
      ["the original article: range of its inputs' codes", function (m) {
        return "<td class=\"num\">" + (m.original_range ? fmtRange(m.original_range) : "\u2014") + "</td>"; }],
      ["farthest of the page's inputs, sd from the training centre", function (m, mi) {
        return "<td class=\"num\">" + plain(shownStats(mi).far, 2) + "</td>"; }]];
    document.getElementById("ranges").innerHTML = rows.map(function (r, i) {
      return "<tr>" + (i === 0 ? "<th>seed " + DATA.seeds[S.seed] + "</th>" : "<th>" + r[0] + "</th>") +
        DATA.models.map(r[1]).join("") + "</tr>";
    }).join("");
    document.getElementById("ranges-note").textContent = DATA.ranges_note || "";
  }

  function sentence(t) { t = String(t).replace(/`/g, ""); return esc(t.charAt(0).toUpperCase() + t.slice(1)); }
  function renderClaims() {
    var box = document.getElementById("claims");
    box.innerHTML = (DATA.claims_intro ? "<p class=\"help\">" + esc(DATA.claims_intro) + "</p>" : "") +
      (DATA.claims || []).map(function (c) {
        return "<div class=\"claim " + c.verdict.replace(/ /g, "-") + "\"><p><span class=\"verdict\">" + esc(c.verdict) +
          "</span>: " + esc(c.claim) + "</p><p class=\"help\">Measure: " + sentence(c.measure).charAt(0).toLowerCase() +
          sentence(c.measure).slice(1) + (c.ours !== "\u2014" ? "; here, AE vs VAE over all seeds: " + esc(c.ours) : "") +
          (c.article !== "\u2014" ? "; the article: " + esc(c.article) : "") + ". " + sentence(c.why) + ".</p></div>";
      }).join("");
  }

  function renderInfo() {
    var img = D * 8, code = 32 * N, ns = [1, 2, 4, 8, 16, 32, 64, 128, 256];
    if (ns.indexOf(N) < 0) { ns.push(N); ns.sort(function (a, b) { return a - b; }); }
    var w = 300, h = 120, l = 38, r = 8, t = 8, b = 26, lmax = Math.log2(Math.max(img, 32 * ns[ns.length - 1]) * 2);
    function yy(bits) { return t + (h - t - b) * (1 - Math.log2(bits) / lmax); }
    var bw = (w - l - r) / ns.length, parts = [];
    parts.push("<svg viewBox=\"0 0 " + w + " " + h + "\" role=\"img\" aria-label=\"bits in the code against n\">");
    [16, 256, 4096, 65536].forEach(function (v) {
      if (Math.log2(v) <= lmax) parts.push("<line x1=\"" + l + "\" x2=\"" + (w - r) + "\" y1=\"" + yy(v) + "\" y2=\"" + yy(v) +
        "\" stroke=\"#eee\"/><text x=\"" + (l - 4) + "\" y=\"" + (yy(v) + 3) + "\" text-anchor=\"end\">" + v + "</text>");
    });
    ns.forEach(function (n, i) {
      var x = l + i * bw + 3, y = yy(32 * n);
      parts.push("<rect x=\"" + x + "\" y=\"" + y + "\" width=\"" + (bw - 6) + "\" height=\"" + (h - b - y) + "\" fill=\"" +
                 (n === N ? "#2f6db5" : "#b9c9de") + "\"><title>n = " + n + ": " + 32 * n + " bits, " +
                 (img / (32 * n)) + "x fewer than the image</title></rect>");
      parts.push("<text x=\"" + (x + (bw - 6) / 2) + "\" y=\"" + (h - b + 12) + "\" text-anchor=\"middle\">" + n + "</text>");
    });
    parts.push("<line x1=\"" + l + "\" x2=\"" + (w - r) + "\" y1=\"" + yy(img) + "\" y2=\"" + yy(img) + "\" stroke=\"#d62728\" stroke-dasharray=\"4 2\"/>");
    parts.push("<text x=\"" + (w - r) + "\" y=\"" + (yy(img) - 4) + "\" text-anchor=\"end\" fill=\"#d62728\">image: 8192 bits</text>");
    parts.push("<text x=\"" + ((l + w - r) / 2) + "\" y=\"" + (h - 2) + "\" text-anchor=\"middle\">latent size n (bits = 32 n, log scale)</text></svg>");
    document.getElementById("info").innerHTML =
      "<p>A 32\u00d732 image with 8-bit pixels holds 32\u00b732\u00b78 = <b>8192 bits</b>; n = " + N +
      " float32 values hold " + N + "\u00b732 = <b>" + code + " bits</b>, " + (img / code).toFixed(img % code ? 1 : 0) +
      "\u00d7 fewer. " + esc(DATA.bits_note || "") + "</p>" + parts.join("");
  }

  function render() {
    document.body.classList.toggle("inverted", S.inverted);
    renderInputs();
    for (var mi = 0; mi < NM; mi++) { renderPlot(mi); renderDecoded(mi); }
    renderRanges();
  }

  // ------------------------------------------------------------------ controls
  var seedSel = document.getElementById("seed");
  DATA.seeds.forEach(function (s) {
    var o = document.createElement("option");
    o.value = String(s); o.textContent = String(s); seedSel.appendChild(o);
  });
  seedSel.addEventListener("change", function () { S.seed = seedIndex(seedSel.value); render(); });
  document.getElementById("random").addEventListener("click", randomBlack);
  document.getElementById("reset").addEventListener("click", resetBlack);
  document.getElementById("inverted").addEventListener("change", function (ev) { S.inverted = ev.target.checked; render(); });
  var resizePending = false;
  window.addEventListener("resize", function () {
    if (resizePending) return;
    resizePending = true;
    requestAnimationFrame(function () { resizePending = false; if (!S.dragging) render(); });
  });

  // ------------------------------------------------------------------ drawing pad
  var pad = document.getElementById("pad"), pctx = pad.getContext("2d"), drawing = false, last = null;
  var keepBtn = document.getElementById("pad-keep"), clearBtn = document.getElementById("pad-clear");
  function guideOverlay() {  // the central 20x20 box, drawn on top only for display
    var s = pad.width / SIDE;
    pctx.save(); pctx.strokeStyle = "#555"; pctx.setLineDash([4, 4]); pctx.lineWidth = 1;
    pctx.strokeRect(6 * s + 0.5, 6 * s + 0.5, 20 * s - 1, 20 * s - 1); pctx.restore();
  }
  var ink = document.createElement("canvas");  // the ink alone, white on black, sampled for the input
  ink.width = pad.width; ink.height = pad.height;
  var ictx = ink.getContext("2d", {willReadFrequently: true});
  function showPad() { pctx.fillStyle = "#000"; pctx.fillRect(0, 0, pad.width, pad.height); pctx.drawImage(ink, 0, 0); guideOverlay(); }
  function clearPad() {
    ictx.fillStyle = "#000"; ictx.fillRect(0, 0, ink.width, ink.height);
    S.pad.drawn = false; S.pad.image = null;
    showPad(); keepBtn.disabled = clearBtn.disabled = true;
  }
  function padPos(ev) {
    var r = pad.getBoundingClientRect();
    return [(ev.clientX - r.left) * pad.width / r.width, (ev.clientY - r.top) * pad.height / r.height];
  }
  function stroke(a, b) {
    ictx.strokeStyle = "#fff"; ictx.fillStyle = "#fff"; ictx.lineCap = "round"; ictx.lineJoin = "round";
    ictx.lineWidth = pad.width / SIDE * 2.6;
    ictx.beginPath(); ictx.moveTo(a[0], a[1]); ictx.lineTo(b[0] + 0.01, b[1]); ictx.stroke();
  }
  /** The ink averaged over 5x5-pixel blocks -> 1024 values in [0, 1]. */
  function padImage() {
    var data = ictx.getImageData(0, 0, ink.width, ink.height).data, s = ink.width / SIDE, out = new Float32Array(D);
    for (var r = 0; r < SIDE; r++) for (var c = 0; c < SIDE; c++) {
      var acc = 0;
      for (var i = 0; i < s; i++) for (var j = 0; j < s; j++) acc += data[4 * ((r * s + i) * ink.width + c * s + j)];
      out[r * SIDE + c] = INKABLE[r * SIDE + c] ? acc / (255 * s * s) : 0;  // blank where no image has ink
    }
    return out;
  }
  var padPending = false;
  function padChanged() {
    if (padPending) return;
    padPending = true;
    requestAnimationFrame(function () {
      padPending = false;
      S.pad.image = padImage(); S.pad.drawn = true;
      Object.keys(S.codes).forEach(function (k) { if (/\/drawing$/.test(k)) delete S.codes[k]; });
      keepBtn.disabled = clearBtn.disabled = false;
      render();
    });
  }
  pad.addEventListener("pointerdown", function (ev) {
    ev.preventDefault(); drawing = true; last = padPos(ev);
    stroke(last, last); showPad(); padChanged();
  });
  pad.addEventListener("pointermove", function (ev) {
    if (!drawing) return;
    ev.preventDefault(); var p = padPos(ev); stroke(last, p); last = p; showPad(); padChanged();
  });
  function padUp() { drawing = false; }
  window.addEventListener("pointerup", padUp);
  window.addEventListener("pointercancel", padUp);
  clearBtn.addEventListener("click", function () { clearPad(); render(); });
  keepBtn.addEventListener("click", function () {
    if (!S.pad.drawn) return;
    kept += 1;
    S.inputs.push({name: "drawing " + kept, short: "drawing " + kept, image: S.pad.image,
                   color: PALETTE[S.inputs.length % PALETTE.length], selected: true, fixed: false});
    clearPad(); render();
  });

  // ------------------------------------------------------------------ start
  document.getElementById("subtitle").textContent = DATA.subtitle;
  document.getElementById("footer").textContent = DATA.footer;
  var words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"];
  Array.prototype.forEach.call(document.querySelectorAll(".n-values"), function (e) { e.textContent = words[N] || String(N); });
  clearPad();
  renderInfo();
  renderClaims();
  render();

  /** For tests and the console: the page's encoder, decoder and state. */
  window.explorer = {
    ready: true,
    latentDim: N,
    models: DATA.models.map(function (m) { return m.name; }),
    seeds: DATA.seeds.slice(),
    decode: function (model, seed, z) { return decodeIdx(modelIndex(model), seedIndex(seed), z); },
    encode: function (model, seed, image) { return encodeIdx(modelIndex(model), seedIndex(seed), image); },
    code: function (model, seed, name) {  // the code the page draws for one of its inputs
      var f = S.inputs.filter(function (x) { return x.name === name; })[0];
      return f ? codeOf(modelIndex(model), seedIndex(seed), f).slice() : null;
    },
    spread: function (model) { return DATA.models[modelIndex(model)].seeds.map(function (s) { return s.std.slice(); }); },
    state: function () {
      var lines = [], per = {};
      shownInputs().forEach(function (inp) {
        DATA.models.forEach(function (m, mi) { lines.push({input: inp.name, model: m.name, values: codeOf(mi, S.seed, inp).slice()}); });
      });
      DATA.models.forEach(function (m, mi) {
        per[m.name] = {black: black(mi).slice(), range: S.range[mi].slice(), decoded: panels[mi].decoded.slice(),
                       distance: mahalanobis(mi, black(mi))};
      });
      return {seed: DATA.seeds[S.seed], inverted: S.inverted, models: per,
              selected: shownInputs().map(function (x) { return x.name; }),
              inputs: S.inputs.map(function (x) { return x.name; }), lines: lines,
              drawing: S.pad.drawn, drawingImage: S.pad.drawn ? Array.prototype.slice.call(S.pad.image) : null};
    },
    setSeed: function (s) { S.seed = seedIndex(s); seedSel.value = String(DATA.seeds[S.seed]); render(); },
    select: function (name, on) { S.inputs.forEach(function (x) { if (x.name === name) x.selected = on !== false; }); render(); },
    setBlack: function (model, z) { S.black[modelIndex(model) + "/" + S.seed] = z.slice(); render(); },
    snap: function (name) { var f = shownInputs().filter(function (x) { return x.name === name; })[0]; if (f) snap(f); },
    random: randomBlack,
    handlePosition: function (model, d) {  // client coordinates of a model's black point on axis d
      var r = panels[modelIndex(model)].handles[d].getBoundingClientRect();
      return {x: r.left + r.width / 2, y: r.top + r.height / 2};
    }
  };
})();
