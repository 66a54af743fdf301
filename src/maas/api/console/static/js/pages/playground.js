// Playground: chat (streamed), embeddings (cosine of two texts) and a V2 form built from
// a model's signature. Every call is an ordinary API call with the logged-in key.
import { api, enc, sse } from "../api.js";
import { attempt, field, h, table, tabs, toast } from "../ui.js";

export async function render(ctx) {
  const models = await api("/api/v1/models");
  const [tab, preName, preVersion] = ctx.params;
  const chatModels = models.filter((m) => m.task === "text-generation");
  const embedModels = models.filter((m) => m.task === "embeddings");
  const panels = [
    { id: "chat", label: "Chat", render: () => chatPanel(chatModels, ctx) },
    { id: "embeddings", label: "Embeddings", render: () => embeddingsPanel(embedModels) },
    { id: "v2", label: "V2 inference", render: () => v2Panel(models, preName, preVersion) },
  ];
  const initial = Math.max(0, panels.findIndex((p) => p.id === tab));
  return h("section", { dataset: { title: "Playground" } }, h("h1", {}, "Playground"), tabs(panels, initial));
}

function modelSelect(models, id) {
  return h("select", { id }, models.map((m) => h("option", { value: m.name }, m.name)));
}

function chatPanel(models, ctx) {
  if (!models.length) return h("p", { class: "muted" }, "No chat model is registered (push a GGUF file or a causal LM directory).");
  const model = modelSelect(models, "chat-model");
  const system = h("textarea", { id: "chat-system", rows: "2", placeholder: "You are a helpful assistant." });
  const temperature = h("input", { id: "chat-temperature", type: "number", min: "0", max: "2", step: "0.1", value: "0.7" });
  const maxTokens = h("input", { id: "chat-max-tokens", type: "number", min: "1", value: "128" });
  const jsonMode = h("input", { id: "chat-json", type: "checkbox" });
  const schema = h("textarea", { id: "chat-schema", rows: "3", hidden: true, "aria-label": "JSON schema", placeholder: '{"type": "object", "properties": {"answer": {"type": "string"}}}' });
  jsonMode.addEventListener("change", () => { schema.hidden = !jsonMode.checked; });
  const log = h("div", { class: "chat", id: "chat-log", "aria-live": "polite" });
  const input = h("textarea", { id: "chat-input", rows: "2", placeholder: "Ask something…" });
  const stats = h("p", { class: "muted small", id: "chat-stats", role: "status" });
  const send = h("button", { type: "submit", class: "primary" }, "Send");
  const stop = h("button", { type: "button", disabled: true }, "Stop");
  const history = [];
  let controller = null;
  stop.addEventListener("click", () => controller?.abort());
  ctx.onLeave(() => controller?.abort());
  const form = h("form", {}, field("Message", input), h("div", { class: "row", style: "margin-top:8px" }, send, stop,
    h("button", { type: "button", onclick: () => { history.length = 0; log.replaceChildren(); stats.textContent = ""; } }, "Clear")));
  input.addEventListener("keydown", (e) => { if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); form.requestSubmit(); } });
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const text = input.value.trim();
    if (!text || controller) return;
    input.value = "";
    history.push({ role: "user", content: text });
    log.append(h("div", { class: "msg user" }, text));
    const out = h("div", { class: "msg assistant" });
    log.append(out);
    const messages = system.value.trim() ? [{ role: "system", content: system.value.trim() }, ...history] : [...history];
    const body = {
      model: model.value, messages, stream: true, stream_options: { include_usage: true },
      temperature: Number(temperature.value), max_tokens: Number(maxTokens.value),
    };
    if (jsonMode.checked) {
      try { body.response_format = { type: "json_schema", json_schema: { name: "answer", schema: JSON.parse(schema.value || "{}") } }; } catch { toast("The JSON schema is not valid JSON.", true); return; }
    }
    controller = new AbortController();
    send.disabled = true; stop.disabled = false;
    const started = performance.now();
    let first = null, usage = null, chunks = 0;
    try {
      await sse("/v1/chat/completions", {
        method: "POST", body, signal: controller.signal,
        onEvent: ({ data }) => {
          if (data === "[DONE]") return;
          const chunk = JSON.parse(data);
          if (chunk.usage) usage = chunk.usage;
          const delta = chunk.choices?.[0]?.delta?.content;
          if (delta) { first ??= performance.now(); chunks++; out.textContent += delta; log.scrollTop = log.scrollHeight; }
        },
      });
      history.push({ role: "assistant", content: out.textContent });
    } catch (err) {
      if (err.name !== "AbortError") { out.classList.add("error"); out.textContent = `${err.message} (${err.code || "error"})`; history.pop(); }
    } finally {
      controller = null; send.disabled = false; stop.disabled = true;
    }
    const seconds = (performance.now() - started) / 1000;
    const completion = usage?.completion_tokens ?? chunks;
    const genSeconds = first ? (performance.now() - first) / 1000 : seconds;
    stats.textContent = [
      usage ? `prompt ${usage.prompt_tokens} tokens` : null,
      `completion ${completion} tokens`,
      first ? `first token ${((first - started) / 1000).toFixed(2)} s` : null,
      `${(completion / Math.max(genSeconds, 1e-3)).toFixed(1)} tokens/s`,
      `total ${seconds.toFixed(2)} s`,
    ].filter(Boolean).join(" · ");
  });
  return h("div", { class: "grid cols-2" },
    h("div", { class: "card" }, h("h2", {}, "Settings"), field("Chat model", model), field("System prompt", system),
      h("div", { class: "fields" }, field("Temperature", temperature), field("Max tokens", maxTokens)),
      h("label", { class: "inline", style: "margin-top:10px" }, jsonMode, "JSON-schema mode (response_format)"), schema,
      h("p", { class: "muted small" }, "JSON-schema mode is sent as OpenAI's response_format; an engine that cannot constrain its output refuses it with a 400.")),
    h("div", { class: "card" }, h("h2", {}, "Conversation"), log, stats, form));
}

