// The page of `retrieve serve`: plain JavaScript, no build step, no outside requests.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const state = { info: null, query: null, hits: [], results: 0, labelled: new Map() };

// -- talking to the API ----------------------------------------------------------------------

function indexName() { return $("#index").value || ""; }

async function api(path, form) {
  const opts = form ? { method: "POST", body: form } : {};
  const res = await fetch(path, opts);
  let body = null;
  try { body = await res.json(); } catch (e) { body = null; }
  if (!res.ok) {
    const msg = body && body.error ? body.error : `${res.status} ${res.statusText}`;
    throw new Error(msg);
  }
  return { body, ms: serverMs(res) };
}

function serverMs(res) {
  const m = /app;dur=([\d.]+)/.exec(res.headers.get("Server-Timing") || "");
  return m ? parseFloat(m[1]) : null;
}

function showError(msg) {
  const el = $("#error");
  el.textContent = msg ? String(msg).split("\n")[0] : "";
  el.hidden = !msg;
}

function fileUrl(id, extra = "") {
  const q = new URLSearchParams();
  if (indexName()) q.set("index", indexName());
  return `/api/files/${id}/${extra}${q.toString() ? "?" + q : ""}`;
}

// -- index and filters -----------------------------------------------------------------------

async function loadInfo() {
  const q = indexName() ? `?index=${encodeURIComponent(indexName())}` : "";
  const { body } = await api(`/api/info${q}`);
  state.info = body;
  const s = body.serve;
  const sel = $("#index");
  if (!sel.options.length) {
    for (const name of s.indexes) sel.add(new Option(name, name));
    sel.value = s.index;
  }
  $("#summary").textContent = `${body.files} files, ${body.windows} windows, ${s.encoder}, ` +
    `window ${fmt(s.window_s, 2)} s`;
  const text = $("#text");
  text.disabled = !s.has_text;
  $("#text-form button").disabled = !s.has_text;
  $("#text-reason").textContent = s.text_disabled_reason || "";
  text.title = s.text_disabled_reason || "";
  buildFilters(s.filters);
  const known = $("#targets");
  known.innerHTML = "";
  for (const t of s.targets || []) known.appendChild(new Option(t, t));
  const lc = $("#label-column");
  lc.innerHTML = "";
  for (const f of s.filters) lc.add(new Option(f.name, f.name));
}

function buildFilters(filters) {
  const box = $("#filters");
  box.innerHTML = "";
  for (const f of filters) {
    if (!f.distinct) continue;
    const label = document.createElement("label");
    label.textContent = f.name + " ";
    let input;
    if (f.values) {
      input = document.createElement("select");
      input.add(new Option("any", ""));
      for (const v of f.values) input.add(new Option(v, v));
    } else {
      input = document.createElement("input");
      input.type = "text";
      input.placeholder = "any";
      input.size = 8;
    }
    input.dataset.column = f.name;
    input.dataset.numeric = /INT|DOUBLE|FLOAT|DECIMAL|REAL/.test(f.type) ? "1" : "";
    input.addEventListener("change", rerun);
    label.appendChild(input);
    box.appendChild(label);
  }
}

function whereClauses() {
  const out = [];
  for (const el of document.querySelectorAll("#filters [data-column]")) {
    const v = el.value.trim();
    if (!v) continue;
    const lit = el.dataset.numeric && /^-?\d+(\.\d+)?$/.test(v) ? v : `'${v.replace(/'/g, "''")}'`;
    out.push(`${el.dataset.column} = ${lit}`);
  }
  const free = $("#where").value.trim();
  if (free) out.push(free);
  return out;
}

function baseForm() {
  const form = new FormData();
  form.set("k", $("#k").value || "10");
  if ($("#windows").checked) form.set("windows", "true");
  if (indexName()) form.set("index", indexName());
  for (const w of whereClauses()) form.append("where", w);
  return form;
}

// -- queries ---------------------------------------------------------------------------------

function queryForm(q) {
  const form = baseForm();
  if (q.kind === "file") form.set("file", q.blob, q.name);
  if (q.kind === "window") form.set("window_id", q.id);
  if (q.kind === "text") form.set("text", q.text);
  return form;
}

