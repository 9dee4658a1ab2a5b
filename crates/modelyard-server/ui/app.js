// Modelyard web UI: a small single-page app over the public HTTP API.
// Plain JavaScript, no framework, no build step. Routes live in the URL hash
// (#/models, #/chat[/<id>], #/arena, #/llms, #/calls; the arena page and a
// conversation's "Compare models" are in arena.js, loaded first). The DOM contract the browser
// tests rely on is docs/ui.md. Every element is built with createElement and
// textContent: text from the server never becomes markup.
"use strict";

const KEY_STORAGE = "modelyard.apiKey";
const SVG_NS = "http://www.w3.org/2000/svg";
const OPERATIONS = ["chat", "title", "compaction", "advisor"];

// ---------------------------------------------------------------------------
// DOM helpers

/** Creates an element. attrs: class, text, testid, dataset {..}, on<Event>
 *  handlers, hidden/disabled/checked/value/open as properties, anything else
 *  as an attribute. Children: nodes or strings (text), null/false skipped. */
function el(tag, attrs, ...children) {
  return fill(document.createElement(tag), attrs, children);
}

/** Same as el() in the SVG namespace. */
function svg(tag, attrs, ...children) {
  return fill(document.createElementNS(SVG_NS, tag), attrs, children);
}

const PROPERTIES = new Set(["hidden", "disabled", "checked", "value", "open", "selected", "type"]);

function fill(node, attrs, children) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null) continue;
    if (name === "class") node.setAttribute("class", value);
    else if (name === "text") node.textContent = value;
    else if (name === "testid") node.setAttribute("data-testid", value);
    else if (name === "dataset") {
      for (const [k, v] of Object.entries(value)) if (v !== undefined && v !== null) node.dataset[k] = v;
    } else if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2), value);
    } else if (PROPERTIES.has(name) && !(node instanceof SVGElement)) node[name] = value;
    else node.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(typeof child === "string" || typeof child === "number" ? String(child) : child);
  }
  return node;
}

/** A labelled form field: <label>text <control></label>. */
function field(label, control) {
  return el("label", { class: "field" }, el("span", { text: label }), control);
}

/** A <select> with options [{value, label}] and the current value selected. */
function select(attrs, options, current) {
  const node = el("select", attrs);
  for (const o of options) node.append(el("option", { value: o.value, text: o.label }));
  node.value = current ?? "";
  return node;
}

function fmtTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleString();
}

function fmtNumber(n) {
  return n === null || n === undefined ? "—" : Number(n).toLocaleString();
}

function tokensOf(usage) {
  if (!usage) return 0;
  if (usage.totalTokens !== undefined && usage.totalTokens !== null) return usage.totalTokens;
  return (usage.promptTokens || 0) + (usage.completionTokens || 0);
}

/** A cost in USD ("$0.000190"; more digits below a millionth), "—" when unknown. */
function fmtUsd(x) {
  if (x === null || x === undefined) return "—";
  const n = Number(x);
  if (n !== 0 && Math.abs(n) < 0.000001) return "$" + n.toFixed(9);
  return "$" + n.toFixed(6);
}

/** "12 + 7 tokens" (prompt + completion), "? " where unreported. */
function tokenText(usage) {
  const u = usage || {};
  const part = (n) => (n === undefined || n === null ? "?" : String(n));
  return `${part(u.promptTokens)} + ${part(u.completionTokens)} tokens`;
}

// ---------------------------------------------------------------------------
// Status line

let statusTimer = null;

function showStatus(message, kind) {
  const node = document.getElementById("status");
  node.textContent = message || "";
  node.className = "status" + (kind ? " " + kind : "");
  clearTimeout(statusTimer);
  if (message) statusTimer = setTimeout(() => showStatus(""), 8000);
}

function showError(err) {
  showStatus(err && err.message ? err.message : String(err), "error");
}

// ---------------------------------------------------------------------------
// API

function apiKey() {
  return localStorage.getItem(KEY_STORAGE) || "";
}

function authHeaders(extra) {
  const headers = Object.assign({}, extra || {});
  const key = apiKey();
  if (key) headers["Authorization"] = "Bearer " + key;
  return headers;
}

/** An API error: message from the problem document, plus status and body. */
class ApiError extends Error {
  constructor(status, body) {
    const detail = body && (body.detail || body.title || (body.error && body.error.message));
    const hint = status === 401 ? " (set the API key in the header)" : "";
    super(`${status}: ${detail || "request failed"}${hint}`);
    this.status = status;
    this.body = body;
  }
}

/** fetch() on the API: options.json is sent as the JSON body; the bearer key
 *  is added; answers are parsed JSON (null for 204); non-2xx throws ApiError. */
async function api(path, options) {
  const opts = Object.assign({ method: "GET" }, options || {});
  const headers = { Accept: "application/json" };
  let body;
  if (opts.json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(opts.json);
  }
  const response = await fetch(path, {
    method: opts.method,
    headers: authHeaders(headers),
    body,
    signal: opts.signal,
  });
  const text = response.status === 204 ? "" : await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch (_) {
      data = { detail: text };
    }
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

/** Reads an SSE stream with fetch (so the bearer key can be sent) and calls
 *  onEvent({id, event, data}) per event; data is parsed JSON when it is JSON.
 *  A GET, or with request.json a POST of that JSON body (the arena).
 *  Resolves when the stream ends; rejects on HTTP errors and aborts. */
async function readSse(path, signal, onEvent, request) {
  const init = { headers: authHeaders({ Accept: "text/event-stream" }), signal };
  if (request && request.json !== undefined) {
    init.method = "POST";
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(request.json);
  }
  const response = await fetch(path, init);
  if (!response.ok) {
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      /* not JSON */
    }
    throw new ApiError(response.status, body);
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let current = { id: null, event: "message", data: [] };
  const dispatch = () => {
    if (current.data.length || current.id !== null) {
      const raw = current.data.join("\n");
      let data = raw;
      try {
        data = raw ? JSON.parse(raw) : null;
      } catch (_) {
        /* plain text */
      }
      onEvent({ id: current.id, event: current.event, data });
    }
    current = { id: null, event: "message", data: [] };
  };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let newline;
    while ((newline = buffer.search(/\r\n|\r|\n/)) >= 0) {
      const line = buffer.slice(0, newline);
      const skip = buffer.startsWith("\r\n", newline) ? 2 : 1;
      buffer = buffer.slice(newline + skip);
      if (line === "") {
        dispatch();
        continue;
      }
      if (line.startsWith(":")) continue; // comment / keep-alive
      const colon = line.indexOf(":");
      const name = colon < 0 ? line : line.slice(0, colon);
      let fieldValue = colon < 0 ? "" : line.slice(colon + 1);
      if (fieldValue.startsWith(" ")) fieldValue = fieldValue.slice(1);
      if (name === "id") current.id = fieldValue;
      else if (name === "event") current.event = fieldValue;
      else if (name === "data") current.data.push(fieldValue);
    }
  }
}

// ---------------------------------------------------------------------------
// Router

const PAGES = { models: pageModels, chat: pageChat, arena: pageArena, llms: pageLlms, calls: pageCalls };
let active = null; // {controller, timers}

/** What a page gets: an abort signal and timers cleared when it is left. */
function pageContext() {
  const controller = new AbortController();
  const timers = [];
  return {
    signal: controller.signal,
    every(ms, fn) {
      timers.push(setInterval(fn, ms));
    },
    alive() {
      return !controller.signal.aborted;
    },
    close() {
      controller.abort();
      timers.forEach(clearInterval);
    },
  };
}

