// labd dashboard: devices, method forms, live stream plots and tasks.
// Plain ES module, no build step. State changes arrive over /stream/events; the page
// fetches an item again only in reaction to an event about it (never on a timer).

const TOKEN_KEY = "labd.token";
const PLOT_POINTS = 2000;        // rolling window per series (points kept and plotted)
const SMALL_ARRAY = 16;          // arrays up to this length are plotted as channels over time
const TRACE_POINTS = 2000;       // longer arrays are decimated to at most this many points
const PENDING_LIMIT = 8000;      // unrendered events kept per stream (hidden tab, slow frame)
const MIN_FRAME_MS = 40;         // at most ~25 plot redraws per second per stream
const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2",
  "#db2777", "#65a30d", "#ea580c", "#4f46e5", "#0d9488", "#b91c1c", "#a16207",
  "#9333ea", "#0284c7", "#15803d"];

// ---------------------------------------------------------------------------
// Responsiveness instrumentation, read by the browser tests and bench/dashboard.py.

const perf = {
  longTasks: [],      // durations (ms) of main-thread long tasks
  clicks: [],         // processing time (ms) of each click handler
  clickDelays: [],    // time (ms) from the click to its handler starting
  plottedPoints: 0,   // points handed to plots since load
  renders: 0,         // plot redraws since load
};
window.labdPerf = perf;
try {
  const observer = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) perf.longTasks.push(entry.duration);
  });
  observer.observe({ type: "longtask", buffered: true });
} catch (err) {
  // Browsers without the Long Tasks API: leave longTasks empty.
}

function onClick(el, handler) {
  el.addEventListener("click", (ev) => {
    const start = performance.now();
    perf.clickDelays.push(Math.max(0, start - ev.timeStamp));
    try {
      handler(ev);
    } finally {
      perf.clicks.push(performance.now() - start);
    }
  });
}

// ---------------------------------------------------------------------------
// Small DOM helpers.

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else if (key === "testid") el.dataset.testid = value;
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    el.append(child);
  }
  return el;
}

const $ = (id) => document.getElementById(id);

function safeId(text) {
  return String(text).replace(/[^A-Za-z0-9_-]/g, "_");
}

// JSON for people: objects indented, lists of plain values kept on one line.
function pretty(value, indent) {
  if (Array.isArray(value)) {
    if (value.every((v) => v === null || typeof v !== "object")) {
      return "[" + value.map((v) => JSON.stringify(v) ?? "null").join(", ") + "]";
    }
    const inner = indent + "  ";
    return "[\n" + value.map((v) => inner + pretty(v, inner)).join(",\n") + "\n" + indent + "]";
  }
  if (value !== null && typeof value === "object") {
    const keys = Object.keys(value);
    if (!keys.length) return "{}";
    const inner = indent + "  ";
    const body = keys.map((k) => `${inner}${JSON.stringify(k)}: ${pretty(value[k], inner)}`);
    return "{\n" + body.join(",\n") + "\n" + indent + "}";
  }
  return JSON.stringify(value) ?? "null";
}

function formatJSON(value, limit = 4000) {
  let text;
  try {
    text = pretty(value, "");
  } catch (err) {
    text = String(value);
  }
  return text.length > limit ? text.slice(0, limit) + ` … (${text.length} characters)` : text;
}

function errorText(error) {
  if (!error) return "";
  return `${error.type || "Error"}: ${error.message || ""}`;
}

// ---------------------------------------------------------------------------
// HTTP with the token; 401 opens the token prompt, 403 says the role is too low.

class ApiError extends Error {
  constructor(status, error) {
    super(errorText(error));
    this.status = status;
    this.error = error;
  }
}

function getToken() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

function withToken(path) {
  const token = getToken();
  if (!token) return path;
  return path + (path.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token);
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  const token = getToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  const init = { method, headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw new ApiError(0, { type: "ConnectionError", message: "server unreachable" });
  }
  if (response.status === 204) return null;
  let data = null;
  const text = await response.text();
  if (text) {
    try {
      data = JSON.parse(text);
    } catch (err) {
      data = { error: { type: "BadResponse", message: text.slice(0, 200) } };
    }
  }
  if (!response.ok) {
    const error = (data && data.error) || { type: `HTTP ${response.status}`, message: response.statusText };
    if (response.status === 401) askToken(getToken() ? "The token was refused." : "This server needs an access token.");
    if (response.status === 403) {
      error.message = `role too low for ${method} ${path}` + (error.message ? ` (${error.message})` : "");
      error.type = "Forbidden";
      notify(`Permission denied: ${error.message}`);
    }
    throw new ApiError(response.status, error);
  }
  return data;
}

// ---------------------------------------------------------------------------
// Notices and the token prompt.

function notify(text) {
  $("notice-text").textContent = text;
  $("notice").hidden = false;
}

function askToken(reason) {
  $("auth-reason").textContent = reason;
  const form = $("auth");
  if (form.hidden) {
    form.hidden = false;
    $("token-input").value = "";
  }
  $("token-input").focus();
}

function setupAuth() {
  $("auth").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const start = performance.now();
    sessionStorage.setItem(TOKEN_KEY, $("token-input").value.trim());
    $("auth").hidden = true;
    $("notice").hidden = true;
    restart();
    perf.clicks.push(performance.now() - start);
  });
  onClick($("token-cancel"), () => { $("auth").hidden = true; });
  onClick($("token-change"), () => askToken("Enter a different access token."));
  onClick($("notice-close"), () => { $("notice").hidden = true; });
}

// ---------------------------------------------------------------------------
// One redraw per animation frame for everything that changed.

const dirty = new Set();
let frameRequested = false;

function markDirty(item) {
  dirty.add(item);
  if (!frameRequested) {
    frameRequested = true;
    requestAnimationFrame(renderFrame);
  }
}

