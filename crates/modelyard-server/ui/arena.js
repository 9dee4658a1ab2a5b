// Modelyard web UI: the arena (issue 16) — one prompt, several models, side
// by side. The #/arena page (POST /v1/arena streamed: columns fill live,
// "Prefer" records a pick, a win-count table) and a conversation's "Compare
// models" (POST /v1/conversations/<id>/arena: the next user message answered
// by several models, "Use this answer" appends the chosen one).
//
// Loaded before app.js; nothing here runs at load time. The functions use
// app.js's helpers (el, field, select, api, readSse, ApiError, showError,
// showStatus, tokenText, fmtNumber, isRoute) when they are called. The DOM
// contract is docs/ui.md ("Arena").
"use strict";

/** How many models a run takes (the API's bounds). */
const ARENA_MIN_MODELS = 2;
const ARENA_MAX_MODELS = 8;

// ---------------------------------------------------------------------------
// Choosing models

/** The catalog's model ids in groups, each id once: favorites, then the
 *  online providers' models, then the routes. [{label, items: [{id, route}]}] */
function arenaModelGroups(catalog) {
  const seen = new Set();
  const items = (list) =>
    (list || [])
      .filter((m) => m && m.id && !seen.has(m.id) && seen.add(m.id))
      .map((m) => ({ id: m.id, route: isRoute(m) }));
  const groups = [{ label: "Favorites", items: items(catalog.favorites) }];
  for (const p of catalog.providers || []) {
    if (p.status === "online") groups.push({ label: p.name, items: items(p.models) });
  }
  groups.push({ label: "Routes", items: items(catalog.routes) });
  return groups.filter((g) => g.items.length);
}

/** A fieldset of model checkboxes (`arena-model-option`, `data-model-id`).
 *  node.selected(): the checked ids in the order they were checked;
 *  node.whenChanged(fn): fn() after every change. */
function modelChooser(catalog, testid) {
  const order = [];
  const listeners = [];
  const count = el("span", { class: "muted small", testid: "arena-model-count", text: "0 selected" });
  const changed = (id, checked) => {
    const at = order.indexOf(id);
    if (checked && at < 0) order.push(id);
    if (!checked && at >= 0) order.splice(at, 1);
    count.textContent = `${order.length} selected`;
    listeners.forEach((fn) => fn());
  };
  const option = (item) => {
    const box = el("input", { type: "checkbox", value: item.id, "aria-label": item.id });
    box.addEventListener("change", () => changed(item.id, box.checked));
    return el(
      "label",
      { testid: "arena-model-option", class: "chooser-option", dataset: { modelId: item.id } },
      box,
      el("span", { class: "mono", text: item.id }),
      item.route ? el("span", { class: "badge", text: "route" }) : null
    );
  };
  const groups = arenaModelGroups(catalog);
  const node = el(
    "fieldset",
    { testid, class: "model-chooser" },
    el("legend", null, `Models (${ARENA_MIN_MODELS}–${ARENA_MAX_MODELS}) `, count),
    groups.length
      ? groups.map((g) =>
          el("div", { class: "chooser-group" }, el("div", { class: "muted small", text: g.label }), g.items.map(option))
        )
      : el("p", { class: "muted", text: "No models online." })
  );
  node.selected = () => order.slice();
  node.whenChanged = (fn) => listeners.push(fn);
  return node;
}

/** Why `models` cannot run, or null. */
function arenaCountProblem(models) {
  if (models.length < ARENA_MIN_MODELS || models.length > ARENA_MAX_MODELS) {
    return `Choose ${ARENA_MIN_MODELS} to ${ARENA_MAX_MODELS} models (${models.length} chosen).`;
  }
  return null;
}

// ---------------------------------------------------------------------------
// The columns

/** One column per model, filled from the arena's events. options.pick:
 *  {label, testid, run(column) → Promise} — the button each completed
 *  column gets once the run's id is known ("Prefer", "Use this answer"). */