function route() {
  const parts = location.hash.replace(/^#\/?/, "").split("/");
  const name = PAGES[parts[0]] ? parts[0] : "models";
  const arg = parts.slice(1).map(decodeURIComponent).join("/") || null;
  if (active) active.close();
  active = pageContext();
  for (const link of document.querySelectorAll("nav a")) {
    if (link.getAttribute("href") === "#/" + name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const main = document.getElementById("main");
  main.replaceChildren();
  PAGES[name](main, active, arg);
}

function setupApiKeyField() {
  const form = document.getElementById("apikey-form");
  const input = document.getElementById("apikey");
  input.value = apiKey();
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const key = input.value.trim();
    if (key) localStorage.setItem(KEY_STORAGE, key);
    else localStorage.removeItem(KEY_STORAGE);
    showStatus(key ? "API key saved in this browser" : "API key removed");
    route();
  });
}

// ---------------------------------------------------------------------------
// Models page

function pageModels(main, ctx) {
  const favorites = el("section", { testid: "favorites", class: "card", "aria-label": "Favorites" });
  const providers = el("section", { class: "providers", "aria-label": "Providers" });
  const routes = el("section", { class: "routes", "aria-label": "Routes" });
  main.append(
    el("div", { testid: "page-models", class: "page" }, el("h1", { text: "Models" }), favorites, providers, routes)
  );
  let lastSnapshot = "";
  let favoriteIds = [];

  async function refresh() {
    try {
      const [catalog, favs] = await Promise.all([
        api("/v1/catalog?includeOffline=true", { signal: ctx.signal }),
        api("/v1/favorites", { signal: ctx.signal }),
      ]);
      if (!ctx.alive()) return;
      favoriteIds = favs.data.map((f) => f.modelId);
      const snapshot = JSON.stringify([catalog, favoriteIds]);
      if (snapshot === lastSnapshot) return; // keep the DOM stable
      lastSnapshot = snapshot;
      drawFavorites(catalog.favorites);
      drawProviders(catalog.providers);
      drawRoutes(catalog.routes || []);
    } catch (err) {
      if (ctx.alive()) showError(err);
    }
  }

  async function toggleFavorite(model) {
    try {
      if (model.favorite) {
        await api("/v1/favorites/" + encodeURIComponent(model.id), { method: "DELETE" });
      } else {
        await api("/v1/favorites", { method: "POST", json: { modelId: model.id } });
      }
    } catch (err) {
      showError(err);
    }
    await refresh();
  }

  /** Load or unload (admin) on hosts that swap models: llama-swap, Ollama,
   *  llama.cpp in router mode (the catalog's `loadable`). */
  function loadButton(model) {
    const load = model.state !== "loaded";
    return el("button", {
      testid: load ? "load-model" : "unload-model",
      type: "button",
      class: "small",
      text: load ? "Load" : "Unload",
      title: (load ? "Load " : "Unload ") + model.id + " on its host",
      onclick: async (event) => {
        event.target.disabled = true;
        event.target.textContent = load ? "Loading…" : "Unloading…";
        try {
          await api("/v1/providers/" + encodeURIComponent(model.provider) + "/models/" +
            encodeURIComponent(model.model) + "/" + (load ? "load" : "unload"), { method: "POST", json: {} });
        } catch (err) {
          showError(err);
        }
        await refresh();
      },
    });
  }

  /** Moves a visible favorite by one place among the visible ones; hidden
   *  favorites keep their places in the stored order. */
  async function move(visibleIds, index, delta) {
    const other = index + delta;
    if (other < 0 || other >= visibleIds.length) return;
    const order = favoriteIds.slice();
    const a = order.indexOf(visibleIds[index]);
    const b = order.indexOf(visibleIds[other]);
    if (a < 0 || b < 0) return;
    [order[a], order[b]] = [order[b], order[a]];
    try {
      await api("/v1/favorites", { method: "PUT", json: { favorites: order } });
    } catch (err) {
      showError(err);
    }
    await refresh();
  }

  function drawFavorites(list) {
    const ids = list.map((m) => m.id);
    const items = list.map((model, i) =>
      el(
        "li",
        // A favorite route (it has targets, no provider) is marked as one.
        { testid: "favorite-item", dataset: { modelId: model.id, kind: isRoute(model) ? "route" : "model" }, class: "favorite" },
        el("span", { class: "mono", text: model.id }),
        isRoute(model) ? el("span", { class: "badge", text: "route", title: routeTargetsText(model) }) : null,
        el("span", { class: "muted", text: contextText(model) }),
        el("span", { class: "spacer" }),
        el("button", {
          testid: "move-up",
          type: "button",
          text: "↑",
          "aria-label": `Move ${model.id} up`,
          disabled: i === 0,
          onclick: () => move(ids, i, -1),
        }),
        el("button", {
          testid: "move-down",
          type: "button",
          text: "↓",
          "aria-label": `Move ${model.id} down`,
          disabled: i === list.length - 1,
          onclick: () => move(ids, i, 1),
        })
      )
    );
    favorites.replaceChildren(
      el("h2", { text: "Favorites" }),
      items.length
        ? el("ol", { class: "favorite-list" }, items)
        : el("p", { class: "muted", text: "No favorites of online providers. Star a model below." })
    );
  }

  function drawProviders(groups) {
    providers.replaceChildren(...groups.map(providerGroup));
  }

  function providerGroup(p) {
    const online = p.status === "online";
    const detail = [];
    if (p.status === "offline" && p.lastError) detail.push(el("span", { class: "error-text", text: p.lastError }));
    if (p.status === "disabled" && p.disabledReason) detail.push(el("span", { class: "error-text", text: p.disabledReason }));
    return el(
      "section",
      { testid: "provider-group", class: "card provider", dataset: { provider: p.name, status: p.status } },
      el(
        "header",
        { class: "provider-head" },
        el("h2", { text: p.name }),
        el("span", { class: "badge status-" + p.status, text: p.status }),
        el("span", { class: "muted", text: p.kind }),
        el("span", { class: "muted", text: "checked " + fmtTime(p.lastCheckedAt) })
      ),
      detail.length ? el("p", { class: "provider-detail" }, detail) : null,
      p.models.length
        ? el("ul", { class: "model-list" }, p.models.map((m) => modelRow(m, online)))
        : el("p", { class: "muted", text: online ? "No models listed." : "No models known." })
    );
  }

  /** The favorite toggle of a model or a route (both by id). */
  function starButton(item) {
    return el("button", {
      testid: "star",
      type: "button",
      class: "star",
      text: item.favorite ? "★" : "☆",
      "aria-pressed": String(!!item.favorite),
      "aria-label": "Favorite " + item.id,
      title: item.favorite ? "Remove from favorites" : "Add to favorites",
      onclick: () => toggleFavorite(item),
    });
  }

  function modelRow(model, online) {
    return el(
      "li",
      {
        testid: "model-row",
        class: "model-row" + (online ? "" : " offline"),
        dataset: { modelId: model.id, favorite: String(!!model.favorite) },
      },
      starButton(model),
      el("span", { class: "mono model-id", text: model.id }),
      el("span", { class: "muted", text: contextText(model) }),
      el("span", { testid: "model-state", class: "muted", text: stateText(model) }),
      model.loadable && online ? loadButton(model) : null,
      model.coolingDownUntil
        ? el("span", { testid: "cooling-badge", class: "badge status-cooling-down", text: coolingText(model.coolingDownUntil) })
        : null
    );
  }

  /** The "Routes" group after the provider groups (none without routes). */
  function drawRoutes(list) {
    if (!list.length) {
      routes.replaceChildren();
      return;
    }
    routes.replaceChildren(
      el(
        "section",
        { testid: "route-group", class: "card provider" },
        el(
          "header",
          { class: "provider-head" },
          el("h2", { text: "Routes" }),
          el("span", { class: "muted", text: "model ids that stand for several deployments" })
        ),
        el("ul", { class: "model-list" }, list.map(routeRow))
      )
    );
  }

  function routeRow(route) {
    const fallbacks = route.fallbacks || [];
    return el(
      "li",
      {
        testid: "route-row",
        class: "route-row" + (route.online ? "" : " offline"),
        dataset: { routeId: route.id, favorite: String(!!route.favorite), online: String(!!route.online) },
      },
      el(
        "div",
        { class: "route-head" },
        starButton(route),
        el("span", { class: "mono model-id", text: route.id }),
        el("span", { testid: "route-strategy", class: "badge", text: route.strategy, title: "Load balancing strategy" }),
        el("span", { testid: "route-affinity", class: "muted", text: "affinity: " + route.affinity }),
        el("span", { class: "muted", text: contextText(route) + (route.contextWindow ? " (smallest target)" : "") }),
        fallbacks.length ? el("span", { class: "muted", text: "fallbacks: " + fallbacks.join(", ") }) : null,
        route.online ? null : el("span", { class: "badge status-offline", text: "no target available" })
      ),
      el("ul", { class: "route-targets", "aria-label": `Targets of ${route.id}` }, (route.targets || []).map(routeTarget))
    );
  }

  function routeTarget(target) {
    return el(
      "li",
      { testid: "route-target", class: "route-target", dataset: { targetId: target.id, status: target.status } },
      el("span", { class: "mono model-id", text: target.id }),
      el("span", { testid: "target-status", class: "badge status-" + target.status, text: targetStatusText(target) }),
      target.weight !== undefined && target.weight !== 1 ? el("span", { class: "muted", text: "weight " + target.weight }) : null,
      el("span", { class: "muted", text: contextText(target) }),
      target.lastError ? el("span", { testid: "target-error", class: "error-text small", text: target.lastError }) : null
    );
  }

  refresh();
  ctx.every(2000, refresh);
}

function contextText(model) {
  if (model.contextWindow === null || model.contextWindow === undefined) return "context window unknown";
  const source = [model.contextWindowSource, model.contextWindowFrom].filter(Boolean).join(": ");
  return `${fmtNumber(model.contextWindow)} tokens` + (source ? ` (${source})` : "");
}

/** A catalog entry that is a route (favorites mix models and routes). */
function isRoute(entry) {
  return Array.isArray(entry.targets);
}

function routeTargetsText(route) {
  return (route.targets || []).map((t) => t.id).join(", ");
}

/** "HH:MM:SS" (24 h, local time) of an RFC 3339 time. */
function fmtClock(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  const two = (n) => String(n).padStart(2, "0");
  return `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
}

function coolingText(until) {
  return until ? "cooling down until " + fmtClock(until) : "cooling down";
}

const TARGET_STATUS = {
  available: "available",
  offline: "offline",
  disabled: "disabled",
  "unknown-model": "unknown model",
};

function targetStatusText(target) {
  if (target.status === "cooling-down") return coolingText(target.coolingDownUntil);
  return TARGET_STATUS[target.status] || target.status;
}

// What the model's host says of it (the catalog's `state`).
const STATE_TEXT = { loaded: "loaded", unloaded: "not loaded", loading: "loading…", failed: "failed to load" };

function stateText(model) {
  const text = STATE_TEXT[model.state];
  if (text) return text;
  if (model.loaded === true) return "loaded";
  if (model.loaded === false) return "not loaded";
  return "";
}

// ---------------------------------------------------------------------------
// Chat page

function pageChat(main, ctx, conversationId) {
  const list = el("ul", { testid: "conversation-list", class: "conversation-list", "aria-label": "Conversations" });
  const view = el("section", { class: "conversation", "aria-label": "Conversation" });
  const newButton = el("button", {
    testid: "new-conversation",
    type: "button",
    class: "primary",
    text: "New conversation",
    onclick: async () => {
      try {
        const created = await api("/v1/conversations", { method: "POST", json: {} });
        location.hash = "#/chat/" + encodeURIComponent(created.id);
      } catch (err) {
        showError(err);
      }
    },
  });
  main.append(
    el(
      "div",
      { testid: "page-chat", class: "page chat-layout" },
      el("aside", { class: "sidebar" }, newButton, list),
      view
    )
  );
  const refreshList = () => drawConversationList(list, ctx, conversationId);
  refreshList();
  if (conversationId) openConversation(view, ctx, conversationId, refreshList);
  else view.append(el("p", { class: "muted", text: "Pick a conversation or start a new one." }));
}

async function drawConversationList(list, ctx, selectedId) {
  let page;
  try {
    page = await api("/v1/conversations?limit=200", { signal: ctx.signal });
  } catch (err) {
    if (ctx.alive()) showError(err);
    return;
  }
  if (!ctx.alive()) return;
  const byId = new Map(page.data.map((c) => [c.id, c]));
  const children = new Map();
  const top = [];
  for (const c of page.data) {
    if (c.parentId && byId.has(c.parentId)) {
      if (!children.has(c.parentId)) children.set(c.parentId, []);
      children.get(c.parentId).push(c);
    } else top.push(c);
  }
  const item = (c) => {
    const kids = children.get(c.id) || [];
    return el(
      "li",
      { testid: "conversation-item", class: "conversation-item", dataset: { id: c.id } },
      el(
        "a",
        {
          href: "#/chat/" + encodeURIComponent(c.id),
          "aria-current": c.id === selectedId ? "page" : null,
        },
        el("span", { class: "title", text: c.title || "Untitled" }),
        el("span", { class: "muted small", text: "model: " + (c.model || "default") }),
        c.latestModelId ? el("span", { class: "muted small", text: "latest: " + c.latestModelId }) : null,
        el(
          "span",
          { class: "muted small" },
          `${fmtNumber(c.usage ? c.usage.totalTokens : 0)} tokens · ${fmtTime(c.updatedAt)}`,
          c.status === "running" ? " · running" : ""
        )
      ),
      kids.length ? el("ul", { class: "subtasks", "aria-label": "Subtasks" }, kids.map(item)) : null
    );
  };
  list.replaceChildren(...top.map(item));
  if (!top.length) list.append(el("li", { class: "muted", text: "No conversations yet." }));
}

/** Warms the conversation's next turn (loads its model, primes the prompt
 *  cache): fire-and-forget, nothing on the page changes, failures are ignored. */
function warmConversation(path) {
  fetch(path + "/warm", {
    method: "POST",
    headers: authHeaders({ Accept: "application/json", "Content-Type": "application/json" }),
    body: "{}",
  }).catch(() => {});
}

/** The conversation view: toolbar, settings, messages, composer, live events. */
async function openConversation(view, ctx, id, refreshList) {
  const path = "/v1/conversations/" + encodeURIComponent(id);
  let conversation, messages, catalog, model, llms, settings;
  try {
    // The conversation first: its lastSeq is where the event stream resumes,
    // and the messages read after it hold at least everything up to it.
    conversation = await api(path, { signal: ctx.signal });
    [messages, catalog, model, llms, settings] = await Promise.all([
      api(path + "/messages", { signal: ctx.signal }),
      api("/v1/catalog", { signal: ctx.signal }),
      api(path + "/model", { signal: ctx.signal }),
      api("/v1/llms?limit=200", { signal: ctx.signal }),
      api(path + "/settings", { signal: ctx.signal }),
    ]);
  } catch (err) {
    if (ctx.alive()) {
      showError(err);
      view.replaceChildren(el("p", { class: "error-text", text: "Cannot open this conversation: " + err.message }));
    }
    return;
  }
  if (!ctx.alive()) return;

  const chat = new ChatView(ctx, path, refreshList);
  const heading = el("h1", { class: "conversation-title", text: conversation.title || "Untitled" });
  const metaText = el("span");
  const metaCost = el("span", { testid: "conversation-cost", title: "Cost of every model call of this conversation" });
  const meta = el("p", { class: "muted small" }, metaText, " · cost ", metaCost);
  const meter = contextMeter();
  const showMeta = (c) => {
    heading.textContent = c.title || "Untitled";
    metaText.textContent =
      `latest model: ${c.latestModelId || "—"} · ${fmtNumber(c.usage.totalTokens)} tokens ` +
      `(${fmtNumber(c.usage.promptTokens)} prompt, ${fmtNumber(c.usage.completionTokens)} completion)`;
    meter.update(c);
    metaCost.textContent = fmtUsd(c.costUsd);
  };
  showMeta(conversation);
  chat.onTurnEnd = async () => {
    refreshList();
    try {
      showMeta(await api(path, { signal: ctx.signal }));
    } catch (_) {
      /* the next turn end refreshes it */
    }
  };

  const picker = modelPicker(path, catalog, model.model);
  // A selection made elsewhere (the CLI, another tab, any API client, a
  // turn's model override) moves this picker; the meta line follows (the
  // context window is the new model's).
  chat.onModel = async (selected) => {
    picker.show(selected);
    refreshList();
    try {
      showMeta(await api(path, { signal: ctx.signal }));
    } catch (_) {
      /* the next turn end refreshes it */
    }
  };

  view.replaceChildren(
    el("div", { class: "toolbar" }, heading, field("Model", picker)),
    meta,
    meter,
    settingsPanel(path, conversation, llms.data, settings),
    chat.messages,
    chat.composer
  );
  // "Compare models" in the composer, and a run waiting for its pick (arena.js).
  attachConversationArena(chat, { path, catalog, conversation, messages: messages.data });
  for (const m of messages.data) chat.render(normalizeMessage(m));
  chat.setRunning(conversation.runningTurnId || null);
  chat.follow(String(conversation.lastSeq));
  warmConversation(path);
}

/** The context meter: the conversation's last prompt size (contextTokens,
 *  as the upstream reported it) against its model's context window
 *  (contextWindow); past 60% it turns amber, past 80% red (where automatic
 *  compaction starts by default). Without a known window only the size shows. */
function contextMeter() {
  const bar = el("meter", { testid: "context-meter-bar", min: 0, max: 1, value: 0, "aria-label": "Context used" });
  const text = el("span", { testid: "context-meter-text", class: "muted small" });
  const node = el(
    "div",
    { testid: "context-meter", class: "context-meter" },
    el("span", { class: "muted small", text: "Context" }),
    bar,
    text
  );
  node.update = (c) => {
    const tokens = c.contextTokens;
    const limit = c.contextWindow;
    if (limit) {
      const used = Math.min(tokens || 0, limit);
      bar.hidden = false;
      bar.max = limit;
      bar.low = Math.round(limit * 0.6);
      bar.high = Math.round(limit * 0.8);
      bar.optimum = 0;
      bar.value = used;
      const percent = Math.round((100 * (tokens || 0)) / limit);
      text.textContent = `${fmtNumber(tokens || 0)} / ${fmtNumber(limit)} tokens (${percent}%)`;
      node.dataset.level = percent >= 80 ? "high" : percent >= 60 ? "medium" : "low";
    } else {
      bar.hidden = true;
      text.textContent =
        tokens === null || tokens === undefined
          ? "no prompt yet · window unknown"
          : `${fmtNumber(tokens)} tokens · window unknown`;
      node.dataset.level = "unknown";
    }
  };
  return node;
}

/** The model <select>: favorites, then one group per online provider, then
 *  the routes. */
function modelPicker(path, catalog, current) {
  const picker = el("select", { testid: "model-picker", "aria-label": "Model" });
  const option = (m) =>
    isRoute(m)
      ? el("option", {
          value: m.id,
          text: m.id + (m.online ? " (route)" : " (route, no target available)"),
          title: "Route over " + routeTargetsText(m),
          dataset: { kind: "route" },
        })
      : el("option", { value: m.id, text: m.id });
  const group = (label, models) => el("optgroup", { label }, models.map(option));
  picker.append(group("Favorites", catalog.favorites));
  for (const p of catalog.providers) {
    if (p.status === "online" && p.models.length) picker.append(group(p.name, p.models));
  }
  const routes = catalog.routes || [];
  if (routes.length) picker.append(group("Routes", routes));
  const serverDefault = el("option", { value: "", text: "(server default)" });
  picker.append(serverDefault);
  let saved = "";
  /** Shows `model` (a model id, or null for the server default) as the
   *  selection; an id no group lists gets an option under "Other". */
  picker.show = (model) => {
    const value = model || "";
    if (value && !Array.from(picker.options).some((o) => o.value === value)) {
      let other = Array.from(picker.querySelectorAll("optgroup")).find((g) => g.label === "Other");
      if (!other) {
        other = group("Other", []);
        picker.insertBefore(other, serverDefault);
      }
      other.append(option({ id: value }));
    }
    picker.value = value;
    saved = value;
  };
  picker.show(current);
  picker.addEventListener("change", async () => {
    const wanted = picker.value;
    try {
      const answer = await api(path + "/model", { method: "PUT", json: { model: wanted || null } });
      picker.show(answer ? answer.model : wanted || null);
      warmConversation(path);
      showStatus(
        answer && answer.verified === false
          ? `Model set to ${wanted} (not verified: it does not resolve now; each turn tries again)`
          : `Model set to ${wanted || "the server default"}`
      );
    } catch (err) {
      picker.value = saved;
      showError(err);
    }
  });
  return picker;
}

/**
 * Whether LLM config `c` is a materialized server default (the `default`
 * preset's or `defaults.model`'s system default, any version): as a
 * conversation's llmId it means "the server default", not a choice.
 */
function isServerDefault(c) {
  return c.source === "system-default" && (c.presetName === "default" || c.presetName === "defaults.model");
}

/**
 * Conversation settings: default LLM config, per-operation overrides, advisor.
 * A conversation created without a config names the server default; the
 * default select shows that as "Server default" (choosing it clears llmId,
 * which resolves the same), never as one of the configs to pick.
 */
function settingsPanel(path, conversation, configs, settings) {
  const choice = (c) => ({ value: c.id, label: `${c.displayName || c.model} · ${c.model} (${c.source})` });
  const options = [{ value: "", label: "(none)" }].concat(configs.map(choice));
  // Newest first: the first server default listed is the current one.
  const serverDefault = configs.find(isServerDefault);
  const defaultOptions = [
    { value: "", label: serverDefault ? `Server default (${serverDefault.model})` : "(none)" },
  ].concat(configs.filter((c) => !isServerDefault(c)).map(choice));
  const namesServerDefault = configs.some((c) => c.id === conversation.llmId && isServerDefault(c));
  const patch = async (body, control, previous) => {
    try {
      await api(path, { method: "PATCH", json: body });
      showStatus("Settings saved");
      return true;
    } catch (err) {
      control.value = previous;
      showError(err);
      return false;
    }
  };
  const configSelect = (testid, label, current, body, choices = options) => {
    const node = select({ testid, "aria-label": label }, choices, current || "");
    let previous = node.value;
    node.addEventListener("change", async () => {
      if (await patch(body(node.value || null), node, previous)) previous = node.value;
    });
    return field(label, node);
  };
  const overrides = conversation.llmOverrides || {};
  const advisorInfo = el("span", {
    class: "muted small",
    text: settings.advisorModel ? "consults " + settings.advisorModel : settings.advisorError || "",
  });
  const toggle = el("input", { type: "checkbox", testid: "advisor-toggle", checked: !!settings.advisor });
  toggle.addEventListener("change", async () => {
    try {
      const answer = await api(path + "/settings", { method: "PATCH", json: { advisor: toggle.checked } });
      toggle.checked = !!(answer && answer.advisor !== undefined ? answer.advisor : toggle.checked);
      showStatus("Advisor " + (toggle.checked ? "on" : "off"));
    } catch (err) {
      toggle.checked = !toggle.checked;
      showError(err);
    }
  });
  return el(
    "details",
    { testid: "settings-panel", class: "card settings" },
    el("summary", { text: "Settings" }),
    el(
      "div",
      { class: "settings-grid" },
      configSelect(
        "llm-default",
        "Default LLM config",
        namesServerDefault ? "" : conversation.llmId,
        (v) => ({ llmId: v }),
        defaultOptions
      ),
      OPERATIONS.map((op) =>
        configSelect(`llm-override-${op}`, `LLM config for ${op}`, overrides[op], (v) => ({
          llmOverrides: { [op]: v },
        }))
      ),
      el("label", { class: "field inline" }, toggle, el("span", { text: "Advisor tool" }), advisorInfo)
    )
  );
}

/** One message in one shape, from the messages API or from an event. */
function normalizeMessage(m) {
  const isEvent = m.type !== undefined;
  const role = isEvent ? m.type.replace("message.", "") : m.role;
  const result = (m.parts || []).find((p) => p.type === "toolResult") || {};
  return {
    id: isEvent ? m.messageId : m.id,
    role,
    turnId: m.turnId,
    content: m.content,
    parts: m.parts || [],
    modelId: m.modelId || null,
    usage: m.usage || null,
    // REST messages carry costUsd; live events the exact usage.costNusd.
    costUsd:
      m.costUsd !== undefined && m.costUsd !== null
        ? m.costUsd
        : m.usage && m.usage.costNusd !== undefined && m.usage.costNusd !== null
          ? m.usage.costNusd / 1e9
          : null,
    toolCallId: m.toolCallId || result.toolCallId || null,
    name: m.name || result.name || null,
    isError: m.isError !== undefined ? m.isError : !!result.isError,
  };
}

/** Text of an OpenAI content value (a string or an array of parts). */
function contentText(content) {
  if (typeof content === "string") return content;
  if (Array.isArray(content)) {
    return content
      .map((p) => (p && typeof p.text === "string" ? p.text : p && p.type ? `[${p.type}]` : ""))
      .join("");
  }
  return content === null || content === undefined ? "" : JSON.stringify(content);
}

/** The live part of a conversation: messages, composer, event stream. */
class ChatView {
  constructor(ctx, path, refreshList) {
    this.ctx = ctx;
    this.path = path;
    this.refreshList = refreshList;
    this.onTurnEnd = () => {};
    this.onModel = () => {}; // (model id, or null when cleared)
    this.rendered = new Set(); // message ids
    this.cards = new Map(); // advisor toolCallId -> card
    this.streaming = null; // the live assistant element
    this.runningTurnId = null;
    this.arena = null; // the conversation's arena (arena.js), once attached
    this.messages = el("div", { testid: "messages", class: "messages", "aria-live": "polite" });
    this.composer = this.buildComposer();
  }

  buildComposer() {
    this.input = el("textarea", {
      testid: "composer",
      "aria-label": "Message",
      rows: 3,
      placeholder: "Message (Enter sends, Shift+Enter: new line, Esc stops)",
    });
    this.sendButton = el("button", { testid: "send", type: "submit", class: "primary", text: "Send" });
    this.stopButton = el("button", {
      testid: "stop",
      type: "button",
      text: "Stop",
      hidden: true,
      onclick: () => this.stop(),
    });
    this.input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.send();
      }
    });
    const onEscape = (event) => {
      if (!this.ctx.alive()) return document.removeEventListener("keydown", onEscape);
      if (event.key === "Escape" && this.runningTurnId) {
        event.preventDefault();
        this.stop();
      }
    };
    document.addEventListener("keydown", onEscape);
    return el(
      "form",
      {
        class: "composer",
        onsubmit: (event) => {
          event.preventDefault();
          this.send();
        },
      },
      this.input,
      el("div", { class: "composer-buttons" }, this.sendButton, this.stopButton)
    );
  }

  async send() {
    const content = this.input.value;
    if (!content.trim()) return;
    if (this.arena && this.arena.active()) return this.arena.send(content);
    this.sendButton.disabled = true;
    try {
      const answer = await api(this.path + "/turns", { method: "POST", json: { content } });
      this.input.value = "";
      this.setRunning(answer.turnId);
    } catch (err) {
      showError(err);
    } finally {
      this.sendButton.disabled = false;
    }
  }

  async stop() {
    const turnId = this.runningTurnId;
    if (!turnId) return;
    try {
      await api(`${this.path}/turns/${encodeURIComponent(turnId)}/cancel`, { method: "POST" });
    } catch (err) {
      showError(err);
    }
  }

  setRunning(turnId) {
    this.runningTurnId = turnId;
    this.stopButton.hidden = !turnId;
  }

  /** Follows the event stream from `position` (an SSE id), reconnecting
   *  from the last id seen until the page is left. */
  async follow(position) {
    let delay = 500;
    while (this.ctx.alive()) {
      try {
        await readSse(`${this.path}/events?after=${encodeURIComponent(position)}`, this.ctx.signal, (e) => {
          if (e.id) position = e.id;
          delay = 500;
          this.onEvent(e.event, e.data || {});
        });
      } catch (err) {
        if (!this.ctx.alive()) return;
        if (err instanceof ApiError && err.status !== 429 && err.status < 500) {
          showError(err);
          return;
        }
      }
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 5000);
    }
  }

  onEvent(type, data) {
    switch (type) {
      case "message.user":
      case "message.assistant":
      case "message.tool":
        this.render(normalizeMessage(data));
        break;
      case "messages.imported":
      case "conversation.compacted":
        this.reloadMessages();
        break;
      case "model.selected":
        this.onModel(data.model || null);
        break;
      case "model.cleared":
        this.onModel(null);
        break;
      case "turn.started":
        this.setRunning(data.turnId);
        break;
      case "turn.resumed":
        this.setRunning(data.turnId);
        break;
      case "turn.completed":
      case "turn.failed":
      case "turn.cancelled":
      case "turn.interrupted":
      case "turn.requires_action":
        this.endTurn(type, data);
        break;
      case "text.delta":
        this.appendLive("message-text", data.delta, data.omittedBytes);
        break;
      case "reasoning.delta":
        this.appendLive("message-reasoning", data.delta, data.omittedBytes);
        break;
      case "tool_call.started":
        // The live answer holds the place of the assistant message that
        // will carry this call.
        this.liveElement();
        if (data.name === "advisor") this.advisorCard(data.toolCallId);
        break;
      case "advisor.phase":
        this.advisorPhase(data.toolCallId, data.phase);
        break;
      case "advisor.output":
        this.advisorOutput(data.toolCallId, data.delta, data.omittedBytes);
        break;
      case "tool_call.completed":
        if (this.cards.has(data.toolCallId)) this.markCardDone(this.cards.get(data.toolCallId));
        break;
      case "arena.started":
      case "arena.delta":
      case "arena.completed":
      case "arena.failed":
      case "arena.picked":
        if (this.arena) this.arena.onEvent(type, data);
        break;
      default:
        break; // caught-up, conversation.*, settings.*, tool_call.delta
    }
  }

  scroll() {
    this.messages.scrollTop = this.messages.scrollHeight;
  }

  async reloadMessages() {
    try {
      const page = await api(this.path + "/messages", { signal: this.ctx.signal });
      for (const m of page.data) this.render(normalizeMessage(m));
    } catch (err) {
      if (this.ctx.alive()) showError(err);
    }
  }

  /** Renders a persisted message once; an assistant message replaces the
   *  live element, an advisor result takes over its live card. */
  render(m) {
    if (!m.id || this.rendered.has(m.id)) return;
    this.rendered.add(m.id);
    const node = el("article", {
      testid: "message",
      class: "message " + m.role,
      dataset: { role: m.role, messageId: m.id },
    });
    node.append(el("div", { class: "message-role", text: m.role === "tool" ? `tool · ${m.name || ""}` : m.role }));
    if (m.role === "user") node.append(el("div", { testid: "message-text", class: "message-text", text: contentText(m.content) }));
    if (m.role === "assistant") this.fillAssistant(node, m);
    const placed = m.role === "tool" && this.fillTool(node, m);
    if (m.modelId || m.role === "assistant") {
      node.append(
        el(
          "div",
          { class: "badges" },
          m.modelId ? el("span", { testid: "model-badge", class: "badge", text: m.modelId }) : null,
          el("span", { testid: "token-badge", class: "badge", text: tokenText(m.usage) }),
          m.costUsd !== null && m.costUsd !== undefined
            ? el("span", { testid: "cost-badge", class: "badge", text: fmtUsd(m.costUsd), title: "Cost of this model call" })
            : null
        )
      );
    }
    if (placed) {
      // Took the place of its live advisor card.
    } else if (m.role === "assistant" && this.streaming) {
      this.streaming.replaceWith(node);
      this.streaming = null;
    } else {
      this.messages.append(node);
    }
    if (this.arena) this.arena.rendered(m);
    this.scroll();
  }

  fillAssistant(node, m) {
    for (const part of m.parts) {
      if (part.type === "reasoning") {
        node.append(
          el("details", { class: "reasoning" }, el("summary", { text: "Reasoning" }), el("div", { text: part.text }))
        );
      } else if (part.type === "toolCall") {
        node.append(el("div", { class: "tool-call mono small", text: `→ ${part.name}(${part.arguments})` }));
      }
    }
    const text = m.parts.filter((p) => p.type === "text").map((p) => p.text).join("");
    node.append(el("div", { testid: "message-text", class: "message-text", text: text || contentText(m.content) }));
  }

  fillTool(node, m) {
    const text = contentText(m.content);
    if (m.name === "advisor") {
      const card = this.cards.get(m.toolCallId) || this.advisorCard(m.toolCallId, true);
      let result = null;
      try {
        result = JSON.parse(text);
      } catch (_) {
        /* not JSON */
      }
      const advice = result && result.type === "advice" ? result.advice : null;
      const error = result && result.type === "error" ? result.error : m.isError ? text : null;
      card.advice.textContent = advice !== null ? advice : error ? "Advisor error: " + error : text;
      card.advice.classList.toggle("error-text", advice === null && !!error);
      if (!card.text.textContent && advice) card.text.textContent = advice;
      this.markCardDone(card);
      const placed = card.node.parentNode === this.messages;
      if (placed) card.node.replaceWith(node);
      node.append(card.node);
      return placed;
    } else {
      node.append(
        el("pre", { class: "tool-result" + (m.isError ? " error-text" : ""), testid: "message-text", text })
      );
    }
    return false;
  }

  /** The live assistant element (created on the first delta). */
  liveElement() {
    if (!this.streaming) {
      this.streaming = el(
        "article",
        { testid: "message", class: "message assistant streaming", dataset: { role: "assistant", streaming: "true" } },
        el("div", { class: "message-role", text: "assistant" }),
        el("div", { testid: "message-text", class: "message-text" })
      );
      this.messages.append(this.streaming);
    }
    return this.streaming;
  }

  appendLive(testid, delta, omittedBytes) {
    const live = this.liveElement();
    let target = live.querySelector(`[data-testid="${testid}"]`);
    if (!target) {
      target = el("div", { testid, class: "reasoning small muted" });
      live.insertBefore(target, live.querySelector('[data-testid="message-text"]'));
    }
    if (omittedBytes) target.append(`[… ${omittedBytes} bytes omitted] `);
    if (delta) target.append(delta);
    this.scroll();
  }

  endTurn(type, data) {
    if (!this.runningTurnId || this.runningTurnId === data.turnId) this.setRunning(null);
    if (this.streaming) {
      // No persisted answer replaced it: keep the partial text, marked.
      delete this.streaming.dataset.streaming;
      this.streaming.classList.remove("streaming");
      this.streaming.classList.add("partial");
      this.streaming = null;
    }
    const notes = {
      "turn.failed": "Turn failed: " + (data.error || "unknown error"),
      "turn.cancelled": "Turn cancelled",
      "turn.interrupted": "Turn interrupted (the server stopped during it)",
      "turn.requires_action": "The turn waits for client tool results",
    };
    if (notes[type]) {
      this.messages.append(el("p", { class: "turn-note" + (type === "turn.failed" ? " error-text" : ""), text: notes[type] }));
    }
    for (const card of this.cards.values()) if (card.node.dataset.state === "live" && type !== "turn.requires_action") this.markCardDone(card);
    this.scroll();
    this.onTurnEnd();
  }

  /** The advisor card of a tool call (created when missing). */
  advisorCard(toolCallId, done) {
    if (this.cards.has(toolCallId)) return this.cards.get(toolCallId);
    const phase = el("span", { class: "muted small", text: "" });
    const text = el("div", { testid: "advisor-text", class: "advisor-text" });
    const advice = el("div", { class: "advice" });
    const details = el("details", { open: !done }, el("summary", { text: "Advisor output" }), text);
    const node = el(
      "div",
      {
        testid: "advisor-card",
        class: "advisor-card",
        dataset: { toolCallId, phase: "", state: done ? "done" : "live" },
      },
      el("div", { class: "advisor-head" }, el("strong", { text: "Advisor" }), phase),
      advice,
      details
    );
    const card = { node, phase, text, advice, details };
    this.cards.set(toolCallId, card);
    if (!done) {
      this.messages.append(node);
      this.scroll();
    }
    return card;
  }

  advisorPhase(toolCallId, phase) {
    const card = this.advisorCard(toolCallId);
    card.node.dataset.phase = phase || "";
    card.phase.textContent = (phase || "").replace(/_/g, " ");
  }

  advisorOutput(toolCallId, delta, omittedBytes) {
    const card = this.advisorCard(toolCallId);
    if (omittedBytes) card.text.append(`[… ${omittedBytes} bytes omitted] `);
    if (delta) card.text.append(delta);
    this.scroll();
  }

  markCardDone(card) {
    card.node.dataset.state = "done";
    card.details.open = false;
  }
}

// ---------------------------------------------------------------------------
// LLM configs page

/** #/llms; #/llms/<id>/<version> also opens that config's versions at that
 *  version (a session's snapshot links there). */
function pageLlms(main, ctx, arg) {
  const rows = el("tbody");
  const formSlot = el("div");
  const versionsSlot = el("div");
  main.append(
    el(
      "div",
      { testid: "page-llms", class: "page" },
      el(
        "div",
        { class: "page-head" },
        el("h1", { text: "LLM configs" }),
        el("button", { testid: "llm-new", type: "button", class: "primary", text: "New config", onclick: () => openForm(null) })
      ),
      el(
        "div",
        { class: "table-wrap" },
        el(
          "table",
          { class: "table" },
          el(
            "thead",
            null,
            el("tr", null, ["Name", "Model", "Source", "Options", "Updated", ""].map((h) => el("th", { text: h })))
          ),
          rows
        )
      ),
      formSlot,
      versionsSlot
    )
  );

  async function refresh() {
    try {
      const page = await api("/v1/llms?limit=200", { signal: ctx.signal });
      if (ctx.alive()) rows.replaceChildren(...page.data.map(row));
    } catch (err) {
      if (ctx.alive()) showError(err);
    }
  }

  function row(c) {
    const system = c.source === "system-default";
    const options = optionsText(c.providerOptions);
    return el(
      "tr",
      { testid: "llm-row", dataset: { id: c.id, source: c.source } },
      el("td", { text: c.displayName || "—" }),
      el("td", { class: "mono", text: c.model }),
      el("td", { text: system ? `system default (${c.presetName} v${c.presetVersion})` : "user" }),
      el("td", { class: "small", text: options || "—" }),
      el("td", { class: "small", text: fmtTime(c.updatedAt) }),
      el(
        "td",
        { class: "actions" },
        el("button", {
          testid: "llm-edit",
          type: "button",
          text: "Edit",
          disabled: system,
          title: system ? "System defaults are read-only: copy to edit" : `Edit ${c.displayName || c.model}`,
          "aria-label": `Edit ${c.displayName || c.model}`,
          onclick: () => openForm(c),
        }),
        el("button", {
          testid: "llm-copy",
          type: "button",
          text: "Copy",
          title: "Copy into a new user config",
          "aria-label": `Copy ${c.displayName || c.model}`,
          onclick: () => copy(c),
        }),
        el("button", {
          testid: "llm-versions",
          type: "button",
          text: `Versions (${c.version})`,
          title: "Earlier versions of this config",
          "aria-label": `Versions of ${c.displayName || c.model}`,
          onclick: () => openVersions(c.id, null),
        })
      )
    );
  }

  async function openVersions(id, version) {
    try {
      const page = await api(`/v1/llms/${encodeURIComponent(id)}/versions?limit=200`, { signal: ctx.signal });
      if (!ctx.alive()) return;
      versionsSlot.replaceChildren(llmVersions(page, version, () => versionsSlot.replaceChildren()));
      versionsSlot.scrollIntoView({ block: "nearest" });
    } catch (err) {
      if (ctx.alive()) showError(err);
    }
  }

  async function copy(c) {
    try {
      const created = await api(`/v1/llms/${encodeURIComponent(c.id)}/copy`, { method: "POST" });
      await refresh();
      openForm(created);
      showStatus("Copied: edit the new config");
    } catch (err) {
      showError(err);
    }
  }

  function openForm(config) {
    formSlot.replaceChildren(llmForm(config, async () => {
      formSlot.replaceChildren();
      await refresh();
    }));
    formSlot.querySelector("input").focus();
  }

  refresh();
  if (arg) {
    const [id, version] = arg.split("/");
    openVersions(id, version ? Number(version) : null);
  }
}

/** Provider options as "temperature=0.2, maxTokens=64": the API names every
 *  option, unset ones as null; only the set ones are shown. */
function optionsText(options) {
  return Object.entries(options || {})
    .filter(([, v]) => v !== null && v !== undefined)
    .map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`)
    .join(", ");
}

