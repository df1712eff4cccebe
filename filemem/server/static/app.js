// filemem dashboard: plain JavaScript, no build step, no dependencies.
//
// Invariant: every value that comes from the store or the server is untrusted and reaches
// the page only as text (textContent, createTextNode) or as an attribute set through the DOM,
// never through innerHTML. The token lives in sessionStorage (this tab only) and goes out
// as "Authorization: Bearer" on fetch and as ?token= on the WebSocket (browsers cannot set
// headers there).
"use strict";

(() => {
  const TOKEN_KEY = "filemem.token";
  const TAIL_MAX = 300;
  const POLL_MS = 5000;
  // health() reads every shard of the store: ask for it every other round only.
  const HEALTH_EVERY = 2;
  const PREVIEW_CHARS = 140;
  const COLLECTOR_CODES = new Set([
    "unreplayed-journal", "collector-backlog", "collector-breaker-open", "dead-letters",
  ]);

  const state = {
    token: null,
    who: null,
    ws: null,
    wsRetry: 0,
    cursor: null,
    stopped: true,
    paused: false,
    tailSeen: 0,
    pollTimer: null,
    polls: 0,
    nsTimer: null,
    sessions: new Map(),
    namespaces: [],
    recordNs: null,
    recordNext: null,
  };

  // ------------------------------------------------------------------ DOM helpers

  const $ = (id) => document.getElementById(id);

  // el("td", {class: "num", title: "x"}, "text", childNode, ...): children are text or nodes.
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") node.className = value;
      else if (name === "style") node.style.cssText = value; // only ever our own numbers
      else node.setAttribute(name, String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function setText(id, text) { $(id).textContent = text; }
  function show(id, visible) { $(id).classList.toggle("hidden", !visible); }

  function preview(value) {
    let text;
    try { text = JSON.stringify(value); } catch (e) { text = String(value); }
    if (text === undefined) text = "";
    return text.length > PREVIEW_CHARS ? text.slice(0, PREVIEW_CHARS - 1) + "\u2026" : text;
  }

  function clock(ts) {
    if (typeof ts !== "number") return "";
    const d = new Date(ts * 1000);
    const pad = (n, w = 2) => String(n).padStart(w, "0");
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
  }

  function when(ts) {
    if (typeof ts !== "number") return "-";
    return new Date(ts * 1000).toLocaleString();
  }

  function ago(ts) {
    if (typeof ts !== "number") return "-";
    const s = Math.max(0, Date.now() / 1000 - ts);
    if (s < 60) return `${Math.floor(s)} s ago`;
    if (s < 3600) return `${Math.floor(s / 60)} min ago`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
    return `${Math.floor(s / 86400)} d ago`;
  }

  function nsPath(ns) { return ns.split("/").map(encodeURIComponent).join("/"); }

  // ------------------------------------------------------------------ API

  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  async function api(path, options = {}) {
    const headers = { Authorization: `Bearer ${state.token}` };
    let body;
    if (options.json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(options.json);
    }
    const res = await fetch(path, { method: options.method || "GET", headers, body, cache: "no-store" });
    let data = null;
    try { data = await res.json(); } catch (e) { data = null; }
    if (!res.ok) {
      const detail = (data && (data.detail || data.title)) || res.statusText || `HTTP ${res.status}`;
      if (res.status === 401) signOut(`the server refused the token: ${detail}`);
      throw new ApiError(res.status, detail);
    }
    return data;
  }

  // ------------------------------------------------------------------ sign in / out

  function showLogin(message) {
    show("main-view", false);
    show("logout", false);
    show("login-view", true);
    setText("login-error", message || "");
    setText("who", "");
    setText("store-path", "");
    $("token").focus();
  }

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = null;
    stopLive();
    showLogin(message);
  }

  async function signIn(token) {
    state.token = token;
    let who;
    try {
      who = await api("/v1/whoami");
    } catch (e) {
      sessionStorage.removeItem(TOKEN_KEY);
      state.token = null;
      showLogin(e.status === 401 ? "That token is not known to this server." : `Cannot reach the server: ${e.message}`);
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    state.who = who;
    const scopes = (who.scopes || []).join(", ");
    const where = (who.prefixes || []).length ? ` \u00b7 ${who.prefixes.join(", ")}` : " \u00b7 whole store";
    setText("who", `${who.name} (${scopes})${where}`);
    show("login-view", false);
    show("main-view", true);
    show("logout", true);
    startLive();
  }

  // ------------------------------------------------------------------ live: polling and the WebSocket

  function startLive() {
    state.stopped = false;
    refreshAll(true);
    state.pollTimer = setInterval(refreshAll, POLL_MS);
    connect();
  }

  function stopLive() {
    state.stopped = true;
    clearInterval(state.pollTimer);
    clearTimeout(state.nsTimer);
    if (state.ws) { try { state.ws.close(1000, "signed out"); } catch (e) { /* closing anyway */ } }
    state.ws = null;
    state.cursor = null;
    state.sessions.clear();
    setConn("off", "offline");
  }

  function refreshAll(force) {
    if (force === true || state.polls % HEALTH_EVERY === 0) refreshHealthAndStats();
    state.polls += 1;
    refreshSessions();
    refreshNamespaces();
  }

  function setConn(kind, text) {
    const node = $("conn");
    node.className = `conn conn-${kind}`;
    node.textContent = text;
  }

  function connect() {
    if (state.stopped) return;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    let url = `${scheme}//${location.host}/v1/changes?token=${encodeURIComponent(state.token)}`;
    if (state.cursor) url += `&cursor=${encodeURIComponent(state.cursor)}`;
    const ws = new WebSocket(url);
    state.ws = ws;
    setConn("wait", "connecting");
    ws.onmessage = (event) => {
      let msg;
      try { msg = JSON.parse(event.data); } catch (e) { return; }
      for (const m of Array.isArray(msg) ? msg : [msg]) onMessage(m);
    };
    ws.onclose = (event) => {
      if (state.ws !== ws) return;
      state.ws = null;
      if (state.stopped) return;
      if (event.code === 4401) { signOut(`live updates refused: ${event.reason || "unknown token"}`); return; }
      if (event.code === 4403) { setConn("off", "live updates not allowed"); return; }
      // Resume from the last cursor: the server replays what is retained, or says "missed".
      const delay = Math.min(10000, 500 * 2 ** state.wsRetry);
      state.wsRetry += 1;
      setConn("wait", `reconnecting in ${Math.round(delay / 1000)} s`);
      setTimeout(connect, delay);
    };
  }

  function onMessage(m) {
    if (!m || typeof m !== "object") return;
    if (m.cursor) state.cursor = String(m.cursor);
    if (m.type === "hello") {
      state.wsRetry = 0;
      setConn("live", "live");
    } else if (m.type === "change") {
      addTail(m);
      scheduleNamespaces();
      if (state.recordNs !== null && m.namespace === $("record-ns").value.trim() && m.key === $("record-key").value.trim()) {
        openRecord(m.namespace, m.key, true);
      }
    } else if (m.type === "session") {
      const s = m.session;
      if (s && s.id) state.sessions.set(String(s.id), s);
      renderSessions();
      addTail(m);
    } else if (m.type === "missed") {
      addTail(m);
      refreshAll(true); // we cannot know what we missed: read the current state again
    }
  }

  // ------------------------------------------------------------------ live tail

  function addTail(m) {
    state.tailSeen += 1;
    setText("tail-count", `${state.tailSeen} seen`);
    if (state.paused) return;
    let op;
    let what;
    let extra = "";
    if (m.type === "change") {
      op = m.op || "write";
      if (m.key === null || m.key === undefined) {
        what = m.namespace;
        extra = "changed (which keys is not known: reload a view to see)";
      } else {
        what = `${m.namespace} / ${m.key}`;
      }
      if (op === "put") extra = (m.value_omitted ? "(large value)" : preview(m.value)) + ` \u00b7 v${m.version}`;
    } else if (m.type === "session") {
      op = "session";
      const s = m.session || {};
      what = `${s.agent || "?"} ${m.event || ""}`;
      extra = [s.state, s.status, typeof s.progress === "number" ? `${Math.round(s.progress * 100)}%` : null]
        .filter(Boolean).join(" \u00b7 ");
    } else {
      op = "missed";
      what = "some changes were missed";
      extra = m.reason ? `(${m.reason}); the views were reloaded` : "the views were reloaded";
    }
    const item = el("li", { class: "fresh", "data-op": op },
      el("span", { class: "muted" }, clock(typeof m.time === "number" ? m.time : Date.now() / 1000)),
      el("span", { class: `op op-${op}` }, op),
      el("span", {}, el("span", { class: "what" }, what), extra ? el("div", { class: "preview" }, extra) : null));
    if (m.type === "change" && m.key !== null && m.key !== undefined && op !== "delete") {
      item.addEventListener("click", () => openRecord(m.namespace, m.key));
    }
    const list = $("tail-list");
    list.prepend(item);
    while (list.childElementCount > TAIL_MAX) list.lastElementChild.remove();
  }

  // ------------------------------------------------------------------ health, collector, stats

  function findingItem(f) {
    return el("li", {},
      el("span", { class: `badge sev-${f.severity}` }, f.severity),
      el("span", { class: "code" }, f.code),
      el("span", {}, f.message),
      el("div", { class: "action" }, `\u2192 ${f.action}`));
  }

  async function refreshHealthAndStats() {
    let health = null;
    try {
      health = await api("/v1/health");
    } catch (e) {
      $("health-list").replaceChildren();
      $("collector-list").replaceChildren();
      const badge = $("health-badge");
      badge.className = "badge";
      badge.textContent = "n/a";
      const why = e.status === 403 ? "Needs a token for the whole store." : `Unavailable: ${e.message}`;
      setText("health-note", why);
      setText("collector-note", why);
    }
    if (health) {
      const findings = Array.isArray(health.findings) ? health.findings : [];
      const badge = $("health-badge");
      const worst = findings.some((f) => f.severity === "error") ? "error"
        : findings.some((f) => f.severity === "warning") ? "warning" : findings.length ? "info" : "ok";
      badge.className = `badge sev-${worst}`;
      badge.textContent = worst === "ok" ? "healthy" : `${findings.length} finding${findings.length === 1 ? "" : "s"}`;
      $("health-list").replaceChildren(...findings.map(findingItem));
      setText("health-note", findings.length ? "" : "Nothing to do.");
      const collector = findings.filter((f) => COLLECTOR_CODES.has(f.code));
      $("collector-list").replaceChildren(...collector.map(findingItem));
      setText("collector-note", collector.length ? "" : "No backlog, no unreplayed journals, no dead letters.");
    }
    try {
      const stats = await api("/v1/stats");
      renderStats(stats);
    } catch (e) {
      $("collector-figures").replaceChildren();
    }
  }

  function renderStats(stats) {
    const store = stats.store || {};
    setText("store-path", store.path || "");
    const rows = [];
    const add = (label, value) => {
      if (value === undefined || value === null) return;
      rows.push(el("dt", {}, label), el("dd", {}, String(value)));
    };
    add("dead letters", stats.dead_letters);
    const m = stats.maintain;
    if (m && m.enabled) add("maintenance runs", m.runs);
    if (stats.sessions) add("sessions", `${stats.sessions.live} live, ${stats.sessions.crashed} crashed`);
    if (stats.websocket) add("live clients", stats.websocket.clients);
    $("collector-figures").replaceChildren(...rows);
  }

  // ------------------------------------------------------------------ sessions

  async function refreshSessions() {
    // Always all of them: crashed sessions stay listed (marked) for an hour; cleanly ended ones
    // only with "ended too".
    try {
      const got = await api("/v1/sessions?alive=all");
      state.sessions.clear();
      for (const s of got.sessions || []) state.sessions.set(String(s.id), s);
      setText("sessions-note", "");
      renderSessions();
    } catch (e) {
      setText("sessions-note", `Sessions unavailable: ${e.message}`);
    }
  }

  function stateOf(s) {
    if (s.state === "crashed" || (s.alive === false && s.state !== "ended")) return "crashed";
    return s.state || "unknown";
  }

  function renderSessions() {
    const showEnded = $("sessions-ended").checked;
    const list = [...state.sessions.values()]
      .filter((s) => showEnded || stateOf(s) !== "ended")
      .sort((a, b) => (a.registered_at || 0) - (b.registered_at || 0));
    const live = list.filter((s) => s.alive !== false).length;
    const crashed = list.filter((s) => stateOf(s) === "crashed").length;
    setText("sessions-count", `${live} live` + (crashed ? `, ${crashed} crashed` : ""));
    const admin = state.who && (state.who.scopes || []).includes("admin");
    const rows = list.map((s) => {
      const st = stateOf(s);
      const pct = typeof s.progress === "number" ? Math.max(0, Math.min(1, s.progress)) : null;
      const bar = pct === null ? el("span", { class: "muted" }, "-")
        : el("div", { class: "progress", title: `${Math.round(pct * 100)}%` },
          el("span", { style: `width:${(pct * 100).toFixed(1)}%` }), el("em", {}, `${Math.round(pct * 100)}%`));
      let stop = null;
      if (admin && s.alive) {
        stop = el("button", { type: "button", class: "small" }, s.stop_requested ? "stopping" : "Stop");
        stop.addEventListener("click", () => requestStop(s.id));
      }
      return el("tr", { class: st === "crashed" ? "crashed" : null, "data-session": s.id, "data-state": st },
        el("td", {}, s.agent),
        el("td", {}, el("span", { class: `badge state-${st}` }, st)),
        el("td", {}, s.status || ""),
        el("td", {}, bar),
        el("td", { class: "mono" }, s.namespace || "-"),
        el("td", { class: "num" }, s.pid),
        el("td", { title: when(s.started_at || s.registered_at) }, ago(s.started_at || s.registered_at)),
        el("td", {}, stop));
    });
    $("sessions-body").replaceChildren(...rows);
    if (!rows.length) $("sessions-body").append(el("tr", {}, el("td", { colspan: 8, class: "muted" }, "No sessions.")));
  }

  async function requestStop(id) {
    try {
      await api(`/v1/sessions/${encodeURIComponent(id)}/stop`, { method: "POST" });
    } catch (e) {
      setText("sessions-note", `Stop failed: ${e.message}`);
    }
    refreshSessions();
  }

  // ------------------------------------------------------------------ namespaces

  function scheduleNamespaces() {
    if (state.nsTimer) return;
    state.nsTimer = setTimeout(() => { state.nsTimer = null; refreshNamespaces(); }, 1000);
  }

  async function refreshNamespaces() {
    try {
      const got = await api("/v1/namespaces");
      state.namespaces = got.namespaces || [];
      renderNamespaces();
    } catch (e) {
      $("namespaces-body").replaceChildren(el("tr", {}, el("td", { colspan: 2, class: "error" }, e.message)));
    }
  }

  function renderNamespaces() {
    const filter = $("namespaces-filter").value.trim().replace(/\/+$/, "");
    const shown = state.namespaces.filter((n) => !filter || n.namespace.startsWith(filter));
    setText("namespaces-count", `${state.namespaces.length}`);
    const rows = shown.map((n) => {
      const tr = el("tr", { class: "clickable", "data-namespace": n.namespace },
        el("td", {}, n.namespace),
        el("td", { class: "num" }, n.records === null || n.records === undefined ? "?" : n.records));
      tr.addEventListener("click", () => listRecords(n.namespace));
      return tr;
    });
    $("namespaces-body").replaceChildren(...rows);
    if (!rows.length) $("namespaces-body").append(el("tr", {}, el("td", { colspan: 2, class: "muted" }, "No namespaces.")));
  }

  // ------------------------------------------------------------------ record viewer

  function clearRecord() {
    setText("record-error", "");
    $("record-meta").replaceChildren();
    $("record-value").textContent = "";
    $("record-list").replaceChildren();
    show("record-list-table", false);
    show("record-more", false);
  }

  async function openRecord(ns, key, quiet) {
    $("record-ns").value = ns;
    $("record-key").value = key;
    state.recordNs = ns;
    if (!quiet) clearRecord();
    try {
      const r = await api(`/v1/ns/${nsPath(ns)}/records/${encodeURIComponent(key)}`);
      clearRecord();
      const meta = [];
      const add = (label, value) => meta.push(el("dt", {}, label), el("dd", {}, value));
      add("namespace", r.namespace);
      add("key", r.key);
      add("version", String(r.version));
      add("created", when(r.created_at));
      add("updated", when(r.updated_at));
      add("expires", r.expires_at === null || r.expires_at === undefined ? "never" : when(r.expires_at));
      $("record-meta").replaceChildren(...meta);
      $("record-value").textContent = JSON.stringify(r.value, null, 2);
    } catch (e) {
      clearRecord();
      setText("record-error", e.status === 404 ? `No key ${key} in ${ns}.` : e.message);
    }
  }

  async function listRecords(ns, more) {
    $("record-ns").value = ns;
    $("record-key").value = "";
    state.recordNs = ns;
    if (!more) { clearRecord(); state.recordNext = null; }
    let path = `/v1/ns/${nsPath(ns)}/records?limit=50`;
    if (more && state.recordNext) path += `&cursor=${encodeURIComponent(state.recordNext)}`;
    try {
      const got = await api(path);
      const rows = (got.items || []).map((r) => {
        const tr = el("tr", { class: "clickable" },
          el("td", { class: "mono" }, r.key),
          el("td", { class: "num" }, r.version),
          el("td", {}, ago(r.updated_at)),
          el("td", { class: "mono" }, preview(r.value)));
        tr.addEventListener("click", () => openRecord(ns, r.key));
        return tr;
      });
      $("record-list").append(...rows);
      show("record-list-table", true);
      state.recordNext = got.next || null;
      show("record-more", Boolean(state.recordNext));
    } catch (e) {
      setText("record-error", e.message);
    }
  }

  // ------------------------------------------------------------------ search

  async function runSearch(event) {
    event.preventDefault();
    setText("search-error", "");
    const body = {
      prefix: $("search-prefix").value.trim(),
      query: $("search-query").value.trim() || null,
      limit: Math.max(1, Math.min(500, parseInt($("search-limit").value, 10) || 20)),
      offset: 0,
    };
    const filterText = $("search-filter").value.trim();
    if (filterText) {
      try { body.filter = JSON.parse(filterText); } catch (e) {
        setText("search-error", `The filter is not JSON: ${e.message}`);
        return;
      }
    }
    try {
      const got = await api("/v1/search", { method: "POST", json: body });
      const hits = got.hits || [];
      const items = hits.map((h) => {
        const it = h.item || {};
        const li = el("li", {},
          el("span", { class: "score" }, typeof h.score === "number" ? h.score.toFixed(3) : ""),
          el("span", { class: "mono" }, `${it.namespace} / ${it.key}`),
          el("div", { class: "preview" }, preview(it.value)));
        li.addEventListener("click", () => openRecord(it.namespace, it.key));
        return li;
      });
      $("search-results").replaceChildren(...items);
      if (!items.length) $("search-results").append(el("li", { class: "muted" }, "No hits."));
    } catch (e) {
      $("search-results").replaceChildren();
      setText("search-error", e.message);
    }
  }

  // ------------------------------------------------------------------ wiring

  function init() {
    $("login-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const token = $("token").value.trim();
      $("token").value = "";
      if (token) signIn(token);
    });
    $("logout").addEventListener("click", () => signOut("Signed out."));
    $("tail-pause").addEventListener("click", () => {
      state.paused = !state.paused;
      $("tail-pause").textContent = state.paused ? "Resume" : "Pause";
    });
    $("tail-clear").addEventListener("click", () => $("tail-list").replaceChildren());
    $("sessions-ended").addEventListener("change", renderSessions);
    clearRecord();
    $("namespaces-filter").addEventListener("input", renderNamespaces);
    $("search-form").addEventListener("submit", runSearch);
    $("record-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const ns = $("record-ns").value.trim().replace(/^\/+|\/+$/g, "");
      const key = $("record-key").value.trim();
      if (!ns) { setText("record-error", "Give a namespace."); return; }
      if (key) openRecord(ns, key); else listRecords(ns);
    });
    $("record-more").addEventListener("click", () => { if (state.recordNs) listRecords(state.recordNs, true); });
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) signIn(token); else showLogin("");
  }

  document.addEventListener("DOMContentLoaded", init);
})();