class ArenaColumns {
  constructor(models, options) {
    this.options = options;
    this.runId = null;
    this.picked = null;
    this.note = el("p", { testid: "arena-pick-status", class: "small", role: "status" });
    this.columns = models.map((model, index) => this.column(model, index));
    this.node = el(
      "div",
      { class: "arena-block" },
      el(
        "div",
        { testid: "arena-columns", class: "arena-columns", dataset: { state: "running" } },
        this.columns.map((c) => c.node)
      ),
      this.note
    );
  }

  column(model, index) {
    const c = {
      model,
      index,
      text: el("div", { testid: "arena-text", class: "message-text arena-text" }),
      error: el("p", { testid: "arena-error", class: "error-text", hidden: true }),
      stats: el("div", { class: "badges", hidden: true }),
      actions: el("div", { class: "arena-actions" }),
      state: el("span", { testid: "arena-state", class: "badge", text: "waiting" }),
    };
    c.node = el(
      "section",
      { testid: "arena-column", class: "arena-column", dataset: { model, index: String(index), state: "waiting" }, "aria-label": model },
      el("header", { class: "arena-column-head" }, el("span", { testid: "model-badge", class: "badge mono", text: model }), c.state),
      c.text,
      c.error,
      c.stats,
      c.actions
    );
    return c;
  }

  /** The column of an event: by index, else by model. */
  find(data) {
    const byIndex = Number.isInteger(data.index) ? this.columns[data.index] : null;
    if (byIndex && (!data.model || byIndex.model === data.model)) return byIndex;
    return this.columns.find((c) => c.model === data.model) || null;
  }

  setState(c, state) {
    c.node.dataset.state = state;
    c.state.textContent = state;
  }

  /** Applies one arena event (`arena.delta`, `.completed`, `.failed`, `.done`). */
  onEvent(type, data) {
    if (type === "arena.done") return this.done(data.id || data.runId || null);
    const c = this.find(data || {});
    if (!c) return;
    if (type === "arena.delta") {
      if (c.node.dataset.state === "waiting") this.setState(c, "streaming");
      if (c.node.dataset.state === "streaming" && typeof data.delta === "string") c.text.append(data.delta);
    } else if (type === "arena.completed") {
      this.completed(c, data);
    } else if (type === "arena.failed") {
      this.failed(c, data.error);
    }
  }

  completed(c, data) {
    if (typeof data.text === "string") c.text.textContent = data.text;
    // A redrawn run's results may carry no timings: those badges stay out.
    const known = (v) => v !== null && v !== undefined;
    c.stats.replaceChildren(
      el("span", { testid: "token-badge", class: "badge", text: tokenText(data.usage), title: "prompt + completion tokens" }),
      known(data.ttftMs)
        ? el("span", { testid: "arena-ttft", class: "badge", text: `TTFT ${fmtNumber(data.ttftMs)} ms`, title: "time to first token" })
        : null,
      known(data.durationMs)
        ? el("span", { testid: "arena-total", class: "badge", text: `total ${fmtNumber(data.durationMs)} ms`, title: "total time" })
        : null
    );
    c.stats.hidden = false;
    this.setState(c, "completed");
    this.offerPick();
  }

  failed(c, error) {
    c.error.textContent = error || "failed";
    c.error.hidden = false;
    this.setState(c, "failed");
  }

  /** A result of a finished run ({model, status, text, usage, error, ...}). */
  result(r) {
    const c = this.find(r);
    if (!c) return;
    if (r.status === "completed" || (!r.error && r.status !== "failed" && typeof r.text === "string")) this.completed(c, r);
    else if (r.status === "failed" || r.error) this.failed(c, r.error);
  }

  /** The run ended (`arena.done`): its id makes the picks possible. */
  done(runId) {
    if (runId) this.runId = runId;
    this.node.firstChild.dataset.state = "done";
    for (const c of this.columns) if (["waiting", "streaming"].includes(c.node.dataset.state)) this.setState(c, "stopped");
    this.offerPick();
  }