/** A config's settings, read-only: model, options, system prompt, base URL
 *  (of a config version or of a session's snapshot; both name them alike). */
function configSettings(c) {
  const row = (label, testid, value, attrs) => [
    el("dt", { text: label }),
    el("dd", Object.assign({ testid, text: value === null || value === undefined || value === "" ? "—" : value }, attrs || {})),
  ];
  return el(
    "dl",
    { class: "settings-list" },
    row("Model", "config-model", c.model, { class: "mono" }),
    row("Options", "config-options", optionsText(c.providerOptions), { class: "small" }),
    row("System prompt", "config-system", c.systemPrompt, { class: "prompt" }),
    row("Base URL", "config-base-url", c.baseUrl, { class: "mono small" })
  );
}

/** What `config` changed from `previous` (the version before it). */
function changesText(config, previous) {
  if (!previous) return "created";
  const same = (a, b) => JSON.stringify(a ?? null) === JSON.stringify(b ?? null);
  const names = { displayName: "name", model: "model", systemPrompt: "system prompt", baseUrl: "base URL" };
  const changed = Object.keys(names).filter((k) => !same(config[k], previous[k])).map((k) => names[k]);
  const now = config.providerOptions || {};
  const before = previous.providerOptions || {};
  for (const k of new Set([...Object.keys(now), ...Object.keys(before)])) if (!same(now[k], before[k])) changed.push(k);
  return changed.length ? changed.join(", ") : "no change";
}

