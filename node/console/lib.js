// Shared helpers of the staff console and the patron page.
// Everything the node sends is shown with textContent (h() below): no innerHTML.

/** Build an element: h("a", {href: "#/x", class: "btn", onclick: fn}, "text", child, ...). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "class") {
      el.className = value;
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else if (key in el && typeof value !== "string" && key !== "list") {
      el[key] = value; // booleans and numbers as properties (checked, disabled, value...)
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace an element's children. */
export function put(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// -- credentials --------------------------------------------------------------------------

const TOKEN = "ill.staffToken";
const USER = "ill.staffName";

export const auth = {
  get token() { return sessionStorage.getItem(TOKEN) || ""; },
  get name() { return sessionStorage.getItem(USER) || ""; },
  set(token, name) {
    if (token) sessionStorage.setItem(TOKEN, token); else sessionStorage.removeItem(TOKEN);
    if (name) sessionStorage.setItem(USER, name); else sessionStorage.removeItem(USER);
  },
  clear() { sessionStorage.removeItem(TOKEN); sessionStorage.removeItem(USER); },
};

/** The staff request headers: the Bearer token when signed in; the name (until accounts
 * exist, the API takes the staff member's name from X-Staff-User). */
export function staffHeaders() {
  const headers = {};
  if (auth.token) headers["Authorization"] = `Bearer ${auth.token}`;
  if (auth.name) headers["X-Staff-User"] = auth.name;
  return headers;
}

/**
 * Call the JSON API.  Never throws for an HTTP answer: returns
 * {ok, status, data, text, json, missing}; `missing` is true when the route itself does
 * not exist on this node (a plain-text 404/405, not the API's JSON error).
 */
export async function call(method, path, body, headers = staffHeaders()) {
  const init = { method, headers: { Accept: "application/json", ...headers } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (err) {
    return { ok: false, status: 0, data: null, text: `the node cannot be reached (${err.message})`,
      json: false, missing: false };
  }
  const type = resp.headers.get("Content-Type") || "";
  const json = type.includes("json");
  let data = null;
  let text = "";
  if (json) {
    try { data = await resp.json(); } catch { data = null; }
  } else {
    text = await resp.text();
  }
  const missing = !json && (resp.status === 404 || resp.status === 405);
  return { ok: resp.ok, status: resp.status, data, text, json, missing };
}

/** One plain sentence (or a few) saying what went wrong with a call. */
export function errorText(res) {
  if (res.status === 0) return res.text;
  const said = res.data && typeof res.data === "object" && res.data.error ? String(res.data.error) : "";
  if (res.status === 401) return `Not signed in, or the token was refused (401)${said ? `: ${said}` : ""}.`;
  if (res.status === 403) return `Not allowed for your account (403)${said ? `: ${said}` : ""}.`;
  if (said) return said;
  if (res.missing) return `This node does not offer ${res.status === 405 ? "that method" : "this yet"} (${res.status}).`;
  return `${res.status}: ${(res.text || "").slice(0, 300) || "error"}`;
}

/** A field-by-field list of problems ({"errors": {field: message}}) as list items. */
export function fieldErrors(res) {
  const errors = res.data && typeof res.data === "object" ? res.data.errors : null;
  if (!errors || typeof errors !== "object") return [];
  if (Array.isArray(errors)) return errors.map((e) => [null, String(e)]);
  return Object.entries(errors).map(([field, msg]) => [field, String(msg)]);
}

/** A result box: h() element that shows success or an error plainly (aria-live). */
export function resultBox() {
  const box = h("div", { class: "result", role: "status", "aria-live": "polite" });
  box.ok = (...msg) => { box.className = "result ok"; put(box, ...msg); };
  box.fail = (res, prefix = "") => {
    box.className = "result error";
    const items = fieldErrors(res);
    put(box, h("strong", {}, "Error: "), prefix, errorText(res),
      items.length ? h("ul", {}, items.map(([f, m]) => h("li", {}, f ? `${f}: ` : "", m))) : null);
  };
  box.info = (...msg) => { box.className = "result"; put(box, ...msg); };
  box.clear = () => { box.className = "result"; put(box); };
  return box;
}

// -- formatting ---------------------------------------------------------------------------

export function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

export function day(iso) {
  return iso ? String(iso).slice(0, 10) : "";
}

/** Status codes of both sides as the seeds' screens word them. */
export const STATUS_LABELS = {
  // borrowing
  created: "Created", sent: "Request sent to partner", expect_to_supply: "Expected to supply",
  will_supply: "Will supply", conditional: "Conditions to answer", retry_wait: "Retry later",
  shipped: "Shipped by partner", received: "Received", on_hold: "On hold shelf",
  on_loan: "Loaned to patron", returned_by_patron: "Returned by patron",
  returned_to_partner: "Returned item to partner", renew_requested: "Renewal requested",
  overdue: "Overdue", recalled: "Recalled", cancel_requested: "Cancel requested",
  complete: "Completed", cancelled: "Cancelled", unfilled: "Unfilled (end of rota)",
  copy_delivered: "Copy delivered", lost: "Lost",
  // lending
  RECEIVED: "New request", EXPECT_TO_SUPPLY: "Expected to supply", WILL_SUPPLY: "To pull and ship",
  CONDITIONAL: "Conditions sent", SHIPPED: "Shipped", OVERDUE: "Overdue", RECALLED: "Recalled",
  RETURN_SHIPPED: "Return shipped (check in)", COPY_COMPLETED: "Copy delivered",
  LOAN_COMPLETED: "Completed", COMPLETED_WITHOUT_RETURN: "Completed without return (lost)",
  UNFILLED: "Unfilled", RETRY_POSSIBLE: "Retry possible", CANCELLED: "Cancelled",
};

export function statusLabel(code) {
  return STATUS_LABELS[code] || String(code || "");
}

export function badge(code) {
  return h("span", { class: `badge st-${String(code || "").toLowerCase()}`, title: code }, statusLabel(code));
}

/** Split a scanned or typed list (commas, spaces, new lines) into values. */
export function splitList(text) {
  return String(text || "").split(/[\s,;]+/).map((s) => s.trim()).filter(Boolean);
}

/** A labelled form field.  spec: {name, label, type, required, options, hint, value, list}. */
export function field(spec) {
  const id = `f-${spec.idPrefix || ""}${spec.name}`;
  let input;
  if (spec.type === "select") {
    input = h("select", { id, name: spec.name, required: !!spec.required },
      (spec.options || []).map((o) => {
        const [value, label] = Array.isArray(o) ? o : [o, o];
        return h("option", { value, selected: String(spec.value ?? "") === String(value) }, label);
      }));
  } else if (spec.type === "textarea") {
    input = h("textarea", { id, name: spec.name, rows: spec.rows || 2, required: !!spec.required });
    if (spec.value) input.value = spec.value;
  } else if (spec.type === "checkbox") {
    input = h("input", { id, name: spec.name, type: "checkbox", checked: !!spec.value });
    return h("div", { class: "field check" }, input, h("label", { for: id }, spec.label),
      spec.hint ? h("small", { class: "hint" }, spec.hint) : null);
  } else {
    input = h("input", { id, name: spec.name, type: spec.type || "text", required: !!spec.required,
      autocomplete: "off", inputmode: spec.inputmode, placeholder: spec.placeholder,
      step: spec.step, min: spec.min });
    if (spec.value !== undefined && spec.value !== null) input.value = spec.value;
  }
  if (spec.autofocus) input.setAttribute("autofocus", "");
  return h("div", { class: "field" },
    h("label", { for: id }, spec.label, spec.required ? h("span", { class: "req", "aria-hidden": "true" }, " *") : null),
    input,
    spec.hint ? h("small", { class: "hint", id: `${id}-hint` }, spec.hint) : null,
    h("small", { class: "field-error", id: `${id}-error`, "aria-live": "polite" }));
}

/** Mark the fields named in a 400's "errors" map; returns the names not found on the form. */
export function markFieldErrors(form, res) {
  for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
  for (const el of form.querySelectorAll(".field-error")) el.textContent = "";
  const rest = [];
  for (const [name, message] of fieldErrors(res)) {
    const input = name ? form.elements.namedItem(name) : null;
    const slot = input && input.id ? form.querySelector(`#${CSS.escape(input.id)}-error`) : null;
    if (input && slot && input.setAttribute) {
      input.setAttribute("aria-invalid", "true");
      input.setAttribute("aria-describedby", slot.id);
      slot.textContent = message;
    } else {
      rest.push(name);
    }
  }
  const first = form.querySelector("[aria-invalid]");
  if (first) first.focus();
  return rest;
}

/** Form values: text trimmed (empty left out), checkboxes as booleans. */
export function formValues(form) {
  const out = {};
  for (const el of form.elements) {
    if (!el.name || el.disabled) continue;
    if (el.type === "checkbox") out[el.name] = el.checked;
    else if (el.value.trim() !== "") out[el.name] = el.value.trim();
  }
  return out;
}