async function run(q) {
  state.query = q;
  showError("");
  const line = $("#query-line");
  line.hidden = false;
  $("#query-name").textContent = q.kind === "text" ? `“${q.text}”` : q.name;
  const qa = $("#query-audio");
  if (q.kind === "file") { qa.hidden = false; if (qa.dataset.blob !== q.name) { qa.src = URL.createObjectURL(q.blob); qa.dataset.blob = q.name; } }
  else if (q.kind === "window") { qa.hidden = false; qa.src = fileUrl(q.fileId, `audio`) + `${indexName() ? "&" : "?"}start_s=${q.start}&end_s=${q.end}`; qa.dataset.blob = ""; }
  else { qa.hidden = true; }
  $("#timing").textContent = "searching…";
  const t0 = performance.now();
  try {
    const { body, ms } = await api(q.kind === "text" ? "/api/text" : "/api/search", queryForm(q));
    state.hits = body;
    renderHits(body);
    $("#timing").textContent = `${body.length} results · server ${ms === null ? "?" : fmt(ms, 0)} ms · ` +
      `page ${fmt(performance.now() - t0, 0)} ms`;
  } catch (e) {
    $("#timing").textContent = "";
    showError(e.message);
  }
  if (!$("#classify").hidden) classify();
}

function rerun() { if (state.query) run(state.query); }

function fmt(x, d) { return Number(x).toFixed(d); }

// -- results ---------------------------------------------------------------------------------

const HIDDEN = new Set(["rank", "score", "path", "start_s", "end_s", "duration_s", "window_id", "file_id", "margin",
  "segment_id"]);  // segment_id: window_id's deprecated name, kept in the JSON for old scripts (retrieval/legacy.py)

function renderHits(hits) {
  renderList($("#results"), hits, { empty: "No results (check the filters).", locate: true });
}

// One list of playable windows: search results, or suggestions (``suggest``: scores are the head's).
function renderList(box, hits, opts) {
  box.innerHTML = "";
  if (opts.note) {
    const p = document.createElement("p");
    p.className = "muted small suggest-note";
    p.textContent = opts.note;
    box.appendChild(p);
  }
  if (!hits.length) {
    box.insertAdjacentHTML("beforeend", `<p class="muted empty"></p>`);
    box.lastElementChild.textContent = opts.empty;
    return;
  }
  for (const h of hits) box.appendChild(hitElement(h, opts));
}

function hitElement(h, opts) {
  const windowS = state.info ? state.info.serve.window_s : 0;
  const el = $("#hit").content.firstElementChild.cloneNode(true);
  el.dataset.fileId = h.file_id;
  el.dataset.windowId = h.window_id;
  el.dataset.startS = h.start_s;
  el.dataset.endS = h.end_s;
  $(".rank", el).textContent = h.rank;
  const score = $(".score", el);
  if (opts.suggest) {
    score.textContent = `p ${fmt(h.score, 3)}`;
    score.title = `the classifier's probability that this window is ${opts.suggest}` +
      (h.margin === undefined ? "" : ` (margin ${fmt(h.margin, 3)} from undecided)`);
  } else {
    score.textContent = fmt(h.score, 4);
  }
  $(".path", el).textContent = h.path;
  $(".path", el).title = h.path;
  $(".time", el).textContent = `${fmt(h.start_s, 2)}–${fmt(h.end_s, 2)} s of ${fmt(h.duration_s, 2)} s`;
  const meta = $(".meta", el);
  for (const [k, v] of Object.entries(h)) {
    if (HIDDEN.has(k) || v === null || v === "" || (opts.suggest && k.startsWith("score_"))) continue;
    const chip = document.createElement("span");
    chip.className = "chip";
    chip.textContent = `${k}: ${typeof v === "number" && !Number.isInteger(v) ? fmt(v, 3) : v}`;
    meta.appendChild(chip);
  }
  const sep = indexName() ? "&" : "?";
  $(".thumb", el).src = fileUrl(h.file_id, "spectrogram.png") + `${sep}start_s=${h.start_s}&end_s=${h.end_s}`;
  const player = $(".player", el);
  player.src = fileUrl(h.file_id, "audio");
  $(".play", el).textContent = `▶ play ${fmt(h.start_s, 2)}–${fmt(h.end_s, 2)} s`;
  $(".play", el).addEventListener("click", () => playSpan(player, h.start_s, h.end_s));
  $(".more", el).addEventListener("click", () => {
    activateTab("results");
    run({ kind: "window", id: h.window_id, fileId: h.file_id, start: h.start_s, end: h.end_s,
          name: `more like ${h.path} @ ${fmt(h.start_s, 2)} s` });
  });
  if (opts.locate && h.duration_s > 2 * windowS && windowS > 0) {
    const btn = $(".where-in", el);
    btn.hidden = false;
    btn.addEventListener("click", () => locateIn(el, h, player));
  }
  for (const b of el.querySelectorAll(".lab")) b.addEventListener("click", () => labelWindow(el, h, b.dataset.label));
  markLabel(el, state.labelled.get(h.window_id));
  return el;
}