function renderFrame(now) {
  frameRequested = false;
  const items = [...dirty];
  dirty.clear();
  for (const item of items) {
    try {
      if (item.render(now) === false) markDirty(item);   // not due yet: try next frame
    } catch (err) {
      console.error("labd: render failed", err);
    }
  }
}

// ---------------------------------------------------------------------------
// Parameter inputs shared by method forms and the task start form.

function paramInput(prefix, param) {
  const id = `${prefix}-${safeId(param.name)}`;
  const kind = String(param.kind || "").toUpperCase();
  let hint = param.annotation ? param.annotation : "";
  if (kind === "VAR_POSITIONAL") hint = "JSON list of extra arguments";
  if (kind === "VAR_KEYWORD") hint = "JSON object of extra keyword arguments";
  const label = h("label", { for: id },
    h("span", { class: "pname", text: (kind === "VAR_POSITIONAL" ? "*" : kind === "VAR_KEYWORD" ? "**" : "") + param.name }),
    param.required ? h("span", { class: "req", text: " *", "aria-hidden": "true" }) : null,
    hint ? h("span", { class: "ann", text: ` ${hint}` }) : null);
  const placeholder = param.required ? "required" : `default: ${JSON.stringify(param.default)}`;
  if (Array.isArray(param.choices) && param.choices.length && !kind.startsWith("VAR_")) {
    // Literal/Enum parameters: offer the allowed values; option values are JSON text.
    const select = h("select", {
      id, name: param.name, required: param.required, testid: `${prefix}-${param.name}`,
    });
    if (!param.required) select.append(h("option", { value: "", text: placeholder }));
    for (const choice of param.choices) {
      select.append(h("option", { value: JSON.stringify(choice), text: String(choice) }));
    }
    select.dataset.kind = kind;
    select.dataset.annotation = "";   // the value is JSON text: parse it
    return h("div", { class: "field" }, label, select);
  }
  const input = h("input", {
    id, name: param.name, autocomplete: "off", spellcheck: "false",
    placeholder: kind.startsWith("VAR_") ? "" : placeholder,
    required: param.required && !kind.startsWith("VAR_"),
    testid: `${prefix}-${param.name}`,
  });
  input.dataset.kind = kind;
  input.dataset.annotation = param.annotation || "";
  return h("div", { class: "field" }, label, input);
}

// Inputs are parsed as JSON when they parse (numbers, booleans, lists, objects, null),
// else taken as strings; a parameter annotated `str` always stays a string.
const STR_ANNOTATIONS = new Set(["str", "'str'", "<class 'str'>"]);

function parseValue(text, annotation) {
  if (STR_ANNOTATIONS.has(annotation)) return text;
  try {
    return JSON.parse(text);
  } catch (err) {
    return text;
  }
}

function collectArgs(form) {
  const args = [];
  const kwargs = {};
  for (const input of form.querySelectorAll("input[data-kind], select[data-kind]")) {
    const text = input.value;
    const kind = input.dataset.kind;
    const annotation = input.dataset.annotation;
    if (text === "") continue;   // left empty: the default applies (or the server names what is missing)
    if (kind === "VAR_POSITIONAL") {
      const extra = parseValue(text, "");
      if (!Array.isArray(extra)) throw new Error(`*${input.name} must be a JSON list`);
      args.push(...extra);
    } else if (kind === "VAR_KEYWORD") {
      const extra = parseValue(text, "");
      if (extra === null || typeof extra !== "object" || Array.isArray(extra)) {
        throw new Error(`**${input.name} must be a JSON object`);
      }
      Object.assign(kwargs, extra);
    } else if (kind === "POSITIONAL_ONLY") {
      args.push(parseValue(text, annotation));
    } else {
      kwargs[input.name] = parseValue(text, annotation);
    }
  }
  return { args, kwargs };
}

// ---------------------------------------------------------------------------
// Devices.

const devices = new Map();   // device_id -> DeviceCard
// Methods driven by the card's buttons rather than a form: they go through the daemon's
// own endpoints (connection state, the stream hub), and a stream callback cannot be sent.
const HAS_BUTTON = new Set(["connect", "disconnect", "start_streaming", "stop_streaming"]);

class DeviceCard {
  constructor(info) {
    this.id = info.device_id;
    this.info = info;
    this.stream = null;
    this.methodsLoaded = false;
    this.refreshing = null;
    this.refreshAgain = false;
    this.build();
    this.update(info);
  }

