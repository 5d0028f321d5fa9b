// The dispatch map: the reference client of bluelight's protocol
// (PROTOCOL.md) in a browser. One WebSocket to /v1/ws carries the viewport's
// positions feed, a world-wide feed of units in emergency, the alerts (resumed
// with since_seq after a reconnect) and nearest queries; HTTP carries fences,
// unit lookups and trails. Nothing is fetched from another host unless the
// deployment configures its own tile server.
"use strict";

const $ = id => document.getElementById(id);
/** Text for places Leaflet writes as HTML (tooltips, icons): unit ids come
 *  from devices and fence names from users, and neither may run script. */
const esc = text => String(text).replace(/[&<>"']/g, c => `&#${c.charCodeAt(0)};`);
const AGENCIES = ["police", "fire", "ambulance", "coastguard", "other"];
const STATUSES = ["available", "enroute", "at_scene", "unavailable", "emergency", "unknown"];
const COLOURS = { police: "#58a6ff", fire: "#ff7b39", ambulance: "#3fb950", coastguard: "#e3b341", other: "#bc8cff" };
const STALE = "#59616b", EMERGENCY = "#ff1744";
// The viewport's feed reaches this far beyond the edges, so a small pan
// needs no new subscription before the data is there.
const PAD = 0.25;
// Web Mercator pixels per world at zoom 0 (Leaflet's CRS).
const TILE = 256;

/** Everything the page knows; `window.bluelight.state` for tests. */
const S = {
  token: new URLSearchParams(location.search).get("token") || sessionStorage.getItem("bluelight-token") || "",
  ws: null, live: false, retry: 0, nextId: 0,
  units: new Map(),        // id -> unit object (PROTOCOL "A unit object") plus x, y at zoom 0
  posSub: null, posWant: null,
  emergencies: new Map(),  // id -> unit, world-wide, from its own feed
  emergSub: null, emergWant: null, cued: new Set(),
  lastSeq: null, nAlerts: 0,
  selected: null, selectedUnit: null,
  nearest: { point: null, results: [], sub: null, want: null, ask: null },
  fences: [], drawing: null, editing: null,
  dirty: true, drawTimes: [],
};

// ---------------------------------------------------------------- HTTP

function authHeaders() { return S.token ? { Authorization: "Bearer " + S.token } : {}; }

/** JSON over HTTP; throws an Error with the server's own message. */
async function api(method, path, body) {
  const headers = authHeaders();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (r.status === 401) { needToken(); }
  const text = await r.text();
  let v = null;
  try { v = text ? JSON.parse(text) : null; } catch { /* not JSON: keep the text */ }
  if (!r.ok) {
    const err = new Error((v && v.error) || text || r.statusText);
    err.status = r.status;
    throw err;
  }
  return v;
}

function needToken() {
  setConn("token", "token required");
  $("token-form").hidden = false;
  $("token").focus();
}
$("token-form").addEventListener("submit", e => {
  e.preventDefault();
  S.token = $("token").value.trim();
  sessionStorage.setItem("bluelight-token", S.token);
  $("token-form").hidden = true;
  if (S.ws) { const ws = S.ws; S.ws = null; ws.close(); }
  S.retry = 0;
  connect();
  loadFences();
});

// ---------------------------------------------------------------- the map

const map = L.map("map", { preferCanvas: true, minZoom: 2, maxZoom: 18, worldCopyJump: true, zoomSnap: 0.5 })
  .setView([54.4, -3.2], 6);
map.attributionControl.setPrefix("Leaflet");
const renderer = L.canvas({ padding: 0.2 });
const geography = L.layerGroup().addTo(map);
const placesMajor = L.layerGroup(), placesMinor = L.layerGroup();
const h3Layer = L.layerGroup().addTo(map);
const fenceLayer = L.layerGroup().addTo(map);
const trailLayer = L.layerGroup().addTo(map);
const nearestLayer = L.layerGroup().addTo(map);
const drawLayer = L.layerGroup().addTo(map);

async function loadBackground() {
  const cfg = await api("GET", "/map/config.json").catch(() => ({}));
  if (cfg.tile_url) {
    L.tileLayer(cfg.tile_url, { attribution: cfg.tile_attribution || "", maxZoom: 19 }).addTo(geography);
  } else {
    const g = await api("GET", "/map/geography.json");
    const style = { renderer, interactive: false, color: "#44553f", weight: 1, fillColor: "#1f2a1f", fillOpacity: 1 };
    L.geoJSON(g.world, style).addTo(geography);
    L.geoJSON(g.detail, style).addTo(geography);
    S.geography = { world: g.world.features.length, detail: g.detail.features.length };
    map.attributionControl.addAttribution("Natural Earth");
  }
  const csv = await (await fetch("/map/places.csv")).text();
  for (const line of csv.trim().split("\n").slice(1)) {
    const [name, lat, lon, weight] = line.split(",");
    const major = Number(weight) >= 8;
    L.marker([Number(lat), Number(lon)], {
      interactive: false, keyboard: false,
      icon: L.divIcon({ className: "place" + (major ? " major" : ""), html: esc(name), iconSize: null }),
    }).addTo(major ? placesMajor : placesMinor);
  }
  placesMajor.addTo(map);
  showPlaces();
}
// Town labels: the big ones always, the rest once there is room.
function showPlaces() {
  if (map.getZoom() >= 7) placesMinor.addTo(map); else placesMinor.remove();
  // Fence names need the room of a town's zoom; hovering shows them before.
  map.getContainer().classList.toggle("far", map.getZoom() < 10);
}
map.on("zoomend", showPlaces);

// ---------------------------------------------------------------- units

/** Web Mercator at zoom 0, computed once a fix: a redraw is then a multiply. */
function mercator(u) {
  const lat = Math.max(-85.0511, Math.min(85.0511, u.lat)) * Math.PI / 180;
  u.x = (u.lon + 180) / 360 * TILE;
  u.y = (0.5 - Math.log(Math.tan(Math.PI / 4 + lat / 2)) / (2 * Math.PI)) * TILE;
  return u;
}

/**
 * Every unit on one canvas over the map, redrawn at most once a frame and
 * only when something changed: thousands of units stay one draw call per
 * colour, where a Leaflet layer per unit would cost a DOM-backed object each.
 */
const unitCanvas = L.DomUtil.create("canvas", "units", map.getContainer());
Object.assign(unitCanvas.style, { position: "absolute", left: 0, top: 0, zIndex: 450, pointerEvents: "none" });
const ctx = unitCanvas.getContext("2d");

function screenOf(u, origin, scale, width) {
  const world = TILE * scale;
  let x = u.x * scale - origin.x;
  // The copy of the world nearest the middle of the view (the antimeridian).
  x -= Math.round((x - width / 2) / world) * world;
  return [x, u.y * scale - origin.y];
}

function viewFrame() {
  const size = map.getSize(), zoom = map.getZoom();
  return { size, scale: Math.pow(2, zoom), origin: map.project(map.containerPointToLatLng([0, 0]), zoom) };
}

function draw() {
  const started = performance.now();
  S.dirty = false;
  const dpr = window.devicePixelRatio || 1;
  const { size, scale, origin } = viewFrame();
  if (unitCanvas.width !== Math.round(size.x * dpr) || unitCanvas.height !== Math.round(size.y * dpr)) {
    unitCanvas.width = Math.round(size.x * dpr); unitCanvas.height = Math.round(size.y * dpr);
    unitCanvas.style.width = size.x + "px"; unitCanvas.style.height = size.y + "px";
  }
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, size.x, size.y);
  const r = map.getZoom() >= 11 ? 5 : map.getZoom() >= 8 ? 4 : 3;
  const buckets = new Map();
  const urgent = [];
  for (const u of S.units.values()) {
    const [x, y] = screenOf(u, origin, scale, size.x);
    if (x < -10 || y < -10 || x > size.x + 10 || y > size.y + 10) continue;
    if (u.status === "emergency") { urgent.push([u, x, y]); continue; }
    const colour = u.stale ? STALE : (COLOURS[u.agency] || COLOURS.other);
    let b = buckets.get(colour);
    if (!b) buckets.set(colour, b = []);
    b.push(x, y, u.heading_deg, u.speed_mps);
  }
  for (const [colour, b] of buckets) {
    ctx.fillStyle = colour; ctx.strokeStyle = colour; ctx.lineWidth = 1.5;
    ctx.beginPath();
    for (let i = 0; i < b.length; i += 4) { ctx.moveTo(b[i] + r, b[i + 1]); ctx.arc(b[i], b[i + 1], r, 0, 2 * Math.PI); }
    ctx.fill();
    // Heading: a tick from the dot, for units that are moving, once there is room.
    if (map.getZoom() < 9) continue;
    ctx.beginPath();
    for (let i = 0; i < b.length; i += 4) {
      const h = b[i + 2], v = b[i + 3];
      if (h === undefined || !(v > 0.5)) continue;
      const a = h * Math.PI / 180;
      ctx.moveTo(b[i] + Math.sin(a) * r, b[i + 1] - Math.cos(a) * r);
      ctx.lineTo(b[i] + Math.sin(a) * (r + 6), b[i + 1] - Math.cos(a) * (r + 6));
    }
    ctx.stroke();
  }
  // Units in emergency that the view's filter leaves out are drawn all the same.
  for (const u of S.emergencies.values()) {
    if (S.units.has(u.id)) continue;
    const [x, y] = screenOf(u, origin, scale, size.x);
    urgent.push([u, x, y]);
  }
  // Emergencies on top, large, ringed: they must be seen first.
  for (const [u, x, y] of urgent) {
    ctx.beginPath(); ctx.arc(x, y, r + 4, 0, 2 * Math.PI);
    ctx.fillStyle = EMERGENCY; ctx.fill();
    ctx.lineWidth = 2; ctx.strokeStyle = "#fff"; ctx.stroke();
  }
  // Close in, each unit says who it is (a street's worth of units, not a city's).
  if (map.getZoom() >= 14) {
    ctx.font = "11px system-ui, sans-serif"; ctx.fillStyle = "#e6edf3";
    ctx.strokeStyle = "#0d1117"; ctx.lineWidth = 3; ctx.lineJoin = "round";
    let n = 0;
    for (const u of S.units.values()) {
      const [x, y] = screenOf(u, origin, scale, size.x);
      if (x < 0 || y < 0 || x > size.x || y > size.y) continue;
      if (++n > 400) break;
      const label = u.callsign || u.id;
      ctx.strokeText(label, x + r + 4, y + 4); ctx.fillText(label, x + r + 4, y + 4);
    }
  }
  const sel = S.selected && (S.units.get(S.selected) || S.selectedUnit);
  if (sel && sel.x !== undefined) {
    const [x, y] = screenOf(sel, origin, scale, size.x);
    ctx.beginPath(); ctx.arc(x, y, r + 7, 0, 2 * Math.PI);
    ctx.lineWidth = 2.5; ctx.strokeStyle = "#fff"; ctx.stroke();
  }
  // The last few thousand draws' cost, ms: what the page's own load is.
  S.drawTimes.push(performance.now() - started);
  if (S.drawTimes.length > 5000) S.drawTimes.splice(0, 1000);
}
function frame() {
  if (S.dirty) draw();
  requestAnimationFrame(frame);
}
// During a zoom animation the canvas would show the old scale: hide it.
map.on("zoomanim", () => { unitCanvas.style.visibility = "hidden"; });
map.on("zoomend", () => { unitCanvas.style.visibility = ""; S.dirty = true; });
map.on("move resize", () => { S.dirty = true; });

/** The unit drawn nearest a container point, within a finger's width. */
function unitAt(point) {
  const { size, scale, origin } = viewFrame();
  let best = null, bestD = 14 * 14;
  for (const u of S.units.values()) {
    const [x, y] = screenOf(u, origin, scale, size.x);
    const d = (x - point.x) ** 2 + (y - point.y) ** 2;
    if (d < bestD) { best = u; bestD = d; }
  }
  return best;
}

function setUnits(list, replace) {
  if (replace) S.units = new Map();
  for (const u of list) {
    const before = S.units.get(u.id);
    S.units.set(u.id, mercator(u));
    if (u.status === "emergency" && before && before.status !== "emergency") cueEmergency(u);
    if (u.id === S.selected) { S.selectedUnit = u; showUnitSoon(); }
  }
  $("units").textContent = S.units.size;
  S.dirty = true;
}

// ---------------------------------------------------------------- filters

function buildFilters() {
  for (const [box, values] of [["f-agency", AGENCIES], ["f-status", STATUSES]]) {
    for (const v of values) {
      const l = document.createElement("label");
      l.innerHTML = `<input type="checkbox" value="${v}" checked> ${v.replace("_", " ")}`;
      if (box === "f-agency") l.style.color = COLOURS[v];
      $(box).append(l);
    }
    $(box).addEventListener("change", resubscribe);
  }
  $("f-kind").addEventListener("change", resubscribe);
}
function checked(box) {
  return [...$(box).querySelectorAll("input:checked")].map(i => i.value);
}
/** The filter of the page's controls (PROTOCOL "Filters"); keys left out when everything is chosen. */
function currentFilter() {
  const f = {};
  const agency = checked("f-agency"), status = checked("f-status");
  if (agency.length < AGENCIES.length) f.agency = agency;
  if (status.length < STATUSES.length) f.status = status;
  const kind = $("f-kind").value.split(",").map(s => s.trim()).filter(Boolean);
  if (kind.length) f.kind = kind;
  return f;
}

// ---------------------------------------------------------------- the socket

function setConn(cls, text) {
  const c = $("conn");
  c.className = "conn " + cls; c.textContent = text;
  S.live = cls === "live";
}
function send(m) {
  if (S.ws && S.ws.readyState === WebSocket.OPEN) S.ws.send(JSON.stringify(m));
}
const reqId = prefix => prefix + "-" + (++S.nextId);

function viewportArea() {
  const b = map.getBounds().pad(PAD);
  let w = b.getWest(), e = b.getEast();
  const s = Math.max(-90, b.getSouth()), n = Math.min(90, b.getNorth());
  if (e - w >= 360) { w = -180; e = 180; } else {
    // Leaflet's longitudes run past ±180 after a pan across the antimeridian.
    const wrap = x => ((x + 540) % 360) - 180;
    w = wrap(w); e = wrap(e);
    if (e === -180) e = 180;
  }
  return { bbox: [w, s, e, n] };
}

function subscribePositions() {
  S.posWant = reqId("pos");
  send({ type: "subscribe", id: S.posWant, stream: "positions", area: viewportArea(), filter: currentFilter(), max_hz: 1 });
}
let resubTimer = null;
function resubscribe() {
  clearTimeout(resubTimer);
  resubTimer = setTimeout(subscribePositions, 200);
}
map.on("moveend", resubscribe);

async function subscribeAlerts() {
  // The recent past first: the hundred alerts before the latest, then live;
  // after a reconnect, everything since the last one shown.
  const ws = S.ws;
  const h = await api("GET", "/healthz").catch(() => null);
  if (S.ws !== ws) return; // closed meanwhile: the next open subscribes
  let since = S.lastSeq;
  if (h && S.lastSeq !== null && h.alert_seq < S.lastSeq) {
    // An in-memory server started again: its numbering did too.
    noteInPanel("the server restarted without Redis: alert numbers start again");
    since = null; S.lastSeq = null;
  }
  if (since === null) since = h ? Math.max(0, h.alert_seq - 100) : 0;
  send({ type: "subscribe", id: reqId("alerts"), stream: "alerts", since_seq: since });
}

async function connect() {
  setConn("connecting", "connecting…");
  // A WebSocket refused for its token only says "closed": ask over HTTP
  // first, where a 401 is a 401.
  let probe = null;
  try { probe = await fetch("/v1/fences", { headers: authHeaders() }); } catch { /* server away */ }
  if (probe && probe.status === 401) { needToken(); return; }
  if (!probe) { retryLater(); return; }
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/v1/ws"
    + (S.token ? "?token=" + encodeURIComponent(S.token) : "");
  const ws = new WebSocket(url);
  S.ws = ws;
  ws.onopen = () => {
    S.retry = 0;
    setConn("live", "live");
    S.posSub = S.emergSub = null;
    subscribeAlerts();
    subscribePositions();
    // Units in emergency anywhere, not only in view: they must never be missed.
    S.emergWant = reqId("emergency");
    send({ type: "subscribe", id: S.emergWant, stream: "positions", area: { bbox: [-180, -90, 180, 90] },
           filter: { status: ["emergency"] }, max_hz: 1 });
    if (S.nearest.sub) { S.nearest.sub = null; pinNearest(); }
  };
  ws.onmessage = e => handle(JSON.parse(e.data));
  ws.onclose = () => {
    if (S.ws !== ws) return;
    S.ws = null;
    retryLater();
  };
}
function retryLater() {
  const wait = Math.min(10, 2 ** S.retry++);
  setConn("offline", `offline, retrying in ${wait} s`);
  setTimeout(connect, wait * 1000);
}

function handle(m) {
  switch (m.type) {
    case "subscribed":
      if (m.id === S.posWant) {
        if (S.posSub) send({ type: "unsubscribe", sub: S.posSub });
        S.posSub = m.sub;
      } else if (m.id === S.emergWant) S.emergSub = m.sub;
      else if (m.id === S.nearest.want) {
        S.nearest.sub = m.sub;
        $("nearest-pin").textContent = "Unpin";
        $("nearest-state").textContent = "pinned: updates as units move";
      }
      break;
    case "snapshot":
    case "positions":
      if (m.sub === S.posSub) setUnits(m.units, m.type === "snapshot");
      else if (m.sub === S.emergSub) {
        if (m.type === "snapshot") S.emergencies.clear();
        for (const u of m.units) {
          if (!S.emergencies.has(u.id)) cueEmergency(u);
          S.emergencies.set(u.id, mercator(u));
        }
        $("emergencies").textContent = S.emergencies.size;
        S.dirty = true;
      }
      break;
    case "left":
      if (m.sub === S.posSub) {
        for (const id of m.ids) S.units.delete(id);
        $("units").textContent = S.units.size; S.dirty = true;
      } else if (m.sub === S.emergSub) {
        for (const id of m.ids) { S.emergencies.delete(id); S.cued.delete(id); }
        $("emergencies").textContent = S.emergencies.size;
        S.dirty = true;
      }
      break;
    case "alert":
      addAlert(m);
      break;
    case "nearest":
      if ((m.id && m.id === S.nearest.ask) || (m.sub && m.sub === S.nearest.sub)) showNearest(m.results);
      break;
    case "error":
      if (m.code === "unauthorized" || m.code === "forbidden") needToken();
      noteInPanel(`server: ${m.message}`);
      break;
  }
}

// ---------------------------------------------------------------- alerts

function clock(ms) {
  return new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}
function addAlert(a) {
  // One subscription delivers in seq order, resumed ones with no repeat;
  // this guards a page against a server that ever did.
  if (S.lastSeq !== null && a.seq <= S.lastSeq) return;
  S.nAlerts++;
  S.lastSeq = Math.max(S.lastSeq ?? 0, a.seq);
  $("nalerts").textContent = S.nAlerts;
  $("seq").textContent = S.lastSeq;
  const what = a.fence ? ` · ${fenceName(a.fence)}`
    : a.rule ? ` · ${a.rule} with ${a.other && a.other.id} (${Math.round(a.distance_m)} m)` : "";
  const li = panelItem(`ev-${a.event}`, a.time_ms, `#${a.seq} ${a.event} · ${a.unit && a.unit.id}${what}`, a.unit);
  li.dataset.seq = a.seq;
  insertBySeq(li, a.seq);
  if (a.event === "proximity") cue(`PROXIMITY: ${a.unit.id} within ${Math.round(a.distance_m)} m of ${a.other.id}`, a.unit);
}
/** Newest first, by seq: resumed alerts may arrive after newer live ones. */
function insertBySeq(li, seq) {
  const list = $("alerts");
  let at = list.firstElementChild;
  while (at && at.dataset.seq !== undefined && Number(at.dataset.seq) > seq) at = at.nextElementSibling;
  list.insertBefore(li, at);
  while (list.children.length > 500) list.lastElementChild.remove();
}
function panelItem(cls, timeMs, text, unit) {
  const li = document.createElement("li");
  li.className = cls + " new";
  const t = document.createElement("time");
  t.textContent = clock(timeMs || Date.now());
  li.append(t, document.createTextNode(text));
  if (unit) li.addEventListener("click", () => selectUnit(unit, true));
  return li;
}
function noteInPanel(text) {
  $("alerts").prepend(panelItem("ev-stale", Date.now(), text));
}

let audio = null;
function beep() {
  try {
    audio = audio || new AudioContext();
    const o = audio.createOscillator(), g = audio.createGain();
    o.frequency.value = 880; g.gain.value = 0.08;
    o.connect(g).connect(audio.destination);
    o.start(); o.stop(audio.currentTime + 0.35);
  } catch { /* no sound until the user has touched the page */ }
}
function cue(text, unit) {
  const b = $("banner");
  b.textContent = text; b.hidden = false;
  b.onclick = () => { b.hidden = true; if (unit) selectUnit(unit, true); };
  clearTimeout(cue.timer);
  cue.timer = setTimeout(() => { b.hidden = true; }, 20000);
  beep();
}
function cueEmergency(u) {
  if (S.cued.has(u.id)) return;
  S.cued.add(u.id);
  $("alerts").prepend(panelItem("ev-emergency", u.time_ms, `EMERGENCY · ${u.id} (${u.agency || "?"})`, u));
  cue(`EMERGENCY: ${u.id} (${u.agency || "unknown agency"})`, u);
}

// ---------------------------------------------------------------- a unit

async function findUnit(id) {
  $("search-error").textContent = "";
  try {
    const f = await api("GET", "/v1/units/" + encodeURIComponent(id));
    selectUnit(f.properties, true);
  } catch (e) {
    $("search-error").textContent = e.status === 404 ? `no unit ${id}` : e.message;
  }
}
$("search-form").addEventListener("submit", e => { e.preventDefault(); const id = $("search").value.trim(); if (id) findUnit(id); });

function selectUnit(u, fly) {
  S.selected = u.id;
  S.selectedUnit = mercator({ ...u });
  trailLayer.clearLayers(); $("trail-info").textContent = "";
  showUnit();
  if (fly) map.flyTo([u.lat, u.lon], Math.max(map.getZoom(), 13), { duration: 0.8 });
  S.dirty = true;
}
let unitTimer = null;
function showUnitSoon() { if (!unitTimer) unitTimer = setTimeout(() => { unitTimer = null; showUnit(); }, 500); }
function showUnit() {
  const u = S.selectedUnit;
  $("unit-panel").hidden = !u;
  if (!u) return;
  $("unit-id").textContent = u.id;
  const age = Math.max(0, Math.round((Date.now() - u.time_ms) / 1000));
  const rows = [
    ["callsign", u.callsign], ["agency", u.agency], ["kind", u.kind], ["status", u.status],
    ["position", `${u.lat.toFixed(5)}, ${u.lon.toFixed(5)}`],
    ["speed", u.speed_mps === undefined ? undefined : `${(u.speed_mps * 3.6).toFixed(0)} km/h`],
    ["heading", u.heading_deg === undefined ? undefined : `${Math.round(u.heading_deg)}°`],
    ["accuracy", u.accuracy_m === undefined ? undefined : `${u.accuracy_m} m`],
    ["last fix", `${clock(u.time_ms)} (${age} s ago)${u.stale ? ", stale" : ""}`],
    ["tags", u.tags && u.tags.join(", ")], ["how", u.how], ["H3", u.h3],
  ];
  const dl = $("unit-details");
  dl.replaceChildren();
  for (const [k, v] of rows) {
    if (v === undefined || v === "") continue;
    const dt = document.createElement("dt"), dd = document.createElement("dd");
    dt.textContent = k; dd.textContent = v;
    dl.append(dt, dd);
  }
}
$("unit-close").addEventListener("click", () => {
  S.selected = S.selectedUnit = null; trailLayer.clearLayers(); showUnit(); S.dirty = true;
});
$("trail-btn").addEventListener("click", async () => {
  const u = S.selectedUnit;
  if (!u) return;
  const to = Date.now(), from = to - Number($("trail-min").value) * 60000;
  try {
    const fc = await api("GET", `/v1/export?units=${encodeURIComponent(u.id)}&from_ms=${from}&to_ms=${to}&format=geojson&shape=tracks`);
    trailLayer.clearLayers();
    const n = fc.features.reduce((k, f) => k + f.geometry.coordinates.length, 0);
    L.geoJSON(fc, { renderer, interactive: false, style: { color: COLOURS[u.agency] || COLOURS.other, weight: 3, opacity: 0.85 } })
      .addTo(trailLayer);
    $("trail-info").textContent = n ? `${n} fixes in the last ${$("trail-min").value} min` : "no fixes in that time";
  } catch (e) {
    $("trail-info").textContent = e.status === 403 ? "the trail needs a token with the export scope" : e.message;
  }
});

// ---------------------------------------------------------------- nearest

function nearestRequest(point) {
  const filter = currentFilter();
  if ($("nearest-available").checked) filter.status = ["available"];
  return { point: [point.lng, point.lat], k: Math.max(1, Math.min(100, Number($("nearest-k").value) || 5)), filter };
}
function askNearest(latlng) {
  unpinNearest();
  S.nearest.point = latlng;
  S.nearest.ask = reqId("near");
  send({ type: "nearest", id: S.nearest.ask, ...nearestRequest(latlng) });
  $("nearest-pin").disabled = false; $("nearest-clear").disabled = false;
  $("nearest-at").value = `${latlng.lat.toFixed(5)}, ${latlng.lng.toFixed(5)}`;
}
function pinNearest() {
  if (!S.nearest.point) return;
  S.nearest.want = reqId("standing");
  send({ type: "subscribe", id: S.nearest.want, stream: "nearest", ...nearestRequest(S.nearest.point) });
}
function unpinNearest() {
  if (S.nearest.sub) send({ type: "unsubscribe", sub: S.nearest.sub });
  S.nearest.sub = S.nearest.want = null;
  $("nearest-pin").textContent = "Pin (keep updating)";
  $("nearest-state").textContent = "";
}
function showNearest(results) {
  S.nearest.results = results;
  nearestLayer.clearLayers();
  const p = S.nearest.point;
  L.circleMarker(p, { renderer, radius: 6, color: "#fff", weight: 2, fillColor: "#000", fillOpacity: 1 }).addTo(nearestLayer);
  const list = $("nearest-list");
  list.replaceChildren();
  for (const { unit, distance_m } of results) {
    const km = distance_m >= 1000 ? `${(distance_m / 1000).toFixed(1)} km` : `${Math.round(distance_m)} m`;
    L.polyline([p, [unit.lat, unit.lon]], { renderer, color: "#ffffff", weight: 1.5, dashArray: "4 4", opacity: 0.8 })
      .bindTooltip(esc(`${unit.id} · ${km}`), { permanent: true, direction: "center", className: "distance" })
      .addTo(nearestLayer);
    const li = document.createElement("li");
    li.dataset.id = unit.id;
    li.textContent = `${unit.id} · ${km} · ${unit.agency || "?"} ${unit.kind || ""}`;
    li.style.color = COLOURS[unit.agency] || COLOURS.other;
    li.addEventListener("click", () => selectUnit(unit, true));
    list.append(li);
  }
  if (!results.length) list.innerHTML = "<li>no unit matches</li>";
}
$("nearest-mode").addEventListener("click", () => setPicking(!S.picking));
function setPicking(on) {
  S.picking = on;
  $("nearest-mode").setAttribute("aria-pressed", String(on));
  map.getContainer().classList.toggle("drawing", on || !!S.drawing);
}
$("nearest-at").addEventListener("keydown", e => {
  if (e.key !== "Enter") return;
  const [lat, lon] = $("nearest-at").value.split(/[ ,]+/).map(Number);
  if (Number.isFinite(lat) && Number.isFinite(lon) && Math.abs(lat) <= 90 && Math.abs(lon) <= 180) {
    askNearest(L.latLng(lat, lon));
    map.panTo([lat, lon]);
  } else $("nearest-state").textContent = "type lat, lon in degrees, e.g. 51.5, -0.12";
});
$("nearest-pin").addEventListener("click", () => { if (S.nearest.sub || S.nearest.want) unpinNearest(); else pinNearest(); });
$("nearest-clear").addEventListener("click", () => {
  unpinNearest();
  S.nearest.point = null; S.nearest.results = []; S.nearest.ask = null;
  nearestLayer.clearLayers(); $("nearest-list").replaceChildren();
  $("nearest-pin").disabled = true; $("nearest-clear").disabled = true;
});

// ---------------------------------------------------------------- fences

function fenceName(id) {
  const f = S.fences.find(f => f.id === id);
  return (f && f.properties && f.properties.name) || id;
}
// Past this many fences, names show on hover only: thousands of labels
// would bury the map and cost a DOM element each.
const MAX_FENCE_LABELS = 300;
let fencesText = null;
async function loadFences() {
  let text;
  try {
    const r = await fetch("/v1/fences", { headers: authHeaders() });
    if (!r.ok) return;
    text = await r.text();
  } catch { return; }
  if (text === fencesText) return; // unchanged since the last look
  fencesText = text;
  S.fences = JSON.parse(text).features || [];
  fenceLayer.clearLayers();
  const permanent = S.fences.length <= MAX_FENCE_LABELS;
  for (const f of S.fences) {
    const p = f.properties || {};
    const style = { renderer, color: "#d2a8ff", weight: 2, fillOpacity: 0.08, dashArray: p.filter ? "6 4" : null };
    const layer = f.geometry.type === "Point"
      ? L.circle([f.geometry.coordinates[1], f.geometry.coordinates[0]], { ...style, radius: p.radius_m || 1 })
      : L.geoJSON(f, { style: () => style });
    layer.bindTooltip(esc(p.name || f.id), { permanent, direction: "center", className: "fence-label" });
    layer.on("click", e => { L.DomEvent.stopPropagation(e); if (!S.drawing && !S.picking) editFence(f); });
    layer.addTo(fenceLayer);
  }
  $("nfences").textContent = `(${S.fences.length})`;
}

function editFence(f) {
  const p = f.properties || {};
  S.editing = { feature: f, isNew: !S.fences.some(x => x.id === f.id) };
  $("fence-form").hidden = false;
  $("fence-id").value = f.id || ""; $("fence-id").readOnly = !S.editing.isNew;
  $("fence-name").value = p.name || "";
  const detect = p.detect || ["enter", "exit"];
  for (const c of document.querySelectorAll("input[name=detect]")) c.checked = detect.includes(c.value);
  $("fence-dwell").value = p.dwell_s ?? ""; $("fence-hyst").value = p.hysteresis_m ?? "";
  const circle = f.geometry.type === "Point";
  $("fence-radius-row").hidden = !circle; $("fence-radius").value = circle ? Math.round(p.radius_m) : "";
  $("fence-delete").hidden = S.editing.isNew;
  $("fence-error").textContent = "";
  (S.editing.isNew ? $("fence-id") : $("fence-name")).focus();
}
function closeFenceForm() {
  S.editing = null; $("fence-form").hidden = true; drawLayer.clearLayers();
}
$("fence-cancel").addEventListener("click", closeFenceForm);
$("fence-form").addEventListener("submit", async e => {
  e.preventDefault();
  const { feature } = S.editing;
  const props = { ...(feature.properties || {}) };
  props.name = $("fence-name").value.trim() || undefined;
  props.detect = [...document.querySelectorAll("input[name=detect]:checked")].map(c => c.value);
  const num = id => $(id).value === "" ? undefined : Number($(id).value);
  props.dwell_s = num("fence-dwell"); props.hysteresis_m = num("fence-hyst");
  if (feature.geometry.type === "Point") props.radius_m = num("fence-radius");
  for (const k of Object.keys(props)) if (props[k] === undefined) delete props[k];
  const id = $("fence-id").value.trim();
  try {
    await api("PUT", "/v1/fences/" + encodeURIComponent(id), { type: "Feature", geometry: feature.geometry, properties: props });
    closeFenceForm();
    await loadFences();
  } catch (err) {
    $("fence-error").textContent = err.status === 403 ? "changing fences needs a token with the fences scope" : err.message;
  }
});
$("fence-delete").addEventListener("click", async () => {
  const id = S.editing && S.editing.feature.id;
  if (!id) return;
  // Two clicks, not a modal dialog: a dispatcher's screen never freezes.
  const b = $("fence-delete");
  if (b.dataset.armed !== id) {
    b.dataset.armed = id; b.textContent = "Delete: are you sure?";
    setTimeout(() => { if (b.dataset.armed === id) { delete b.dataset.armed; b.textContent = "Delete"; } }, 5000);
    return;
  }
  delete b.dataset.armed; b.textContent = "Delete";
  try {
    await api("DELETE", "/v1/fences/" + encodeURIComponent(id));
    closeFenceForm();
    await loadFences();
  } catch (err) { $("fence-error").textContent = err.message; }
});

// Drawing: a polygon is clicked vertex by vertex and closed on its first
// vertex (or Enter, or a double click); a circle is its centre, then a
// point on its edge. Escape abandons either.
function startDrawing(kind) {
  closeFenceForm(); setPicking(false);
  S.drawing = { kind, points: [] };
  map.doubleClickZoom.disable();
  map.getContainer().classList.add("drawing");
  $("draw-help").textContent = kind === "polygon"
    ? "click each corner; click the first corner (or press Enter) to close; Escape cancels"
    : "click the centre, then a point on the edge; Escape cancels";
}
function stopDrawing() {
  S.drawing = null;
  map.doubleClickZoom.enable();
  map.getContainer().classList.toggle("drawing", !!S.picking);
  $("draw-help").textContent = "";
}
$("draw-polygon").addEventListener("click", () => startDrawing("polygon"));
$("draw-circle").addEventListener("click", () => startDrawing("circle"));
function newFenceId() { return "fence-" + new Date().toISOString().slice(0, 19).replace(/[-:T]/g, ""); }
function finishPolygon() {
  const pts = S.drawing.points;
  if (pts.length < 3) { $("draw-help").textContent = "a polygon needs at least three corners"; return; }
  const ring = pts.map(p => [Number(p.lng.toFixed(6)), Number(p.lat.toFixed(6))]);
  ring.push(ring[0]);
  stopDrawing();
  editFence({ type: "Feature", id: newFenceId(), geometry: { type: "Polygon", coordinates: [ring] }, properties: { detect: ["enter", "exit"] } });
}
function drawPreview(cursor) {
  drawLayer.clearLayers();
  const d = S.drawing;
  if (!d || !d.points.length) return;
  const style = { renderer, color: "#d2a8ff", weight: 2, dashArray: "5 5", interactive: false };
  if (d.kind === "polygon") {
    L.polyline(cursor ? [...d.points, cursor] : d.points, style).addTo(drawLayer);
    for (const p of d.points) L.circleMarker(p, { ...style, radius: 4, dashArray: null }).addTo(drawLayer);
  } else if (cursor) {
    L.circle(d.points[0], { ...style, radius: d.points[0].distanceTo(cursor) }).addTo(drawLayer);
  }
}
map.on("mousemove", e => { if (S.drawing) drawPreview(e.latlng); });
map.on("dblclick", () => { if (S.drawing && S.drawing.kind === "polygon") finishPolygon(); });
document.addEventListener("keydown", e => {
  if (!S.drawing) return;
  if (e.key === "Escape") { stopDrawing(); drawLayer.clearLayers(); }
  if (e.key === "Enter" && S.drawing.kind === "polygon") finishPolygon();
});

map.on("click", e => {
  const d = S.drawing;
  if (d && d.kind === "polygon") {
    const first = d.points[0];
    if (first && d.points.length >= 3 && map.latLngToContainerPoint(first).distanceTo(e.containerPoint) < 10) {
      finishPolygon();
    } else { d.points.push(e.latlng); drawPreview(); }
    return;
  }
  if (d && d.kind === "circle") {
    if (!d.points.length) { d.points.push(e.latlng); return; }
    const c = d.points[0], radius = Math.max(1, Math.round(c.distanceTo(e.latlng)));
    stopDrawing();
    editFence({ type: "Feature", id: newFenceId(),
                geometry: { type: "Point", coordinates: [Number(c.lng.toFixed(6)), Number(c.lat.toFixed(6))] },
                properties: { radius_m: radius, detect: ["enter", "exit"] } });
    L.circle(c, { renderer, radius, color: "#d2a8ff", dashArray: "5 5" }).addTo(drawLayer);
    return;
  }
  if (S.picking) { askNearest(e.latlng); setPicking(false); return; }
  const u = unitAt(e.containerPoint);
  if (u) selectUnit(u, false);
});

// ---------------------------------------------------------------- H3 grid

// Average H3 edge length by resolution, metres (h3geo.org tables).
const H3_EDGE_M = [1107712, 418676, 158244, 59810, 22606, 8544, 3229, 1220, 461, 174, 66, 25, 9.4, 3.6, 1.3, 0.5];
function drawGrid() {
  h3Layer.clearLayers();
  if (!$("f-h3").checked) { $("h3-res").textContent = ""; return; }
  const b = map.getBounds();
  const metresPerPx = 40075016 * Math.cos(map.getCenter().lat * Math.PI / 180) / (TILE * Math.pow(2, map.getZoom()));
  // The finest resolution whose cells are still about 30 px across.
  let res = 0;
  while (res < 15 && H3_EDGE_M[res + 1] > 30 * metresPerPx) res++;
  if (b.getEast() - b.getWest() > 180) { $("h3-res").textContent = "(zoom in)"; return; }
  const ring = [[b.getNorth(), b.getWest()], [b.getNorth(), b.getEast()], [b.getSouth(), b.getEast()], [b.getSouth(), b.getWest()]];
  let cells;
  try { cells = h3.polygonToCells(ring, res); } catch { cells = []; }
  $("h3-res").textContent = `(res ${res}, ${cells.length} cells)`;
  if (cells.length > 4000) { $("h3-res").textContent = `(res ${res}: too many cells, zoom in)`; return; }
  for (const c of cells) {
    L.polygon(h3.cellToBoundary(c), { renderer, interactive: false, color: "#58a6ff", weight: 0.7, opacity: 0.5, fill: false })
      .addTo(h3Layer);
  }
}
$("f-h3").addEventListener("change", drawGrid);
map.on("moveend", drawGrid);

// ---------------------------------------------------------------- start

buildFilters();
loadBackground().catch(e => noteInPanel(`map background: ${e.message}`));
loadFences();
setInterval(loadFences, 30000); // others edit fences too
setInterval(() => { if (S.selectedUnit) showUnit(); }, 5000); // "N s ago" keeps counting
connect();
requestAnimationFrame(frame);

/** For tests and the curious: the page's state and map. */
window.bluelight = { map, state: S, layers: { geography, h3: h3Layer, fences: fenceLayer, trail: trailLayer, nearest: nearestLayer } };
