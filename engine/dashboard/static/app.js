// engine dashboard: live updates of [data-live] regions and the action buttons.
// Plain JavaScript, no dependencies, no inline scripts (the pages send a strict CSP).
"use strict";

(function () {
  const meta = (name) => (document.querySelector(`meta[name="${name}"]`) || {}).content || "";
  // Read at each use: a refresh may bring a new token (after a restart or a new session).
  const csrf = () => meta("csrf-token");
  const base = meta("base-path");
  const refreshMs = parseInt(document.body.dataset.refreshMs || "1500", 10);
  // Errors in a row before the page gives up on its event stream and polls instead.
  const MAX_STREAM_ERRORS = 3;
  // While polling, how long before it tries the event stream again.
  const RETRY_STREAM_MS = 30000;
  let busy = false;
  let timer = null;
  let source = null;
  let streamErrors = 0;
  let pollingSince = 0;

  function toast(message, bad) {
    const box = document.getElementById("toast");
    if (!box) return;
    box.textContent = message; // textContent: never HTML
    box.classList.toggle("bad", !!bad);
    box.hidden = false;
    clearTimeout(box._hide);
    box._hide = setTimeout(() => { box.hidden = true; }, bad ? 8000 : 4000);
  }

  function setMode(text) {
    const mode = document.getElementById("live-mode");
    if (mode) mode.textContent = text;
  }

  function setCsrf(token) {
    const current = document.querySelector('meta[name="csrf-token"]');
    if (token && current) current.content = token;
  }

  // --- swapping live regions ------------------------------------------------------------------
  function keepState(oldRegion, newRegion) {
    const checked = new Set(
      Array.from(oldRegion.querySelectorAll('input[type="checkbox"][name="ids"]:checked')).map((el) => el.value)
    );
    newRegion.querySelectorAll('input[type="checkbox"][name="ids"]').forEach((el) => {
      if (checked.has(el.value)) el.checked = true;
    });
    const closed = new Set(
      Array.from(oldRegion.querySelectorAll("details[id]:not([open])")).map((el) => el.id)
    );
    newRegion.querySelectorAll("details[id]").forEach((el) => {
      if (closed.has(el.id)) el.open = false;
    });
  }

  function swap(region, fresh) {
    keepState(region, fresh);
    region.replaceWith(fresh);
  }

  const liveRegions = () => document.querySelectorAll("[data-live][id]");

  // --- polling: fetch this page again (no EventSource, or its stream keeps failing) ------------
  async function refresh() {
    const regions = liveRegions();
    if (!regions.length || busy || document.visibilityState === "hidden") return;
    try {
      const response = await fetch(window.location.href, {
        headers: { Accept: "text/html", "X-Requested-With": "refresh" },
        credentials: "same-origin",
        cache: "no-store",
      });
      if (response.redirected || response.status === 401) {
        window.location.reload(); // logged out: let the page show the login
        return;
      }
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const doc = new DOMParser().parseFromString(await response.text(), "text/html");
      const token = doc.querySelector('meta[name="csrf-token"]');
      if (token) setCsrf(token.content);
      regions.forEach((region) => {
        const fresh = doc.getElementById(region.id);
        if (fresh) swap(region, document.importNode(fresh, true));
      });
      document.body.classList.remove("stale");
    } catch (err) {
      document.body.classList.add("stale");
    }
  }

  function poll() {
    clearTimeout(timer);
    if (!pollingSince) pollingSince = Date.now();
    setMode(`refreshes every ${(refreshMs / 1000).toFixed(1)} s`);
    timer = setTimeout(async () => {
      await refresh();
      if (window.EventSource && Date.now() - pollingSince >= RETRY_STREAM_MS) {
        connect(); // the stream may work again (a proxy came back, the server restarted)
        return;
      }
      poll();
    }, refreshMs);
  }

  // --- server-sent events: the server pushes the regions that changed --------------------------
  function closeStream() {
    if (source) source.close();
    source = null;
  }

  function onUpdate(event) {
    streamErrors = 0;
    const data = JSON.parse(event.data);
    setCsrf(data.csrf);
    Object.entries(data.regions || {}).forEach(([id, html]) => {
      const region = document.getElementById(id);
      if (!region) return;
      const template = document.createElement("template");
      template.innerHTML = html; // our own server-rendered, autoescaped page fragment
      const fresh = template.content.firstElementChild;
      if (fresh && fresh.id === id) swap(region, fresh);
    });
    document.body.classList.remove("stale");
  }

  function connect() {
    clearTimeout(timer);
    closeStream();
    if (!liveRegions().length || document.visibilityState === "hidden") return;
    if (!window.EventSource) {
      poll();
      return;
    }
    pollingSince = 0;
    const page = window.location.pathname.slice(base.length) + window.location.search;
    const stream = new EventSource(`${base}/events?page=${encodeURIComponent(page || "/")}`);
    source = stream;
    setMode("updates as they happen");
    stream.addEventListener("update", onUpdate);
    stream.addEventListener("problem", () => document.body.classList.add("stale"));
    stream.addEventListener("reauth", () => {
      closeStream();
      window.location.reload(); // the session ended: the reload leads to the login
    });
    stream.addEventListener("bye", () => {
      // The server stops or asks for a fresh stream: reconnect, and count it only if it fails.
      closeStream();
      timer = setTimeout(connect, 1000);
    });
    stream.addEventListener("error", () => {
      if (source !== stream) return;
      document.body.classList.add("stale");
      streamErrors += 1;
      // CLOSED: refused (401, 404, 503): the browser gives up on its own; polling shows why.
      if (stream.readyState === EventSource.CLOSED || streamErrors >= MAX_STREAM_ERRORS) {
        closeStream();
        streamErrors = 0;
        poll();
      }
    });
  }

  // --- actions ------------------------------------------------------------------------------
  async function send(method, url, body) {
    const response = await fetch(url, {
      method,
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRF-Token": csrf() },
      body: JSON.stringify(body || {}),
    });
    let data = {};
    try {
      data = await response.json();
    } catch (err) {
      data = {};
    }
    if (!response.ok) throw new Error(data.error || `HTTP ${response.status}`);
    return data;
  }
  // ops.js (the queue page's bulk actions) speaks and sends through these too.
  window.engineDashboard = { toast, send };

  async function run(button, method, url, body, done) {
    if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
    busy = true;
    button.disabled = true;
    try {
      const data = await send(method, url, body);
      toast(typeof done === "function" ? done(data) : done || "Done");
      if (button.dataset.then) {
        window.location.assign(button.dataset.then);
        return;
      }
    } catch (err) {
      toast(err.message, true);
    } finally {
      button.disabled = false;
      busy = false;
    }
    await refresh();
  }

  document.addEventListener("click", (event) => {
    const target = event.target instanceof Element ? event.target : null;
    if (!target) return;
    const action = target.closest("button[data-action]");
    if (action) {
      event.preventDefault();
      run(action, action.dataset.action, action.dataset.url, {}, action.dataset.done);
      return;
    }
    const bulk = target.closest("button[data-bulk]");
    if (bulk) {
      event.preventDefault();
      const form = bulk.closest("form");
      const filter = {};
      if (form.dataset.task) filter.task = form.dataset.task;
      if (form.dataset.search) filter.search = form.dataset.search;
      if (bulk.dataset.bulk === "replay-selected") {
        const ids = Array.from(form.querySelectorAll('input[name="ids"]:checked')).map((el) => el.value);
        if (!ids.length) {
          toast("Select dead letters first (the boxes on the left).", true);
          return;
        }
        run(bulk, "POST", bulk.dataset.url, { ids }, (d) => `Replayed ${d.replayed} job(s)`);
      } else if (bulk.dataset.bulk === "replay-all") {
        run(bulk, "POST", bulk.dataset.url, { all: true, ...filter }, (d) => `Replayed ${d.replayed} job(s)`);
      } else if (bulk.dataset.bulk === "purge") {
        run(bulk, "POST", bulk.dataset.url, filter, (d) => `Purged ${d.purged} dead letter(s)`);
      }
    }
  });

  document.addEventListener("change", (event) => {
    const box = event.target;
    if (box instanceof HTMLInputElement && box.hasAttribute("data-select-all")) {
      const table = box.closest("table");
      table.querySelectorAll('input[name="ids"]').forEach((el) => { el.checked = box.checked; });
    }
  });

  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") {
      // Caught up at once, then live again.
      refresh();
      if (!source) connect();
    } else if (source) {
      closeStream(); // a hidden tab holds no stream open
    }
  });

  connect();
})();
