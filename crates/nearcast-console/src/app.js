// Nearcast console: one page over the admin API of the same origin.
//
// Every value from the API reaches the page through textContent or attributes (the `h`
// helper), never as HTML. What a caller may do comes from GET /v1/admin/me; buttons that
// write are disabled for a viewer, and the API refuses such calls anyway (403).

const $ = (sel) => document.querySelector(sel);
const $$ = (sel) => Array.from(document.querySelectorAll(sel));
const KEY = "nearcast.key";
const TILES = "nearcast.tiles";
const OSM = {
  url: "https://tile.openstreetmap.org/{z}/{x}/{y}.png",
  attribution: "© OpenStreetMap contributors",
};

/** An element with attributes and children (strings become text nodes). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function toast(text) {
  const t = $("#toast");
  t.textContent = text;
  t.classList.add("show");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => t.classList.remove("show"), 2500);
}

class ApiError extends Error {
  constructor(status, data) {
    const e = data && data.error;
    super(e ? `${e.field ? e.field + ": " : ""}${e.reason || e.code}` : `HTTP ${status}`);
    this.status = status;
    this.data = data;
  }
}

/** One call to the API: JSON in and out, or a raw body with its type. */
async function api(method, path, body, contentType) {
  const headers = {};
  const key = sessionStorage.getItem(KEY);
  if (key) headers.Authorization = `Bearer ${key}`;
  let payload;
  if (body !== undefined) {
    if (contentType) {
      headers["Content-Type"] = contentType;
      payload = body;
    } else {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(body);
    }
  }
  const r = await fetch(path, { method, headers, body: payload });
  const text = await r.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = { error: { code: "not_json", reason: text.slice(0, 200) } };
  }
  if (!r.ok) throw new ApiError(r.status, data);
  return data;
}

function showError(sel, err, prefix = "") {
  $(sel).textContent = err ? prefix + (err.message || String(err)) : "";
}

const pct = (x) => (x === null || x === undefined ? "–" : `${(100 * x).toFixed(1)} %`);
const num = (x) => (x === null || x === undefined ? "–" : String(x));
const when = (t) => (t ? new Date(t).toLocaleString() : "–");
function reasonText(r) {
  if (!r) return "";
  if (typeof r === "string") return r;
  // A reason's `detail` already says it in words ("capped: 2 min since last push").
  if (r.detail) return r.detail;
  const { code, ...rest } = r;
  const more = Object.entries(rest)
    .map(([k, v]) => `${k} ${typeof v === "object" ? JSON.stringify(v) : v}`)
    .join(", ");
  return more ? `${code} (${more})` : code;
}
const clock = (t) => new Date(t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });

// ---------------------------------------------------------------- who is signed in

let me = null;

async function signIn() {
  try {
    me = await api("GET", "/v1/admin/me");
  } catch (e) {
    if (e.status === 401) {
      me = null;
      $("#app").hidden = true;
      $("#sign-in").hidden = false;
      $("#sign-out").hidden = true;
      $("#who").textContent = "";
      if (sessionStorage.getItem(KEY)) showError("#sign-in-error", e);
      $("#key").focus();
      return;
    }
    throw e;
  }
  $("#sign-in").hidden = true;
  $("#app").hidden = false;
  $("#sign-out").hidden = !sessionStorage.getItem(KEY);
  $("#who").replaceChildren("Signed in as ", h("strong", {}, me.name), ` (${me.role})`,
    me.can.edit ? "" : ": you can look at everything and change nothing");
  document.body.dataset.role = me.role;
  applyRole();
  startApp();
}

/** Buttons that write are off for a viewer; the People lookup is for admins. */
function applyRole() {
  const readOnly = me && !me.can.edit;
  for (const b of $$(".writes")) {
    b.disabled = readOnly;
    b.title = readOnly ? `Your role (${me.role}) can read but not change` : "";
  }
  for (const b of $$(".admin-only")) {
    b.disabled = !(me && me.can.admin);
    b.title = b.disabled ? "Only an admin may do this: it concerns people" : "";
  }
}

$("#sign-in-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  sessionStorage.setItem(KEY, $("#key").value.trim());
  $("#key").value = "";
  showError("#sign-in-error", null);
  await signIn();
});
$("#sign-out").addEventListener("click", () => {
  sessionStorage.removeItem(KEY);
  location.reload();
});

// ---------------------------------------------------------------- tabs

const tabs = $$("[role=tab]");
function selectTab(tab, focus = true) {
  for (const t of tabs) {
    const on = t === tab;
    t.setAttribute("aria-selected", on ? "true" : "false");
    t.tabIndex = on ? 0 : -1;
    $(`#${t.getAttribute("aria-controls")}`).hidden = !on;
  }
  if (focus) tab.focus();
  const name = tab.id.slice(4);
  history.replaceState(null, "", `#${name}`);
  onTab[name]?.();
}
for (const t of tabs) {
  t.addEventListener("click", () => selectTab(t));
  t.addEventListener("keydown", (ev) => {
    const i = tabs.indexOf(t);
    const next = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: tabs.length - 1 }[ev.key];
    if (next === undefined) return;
    ev.preventDefault();
    selectTab(tabs[(next + tabs.length) % tabs.length]);
  });
}
const onTab = {
  campaigns: () => loadCampaigns(),
  results: () => loadCampaigns(),
  audit: () => loadAudit(true),
  people: () => loadOffers(),
  webhooks: () => loadDeadLetters(),
};

// ---------------------------------------------------------------- the map

let map;
let tileLayer;
let fenceLayer;
let draftLayer;
let walkLayer;
const stores = new Map();
let mapMode = null; // "store" | "walk" | null

function setTiles() {
  const saved = JSON.parse(localStorage.getItem(TILES) || "null") || OSM;
  $("#tiles-url").value = saved.url;
  $("#tiles-attribution").value = saved.attribution;
  if (tileLayer) tileLayer.remove();
  tileLayer = null;
  if (saved.url && saved.url !== "none") {
    tileLayer = L.tileLayer(saved.url, { maxZoom: 19, attribution: saved.attribution }).addTo(map);
  }
}

function initMap() {
  map = L.map("map", { zoomControl: true }).setView([60.1699, 24.9384], 15);
  fenceLayer = L.layerGroup().addTo(map);
  draftLayer = L.layerGroup().addTo(map);
  walkLayer = L.layerGroup().addTo(map);
  setTiles();
  // For embedding pages and the browser test: the map and what is drawn on it.
  window.nearcastConsole = { map, stores };
  map.on("moveend", () => loadFences());
  map.on("click", (ev) => onMapClick(ev.latlng));
  $("#map").addEventListener("keydown", (ev) => {
    // Keyboard users add a point at the map's centre with Enter while drawing.
    if (ev.key === "Enter" && mapMode) onMapClick(map.getCenter());
  });
}