/** The versions of one config (a page of GET /v1/llms/{id}/versions, newest
 *  first) and the chosen one's settings, read-only. */
function llmVersions(page, chosen, close) {
  const versions = page.data || [];
  const latest = versions.length ? versions[0].config : null;
  const name = latest ? latest.displayName || latest.model : "";
  const detail = el("div");
  const show = (v) => {
    for (const r of rows) r.classList.toggle("selected", r.dataset.version === String(v.version));
    detail.replaceChildren(
      el(
        "div",
        { testid: "llm-version-detail", dataset: { version: String(v.version) } },
        el("h3", { text: `Version ${v.version} · ${v.config.displayName || v.config.model} · ${fmtTime(v.createdAt)}` }),
        configSettings(v.config)
      )
    );
  };
  const rows = versions.map((v, i) =>
    el(
      "tr",
      { testid: "llm-version-row", dataset: { version: String(v.version) } },
      el("td", { text: "v" + v.version + (i === 0 ? (latest.deleted ? " (deleted)" : " (current)") : "") }),
      el("td", { class: "small", text: fmtTime(v.createdAt) }),
      el("td", { testid: "llm-version-changes", class: "small", text: changesText(v.config, versions[i + 1] && versions[i + 1].config) }),
      el(
        "td",
        { class: "actions" },
        el("button", { testid: "llm-version-show", type: "button", text: "Show", "aria-label": `Show version ${v.version}`, onclick: () => show(v) })
      )
    )
  );
  const panel = el(
    "section",
    { testid: "llm-versions-panel", class: "card", dataset: { id: latest ? latest.id : null } },
    el(
      "div",
      { class: "page-head" },
      el("h2", { text: `Versions of ${name}` }),
      el("button", { type: "button", text: "Close", "aria-label": "Close the versions", onclick: close })
    ),
    el(
      "div",
      { class: "table-wrap" },
      el("table", { class: "table" }, el("thead", null, el("tr", null, ["Version", "Written", "Changed", ""].map((h) => el("th", { text: h })))), el("tbody", null, rows))
    ),
    page.nextBefore ? el("p", { class: "muted small", text: "Only the newest 200 versions are shown." }) : null,
    detail
  );
  const wanted = versions.find((v) => v.version === chosen);
  if (wanted) show(wanted);
  else if (chosen) detail.append(el("p", { class: "error-text", text: `Version ${chosen} is not listed.` }));
  return panel;
}

