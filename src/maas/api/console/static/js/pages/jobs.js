// Jobs: submit train / fine-tune / optimize / evaluate from a form, follow one live over
// SSE (progress, logs), cancel it, and read an optimization's report.
import { api, enc, sse } from "../api.js";
import { attempt, field, h, num, stateBadge, table, toast, when } from "../ui.js";
import { reportView } from "./models.js";

const KINDS = {
  train: ["model", "dataset", "task", "target", "text_column", "estimator"],
  finetune: ["model", "dataset", "text_column", "target", "max_steps"],
  optimize: ["model", "version", "dataset", "target", "method"],
  evaluate: ["model", "version", "dataset", "target"],
};
const NUMBERS = new Set(["max_steps"]);

export async function render(ctx) {
  if (ctx.params[0]) return renderJob(ctx, ctx.params[0]);
  const [jobs, models, datasets] = await Promise.all([
    api("/api/v1/jobs?limit=100"), api("/api/v1/models"), api("/api/v1/datasets"),
  ]);
  const list = table([
    { label: "Job", value: (j) => h("a", { href: `#/jobs/${enc(j.id)}` }, j.id) },
    { label: "Kind", value: (j) => j.kind },
    { label: "Model", value: (j) => j.model },
    { label: "State", value: (j) => stateBadge(j.state) },
    { label: "Progress", value: (j) => j.progress?.fraction !== undefined ? `${Math.round(100 * j.progress.fraction)} %` : "" },
    { label: "Created", value: (j) => `${when(j.created_at)}${j.created_by ? ` by ${j.created_by}` : ""}` },
  ], jobs, { empty: "No job yet." });
  return h("section", { dataset: { title: "Jobs" } }, h("h1", {}, "Jobs"),
    ctx.can("write") ? submitForm(models, datasets) : null,
    h("div", { class: "card" }, h("h2", {}, "Recent jobs"), list));
}

function submitForm(models, datasets) {
  const datalist = (id, values) => h("datalist", { id }, [...new Set(values)].map((v) => h("option", { value: v })));
  const inputs = {
    model: h("input", { list: "job-models", required: true, autocomplete: "off" }),
    version: h("input", { value: "latest", autocomplete: "off" }),
    dataset: h("input", { list: "job-datasets", required: true, autocomplete: "off" }),
    task: h("select", {}, ["tabular_classification", "tabular_regression", "text_classification"].map((t) => h("option", { value: t }, t))),
    target: h("input", { placeholder: "label", autocomplete: "off" }),
    text_column: h("input", { placeholder: "text", autocomplete: "off" }),
    estimator: h("input", { placeholder: "default for the task", autocomplete: "off" }),
    method: h("select", {}, ["onnx", "quantize_int8", "prune"].map((m) => h("option", { value: m }, m))),
    max_steps: h("input", { type: "number", min: "1", value: "50" }),
  };
  const labels = { model: "Model", version: "Version or alias", dataset: "Dataset", task: "Task", target: "Target column",
    text_column: "Text column", estimator: "Estimator", method: "Method", max_steps: "Max steps" };
  const kind = h("select", { id: "job-kind" }, Object.keys(KINDS).map((k) => h("option", { value: k }, k)));
  const extra = h("textarea", { rows: "2", class: "mono", placeholder: '{"params": {"C": 4}}' });
  const holders = Object.fromEntries(Object.entries(inputs).map(([name, input]) => [name, field(labels[name], input)]));
  const show = () => { for (const [name, holder] of Object.entries(holders)) holder.hidden = !KINDS[kind.value].includes(name); };
  kind.addEventListener("change", show);
  show();
  const form = h("form", { class: "card", "aria-labelledby": "job-form-title" },
    h("h2", { id: "job-form-title" }, "Submit a job"),
    datalist("job-models", models.map((m) => m.name)), datalist("job-datasets", datasets.map((d) => d.name)),
    h("div", { class: "fields" }, field("Kind", kind), Object.values(holders)),
    field("More spec fields (JSON object, optional)", extra),
    h("div", { class: "row", style: "margin-top:12px" }, h("button", { type: "submit", class: "primary" }, "Submit")));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const spec = { kind: kind.value };
    for (const name of KINDS[kind.value]) {
      const value = inputs[name].value.trim();
      if (value) spec[name] = NUMBERS.has(name) ? Number(value) : value;
    }
    if (extra.value.trim()) {
      try { Object.assign(spec, JSON.parse(extra.value)); } catch { toast("More spec fields: not valid JSON", true); return; }
    }
    const job = await attempt(() => api("/api/v1/jobs", { method: "POST", body: spec }));
    if (job) { toast(`Submitted ${job.id}`); location.hash = `#/jobs/${enc(job.id)}`; }
  });
  return form;
}