  build() {
    const id = this.id;
    const sid = safeId(id);
    this.statusEl = h("span", { class: "badges", testid: `status-${id}` });
    this.typeEl = h("span", { class: "dtype" });
    this.errorText = h("span", { testid: `error-${id}` });
    this.errorClear = h("button", { type: "button", class: "quiet", testid: `clear-error-${id}`, text: "Clear" });
    this.errorBox = h("div", { class: "device-error", role: "alert" }, this.errorText, " ", this.errorClear);
    this.connectBtn = h("button", { type: "button", testid: `connect-${id}`, text: "Connect" });
    this.disconnectBtn = h("button", { type: "button", testid: `disconnect-${id}`, text: "Disconnect" });
    this.startBtn = h("button", { type: "button", testid: `stream-start-${id}`, text: "Start stream" });
    this.stopBtn = h("button", { type: "button", testid: `stream-stop-${id}`, text: "Stop stream" });
    this.watchBtn = h("button", { type: "button", testid: `watch-${id}`, "aria-pressed": "false", text: "Watch" });
    this.streamArea = h("div", { class: "stream-area" });
    this.methodsBody = h("div", { class: "methods-body" });
    this.methods = h("details", { class: "methods", testid: `methods-${id}` },
      h("summary", { text: "Methods" }), this.methodsBody);
    this.el = h("article", { class: "device card", testid: `device-${id}`, "aria-labelledby": `dev-${sid}-title` },
      h("header", { class: "card-head" },
        h("h3", { id: `dev-${sid}-title`, text: id }), this.typeEl, this.statusEl),
      this.errorBox,
      h("div", { class: "actions" }, this.connectBtn, this.disconnectBtn, this.startBtn, this.stopBtn, this.watchBtn),
      this.streamArea,
      this.methods);

    const path = `/devices/${encodeURIComponent(id)}`;
    const act = (btn, method, sub, body) => onClick(btn, () => {
      btn.disabled = true;
      api(method, path + sub, body)
        .then((info) => { if (info && info.device_id) this.update(info); else this.refresh(); })
        .catch((err) => notify(`${id}: ${err.message}`))
        .finally(() => { btn.disabled = false; });
    });
    act(this.connectBtn, "POST", "/connect");
    act(this.disconnectBtn, "POST", "/disconnect");
    act(this.startBtn, "POST", "/streaming/start", { kwargs: {} });
    act(this.stopBtn, "POST", "/streaming/stop");
    act(this.errorClear, "DELETE", "/error");
    onClick(this.watchBtn, () => this.toggleWatch());
    this.methods.addEventListener("toggle", () => {
      if (this.methods.open && !this.methodsLoaded) this.loadMethods();
    });
    // Stream controls appear once the methods show the device can stream.
    this.streamControls = [this.startBtn, this.stopBtn, this.watchBtn];
    for (const btn of this.streamControls) btn.hidden = true;
    this.loadMethods();
  }

  update(info) {
    this.info = info;
    this.typeEl.textContent = info.device_type || "";
    const badges = [];
    badges.push(h("span", { class: `badge ${info.connected ? "ok" : "off"}`, testid: `connected-${this.id}`,
      text: info.connected ? "connected" : "disconnected" }));
    if (info.streaming) badges.push(h("span", { class: "badge live", testid: `streaming-${this.id}`, text: "streaming" }));
    if (info.owned_by) badges.push(h("span", { class: "badge owner", testid: `owner-${this.id}`, text: `owned by ${info.owned_by}` }));
    this.statusEl.replaceChildren(...badges);
    this.el.dataset.connected = String(!!info.connected);
    this.el.dataset.streaming = String(!!info.streaming);
    this.el.dataset.owner = info.owned_by || "";
    const err = info.last_error;
    this.errorBox.hidden = !err;
    this.errorText.textContent = err ? `${errorText(err)}${err.origin ? ` (${err.origin})` : ""}` : "";
    this.connectBtn.disabled = !!info.connected;
    this.disconnectBtn.disabled = !info.connected;
  }

  // One GET for this device; calls made while one is in flight collapse into one more.
  refresh() {
    if (this.refreshing) {
      this.refreshAgain = true;
      return this.refreshing;
    }
    this.refreshing = api("GET", `/devices/${encodeURIComponent(this.id)}`)
      .then((info) => this.update(info))
      .catch((err) => { if (err.status === 404) removeDevice(this.id); })
      .finally(() => {
        this.refreshing = null;
        if (this.refreshAgain) {
          this.refreshAgain = false;
          this.refresh();
        }
      });
    return this.refreshing;
  }

  async loadMethods() {
    this.methodsLoaded = true;
    this.methodsBody.replaceChildren(h("p", { class: "empty", text: "Loading…" }));
    try {
      const data = await api("GET", `/devices/${encodeURIComponent(this.id)}/methods`);
      const methods = data.methods || [];
      const streams = methods.some((m) => m.name === "start_streaming");
      for (const btn of this.streamControls) btn.hidden = !streams;
      const forms = methods.filter((m) => !HAS_BUTTON.has(m.name)).map((m) => this.methodForm(m));
      this.methodsBody.replaceChildren(...(forms.length ? forms : [h("p", { class: "empty", text: "No public methods." })]));
    } catch (err) {
      this.methodsLoaded = false;
      for (const btn of this.streamControls) btn.hidden = false;
      this.methodsBody.replaceChildren(h("p", { class: "error", text: `Could not load methods: ${err.message}` }));
    }
  }

  methodForm(method) {
    const id = this.id;
    const prefix = `arg-${safeId(id)}-${safeId(method.name)}`;
    const params = (method.parameters || []).filter((p) => p.name !== "self");
    const output = h("output", { class: "result", testid: `result-${id}-${method.name}`, "aria-live": "polite" });
    const button = h("button", { type: "submit", text: "Call" });
    const sig = params.map((p) => p.name).join(", ");
    const form = h("form", { class: "method", testid: `method-${id}-${method.name}` },
      h("div", { class: "method-head" },
        h("code", { class: "mname", text: `${method.name}(${sig})` }),
        method.query ? h("span", { class: "badge query", title: "read-only: allowed while the device is owned, and for viewers", text: "query" }) : null,
        method.returns ? h("span", { class: "ann", text: `→ ${method.returns}` }) : null),
      method.doc ? h("p", { class: "doc", text: method.doc.split("\n")[0].replace(/``/g, "") }) : null,
      params.length ? h("div", { class: "params" }, ...params.map((p) => paramInput(prefix, p))) : null,
      h("div", { class: "method-foot" }, button, output));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const start = performance.now();
      let body;
      try {
        const { args, kwargs } = collectArgs(form);
        body = { method: method.name, args, kwargs };
      } catch (err) {
        output.className = "result error";
        output.textContent = err.message;
        return;
      }
      button.disabled = true;
      output.className = "result pending";
      output.textContent = "…";
      api("POST", `/devices/${encodeURIComponent(id)}/call`, body)
        .then((data) => {
          output.className = "result ok";
          output.textContent = formatJSON(data ? data.result : null);
        })
        .catch((err) => {
          output.className = "result error";
          output.textContent = err.message;
        })
        .finally(() => { button.disabled = false; });
      perf.clicks.push(performance.now() - start);
    });
    return form;
  }

  toggleWatch() {
    if (this.stream) {
      this.stream.close();
      this.stream = null;
    } else {
      this.stream = new StreamView(this.id, this.streamArea);
    }
    this.watchBtn.setAttribute("aria-pressed", String(!!this.stream));
    this.watchBtn.textContent = this.stream ? "Unwatch" : "Watch";
    this.watchBtn.classList.toggle("on", !!this.stream);
  }

  // After a new token: reopen the watched stream, retry methods that were refused.
  reopen() {
    if (this.stream) this.stream.open();
    if (!this.methodsLoaded) this.loadMethods();
  }

  destroy() {
    if (this.stream) this.stream.close();
    this.stream = null;
    this.el.remove();
  }
}