// -- labelling loop: target, +/−/? on a window, train & suggest ------------------------------------

const TARGET_RE = /^[A-Za-z0-9_]{1,60}$/;

function target() {
  const t = $("#target").value.trim();
  return TARGET_RE.test(t) ? t : "";
}

function markLabel(el, label) {
  if (label) el.dataset.labelled = label; else delete el.dataset.labelled;
  for (const b of el.querySelectorAll(".lab")) b.classList.toggle("on", b.dataset.label === label);
}

function showCounts(counts) {
  for (const k of ["positive", "negative", "uncertain"]) {
    const el = $(`#n-${k}`);
    const n = counts ? counts[k] || 0 : 0;
    if (el.textContent !== String(n)) {
      el.textContent = n;
      el.parentElement.classList.add("bump");
      setTimeout(() => el.parentElement.classList.remove("bump"), 600);
    }
  }
}

async function loadCounts() {
  const t = target();
  $("#target").classList.toggle("invalid", !!$("#target").value.trim() && !t);
  document.body.classList.toggle("no-target", !t);
  if (!t) { showCounts(null); return; }
  const q = new URLSearchParams({ target: t, counts: "true" });
  if (indexName()) q.set("index", indexName());
  try {
    const { body } = await api(`/api/labels?${q}`);
    const counts = {};
    for (const row of body) counts[row.label] = row.count;
    showCounts(counts);
    q.delete("counts");
    q.set("windows", "true");
    const { body: windows } = await api(`/api/labels?${q}`);  // mark the results labelled before
    if (target() !== t) return;
    state.labelled = new Map(windows.map((w) => [w.window_id, w.label]));
    for (const el of document.querySelectorAll(".hit")) markLabel(el, state.labelled.get(Number(el.dataset.windowId)));
  } catch (e) { showError(e.message); }
}

function targetChanged() {
  localStorage.setItem("retrieve.target", $("#target").value.trim());
  state.labelled = new Map();
  for (const el of document.querySelectorAll(".hit")) markLabel(el, undefined);
  loadCounts();
}

async function labelWindow(el, h, label) {
  const t = target();
  if (!t) {
    showError("name a target first (letters, digits and underscores, e.g. rooster): labels are kept under it");
    $("#target").focus();
    return;
  }
  showError("");
  const form = new FormData();
  form.set("target", t);
  form.set("label", label);
  form.set("window_id", h.window_id);
  if (indexName()) form.set("index", indexName());
  const buttons = el.querySelectorAll(".lab");
  for (const b of buttons) b.disabled = true;
  try {
    const { body } = await api("/api/labels", form);
    state.labelled.set(h.window_id, label);
    for (const other of document.querySelectorAll(`.hit[data-window-id="${h.window_id}"]`)) markLabel(other, label);
    showCounts(body.counts);
    if (![...$("#targets").options].some((o) => o.value === t)) $("#targets").appendChild(new Option(t, t));
  } catch (e) { showError(e.message); }
  for (const b of buttons) b.disabled = false;
}

async function trainAndSuggest() {
  const t = target();
  if (!t) { showError("name a target and label a few results first"); $("#target").focus(); return; }
  showError("");
  const btn = $("#train");
  const say = (msg) => { $("#train-state").textContent = msg; };
  const form = new FormData();
  form.set("target", t);
  if (indexName()) form.set("index", indexName());
  btn.disabled = true;
  const t0 = performance.now();
  try {
    say("training…");
    const { body: trained } = await api("/api/train", form);
    say("scoring every window…");
    const { body: scored } = await api("/api/score", form);
    say("picking windows…");
    const strategy = $("#strategy").value;
    const q = new URLSearchParams({ target: t, n: "20", strategy });
    if (indexName()) q.set("index", indexName());
    const { body: found } = await api(`/api/suggest?${q}`);
    const s = trained[0];
    say(`${s.head} head trained on ${s.positives} + and ${s.negatives} − windows` +
        (s.weak_negatives ? `, ${s.weak_negatives.toLocaleString()} unlabelled ones as weak −` : "") +
        ` · ${scored[0].windows.toLocaleString()} windows scored · ${fmt((performance.now() - t0) / 1000, 1)} s`);
    const why = { margin: "the windows the classifier is least sure of", top: "the windows it finds most likely",
                  random: "windows drawn at random" }[strategy];
    renderList($("#suggest"), found, {
      suggest: t, empty: "Every scored window is labelled already.",
      note: `${why} for “${t}”: label them in place, then train again.`,
    });
    $("#suggest-count").textContent = found.length ? `(${found.length})` : "";
    activateTab("suggest");
  } catch (e) {
    say("");
    showError(e.message);
  }
  btn.disabled = false;
}