function fenceShape(store, style) {
  const f = store.fence;
  if (f.type === "circle") return L.circle([f.lat, f.lon], { radius: f.radius_m, ...style });
  const g = f.geometry;
  const rings = g.type === "MultiPolygon" ? g.coordinates : [g.coordinates];
  return L.polygon(rings.map((poly) => poly.map((ring) => ring.map(([lon, lat]) => [lat, lon]))), style);
}

let fenceSeq = 0;
/** Most fences drawn one by one: beyond this many in view, the map shows clusters. */
const MAX_DRAWN = 2000;
async function loadFences() {
  const seq = ++fenceSeq;
  const b = map.getBounds();
  const bbox = [
    Math.max(-180, b.getWest()), Math.max(-90, b.getSouth()),
    Math.min(180, b.getEast()), Math.min(90, b.getNorth()),
  ].map((x) => x.toFixed(6)).join(",");
  let clusters;
  try {
    clusters = await api("GET", `/v1/admin/store-clusters?bbox=${bbox}&grid=12`);
    if (seq !== fenceSeq) return; // the map moved on
    if (clusters.total > MAX_DRAWN) {
      drawClusters(clusters);
      return;
    }
  } catch (e) {
    $("#fence-count").textContent = `Fences could not be loaded: ${e.message}`;
    return;
  }
  const found = [];
  let after = null;
  try {
    for (let page = 0; page < 6; page++) {
      const q = `/v1/admin/stores?bbox=${bbox}&limit=500${after ? `&after=${encodeURIComponent(after)}` : ""}`;
      const r = await api("GET", q);
      if (seq !== fenceSeq) return;
      found.push(...r.stores);
      after = r.next_after;
      if (!after) break;
    }
  } catch (e) {
    $("#fence-count").textContent = `Fences could not be loaded: ${e.message}`;
    return;
  }
  fenceLayer.clearLayers();
  for (const s of found) {
    stores.set(s.id, s);
    const shape = fenceShape(s, { color: "#0b5cad", weight: 1.5, fillOpacity: 0.08 });
    shape.bindTooltip(`${s.name} (${s.category})`);
    shape.on("click", (ev) => {
      if (mapMode) return; // drawing: the map's own click handles it
      L.DomEvent.stopPropagation(ev);
      editStore(s);
    });
    shape.addTo(fenceLayer);
  }
  $("#fence-count").textContent = `${found.length} fence${found.length === 1 ? "" : "s"} in view`;
  $("#map").dataset.fences = String(found.length);
  $("#map").dataset.clusters = "0";
  $("#map").dataset.clustered = "0";
}

/** The disc's diameter for a cluster of `count` stores, in pixels. */
const discSize = (count) => Math.round(28 + 10 * Math.log10(count));

/** The server's grid cells, with those whose discs would overlap on screen merged (largest
 * first): counts added, centres weighted by count, boxes joined. */
function mergeOverlapping(cells) {
  const out = [];
  for (const k of [...cells].sort((a, b) => b.count - a.count)) {
    const p = map.latLngToContainerPoint([k.lat, k.lon]);
    const near = out.find((o) => p.distanceTo(o.p) < (discSize(o.count) + discSize(k.count)) / 2);
    if (!near) {
      out.push({ ...k, bbox: [...k.bbox], p });
      continue;
    }
    const n = near.count + k.count;
    near.lat = (near.lat * near.count + k.lat * k.count) / n;
    near.lon = (near.lon * near.count + k.lon * k.count) / n;
    near.count = n;
    near.bbox = [Math.min(near.bbox[0], k.bbox[0]), Math.min(near.bbox[1], k.bbox[1]), Math.max(near.bbox[2], k.bbox[2]), Math.max(near.bbox[3], k.bbox[3])];
    near.p = map.latLngToContainerPoint([near.lat, near.lon]);
  }
  return out;
}

/** Too many fences in view to draw: one marker per cluster, with its count; a click (or
 * Enter on the focused marker) zooms to the cluster's stores. */
function drawClusters(c) {
  fenceLayer.clearLayers();
  for (const k of mergeOverlapping(c.clusters)) {
    const label = `${k.count} store${k.count === 1 ? "" : "s"}`;
    const size = discSize(k.count);
    const icon = L.divIcon({
      className: "cluster",
      html: `<span>${k.count}</span>`,
      iconSize: [size, size],
    });
    const m = L.marker([k.lat, k.lon], { icon, title: label, alt: label, keyboard: true });
    m.on("click", () => {
      const [w, s, e, n] = k.bbox;
      if (k.count === 1 || (w === e && s === n)) map.setView([k.lat, k.lon], Math.max(map.getZoom() + 3, 16));
      else map.fitBounds([[s, w], [n, e]], { padding: [24, 24] });
    });
    m.addTo(fenceLayer);
  }
  const drawn = fenceLayer.getLayers().length;
  $("#fence-count").textContent =
    `${c.total} fences in view, in ${drawn} clusters: zoom in, or click a cluster, to see the fences`;
  $("#map").dataset.fences = "0";
  $("#map").dataset.clusters = String(drawn);
  $("#map").dataset.clustered = String(c.total);
}

function onMapClick(latlng) {
  if (mapMode === "store") {
    const shape = document.querySelector("input[name=shape]:checked").value;
    if (shape === "circle") {
      $("#store-lat").value = latlng.lat.toFixed(6);
      $("#store-lon").value = latlng.lng.toFixed(6);
    } else {
      const t = $("#store-points");
      t.value = (t.value.trim() ? t.value.trim() + "\n" : "") + `${latlng.lng.toFixed(6)}, ${latlng.lat.toFixed(6)}`;
    }
    drawDraft();
  } else if (mapMode === "walk") {
    walk.push([latlng.lat, latlng.lng]);
    drawWalk();
  }
}

function setMode(mode) {
  mapMode = mapMode === mode ? null : mode;
  $("#store-draw").setAttribute("aria-pressed", String(mapMode === "store"));
  $("#sim-draw").setAttribute("aria-pressed", String(mapMode === "walk"));
  $("#map").style.cursor = mapMode ? "crosshair" : "";
}