  /** The feed ended early (Stop, a broken connection): what arrived stays. */
  stopped(message) {
    this.node.firstChild.dataset.state = "stopped";
    for (const c of this.columns) if (["waiting", "streaming"].includes(c.node.dataset.state)) this.setState(c, "stopped");
    if (message) this.say(message, true);
  }

  say(message, error) {
    this.note.textContent = message || "";
    this.note.className = "small" + (error ? " error-text" : "");
  }

  /** A pick button on each completed column, once the run id is known and
   *  nothing is picked yet. */
  offerPick() {
    if (!this.runId || this.picked || !this.options.pick) return;
    const pick = this.options.pick;
    for (const c of this.columns) {
      if (c.node.dataset.state !== "completed" || c.actions.firstChild) continue;
      c.actions.append(
        el("button", {
          testid: pick.testid,
          type: "button",
          class: "primary small",
          text: pick.label,
          "aria-label": `${pick.label}: ${c.model}`,
          onclick: () => this.choose(c),
        })
      );
    }
  }

  buttons() {
    return this.columns.map((c) => c.actions.firstChild).filter(Boolean);
  }

  async choose(c) {
    this.buttons().forEach((b) => (b.disabled = true));
    this.say("");
    try {
      await this.options.pick.run(c);
      this.markPicked(c.model);
    } catch (err) {
      const detail = err && err.body && err.body.detail ? err.body.detail : err && err.message ? err.message : String(err);
      if (err && err.status === 409) {
        // Picked already (elsewhere): nothing more to choose here.
        this.picked = this.picked || "?";
        this.buttons().forEach((b) => b.remove());
      } else {
        this.buttons().forEach((b) => (b.disabled = false));
      }
      this.say(detail, true);
    }
  }

  /** Shows `model`'s column as the chosen one; no more pick buttons. */
  markPicked(model) {
    this.picked = model || this.picked || "?";
    this.buttons().forEach((b) => b.remove());
    for (const c of this.columns) {
      if (c.model !== model || c.node.dataset.picked === "true") continue;
      c.node.dataset.picked = "true";
      c.actions.append(el("span", { testid: "arena-picked", class: "badge status-online", text: this.options.pickedLabel || "picked" }));
    }
    this.node.firstChild.dataset.picked = this.picked;
  }
}

// ---------------------------------------------------------------------------
// The #/arena page

