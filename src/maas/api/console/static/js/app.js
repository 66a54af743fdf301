// The console's shell: log-in, navigation (hash routes) and the page life cycle.
import { api, clearKey, getKey, setKey } from "./api.js";
import { h } from "./ui.js";

const PAGES = {
  overview: () => import("./pages/overview.js"),
  models: () => import("./pages/models.js"),
  playground: () => import("./pages/playground.js"),
  jobs: () => import("./pages/jobs.js"),
  datasets: () => import("./pages/datasets.js"),
  usage: () => import("./pages/usage.js"),
  keys: () => import("./pages/keys.js"),
  audit: () => import("./pages/audit.js"),
};

let me = null;
let leaving = [];
let rendering = 0;

const $ = (id) => document.getElementById(id);

async function logIn(key) {
  setKey(key);
  try {
    me = await api("/api/v1/whoami");
  } catch (err) {
    clearKey();
    throw err;
  }
  $("whoami-name").textContent = `${me.name} · ${me.role}`;
  for (const link of document.querySelectorAll("#nav a[data-needs]")) {
    link.parentElement.hidden = !me.actions.includes(link.dataset.needs);
  }
  $("login").hidden = true;
  $("shell").hidden = false;
  route();
}

function showLogin(message = "") {
  me = null;
  $("shell").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message;
  $("login-key").value = "";
  $("login-key").focus();
}

function logOut(message) {
  clearKey();
  for (const fn of leaving) fn();
  leaving = [];
  $("main").replaceChildren();
  showLogin(message);
}

async function route() {
  if (!me) return;
  const [page = "overview", ...params] = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  const name = PAGES[page] ? page : "overview";
  for (const fn of leaving) fn();
  leaving = [];
  for (const link of document.querySelectorAll("#nav a[data-page]")) {
    if (link.dataset.page === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const ticket = ++rendering;
  const main = $("main");
  main.replaceChildren(h("p", { class: "muted" }, "Loading…"));
  const ctx = {
    me,
    params,
    can: (action) => me.actions.includes(action),
    onLeave: (fn) => leaving.push(fn),
    refresh: () => route(),
  };
  try {
    const module = await PAGES[name]();
    const node = await module.render(ctx);
    if (ticket !== rendering) return;
    main.replaceChildren(node);
    document.title = `${node.dataset?.title || name} · maas console`;
  } catch (err) {
    if (ticket !== rendering) return;
    main.replaceChildren(h("h1", {}, "Error"), h("p", { class: "error" }, `${err.message}${err.code ? ` (${err.code})` : ""}`));
  }
  main.focus({ preventScroll: true });
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const key = $("login-key").value.trim();
  if (!key) return;
  try {
    await logIn(key);
  } catch (err) {
    showLogin(err.status === 401 ? "This key is not valid (unknown, expired or revoked)." : err.message);
  }
});
$("logout").addEventListener("click", () => logOut(""));
window.addEventListener("hashchange", route);
window.addEventListener("maas:unauthenticated", () => {
  if (me) logOut("The server refused the key (revoked or expired). Log in again.");
});

const saved = getKey();
if (saved) logIn(saved).catch(() => showLogin("Log in again."));
else showLogin();
