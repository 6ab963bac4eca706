// engine dashboard: live refresh of [data-live] regions and the action buttons.
// Plain JavaScript, no dependencies, no inline scripts (the pages send a strict CSP).
"use strict";

(function () {
  const meta = (name) => (document.querySelector(`meta[name="${name}"]`) || {}).content || "";
  // Read at each use: a refresh may bring a new token (after a restart or a new session).
  const csrf = () => meta("csrf-token");
  const refreshMs = parseInt(document.body.dataset.refreshMs || "1500", 10);
  let busy = false;
  let timer = null;

  function toast(message, bad) {
    const box = document.getElementById("toast");
    if (!box) return;
    box.textContent = message; // textContent: never HTML
    box.classList.toggle("bad", !!bad);
    box.hidden = false;
    clearTimeout(box._hide);
    box._hide = setTimeout(() => { box.hidden = true; }, bad ? 8000 : 4000);
  }

  // --- live refresh: fetch this page again and swap its live regions --------------------
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

  async function refresh() {
    const regions = document.querySelectorAll("[data-live][id]");
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
      const current = document.querySelector('meta[name="csrf-token"]');
      if (token && current && token.content) current.content = token.content;
      regions.forEach((region) => {
        const fresh = doc.getElementById(region.id);
        if (!fresh) return;
        keepState(region, fresh);
        region.replaceWith(document.importNode(fresh, true));
      });
      document.body.classList.remove("stale");
    } catch (err) {
      document.body.classList.add("stale");
    }
  }

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      await refresh();
      schedule();
    }, refreshMs);
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
    if (document.visibilityState === "visible") refresh();
  });

  schedule();
})();