/** The create / edit form of an LLM config. */
function llmForm(config, done) {
  const opts = (config && config.providerOptions) || {};
  const input = (testid, value, attrs) =>
    el("input", Object.assign({ testid, value: value === undefined || value === null ? "" : String(value) }, attrs || {}));
  const name = input("llm-name", config && config.displayName);
  const model = input("llm-model", config && config.model, { required: true, list: "llm-model-ids", autocomplete: "off" });
  const system = el("textarea", { testid: "llm-system", rows: 4, value: (config && config.systemPrompt) || "" });
  const temperature = input("llm-temperature", opts.temperature, { type: "number", step: "0.1", min: "0", max: "2" });
  const maxTokens = input("llm-max-tokens", opts.maxTokens, { type: "number", step: "1", min: "1" });
  const error = el("p", { class: "error-text", testid: "llm-error", role: "alert" });
  const models = el("datalist", { id: "llm-model-ids" });
  api("/v1/catalog")
    .then((catalog) => {
      for (const p of catalog.providers) for (const m of p.models) models.append(el("option", { value: m.id }));
      for (const r of catalog.routes || []) models.append(el("option", { value: r.id, label: "route" }));
    })
    .catch(() => {});

  const submit = async (event) => {
    event.preventDefault();
    error.textContent = "";
    const number = (node) => (node.value.trim() === "" ? null : Number(node.value));
    const providerOptions = { temperature: number(temperature), maxTokens: number(maxTokens) };
    let body;
    if (config) {
      body = { model: model.value.trim(), systemPrompt: system.value || null, providerOptions };
      if (name.value.trim()) body.displayName = name.value.trim();
    } else {
      body = { model: model.value.trim() };
      if (name.value.trim()) body.displayName = name.value.trim();
      if (system.value) body.systemPrompt = system.value;
      const given = Object.entries(providerOptions).filter(([, v]) => v !== null);
      if (given.length) body.providerOptions = Object.fromEntries(given);
    }
    try {
      if (config) await api("/v1/llms/" + encodeURIComponent(config.id), { method: "PATCH", json: body });
      else await api("/v1/llms", { method: "POST", json: body });
      showStatus("Saved");
      await done();
    } catch (err) {
      const fieldName = err.body && err.body.field ? ` (${err.body.field})` : "";
      error.textContent = err.message + fieldName;
    }
  };
  return el(
    "form",
    { testid: "llm-form", class: "card form", onsubmit: submit, "aria-label": config ? "Edit LLM config" : "New LLM config" },
    el("h2", { text: config ? `Edit ${config.displayName || config.model}` : "New LLM config" }),
    field("Name", name),
    field("Model", model),
    models,
    field("System prompt", system),
    el("div", { class: "row" }, field("Temperature", temperature), field("Max tokens", maxTokens)),
    error,
    el(
      "div",
      { class: "row" },
      el("button", { testid: "llm-save", type: "submit", class: "primary", text: "Save" }),
      el("button", { type: "button", text: "Cancel", onclick: () => done() })
    )
  );
}