function pageArena(main, ctx) {
  const chooserSlot = el("div", { class: "chooser-slot" }, el("p", { class: "muted", text: "Loading models…" }));
  const prompt = el("textarea", { testid: "arena-prompt", "aria-label": "Prompt", rows: 4, placeholder: "One prompt, sent to every chosen model" });
  const llmSelect = select({ testid: "arena-llm", "aria-label": "LLM config" }, [{ value: "", label: "(none)" }], "");
  const run = el("button", { testid: "arena-run", type: "submit", class: "primary", text: "Run" });
  const stop = el("button", { testid: "arena-stop", type: "button", text: "Stop", hidden: true, title: "Stop streaming" });
  const formError = el("p", { testid: "arena-form-error", class: "error-text", role: "alert" });
  const results = el("div", { testid: "arena-results" });
  const winsBody = el("tbody");
  const wins = el(
    "section",
    { testid: "arena-wins", class: "card", hidden: true, "aria-label": "Win counts" },
    el("h2", { text: "Win counts" }),
    el(
      "div",
      { class: "table-wrap" },
      el(
        "table",
        { class: "table" },
        el("thead", null, el("tr", null, ["Model", "Wins", "Appearances", "Win rate"].map((h) => el("th", { text: h })))),
        winsBody
      )
    )
  );
  let chooser = null;
  let controller = null;

  const form = el(
    "form",
    {
      class: "card arena-form",
      "aria-label": "Arena run",
      onsubmit: (event) => {
        event.preventDefault();
        start();
      },
    },
    chooserSlot,
    field("Prompt", prompt),
    el("div", { class: "row" }, field("LLM config", llmSelect), run, stop),
    formError
  );
  main.append(el("div", { testid: "page-arena", class: "page" }, el("h1", { text: "Arena" }), form, results, wins));
  stop.addEventListener("click", () => controller && controller.abort());
  ctx.signal.addEventListener("abort", () => controller && controller.abort());

  async function load() {
    try {
      const [catalog, llms] = await Promise.all([
        api("/v1/catalog", { signal: ctx.signal }),
        api("/v1/llms?limit=200", { signal: ctx.signal }),
      ]);
      if (!ctx.alive()) return;
      chooser = modelChooser(catalog, "arena-models");
      chooserSlot.replaceChildren(chooser);
      for (const c of llms.data || []) {
        llmSelect.append(el("option", { value: c.id, text: `${c.displayName || c.model} · ${c.model}` }));
      }
    } catch (err) {
      if (ctx.alive()) showError(err);
    }
  }

  async function loadWins() {
    try {
      const stats = await api("/v1/arena/stats", { signal: ctx.signal });
      if (!ctx.alive()) return;
      const rows = (stats && stats.models) || [];
      winsBody.replaceChildren(
        ...rows.map((r) =>
          el(
            "tr",
            { testid: "arena-win-row", dataset: { model: r.model } },
            el("td", { class: "mono", text: r.model }),
            el("td", { class: "num", text: fmtNumber(r.wins) }),
            el("td", { class: "num", text: fmtNumber(r.appearances) }),
            el("td", { class: "num", text: r.winRate === null || r.winRate === undefined ? "—" : `${Math.round(r.winRate * 100)}%` })
          )
        )
      );
      if (!rows.length) winsBody.append(el("tr", null, el("td", { colspan: 4, class: "muted", text: "No picks yet." })));
      wins.hidden = false;
    } catch (err) {
      // No stats endpoint (404) or not allowed: no table.
      wins.hidden = true;
    }
  }

  async function start() {
    formError.textContent = "";
    const models = chooser ? chooser.selected() : [];
    const problem = arenaCountProblem(models);
    if (problem) return (formError.textContent = problem);
    if (!prompt.value.trim()) return (formError.textContent = "Write a prompt.");
    const body = { models, prompt: prompt.value, stream: true };
    if (llmSelect.value) body.llmId = llmSelect.value;
    const columns = new ArenaColumns(models, {
      pick: {
        label: "Prefer",
        testid: "arena-prefer",
        run: async (c) => {
          await api(`/v1/arena/${encodeURIComponent(columns.runId)}/pick`, { method: "POST", json: { model: c.model } });
          loadWins();
        },
      },
      pickedLabel: "preferred",
    });
    results.replaceChildren(columns.node);
    controller = new AbortController();
    const mine = controller;
    run.disabled = true;
    stop.hidden = false;
    let events = 0;
    try {
      await readSse("/v1/arena", mine.signal, (e) => {
        events += 1;
        columns.onEvent(e.event, e.data || {});
      }, { json: body });
      if (!columns.runId) columns.stopped("The stream ended early.");
    } catch (err) {
      if (!ctx.alive()) return;
      if (mine.signal.aborted) columns.stopped("Stopped.");
      else if (!events) {
        results.replaceChildren();
        formError.textContent = err.message;
      } else columns.stopped(err.message);
    } finally {
      if (controller === mine) {
        controller = null;
        run.disabled = false;
        stop.hidden = true;
      }
    }
  }

  load();
  loadWins();
}

// ---------------------------------------------------------------------------
// Inside a conversation

/** Adds "Compare models" to a conversation's composer (chat: app.js's
 *  ChatView) and redraws a run that waits for its pick. */
function attachConversationArena(chat, { path, catalog, conversation, messages }) {
  const arena = new ConversationArena(chat, path, catalog);
  chat.arena = arena;
  arena.restore(conversation || {}, messages || []);
  return arena;
}

/** The arena runs of one open conversation: this tab's (POST
 *  …/arena, streamed) and others' (seen in the conversation's events). */
