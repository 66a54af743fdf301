// Models: the registry (search, push by drag and drop), one model's versions and
// aliases (promote with the signature-change guard, delete), and a version's deployment.
import { api, enc, upload } from "../api.js";
import { attempt, badge, bytes, chart, confirmDialog, field, h, num, table, toast, when } from "../ui.js";

export async function render(ctx) {
  const [name, version] = ctx.params;
  if (name && version) return (await import("./deployment.js")).render(ctx, name, version);
  if (name) return renderModel(ctx, name);
  return renderList(ctx);
}

async function renderList(ctx) {
  const models = await api("/api/v1/models");
  const search = h("input", { type: "search", placeholder: "Filter by name, task or description" });
  const list = h("div");
  const show = () => {
    const q = search.value.trim().toLowerCase();
    const rows = models.filter((m) => !q || [m.name, m.task, m.description].join(" ").toLowerCase().includes(q));
    list.replaceChildren(table([
      { label: "Name", value: (m) => h("a", { href: `#/models/${enc(m.name)}` }, m.name) },
      { label: "Task", value: (m) => m.task || "" },
      { label: "Latest", value: (m) => (m.latest_version ?? ""), num: true },
      { label: "Aliases", value: (m) => Object.entries(m.aliases).map(([a, v]) => badge(`${a} → ${v}`)) },
      { label: "Description", value: (m) => m.description },
      { label: "Created", value: (m) => when(m.created_at) },
    ], rows, { empty: q ? "No model matches." : "No model yet: push one below." }));
  };
  search.addEventListener("input", show);
  show();
  return h("section", { dataset: { title: "Models" } },
    h("h1", {}, "Models"),
    h("div", { class: "card" }, field("Search models", search), h("div", { style: "margin-top:12px" }, list)),
    ctx.can("write") ? pushCard(ctx, null) : null);
}

/** Drag a file here (or choose one): streamed to the push endpoint with a progress bar. */
export function pushCard(ctx, model) {
  const nameInput = h("input", { value: model || "", required: true, placeholder: "defects", autocomplete: "off" });
  const aliasInput = h("input", { placeholder: "staging (optional)", autocomplete: "off" });
  const fileInput = h("input", { type: "file", id: "push-file" });
  const bar = h("progress", { max: "1", value: "0", hidden: true, "aria-label": "Upload progress" });
  const status = h("p", { class: "muted small", role: "status" });
  const zone = h("div", { class: "dropzone", id: "push-dropzone" },
    h("p", {}, "Drop a model file here (.onnx, .skops, .gguf, .pt2, .keras, an XGBoost .json/.ubj or LightGBM .txt, a model directory as .tar or .zip), or "),
    h("label", { for: "push-file", class: "inline" }, "choose a file: "), fileInput);
  let file = null;
  const pick = (f) => { file = f; status.textContent = f ? `${f.name} (${bytes(f.size)})` : ""; };
  fileInput.addEventListener("change", () => pick(fileInput.files[0] || null));
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => { e.preventDefault(); zone.classList.remove("over"); pick(e.dataTransfer.files[0] || null); });
  const button = h("button", { type: "submit", class: "primary" }, "Push");
  const form = h("form", { class: "card", "aria-labelledby": "push-title" },
    h("h2", { id: "push-title" }, "Push a model"),
    h("div", { class: "fields" }, field("Model name", nameInput), field("Alias for the new version", aliasInput)),
    h("div", { style: "margin-top:12px" }, zone), bar, status, h("div", { class: "row" }, button));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (!file) { toast("Choose or drop a file first.", true); return; }
    const target = nameInput.value.trim();
    let path = `/api/v1/models/${enc(target)}/versions?filename=${enc(file.name)}`;
    if (aliasInput.value.trim()) path += `&alias=${enc(aliasInput.value.trim())}`;
    button.disabled = true;
    bar.hidden = false;
    bar.value = 0;
    status.textContent = `Uploading ${file.name}…`;
    const info = await attempt(() => upload(path, file, (f) => {
      bar.value = f;
      if (f >= 1) status.textContent = "Uploaded; checking the artifact…";
    }));
    button.disabled = false;
    if (!info) { status.textContent = "Push failed."; return; }
    status.textContent = `Pushed ${info.model}:${info.version} (${info.framework}, ${bytes(info.size_bytes)}).`;
    toast(`Pushed ${info.model}:${info.version}`);
    location.hash = `#/models/${enc(info.model)}`;
    ctx.refresh();
  });
  return form;
}

