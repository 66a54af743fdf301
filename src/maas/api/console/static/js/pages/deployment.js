// A version's deployment: how it is served (batching, instances, queue), its live state
// per instance, and load / unload.
import { api, enc } from "../api.js";
import { attempt, field, h, num, stateBadge, table, toast } from "../ui.js";

export async function render(ctx, name, version) {
  const base = `/api/v1/models/${enc(name)}/versions/${enc(version)}`;
  const info = await api(base);
  const statusBox = h("div", { id: "deployment-status" });
  const canWrite = ctx.can("write");

  async function refreshStatus() {
    const s = await api(`${base}/deployment/status`);
    const instances = s.pids && s.pids.length ? s.pids.map((pid, i) => ({ i, pid })) : [];
    statusBox.replaceChildren(
      h("dl", { class: "kv" },
        h("dt", {}, "State"), h("dd", {}, stateBadge(s.state)),
        h("dt", {}, "Ready"), h("dd", {}, s.ready ? "yes" : "no"),
        h("dt", {}, "Workers"), h("dd", {}, `${s.instances} × ${s.workers || "(not loaded)"}`),
        h("dt", {}, "Queue depth"), h("dd", {}, num(s.queue_depth)),
        h("dt", {}, "In flight"), h("dd", {}, num(s.in_flight ?? 0)),
        s.error ? [h("dt", {}, "Error"), h("dd", { class: "error" }, s.error)] : null),
      h("h3", {}, "Instances"),
      table([
        { label: "Instance", value: (r) => String(r.i + 1), num: true },
        { label: "Process id", value: (r) => String(r.pid), num: true },
        { label: "Readiness", value: () => stateBadge(s.ready ? "ready" : s.state) },
      ], instances, { empty: s.state === "unloaded" ? "Not loaded: the next call loads it." : "No instance." }));
    return s;
  }
  await refreshStatus();
  const timer = setInterval(() => refreshStatus().catch(() => {}), 3000);
  ctx.onLeave(() => clearInterval(timer));

  const spec = info.deployment;
  const inputs = {
    max_batch_size: h("input", { type: "number", min: "1", value: spec.max_batch_size }),
    max_queue_delay_us: h("input", { type: "number", min: "0", value: spec.max_queue_delay_us }),
    preferred_batch_sizes: h("input", { value: spec.preferred_batch_sizes.join(", "), placeholder: "e.g. 8, 16" }),
    instances: h("input", { type: "number", min: "1", max: "64", value: spec.instances }),
    max_queue_size: h("input", { type: "number", min: "1", value: spec.max_queue_size }),
  };
  for (const input of Object.values(inputs)) input.disabled = !canWrite;
  const form = h("form", { class: "card", "aria-labelledby": "spec-title" },
    h("h2", { id: "spec-title" }, "Serving"),
    h("div", { class: "fields" },
      field("Max batch size", inputs.max_batch_size, "1 turns batching off"),
      field("Max queue delay (µs)", inputs.max_queue_delay_us),
      field("Preferred batch sizes", inputs.preferred_batch_sizes),
      field("Instances", inputs.instances),
      field("Max queue size", inputs.max_queue_size, "past it: 503 with Retry-After")),
    canWrite ? h("div", { class: "row", style: "margin-top:12px" }, h("button", { type: "submit", class: "primary" }, "Save and redeploy")) : null);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = {
      max_batch_size: Number(inputs.max_batch_size.value),
      max_queue_delay_us: Number(inputs.max_queue_delay_us.value),
      preferred_batch_sizes: inputs.preferred_batch_sizes.value.split(",").map((x) => x.trim()).filter(Boolean).map(Number),
      instances: Number(inputs.instances.value),
      max_queue_size: Number(inputs.max_queue_size.value),
    };
    if (await attempt(() => api(`${base}/deployment`, { method: "PUT", body }))) { toast("Deployment saved"); await refreshStatus(); }
  });
  const action = (label, verb) => h("button", {
    type: "button", disabled: !canWrite,
    onclick: async () => {
      if (await attempt(() => api(`${base}/deployment/${verb}`, { method: "POST" }))) { toast(`${name}:${version} ${verb}ed`); await refreshStatus(); }
    },
  }, label);
  return h("section", { dataset: { title: `${name}:${version} deployment` } },
    h("h1", {}, h("a", { href: "#/models" }, "Models"), " / ", h("a", { href: `#/models/${enc(name)}` }, name), ` / ${version} deployment`),
    h("div", { class: "card" }, h("div", { class: "row" }, h("h2", {}, "Live state"), h("span", { class: "spacer" }), action("Load", "load"), action("Unload", "unload")), statusBox),
    form);
}
