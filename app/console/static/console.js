// Job Scheduler V2 console: the only script of the console, written for it (no library).
// 1. [data-refresh="/ui/..."]: re-fetches that fragment every data-every seconds.
// 2. [data-events="/ui/executions/<id>/events"]: follows the execution's Server-Sent Events,
//    appends output lines as they come, updates step and job status, reloads at the end.
"use strict";

function refreshing(node) {
  const every = Number(node.dataset.every || 5) * 1000;
  const tick = async () => {
    try {
      const response = await fetch(node.dataset.refresh, { credentials: "same-origin" });
      if (response.ok) node.innerHTML = await response.text();
    } catch (error) {
      // offline for a moment: try again at the next tick
    }
    setTimeout(tick, every);
  };
  setTimeout(tick, every);
}

function badge(status) {
  const span = document.createElement("span");
  span.className = "badge " + status;
  span.textContent = status.replace("_", " ");
  return span;
}

function following(node) {
  const live = document.getElementById("live-output");
  const source = new EventSource(node.dataset.events);
  const seen = new Set();
  source.addEventListener("output", (message) => {
    if (seen.has(message.lastEventId) && message.lastEventId) return;
    seen.add(message.lastEventId);
    const data = JSON.parse(message.data);
    const line = `[${data.step_id}${data.stream === "stderr" ? " stderr" : ""}] ${data.line}\n`;
    if (live) live.append(document.createTextNode(line));
  });
  source.addEventListener("step", (message) => {
    const data = JSON.parse(message.data);
    const step = document.querySelector(`[data-step="${CSS.escape(data.step_id)}"] .step-status`);
    if (step) step.replaceChildren(badge(data.status));
    if (live) live.dataset.step = data.step_id;
  });
  source.addEventListener("status", (message) => {
    const data = JSON.parse(message.data);
    const status = document.getElementById("status");
    if (status) { status.dataset.status = data.status; status.replaceChildren(badge(data.status)); }
  });
  source.addEventListener("end", (message) => {
    source.close();
    const data = JSON.parse(message.data);
    const status = document.getElementById("status");
    if (status) { status.dataset.status = data.status; status.replaceChildren(badge(data.status)); }
    const cancel = document.getElementById("cancel-form");
    if (cancel) cancel.remove();
    // The finished page shows every step with its stored output and the timeline.
    setTimeout(() => window.location.reload(), 300);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-refresh]").forEach(refreshing);
  document.querySelectorAll("[data-events]").forEach(following);
});
