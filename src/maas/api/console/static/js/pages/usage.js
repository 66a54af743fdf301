// Usage per key and model over time: requests, tokens, compute and audio seconds, characters; chart and CSV.
import { api } from "../api.js";
import { PALETTE, attempt, chart, field, h, num, table } from "../ui.js";

const METRICS = { requests: "Requests", tokens: "Tokens (prompt + completion)", compute_s: "Compute seconds", audio_s: "Audio seconds (speech to text)", characters: "Characters (text to speech)", errors: "Errors" };

export async function render(ctx) {
  const isAdmin = ctx.can("admin");
  const keys = isAdmin ? await api("/api/v1/keys?include_revoked=true") : [];
  const keyNames = Object.fromEntries(keys.map((k) => [k.id, k.name]));
  const today = new Date();
  const iso = (d) => d.toISOString().slice(0, 10);
  const since = h("input", { type: "date", value: iso(new Date(today.getTime() - 13 * 86400_000)) });
  const until = h("input", { type: "date", value: "" });
  const key = h("select", {}, h("option", { value: "" }, isAdmin ? "all keys" : "this key"),
    keys.map((k) => h("option", { value: k.id }, `${k.name} (${k.prefix})`)));
  key.disabled = !isAdmin;
  const metric = h("select", { id: "usage-metric" }, Object.entries(METRICS).map(([v, l]) => h("option", { value: v }, l)));
  const tableBox = h("div", { id: "usage-table" });
  const totals = h("p", { class: "muted", id: "usage-totals", role: "status" });
  const { box, instance } = chart({ type: "bar", data: { labels: [], datasets: [] },
    options: { scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true } } } }, "Usage per model and day");
  box.id = "usage-chart";
  ctx.onLeave(() => instance.destroy());

  const query = (groupBy, format = "json") => {
    const params = new URLSearchParams({ group_by: groupBy, format });
    if (since.value) params.set("since", `${since.value}T00:00:00Z`);
    if (until.value) params.set("until", `${until.value}T23:59:59Z`);
    if (key.value) params.set("key", key.value);
    return `/api/v1/usage?${params}`;
  };
  const value = (row) => metric.value === "tokens" ? (row.prompt_tokens || 0) + (row.completion_tokens || 0) : row[metric.value] || 0;

  async function refresh() {
    const [byDay, byKey] = await Promise.all([api(query("model,day")), api(query("key,model"))]);
    const days = [...new Set(byDay.rows.map((r) => r.day))].sort();
    const models = [...new Set(byDay.rows.map((r) => r.model))].sort();
    instance.data.labels = days;
    instance.data.datasets = models.map((m, i) => ({
      label: m, backgroundColor: PALETTE[i % PALETTE.length],
      data: days.map((d) => value(byDay.rows.find((r) => r.model === m && r.day === d) || {})),
    }));
    instance.update();
    const sum = (f) => byKey.rows.reduce((s, r) => s + (r[f] || 0), 0);
    totals.textContent = `${num(sum("requests"))} requests · ${num(sum("prompt_tokens") + sum("completion_tokens"))} tokens · ${num(sum("compute_s"))} compute seconds · ${num(sum("errors"))} errors`;
    tableBox.replaceChildren(table([
      { label: "Key", value: (r) => keyNames[r.key] || r.key || "(none)" },
      { label: "Model", value: (r) => r.model },
      { label: "Requests", value: (r) => num(r.requests), num: true },
      { label: "Errors", value: (r) => num(r.errors), num: true },
      { label: "Prompt tokens", value: (r) => num(r.prompt_tokens), num: true },
      { label: "Completion tokens", value: (r) => num(r.completion_tokens), num: true },
      { label: "Compute s", value: (r) => num(r.compute_s), num: true },
      { label: "Audio s", value: (r) => num(r.audio_s), num: true },
      { label: "Characters", value: (r) => num(r.characters), num: true },
      { label: "Mean latency ms", value: (r) => num(r.mean_latency_ms), num: true },
    ], byKey.rows, { empty: "No usage in this period." }));
  }
  async function exportCsv() {
    const response = await api(query("key,model,day", "csv"), { raw: true });
    const url = URL.createObjectURL(await response.blob());
    const link = h("a", { href: url, download: "usage.csv" });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  }
  for (const control of [since, until, key, metric]) control.addEventListener("change", () => attempt(refresh));
  await refresh();
  const timer = setInterval(() => refresh().catch(() => {}), 5000);
  ctx.onLeave(() => clearInterval(timer));
  return h("section", { dataset: { title: "Usage" } }, h("h1", {}, "Usage"),
    h("div", { class: "card" }, h("div", { class: "fields" }, field("From", since), field("To", until), field("Key", key), field("Chart", metric)),
      h("div", { class: "row", style: "margin-top:12px" }, h("button", { type: "button", onclick: () => attempt(refresh) }, "Refresh"),
        h("button", { type: "button", id: "usage-csv", onclick: () => attempt(exportCsv) }, "Export CSV"))),
    h("div", { class: "card" }, h("h2", {}, "Per model and day"), box, totals),
    h("div", { class: "card" }, h("h2", {}, "Per key and model"), tableBox));
}
