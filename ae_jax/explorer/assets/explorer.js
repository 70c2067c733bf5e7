// The latent explorer: encoder and decoder in plain JavaScript from folded dense layers.
// Everything it needs is in the page's JSON block; it fetches nothing.
(function () {
  "use strict";
  var DATA = JSON.parse(document.getElementById("explorer-data").textContent);
  var N = DATA.latent_dim, D = 1024, SIDE = 32;
  var SVGNS = "http://www.w3.org/2000/svg";
  var PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                 "#17becf", "#bcbd22", "#393b79", "#637939", "#843c39", "#7b4173", "#5254a3"];
  var PAD_COLOR = "#e6007e";

  // ------------------------------------------------------------------ numbers
  var LITTLE = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

  /** base64 of little-endian float32 -> Float32Array. */
  function f32(b64) {
    var s = atob(b64), u = new Uint8Array(s.length);
    for (var i = 0; i < s.length; i++) u[i] = s.charCodeAt(i);
    if (LITTLE) return new Float32Array(u.buffer);
    var dv = new DataView(u.buffer), out = new Float32Array(u.length / 4);
    for (var k = 0; k < out.length; k++) out[k] = dv.getFloat32(4 * k, true);
    return out;
  }

  /** Packed layers -> [{nin, nout, W (row-major [nin, nout]), b, act}]. */
  function unpack(p) {
    var all = f32(p.data), off = 0, layers = [];
    for (var k = 0; k < p.shapes.length; k++) {
      var nin = p.shapes[k][0], nout = p.shapes[k][1];
      var W = all.subarray(off, off + nin * nout); off += nin * nout;
      var b = all.subarray(off, off + nout); off += nout;
      layers.push({nin: nin, nout: nout, W: W, b: b, act: p.act[k]});
    }
    return layers;
  }

  /** y = act(x W + b) layer after layer; x: array of length nin of the first layer. */
  function forward(layers, x) {
    var y = x;
    for (var k = 0; k < layers.length; k++) {
      var L = layers[k], out = new Float64Array(L.nout), W = L.W, nout = L.nout;
      for (var j = 0; j < nout; j++) out[j] = L.b[j];
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

  var nets = {};
  function net(mi, si) {
    var key = mi + "/" + si;
    if (!nets[key]) {
      var p = DATA.models[mi].seeds[si];
      nets[key] = {enc: unpack(p.encoder), dec: unpack(p.decoder)};
    }
    return nets[key];
  }
  function encodeIdx(mi, si, image) {
    var h = forward(net(mi, si).enc, image);
    return Array.prototype.slice.call(h, 0, N);  // the VAE family: mu, the first n outputs
  }
  function decodeIdx(mi, si, z) { return Array.prototype.slice.call(forward(net(mi, si).dec, z)); }

  function modelIndex(m) {
    if (typeof m === "number") return m;
    for (var i = 0; i < DATA.models.length; i++) if (DATA.models[i].name === m || DATA.models[i].label === m) return i;
    throw new Error("unknown model " + m);
  }
  function seedIndex(s) {
    var i = DATA.seeds.indexOf(Number(s));
    if (i < 0) throw new Error("unknown seed " + s);
    return i;
  }

  function gaussian() {
    var u = 1 - Math.random(), v = Math.random();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }
  function fmt(v, d) { return (v >= 0 ? "\u2007" : "") + v.toFixed(d === undefined ? 2 : d).replace("-", "\u2212"); }
  function fmtRange(r) {  // may wrap after the comma in a narrow table
    return "[" + fmt(r[0]).replace("\u2007", "") + ",\u200b" + fmt(r[1]).replace("\u2007", "") + "]";
  }

  // ------------------------------------------------------------------ state
  var S = {
    model: 0, seed: 0, inverted: true, shared: false,
    inputs: DATA.inputs.map(function (inp, i) {
      return {name: inp.name, short: inp.short, image: f32(inp.image), color: PALETTE[i % PALETTE.length],
              selected: DATA.initial_selection.indexOf(inp.name) >= 0};
    }),
    pad: {image: null, drawn: false},
    black: {},      // "model/seed" -> array of n values
    codes: {},      // "model/seed/input name" -> code
    range: [-1, 1],
    dragging: -1
  };
  var kept = 0;

  function codeOf(mi, si, inp) {
    var key = mi + "/" + si + "/" + inp.name;
    if (!S.codes[key]) S.codes[key] = encodeIdx(mi, si, inp.image);
    return S.codes[key];
  }
  function shownInputs() {
    var list = S.inputs.filter(function (x) { return x.selected; });
    if (S.pad.drawn) list.push({name: "drawing", short: "drawing", image: S.pad.image, color: PAD_COLOR, pad: true});
    return list;
  }
  function blackKey() { return S.model + "/" + S.seed; }
  function black() {
    var k = blackKey();
    if (!S.black[k]) {
      var first = shownInputs()[0] || S.inputs[0];
      S.black[k] = codeOf(S.model, S.seed, first).slice();
    }
    return S.black[k];
  }

  /** The y range: the training codes' range (0.1 to 99.9 %) and the shown codes, of the shown model(s). */
  function computeRange() {
    var lo = Infinity, hi = -Infinity, models = S.shared ? DATA.models.map(function (_, i) { return i; }) : [S.model];
    models.forEach(function (mi) {
      var r = DATA.models[mi].seeds[S.seed].train_range;
      lo = Math.min(lo, r[0]); hi = Math.max(hi, r[1]);
      shownInputs().forEach(function (inp) {
        codeOf(mi, S.seed, inp).forEach(function (v) { lo = Math.min(lo, v); hi = Math.max(hi, v); });
      });
    });
    black().forEach(function (v) { lo = Math.min(lo, v); hi = Math.max(hi, v); });
    var pad = 0.05 * (hi - lo || 1);
    S.range = [lo - pad, hi + pad];
  }

  // ------------------------------------------------------------------ drawing helpers
  function el(name, attrs, parent) {
    var e = document.createElementNS(SVGNS, name);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
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

  // ------------------------------------------------------------------ the plot
  var svg = document.getElementById("plot");
  var W = 640, H = 470, M = {top: 22, right: 30, bottom: 46, left: 64};
  function axisX(d) { return N === 1 ? (M.left + W - M.right) / 2 : M.left + 30 + d * (W - M.left - M.right - 60) / (N - 1); }
  function yOf(v) { return M.top + (S.range[1] - v) / (S.range[1] - S.range[0]) * (H - M.top - M.bottom); }
  function vOf(y) { return S.range[1] - (y - M.top) / (H - M.top - M.bottom) * (S.range[1] - S.range[0]); }
  function points(code) { return code.map(function (v, d) { return axisX(d).toFixed(1) + "," + yOf(v).toFixed(1); }).join(" "); }
  var blackLine = null, handles = [], grabs = [];

  function renderPlot() {
    computeRange();
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    var defs = el("defs", {}, svg), clip = el("clipPath", {id: "plot-area"}, defs);
    el("rect", {x: M.left, y: M.top - 8, width: W - M.left - M.right + 8, height: H - M.top - M.bottom + 16}, clip);
    var t = niceTicks(S.range[0], S.range[1], 8), grid = el("g", {}, svg), g = el("g", {"class": "axis tick"}, svg);
    t.ticks.forEach(function (v) {
      var y = yOf(v);
      el("line", {x1: M.left, x2: W - M.right, y1: y, y2: y, "class": v === 0 ? "zero" : "grid"}, grid);
      el("line", {x1: M.left - 5, x2: M.left, y1: y, y2: y}, g);
      var tx = el("text", {x: M.left - 8, y: y + 4, "text-anchor": "end"}, g);
      tx.textContent = v.toFixed(t.digits).replace("-", "\u2212");
    });
    el("line", {x1: M.left, x2: M.left, y1: M.top, y2: H - M.bottom}, g);
    var yl = el("text", {x: 16, y: (M.top + H - M.bottom) / 2, "text-anchor": "middle",
                         transform: "rotate(-90 16 " + (M.top + H - M.bottom) / 2 + ")"}, svg);
    yl.textContent = "latent value";
    var mdl = DATA.models[S.model], vio = mdl.seeds[S.seed].violins, half = Math.min(34, 0.42 * (W - M.left - M.right - 60) / Math.max(N - 1, 1));
    var plotArea = el("g", {"clip-path": "url(#plot-area)"}, svg);
    for (var d = 0; d < N; d++) {
      var x = axisX(d), dens = vio.density[d], G = dens.length, lo = vio.lo[d], hi = vio.hi[d], left = [], right = [];
      for (var k = 0; k < G; k++) {
        var v = lo + (hi - lo) * k / (G - 1), y = yOf(v).toFixed(1), w = dens[k] * half;
        left.push((x - w).toFixed(1) + "," + y); right.unshift((x + w).toFixed(1) + "," + y);
      }
      el("polygon", {points: left.concat(right).join(" "), "class": "violin"}, plotArea);
      el("line", {x1: x, x2: x, y1: M.top, y2: H - M.bottom, "class": "axis"}, svg);
      var lab = el("text", {x: x, y: H - M.bottom + 20, "text-anchor": "middle"}, svg);
      lab.textContent = "z" + (d + 1);
    }
    var cap = el("text", {x: (M.left + W - M.right) / 2, y: H - 8, "text-anchor": "middle", fill: "#555"}, svg);
    cap.textContent = "latent dimension (" + mdl.label + ", seed " + DATA.seeds[S.seed] + ")";
    var shown = shownInputs();
    DATA.models.forEach(function (m, mi) {  // the other models' lines, grey, underneath
      if (mi === S.model) return;
      shown.forEach(function (inp) {
        var l = el("polyline", {points: points(codeOf(mi, S.seed, inp)), "class": "line other",
                                "data-model": m.name, "data-input": inp.name}, plotArea);
        el("title", {}, l).textContent = inp.name + " (" + m.label + ")";
      });
    });
    shown.forEach(function (inp) {
      var code = codeOf(S.model, S.seed, inp), pts = points(code);
      var l = el("polyline", {points: pts, "class": "line active" + (inp.pad ? " drawn" : ""), stroke: inp.color,
                              "data-model": mdl.name, "data-input": inp.name}, plotArea);
      var hit = el("polyline", {points: pts, "class": "hit", "data-input": inp.name}, plotArea);
      el("title", {}, hit).textContent = inp.name + ": double-click to decode this code";
      hit.addEventListener("dblclick", function (ev) { ev.preventDefault(); snap(inp); });
    });
    blackLine = el("polyline", {points: points(black()), "class": "black", id: "black-line"}, plotArea);
    handles = []; grabs = [];
    for (d = 0; d < N; d++) {
      // A wider transparent circle under each point makes it easy to catch with a finger.
      var grab = el("circle", {cx: axisX(d), cy: yOf(black()[d]), r: 18, "class": "grab", "data-dim": d}, svg);
      var h = el("circle", {cx: axisX(d), cy: yOf(black()[d]), r: 7, "class": "handle", id: "handle-" + d,
                            "data-dim": d}, svg);
      el("title", {}, h).textContent = "drag: z" + (d + 1);
      h.addEventListener("pointerdown", startDrag);
      grab.addEventListener("pointerdown", startDrag);
      handles.push(h); grabs.push(grab);
    }
  }

  function updateBlack() {  // moves the black line in place (a drag must keep its element)
    var z = black();
    blackLine.setAttribute("points", points(z));
    for (var d = 0; d < N; d++) { handles[d].setAttribute("cy", yOf(z[d])); grabs[d].setAttribute("cy", yOf(z[d])); }
    renderDecoded();
  }

  function startDrag(ev) {
    ev.preventDefault();
    S.dragging = Number(ev.currentTarget.getAttribute("data-dim"));
    handles[S.dragging].classList.add("dragging");
    dragTo(ev);
  }
  function svgY(ev) {
    var pt = svg.createSVGPoint();
    pt.x = ev.clientX; pt.y = ev.clientY;
    return pt.matrixTransform(svg.getScreenCTM().inverse()).y;
  }
  function dragTo(ev) {
    if (S.dragging < 0) return;
    var v = vOf(svgY(ev)), lo = S.range[0], hi = S.range[1];
    black()[S.dragging] = Math.max(lo, Math.min(hi, v));
    updateBlack();
  }
  window.addEventListener("pointermove", function (ev) { if (S.dragging >= 0) { ev.preventDefault(); dragTo(ev); } });
  function endDrag() {
    if (S.dragging < 0) return;
    handles[S.dragging] && handles[S.dragging].classList.remove("dragging");
    S.dragging = -1;
    render();  // the range may follow the new black line
  }
  window.addEventListener("pointerup", endDrag);
  window.addEventListener("pointercancel", endDrag);

  function snap(inp) {
    S.black[blackKey()] = codeOf(S.model, S.seed, inp).slice();
    render();
  }

  function randomBlack() {
    var z = black();
    for (var d = 0; d < N; d++) z[d] = Math.max(S.range[0], Math.min(S.range[1], gaussian()));
    render();
  }

  // ------------------------------------------------------------------ the other panels
  var decodedCanvas = document.getElementById("decoded"), lastDecoded = null;
  function renderDecoded() {
    lastDecoded = decodeIdx(S.model, S.seed, black());
    paintImage(decodedCanvas, lastDecoded, S.inverted);
    document.getElementById("black-values").innerHTML = black().map(function (v, d) {
      return "z" + (d + 1) + " = " + fmt(v);
    }).join("<br>");
  }

  function renderInputs() {
    var box = document.getElementById("inputs");
    box.innerHTML = "";
    S.inputs.forEach(function (inp) {
      var div = document.createElement("div"), c = document.createElement("canvas"), s = document.createElement("span");
      div.className = "thumb"; div.title = inp.name; div.setAttribute("data-input", inp.name);
      c.width = SIDE; c.height = SIDE;
      paintImage(c, inp.image, S.inverted);
      s.textContent = inp.short;
      div.appendChild(c); div.appendChild(s);
      div.style.borderColor = inp.selected ? inp.color : "transparent";
      div.addEventListener("click", function () { inp.selected = !inp.selected; render(); });
      box.appendChild(div);
    });
  }

  function shownRange(mi) {
    var lo = Infinity, hi = -Infinity;
    S.inputs.forEach(function (inp) {
      codeOf(mi, S.seed, inp).forEach(function (v) { lo = Math.min(lo, v); hi = Math.max(hi, v); });
    });
    return [lo, hi];
  }
  function renderRanges() {
    var head = "<tr><th></th>", shownRow = "<tr><th>inputs here</th>", trainRow = "<tr><th>training set 1\u201399 %</th>",
        origRow = "<tr><th>original article</th>";
    DATA.models.forEach(function (m, mi) {
      var p = m.seeds[S.seed].pct, tr = [Math.min.apply(null, p.p1), Math.max.apply(null, p.p99)];
      var cls = mi === S.model ? " class=\"num cur\"" : " class=\"num\"";
      head += "<th" + (mi === S.model ? " class=\"cur\"" : "") + ">" + m.label + "</th>";
      shownRow += "<td" + cls + ">" + fmtRange(shownRange(mi)) + "</td>";
      trainRow += "<td" + cls + ">" + fmtRange(tr) + "</td>";
      origRow += "<td" + cls + ">" + (m.original_range ? fmtRange(m.original_range) : "\u2014") + "</td>";
    });
    document.getElementById("ranges").innerHTML = head + "</tr>" + shownRow + "</tr>" + trainRow + "</tr>" + origRow + "</tr>";
    document.getElementById("ranges-note").textContent = "Seed " + DATA.seeds[S.seed] +
      "; the VAE's code is its mean. The original article gives the range over the inputs it shows.";
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
      "\u00d7 fewer. The original article argues that the VAE's KL term makes most float values unlikely codes, " +
      "so the VAE uses fewer of those bits than the AE (compare the violins and the ranges).</p>" +
      parts.join("");
  }

  function render() {
    document.body.classList.toggle("inverted", S.inverted);
    renderInputs();
    renderPlot();
    renderDecoded();
    renderRanges();
    document.getElementById("plot-caption").textContent = "\u2014 " + DATA.models[S.model].label + " in colour";
  }

  // ------------------------------------------------------------------ controls
  var sw = document.getElementById("model-switch");
  DATA.models.forEach(function (m, mi) {
    var lab = document.createElement("label"), r = document.createElement("input");
    r.type = "radio"; r.name = "model"; r.id = "model-" + m.name; r.value = m.name; r.checked = mi === 0;
    r.addEventListener("change", function () { if (r.checked) { S.model = mi; render(); } });
    lab.appendChild(r); lab.appendChild(document.createTextNode(" " + m.label));
    lab.title = m.description || m.name;
    sw.appendChild(lab);
  });
  var seedSel = document.getElementById("seed");
  DATA.seeds.forEach(function (s, si) {
    var o = document.createElement("option");
    o.value = String(s); o.textContent = String(s); seedSel.appendChild(o);
  });
  seedSel.addEventListener("change", function () { S.seed = seedIndex(seedSel.value); render(); });
  document.getElementById("random").addEventListener("click", randomBlack);
  document.getElementById("inverted").addEventListener("change", function (ev) { S.inverted = ev.target.checked; render(); });
  document.getElementById("shared-scale").addEventListener("change", function (ev) { S.shared = ev.target.checked; render(); });

  // ------------------------------------------------------------------ drawing pad
  var pad = document.getElementById("pad"), pctx = pad.getContext("2d"), drawing = false, last = null;
  var keepBtn = document.getElementById("pad-keep"), clearBtn = document.getElementById("pad-clear");
  function padGuide() {
    pctx.fillStyle = "#000"; pctx.fillRect(0, 0, pad.width, pad.height);
  }
  function guideOverlay() {  // the central 20x20 box, drawn on top only for display
    var s = pad.width / SIDE;
    pctx.save(); pctx.strokeStyle = "#555"; pctx.setLineDash([4, 4]); pctx.lineWidth = 1;
    pctx.strokeRect(6 * s + 0.5, 6 * s + 0.5, 20 * s - 1, 20 * s - 1); pctx.restore();
  }
  var ink = document.createElement("canvas");  // the ink alone, white on black, sampled for the input
  ink.width = pad.width; ink.height = pad.height;
  var ictx = ink.getContext("2d", {willReadFrequently: true});
  function clearPad() {
    ictx.fillStyle = "#000"; ictx.fillRect(0, 0, ink.width, ink.height);
    S.pad.drawn = false; S.pad.image = null;
    showPad(); keepBtn.disabled = clearBtn.disabled = true;
  }
  function showPad() { padGuide(); pctx.drawImage(ink, 0, 0); guideOverlay(); }
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
      out[r * SIDE + c] = acc / (255 * s * s);
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
                   color: PALETTE[S.inputs.length % PALETTE.length], selected: true});
    clearPad(); render();
  });

  // ------------------------------------------------------------------ start
  document.getElementById("subtitle").textContent = DATA.subtitle;
  document.getElementById("footer").textContent = DATA.footer;
  clearPad();
  renderInfo();
  render();

  /** For tests and the console: the page's encoder, decoder and state. */
  window.explorer = {
    ready: true,
    latentDim: N,
    models: DATA.models.map(function (m) { return m.name; }),
    seeds: DATA.seeds.slice(),
    decode: function (model, seed, z) { return decodeIdx(modelIndex(model), seedIndex(seed), z); },
    encode: function (model, seed, image) { return encodeIdx(modelIndex(model), seedIndex(seed), image); },
    state: function () {
      var lines = [];
      shownInputs().forEach(function (inp) {
        DATA.models.forEach(function (m, mi) {
          lines.push({input: inp.name, model: m.name, active: mi === S.model, values: codeOf(mi, S.seed, inp).slice()});
        });
      });
      return {model: DATA.models[S.model].name, seed: DATA.seeds[S.seed], inverted: S.inverted, shared: S.shared,
              black: black().slice(), range: S.range.slice(), selected: shownInputs().map(function (x) { return x.name; }),
              inputs: S.inputs.map(function (x) { return x.name; }), lines: lines, decoded: lastDecoded.slice(),
              drawing: S.pad.drawn, drawingImage: S.pad.drawn ? Array.prototype.slice.call(S.pad.image) : null};
    },
    setModel: function (m) { S.model = modelIndex(m); document.getElementById("model-" + DATA.models[S.model].name).checked = true; render(); },
    setSeed: function (s) { S.seed = seedIndex(s); seedSel.value = String(DATA.seeds[S.seed]); render(); },
    select: function (name, on) { S.inputs.forEach(function (x) { if (x.name === name) x.selected = on !== false; }); render(); },
    setBlack: function (z) { S.black[blackKey()] = z.slice(); render(); },
    snap: function (name) { var f = shownInputs().filter(function (x) { return x.name === name; })[0]; if (f) snap(f); },
    random: randomBlack,
    handlePosition: function (d) {  // client coordinates of the black line's point on axis d
      var r = handles[d].getBoundingClientRect();
      return {x: r.left + r.width / 2, y: r.top + r.height / 2};
    }
  };
})();
