// The API client: JSON over fetch, the session's tokens, silent refresh.
//
// The access token lives only in this module's memory. The refresh token is kept in sessionStorage so that a
// reload of the tab keeps the person signed in; it is gone when the tab closes (see README "The web app").
// Tokens travel only in request bodies and the Authorization header, never in a URL.

const REFRESH_KEY = "stagehub.refreshToken";
const REFRESH_EARLY = 0.8; // refresh when 80% of the access token's lifetime has passed

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `request failed (${status})`);
    this.status = status;
    this.code = (body && body.code) || "ERROR";
    this.details = (body && body.details) || [];
  }
}

export class Api {
  constructor(baseUrl) {
    this.baseUrl = baseUrl.replace(/\/+$/, "");
    this.accessToken = null;
    this.refreshTimer = null;
    this.refreshing = null; // one refresh at a time: a refresh token is single-use
    this.onSignedOut = () => {};
  }

  get signedIn() {
    return this.accessToken !== null;
  }

  async request(method, path, { body, query, auth = true, retry = true } = {}) {
    const url = new URL(this.baseUrl + path, window.location.href);
    for (const [key, value] of Object.entries(query || {})) {
      if (value !== undefined && value !== null && value !== "") url.searchParams.set(key, value);
    }
    const headers = {};
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (auth && this.accessToken) headers.Authorization = `Bearer ${this.accessToken}`;
    let response;
    try {
      response = await fetch(url, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: "omit",
        cache: "no-store",
      });
    } catch {
      throw new ApiError(0, { code: "NETWORK", message: "the server could not be reached; try again" });
    }
    if (response.status === 401 && auth && retry && this.hasRefreshToken()) {
      if (await this.refresh()) return this.request(method, path, { body, query, auth, retry: false });
    }
    const text = await response.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = { code: "BAD_RESPONSE", message: `unexpected answer (${response.status})` };
      }
    }
    if (!response.ok) {
      // A 401 that a refresh could not cure ends the session, unless the refresh itself failed for a
      // passing reason (network, throttling): the refresh token is then still there for the next try.
      if (response.status === 401 && auth && (!retry || !this.hasRefreshToken())) this.forget();
      throw new ApiError(response.status, data);
    }
    return data;
  }

  get(path, query) {
    return this.request("GET", path, { query });
  }

  post(path, body) {
    return this.request("POST", path, { body: body === undefined ? {} : body });
  }

  put(path, body) {
    return this.request("PUT", path, { body });
  }

  delete(path) {
    return this.request("DELETE", path);
  }

  // --- session -------------------------------------------------------------------------------------------

  hasRefreshToken() {
    return Boolean(sessionStorage.getItem(REFRESH_KEY));
  }

  async login(email, password) {
    const tokens = await this.request("POST", "/auth/login", { body: { email, password }, auth: false });
    this.accept(tokens);
  }

  register(email, password, displayName) {
    const body = { email, password };
    if (displayName) body.displayName = displayName;
    return this.request("POST", "/auth/register", { body, auth: false });
  }

  // Resolves true when a new pair was obtained; concurrent callers share one request.
  refresh() {
    if (!this.refreshing) {
      this.refreshing = this.refreshOnce().finally(() => {
        this.refreshing = null;
      });
    }
    return this.refreshing;
  }

  async refreshOnce() {
    const refreshToken = sessionStorage.getItem(REFRESH_KEY);
    if (!refreshToken) return false;
    try {
      const tokens = await this.request("POST", "/auth/refresh", { body: { refreshToken }, auth: false });
      this.accept(tokens);
      return true;
    } catch (error) {
      if (error.status === 401) this.forget();
      return false;
    }
  }

  accept(tokens) {
    this.accessToken = tokens.accessToken;
    sessionStorage.setItem(REFRESH_KEY, tokens.refreshToken);
    clearTimeout(this.refreshTimer);
    const delayMs = Math.max(5, Number(tokens.expiresIn) * REFRESH_EARLY) * 1000;
    this.refreshTimer = setTimeout(() => this.refresh(), delayMs);
  }

  async logout() {
    const refreshToken = sessionStorage.getItem(REFRESH_KEY);
    this.forget({ silent: true });
    if (refreshToken) {
      await this.request("POST", "/auth/logout", { body: { refreshToken }, auth: false }).catch(() => {});
    }
  }

  // Drops the session; `onSignedOut` tells the page, unless the person signed out themselves (silent).
  forget({ silent = false } = {}) {
    const wasSignedIn = this.accessToken !== null || this.hasRefreshToken();
    this.accessToken = null;
    clearTimeout(this.refreshTimer);
    sessionStorage.removeItem(REFRESH_KEY);
    if (wasSignedIn && !silent) this.onSignedOut();
  }

  // --- uploads ---------------------------------------------------------------------------------------------

  // POST /uploads, then the presigned PUT with the headers the API asks for; returns the s3:// URI.
  async upload(file) {
    const contentType = file.type || "application/octet-stream";
    const grant = await this.post("/uploads", { contentType, sizeBytes: file.size });
    const headers = { "Content-Type": contentType };
    for (const [name, value] of Object.entries(grant.uploadHeaders || {})) {
      if (name.toLowerCase() !== "content-length") headers[name] = value; // the browser sets it itself
    }
    let response;
    try {
      response = await fetch(grant.uploadUrl, { method: "PUT", headers, body: file, credentials: "omit" });
    } catch {
      throw new ApiError(0, { code: "UPLOAD_FAILED", message: "the upload could not be sent" });
    }
    if (!response.ok) throw new ApiError(response.status, { code: "UPLOAD_FAILED", message: "the upload was refused" });
    return grant.uri;
  }
}

// What this deployment offers beyond the first API (the API grows: /backends, /models, /users/me/usage,
// webhooks), read once from the public OpenAPI document so that no probe ever answers 404: its paths, plus
// "webhooks" when the execution submission takes a `webhook`.
export async function detectFeatures(api) {
  try {
    const document = await api.request("GET", "/openapi.json", { auth: false });
    const features = new Set(Object.keys(document.paths || {}));
    const schemas = (document.components && document.components.schemas) || {};
    if (Object.values(schemas).some((schema) => schema.properties && schema.properties.webhookEvents)) {
      features.add("webhooks");
    }
    return features;
  } catch {
    return new Set();
  }
}
