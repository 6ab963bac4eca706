// engine dashboard: bulk actions on a queue's filtered selection (retry, cancel, delete).
// Counts the selection first (dry_run), asks for confirmation with that count, then acts.
// Plain JavaScript, no inline scripts (the pages send a strict CSP); app.js does the rest.
"use strict";

(function () {
  // app.js's (loaded first: both are deferred, base.html's comes first).
  const { toast, send } = window.engineDashboard;
  const post = (url, body) => send("POST", url, body);

  const VERBS = { retry: "Retried", cancel: "Cancelled", delete: "Deleted" };

  async function bulk(button) {
    const bar = button.closest("[data-bulk-bar]");
    const selection = {};
    ["status", "task", "search"].forEach((name) => {
      if (bar.dataset[name]) selection[name] = bar.dataset[name];
    });
    button.disabled = true;
    try {
      const counted = await post(button.dataset.url, { ...selection, dry_run: true });
      if (!counted.matched) {
        toast(`No job of the selection can be ${button.dataset.past}.`, true);
        return;
      }
      const question = `${button.dataset.question.replace("{n}", counted.matched.toLocaleString())}`;
      if (!window.confirm(question)) return;
      const done = await post(button.dataset.url, selection);
      const skipped = done.skipped ? ` (${done.skipped} had changed meanwhile)` : "";
      // The page's live regions show the result (app.js keeps them up to date).
      toast(`${VERBS[done.action]} ${done.done} of ${done.matched} job(s)${skipped}`);
    } catch (err) {
      toast(err.message, true);
    } finally {
      button.disabled = false;
    }
  }

  document.addEventListener("click", (event) => {
    const target = event.target instanceof Element ? event.target : null;
    const button = target && target.closest("button[data-bulk-op]");
    if (!button) return;
    event.preventDefault();
    bulk(button);
  });
})();
