// Small DOM helpers. Text from the server is only ever set as text (never innerHTML), so a pipeline's name or
// prompt cannot inject markup.

export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      element.addEventListener(name.slice(2).toLowerCase(), value);
    } else if (name === "class") {
      element.className = value;
    } else if (name === "value") {
      element.value = value;
    } else if (value === true) {
      element.setAttribute(name, "");
    } else {
      element.setAttribute(name, String(value));
    }
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(element, ...children) {
  element.replaceChildren();
  append(element, children);
  return element;
}

let uniqueId = 0;
export function nextId(prefix) {
  uniqueId += 1;
  return `${prefix}-${uniqueId}`;
}

// A labelled form control with a slot for its error message (announced, and tied by aria-describedby).
export function field(label, control, hint) {
  const id = control.id || nextId("f");
  control.id = id;
  const error = h("p", { class: "field-error", id: `${id}-error`, "aria-live": "polite" });
  const hintEl = hint ? h("p", { class: "hint", id: `${id}-hint` }, hint) : null;
  control.setAttribute("aria-describedby", [hintEl && hintEl.id, error.id].filter(Boolean).join(" "));
  const wrapper = h("div", { class: "field" }, h("label", { for: id }, label), control, hintEl, error);
  wrapper.showError = (message) => {
    error.textContent = message || "";
    if (message) control.setAttribute("aria-invalid", "true");
    else control.removeAttribute("aria-invalid");
  };
  control.fieldWrapper = wrapper;
  return wrapper;
}

export function formatTime(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString();
}

export function formatRating(rating) {
  if (!rating || rating.average === null || rating.average === undefined) return "not rated yet";
  const count = rating.count === 1 ? "1 rating" : `${rating.count} ratings`;
  return `★ ${Number(rating.average).toFixed(1)} (${count})`;
}

export function download(filename, blob) {
  const url = URL.createObjectURL(blob);
  const link = h("a", { href: url, download: filename, class: "visually-hidden" });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}
