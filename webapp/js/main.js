// The web app's shell: configuration, session restore, hash routing, and a page that never goes blank.
//
// Routes live in the URL's fragment (#/pipelines/ID): they name objects only, never a token.

import { Api, detectFeatures } from "./api.js";
import { clear, h } from "./dom.js";
import { loginView, registerView } from "./auth.js";
import { pipelineListView, pipelineView } from "./pipelines.js";
import { editorView } from "./editor.js";
import { executionListView, executionView, runView } from "./executions.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const banner = document.getElementById("banner");

const app = {
  api: null,
  me: null,
  features: new Set(),
  stageTypesCache: null,
  draft: null, // a pipeline the editor opens with ("Copy into the editor")
  afterSignIn: null, // the page asked for before signing in
  renderId: 0, // views check it before touching the page after an await (navigation cancels them)
  navigate(hash) {
    if (window.location.hash === hash) render();
    else window.location.hash = hash;
  },
  // A message belongs to one page: `forHash` is where it shows (the next page when a navigation follows).
  showError(error, forHash = window.location.hash) {
    const message = error && error.message ? error.message : String(error);
    const dismiss = h("button", { type: "button", class: "secondary small", onclick: () => (banner.hidden = true) }, "Dismiss");
    showBanner("banner-error", forHash, h("p", {}, message), dismiss);
  },
  notify(message, forHash = window.location.hash) {
    showBanner("banner-info", forHash, h("p", {}, message));
  },
  async stageTypes() {
    if (!this.stageTypesCache) this.stageTypesCache = (await this.api.get("/stage-types")).items;
    return this.stageTypesCache;
  },
  isCurrent(id) {
    return id === this.renderId;
  },
  async onSignedIn() {
    this.me = await this.api.get("/users/me");
    const next = this.afterSignIn || "#/pipelines";
    this.afterSignIn = null;
    this.navigate(next);
  },
};

function showBanner(kind, forHash, ...content) {
  clear(banner, ...content);
  banner.className = `banner ${kind}`;
  banner.setAttribute("role", kind === "banner-error" ? "alert" : "status");
  banner.dataset.for = forHash;
  banner.hidden = false;
}

const ROUTES = [
  [/^#\/login$/, loginView, false],
  [/^#\/register$/, registerView, false],
  [/^#\/pipelines$/, (ctx) => pipelineListView(ctx, "all"), true],
  [/^#\/mine$/, (ctx) => pipelineListView(ctx, "mine"), true],
  [/^#\/users\/([^/]+)$/, (ctx, userId) => pipelineListView(ctx, "user", userId), true],
  [/^#\/new$/, editorView, true],
  [/^#\/pipelines\/([^/]+)$/, pipelineView, true],
  [/^#\/pipelines\/([^/]+)\/run$/, runView, true],
  [/^#\/executions$/, executionListView, true],
  [/^#\/executions\/([^/]+)$/, executionView, true],
];

function renderNav() {
  const link = (hash, label) =>
    h("a", { href: hash, "aria-current": window.location.hash === hash ? "page" : null }, label);
  if (!app.api.signedIn) {
    clear(nav, link("#/login", "Sign in"), link("#/register", "Sign up"));
    return;
  }
  clear(
    nav,
    link("#/pipelines", "Pipelines"),
    link("#/mine", "My pipelines"),
    link("#/new", "New pipeline"),
    link("#/executions", "My executions"),
    h("span", { class: "whoami" }, app.me ? app.me.displayName : ""),
    h("button", { type: "button", class: "link", onclick: signOut }, "Sign out"),
  );
}

async function signOut() {
  await app.api.logout();
  app.me = null;
  app.navigate("#/login");
}

async function render() {
  app.renderId += 1;
  const id = app.renderId;
  const hash = window.location.hash || "#/pipelines";
  if (banner.dataset.for !== window.location.hash) banner.hidden = true;
  const match = ROUTES.map(([pattern, view, needsAuth]) => [hash.match(pattern), view, needsAuth]).find(
    ([found]) => found,
  );
  if (!match) {
    app.navigate("#/pipelines");
    return;
  }
  const [found, view, needsAuth] = match;
  if (needsAuth && !app.api.signedIn) {
    app.afterSignIn = hash; // back here once signed in
    app.navigate("#/login");
    return;
  }
  renderNav();
  clear(main, h("p", { class: "loading", role: "status" }, "Loading…"));
  try {
    const content = await view(app, ...found.slice(1).map(decodeURIComponent));
    if (app.isCurrent(id) && content) {
      clear(main, content);
      const heading = main.querySelector("h1");
      if (heading) {
        heading.tabIndex = -1;
        heading.focus({ preventScroll: true });
        document.title = `${heading.textContent} · stagehub`;
      }
    }
  } catch (error) {
    if (!app.isCurrent(id)) return;
    clear(
      main,
      h("h1", {}, "Something went wrong"),
      h("p", { role: "alert" }, error.message || String(error)),
      h("p", {}, h("a", { href: "#/pipelines" }, "Back to the pipelines")),
    );
  }
}

async function loadConfig() {
  const response = await fetch("config.json", { cache: "no-store", credentials: "omit" });
  if (!response.ok) throw new Error(`config.json answered ${response.status}`);
  return response.json();
}

async function start() {
  // The skip link focuses the content without touching the fragment, which holds the route.
  document.querySelector(".skip").addEventListener("click", (event) => {
    event.preventDefault();
    main.focus();
  });
  window.addEventListener("error", (event) => app.showError(event.error || event.message));
  window.addEventListener("unhandledrejection", (event) => {
    event.preventDefault();
    app.showError(event.reason);
  });
  let config;
  try {
    config = await loadConfig();
  } catch (error) {
    clear(main, h("h1", {}, "stagehub is not configured"), h("p", { role: "alert" }, error.message));
    return;
  }
  app.api = new Api(config.apiBaseUrl || "");
  app.api.onSignedOut = () => {
    app.me = null;
    if (!/^#\/(login|register)$/.test(window.location.hash)) {
      app.afterSignIn = window.location.hash;
      app.notify("Your session ended; please sign in again.", "#/login");
      app.navigate("#/login");
    }
  };
  app.features = await detectFeatures(app.api);
  if (app.api.hasRefreshToken() && (await app.api.refresh())) {
    app.me = await app.api.get("/users/me").catch(() => null);
  }
  window.addEventListener("hashchange", render);
  render();
}

start();