function addOrUpdateDevice(info) {
  let card = devices.get(info.device_id);
  if (card) {
    card.update(info);
    return card;
  }
  card = new DeviceCard(info);
  devices.set(info.device_id, card);
  // keep the list in id order
  const list = $("device-list");
  const after = [...devices.keys()].sort().find((key) => key > info.device_id);
  if (after && devices.get(after).el.parentNode === list) list.insertBefore(card.el, devices.get(after).el);
  else list.append(card.el);
  $("devices-empty").hidden = devices.size > 0;
  return card;
}

function removeDevice(id) {
  const card = devices.get(id);
  if (!card) return;
  card.destroy();
  devices.delete(id);
  $("devices-empty").hidden = devices.size > 0;
}

// Fetch an item the page has no card for yet. Callers asking again while it is on its
// way share the same fetch (and promise); a failure (gone again, not allowed) is left
// for the next event or resync to settle.
function fetchNew(inflight, id, path, add) {
  let pending = inflight.get(id);
  if (!pending) {
    pending = api("GET", path)
      .then(add, () => {})
      .finally(() => inflight.delete(id));
    inflight.set(id, pending);
  }
  return pending;
}

const fetchingDevices = new Map();

function refreshDevice(id) {
  const card = devices.get(id);
  if (card) return card.refresh();
  return fetchNew(fetchingDevices, id, `/devices/${encodeURIComponent(id)}`, addOrUpdateDevice);
}

// ---------------------------------------------------------------------------
// Live stream view: counters, a plot chosen by payload kind, and an image canvas.
//
// Payload kinds and how they are shown:
//   number or boolean           -> rolling time series
//   array of <= 16 numbers      -> rolling time series, one line per element (a DAQ sample
//                                  per channel reads best as channels over time)
//   longer array of numbers     -> a trace of the latest array, x = index (decimated)
//   object of numbers           -> rolling time series, one line per key
//   2-D array, rows of <= 16    -> a block of samples (rows) per channel (columns), appended
//                                  to the channel time series
//   other 2-D array of numbers  -> grayscale image of the latest frame, autoscaled
//   anything else               -> the latest payload as JSON text

function classify(payload) {
  if (typeof payload === "number" || typeof payload === "boolean") return { kind: "scalar", keys: ["value"] };
  if (Array.isArray(payload)) {
    if (payload.length > 0 && Array.isArray(payload[0])) {
      if (Array.isArray(payload[0][0])) return { kind: "text" };
      const width = payload[0].length;
      if (width > 0 && width <= SMALL_ARRAY) return { kind: "block", keys: payload[0].map((_, i) => `ch${i}`) };
      return { kind: "image" };
    }
    if (payload.every((v) => typeof v === "number" || v === null)) {
      if (payload.length <= SMALL_ARRAY) return { kind: "channels", keys: payload.map((_, i) => `ch${i}`) };
      return { kind: "trace", keys: ["value"] };
    }
    return { kind: "text" };
  }
  if (payload !== null && typeof payload === "object") {
    const keys = Object.keys(payload).filter((k) => typeof payload[k] === "number" || typeof payload[k] === "boolean");
    if (keys.length > 0) return { kind: "dict", keys };
  }
  return { kind: "text" };
}

// RFC 3339 → POSIX seconds, keeping the microseconds that Date.parse drops.
function parseTime(text) {
  const seconds = Date.parse(text) / 1000;
  const micro = /\.\d{3}(\d{1,3})/.exec(text);
  return micro ? seconds + Number(micro[1].padEnd(3, "0")) / 1e6 : seconds;
}

function sameShape(a, b) {
  return a.kind === b.kind && (a.keys || []).join("\u0000") === (b.keys || []).join("\u0000");
}