let stopAt = null;

async function playSpan(player, start, end) {
  for (const a of document.querySelectorAll("audio")) if (a !== player) a.pause();
  if (player.readyState < 1) {
    player.preload = "metadata";
    const ready = new Promise((ok, fail) => {
      player.addEventListener("loadedmetadata", ok, { once: true });
      player.addEventListener("error", () => fail(new Error("the browser cannot play this file")), { once: true });
    });
    player.load();
    try { await ready; } catch (e) { showError(e.message); return; }
  }
  player.dataset.spanSeek = "1";
  player.currentTime = start;
  stopAt = end === null ? null : { player, end };
  try { await player.play(); } catch (e) { showError(`cannot play: ${e.message}`); }
}

document.addEventListener("timeupdate", (ev) => {
  if (stopAt && ev.target === stopAt.player && ev.target.currentTime >= stopAt.end) {
    ev.target.pause();
    stopAt = null;
  }
}, true);
document.addEventListener("seeking", (ev) => {
  // a seek by hand (native controls) means "play the whole file": drop the window's end
  if (stopAt && ev.target === stopAt.player && !ev.target.dataset.spanSeek) stopAt = null;
}, true);
document.addEventListener("seeked", (ev) => { delete ev.target.dataset.spanSeek; }, true);

async function locateIn(el, hit, player) {
  const q = state.query;
  if (!q) return;
  const form = new FormData();
  form.set("target_id", hit.file_id);
  if (indexName()) form.set("index", indexName());
  if (q.kind === "file") form.set("file", q.blob, q.name);
  if (q.kind === "window") form.set("window_id", q.id);
  if (q.kind === "text") form.set("text", q.text);
  try {
    const { body } = await api("/api/locate", form);
    drawStrip(el, body, player);
  } catch (e) { showError(e.message); }
}

function drawStrip(el, loc, player) {
  const wrap = $(".strip-wrap", el);
  wrap.hidden = false;
  const canvas = $(".strip", el);
  const ctx = canvas.getContext("2d");
  const { start_s, end_s, score } = loc.curve;
  const dur = loc.duration_s || (end_s.length ? end_s[end_s.length - 1] : 1);
  const lo = Math.min(...score), hi = Math.max(...score);
  const w = canvas.width, h = canvas.height;
  ctx.clearRect(0, 0, w, h);
  ctx.fillStyle = "rgba(94,234,212,0.18)";
  for (const ev of loc.events) ctx.fillRect(ev.start_s / dur * w, 0, (ev.end_s - ev.start_s) / dur * w, h);
  ctx.strokeStyle = "#5eead4";
  ctx.lineWidth = 1.5;
  ctx.beginPath();
  score.forEach((s, i) => {
    const x = ((start_s[i] + end_s[i]) / 2) / dur * w;
    const y = h - 3 - (hi > lo ? (s - lo) / (hi - lo) : 0.5) * (h - 6);
    if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
  });
  ctx.stroke();
  canvas.onclick = (ev) => {
    const r = canvas.getBoundingClientRect();
    playSpan(player, (ev.clientX - r.left) / r.width * dur, null);
  };
}

function activateTab(name) {
  for (const t of document.querySelectorAll(".tab")) t.classList.toggle("active", t.dataset.tab === name);
  for (const id of ["results", "classify", "suggest"]) $(`#${id}`).hidden = id !== name;
}

// -- classify --------------------------------------------------------------------------------