// ---------------------------------------------------------------------------
// Calls page

function pageCalls(main, ctx) {
  const filters = {
    conversationId: el("input", { testid: "filter-conversation", placeholder: "conversation id" }),
    operation: el("input", { testid: "filter-operation", placeholder: "chat, title, advisor…", list: "operation-names" }),
    model: el("input", { testid: "filter-model", placeholder: "provider/model" }),
    provider: el("input", { testid: "filter-provider", placeholder: "provider" }),
    status: select({ testid: "filter-status" }, [
      { value: "", label: "any" },
      { value: "ok", label: "ok" },
      { value: "error", label: "error" },
    ]),
    from: el("input", { testid: "filter-from", placeholder: "YYYY-MM-DD or RFC 3339" }),
    to: el("input", { testid: "filter-to", placeholder: "YYYY-MM-DD or RFC 3339" }),
  };
  const labels = {
    conversationId: "Conversation",
    operation: "Operation",
    model: "Model",
    provider: "Provider",
    status: "Status",
    from: "From",
    to: "To",
  };
  const rows = el("tbody");
  const detail = el("div");
  const chart = el("div", { class: "chart-wrap" });
  const usageTable = el("div", { class: "table-wrap" });
  const form = el(
    "form",
    {
      class: "card filters",
      "aria-label": "Filters",
      onsubmit: (event) => {
        event.preventDefault();
        loadSessions();
      },
    },
    Object.entries(filters).map(([key, node]) => field(labels[key], node)),
    el("datalist", { id: "operation-names" }, ["gateway", "chat", "title", "compaction", "advisor"].map((o) => el("option", { value: o }))),
    el("button", { testid: "filter-apply", type: "submit", class: "primary", text: "Apply" })
  );
  main.append(
    el(
      "div",
      { testid: "page-calls", class: "page" },
      el("h1", { text: "Calls" }),
      el("section", { class: "card" }, el("h2", { text: "Token usage over time" }), chart),
      el("section", { class: "card" }, el("h2", { text: "Usage by operation" }), usageTable),
      form,
      el(
        "div",
        { class: "table-wrap" },
        el(
          "table",
          { class: "table sessions" },
          el(
            "thead",
            null,
            el("tr", null, ["Started", "Operation", "Model", "Provider", "Calls", "Tokens", "Cost", "Duration", "Status"].map((h) => el("th", { text: h })))
          ),
          rows
        )
      ),
      detail
    )
  );

  async function loadSessions() {
    const query = new URLSearchParams({ limit: "200" });
    for (const [key, node] of Object.entries(filters)) if (node.value.trim()) query.set(key, node.value.trim());
    try {
      const page = await api("/v1/llm-sessions?" + query, { signal: ctx.signal });
      if (ctx.alive()) drawSessions(page.data);
    } catch (err) {
      if (ctx.alive()) showError(err);
    }
  }

  function drawSessions(sessions) {
    const ids = new Set(sessions.map((s) => s.id));
    const children = new Map();
    const top = [];
    for (const s of sessions) {
      if (s.parentSessionId && ids.has(s.parentSessionId)) {
        if (!children.has(s.parentSessionId)) children.set(s.parentSessionId, []);
        children.get(s.parentSessionId).push(s);
      } else top.push(s);
    }
    const out = [];
    for (const s of top) {
      out.push(sessionRow(s, 0));
      for (const c of children.get(s.id) || []) out.push(sessionRow(c, 1));
    }
    rows.replaceChildren(...out);
    if (!out.length) rows.append(el("tr", null, el("td", { colspan: 9, class: "muted", text: "No sessions." })));
  }

  function sessionRow(s, depth) {
    return el(
      "tr",
      {
        testid: "session-row",
        class: "clickable" + (depth ? " child" : "") + (s.status === "error" ? " failed" : ""),
        dataset: { id: s.id, operation: s.operation, depth: String(depth) },
        tabindex: 0,
        title: "Show the calls of this session",
        onclick: () => openSession(s.id),
        onkeydown: (event) => {
          if (event.key === "Enter") openSession(s.id);
        },
      },
      el("td", { class: "small" }, depth ? "↳ " : "", fmtTime(s.startedAt || s.createdAt)),
      el("td", { text: s.operation }),
      el("td", { class: "mono small", text: s.modelId || "—" }),
      el("td", { text: s.provider || "—" }),
      el("td", { text: fmtNumber(s.callCount) }),
      el("td", { text: fmtNumber(s.usage.totalTokens) }),
      el("td", { testid: "session-cost", text: fmtUsd(s.costUsd), title: "Cost of this session's calls" }),
      el("td", { text: s.durationMs === null ? "—" : `${fmtNumber(s.durationMs)} ms` }),
      el("td", { class: s.status === "error" ? "error-text" : "", text: s.status, title: s.lastError || "" })
    );
  }

  async function openSession(id) {
    try {
      const s = await api("/v1/llm-sessions/" + encodeURIComponent(id), { signal: ctx.signal });
      if (!ctx.alive()) return;
      detail.replaceChildren(sessionDetail(s, openSession));
      detail.scrollIntoView({ block: "nearest" });
    } catch (err) {
      if (ctx.alive()) showError(err);
    }
  }

  async function loadUsage() {
    try {
      const [calls, usage] = await Promise.all([
        api("/v1/calls?limit=500", { signal: ctx.signal }),
        api("/v1/usage?groupBy=operation", { signal: ctx.signal }),
      ]);
      if (!ctx.alive()) return;
      chart.replaceChildren(usageChart(calls.data));
      usageTable.replaceChildren(usageByOperation(usage));
    } catch (err) {
      if (ctx.alive()) showError(err);
    }
  }

  loadSessions();
  loadUsage();
}