$("#tiles-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  localStorage.setItem(TILES, JSON.stringify({ url: $("#tiles-url").value.trim(), attribution: $("#tiles-attribution").value.trim() }));
  setTiles();
});

// ---------------------------------------------------------------- store editor

function shapeKind() {
  return document.querySelector("input[name=shape]:checked").value;
}
function showShapeFields() {
  const circle = shapeKind() === "circle";
  $("#circle-fields").hidden = !circle;
  $("#polygon-fields").hidden = circle;
  drawDraft();
}
for (const r of $$("input[name=shape]")) r.addEventListener("change", showShapeFields);

function numberOrText(v) {
  const t = v.trim();
  return t !== "" && !Number.isNaN(Number(t)) ? Number(t) : t;
}

/** The store the form describes, as the API takes it (values as typed: the API checks). */
function storeFromForm() {
  const s = {
    id: $("#store-id").value.trim(),
    name: $("#store-name").value.trim(),
    category: $("#store-category").value.trim(),
    time_zone: $("#store-tz").value.trim(),
  };
  if (shapeKind() === "circle") {
    s.fence = { type: "circle", lat: numberOrText($("#store-lat").value), lon: numberOrText($("#store-lon").value), radius_m: numberOrText($("#store-radius").value) };
  } else {
    const ring = $("#store-points").value.split("\n").map((l) => l.trim()).filter(Boolean)
      .map((l) => l.split(/[,\s]+/).map(Number));
    if (ring.length && ring[0].join() !== ring[ring.length - 1].join()) ring.push(ring[0]);
    s.fence = { type: "polygon", geometry: { type: "Polygon", coordinates: [ring] } };
  }
  return s;
}

function drawDraft() {
  draftLayer.clearLayers();
  try {
    const s = storeFromForm();
    if (s.fence.type === "circle" && typeof s.fence.lat === "number" && typeof s.fence.lon === "number") {
      fenceShape(s, { color: "#f4a100", weight: 3, dashArray: "6 4", fillOpacity: 0.1 }).addTo(draftLayer);
    } else if (s.fence.type === "polygon" && s.fence.geometry.coordinates[0].length >= 2) {
      fenceShape(s, { color: "#f4a100", weight: 3, dashArray: "6 4", fillOpacity: 0.1 }).addTo(draftLayer);
    }
  } catch {
    /* a half-typed shape draws nothing */
  }
}
for (const id of ["#store-lat", "#store-lon", "#store-radius", "#store-points"]) $(id).addEventListener("input", drawDraft);

function editStore(s) {
  $("#store-editor").open = true;
  selectTab($("#tab-stores"), false);
  $("#store-id").value = s.id;
  $("#store-name").value = s.name || "";
  $("#store-category").value = s.category || "";
  $("#store-tz").value = s.time_zone || "";
  const circle = s.fence.type === "circle";
  document.querySelector(`input[name=shape][value=${circle ? "circle" : "polygon"}]`).checked = true;
  if (circle) {
    $("#store-lat").value = s.fence.lat;
    $("#store-lon").value = s.fence.lon;
    $("#store-radius").value = s.fence.radius_m;
  } else {
    const g = s.fence.geometry;
    const ring = (g.type === "MultiPolygon" ? g.coordinates[0][0] : g.coordinates[0]).slice(0, -1);
    $("#store-points").value = ring.map(([lon, lat]) => `${lon}, ${lat}`).join("\n");
  }
  showError("#store-error", null);
  $("#store-ok").textContent = "";
  showShapeFields();
}

$("#store-draw").addEventListener("click", () => setMode("store"));
$("#store-new").addEventListener("click", () => {
  $("#store-form").reset();
  $("#store-points").value = "";
  draftLayer.clearLayers();
  showShapeFields();
});
$("#store-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  showError("#store-error", null);
  $("#store-ok").textContent = "";
  const s = storeFromForm();
  if (!s.id) return showError("#store-error", new Error("id: is missing"));
  try {
    await api("PUT", `/v1/admin/stores/${encodeURIComponent(s.id)}`, s);
    $("#store-ok").textContent = `Saved ${s.id}.`;
    if (mapMode === "store") setMode("store");
    draftLayer.clearLayers();
    await loadFences();
  } catch (e) {
    showError("#store-error", e);
  }
});
$("#store-delete").addEventListener("click", async () => {
  const id = $("#store-id").value.trim();
  if (!id || !confirm(`Delete the store ${id}?`)) return;
  try {
    await api("DELETE", `/v1/admin/stores/${encodeURIComponent(id)}`);
    $("#store-ok").textContent = `Deleted ${id}.`;
    stores.delete(id);
    await loadFences();
  } catch (e) {
    showError("#store-error", e);
  }
});

// ---------------------------------------------------------------- import

/** The records of a CSV text (RFC 4180: quoted fields may hold commas and line breaks). */
function csvRecords(text) {
  const out = [];
  let start = 0;
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') quoted = !quoted;
    else if (c === "\n" && !quoted) {
      out.push(text.slice(start, i).replace(/\r$/, ""));
      start = i + 1;
    }
  }
  if (start < text.length) out.push(text.slice(start).replace(/\r$/, ""));
  return out;
}

let importFile = null; // {name, text, format}

async function postImport(text, format, dryRun) {
  const tz = encodeURIComponent($("#import-tz").value.trim());
  const type = format === "geojson" ? "application/geo+json" : "text/csv";
  return api("POST", `/v1/admin/stores/import?dry_run=${dryRun}&time_zone=${tz}&format=${format}`, text, type);
}

/** The file without the rows the report rejected (rows count from 1, the first data row). */
function withoutRows(file, rows) {
  const drop = new Set(rows);
  if (file.format === "geojson") {
    const fc = JSON.parse(file.text);
    fc.features = fc.features.filter((_, i) => !drop.has(i + 1));
    return JSON.stringify(fc);
  }
  const recs = csvRecords(file.text);
  const header = recs[0];
  const data = recs.slice(1).filter((r) => r.trim() !== "");
  return [header, ...data.filter((_, i) => !drop.has(i + 1))].join("\n") + "\n";
}

function rowsTable(caption, rows) {
  return h("div", { class: "scroll" }, h("table", { class: "rows" },
    h("caption", {}, caption),
    h("thead", {}, h("tr", {}, ["Row", "Id", "Field", "Reason"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, h("td", { class: "num" }, r.row), h("td", {}, r.id ?? ""), h("td", {}, r.field), h("td", {}, r.reason))))));
}