function embeddingsPanel(models) {
  if (!models.length) return h("p", { class: "muted" }, "No embedding model is registered.");
  const model = modelSelect(models, "emb-model");
  const a = h("textarea", { id: "emb-a", rows: "3" }, "The pump is leaking oil.");
  const b = h("textarea", { id: "emb-b", rows: "3" }, "Hydraulic fluid is dripping from the pump.");
  const result = h("div", { id: "emb-result", role: "status" });
  const form = h("form", { class: "card" }, h("h2", {}, "Cosine similarity of two texts"), field("Embedding model", model),
    h("div", { class: "grid cols-2" }, field("Text A", a), field("Text B", b)),
    h("div", { class: "row", style: "margin-top:10px" }, h("button", { type: "submit", class: "primary" }, "Compare")), result);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const answer = await attempt(() => api("/v1/embeddings", { method: "POST", body: { model: model.value, input: [a.value, b.value] } }));
    if (!answer) return;
    const [x, y] = answer.data.map((d) => d.embedding);
    const dot = x.reduce((s, v, i) => s + v * y[i], 0);
    const norm = (v) => Math.sqrt(v.reduce((s, t) => s + t * t, 0));
    const cosine = dot / (norm(x) * norm(y));
    result.replaceChildren(h("p", {}, h("strong", {}, `cosine similarity: ${cosine.toFixed(4)}`),
      h("span", { class: "muted" }, ` · ${x.length} dimensions · ${answer.usage?.prompt_tokens ?? "?"} tokens`)));
  });
  return form;
}

/** A nested JSON array → [shape, flat data]. */
function shapeOf(value) {
  const shape = [];
  let level = value;
  while (Array.isArray(level)) { shape.push(level.length); level = level[0]; }
  return [shape, Array.isArray(value) ? value.flat(Infinity) : [value]];
}

/** CSV text → rows of numbers (or strings where a cell is not a number); a header row is skipped. */
function parseCsv(text) {
  const rows = text.trim().split(/\r?\n/).map((line) => line.split(",").map((c) => c.trim()));
  const numeric = (row) => row.every((c) => c !== "" && !isNaN(Number(c)));
  if (rows.length > 1 && !numeric(rows[0]) && numeric(rows[1])) rows.shift();
  return rows.map((row) => row.map((c) => (c !== "" && !isNaN(Number(c)) ? Number(c) : c)));
}