function sessionDetail(s, openSession) {
  const kids = s.children || [];
  return el(
    "section",
    { testid: "session-detail", class: "card", dataset: { id: s.id } },
    el("h2", { text: `Session ${s.operation} · ${s.id}` }),
    el(
      "p",
      { class: "muted small" },
      `conversation ${s.conversationId || "—"} · turn ${s.turnId || "—"} · ${s.status}` +
        // An ok session with an error: an earlier attempt failed (retries, fallbacks).
        (s.lastError ? (s.status === "ok" ? ` · an earlier attempt failed: ${s.lastError}` : ` · ${s.lastError}`) : "")
    ),
    kids.length
      ? el(
          "p",
          null,
          "Child sessions: ",
          kids.map((c) =>
            el("button", { type: "button", class: "link", text: `${c.operation} ${c.modelId || ""}`, onclick: () => openSession(c.id) })
          )
        )
      : null,
    sessionConfig(s.config),
    (s.calls || []).map(callRow)
  );
}

/** The config snapshot a session ran with (its `config`; null without one):
 *  the config's name (as it was at that version) and a link to that version. */
function sessionConfig(c) {
  if (!c) {
    return el(
      "section",
      { testid: "session-config", class: "snapshot", dataset: { none: "true" } },
      el("h3", { text: "Config" }),
      el("p", { testid: "session-config-none", class: "muted", text: "No config: the session ran without one." })
    );
  }
  const named = c.llmId && c.version !== null && c.version !== undefined;
  const name = el("span", { testid: "session-config-name", class: "mono", text: c.llmId || "no LLM config" });
  if (named) {
    api(`/v1/llms/${encodeURIComponent(c.llmId)}?version=${encodeURIComponent(c.version)}`)
      .then((v) => {
        name.textContent = `${v.displayName || v.model} (${c.llmId})`;
        name.classList.remove("mono");
      })
      .catch(() => {}); // the id alone still names it
  }
  const version = named
    ? el("a", {
        testid: "session-config-version",
        href: `#/llms/${encodeURIComponent(c.llmId)}/${c.version}`,
        title: "This version on the LLM configs page",
        text: `version ${c.version}`,
      })
    : null;
  return el(
    "section",
    { testid: "session-config", class: "snapshot", dataset: { llmId: c.llmId, version: c.version } },
    el("h3", { text: "Config as it ran" }),
    el(
      "p",
      { class: "small" },
      name,
      version ? [" · ", version] : null,
      c.source ? [" · ", el("span", { testid: "session-config-source", text: c.source === "system-default" ? "system default" : c.source })] : null,
      c.resolvedFrom ? el("span", { class: "muted", text: ` · model from ${c.resolvedFrom}` }) : null
    ),
    configSettings(c)
  );
}