function showImportReport(rep, rejected, applied) {
  const box = $("#import-report");
  const valid = rep ? rep.valid_rows : null;
  const parts = [];
  if (applied) {
    parts.push(h("p", { class: "ok", id: "import-applied" },
      `Imported: ${rep.created} created, ${rep.updated} updated, ${rep.unchanged} unchanged.`));
  } else if (rejected.length) {
    parts.push(h("p", { class: "error", id: "import-summary" },
      `${rejected.length} row${rejected.length === 1 ? "" : "s"} rejected; nothing is written until you import.`));
  } else if (rep) {
    parts.push(h("p", { id: "import-summary" }, `All ${rep.rows} rows are valid (${rep.created} new, ${rep.updated} changed, ${rep.unchanged} unchanged).`));
  }
  if (rejected.length) parts.push(rowsTable("Rejected rows", rejected));
  if (rep && rep.warnings && rep.warnings.length) {
    parts.push(h("details", { class: "warnings" },
      h("summary", {}, `${rep.warnings.length} warning${rep.warnings.length === 1 ? "" : "s"}: imported with a field left out`),
      rowsTable("Warnings", rep.warnings)));
  }
  if (!applied && importFile) {
    const rows = rejected.map((r) => r.row);
    const label = rejected.length ? `Import the other rows, without the ${rejected.length} rejected` : "Import";
    parts.push(h("button", {
      type: "button", id: "import-apply", class: "writes",
      onclick: async () => {
        try {
          const text = rejected.length ? withoutRows(importFile, rows) : importFile.text;
          const r = await postImport(text, importFile.format, false);
          showImportReport(r, [], true);
          await loadFences();
        } catch (e) {
          showImportFailure(e);
        }
      },
    }, label));
  }
  box.replaceChildren(...parts);
  if (valid !== null) box.dataset.valid = String(valid);
  applyRole();
}

function showImportFailure(e) {
  const err = e.data && e.data.error;
  if (err && err.code === "invalid_rows" && Array.isArray(err.rejected)) {
    showImportReport(null, err.rejected, false);
  } else {
    $("#import-report").replaceChildren(h("p", { class: "error", role: "alert" }, e.message));
  }
}

$("#import-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = $("#import-file").files[0];
  if (!f) return;
  const text = await f.text();
  const format = /\.(geo)?json$/i.test(f.name) || text.trimStart().startsWith("{") ? "geojson" : "csv";
  importFile = { name: f.name, text, format };
  try {
    const r = await postImport(text, format, true);
    showImportReport(r, r.rejected || [], false);
  } catch (e) {
    showImportFailure(e);
  }
});

// ---------------------------------------------------------------- campaigns

let campaigns = [];
async function loadCampaigns() {
  try {
    campaigns = (await api("GET", "/v1/admin/campaigns")).campaigns;
  } catch (e) {
    showError("#campaign-status-error", e);
    return;
  }
  const body = $("#campaign-list tbody");
  body.replaceChildren(...campaigns.map((c) => {
    const actions = [];
    const to = { draft: ["active"], active: ["paused", "ended"], paused: ["active", "ended"], ended: [] }[c.status] || [];
    for (const s of to) {
      const label = { active: "Activate", paused: "Pause", ended: "End" }[s];
      actions.push(h("button", {
        type: "button", class: `small writes${s === "ended" ? " danger" : ""}`, "aria-label": `${label} ${c.name}`,
        onclick: () => setStatus(c, s),
      }, label));
    }
    return h("tr", { "data-id": c.id },
      h("td", {}, h("strong", {}, c.name), h("br"), h("span", { class: "muted" }, c.id)),
      h("td", {}, h("span", { class: `badge ${c.status}` }, c.status)),
      h("td", { class: "num" }, `${c.sent ?? 0} / ${c.budget ?? "∞"}`),
      h("td", { class: "num" }, c.coupons ? String(c.coupons.total - c.coupons.issued) : "–"),
      h("td", {}, actions));
  }));
  const sel = $("#results-campaign");
  const was = sel.value;
  sel.replaceChildren(...campaigns.map((c) => h("option", { value: c.id }, c.name)));
  if (campaigns.some((c) => c.id === was)) sel.value = was;
  applyRole();
}

async function setStatus(c, status) {
  showError("#campaign-status-error", null);
  if (status === "ended" && !confirm(`End ${c.name}? An ended campaign cannot run again.`)) return;
  try {
    await api("POST", `/v1/admin/campaigns/${encodeURIComponent(c.id)}/status`, { status });
    toast(`${c.name}: ${status}`);
    await loadCampaigns();
  } catch (e) {
    showError("#campaign-status-error", e, `${c.name}: `);
  }
}

const checked = (name) => $$(`input[name=${name}]:checked`).map((i) => i.value);

function campaignFromForm() {
  const content = {};
  for (const l of ["fi", "en"]) {
    const title = $(`#cmp-title-${l}`).value;
    const body = $(`#cmp-body-${l}`).value;
    if (title || body) content[l] = { title, body };
  }
  const variant = { id: "a", weight: 1, content, default_locale: $("#cmp-default-locale").value };
  const link = $("#cmp-deep-link").value.trim();
  if (link) variant.deep_link = link;
  const codes = $("#cmp-coupons").value.split("\n").map((c) => c.trim()).filter(Boolean);
  return {
    campaign: {
      id: $("#cmp-id").value.trim(),
      name: $("#cmp-name").value.trim(),
      status: "draft",
      holdout: numberOrText($("#cmp-holdout").value) / 100,
      budget: numberOrText($("#cmp-budget").value),
      per_user: { per_day: numberOrText($("#cmp-per-day").value), total: 100 },
      variants: [variant],
      conversion: { event: $("#cmp-conversion").value, within_hours: 72 },
      coupon_pool: codes.length > 0,
    },
    codes,
  };
}

function offerFromForm(c) {
  const trig = $("#off-trigger").value;
  const weather = checked("weather");
  const def = c.variants[0].content[c.variants[0].default_locale] || Object.values(c.variants[0].content)[0] || {};
  const o = {
    id: $("#off-id").value.trim() || `${c.id}-offer`,
    campaign_id: c.id,
    title: def.title || c.name,
    body: def.body || c.name,
    category: $("#off-category").value.trim(),
    store_categories: $("#off-store-categories").value.split(",").map((s) => s.trim()).filter(Boolean),
    dayparts: checked("daypart"),
    trigger: trig === "dwell" ? { type: "dwell", minutes: 5 } : { type: trig },
    threshold: numberOrText($("#off-threshold").value),
  };
  if (weather.length) o.weather = { conditions: weather };
  return o;
}