function example(spec) {
  const dims = spec.shape.map((d) => (d < 0 ? 1 : d));
  const leaf = spec.datatype === "BYTES" ? "text" : spec.datatype === "BOOL" ? false : 0;
  const build = (i) => (i === dims.length ? leaf : Array.from({ length: dims[i] }, () => build(i + 1)));
  return dims.length ? build(0) : [leaf];
}

function v2Panel(models, preName, preVersion) {
  const model = modelSelect(models, "v2-model");
  if (preName) model.value = preName;
  const version = h("select", { id: "v2-version" });
  const inputsBox = h("div");
  const outputBox = h("div", { id: "v2-output" });
  let signature = null;
  async function loadVersions(selected) {
    const versions = await api(`/api/v1/models/${enc(model.value)}/versions`);
    version.replaceChildren(...versions.sort((a, b) => b.version - a.version).map((v) =>
      h("option", { value: v.version }, `${v.version}${v.aliases.length ? ` (${v.aliases.join(", ")})` : ""}`)));
    if (selected) version.value = selected;
    showSignature(versions.find((v) => String(v.version) === version.value) || versions[0]);
    version.onchange = () => showSignature(versions.find((v) => String(v.version) === version.value));
  }
  function showSignature(v) {
    signature = v?.signature || { inputs: [], outputs: [] };
    outputBox.replaceChildren();
    inputsBox.replaceChildren(...signature.inputs.map((spec) => {
      const area = h("textarea", { rows: "3", class: "mono", dataset: { input: spec.name } }, JSON.stringify(example(spec)));
      const file = h("input", { type: "file", accept: ".json,.csv,text/csv,application/json" });
      file.addEventListener("change", async () => {
        const f = file.files[0];
        if (!f) return;
        const text = await f.text();
        area.value = f.name.toLowerCase().endsWith(".csv") ? JSON.stringify(parseCsv(text)) : text;
      });
      return h("div", { class: "card" }, field(`${spec.name} · ${spec.datatype} [${spec.shape.join(", ")}] (JSON)`, area),
        field(`Or upload ${spec.name} as JSON or CSV`, file));
    }));
  }
  model.addEventListener("change", () => loadVersions().catch((err) => toast(err.message, true)));
  const form = h("form", {}, h("div", { class: "card" }, h("h2", {}, "Model"), h("div", { class: "fields" }, field("Model", model), field("Version", version))),
    inputsBox, h("div", { class: "row" }, h("button", { type: "submit", class: "primary" }, "Run inference")), outputBox);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const inputs = [];
    for (const spec of signature.inputs) {
      const area = inputsBox.querySelector(`textarea[data-input="${CSS.escape(spec.name)}"]`);
      let value;
      try { value = JSON.parse(area.value); } catch { toast(`${spec.name}: not valid JSON`, true); return; }
      let [shape, data] = shapeOf(value);
      if (spec.shape.length === 2 && shape.length === 1) shape = [1, shape[0]];  // one row
      inputs.push({ name: spec.name, datatype: spec.datatype, shape, data });
    }
    const started = performance.now();
    const answer = await attempt(() => api(`/v2/models/${enc(model.value)}/versions/${enc(version.value)}/infer`, { method: "POST", body: { inputs } }));
    if (!answer) return;
    const ms = performance.now() - started;
    outputBox.replaceChildren(h("div", { class: "card" }, h("h2", {}, "Outputs"),
      h("p", { class: "muted small" }, `${answer.model_name}:${answer.model_version} · ${ms.toFixed(0)} ms`),
      table([
        { label: "Output", value: (o) => h("code", {}, o.name) },
        { label: "Datatype", value: (o) => o.datatype },
        { label: "Shape", value: (o) => `[${o.shape.join(", ")}]` },
        { label: "Data", value: (o) => h("pre", { class: "v2-data" }, JSON.stringify(o.data.map((x) => (typeof x === "number" && !Number.isInteger(x) ? Number(x.toPrecision(6)) : x)))) },
      ], answer.outputs)));
  });
  loadVersions(preVersion).catch((err) => toast(err.message, true));
  return form;
}
