// Small DOM helpers shared by the pages: element building, tables, toasts, dialogs, charts.

/** h("button", {class: "primary", onclick}, "Save") → an element; null children are skipped. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") el.addEventListener(name.slice(2), value);
    else if (name === "class") el.className = value;
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (value === true) el.setAttribute(name, "");
    else el.setAttribute(name, value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

let ids = 0;
/** A labelled field: the label names the control (for screen readers and tests). */
export function field(text, control, hint) {
  if (!control.id) control.id = `f${++ids}`;
  return h("div", {}, h("label", { for: control.id }, text), control,
    hint ? h("div", { class: "muted small" }, hint) : null);
}

/** A table; columns: [{label, value: row => node|text, num?}]. */
export function table(columns, rows, { empty = "Nothing yet.", caption } = {}) {
  if (!rows.length) return h("p", { class: "muted" }, empty);
  return h("table", {},
    caption ? h("caption", { class: "muted small" }, caption) : null,
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col", class: c.num ? "num" : null }, c.label)))),
    h("tbody", {}, rows.map((row) => h("tr", {}, columns.map((c) => h("td", { class: c.num ? "num" : null }, c.value(row)))))));
}

export function toast(message, bad = false) {
  const el = h("div", { class: bad ? "toast bad" : "toast" }, message);
  document.getElementById("toasts").append(el);
  setTimeout(() => el.remove(), bad ? 7000 : 3500);
}

/** Run an action; show its error as a toast (and return undefined) instead of throwing. */
export async function attempt(fn) {
  try { return await fn(); } catch (err) { toast(`${err.message}${err.code ? ` (${err.code})` : ""}`, true); return undefined; }
}

/** A modal confirmation; resolves true when confirmed. */
export function confirmDialog(title, text, confirmLabel = "Confirm") {
  return new Promise((resolve) => {
    const dialog = h("dialog", { "aria-labelledby": "dlg-title" },
      h("h2", { id: "dlg-title" }, title), h("p", {}, text),
      h("div", { class: "row end" },
        h("button", { type: "button", onclick: () => { dialog.close(); resolve(false); } }, "Cancel"),
        h("button", { type: "button", class: "primary", onclick: () => { dialog.close(); resolve(true); } }, confirmLabel)));
    dialog.addEventListener("close", () => { dialog.remove(); resolve(false); });
    document.body.append(dialog);
    dialog.showModal();
  });
}

export function bytes(n) {
  if (n === null || n === undefined) return "";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

export function num(x, digits = 3) {
  if (x === null || x === undefined || x === "") return "";
  if (typeof x !== "number") return String(x);
  return Number.isInteger(x) ? x.toLocaleString("en") : x.toPrecision(digits);
}

export function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toLocaleString();
}

export function badge(text, kind = "") { return h("span", { class: `badge ${kind}` }, text); }

export function stateBadge(state) {
  const kind = { ready: "ok", succeeded: "ok", running: "run", loading: "run", queued: "run", failed: "bad", cancelled: "bad", error: "bad" }[state] || "";
  return badge(state, kind);
}

export const PALETTE = ["#0b5cad", "#d97706", "#15803d", "#b42318", "#7c3aed", "#0e7490", "#be185d", "#4d7c0f"];

/** A Chart.js chart in a fixed-height box; `charts` is the page's list to destroy on leave. */
export function chart(config, label) {
  const canvas = h("canvas", { role: "img", "aria-label": label });
  const box = h("div", { class: "chart-box" }, canvas);
  const instance = new window.Chart(canvas, {
    ...config,
    options: { responsive: true, maintainAspectRatio: false, animation: false, ...(config.options || {}) },
  });
  return { box, instance };
}

/** Tabs with the ARIA tab pattern; panels: [{id, label, render: () => node}]. */
export function tabs(panels, initial = 0) {
  const holder = h("div");
  const buttons = panels.map((panel, i) => h("button", {
    type: "button", role: "tab", id: `tab-${panel.id}`, "aria-selected": String(i === initial),
    onclick: () => select(i),
    onkeydown: (e) => {
      if (e.key === "ArrowRight") { select((i + 1) % panels.length); buttons[(i + 1) % panels.length].focus(); }
      if (e.key === "ArrowLeft") { select((i + panels.length - 1) % panels.length); buttons[(i + panels.length - 1) % panels.length].focus(); }
    },
  }, panel.label));
  function select(i) {
    buttons.forEach((b, j) => { b.setAttribute("aria-selected", String(i === j)); b.tabIndex = i === j ? 0 : -1; });
    holder.replaceChildren(h("div", { role: "tabpanel", "aria-labelledby": `tab-${panels[i].id}` }, panels[i].render()));
  }
  const bar = h("div", { class: "tabs", role: "tablist" }, buttons);
  select(initial);
  return h("div", {}, bar, holder);
}