class StreamView {
  constructor(deviceId, container) {
    this.id = deviceId;
    this.pending = [];
    this.received = 0;
    this.drops = 0;
    this.lastSeq = null;
    this.lastRun = null;
    this.rate = 0;
    this.rateCount = 0;
    this.rateSince = performance.now();
    this.lastRender = 0;
    this.shape = null;
    this.plot = null;
    this.xs = [];
    this.ys = [];
    this.source = null;

    const id = deviceId;
    this.pointsEl = h("span", { class: "num", testid: `points-${id}`, text: "0" });
    this.rateEl = h("span", { class: "num", testid: `rate-${id}`, text: "0" });
    this.dropsEl = h("span", { class: "num", testid: `drops-${id}`, text: "0" });
    this.seqEl = h("span", { class: "num", testid: `seq-${id}`, text: "–" });
    this.stateEl = h("span", { class: "stream-state", testid: `stream-state-${id}`, text: "connecting" });
    this.plotBox = h("div", { class: "plot", testid: `plot-${id}` });
    this.textBox = h("pre", { class: "payload-text", testid: `payload-${id}`, hidden: true });
    this.canvas = h("canvas", { class: "image", testid: `image-${id}`, hidden: true, "aria-label": `latest frame from ${id}` });
    this.el = h("div", { class: "stream", testid: `stream-${id}` },
      h("dl", { class: "counters" },
        h("div", {}, h("dt", { text: "points" }), h("dd", {}, this.pointsEl)),
        h("div", {}, h("dt", { text: "rate /s" }), h("dd", {}, this.rateEl)),
        h("div", {}, h("dt", { text: "drops" }), h("dd", {}, this.dropsEl)),
        h("div", {}, h("dt", { text: "last seq" }), h("dd", {}, this.seqEl)),
        h("div", {}, h("dt", { text: "stream" }), h("dd", {}, this.stateEl))),
      this.plotBox, this.canvas, this.textBox);
    container.append(this.el);
    this.resizer = new ResizeObserver(() => {
      if (this.plot) this.plot.setSize(this.plotSize());
    });
    this.resizer.observe(this.plotBox);
    // The rate and counters move once a second even when nothing arrives.
    this.ticker = setInterval(() => markDirty(this), 1000);
    this.open();
  }

  open() {
    if (this.source) this.source.close();
    const source = new EventSource(withToken(`/stream/devices/${encodeURIComponent(this.id)}`));
    this.source = source;
    // Kept cheap on purpose: count, check the sequence, queue the text; parse when drawing.
    source.addEventListener("device_data", (ev) => {
      const seq = Number(ev.lastEventId);
      if (this.lastSeq !== null && seq > this.lastSeq + 1) this.drops += seq - this.lastSeq - 1;
      this.lastSeq = seq;    // a smaller number means the stream was restarted: not a drop
      this.received += 1;
      this.rateCount += 1;
      this.pending.push(ev.data);
      if (this.pending.length > PENDING_LIMIT) this.pending.splice(0, this.pending.length - PENDING_LIMIT / 2);
      markDirty(this);
    });
    source.addEventListener("stream_end", () => this.setState("ended"));
    source.addEventListener("stream_error", (ev) => {
      let text = "stream error";
      try {
        const data = JSON.parse(ev.data);
        if (data.error) text = errorText(data.error);
      } catch (err) { /* keep the generic text */ }
      this.setState(text);
    });
    source.addEventListener("open", () => this.setState("live"));
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CLOSED) {
        this.setState("closed");
        probeAuth();
      } else {
        this.setState("reconnecting");
      }
    });
  }

  setState(text) {
    this.stateEl.textContent = text;
  }

  plotSize() {
    const width = Math.max(200, this.plotBox.clientWidth || 400);
    return { width, height: 200 };
  }

  makePlot(shape) {
    if (this.plot) this.plot.destroy();
    this.plot = null;
    this.xs = [];
    this.ys = (shape.keys || []).map(() => []);
    this.plotBox.hidden = shape.kind === "image" || shape.kind === "text";
    this.canvas.hidden = shape.kind !== "image";
    this.textBox.hidden = shape.kind !== "text";
    this.el.dataset.kind = shape.kind;
    if (this.plotBox.hidden) return;
    const timeX = shape.kind !== "trace";
    const series = [{ label: timeX ? "time" : "index" }];
    shape.keys.forEach((key, i) => series.push({ label: key, stroke: PALETTE[i % PALETTE.length], width: 1, points: { show: false } }));
    const opts = {
      ...this.plotSize(),
      series,
      scales: { x: { time: timeX } },
      legend: { show: shape.keys.length > 1, live: false },
      cursor: { drag: { x: false, y: false }, points: { show: false } },
      axes: [{}, { size: 60 }],
    };
    this.plot = new uPlot(opts, [[], ...shape.keys.map(() => [])], this.plotBox);
  }

  render(now) {
    const t = performance.now();
    if (t - this.rateSince >= 1000) {
      this.rate = (this.rateCount * 1000) / (t - this.rateSince);
      this.rateCount = 0;
      this.rateSince = t;
    }
    if (this.pending.length && t - this.lastRender < MIN_FRAME_MS) return false;
    this.pointsEl.textContent = String(this.received);
    this.rateEl.textContent = this.rate >= 10 ? String(Math.round(this.rate)) : this.rate.toFixed(1);
    this.dropsEl.textContent = String(this.drops);
    this.seqEl.textContent = this.lastSeq === null ? "–" : String(this.lastSeq);
    if (!this.pending.length) return true;
    this.lastRender = t;
    const batch = this.pending;
    this.pending = [];
    this.draw(batch);
    perf.renders += 1;
    return true;
  }

  draw(batch) {
    // Only the latest frame matters for traces, images and text: parse just that one.
    let envelopes;
    const last = JSON.parse(batch[batch.length - 1]);
    const shape = classify(last.payload);
    if (!this.shape || !sameShape(shape, this.shape)) {
      this.shape = shape;
      this.makePlot(shape);
    }
    if (shape.kind === "image") return this.drawImage(last.payload);
    if (shape.kind === "text") {
      this.textBox.textContent = formatJSON(last.payload, 2000);
      return;
    }
    if (shape.kind === "trace") return this.drawTrace(last.payload);
    const start = Math.max(0, batch.length - PLOT_POINTS);
    envelopes = batch.slice(start, -1).map((text) => JSON.parse(text));
    envelopes.push(last);
    const keys = shape.keys;
    const before = this.xs.length;
    for (const env of envelopes) {
      const p = env.payload;
      const x = parseTime(env.timestamp);
      if (shape.kind === "scalar") {
        if (typeof p !== "number" && typeof p !== "boolean") continue;
        this.xs.push(x);
        this.ys[0].push(Number(p));
      } else if (shape.kind === "channels") {
        if (!Array.isArray(p)) continue;
        this.xs.push(x);
        for (let i = 0; i < keys.length; i++) this.ys[i].push(p[i] ?? null);
      } else if (shape.kind === "block") {
        if (!Array.isArray(p) || !p.length) continue;
        // rows share one timestamp: spread them evenly since the previous block
        const prev = this.xs.length ? this.xs[this.xs.length - 1] : x - 0.001;
        const dt = Math.max(x - prev, 0) / p.length;
        for (let r = 0; r < p.length; r++) {
          const row = p[r];
          this.xs.push(prev + dt * (r + 1));
          for (let i = 0; i < keys.length; i++) this.ys[i].push(Array.isArray(row) ? row[i] ?? null : null);
        }
      } else {
        if (p === null || typeof p !== "object") continue;
        this.xs.push(x);
        for (let i = 0; i < keys.length; i++) {
          const v = p[keys[i]];
          this.ys[i].push(typeof v === "number" || typeof v === "boolean" ? Number(v) : null);
        }
      }
    }
    const plotted = this.xs.length - before;
    const excess = this.xs.length - PLOT_POINTS;
    if (excess > 0) {
      this.xs.splice(0, excess);
      for (const ys of this.ys) ys.splice(0, excess);
    }
    this.plot.setData([this.xs, ...this.ys]);
    perf.plottedPoints += plotted * keys.length;
  }

  drawTrace(values) {
    const step = Math.max(1, Math.ceil(values.length / TRACE_POINTS));
    const xs = [];
    const ys = [];
    for (let i = 0; i < values.length; i += step) {
      xs.push(i);
      ys.push(values[i]);
    }
    this.plot.setData([xs, ys]);
    perf.plottedPoints += xs.length;
  }

  drawImage(rows) {
    const height = rows.length;
    const width = rows[0].length;
    let lo = Infinity;
    let hi = -Infinity;
    for (const row of rows) {
      for (const v of row) {
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
    }
    const span = hi > lo ? 255 / (hi - lo) : 0;
    if (this.canvas.width !== width || this.canvas.height !== height) {
      this.canvas.width = width;
      this.canvas.height = height;
    }
    const ctx = this.canvas.getContext("2d");
    const image = ctx.createImageData(width, height);
    const px = image.data;
    let k = 0;
    for (const row of rows) {
      for (let j = 0; j < width; j++) {
        const g = span ? Math.round((row[j] - lo) * span) : 0;
        px[k] = g; px[k + 1] = g; px[k + 2] = g; px[k + 3] = 255;
        k += 4;
      }
    }
    ctx.putImageData(image, 0, 0);
    this.canvas.title = `${width}×${height}, min ${lo}, max ${hi}`;
    perf.plottedPoints += width * height;
  }

  close() {
    if (this.source) this.source.close();
    this.source = null;
    clearInterval(this.ticker);
    this.resizer.disconnect();
    dirty.delete(this);
    if (this.plot) this.plot.destroy();
    this.plot = null;
    this.el.remove();
  }
}

