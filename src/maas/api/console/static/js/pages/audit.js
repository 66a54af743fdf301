// The audit log (admin): management actions and failed logins, filtered.
import { api } from "../api.js";
import { attempt, badge, field, h, table, when } from "../ui.js";

const ACTIONS = ["", "model.push", "model.create", "model.delete", "version.delete", "alias.set", "alias.delete",
  "deployment.update", "deployment.load", "deployment.unload", "key.create", "key.rotate", "key.revoke",
  "dataset.push", "job.submit", "job.cancel", "auth.failure"];

export async function render() {
  const action = h("select", {}, ACTIONS.map((a) => h("option", { value: a }, a || "any action")));
  const actor = h("input", { placeholder: "key id or name", autocomplete: "off" });
  const since = h("input", { type: "datetime-local" });
  const box = h("div", { id: "audit-table" });
  async function refresh() {
    const params = new URLSearchParams({ limit: "200" });
    if (action.value) params.set("action", action.value);
    if (actor.value.trim()) params.set("actor", actor.value.trim());
    if (since.value) params.set("since", new Date(since.value).toISOString());
    const rows = await api(`/api/v1/audit?${params}`);
    box.replaceChildren(table([
      { label: "When", value: (r) => when(r.at) },
      { label: "Actor", value: (r) => r.actor_name },
      { label: "Action", value: (r) => h("code", {}, r.action) },
      { label: "Target", value: (r) => r.target },
      { label: "Outcome", value: (r) => badge(r.code ? `${r.outcome}: ${r.code}` : r.outcome, r.outcome === "ok" ? "ok" : "bad") },
      { label: "From", value: (r) => r.source || "" },
      { label: "Details", value: (r) => Object.keys(r.details || {}).length ? h("code", {}, JSON.stringify(r.details)) : "" },
    ], rows, { empty: "No record matches." }));
  }
  const form = h("form", { class: "card" }, h("div", { class: "fields" }, field("Action", action), field("Actor", actor), field("Since", since)),
    h("div", { class: "row", style: "margin-top:12px" }, h("button", { type: "submit", class: "primary" }, "Filter")));
  form.addEventListener("submit", (e) => { e.preventDefault(); attempt(refresh); });
  await refresh();
  return h("section", { dataset: { title: "Audit log" } }, h("h1", {}, "Audit log"), form, h("div", { class: "card" }, box));
}