class ConversationArena {
  constructor(chat, path, catalog) {
    this.chat = chat;
    this.path = path;
    this.runs = []; // {cols, node, runId, turnId, local}
    this.chooser = modelChooser(catalog, "compare-models");
    this.panel = el(
      "details",
      { testid: "compare", class: "compare" },
      el("summary", { testid: "compare-toggle", text: "Compare models" }),
      el("p", { class: "muted small", text: "Sending asks every chosen model; then use the answer you prefer." }),
      this.chooser
    );
    const label = () => {
      chat.sendButton.textContent = this.active() ? "Compare" : "Send";
    };
    this.panel.addEventListener("toggle", label);
    this.chooser.whenChanged(label);
    chat.composer.prepend(this.panel);
  }

  /** Whether sending compares (the panel is open and a model is chosen). */
  active() {
    return this.panel.open && this.chooser.selected().length > 0;
  }

  block(models, runId, turnId, local) {
    const run = { runId: runId || null, turnId: turnId || null, local: !!local };
    run.cols = new ArenaColumns(models, {
      pick: { label: "Use this answer", testid: "arena-use", run: (c) => this.pick(run, c) },
      pickedLabel: "used",
    });
    run.node = el(
      "section",
      { testid: "arena-run", class: "arena-run", dataset: { runId: run.runId, turnId: run.turnId } },
      el("div", { class: "message-role", text: `compare · ${models.length} models` }),
      run.cols.node
    );
    this.runs.push(run);
    this.chat.messages.append(run.node);
    this.chat.scroll();
    return run;
  }

  identify(run, runId, turnId) {
    if (runId && !run.runId) run.node.dataset.runId = run.runId = runId;
    if (turnId && !run.turnId) run.node.dataset.turnId = run.turnId = turnId;
  }

  byRun(runId, turnId) {
    return (
      this.runs.find((r) => (runId && r.runId === runId) || (turnId && r.turnId === turnId)) ||
      null
    );
  }

  /** Sends `content` to the chosen models, streaming their columns. */
  async send(content) {
    const models = this.chooser.selected();
    const problem = arenaCountProblem(models);
    if (problem) return showError(new Error(problem));
    const chat = this.chat;
    chat.sendButton.disabled = true;
    const run = this.block(models, null, null, true);
    const controller = new AbortController();
    const leave = () => controller.abort();
    chat.ctx.signal.addEventListener("abort", leave);
    let events = 0;
    try {
      await readSse(this.path + "/arena", controller.signal, (e) => {
        if (!events++) chat.input.value = "";
        const data = e.data || {};
        if (e.event === "arena.done") this.identify(run, data.id || data.runId, data.turnId);
        run.cols.onEvent(e.event, data);
      }, { json: { content, models, stream: true } });
      if (!run.cols.runId) run.cols.stopped("The stream ended early.");
    } catch (err) {
      if (!chat.ctx.alive()) return;
      if (!events) {
        // Refused (e.g. 409 while a pick is pending): nothing was asked.
        run.node.remove();
        this.runs.splice(this.runs.indexOf(run), 1);
        showError(err);
      } else run.cols.stopped(err.message);
    } finally {
      chat.ctx.signal.removeEventListener("abort", leave);
      chat.sendButton.disabled = false;
    }
  }

  /** "Use this answer": the pick, then the conversation's messages again
   *  (the picked answer is a normal assistant message now). */
  async pick(run, c) {
    const runId = run.runId || run.cols.runId;
    await api(`${this.path}/arena/${encodeURIComponent(runId)}/pick`, { method: "POST", json: { model: c.model } });
    run.node.dataset.state = "picked";
    await this.chat.reloadMessages();
    this.chat.onTurnEnd();
  }