function callRow(c) {
  const json = (v) => (typeof v === "string" ? v : JSON.stringify(v, null, 2));
  return el(
    "article",
    {
      testid: "call-row",
      class: "call" + (c.status === "error" ? " failed" : ""),
      dataset: { id: c.id, attempt: c.attempt === undefined || c.attempt === null ? null : String(c.attempt), route: c.route || null },
    },
    el(
      "header",
      { class: "call-head" },
      el("strong", { class: "mono", text: c.modelId }),
      c.route ? el("span", { testid: "call-route", class: "badge", text: "route " + c.route, title: "The route the request named" }) : null,
      c.attempt > 1 || (c.route && c.attempt) ? el("span", { testid: "call-attempt", class: "badge", text: "attempt " + c.attempt }) : null,
      el("span", { class: c.status === "error" ? "badge error-text" : "badge", text: c.httpStatus ? `${c.status} ${c.httpStatus}` : c.status }),
      el("span", { class: "badge", text: tokenText(c.usage) }),
      el("span", {
        testid: "call-cost",
        class: "badge",
        text: fmtUsd(c.costUsd),
        title: c.priceSource ? `price: ${c.priceSource}${c.priceVersion ? " " + c.priceVersion : ""}` : "no price recorded",
      }),
      el("span", { class: "muted small", text: `sent ${fmtTime(c.sentAt)}` }),
      el("span", { class: "muted small", text: `first token ${c.timeToFirstTokenMs ?? "—"} ms · total ${c.latencyMs ?? "—"} ms` }),
      c.finishReason ? el("span", { class: "muted small", text: "finish: " + c.finishReason }) : null
    ),
    c.error ? el("p", { class: "error-text", text: c.error }) : null,
    el("details", null, el("summary", { text: "Request" }), el("pre", { text: json(c.request) })),
    el("details", { open: true }, el("summary", { text: "Response" }), el("pre", { text: c.responseText || "" })),
    c.reasoningText ? el("details", null, el("summary", { text: "Reasoning" }), el("pre", { text: c.reasoningText })) : null,
    c.toolCalls ? el("details", null, el("summary", { text: "Tool calls" }), el("pre", { text: json(c.toolCalls) })) : null
  );
}

const PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#76b7b2", "#edc948", "#ff9da7", "#9c755f", "#bab0ac"];

/** Stacked bars of tokens per time bucket (hour, or day past 48 h) by model. */
function usageChart(calls) {
  const W = 720, H = 260, left = 56, right = 12, top = 12, bottom = 36;
  const points = calls
    .map((c) => ({ t: new Date(c.sentAt).getTime(), model: c.modelId, tokens: tokensOf(c.usage) }))
    .filter((p) => !Number.isNaN(p.t) && p.tokens > 0);
  if (!points.length) {
    return svg(
      "svg",
      { "data-testid": "usage-chart", viewBox: `0 0 ${W} 60`, role: "img", "aria-label": "Token usage over time: no data", class: "chart" },
      svg("text", { x: 12, y: 36, class: "axis-label", text: "No token usage recorded yet." })
    );
  }
  const minT = Math.min(...points.map((p) => p.t));
  const maxT = Math.max(...points.map((p) => p.t));
  const hourly = maxT - minT <= 48 * 3600 * 1000;
  const size = hourly ? 3600 * 1000 : 24 * 3600 * 1000;
  const bucketOf = (t) => Math.floor(t / size) * size;
  const buckets = [];
  for (let b = bucketOf(minT); b <= bucketOf(maxT); b += size) buckets.push(b);
  const totalsByModel = new Map();
  const cells = new Map(); // bucket -> Map(model -> tokens)
  for (const p of points) {
    const b = bucketOf(p.t);
    if (!cells.has(b)) cells.set(b, new Map());
    const cell = cells.get(b);
    cell.set(p.model, (cell.get(p.model) || 0) + p.tokens);
    totalsByModel.set(p.model, (totalsByModel.get(p.model) || 0) + p.tokens);
  }
  const models = Array.from(totalsByModel.keys()).sort((a, b) => totalsByModel.get(b) - totalsByModel.get(a));
  const color = (m) => PALETTE[models.indexOf(m) % PALETTE.length];
  const maxStack = Math.max(...buckets.map((b) => Array.from((cells.get(b) || new Map()).values()).reduce((s, v) => s + v, 0)));
  const legendRows = Math.ceil(models.length / 3);
  const fullH = H + legendRows * 20 + 8;
  const plotW = W - left - right, plotH = H - top - bottom;
  const slot = plotW / buckets.length;
  const barW = Math.max(2, Math.min(48, slot * 0.7));
  const y = (v) => top + plotH - (v / maxStack) * plotH;
  const fmtBucket = (b) => {
    const d = new Date(b);
    return hourly
      ? d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
      : d.toLocaleDateString([], { month: "short", day: "numeric" });
  };

  const root = svg("svg", {
    "data-testid": "usage-chart",
    class: "chart",
    viewBox: `0 0 ${W} ${fullH}`,
    role: "img",
    "aria-label": `Tokens per ${hourly ? "hour" : "day"} by model`,
  });
  // Axes, grid and labels.
  for (const v of [0, maxStack / 2, maxStack]) {
    root.append(
      svg("line", { x1: left, x2: W - right, y1: y(v), y2: y(v), class: "grid" }),
      svg("text", { x: left - 6, y: y(v) + 4, "text-anchor": "end", class: "tick", text: fmtNumber(Math.round(v)) })
    );
  }
  root.append(
    svg("text", { x: 12, y: top + plotH / 2, class: "axis-label", transform: `rotate(-90 12 ${top + plotH / 2})`, "text-anchor": "middle", text: "tokens" }),
    svg("text", { x: left + plotW / 2, y: H - 4, class: "axis-label", "text-anchor": "middle", text: hourly ? "hour" : "day" })
  );
  const labelEvery = Math.ceil(buckets.length / 8);
  buckets.forEach((b, i) => {
    const x = left + i * slot + (slot - barW) / 2;
    let base = 0;
    for (const m of models) {
      const tokens = (cells.get(b) || new Map()).get(m);
      if (!tokens) continue;
      const rect = svg("rect", {
        class: "bar",
        "data-model": m,
        "data-tokens": tokens,
        x,
        y: y(base + tokens),
        width: barW,
        height: Math.max(0.5, y(base) - y(base + tokens)),
        fill: color(m),
      });
      rect.append(svg("title", { text: `${m}: ${fmtNumber(tokens)} tokens, ${fmtBucket(b)}` }));
      root.append(rect);
      base += tokens;
    }
    if (i % labelEvery === 0) {
      root.append(svg("text", { x: x + barW / 2, y: top + plotH + 14, "text-anchor": "middle", class: "tick", text: fmtBucket(b) }));
    }
  });
  // Legend.
  const legend = svg("g", { class: "legend" });
  models.forEach((m, i) => {
    const lx = left + (i % 3) * (plotW / 3);
    const ly = H + 4 + Math.floor(i / 3) * 20;
    legend.append(
      svg("rect", { class: "swatch", x: lx, y: ly, width: 12, height: 12, fill: color(m) }),
      svg("text", { x: lx + 18, y: ly + 10, class: "tick", text: `${m} (${fmtNumber(totalsByModel.get(m))})` })
    );
  });
  root.append(legend);
  return root;
}

function usageByOperation(usage) {
  const cols = ["calls", "promptTokens", "completionTokens", "reasoningTokens", "totalTokens", "costUsd"];
  const heads = ["Operation", "Calls", "Prompt", "Completion", "Reasoning", "Total", "Cost"];
  const fmt = (c, v) => (c === "costUsd" ? fmtUsd(v) : fmtNumber(v));
  const total = usage.total || {};
  return el(
    "table",
    { testid: "usage-by-operation", class: "table" },
    el("thead", null, el("tr", null, heads.map((h) => el("th", { text: h })))),
    el(
      "tbody",
      null,
      usage.data.map((r) =>
        el("tr", { dataset: { key: r.key } }, el("td", { text: r.key }), cols.map((c) => el("td", { class: "num", text: fmt(c, r[c]) })))
      )
    ),
    el("tfoot", null, el("tr", null, el("th", { text: "Total" }), cols.map((c) => el("th", { class: "num", text: fmt(c, total[c]) }))))
  );
}

// ---------------------------------------------------------------------------

setupApiKeyField();
window.addEventListener("hashchange", route);
route();