$("#campaign-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  showError("#campaign-error", null);
  $("#campaign-ok").textContent = "";
  const { campaign, codes } = campaignFromForm();
  if (!campaign.id) return showError("#campaign-error", new Error("id: is missing"));
  const offer = offerFromForm(campaign);
  let step = "campaign: ";
  try {
    await api("PUT", `/v1/admin/campaigns/${encodeURIComponent(campaign.id)}`, campaign);
    step = "offer: ";
    await api("PUT", `/v1/admin/offers/${encodeURIComponent(offer.id)}`, offer);
    if (codes.length) {
      step = "coupons: ";
      await api("POST", `/v1/admin/campaigns/${encodeURIComponent(campaign.id)}/coupons`, "code\n" + codes.join("\n") + "\n", "text/csv");
    }
    $("#campaign-ok").textContent = `Saved ${campaign.name} as a draft with the offer ${offer.id}${codes.length ? ` and ${codes.length} codes` : ""}.`;
    await loadCampaigns();
  } catch (e) {
    const err = e.data && e.data.error;
    if (err && Array.isArray(err.rejected)) {
      showError("#campaign-error", new Error(err.rejected.map((r) => `line ${r.row}: ${r.reason}`).join("; ")), step);
    } else {
      showError("#campaign-error", e, step);
    }
  }
});

function phone(kind, p) {
  const title = kind === "ios" ? p.payloads.apns.aps.alert.title : p.payloads.fcm.notification.title;
  const body = kind === "ios" ? p.payloads.apns.aps.alert.body : p.payloads.fcm.notification.body;
  return h("div", { class: "phone", "data-platform": kind },
    h("h4", {}, kind === "ios" ? `iOS (APNs, priority ${p.apns_headers["apns-priority"]})` : `Android (FCM, ${p.payloads.fcm.priority})`),
    h("div", { class: `notif ${kind === "ios" ? "ios" : "android"}` },
      h("div", { class: "app" }, "Your app · now"),
      h("div", { class: "t" }, title),
      h("div", { class: "b" }, body)),
    h("p", { class: "muted" }, `${kind === "ios" ? p.bytes.apns : p.bytes.fcm} of ${p.max_bytes} bytes${p.cut ? ", text cut to fit" : ""}`),
    h("details", {}, h("summary", {}, "Payload"), h("pre", {}, JSON.stringify(kind === "ios" ? p.payloads.apns : p.payloads.fcm, null, 2))));
}

$("#cmp-preview").addEventListener("click", async () => {
  showError("#campaign-error", null);
  const id = $("#cmp-id").value.trim() || ($("#campaign-list tbody tr") || {}).dataset?.id;
  if (!id) return showError("#campaign-error", new Error("id: save a campaign first"));
  try {
    const r = await api("POST", `/v1/admin/campaigns/${encodeURIComponent(id)}/preview`, { locale: $("#preview-locale").value });
    $("#preview").replaceChildren(h("h3", {}, `Preview of ${id}`),
      ...r.previews.map((p) => h("section", { class: "variant-preview" },
        h("h3", {}, `Variant ${p.variant_id} (${p.locale})`),
        h("div", { class: "phones" }, phone("ios", p), phone("android", p)))));
  } catch (e) {
    showError("#campaign-error", e, "preview: ");
  }
});

// ---------------------------------------------------------------- simulator

const walk = [];
function drawWalk() {
  walkLayer.clearLayers();
  if (walk.length) {
    L.polyline(walk, { color: "#a4161a", weight: 3 }).addTo(walkLayer);
    walk.forEach((p, i) => L.circleMarker(p, { radius: 4, color: "#a4161a" }).bindTooltip(`${i + 1}`).addTo(walkLayer));
  }
  $("#sim-points").textContent = `${walk.length} point${walk.length === 1 ? "" : "s"}`;
}
$("#sim-draw").addEventListener("click", () => setMode("walk"));
$("#sim-clear").addEventListener("click", () => {
  walk.length = 0;
  drawWalk();
});

function localNowInput() {
  const d = new Date();
  d.setMinutes(d.getMinutes() - d.getTimezoneOffset());
  return d.toISOString().slice(0, 16);
}

$("#sim-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  showError("#sim-error", null);
  if (!walk.length) return showError("#sim-error", new Error("events: click at least one point of the walk on the map"));
  const start = $("#sim-start").value ? new Date($("#sim-start").value) : new Date();
  const step = Number($("#sim-step").value) || 2;
  const events = walk.map(([lat, lon], i) => ({
    type: "location", at: new Date(start.getTime() + i * step * 60000).toISOString(), lat, lon, accuracy_m: 10,
  }));
  const affinities = {};
  for (const part of $("#sim-affinities").value.split(",").map((s) => s.trim()).filter(Boolean)) {
    const [k, v] = part.split("=");
    affinities[k.trim()] = Number(v);
  }
  const body = {
    events,
    user: {
      consents: { push: $("#sim-push").checked, location: $("#sim-location").checked, personalisation: $("#sim-personalisation").checked },
      affinities,
    },
  };
  if ($("#sim-weather").value) body.weather = { condition: $("#sim-weather").value, temp_c: Number($("#sim-temp").value) };
  try {
    showSimulation(await api("POST", "/v1/admin/simulate", body));
  } catch (e) {
    showError("#sim-error", e);
  }
});

function storeName(id) {
  const s = id && stores.get(id);
  return s ? s.name : id || "";
}

/** Candidates best first: scored ones by score, then those a rule stopped before scoring. */
function ranked(candidates) {
  return [...candidates].sort((a, b) => (b.score ?? -1) - (a.score ?? -1));
}

