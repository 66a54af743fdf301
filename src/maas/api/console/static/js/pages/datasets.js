// Datasets: upload (CSV, Parquet, JSONL) with progress, schema, row count, preview.
import { api, enc, upload } from "../api.js";
import { attempt, bytes, field, h, num, table, toast, when } from "../ui.js";

export async function render(ctx) {
  const datasets = await api("/api/v1/datasets");
  const preview = h("div", { id: "dataset-preview" });
  async function show(d) {
    const p = await attempt(() => api(`/api/v1/datasets/${enc(`${d.name}@${d.digest}`)}/preview?limit=20`));
    if (!p) return;
    preview.replaceChildren(h("div", { class: "card" }, h("h2", {}, `${p.name}: ${num(p.rows)} rows`),
      h("p", { class: "muted small" }, p.digest),
      h("h3", {}, "Schema"), table([{ label: "Column", value: (c) => h("code", {}, c.name) }, { label: "Type", value: (c) => c.type }], p.columns),
      h("h3", {}, `First ${p.head.length} rows`),
      h("div", { style: "overflow:auto" }, table(p.columns.map((c) => ({ label: c.name, value: (r) => r[c.name] === null ? "" : String(r[c.name]) })), p.head))));
  }
  const list = table([
    { label: "Name", value: (d) => h("button", { type: "button", class: "link", onclick: () => show(d) }, d.name) },
    { label: "Format", value: (d) => d.format },
    { label: "Rows", value: (d) => num(d.rows), num: true },
    { label: "Columns", value: (d) => d.columns.map((c) => c.name).join(", ") },
    { label: "Size", value: (d) => bytes(d.size_bytes), num: true },
    { label: "Digest", value: (d) => h("code", { title: d.digest }, d.digest.slice(0, 19) + "…") },
    { label: "Uploaded", value: (d) => `${when(d.created_at)}${d.created_by ? ` by ${d.created_by}` : ""}` },
  ], datasets, { empty: "No dataset yet." });
  return h("section", { dataset: { title: "Datasets" } }, h("h1", {}, "Datasets"),
    ctx.can("write") ? uploadForm(ctx) : null,
    h("div", { class: "card" }, h("h2", {}, "Datasets"), list), preview);
}

function uploadForm(ctx) {
  const name = h("input", { required: true, autocomplete: "off", placeholder: "tickets" });
  const file = h("input", { type: "file", required: true, accept: ".csv,.parquet,.pq,.jsonl,.ndjson,.json" });
  const bar = h("progress", { max: "1", value: "0", hidden: true, "aria-label": "Upload progress" });
  const form = h("form", { class: "card", "aria-labelledby": "ds-title" }, h("h2", { id: "ds-title" }, "Upload a dataset"),
    h("div", { class: "fields" }, field("Dataset name", name), field("File (CSV, Parquet or JSONL)", file)), bar,
    h("div", { class: "row", style: "margin-top:12px" }, h("button", { type: "submit", class: "primary" }, "Upload")));
  file.addEventListener("change", () => { if (!name.value && file.files[0]) name.value = file.files[0].name.replace(/\.[^.]+$/, ""); });
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const f = file.files[0];
    bar.hidden = false;
    const info = await attempt(() => upload(`/api/v1/datasets?name=${enc(name.value.trim())}&filename=${enc(f.name)}`, f, (x) => { bar.value = x; }));
    if (info) { toast(`Uploaded ${info.name}: ${info.rows} rows`); ctx.refresh(); }
  });
  return form;
}