// ---------------------------------------------------------------------------
// Tasks.

const tasks = new Map();   // task_id -> TaskCard
let taskTypes = [];
const FINISHED = new Set(["completed", "failed", "cancelled"]);

class TaskCard {
  constructor(info) {
    this.id = info.task_id;
    this.info = info;
    this.refreshing = null;
    this.refreshAgain = false;
    this.build();
    this.update(info);
  }

  build() {
    const id = this.id;
    const sid = safeId(id);
    this.statusEl = h("span", { class: "badge", testid: `task-status-${id}` });
    this.typeEl = h("span", { class: "dtype" });
    this.barFill = h("div", { class: "bar-fill" });
    this.barText = h("span", { class: "bar-text" });
    this.bar = h("div", {
      class: "bar", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100",
      "aria-valuenow": "0", "aria-label": `progress of ${id}`, testid: `progress-${id}`,
    }, this.barFill, this.barText);
    this.messageEl = h("p", { class: "task-message", testid: `task-message-${id}` });
    this.cancelBtn = h("button", { type: "button", testid: `cancel-${id}`, text: "Cancel" });
    this.pauseBtn = h("button", { type: "button", testid: `pause-${id}`, text: "Pause" });
    this.resumeBtn = h("button", { type: "button", testid: `resume-${id}`, text: "Resume" });
    this.outcome = h("pre", { class: "result", testid: `task-result-${id}`, hidden: true });
    this.paramKey = h("input", { id: `pk-${sid}`, autocomplete: "off", testid: `param-key-${id}`, required: true });
    this.paramValue = h("input", { id: `pv-${sid}`, autocomplete: "off", testid: `param-value-${id}` });
    this.paramOut = h("output", { class: "result", testid: `param-result-${id}` });
    this.paramForm = h("form", { class: "param-edit", testid: `param-${id}` },
      h("label", { for: `pk-${sid}`, text: "parameter" }), this.paramKey,
      h("label", { for: `pv-${sid}`, text: "value" }), this.paramValue,
      h("button", { type: "submit", text: "Set" }), this.paramOut);
    this.el = h("article", { class: "task card", testid: `task-${id}`, "aria-labelledby": `task-${sid}-title` },
      h("header", { class: "card-head" },
        h("h3", { id: `task-${sid}-title`, text: id }), this.typeEl, this.statusEl),
      this.bar, this.messageEl,
      h("div", { class: "actions" }, this.cancelBtn, this.pauseBtn, this.resumeBtn),
      this.paramForm, this.outcome);

    const path = `/tasks/${encodeURIComponent(id)}`;
    const act = (btn, sub) => onClick(btn, () => {
      btn.disabled = true;
      api("POST", path + sub)
        .then(() => this.refresh())
        .catch((err) => { notify(`${id}: ${err.message}`); this.refresh(); });
    });
    act(this.cancelBtn, "/cancel");
    act(this.pauseBtn, "/pause");
    act(this.resumeBtn, "/resume");
    this.paramForm.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const start = performance.now();
      const body = { key: this.paramKey.value.trim(), value: parseValue(this.paramValue.value, "") };
      this.paramOut.className = "result pending";
      this.paramOut.textContent = "…";
      api("POST", `${path}/parameters`, body)
        .then(() => { this.paramOut.className = "result ok"; this.paramOut.textContent = `${body.key} = ${JSON.stringify(body.value)}`; })
        .catch((err) => { this.paramOut.className = "result error"; this.paramOut.textContent = err.message; });
      perf.clicks.push(performance.now() - start);
    });
  }

  update(info) {
    this.info = { ...this.info, ...info };
    const t = this.info;
    this.typeEl.textContent = t.task_type || "";
    const status = t.status || (t.running ? "running" : "");
    this.statusEl.textContent = status;
    this.statusEl.className = `badge st-${status}`;
    this.el.dataset.status = status;
    this.setProgress(t.progress);
    this.messageEl.textContent = t.message || "";
    const finished = FINISHED.has(status);
    this.cancelBtn.disabled = finished;
    this.pauseBtn.disabled = finished || status === "paused";
    this.resumeBtn.disabled = status !== "paused";
    this.paramForm.hidden = finished;
    if (finished) {
      const parts = [];
      if (t.exception) parts.push(`error: ${errorText(t.exception)}`);
      if (t.result !== undefined && t.result !== null) parts.push(`result: ${formatJSON(t.result)}`);
      this.outcome.textContent = parts.join("\n") || "no result";
      this.outcome.className = t.exception ? "result error" : "result ok";
      this.outcome.hidden = false;
    } else {
      this.outcome.hidden = true;
    }
  }

  setProgress(progress) {
    if (typeof progress !== "number" || Number.isNaN(progress)) {
      if (this.bar.dataset.set) return;   // keep the last known value
      this.barText.textContent = "–";
      return;
    }
    const pct = Math.max(0, Math.min(100, Math.round(progress * 100)));
    this.bar.dataset.set = "1";
    this.bar.setAttribute("aria-valuenow", String(pct));
    this.barFill.style.width = `${pct}%`;
    this.barText.textContent = `${pct}%`;
  }

  refresh() {
    if (this.refreshing) {
      this.refreshAgain = true;
      return this.refreshing;
    }
    this.refreshing = api("GET", `/tasks/${encodeURIComponent(this.id)}`)
      .then((info) => this.update(info))
      .catch((err) => { if (err.status === 404) removeTask(this.id); })
      .finally(() => {
        this.refreshing = null;
        if (this.refreshAgain) {
          this.refreshAgain = false;
          this.refresh();
        }
      });
    return this.refreshing;
  }

  // Progress events come as often as a task reports: apply them once per frame.
  render() {
    if (this.pendingProgress) {
      const ev = this.pendingProgress;
      this.pendingProgress = null;
      const info = {};
      if (typeof ev.progress === "number") info.progress = ev.progress;
      if (ev.message !== undefined && ev.message !== null) info.message = ev.message;
      this.update(info);
    }
    return true;
  }
}