async function renderModel(ctx, name) {
  const [model, versions] = await Promise.all([
    api(`/api/v1/models/${enc(name)}`),
    api(`/api/v1/models/${enc(name)}/versions`),
  ]);
  versions.sort((a, b) => b.version - a.version);
  const canWrite = ctx.can("write");
  const detail = h("div");
  const showVersion = (v) => detail.replaceChildren(versionCard(ctx, v, canWrite));
  const versionTable = table([
    { label: "Version", value: (v) => h("button", { type: "button", class: "link", onclick: () => showVersion(v) }, `${v.version}`) },
    { label: "Aliases", value: (v) => v.aliases.map((a) => badge(a, "ok")) },
    { label: "Framework", value: (v) => v.framework },
    { label: "Size", value: (v) => bytes(v.size_bytes), num: true },
    { label: "Digest", value: (v) => h("code", { title: v.digest }, v.digest.slice(0, 19) + "…") },
    { label: "Created", value: (v) => `${when(v.created_at)}${v.created_by ? ` by ${v.created_by}` : ""}` },
    { label: "Deployment", value: (v) => h("a", { href: `#/models/${enc(name)}/${v.version}`, "aria-label": `Deployment of version ${v.version}` }, "Deployment") },
    { label: "", value: (v) => canWrite ? h("button", {
      type: "button", class: "danger", "aria-label": `Delete version ${v.version}`,
      onclick: async () => {
        if (!(await confirmDialog(`Delete ${name}:${v.version}?`, "The version, its artifact (unless shared) and the aliases on it go.", "Delete"))) return;
        if ((await attempt(() => api(`/api/v1/models/${enc(name)}/versions/${v.version}`, { method: "DELETE" }))) !== undefined) {
          toast(`Deleted ${name}:${v.version}`); ctx.refresh();
        }
      },
    }, "Delete") : "" },
  ], versions, { empty: "No version yet." });
  if (versions.length) showVersion(versions[0]);
  const deleteModel = canWrite ? h("button", {
    type: "button", class: "danger", onclick: async () => {
      if (!(await confirmDialog(`Delete model ${name}?`, "Every version and alias of it is deleted. This cannot be undone.", "Delete model"))) return;
      if ((await attempt(() => api(`/api/v1/models/${enc(name)}`, { method: "DELETE" }))) !== undefined) {
        toast(`Deleted ${name}`); location.hash = "#/models";
      }
    },
  }, "Delete model") : null;
  return h("section", { dataset: { title: name } },
    h("div", { class: "row" }, h("h1", {}, h("a", { href: "#/models" }, "Models"), " / ", name), h("span", { class: "spacer" }), deleteModel),
    h("p", { class: "muted" }, [model.description, model.task ? `task: ${model.task}` : ""].filter(Boolean).join(" · ")),
    h("div", { class: "card" }, h("h2", {}, "Aliases"), aliasesPanel(ctx, model, versions, canWrite)),
    h("div", { class: "card" }, h("h2", {}, "Versions"), versionTable),
    detail,
    canWrite ? pushCard(ctx, name) : null);
}

function aliasesPanel(ctx, model, versions, canWrite) {
  const rows = Object.entries(model.aliases).map(([alias, version]) => ({ alias, version }));
  const current = table([
    { label: "Alias", value: (r) => badge(r.alias, "ok") },
    { label: "Version", value: (r) => String(r.version), num: true },
    { label: "", value: (r) => canWrite ? h("button", {
      type: "button", "aria-label": `Remove alias ${r.alias}`,
      onclick: async () => {
        if (!(await confirmDialog(`Remove alias ${r.alias}?`, "Callers using it will get 404.", "Remove"))) return;
        if ((await attempt(() => api(`/api/v1/models/${enc(model.name)}/aliases/${enc(r.alias)}`, { method: "DELETE" }))) !== undefined) ctx.refresh();
      },
    }, "Remove") : "" },
  ], rows, { empty: "No alias." });
  if (!canWrite) return current;
  const alias = h("input", { value: "production", required: true, autocomplete: "off" });
  const version = h("select", {}, versions.map((v) => h("option", { value: v.version }, `${v.version} (${v.framework})`)));
  const promote = h("button", { type: "submit", class: "primary" }, "Promote");
  const form = h("form", { class: "row", style: "align-items:flex-end;margin-top:12px" },
    field("Alias", alias), field("Version", version), promote);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    await setAlias(ctx, model.name, alias.value.trim(), Number(version.value));
  });
  return h("div", {}, current, form);
}

/** Move an alias; a refusal the guard can overrule (another signature, too large a
 *  quality drop) is shown with its reason and a forced retry. */
async function setAlias(ctx, model, alias, version, force = false) {
  const path = `/api/v1/models/${enc(model)}/aliases/${enc(alias)}${force ? "?force=true" : ""}`;
  try {
    await api(path, { method: "PUT", body: { version } });
    toast(`${model}:${alias} → ${version}`);
    ctx.refresh();
  } catch (err) {
    if (!force && (err.code === "signature_changed" || err.code === "quality_drop_too_large")) {
      if (await confirmDialog("Promotion refused", err.message, "Force promote")) {
        await setAlias(ctx, model, alias, version, true);
      }
      return;
    }
    toast(`${err.message} (${err.code})`, true);
  }
}