async function classify() {
  const q = state.query;
  const out = $("#classify-out");
  if (!q || q.kind === "text") {
    out.innerHTML = '<p class="muted empty">Classify needs an audio query (upload, record, or “more like this”).</p>';
    return;
  }
  const form = new FormData();
  form.set("k", $("#k").value || "10");
  form.set("label_column", $("#label-column").value || "label");
  if (indexName()) form.set("index", indexName());
  for (const w of whereClauses()) form.append("where", w);
  if (q.kind === "file") form.set("file", q.blob, q.name); else form.set("file_id", q.fileId);
  out.innerHTML = '<p class="muted">voting…</p>';
  try {
    const { body } = await api("/api/classify", form);
    const row = body[0];
    if (row.error) throw new Error(row.error);
    const votes = Object.entries(row.votes).sort((a, b) => b[1] - a[1]);
    const top = votes.length ? votes[0][1] : 1;
    out.innerHTML = "";
    const p = document.createElement("div");
    p.className = "predicted";
    p.textContent = `${row.predicted} (confidence ${fmt(row.confidence, 3)})`;
    out.appendChild(p);
    out.appendChild(table(["label", "vote", "share", ""], votes.map(([lab, v]) => [
      lab, fmt(v, 3), fmt(row.scores[lab], 3), bar(v / top)])));
    const h = document.createElement("div");
    h.className = "muted";
    h.textContent = "neighbours that voted";
    out.appendChild(h);
    out.appendChild(table(["path", "similarity", $("#label-column").value], row.neighbours.map(
      ([path, sim, lab]) => [path, fmt(sim, 4), String(lab)])));
  } catch (e) {
    out.innerHTML = "";
    showError(e.message);
  }
}

function bar(share) {
  const s = document.createElement("span");
  s.className = "bar";
  s.style.width = `${Math.round(share * 120)}px`;
  return s;
}

function table(head, rows) {
  const t = document.createElement("table");
  t.className = "votes";
  const tr = t.insertRow();
  for (const c of head) { const th = document.createElement("th"); th.textContent = c; tr.appendChild(th); }
  for (const r of rows) {
    const row = t.insertRow();
    for (const c of r) { const td = row.insertCell(); if (c instanceof Node) td.appendChild(c); else td.textContent = c; }
  }
  return t;
}

// -- input: drop, choose, record, text ----------------------------------------------------------

function useFile(f) { if (f) run({ kind: "file", blob: f, name: f.name }); }

function wireInputs() {
  const drop = $("#drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    useFile(e.dataTransfer.files[0]);
  });
  $("#file").addEventListener("change", (e) => useFile(e.target.files[0]));
  $("#text-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const t = $("#text").value.trim();
    if (t) run({ kind: "text", text: t, name: t });
  });
  for (const id of ["#k", "#windows", "#where"]) $(id).addEventListener("change", rerun);
  $("#index").addEventListener("change", async () => {
    await loadInfo().catch((e) => showError(e.message));
    targetChanged();
    rerun();
  });
  $("#label-column").addEventListener("change", classify);
  for (const tab of document.querySelectorAll(".tab")) {
    tab.addEventListener("click", () => {
      activateTab(tab.dataset.tab);
      if (tab.dataset.tab === "classify") classify();
    });
  }
  const box = $("#target");
  box.value = localStorage.getItem("retrieve.target") || "";
  box.addEventListener("change", targetChanged);
  box.addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); box.blur(); } });
  $("#train").addEventListener("click", trainAndSuggest);
  wireRecorder();
}

function wireRecorder() {
  const btn = $("#record");
  if (!navigator.mediaDevices || !window.MediaRecorder) {
    btn.disabled = true;
    btn.title = "this browser (or a page not served from localhost or https) cannot record";
    return;
  }
  let rec = null;
  btn.addEventListener("click", async () => {
    if (rec) { rec.stop(); return; }
    try {
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
      const chunks = [];
      rec = new MediaRecorder(stream);
      rec.ondataavailable = (e) => chunks.push(e.data);
      rec.onstop = () => {
        stream.getTracks().forEach((t) => t.stop());
        btn.classList.remove("on");
        btn.textContent = "● record";
        $("#record-state").textContent = "";
        const type = rec.mimeType || "audio/webm";
        const ext = type.includes("ogg") ? "ogg" : type.includes("mp4") ? "m4a" : "webm";
        rec = null;
        useFile(new File(chunks, `recording.${ext}`, { type }));
      };
      rec.start();
      btn.classList.add("on");
      btn.textContent = "■ stop";
      $("#record-state").textContent = "recording…";
    } catch (e) {
      rec = null;
      showError(`cannot record: ${e.message}`);
    }
  });
}

// -- start -------------------------------------------------------------------------------------

if (new URLSearchParams(location.search).has("token")) history.replaceState(null, "", location.pathname);
wireInputs();
loadInfo().then(loadCounts).catch((e) => showError(e.message));
