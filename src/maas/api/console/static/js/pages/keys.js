// API keys (admin): create with a role and model patterns (the secret shown once, with
// a copy button), rotate, revoke; last use from the usage records.
import { api, enc } from "../api.js";
import { attempt, badge, confirmDialog, field, h, table, toast, when } from "../ui.js";

export async function render(ctx) {
  const [keys, lastUsed] = await Promise.all([
    api("/api/v1/keys?include_revoked=true"),
    api("/api/v1/keys/last-used").catch(() => ({})),
  ]);
  const secretBox = h("div", { id: "key-secret" });
  const showSecret = (created, verb) => secretBox.replaceChildren(h("div", { class: "card" },
    h("h2", {}, `Key ${verb}: ${created.name}`),
    h("p", {}, "Copy the secret now: it is shown this once and cannot be read again."),
    h("div", { class: "row" }, h("code", { class: "secret", id: "new-key-secret" }, created.key),
      h("button", { type: "button", onclick: async () => {
        try { await navigator.clipboard.writeText(created.key); toast("Copied"); } catch { toast("Copy failed: select the text instead.", true); }
      } }, "Copy"))));
  const name = h("input", { required: true, autocomplete: "off", placeholder: "shop-frontend" });
  const role = h("select", {}, ["consumer", "deployer", "metrics", "admin"].map((r) => h("option", { value: r }, r)));
  const patterns = h("input", { value: "*", autocomplete: "off" });
  const rpm = h("input", { type: "number", min: "1", placeholder: "unlimited" });
  const form = h("form", { class: "card", "aria-labelledby": "new-key-title" },
    h("h2", { id: "new-key-title" }, "Create a key"),
    h("div", { class: "fields" }, field("Name", name), field("Role", role),
      field("Model patterns", patterns, "comma-separated, e.g. iris*, tickets"), field("Requests per minute", rpm)),
    h("div", { class: "row", style: "margin-top:12px" }, h("button", { type: "submit", class: "primary" }, "Create key")));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = { name: name.value.trim(), role: role.value, models: patterns.value.split(",").map((p) => p.trim()).filter(Boolean) };
    if (rpm.value) body.limits = { requests_per_minute: Number(rpm.value) };
    const created = await attempt(() => api("/api/v1/keys", { method: "POST", body }));
    if (!created) return;
    await refresh();
    showSecret(created, "created");
    name.value = "";
  });
  const list = h("div", { id: "keys-table" });
  function draw(rows) {
    list.replaceChildren(table([
      { label: "Name", value: (k) => k.name },
      { label: "Prefix", value: (k) => h("code", {}, k.prefix) },
      { label: "Role", value: (k) => badge(k.role) },
      { label: "Models", value: (k) => k.models.join(", ") },
      { label: "Created", value: (k) => when(k.created_at) },
      { label: "Last used", value: (k) => when(lastUsed[k.id]) || "never" },
      { label: "Status", value: (k) => k.revoked_at ? badge("revoked", "bad") : badge("active", "ok") },
      { label: "", value: (k) => k.revoked_at || k.id === ctx.me.key_id ? "" : h("div", { class: "row" },
        h("button", { type: "button", "aria-label": `Rotate ${k.name}`, onclick: async () => {
          if (!(await confirmDialog(`Rotate ${k.name}?`, "A new secret is made; the old one stops working within a second.", "Rotate"))) return;
          const created = await attempt(() => api(`/api/v1/keys/${enc(k.id)}/rotate`, { method: "POST" }));
          if (created) { await refresh(); showSecret(created, "rotated"); }
        } }, "Rotate"),
        h("button", { type: "button", class: "danger", "aria-label": `Revoke ${k.name}`, onclick: async () => {
          if (!(await confirmDialog(`Revoke ${k.name}?`, "Calls with this key are refused from now on.", "Revoke"))) return;
          if ((await attempt(() => api(`/api/v1/keys/${enc(k.id)}`, { method: "DELETE" }))) !== undefined) { toast(`Revoked ${k.name}`); await refresh(); }
        } }, "Revoke")) },
    ], rows));
  }
  async function refresh() { draw(await api("/api/v1/keys?include_revoked=true")); }
  draw(keys);
  return h("section", { dataset: { title: "API keys" } }, h("h1", {}, "API keys"), secretBox, form,
    h("div", { class: "card" }, h("h2", {}, "Keys"), list));
}