function tensors(specs) {
  return table([
    { label: "Name", value: (t) => h("code", {}, t.name) },
    { label: "Datatype", value: (t) => t.datatype },
    { label: "Shape", value: (t) => `[${t.shape.join(", ")}]` },
  ], specs, { empty: "none" });
}

function flat(obj, prefix = "") {
  const out = [];
  for (const [k, v] of Object.entries(obj || {})) {
    if (v && typeof v === "object" && !Array.isArray(v)) out.push(...flat(v, `${prefix}${k}.`));
    else out.push([`${prefix}${k}`, Array.isArray(v) ? JSON.stringify(v) : v]);
  }
  return out;
}

function kv(obj, empty = "none") {
  const rows = flat(obj);
  if (!rows.length) return h("p", { class: "muted" }, empty);
  return h("dl", { class: "kv" }, rows.map(([k, v]) => [h("dt", {}, k), h("dd", {}, typeof v === "number" ? num(v, 4) : String(v))]));
}

function versionCard(ctx, v, canWrite) {
  const report = v.metadata?.optimization;
  const metadata = { ...v.metadata };
  delete metadata.optimization;
  return h("div", { class: "card", id: "version-detail" },
    h("h2", {}, `${v.model}:${v.version}`),
    h("div", { class: "grid cols-2" },
      h("div", {}, h("h3", {}, "Artifact"), kv({ framework: v.framework, file: v.filename, size: bytes(v.size_bytes), digest: v.digest })),
      h("div", {}, h("h3", {}, "Lineage"), kv(v.lineage, "No lineage recorded."))),
    h("div", { class: "grid cols-2" },
      h("div", {}, h("h3", {}, "Inputs"), tensors(v.signature.inputs)),
      h("div", {}, h("h3", {}, "Outputs"), tensors(v.signature.outputs))),
    h("div", { class: "grid cols-2" },
      h("div", {}, h("h3", {}, "Metrics"), kv(v.metrics, "No metrics.")),
      h("div", {}, h("h3", {}, "Metadata"), kv(metadata))),
    report ? h("div", {}, h("h3", {}, "Optimization report"), reportView(report)) : null,
    h("div", { class: "row", style: "margin-top:12px" },
      h("a", { href: `#/models/${enc(v.model)}/${v.version}` }, "Deployment and instances →"),
      ctx.can("infer") ? h("a", { href: `#/playground/v2/${enc(v.model)}/${v.version}` }, "Try it in the playground →") : null));
}

/** An optimization report: before/after table and a size and latency chart. */
export function reportView(report) {
  const rows = [];
  const size = report.size_bytes || {};
  rows.push({ what: "size", before: bytes(size.before), after: bytes(size.after), change: size.ratio !== undefined ? `× ${num(size.ratio)}` : "" });
  for (const [batch, sides] of Object.entries(report.latency_ms || {})) {
    for (const stat of ["p50_ms", "p99_ms"]) {
      rows.push({ what: `latency ${batch.replace("_", " ")} ${stat.replace("_ms", "")} (ms)`, before: num(sides.before?.[stat]), after: num(sides.after?.[stat]),
        change: stat === "p50_ms" && sides.speedup_p50 ? `${num(sides.speedup_p50)}× faster` : "" });
    }
  }
  const quality = report.quality || {};
  if (typeof quality.before === "number") {
    rows.push({ what: `quality: ${quality.metric || "score"}`, before: num(quality.before, 4), after: num(quality.after, 4),
      change: `drop ${num(report.quality_drop, 4)}` });
  }
  for (const [k, v] of Object.entries(quality)) {
    if (typeof v === "number" && !["before", "after", "drop"].includes(k)) rows.push({ what: `outputs vs source: ${k.replaceAll("_", " ")}`, before: "", after: num(v, 4), change: "" });
  }
  const tbl = table([
    { label: "", value: (r) => r.what },
    { label: "Before", value: (r) => r.before, num: true },
    { label: "After", value: (r) => r.after, num: true },
    { label: "Change", value: (r) => r.change },
  ], rows, { caption: `${report.method} of ${report.source?.model}:${report.source?.version} on ${report.dataset?.name ?? report.dataset ?? "?"}` });
  const batches = Object.keys(report.latency_ms || {});
  const bars = (title, labels, before, after) => chart({
    type: "bar",
    data: { labels, datasets: [
      { label: "before", data: before, backgroundColor: "#8c959f" },
      { label: "after", data: after, backgroundColor: "#0b5cad" },
    ] },
    options: { scales: { y: { beginAtZero: true, title: { display: true, text: title } } } },
  }, `Before and after: ${title}`).box;
  const latency = (side) => batches.map((b) => report.latency_ms[b][side]?.p50_ms ?? null);
  const charts = h("div", { class: "grid cols-2" },
    bars("size (KB)", ["size"], [(size.before || 0) / 1024], [(size.after || 0) / 1024]),
    bars("p50 latency (ms)", batches.map((b) => b.replace("_", " ")), latency("before"), latency("after")));
  return h("div", { id: "optimization-report" }, tbl, charts);
}