  /** Events of the conversation's feed (another tab's or client's runs). */
  onEvent(type, data) {
    if (type === "arena.started") {
      const local = this.runs.find((r) => r.local && !r.runId && !r.turnId);
      if (this.byRun(data.runId, data.turnId)) return;
      if (local) return this.identify(local, data.runId, data.turnId);
      if (Array.isArray(data.models) && data.models.length) this.block(data.models, data.runId, data.turnId, false);
    } else if (type === "arena.completed" && Array.isArray(data.results)) {
      // The run's end in the log: every model's result.
      const run = this.byRun(data.runId, data.turnId);
      if (!run) return;
      this.identify(run, data.runId, data.turnId);
      if (!run.local) for (const r of data.results) run.cols.result(r);
      if (!run.local || !run.cols.runId) run.cols.done(data.runId);
    } else if (type === "arena.delta" || type === "arena.failed" || type === "arena.completed") {
      // Only for runs this tab does not stream itself.
      const run = this.byRun(data.runId, data.turnId);
      if (run && !run.local) run.cols.onEvent(type, data);
    } else if (type === "arena.picked") {
      const run = this.byRun(data.runId, data.turnId);
      if (run) run.cols.markPicked(data.model);
    }
  }

  /** After app.js rendered a message: a run's block stays under its user
   *  message; an answer of its turn means it was picked. */
  rendered(m) {
    if (m.role === "user") {
      for (const run of this.runs) {
        const fresh = run.local && !run.turnId && !run.cols.runId;
        if (fresh || (m.turnId && run.turnId === m.turnId)) this.chat.messages.append(run.node);
      }
    } else if (m.role === "assistant" && m.turnId) {
      const run = this.runs.find((r) => r.turnId === m.turnId);
      if (run && !run.cols.picked) run.cols.markPicked(m.modelId);
    }
  }

  /** On open: a run that waits for its pick gets its columns back. The run
   *  is named by the conversation record when it says so; else, when the
   *  last message is the user's (a pending pick has no answer yet), it is
   *  looked for in the conversation's events. */
  async restore(conversation, messages) {
    const last = messages[messages.length - 1];
    const unanswered = !!last && last.role === "user";
    try {
      const runId = pendingRunOf(conversation) || (unanswered ? await this.pendingFromEvents() : null);
      if (!runId || !this.chat.ctx.alive() || this.byRun(runId)) return;
      const run = await api(`${this.path}/arena/${encodeURIComponent(runId)}`, { signal: this.chat.ctx.signal });
      if (!run || run.picked || !this.chat.ctx.alive() || this.byRun(runId)) return;
      const results = run.results || [];
      const models = run.models || results.map((r) => r.model);
      const block = this.block(models, run.runId || runId, run.turnId, false);
      for (const r of results) block.cols.result(r);
      if (results.length >= models.length) block.cols.done(run.runId || runId);
    } catch (_) {
      /* no arena endpoints, or no run: nothing to redraw */
    }
  }

  /** The run id of the last `arena.started` with no pick or answer after
   *  it, from a replay of the conversation's events (up to `caught-up`). */
  async pendingFromEvents() {
    const controller = new AbortController();
    const leave = () => controller.abort();
    this.chat.ctx.signal.addEventListener("abort", leave);
    let pending = null;
    try {
      await readSse(this.path + "/events", controller.signal, (e) => {
        const data = e.data || {};
        if (e.event === "caught-up") controller.abort();
        else if (e.event === "arena.started") pending = { runId: data.runId, turnId: data.turnId };
        else if (!pending) return;
        else if (e.event === "arena.picked" && (!data.runId || data.runId === pending.runId)) pending = null;
        else if (e.event === "message.assistant" && pending.turnId && data.turnId === pending.turnId) pending = null;
      });
    } catch (_) {
      /* aborted at caught-up */
    } finally {
      this.chat.ctx.signal.removeEventListener("abort", leave);
    }
    return pending && pending.runId ? pending.runId : null;
  }
}

/** A pending run's id where a conversation record names one (the field
 *  names a server may use), or null. */
function pendingRunOf(c) {
  const candidates = [c.pendingArena, c.pendingPick, c.arena, c.pendingArenaRun];
  for (const v of candidates) if (v && typeof v === "object" && typeof v.runId === "string") return v.runId;
  for (const v of [c.pendingArenaRunId, c.arenaRunId, c.pendingRunId]) if (typeof v === "string" && v) return v;
  return null;
}