function addOrUpdateTask(info) {
  let card = tasks.get(info.task_id);
  if (card) {
    card.update(info);
    return card;
  }
  card = new TaskCard(info);
  tasks.set(info.task_id, card);
  $("task-list").prepend(card.el);   // newest first
  $("tasks-empty").hidden = tasks.size > 0;
  return card;
}

function removeTask(id) {
  const card = tasks.get(id);
  if (!card) return;
  card.el.remove();
  tasks.delete(id);
  $("tasks-empty").hidden = tasks.size > 0;
}

const fetchingTasks = new Map();

function refreshTask(id) {
  const card = tasks.get(id);
  if (card) return card.refresh();
  return fetchNew(fetchingTasks, id, `/tasks/${encodeURIComponent(id)}`, addOrUpdateTask);
}

// The task start form, rebuilt when the chosen type changes.
function renderTaskTypes(types) {
  taskTypes = types;
  const select = $("task-type");
  const previous = select.value;
  select.replaceChildren(...types.map((t) => h("option", { value: t.name, text: t.name })));
  if (types.some((t) => t.name === previous)) select.value = previous;
  $("task-start").hidden = types.length === 0;
  renderTaskParams();
}

function renderTaskParams() {
  const type = taskTypes.find((t) => t.name === $("task-type").value);
  const box = $("task-params");
  if (!type) {
    box.replaceChildren();
    return;
  }
  $("task-doc").textContent = type.doc ? type.doc.split("\n")[0].replace(/``/g, "") : "";
  const params = (type.parameters || []).filter((p) => p.name !== "self" && p.name !== "task_id");
  box.replaceChildren(...params.map((p) => paramInput(`tp-${safeId(type.name)}`, p)));
  const idInput = $("task-id");
  if (!idInput.value || idInput.dataset.auto === "1") {
    let n = 1;
    while (tasks.has(`${type.name}-${n}`)) n += 1;
    idInput.value = `${type.name}-${n}`;
    idInput.dataset.auto = "1";
  }
}

