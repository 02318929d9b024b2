// Sign up and sign in.

import { field, h } from "./dom.js";

function formError() {
  return h("p", { class: "form-error", role: "alert" });
}

// Puts the API's 422 details next to the field they name (loc ["body", "email"]); returns what was left.
export function showFieldErrors(error, fields) {
  const left = [];
  for (const detail of error.details || []) {
    const loc = (detail.loc || []).filter((part) => part !== "body");
    const target = fields[loc.join(".")] || fields[loc[0]];
    if (target) target.showError(detail.message || detail.msg);
    else left.push(detail.message || detail.msg);
  }
  return left;
}

export function loginView(app) {
  const email = h("input", { type: "email", name: "email", autocomplete: "username", required: true });
  const password = h("input", { type: "password", name: "password", autocomplete: "current-password", required: true });
  const error = formError();
  const submit = h("button", { type: "submit" }, "Sign in");
  const form = h(
    "form",
    {
      class: "card narrow",
      async onsubmit(event) {
        event.preventDefault();
        error.textContent = "";
        submit.disabled = true;
        try {
          await app.api.login(email.value.trim(), password.value);
          await app.onSignedIn();
        } catch (failure) {
          error.textContent = failure.message;
        } finally {
          submit.disabled = false;
        }
      },
    },
    field("Email", email),
    field("Password", password),
    error,
    submit,
  );
  return h(
    "section",
    {},
    h("h1", {}, "Sign in"),
    form,
    h("p", {}, "New here? ", h("a", { href: "#/register" }, "Create an account")),
  );
}

export function registerView(app) {
  const email = h("input", { type: "email", name: "email", autocomplete: "email", required: true });
  const displayName = h("input", { type: "text", name: "displayName", autocomplete: "nickname", maxlength: 100 });
  const password = h("input", {
    type: "password",
    name: "password",
    autocomplete: "new-password",
    required: true,
    minlength: 10,
    maxlength: 256,
  });
  const fields = {
    email: field("Email", email),
    displayName: field("Display name (optional)", displayName, "Shown beside your pipelines."),
    password: field("Password", password, "10 to 256 characters."),
  };
  const error = formError();
  const submit = h("button", { type: "submit" }, "Create account");
  const form = h(
    "form",
    {
      class: "card narrow",
      async onsubmit(event) {
        event.preventDefault();
        error.textContent = "";
        Object.values(fields).forEach((f) => f.showError(""));
        submit.disabled = true;
        try {
          await app.api.register(email.value.trim(), password.value, displayName.value.trim());
          await app.api.login(email.value.trim(), password.value);
          await app.onSignedIn();
        } catch (failure) {
          const left = showFieldErrors(failure, fields);
          error.textContent = left.length ? left.join("; ") : failure.details.length ? "" : failure.message;
        } finally {
          submit.disabled = false;
        }
      },
    },
    fields.email,
    fields.displayName,
    fields.password,
    error,
    submit,
  );
  return h(
    "section",
    {},
    h("h1", {}, "Create an account"),
    form,
    h("p", {}, "Have an account? ", h("a", { href: "#/login" }, "Sign in")),
  );
}
