// Overview: health, what is loaded, and the last minute's traffic, refreshed every 5 s.
import { api } from "../api.js";
import { chart, h, num, stateBadge, table } from "../ui.js";

const POLL_MS = 5000;

export async function render(ctx) {
  const stats = {
    health: h("div", { class: "value", id: "stat-health" }, "…"),
    loaded: h("div", { class: "value", id: "stat-loaded" }, "…"),
    rpm: h("div", { class: "value", id: "stat-rpm" }, "…"),
    tpm: h("div", { class: "value", id: "stat-tpm" }, "…"),
    errors: h("div", { class: "value", id: "stat-errors" }, "…"),
  };
  const stat = (label, value) => h("div", { class: "stat" }, h("div", { class: "label" }, label), value);
  const loadedBox = h("div");
  const series = { labels: [], requests: [], tokens: [] };
  const { box, instance } = chart({
    type: "line",
    data: {
      labels: series.labels,
      datasets: [
        { label: "requests / min", data: series.requests, borderColor: "#0b5cad", backgroundColor: "#0b5cad", yAxisID: "y" },
        { label: "tokens / min", data: series.tokens, borderColor: "#d97706", backgroundColor: "#d97706", yAxisID: "y1" },
      ],
    },
    options: {
      scales: { y: { beginAtZero: true, title: { display: true, text: "requests" } },
        y1: { beginAtZero: true, position: "right", grid: { drawOnChartArea: false }, title: { display: true, text: "tokens" } } },
    },
  }, "Requests and tokens per minute, sampled every 5 seconds");
  ctx.onLeave(() => instance.destroy());

  async function poll() {
    const ready = await fetch("/v2/health/ready").then((r) => r.ok).catch(() => false);
    stats.health.replaceChildren(stateBadge(ready ? "ready" : "not ready"));
    const since = new Date(Date.now() - 60_000).toISOString();
    const [usage, loaded] = await Promise.all([
      api(`/api/v1/usage?group_by=model&since=${encodeURIComponent(since)}`),
      api("/api/v1/deployments"),
    ]);
    const total = (field) => usage.rows.reduce((s, r) => s + (r[field] || 0), 0);
    const requests = total("requests");
    const tokens = total("prompt_tokens") + total("completion_tokens");
    stats.rpm.textContent = num(requests);
    stats.tpm.textContent = num(tokens);
    stats.errors.textContent = requests ? `${((100 * total("errors")) / requests).toFixed(1)} %` : "0 %";
    stats.loaded.textContent = num(loaded.length);
    loadedBox.replaceChildren(table([
      { label: "Model", value: (d) => h("a", { href: `#/models/${encodeURIComponent(d.model)}` }, d.model) },
      { label: "Version", value: (d) => h("a", { href: `#/models/${encodeURIComponent(d.model)}/${d.version}` }, String(d.version)), num: true },
      { label: "State", value: (d) => stateBadge(d.state) },
      { label: "Workers", value: (d) => `${d.instances} × ${d.workers || ""}` },
      { label: "Queue", value: (d) => num(d.queue_depth), num: true },
      { label: "In flight", value: (d) => num(d.in_flight), num: true },
    ], loaded, { empty: "No model is loaded." }));
    series.labels.push(new Date().toLocaleTimeString());
    series.requests.push(requests);
    series.tokens.push(tokens);
    if (series.labels.length > 60) for (const list of Object.values(series)) list.shift();
    instance.update();
  }
  await poll();
  const timer = setInterval(() => poll().catch(() => {}), POLL_MS);
  ctx.onLeave(() => clearInterval(timer));

  return h("section", { dataset: { title: "Overview" } },
    h("h1", {}, "Overview"),
    h("div", { class: "grid cols-4", style: "margin-bottom:18px" },
      stat("Server", stats.health), stat("Loaded models", stats.loaded),
      stat("Requests, last minute", stats.rpm), stat("Tokens, last minute", stats.tpm),
      stat("Error rate, last minute", stats.errors)),
    h("div", { class: "card" }, h("h2", {}, "Traffic (live)"), box),
    h("div", { class: "card" }, h("h2", {}, "Loaded models"), loadedBox));
}