function setupTaskForm() {
  $("task-type").addEventListener("change", renderTaskParams);
  $("task-id").addEventListener("input", () => { $("task-id").dataset.auto = "0"; });
  $("task-start").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const start = performance.now();
    const out = $("task-start-result");
    let params;
    try {
      params = collectArgs($("task-params")).kwargs;
    } catch (err) {
      out.className = "result error";
      out.textContent = err.message;
      return;
    }
    const body = { task_id: $("task-id").value.trim(), task_type: $("task-type").value, params };
    out.className = "result pending";
    out.textContent = "starting…";
    api("POST", "/tasks", body)
      .then((data) => {
        out.className = "result ok";
        out.textContent = `started ${data.task_id}`;
        refreshTask(data.task_id);
        for (const id of data.device_ids || []) refreshDevice(id); // now owned by the task
        if ($("task-id").dataset.auto === "1") renderTaskParams();
      })
      .catch((err) => {
        out.className = "result error";
        out.textContent = err.message;
      });
    perf.clicks.push(performance.now() - start);
  });
}

// ---------------------------------------------------------------------------
// Full load, the event stream, and resync after a lost connection.

let events = null;
let eventsOpenedBefore = false;
let reconnectTimer = null;
let reconnectDelay = 1000;

async function loadAll() {
  const [devs, tsks, types, root] = await Promise.allSettled([
    api("GET", "/devices"), api("GET", "/tasks"), api("GET", "/task-types"), api("GET", "/"),
  ]);
  if (devs.status === "fulfilled") {
    const seen = new Set();
    for (const info of devs.value.devices || []) {
      seen.add(info.device_id);
      addOrUpdateDevice(info);
    }
    for (const id of [...devices.keys()]) if (!seen.has(id)) removeDevice(id);
  }
  if (tsks.status === "fulfilled") {
    const seen = new Set();
    const list = [...(tsks.value.tasks || [])].sort((a, b) => String(a.started_at || "").localeCompare(String(b.started_at || "")));
    for (const info of list) {
      seen.add(info.task_id);
      addOrUpdateTask(info);
    }
    for (const id of [...tasks.keys()]) if (!seen.has(id)) removeTask(id);
  }
  if (types.status === "fulfilled") {
    const value = types.value;
    renderTaskTypes(Array.isArray(value) ? value : value.task_types || []);
  }
  if (root.status === "fulfilled" && root.value) {
    const r = root.value;
    $("server-name").textContent = [r.name, r.version].filter(Boolean).join(" ");
  }
  document.body.dataset.loaded = "1";
  return devs.status === "fulfilled";
}

function setEventsState(state, text) {
  const el = $("events-status");
  el.dataset.state = state;
  el.textContent = text;
}

const EVENT_TYPES = ["device_added", "device_removed", "device_connected", "device_disconnected",
  "streaming_started", "streaming_stopped", "task_started", "task_progress", "task_status",
  "task_finished", "error_recorded", "error_cleared"];

function handleEvent(type, data) {
  const deviceId = data.device_id;
  const taskId = data.task_id;
  if (type === "device_removed") {
    removeDevice(deviceId);
    return;
  }
  if (type === "task_progress") {
    const card = tasks.get(taskId);
    if (!card) {
      refreshTask(taskId);
      return;
    }
    card.pendingProgress = data;
    markDirty(card);
    return;
  }
  if (type === "task_started" || type === "task_finished") {
    // Claiming and releasing devices changes their owner without a device event.
    // task_started names the devices; for task_finished the task's card knows them.
    const known = tasks.get(taskId);
    const claimed = data.device_ids || (known && known.info.device_ids) || [];
    for (const id of claimed) refreshDevice(id);
    Promise.resolve(refreshTask(taskId)).then(() => {
      const card = tasks.get(taskId);
      for (const id of (card && card.info.device_ids) || []) {
        if (!claimed.includes(id)) refreshDevice(id);
      }
    });
    if (type === "task_started") return;
  }
  if (type === "task_status" || type === "task_finished") {
    const card = tasks.get(taskId);
    if (card && data.status) {
      const info = { status: data.status, running: !FINISHED.has(data.status), paused: data.status === "paused" };
      if (type === "task_finished") {
        info.result = data.result;
        info.exception = data.error || null;
      }
      card.update(info);
    }
    if (type === "task_status") refreshTask(taskId);
    return;
  }
  if (deviceId !== undefined && deviceId !== null) refreshDevice(deviceId);
  else if (taskId !== undefined && taskId !== null) refreshTask(taskId);
}

function connectEvents() {
  if (events) events.close();
  clearTimeout(reconnectTimer);
  const source = new EventSource(withToken("/stream/events"));
  events = source;
  setEventsState("connecting", "connecting…");
  const dispatch = (ev) => {
    let data;
    try {
      data = JSON.parse(ev.data);
    } catch (err) {
      return;
    }
    handleEvent(data.event || ev.type, data);
  };
  for (const type of EVENT_TYPES) source.addEventListener(type, dispatch);
  source.addEventListener("message", dispatch);
  source.addEventListener("open", () => {
    setEventsState("live", "live");
    reconnectDelay = 1000;
    // Anything may have changed while we were away: sync the lists once.
    if (eventsOpenedBefore) loadAll();
    eventsOpenedBefore = true;
  });
  source.addEventListener("error", () => {
    if (source !== events) return;
    if (source.readyState === EventSource.CLOSED) {
      // The server refused the stream (token?) or is gone: check, then try again later.
      setEventsState("down", "disconnected");
      eventsOpenedBefore = true;
      probeAuth();
      reconnectTimer = setTimeout(() => {
        if ($("auth").hidden) connectEvents();   // else submitting a token reconnects
      }, reconnectDelay);
      reconnectDelay = Math.min(reconnectDelay * 2, 30000);
    } else {
      setEventsState("reconnecting", "reconnecting…");
    }
  });
}

let probing = false;
function probeAuth() {
  if (probing) return;
  probing = true;
  api("GET", "/devices").catch(() => {}).finally(() => { probing = false; });
}

async function restart() {
  connectEvents();
  await loadAll();
  for (const card of devices.values()) {
    card.reopen();
  }
}

setupAuth();
setupTaskForm();
connectEvents();
loadAll();