async function renderJob(ctx, id) {
  let job = await api(`/api/v1/jobs/${enc(id)}`);
  const head = h("div");
  const bar = h("progress", { max: "1", value: "0", "aria-label": "Job progress", id: "job-progress" });
  const stage = h("p", { class: "muted small", role: "status", id: "job-stage" });
  const logs = h("pre", { id: "job-logs", "aria-live": "off" });
  const result = h("div", { id: "job-result" });
  const cancel = h("button", { type: "button", class: "danger", disabled: !ctx.can("write") }, "Cancel job");
  cancel.addEventListener("click", async () => {
    const cancelled = await attempt(() => api(`/api/v1/jobs/${enc(id)}/cancel`, { method: "POST" }));
    if (cancelled) { toast(`Job ${id}: ${cancelled.state}`); draw(cancelled); }
  });
  function progress(p) {
    if (!p) return;
    if (typeof p.fraction === "number") bar.value = p.fraction;
    const facts = Object.entries(p).filter(([k]) => !["fraction", "stage", "message"].includes(k)).map(([k, v]) => `${k} ${typeof v === "number" ? num(v, 4) : v}`);
    stage.textContent = [p.stage, p.message, ...facts].filter(Boolean).join(" · ");
  }
  function draw(j) {
    job = j;
    head.replaceChildren(h("dl", { class: "kv" },
      h("dt", {}, "State"), h("dd", { id: "job-state" }, stateBadge(j.state)),
      h("dt", {}, "Kind"), h("dd", {}, j.kind), h("dt", {}, "Model"), h("dd", {}, h("a", { href: `#/models/${enc(j.model)}` }, j.model)),
      h("dt", {}, "Created"), h("dd", {}, `${when(j.created_at)}${j.created_by ? ` by ${j.created_by}` : ""}`),
      j.finished_at ? [h("dt", {}, "Finished"), h("dd", {}, when(j.finished_at))] : null,
      j.error ? [h("dt", {}, "Error"), h("dd", { class: "error" }, `${j.error} (${j.error_code})`)] : null,
      h("dt", {}, "Spec"), h("dd", {}, h("code", {}, JSON.stringify(j.spec)))));
    cancel.hidden = ["succeeded", "failed", "cancelled"].includes(j.state);
    progress(j.progress);
    if (j.state === "succeeded") bar.value = 1;
    const versions = j.result?.versions || [];
    result.replaceChildren(...[
      versions.length ? h("div", { class: "card" }, h("h2", {}, "New versions"),
        h("p", {}, versions.map((v) => [h("a", { href: `#/models/${enc(j.model)}` }, `${j.model}:${v}`), " "]))) : null,
      j.result?.report ? h("div", { class: "card" }, h("h2", {}, "Optimization report"), reportView(j.result.report)) : null,
      j.result?.metrics ? h("div", { class: "card" }, h("h2", {}, "Metrics"), h("pre", {}, JSON.stringify(j.result.metrics, null, 2))) : null,
      j.result?.notes ? h("div", { class: "card" }, h("h2", {}, "Notes"), h("ul", {}, j.result.notes.map((n) => h("li", {}, n)))) : null,
    ].filter(Boolean));
  }
  draw(job);
  const controller = new AbortController();
  ctx.onLeave(() => controller.abort());
  sse(`/api/v1/jobs/${enc(id)}/events`, {
    signal: controller.signal,
    onEvent: ({ event, data }) => {
      const payload = JSON.parse(data);
      if (event === "log") logs.textContent += `${payload.data.line ?? payload.data.message ?? JSON.stringify(payload.data)}\n`;
      else if (event === "progress") progress(payload.data);
      else if (event === "state") api(`/api/v1/jobs/${enc(id)}`).then(draw).catch(() => {});
      else if (event === "end") draw(payload);
    },
  }).catch((err) => { if (err.name !== "AbortError") toast(`Following the job failed: ${err.message}`, true); });
  return h("section", { dataset: { title: `Job ${id}` } },
    h("div", { class: "row" }, h("h1", {}, h("a", { href: "#/jobs" }, "Jobs"), ` / ${id}`), h("span", { class: "spacer" }), cancel),
    h("div", { class: "card" }, head, h("h3", {}, "Progress"), bar, stage),
    h("div", { class: "card" }, h("h2", {}, "Logs (live)"), logs), result);
}