function showSimulation(r) {
  const rows = [];
  r.decisions.forEach((d, i) => {
    rows.push(h("tr", { class: "decision" },
      h("td", { class: "num" }, i + 1),
      h("td", {}, d.context ? d.context.local_time.slice(11, 16) : clock(d.at)),
      h("td", {}, storeName(d.store_id)),
      h("td", {}, h("span", { class: `badge ${d.verdict}` }, d.verdict)),
      h("td", {}, d.offer_id || ""),
      h("td", { class: "num" }, d.score == null ? "" : d.score.toFixed(3)),
      h("td", {}, reasonText(d.reason))));
    if (d.candidates && d.candidates.length) {
      rows.push(h("tr", { class: "candidates" }, h("td"), h("td", { colspan: 6 },
        h("table", {},
          h("caption", { class: "sr-only" }, `Candidates of decision ${i + 1}`),
          h("thead", {}, h("tr", {}, ["Rank", "Offer", "Store", "Score", "Reason"].map((t) => h("th", { scope: "col" }, t)))),
          h("tbody", {}, ranked(d.candidates).map((c, k) => h("tr", { class: "candidate" },
            h("td", { class: "num" }, k + 1), h("td", {}, c.offer_id), h("td", {}, storeName(c.store_id)),
            h("td", { class: "num" }, c.score == null ? "–" : c.score.toFixed(3)),
            h("td", {}, c.reason ? reasonText(c.reason) : "eligible"))))))));
    }
  });
  const reasons = Object.entries(r.summary.not_sent_by_reason || {}).map(([k, v]) => `${k} ${v}`).join(", ");
  $("#sim-result").replaceChildren(
    h("p", { id: "sim-summary" }, `${r.summary.events} events: ${r.summary.sent} sent${reasons ? `; not sent: ${reasons}` : ""}.`),
    h("div", { class: "scroll" }, h("table", { id: "sim-table" },
      h("caption", { class: "sr-only" }, "Decisions of the walk, with their ranked candidates"),
      h("thead", {}, h("tr", {}, ["#", "Time", "Store", "Verdict", "Offer", "Score", "Reason"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, rows))));
}

// ---------------------------------------------------------------- results

function money(arm) {
  return Object.entries(arm.revenue || {}).map(([c, m]) => `${m.sum.toFixed(2)} ${c}`).join(", ") || "–";
}

function armRow(name, a) {
  return h("tr", {}, h("th", { scope: "row" }, name), h("td", { class: "num" }, a.n), h("td", { class: "num" }, a.opened),
    h("td", { class: "num" }, a.visited), h("td", { class: "num" }, a.redeemed), h("td", { class: "num" }, a.purchased),
    h("td", { class: "num" }, money(a)));
}

const VERDICTS = { significant: "significant", not_significant: "not significant", too_small: "too few people to conclude" };

function liftRow(name, l, fmt = pct) {
  const d = l.difference;
  const ci = d ? `${fmt(d.low)} to ${fmt(d.high)}` : "–";
  const t = l.treated_rate !== undefined ? l.treated_rate : l.treated_mean;
  const c = l.held_out_rate !== undefined ? l.held_out_rate : l.held_out_mean;
  return h("tr", {}, h("th", { scope: "row" }, name), h("td", { class: "num" }, t == null ? "–" : fmt(t)), h("td", { class: "num" }, c == null ? "–" : fmt(c)),
    h("td", { class: "num" }, d ? fmt(d.difference) : "–"), h("td", { class: "num" }, ci),
    h("td", {}, h("span", { class: `badge ${l.verdict}` }, VERDICTS[l.verdict] || l.verdict)));
}

function resultBlock(title, r) {
  const revenue = Object.entries(r.revenue_lift || {}).map(([cur, l]) => liftRow(`Revenue per person (${cur})`, l, (x) => x.toFixed(2)));
  return h("section", { class: "result-block" },
    h("h3", {}, title),
    h("table", { class: "arms" }, h("caption", { class: "sr-only" }, `${title}: people per arm`),
      h("thead", {}, h("tr", {}, ["Arm", "People", "Opened", "Visited", "Redeemed", "Purchased", "Revenue"].map((t) => h("th", { scope: "col", class: t === "Arm" ? "" : "num" }, t)))),
      h("tbody", {}, armRow("Treated", r.treated), armRow("Held out", r.held_out), armRow("Global control", r.global_control))),
    h("table", { class: "lifts" }, h("caption", { class: "sr-only" }, `${title}: lift against the holdout`),
      h("thead", {}, h("tr", {}, ["Outcome", "Treated", "Held out", "Lift", "95 % interval", "Verdict"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, liftRow("Store visit", r.visit_lift), liftRow("Redemption", r.redemption_lift), liftRow("Purchase", r.purchase_lift), revenue)));
}

const svgEl = (svg, tag, attrs, text) => {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  svg.append(e);
  return e;
};

function legend(series) {
  return h("div", { class: "legend" }, series.map(([, c, name]) => h("span", {}, h("i", { style: `background:${c}` }), name)));
}

/** The daily chart: sends, opens, visits, redemptions and purchases per store's local day. */
function dailyChart(rows) {
  const series = [["sent", "#0b5cad", "sent"], ["opened", "#1a6b32", "opened"], ["visited", "#6a3d9a", "visited"],
    ["redeemed", "#a4161a", "redeemed"], ["purchased", "#8a6100", "purchased"]];
  const w = 560, hgt = 200, left = 34, bottom = 36;
  const max = Math.max(1, ...rows.flatMap((r) => series.map(([k]) => r.funnel[k])));
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${w} ${hgt}`);
  svg.setAttribute("class", "chart daily");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "Per day: " + rows.map((r) => `${r.key}: ${series.map(([k, , n]) => `${r.funnel[k]} ${n}`).join(", ")}`).join("; "));
  const plotH = hgt - bottom - 8;
  for (const f of max < 4 ? [0, 1] : [0, 0.5, 1]) {
    const y = 8 + plotH * (1 - f);
    svgEl(svg, "line", { x1: left, x2: w, y1: y, y2: y, stroke: "#c9d1d9" });
    svgEl(svg, "text", { x: 0, y: y + 4 }, String(Math.round(max * f)));
  }
  const groupW = (w - left) / Math.max(rows.length, 1);
  const barW = Math.max(2, Math.min(14, (groupW - 6) / series.length));
  rows.forEach((r, i) => {
    const x0 = left + i * groupW + (groupW - barW * series.length) / 2;
    series.forEach(([k, colour], j) => {
      const v = r.funnel[k];
      const bh = (plotH * v) / max;
      svgEl(svg, "rect", { x: x0 + j * barW, y: 8 + plotH - bh, width: barW - 1, height: Math.max(bh, 0.5), fill: colour });
    });
    if (rows.length <= 14 || i % Math.ceil(rows.length / 14) === 0) {
      svgEl(svg, "text", { x: left + i * groupW + groupW / 2, y: hgt - bottom + 16, "text-anchor": "middle" }, r.key.slice(5));
    }
  });
  return h("div", {}, legend(series), svg);
}

/** The funnel as bars, each with its count and share of the triggered. */
function funnelView(f) {
  const stages = [["Triggered", f.triggered], ["Eligible", f.eligible], ...Object.entries(f.suppressed).map(([k, v]) => [`Not sent: ${k.replaceAll("_", " ")}`, v]),
    ["Held out", f.held_out], ["Sent", f.sent], ["Opened", f.opened], ["Visited", f.visited], ["Redeemed", f.redeemed], ["Purchased", f.purchased]];
  const top = Math.max(1, f.triggered);
  return h("table", { class: "funnel" }, h("caption", { class: "sr-only" }, "Funnel"),
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Stage"), h("th", { scope: "col", class: "num" }, "Decisions"), h("th", { scope: "col" }, "Share of triggered"))),
    h("tbody", {}, stages.map(([name, n]) => h("tr", {},
      h("th", { scope: "row" }, name), h("td", { class: "num" }, n),
      h("td", {}, h("span", { class: "bar", style: `width:${Math.round((160 * n) / top)}px` }), ` ${pct(n / top)}`)))));
}

function storeTable(rows) {
  return h("div", { class: "scroll" }, h("table", { id: "results-stores" }, h("caption", { class: "sr-only" }, "Per store"),
    h("thead", {}, h("tr", {}, ["Store", "Triggered", "Sent", "Held out", "Opened", "Visited", "Redeemed", "Purchased"].map((t) => h("th", { scope: "col", class: t === "Store" ? "" : "num" }, t)))),
    h("tbody", {}, rows.map((r) => h("tr", {},
      h("th", { scope: "row" }, storeName(r.key) || r.key),
      ...[r.funnel.triggered, r.funnel.sent, r.funnel.held_out, r.funnel.opened, r.funnel.visited, r.funnel.redeemed, r.funnel.purchased].map((v) => h("td", { class: "num" }, v)))))));
}

$("#results-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  showError("#results-error", null);
  const id = $("#results-campaign").value;
  if (!id) return;
  $("#results").replaceChildren(h("p", { class: "muted" }, "Loading…"));
  const range = [["from", $("#results-from").value], ["to", $("#results-to").value]].filter(([, v]) => v).map(([k, v]) => `&${k}=${v}`).join("");
  const base = `/v1/admin/campaigns/${encodeURIComponent(id)}/results?`;
  try {
    const [byDay, byStore] = await Promise.all([api("GET", `${base}by=day${range}`), api("GET", `${base}by=store${range}`)]);
    const r = byDay;
    const parts = [h("p", { class: "muted" }, `Within ${r.window_hours} hours of each decision (the campaign's conversion window). Treated people were sent a push; held-out people were chosen by the same rules and sent nothing, so visits, purchases and revenue compare fairly.`),
      resultBlock("The whole campaign", r.results.all)];
    parts.push(h("h3", {}, "Per day"), (r.results.rows || []).length ? dailyChart(r.results.rows) : h("p", { class: "muted" }, "Nothing yet in this range."));
    parts.push(h("h3", {}, "Funnel"), funnelView(r.results.funnel));
    for (const [v, rv] of Object.entries(r.results.variants || {})) parts.push(resultBlock(`Variant ${v}`, rv));
    for (const [what, test] of [["visits", r.results.variants_visit_test], ["redemptions", r.results.variants_redemption_test], ["purchases", r.results.variants_purchase_test]]) {
      if (test) {
        parts.push(h("p", { class: "variant-test" }, `Variants compared on ${what}: chi-squared ${test.statistic.toFixed(2)} (${test.df} df), p = ${test.p_value.toFixed(3)}${test.valid ? "" : " (too few expected in a cell: not to be concluded from)"}.`));
      }
    }
    parts.push(h("h3", {}, "Per store"), storeTable(byStore.results.rows || []));
    $("#results").replaceChildren(...parts);
  } catch (e) {
    $("#results").replaceChildren();
    showError("#results-error", e);
  }
});

// ---------------------------------------------------------------- audit

let auditBefore = null;
async function loadAudit(first) {
  if (first) auditBefore = null;
  const q = `/v1/admin/audit?limit=50${auditBefore ? `&before=${encodeURIComponent(auditBefore)}` : ""}`;
  let r;
  try {
    r = await api("GET", q);
  } catch (e) {
    toast(e.message);
    return;
  }
  const rows = r.entries.map((e) => h("tr", {},
    h("td", {}, when(e.at)),
    h("td", {}, `${e.actor.name} (${e.actor.role})`),
    h("td", {}, e.action),
    h("td", {}, e.target || ""),
    h("td", {}, h("details", {}, h("summary", {}, "before / after"),
      h("pre", {}, JSON.stringify({ before: e.before ?? null, after: e.after ?? null }, null, 2))))));
  const body = $("#audit-list tbody");
  if (first) body.replaceChildren(...rows);
  else body.append(...rows);
  auditBefore = r.next_before || null;
  $("#audit-more").hidden = !auditBefore;
}
$("#audit-more").addEventListener("click", () => loadAudit(false));

// ---------------------------------------------------------------- people

async function loadOffers() {
  try {
    const r = await api("GET", "/v1/admin/offers");
    const offers = r.offers || r;
    const sel = $("#why-offer");
    const was = sel.value;
    sel.replaceChildren(h("option", { value: "" }, "any offer"), ...offers.map((o) => h("option", { value: o.id }, `${o.id}: ${o.title}`)));
    if (was) sel.value = was;
  } catch (e) {
    toast(e.message);
  }
}

$("#why-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  showError("#why-error", null);
  const user = $("#why-user").value.trim();
  const offer = $("#why-offer").value;
  try {
    const r = await api("GET", `/v1/admin/users/${encodeURIComponent(user)}/decisions?limit=50${offer ? `&offer_id=${encodeURIComponent(offer)}` : ""}`);
    const counts = Object.entries(r.not_sent_by_reason || {});
    $("#why").replaceChildren(
      h("p", { id: "why-summary" }, h("strong", {}, r.summary)),
      r.blocking_now && r.blocking_now.length
        ? h("p", { class: "error" }, `Blocked now: ${r.blocking_now.map(reasonText).join("; ")}`)
        : h("p", { class: "muted" }, "Nothing blocks this person now."),
      counts.length ? h("ul", {}, counts.map(([k, v]) => h("li", {}, `${k}: ${v}`))) : "",
      h("div", { class: "scroll" }, h("table", { id: "why-table" },
        h("caption", { class: "sr-only" }, "The decisions that considered the offer"),
        h("thead", {}, h("tr", {}, ["When", "Store", "Verdict", "Why"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, r.decisions.map((d) => h("tr", {},
          h("td", {}, d.context ? d.context.local_time.replace("T", " ").slice(0, 16) : when(d.at)),
          h("td", {}, storeName(d.store_id)),
          h("td", {}, h("span", { class: `badge ${d.verdict}` }, d.verdict)),
          h("td", {}, d.why || d.outcome || "")))))));
  } catch (e) {
    showError("#why-error", e);
  }
});

// ---------------------------------------------------------------- webhooks

const TRANSITIONS = { enter: "entered", exit: "left" };

/** The presence messages the receiver never took (admins only: they name people). */
async function loadDeadLetters() {
  showError("#webhooks-error", null);
  const body = $("#dead-list tbody");
  if (!(me && me.can.admin)) {
    $("#webhooks-status").textContent = "Only an admin sees the dead letters: they name people.";
    body.replaceChildren();
    $("#redrive").hidden = true;
    return;
  }
  let r;
  try {
    r = await api("GET", "/v1/admin/webhooks/dead-letters?limit=1000");
  } catch (e) {
    showError("#webhooks-error", e);
    return;
  }
  const dead = r.dead_letters;
  $("#webhooks-status").textContent = [
    r.enabled ? "Webhooks are on in this instance." : "Webhooks are off in this instance: messages wait until a receiver is configured.",
    dead.length
      ? `${dead.length === 1 ? "One message" : `${dead.length} messages`} failed every attempt${dead.length === 1000 ? " (the oldest 1,000 shown)" : ""}.`
      : "No message failed every attempt.",
  ].join(" ");
  body.replaceChildren(...dead.map((d) => h("tr", {},
    h("td", {}, when(d.next_at)),
    h("td", {}, d.message.user_id),
    h("td", {}, d.message.changes.map((c) => `${TRANSITIONS[c.transition] || c.transition} ${storeName(c.store_id)}`).join("; ")),
    h("td", {}, String(d.attempts)),
    h("td", {}, d.last_error || ""))));
  $("#redrive").hidden = dead.length === 0;
}
$("#redrive").addEventListener("click", async () => {
  showError("#webhooks-error", null);
  try {
    const r = await api("POST", "/v1/admin/webhooks/dead-letters/redrive");
    toast(`${r.redriven === 1 ? "One message is" : `${r.redriven} messages are`} back in the outbox, to be sent again`);
  } catch (e) {
    showError("#webhooks-error", e);
  }
  await loadDeadLetters();
});

// ---------------------------------------------------------------- start

let started = false;
function startApp() {
  if (started) return;
  started = true;
  $("#sim-start").value = localNowInput();
  initMap();
  loadFences();
  loadCampaigns();
  const wanted = tabs.find((t) => `#${t.id.slice(4)}` === location.hash);
  selectTab(wanted || tabs[0], false);
}

// ---------------------------------------------------------------- single sign-on

// Where the console is hosted next to an identity provider (on AWS: the marketer user
// pool), `config.json` beside this page names it, and marketers sign in there: the OAuth 2.0
// authorization-code flow with PKCE (RFC 7636, S256), as a public client with no secret. The
// verifier and state live in sessionStorage for the round trip only; the code is taken off
// the address bar at once and used once; the token it buys is kept like an API key, in
// sessionStorage, until the tab closes or the marketer signs out.
const FLOW = "nearcast.oidc";
let config = {};

async function loadConfig() {
  try {
    const r = await fetch("config.json", { cache: "no-store" });
    if (r.ok) config = await r.json();
  } catch {
    config = {};
  }
  const o = config.oidc;
  if (o && o.authorization_endpoint && o.token_endpoint && o.client_id) {
    $("#sso").hidden = false;
    $("#sso-button").textContent = `Sign in with ${o.label || "your organisation's account"}`;
  }
}

const base64url = (bytes) =>
  btoa(String.fromCharCode(...new Uint8Array(bytes))).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
function randomText(n) {
  const a = new Uint8Array(n);
  crypto.getRandomValues(a);
  return base64url(a);
}
const redirectUri = () => location.origin + location.pathname;

async function startSso() {
  const o = config.oidc;
  const verifier = randomText(48);
  const challenge = base64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
  const state = randomText(16);
  sessionStorage.setItem(FLOW, JSON.stringify({ state, verifier }));
  const u = new URL(o.authorization_endpoint);
  for (const [k, v] of Object.entries({
    response_type: "code",
    client_id: o.client_id,
    redirect_uri: redirectUri(),
    scope: o.scope || "openid email profile",
    state,
    code_challenge: challenge,
    code_challenge_method: "S256",
  })) u.searchParams.set(k, v);
  location.assign(u.toString());
}

/** Back from the provider (`?code=&state=` or `?error=`): the code exchanged for a token. */
async function finishSso() {
  const q = new URLSearchParams(location.search);
  if (!q.has("code") && !q.has("error")) return;
  history.replaceState(null, "", location.pathname + location.hash);
  const flow = JSON.parse(sessionStorage.getItem(FLOW) || "null");
  sessionStorage.removeItem(FLOW);
  if (q.has("error")) throw new Error(`The sign-in was refused: ${q.get("error_description") || q.get("error")}`);
  if (!flow || flow.state !== q.get("state") || !config.oidc) {
    throw new Error("The sign-in answer does not match a sign-in started here (state); please sign in again.");
  }
  const o = config.oidc;
  const r = await fetch(o.token_endpoint, {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({
      grant_type: "authorization_code",
      code: q.get("code"),
      redirect_uri: redirectUri(),
      client_id: o.client_id,
      code_verifier: flow.verifier,
    }),
  });
  const t = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(`The sign-in could not be completed: ${t.error_description || t.error || `HTTP ${r.status}`}`);
  // The ID token by default: it carries the role claim (a user pool's custom attributes are
  // not in its access tokens); `"token": "access_token"` in config.json sends that instead.
  const token = o.token === "access_token" ? t.access_token : t.id_token || t.access_token;
  if (!token) throw new Error("The sign-in answered without a token");
  sessionStorage.setItem(KEY, token);
}

$("#sso-button").addEventListener("click", () => startSso().catch((e) => showError("#sign-in-error", e)));

(async () => {
  await loadConfig();
  try {
    await finishSso();
  } catch (e) {
    await signIn();
    showError("#sign-in-error", e);
    return;
  }
  await signIn();
})().catch((e) => toast(e.message));
