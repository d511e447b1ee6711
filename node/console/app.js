// The staff console: sign in, queues, request pages with every action, desk scan screens,
// administration.  Routing by location.hash (#/borrowing?status=sent, #/lending/r/L-123, ...).

import { h, put, auth, call, errorText, resultBox, when, day, statusLabel, badge, splitList,
  field, markFieldErrors, formValues } from "./lib.js";
import { ACTIONS, suggested, actionBody } from "./actions.js";

const main = document.getElementById("main");
const banner = document.getElementById("banner");
const nav = document.getElementById("nav");
const who = document.getElementById("who");
const PAGE = 25;

// Who is signed in (GET /api/whoami): role, admin, and the sides the account may act on.
const session = { open: false, signedIn: false, role: null, name: null, admin: false, actsOn: [], checked: false };

/** May the signed-in account change requests of this side (lending / borrowing)? */
function mayAct(side) {
  return session.actsOn.includes(side);
}

// -- routing -----------------------------------------------------------------------------

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, query = ""] = raw.split("?");
  return { parts: path.split("/").filter(Boolean).map(decodeURIComponent),
    query: new URLSearchParams(query) };
}

export function go(path, query) {
  const q = query ? new URLSearchParams(Object.entries(query).filter(([, v]) => v !== "" && v != null)).toString() : "";
  const target = `#/${path}${q ? `?${q}` : ""}`;
  if (location.hash === target) route(); else location.hash = target;
}

async function route() {
  if (!session.checked) await checkSession();
  const { parts, query } = parseHash();
  const [first = "", second = "", third = ""] = parts;
  if (first !== "signin" && !session.signedIn) return go("signin");
  markNav(first || "borrowing");
  refreshBanner();
  if (first === "signin") return signInView();
  if ((first === "borrowing" || first === "lending") && second === "r" && third) {
    return requestView(first, third, query.get("tab") || "general");
  }
  if (first === "borrowing" && second === "new") return createView();
  if (first === "borrowing" || first === "lending") return queueView(first, query);
  if (first === "desk") return deskView(second || "receive");
  if (first === "admin") return adminView();
  return go("borrowing");
}

function markNav(section) {
  for (const a of nav.querySelectorAll("a")) {
    if (a.dataset.section === section) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  nav.hidden = !session.signedIn;
  nav.querySelector('[data-section="admin"]').hidden = !session.admin;
  nav.querySelector('[data-section="desk"]').hidden = !session.actsOn.length;
}

function title(text) {
  document.title = `${text} · ILL console`;
  return h("h1", { tabindex: "-1", id: "page-title" }, text);
}

/** Is the address still on this view?  (A slow answer must not paint over a newer page.) */
function still(...path) {
  const { parts } = parseHash();
  return parts.length === path.length && path.every((p, i) => parts[i] === p);
}

function show(...children) {
  put(main, ...children);
  const focusable = main.querySelector("[autofocus]");
  (focusable || main.querySelector("h1"))?.focus();
}

// -- session -----------------------------------------------------------------------------

async function checkSession() {
  // With no staff accounts configured, the node stays open from loopback: no sign-in needed.
  const res = await call("GET", "/api/whoami");
  const me = res.ok && res.data && res.data.role !== "patron" ? res.data : null;
  Object.assign(session, { checked: true, signedIn: !!me, open: !!me?.open, role: me?.role || null,
    name: me?.name || null, admin: !!me?.admin, actsOn: me?.acts_on || [] });
  renderWho();
}

function renderWho() {
  const signOut = () => {
    auth.clear();
    Object.assign(session, { checked: false, signedIn: false, role: null, name: null, admin: false, actsOn: [] });
    go("signin");
  };
  const may = session.actsOn.length ? `, acts on ${session.actsOn.join(" and ")}` : "";
  // open mode: the name is only what was typed at "Set your name"
  const name = session.open ? auth.name : session.name;
  put(who,
    session.signedIn
      ? h("span", { id: "whoami" }, session.open ? "Open access (no staff accounts)" : "Signed in",
        name ? ` as ${name}` : "", ` (${session.role}${may})`)
      : null,
    " ",
    auth.token || auth.name
      ? h("button", { type: "button", class: "link", onclick: signOut }, "Sign out")
      : h("a", { href: "#/signin" }, session.open ? "Set your name" : "Sign in"));
}

function signInView() {
  const box = resultBox();
  const form = h("form", { class: "card narrow", onsubmit: async (ev) => {
    ev.preventDefault();
    const v = formValues(form);
    auth.set(v.token || "", v.name || "");
    const res = await call("GET", "/api/whoami");
    if (!res.ok || res.data?.role === "patron") {
      box.fail(res.ok ? { status: 403, data: { error: "a patron token cannot sign in to the staff console" } } : res);
      auth.set("", v.name || "");
      return;
    }
    await checkSession();
    go("borrowing");
  } },
  field({ name: "token", label: "Staff token", type: "password", autofocus: true,
    hint: "Your personal access token. Leave empty on a node without staff accounts." }),
  field({ name: "name", label: "Your name (shown in request history)", value: auth.name }),
  h("button", { type: "submit" }, "Sign in"), box);
  show(title("Sign in"), form);
}

// -- closures banner -----------------------------------------------------------------------

let bannerAt = 0;
async function refreshBanner(force = false) {
  if (!force && Date.now() - bannerAt < 15000) return;
  bannerAt = Date.now();
  const notes = [];
  for (const kind of ["borrowing", "lending"]) {
    const res = await call("GET", `/api/${kind}/closure`);
    if (res.ok && res.data && res.data.in_effect) {
      notes.push(h("p", {}, h("strong", {}, `Closed for ${kind}: `), res.data.description || "temporarily inactive"));
    }
  }
  banner.hidden = notes.length === 0;
  put(banner, notes);
}

// -- queues --------------------------------------------------------------------------------

async function queueView(role, query) {
  const status = query.get("status") || "";
  const q = query.get("q") || "";
  const partner = query.get("partner") || "";
  const attention = query.get("attention") || "";
  const overdue = role === "lending" ? query.get("overdue") || "" : "";
  // Pages follow the API's cursors, so requests arriving meanwhile do not shift them:
  // "cursor" is this page's, "back" the earlier pages' ("-" for the first), "at" how
  // many rows come before this page (for the "51–100 of N" label only).
  const cursor = query.get("cursor") || "";
  const back = (query.get("back") || "").split(",").filter(Boolean);
  const at = Number.parseInt(query.get("at") || "0", 10) || 0;
  const params = new URLSearchParams({ limit: PAGE });
  if (cursor) params.set("cursor", cursor);
  if (status) params.set("status", status);
  if (q) params.set("q", q);
  if (partner) params.set("partner", partner);
  if (attention) params.set("attention", "true");
  if (overdue) params.set("overdue", "true");
  const heading = role === "borrowing" ? "Borrowing requests" : "Lending requests";
  const res = await call("GET", `/api/${role}/requests?${params}`);
  if (!still(role)) return;
  if (res.status === 401) return go("signin");
  const state = { status, q, partner, attention, overdue };
  const link = (changes) => `#/${role}?${new URLSearchParams(Object.entries({ ...state, ...changes })
    .filter(([, v]) => v !== "" && v !== 0 && v != null)).toString()}`;

  const search = h("form", { class: "filters", role: "search", onsubmit: (ev) => {
    ev.preventDefault();
    const v = formValues(search);
    go(role, { status, q: v.q || "", partner: v.partner || "", attention: v.attention ? "1" : "",
      overdue: v.overdue ? "1" : "" });
  } },
  field({ name: "q", label: "Search (title, id, patron, partner's id)", type: "search", value: q, idPrefix: "queue-" }),
  field({ name: "partner", label: "Partner", value: partner, placeholder: "ISIL:XX-LIB", idPrefix: "queue-" }),
  field({ name: "attention", type: "checkbox", label: "Needs attention only", value: !!attention, idPrefix: "queue-" }),
  // Loans out past their due date (reported Overdue, or the daily job not run yet).
  role === "lending" ? field({ name: "overdue", type: "checkbox", label: "Overdue only", value: !!overdue, idPrefix: "queue-" }) : null,
  h("button", { type: "submit" }, "Search"));

  if (!res.ok) {
    const box = resultBox();
    box.fail(res);
    return show(title(heading), search, box);
  }
  const data = res.data;
  const facets = Object.entries(data.facets || {}).sort((a, b) => b[1] - a[1]);
  const all = facets.reduce((n, [, c]) => n + c, 0);
  const facetList = h("nav", { class: "facets", "aria-label": "Status" },
    h("h2", {}, "Status"),
    h("ul", {},
      h("li", {}, h("a", { href: link({ status: "" }), "aria-current": status ? null : "true" }, `All (${all})`)),
      facets.map(([code, count]) => h("li", {},
        h("a", { href: link({ status: code }), "aria-current": status === code ? "true" : null,
          dataset: { status: code } }, `${statusLabel(code)} (${count})`)))));

  const rows = data.requests.map((r) => h("tr", { class: r.needs_attention ? "attention" : "" },
    h("td", {}, h("a", { href: `#/${role}/r/${encodeURIComponent(r.id)}` }, r.id),
      r.needs_attention ? h("span", { class: "flag" }, " Needs attention") : null),
    h("td", {}, badge(r.status)),
    h("td", {}, r.title || "(no title)"),
    h("td", {}, r.partner || ""),
    h("td", {}, r.patron_id || ""),
    h("td", {}, when(r.updated_at))));
  const table = data.requests.length
    ? h("table", { class: "queue" },
      h("caption", { class: "sr-only" }, heading),
      h("thead", {}, h("tr", {}, ["Request", "Status", "Title", role === "borrowing" ? "Lender" : "Borrower",
        "Patron", "Updated"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, rows))
    : h("p", { class: "empty" }, "No requests match.");
  const from = data.requests.length ? at + 1 : 0;
  const to = at + data.requests.length;
  const previous = back.length ? link({ cursor: back[back.length - 1] === "-" ? "" : back[back.length - 1],
    back: back.slice(0, -1).join(","), at: Math.max(0, at - PAGE) }) : null;
  const pager = h("div", { class: "pager" },
    h("span", {}, `${from}–${to} of ${data.total}${data.total_exact === false ? "+" : ""}`),
    previous ? h("a", { class: "btn", href: previous }, "Previous") : null,
    data.next ? h("a", { class: "btn", href: link({ cursor: data.next,
      back: [...back, cursor || "-"].join(","), at: to }) }, "Next") : null);
  show(
    h("div", { class: "page-head" }, title(heading),
      role === "borrowing" && mayAct("borrowing") ? h("a", { class: "btn primary", href: "#/borrowing/new" }, "New request") : null,
      h("button", { type: "button", onclick: () => route() }, "Refresh")),
    search,
    h("div", { class: "queue-layout" }, facetList, h("div", { class: "queue-main" }, table, pager)));
}

// -- a new borrowing request ----------------------------------------------------------------

function createView() {
  const box = resultBox();
  const form = h("form", { class: "card", novalidate: true, onsubmit: async (ev) => {
    ev.preventDefault();
    const v = formValues(form);
    const body = {};
    for (const [k, val] of Object.entries(v)) {
      if (typeof val === "boolean") { if (val) body[k] = true; continue; }
      body[k] = k === "partners" ? splitList(val) : val;
    }
    const res = await call("POST", "/api/borrowing/requests", body);
    if (res.status === 201 && res.data) {
      go(`borrowing/r/${encodeURIComponent(res.data.id)}`, { created: "1" });
      return;
    }
    markFieldErrors(form, res);
    box.fail(res);
  } },
  h("fieldset", {}, h("legend", {}, "The item"),
    field({ name: "title", label: "Title", autofocus: true }),
    field({ name: "author", label: "Author" }),
    h("div", { class: "row" },
      field({ name: "isbn", label: "ISBN" }), field({ name: "issn", label: "ISSN" }),
      field({ name: "oclc", label: "OCLC number" })),
    h("div", { class: "row" },
      field({ name: "edition", label: "Edition" }), field({ name: "publisher", label: "Publisher" }),
      field({ name: "publication_date", label: "Year" }), field({ name: "volume", label: "Volume" })),
    field({ name: "format", label: "Format", type: "select", options: [["physical", "Physical (loan)"], ["digital", "Digital (copy)"]] }),
    h("div", { class: "row" },
      field({ name: "title_of_component", label: "Article / chapter (copies)" }),
      field({ name: "pages", label: "Pages (copies)" }))),
  h("fieldset", {}, h("legend", {}, "The patron"),
    h("div", { class: "row" },
      field({ name: "patron_id", label: "Requester (patron id)", required: true }),
      field({ name: "pickup_location", label: "Pickup location", required: true }),
      field({ name: "needed_by", label: "Needed by", type: "date" }))),
  h("fieldset", {}, h("legend", {}, "Terms"),
    field({ name: "copyright_agreed", type: "checkbox", label: "Copyright terms agreed (copies)" }),
    h("div", { class: "row" },
      field({ name: "max_fee", label: "Maximum fee", inputmode: "decimal" }),
      field({ name: "currency", label: "Currency", placeholder: "EUR" }),
      field({ name: "service_level", label: "Service level", type: "select",
        options: ["", "Normal", "Rush", "Express", "Standard", "Urgent", "SecondaryMail"] })),
    field({ name: "partners", label: "Partners (symbols, in order)", hint: "Leave empty to use the rota." }),
    field({ name: "note", label: "Request note", type: "textarea" })),
  h("div", { class: "buttons" }, h("button", { type: "submit", class: "primary" }, "Create request"),
    h("a", { class: "btn", href: "#/borrowing" }, "Cancel")),
  box);
  show(title("New borrowing request"), form);
}

// -- the request page ---------------------------------------------------------------------

const TABS = {
  borrowing: [["general", "General information"], ["history", "History"], ["rota", "Rota"],
    ["messages", "Messages"], ["notes", "Notes"], ["items", "Received items"], ["log", "Protocol log"]],
  lending: [["general", "General information"], ["history", "History"], ["messages", "Messages"],
    ["notes", "Notes"], ["items", "Items"], ["log", "Protocol log"]],
};

async function requestView(role, id, tab, flash) {
  const res = await call("GET", `/api/${role}/requests/${encodeURIComponent(id)}`);
  if (!still(role, "r", id)) return;
  if (res.status === 401) return go("signin");
  if (!res.ok) {
    const box = resultBox();
    box.fail(res);
    return show(title(`Request ${id}`), box, h("a", { href: `#/${role}` }, "Back to the list"));
  }
  const view = res.data;
  const reload = (message, keepTab = tab) => requestView(role, id, keepTab, message);
  const flashBox = resultBox();
  if (flash) flashBox.ok(flash);

  const head = h("header", { class: "request-head" },
    h("p", { class: "crumbs" }, h("a", { href: `#/${role}` }, role === "borrowing" ? "Borrowing requests" : "Lending requests"), " › ", view.id),
    title(view.title || `Request ${view.id}`),
    h("p", { class: "facts" }, badge(view.status), " ",
      view.needs_attention ? h("span", { class: "flag" }, "Needs attention") : null, " ",
      h("span", {}, role === "borrowing" ? "Lender: " : "Borrower: ", view.partner || "none"), " · ",
      h("span", {}, "Patron: ", view.patron_id || "—"), " · ",
      h("span", {}, "Id: ", h("code", {}, view.id)),
      view.requesting_request_id ? [" · ", h("span", {}, "Request id: ", h("code", {}, view.requesting_request_id))] : null,
      view.supplying_request_id ? [" · ", h("span", {}, role === "borrowing" ? "Lender's id: " : "Our id: ", h("code", {}, view.supplying_request_id))] : null,
      " ", h("button", { type: "button", class: "link", onclick: () => requestView(role, id, tab) }, "Refresh")));

  const tabs = TABS[role];
  const current = tabs.some(([k]) => k === tab) ? tab : "general";
  const panel = h("section", { class: "tabpanel", role: "tabpanel", id: "tabpanel", tabindex: "0",
    "aria-labelledby": `tab-${current}` });
  const tablist = h("div", { class: "tabs", role: "tablist", "aria-label": "Request details" },
    tabs.map(([key, label]) => h("button", { type: "button", role: "tab", id: `tab-${key}`,
      "aria-selected": key === current ? "true" : "false", "aria-controls": "tabpanel",
      tabindex: key === current ? "0" : "-1", dataset: { tab: key },
      // null flash: no message, but keep the focus on the tabs (arrow keys go on from there)
      onclick: () => { history.replaceState(null, "", `#/${role}/r/${encodeURIComponent(id)}?tab=${key}`); requestView(role, id, key, null); },
      onkeydown: (ev) => {
        const i = tabs.findIndex(([k]) => k === key);
        const next = ev.key === "ArrowRight" ? tabs[(i + 1) % tabs.length] : ev.key === "ArrowLeft" ? tabs[(i - 1 + tabs.length) % tabs.length] : null;
        if (next) { ev.preventDefault(); document.getElementById(`tab-${next[0]}`).click(); }
      } }, label, tabCount(role, view, key))));
  renderTab(role, view, current, panel, reload);
  put(main, head, flashBox, actionsPanel(role, view, reload), tablist, panel);
  if (flash === undefined) main.querySelector("h1")?.focus();
  else document.getElementById(`tab-${current}`)?.focus();
}

function tabCount(role, view, key) {
  const st = view.state || {};
  const n = { history: (view.history || []).length, messages: (role === "borrowing" ? st.messages : st.unread)?.length,
    notes: (st.notes || []).length, log: (view.messages || []).length }[key];
  return n ? h("span", { class: "count" }, ` ${n}`) : null;
}

function actionsPanel(role, view, reload) {
  const slip = (box) => role === "lending" ? h("button", { type: "button", onclick: () => openPullSlip(view.id, box) }, "Pull slip") : null;
  if (!mayAct(role)) {
    const box = resultBox();
    return h("section", { class: "actions", "aria-label": "Actions" },
      h("p", { class: "hint", id: "no-actions" }, `Your account (${session.role}) may read ${role} requests but not act on them.`),
      h("div", { class: "buttons" }, slip(box)), box);
  }
  const first = suggested(role, view);
  const rest = Object.keys(ACTIONS[role]).filter((n) => !first.includes(n) && n !== "note");
  const slot = h("div", { class: "action-form-slot" });
  const box = resultBox();
  const button = (name) => h("button", { type: "button", class: ACTIONS[role][name].danger ? "danger" : "",
    dataset: { action: name }, "aria-expanded": "false",
    onclick: (ev) => openAction(role, view, name, slot, box, reload, ev.currentTarget) }, ACTIONS[role][name].label);
  return h("section", { class: "actions", "aria-label": "Actions" },
    h("div", { class: "buttons" }, first.map(button), slip(box)),
    rest.length ? h("details", { class: "more" }, h("summary", {}, "More actions"),
      h("div", { class: "buttons" }, rest.map(button))) : null,
    slot, box);
}

function actionForm(role, name, submit, idPrefix = "") {
  const spec = ACTIONS[role][name];
  const form = h("form", { class: "action-form card", dataset: { form: name }, novalidate: true,
    onsubmit: (ev) => { ev.preventDefault(); submit(form); } },
  h("h2", {}, spec.label),
  spec.hint ? h("p", { class: "hint" }, spec.hint) : null,
  spec.fields.map((f) => f.conv === "money"
    ? h("div", { class: "row" },
      field({ name: `${f.name}.amount`, label: `${f.label} amount`, inputmode: "decimal", idPrefix: `${idPrefix}${name}-` }),
      field({ name: `${f.name}.currency`, label: "Currency", placeholder: "EUR", idPrefix: `${idPrefix}${name}-` }))
    : field({ ...f, idPrefix: `${idPrefix}${name}-` })),
  h("div", { class: "buttons" }, h("button", { type: "submit", class: spec.danger ? "danger" : "primary" }, `Confirm: ${spec.label}`),
    h("button", { type: "button", onclick: () => { form.dispatchEvent(new CustomEvent("close")); } }, "Close")));
  const first = form.querySelector("input, select, textarea");
  if (first) first.setAttribute("autofocus", "");
  return form;
}

function openAction(role, view, name, slot, box, reload, button) {
  const open = slot.firstChild && slot.firstChild.dataset.form === name;
  for (const b of document.querySelectorAll("[data-action]")) b.setAttribute("aria-expanded", "false");
  put(slot);
  box.clear();
  if (open) return;
  button.setAttribute("aria-expanded", "true");
  const form = actionForm(role, name, async (f) => {
    const res = await call("POST", `/api/${role}/requests/${encodeURIComponent(view.id)}/actions`, actionBody(role, name, f));
    if (res.ok) {
      reload(`Done: ${ACTIONS[role][name].label}. Status now: ${statusLabel(res.data?.status)}.`);
    } else {
      markFieldErrors(f, res);
      box.fail(res, `${ACTIONS[role][name].label}: `);
    }
  });
  form.addEventListener("close", () => { put(slot); button.setAttribute("aria-expanded", "false"); button.focus(); });
  slot.append(form);
  (form.querySelector("[autofocus]") || form.querySelector("button[type=submit]")).focus();
}

async function openPullSlip(id, box) {
  const path = `/api/lending/requests/${encodeURIComponent(id)}/pull-slip`;
  if (!auth.token) { window.open(path, "_blank", "noopener"); return; }
  // With a token the slip must be fetched with the Authorization header.
  const resp = await fetch(path, { headers: { Authorization: `Bearer ${auth.token}` } });
  if (!resp.ok) { box.fail({ status: resp.status, data: null, text: await resp.text() }, "Pull slip: "); return; }
  const blob = new Blob([await resp.text()], { type: "text/html" });
  window.open(URL.createObjectURL(blob), "_blank", "noopener");
}

// -- tabs ----------------------------------------------------------------------------------

const SKIP = new Set(["state", "history", "messages", "outbox"]);

function dl(entries) {
  const items = entries.filter(([, v]) => v !== null && v !== undefined && v !== "" && !(Array.isArray(v) && !v.length));
  if (!items.length) return h("p", { class: "empty" }, "Nothing recorded.");
  return h("dl", { class: "facts-list" }, items.map(([k, v]) => [
    h("dt", {}, k.replaceAll("_", " ")), h("dd", {}, show_value(v, k))]));
}

const TIMESTAMP = /(^|_)(at|since|until)$|^(created|updated|sent|answered|received|shipped)_/;

function show_value(v, key = "") {
  if (v === null || v === undefined) return "";
  if (Array.isArray(v)) return v.map((x) => show_value(x)).join(key ? ", " : "; ");
  if (typeof v === "object") {
    return Object.entries(v).filter(([, x]) => x !== null && x !== "" && !(Array.isArray(x) && !x.length))
      .map(([k, x]) => `${k.replaceAll("_", " ")}: ${show_value(x, k)}`).join(" · ");
  }
  if (typeof v === "boolean") return v ? "yes" : "no";
  if (typeof v === "string" && TIMESTAMP.test(key) && /^\d{4}-\d\d-\d\dT/.test(v)) return when(v);
  return String(v);
}

function table(columns, rows, empty = "Nothing recorded.") {
  if (!rows.length) return h("p", { class: "empty" }, empty);
  return h("div", { class: "table-wrap" }, h("table", {},
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows.map((r) => h("tr", { class: r.attention ? "attention" : "" }, r.cells.map((c) => h("td", {}, c)))))));
}

function renderTab(role, view, tab, panel, reload) {
  const st = view.state || {};
  const box = resultBox();
  const act = async (body, done) => {
    const res = await call("POST", `/api/${role}/requests/${encodeURIComponent(view.id)}/actions`, body);
    if (res.ok) reload(done, tab); else box.fail(res);
  };
  if (tab === "general") {
    const top = Object.entries(view).filter(([k]) => !SKIP.has(k));
    const details = role === "borrowing" ? Object.entries(st.form || {}) : Object.entries(st.request || {});
    const extra = role === "borrowing"
      ? [["lender_status", st.lender_status], ["answer_by", st.answer_by], ["due_date", st.due_date],
        ["end_reason", st.end_reason], ["conditions", st.conditions], ["charges", st.charges],
        ["pending_renew", st.pending_renew], ["pending_cancel", st.pending_cancel]]
      : [["requesting_agency_id", st.requesting_agency_id], ["located", st.located], ["due_date", st.due_date],
        ["conditions", st.conditions], ["conditions_note", st.conditions_note],
        ["pending_renew", st.pending_renew], ["pending_cancel", st.pending_cancel], ["charges", st.charges],
        ["renewals", st.renewals || null]];
    put(panel, h("h2", {}, "Request"), dl(top), h("h2", {}, role === "borrowing" ? "Form" : "Requested"), dl(details),
      h("h2", {}, "Progress"), dl(extra));
  } else if (tab === "history") {
    put(panel, h("h2", {}, "History"), table(["When", "Who", "Event", "What happened"],
      [...(view.history || [])].reverse().map((e) => ({ cells: [when(e.at), e.actor, e.event, e.summary || ""] }))));
  } else if (tab === "rota") {
    const rota = st.rota || [];
    let pendingIndex = -1;
    const pendingCount = rota.filter((e) => e.state === "pending").length;
    const rows = rota.map((e, i) => {
      const pending = e.state === "pending";
      const pos = pending ? ++pendingIndex : -1;
      const active = st.active === i;
      return { attention: active, cells: [
        String(i + 1), h("code", {}, e.symbol), active ? h("strong", {}, "Active") : e.state,
        e.note || "", e.attempt_request_id || "", when(e.sent_at), when(e.answered_at),
        mayAct(role) && h("div", { class: "buttons tight" },
          pending && pos > 0 ? h("button", { type: "button", "aria-label": `Move ${e.symbol} up`,
            onclick: () => act({ action: "rota_move", symbol: e.symbol, position: pos - 1 }, `Moved ${e.symbol} up.`) }, "Up") : null,
          pending && pos < pendingCount - 1 ? h("button", { type: "button", "aria-label": `Move ${e.symbol} down`,
            onclick: () => act({ action: "rota_move", symbol: e.symbol, position: pos + 1 }, `Moved ${e.symbol} down.`) }, "Down") : null,
          pending ? h("button", { type: "button", class: "danger", "aria-label": `Remove ${e.symbol}`,
            onclick: () => act({ action: "rota_remove", symbol: e.symbol }, `Removed ${e.symbol}.`) }, "Remove") : null,
          active ? h("button", { type: "button", class: "danger",
            onclick: () => act({ action: "cancel_partner" }, `Cancelled ${e.symbol}; moving on in the rota.`) }, "Cancel active partner") : null)] };
    });
    const add = h("form", { class: "inline", onsubmit: (ev) => {
      ev.preventDefault();
      const symbol = add.elements.namedItem("symbol").value.trim();
      if (symbol) act({ action: "rota_add", symbol }, `Added ${symbol} to the rota.`);
    } }, field({ name: "symbol", label: "Add partner (symbol)", placeholder: "ISIL:XX-LIB", required: true, idPrefix: "rota-" }),
    h("button", { type: "submit" }, "Add to rota"));
    put(panel, h("h2", {}, "Rota"), table(["#", "Partner", "State", "Note", "Request id", "Sent", "Answered", "Change"], rows, "The rota is empty."),
      mayAct(role) ? add : null, box);
  } else if (tab === "messages") {
    const list = role === "borrowing"
      ? (st.messages || []).map((m) => ({ attention: !m.read && m.direction !== "out",
        cells: [when(m.at), m.direction === "out" ? "To partner" : m.direction === "problem" ? "Problem" : "From partner", m.partner, m.text, m.read || m.direction === "out" ? "" : "unread"] }))
      : (st.unread || []).map((m) => ({ attention: true, cells: [when(m.at), "From partner", m.action, m.note, "unread"] }));
    const send = actionForm(role, "message", (f) => act(actionBody(role, "message", f), "Message sent."), "tab-");
    send.querySelector("[autofocus]")?.removeAttribute("autofocus");
    put(panel, h("h2", {}, "Messages with the partner"),
      table(["When", "Direction", role === "borrowing" ? "Partner" : "With", "Text", ""], list, "No messages."),
      mayAct(role) && list.some((r) => r.attention) ? h("button", { type: "button", onclick: () => act({ action: "mark_read" }, "Marked as read.") }, "Mark messages read") : null,
      mayAct(role) ? send : null, box);
  } else if (tab === "notes") {
    const notes = (st.notes || []).map((n) => ({ cells: [when(n.at), n.author || n.by || "", n.text] }));
    const add = actionForm(role, "note", (f) => act(actionBody(role, "note", f), "Note added."), "tab-");
    add.querySelector("[autofocus]")?.removeAttribute("autofocus");
    put(panel, h("h2", {}, "Internal notes"), table(["When", "Who", "Note"], notes, "No notes."), mayAct(role) ? add : null, box);
  } else if (tab === "items") {
    const facts = role === "borrowing"
      ? [["temporary_barcodes", st.barcodes], ["item_at", st.item_at], ["due_date", day(st.due_date)],
        ["delivery", st.delivery], ["renewals", (st.renewals || []).map((r) => `${r.answer === "Y" ? "renewed" : "refused"} ${day(r.answered_at)}${r.new_due ? ` → due ${day(r.new_due)}` : ""}`)],
        ["charges", st.charges]]
      : [["located", st.located], ["shipped_barcodes", st.shipped_barcodes], ["shipped_at", when(st.shipped_at)],
        ["delivery_method", st.delivery_method], ["due_date", st.due_date], ["received_by_borrower", when(st.received_at)],
        ["return_shipped", when(st.return_shipped_at)], ["renewals", st.renewals || null]];
    put(panel, h("h2", {}, role === "borrowing" ? "Received items" : "Items"), dl(facts));
  } else if (tab === "log") {
    const msgs = (view.messages || []).map((m) => h("details", { class: "log" },
      h("summary", {}, when(m.at), " ", m.direction === "in" ? "⟵ in" : "⟶ out", " ", m.kind, " ",
        [m.status, m.action, m.reason].filter(Boolean).join(" / "), m.peer ? ` (${m.peer})` : ""),
      h("pre", {}, m.raw || ""),
      m.confirmation ? [h("p", {}, "Confirmation:"), h("pre", {}, m.confirmation)] : null));
    const outbox = (view.outbox || []).map((o) => ({ attention: o.state !== "sent", cells: [
      String(o.id), o.kind, o.peer, o.state, String(o.attempts), o.last_error || "", when(o.next_attempt_at),
      o.state !== "sent" && session.admin ? h("button", { type: "button", onclick: async () => {
        const res = await call("POST", `/api/admin/outbox/${o.id}/retry`);
        if (res.ok) reload(`Message ${o.id} will be sent again now.`, tab); else box.fail(res);
      } }, "Retry now") : ""] }));
    put(panel, h("h2", {}, "Protocol messages"), msgs.length ? msgs : h("p", { class: "empty" }, "No messages."),
      h("h2", {}, "Outbox"), table(["#", "Kind", "Peer", "State", "Attempts", "Last error", "Next attempt", ""], outbox, "Nothing queued."), box);
  }
}

// -- desk screens (scan-driven) ------------------------------------------------------------

const DESKS = [["receive", "Receive (borrowing)", "borrowing"], ["return", "Return to partner (borrowing)", "borrowing"],
  ["checkin", "Check in (lending)", "lending"]];

function deskView(which) {
  const desks = DESKS.filter(([, , side]) => mayAct(side));
  if (!desks.length) return show(title("Desk"), h("p", { class: "empty" }, `Your account (${session.role}) may not act at the desk.`));
  if (!desks.some(([k]) => k === which)) return go(`desk/${desks[0][0]}`);
  const tabs = h("nav", { class: "subnav", "aria-label": "Desk" }, desks.map(([k, label]) =>
    h("a", { href: `#/desk/${k}`, "aria-current": k === which ? "page" : null }, label)));
  const log = h("ol", { class: "scan-log", "aria-live": "polite", "aria-label": "Scanned so far" });
  const entry = (ok, ...text) => log.prepend(h("li", { class: ok ? "ok" : "error" }, h("span", { class: "when" }, when(new Date().toISOString())), " ", ...text));
  if (which === "receive") return receiveDesk(tabs, log, entry);
  const isReturn = which === "return";
  const box = resultBox();
  const form = h("form", { class: "scan card", onsubmit: async (ev) => {
    ev.preventDefault();
    const input = form.elements.namedItem("barcode");
    const code = input.value.trim();
    if (!code) return;
    input.value = "";
    input.focus();
    const res = isReturn ? await returnByScan(code) : await checkInByScan(code);
    if (res.ok) {
      const v = res.data || {};
      const dest = v.destination || (isReturn ? { symbol: v.partner } : null);
      const destText = dest ? `The item's destination is ${dest.name ? `${dest.name} (${dest.symbol})` : dest.symbol}.` : "";
      box.ok(`${code}: `, h("a", { href: `#/${isReturn ? "borrowing" : "lending"}/r/${encodeURIComponent(v.id)}` }, v.id || ""),
        ` ${v.title || ""} — ${statusLabel(v.status)}. `, destText ? h("strong", {}, destText) : null);
      entry(true, `${code} → ${v.id} ${statusLabel(v.status)} ${destText}`);
    } else {
      box.fail(res, `${code}: `);
      entry(false, `${code}: ${errorText(res)}`);
    }
  } },
  field({ name: "barcode", label: isReturn ? "Scan the item barcode (or request id)" : "Scan the item barcode",
    autofocus: true, idPrefix: "desk-" }),
  h("button", { type: "submit", class: "primary" }, isReturn ? "Return to partner" : "Check in"));
  show(title(isReturn ? "Return items to partner" : "Check in lent items"), tabs, form, box, h("h2", {}, "This session"), log);
}

async function returnByScan(code) {
  const res = await call("POST", "/api/borrowing/return", { barcode: code });
  if (res.ok || (!res.missing && res.status !== 404)) return res;
  // Not a known temporary barcode (or an older node): maybe the request's own id.
  const found = await findOne("borrowing", code);
  if (!found.ok) return res.missing ? found : res;
  return call("POST", `/api/borrowing/requests/${encodeURIComponent(found.data.id)}/actions`, { action: "return_to_partner" });
}

async function checkInByScan(code) {
  const res = await call("POST", "/api/lending/check-in", { barcode: code });
  if (!res.missing) return res;
  const found = await findOne("lending", code, { barcode: code });
  if (!found.ok) return found;
  return call("POST", `/api/lending/requests/${encodeURIComponent(found.data.id)}/actions`, { action: "check_in" });
}

/** The single open request a scanned value names (id, request id, lender's id). */
async function findOne(role, code, extra = {}) {
  let res = await call("GET", `/api/${role}/requests?${new URLSearchParams({ q: code, limit: 5 })}`);
  if (res.ok && !res.data.requests.length && Object.keys(extra).length) {
    res = await call("GET", `/api/${role}/requests?${new URLSearchParams({ ...extra, limit: 5 })}`);
  }
  if (!res.ok) return res;
  const hits = res.data.requests;
  if (hits.length === 1) return { ok: true, status: 200, data: hits[0] };
  return { ok: false, status: 404, data: { error: hits.length
    ? `${code} matches ${hits.length} requests (${hits.map((r) => r.id).join(", ")}); open the request instead`
    : `no ${role} request matches ${code}` } };
}

function receiveDesk(tabs, log, entry) {
  const box = resultBox();
  const barcodes = [];
  let target = null;
  const stepTwo = h("div", { class: "step", hidden: true });
  const list = h("ul", { class: "barcodes", "aria-label": "Barcodes to receive" });
  const find = h("form", { class: "scan card", onsubmit: async (ev) => {
    ev.preventDefault();
    const input = find.elements.namedItem("lookup");
    const code = input.value.trim();
    if (!code) return;
    const res = await findOne("borrowing", code);
    if (!res.ok) { box.fail(res); input.select(); return; }
    target = res.data;
    barcodes.length = 0;
    put(list);
    box.info("Found ", h("a", { href: `#/borrowing/r/${encodeURIComponent(target.id)}` }, target.id),
      ` — ${target.title || ""} from ${target.partner || "?"} (${statusLabel(target.status)}). Scan the temporary barcode(s), then Enter on an empty field.`);
    stepTwo.hidden = false;
    scan.elements.namedItem("barcode").focus();
  } },
  field({ name: "lookup", label: "Scan or type the request id or the lender's id", autofocus: true, idPrefix: "desk-" }),
  h("button", { type: "submit" }, "Find request"));
  const receive = async () => {
    if (!target) return;
    if (!barcodes.length) { box.fail({ status: 400, data: { error: "scan at least one temporary barcode" } }); return; }
    const body = { action: "receive", barcodes: [...barcodes] };
    if (scan.elements.namedItem("in_transit").checked) body.in_transit = true;
    const res = await call("POST", `/api/borrowing/requests/${encodeURIComponent(target.id)}/actions`, body);
    if (res.ok) {
      box.ok(`Received ${target.id} (${barcodes.join(", ")}): ${statusLabel(res.data.status)}.`);
      entry(true, `${target.id} received with ${barcodes.join(", ")}`);
      target = null;
      stepTwo.hidden = true;
      find.reset();
      find.elements.namedItem("lookup").focus();
    } else {
      box.fail(res, `${target.id}: `);
      entry(false, `${target.id}: ${errorText(res)}`);
    }
  };
  const scan = h("form", { class: "scan card", onsubmit: (ev) => {
    ev.preventDefault();
    const input = scan.elements.namedItem("barcode");
    const code = input.value.trim();
    input.value = "";
    if (!code) { receive(); return; }
    if (!barcodes.includes(code)) {
      barcodes.push(code);
      list.append(h("li", {}, code));
    }
    input.focus();
  } },
  field({ name: "barcode", label: "Temporary barcode (one per volume)", idPrefix: "desk-" }),
  field({ name: "in_transit", type: "checkbox", label: "In transit to another pickup location", idPrefix: "desk-" }),
  list,
  h("div", { class: "buttons" }, h("button", { type: "submit" }, "Add barcode"),
    h("button", { type: "button", class: "primary", onclick: receive }, "Receive")));
  stepTwo.append(scan);
  show(title("Receive items from lenders"), tabs, find, stepTwo, box, h("h2", {}, "This session"), log);
}

// -- administration ------------------------------------------------------------------------

async function adminView() {
  if (!session.admin) return show(title("Administration"), h("p", { class: "empty" }, `Administration needs the admin role (you are ${session.role}).`));
  const sections = [title("Administration")];
  for (const kind of ["borrowing", "lending"]) sections.push(await closureCard(kind));
  sections.push(await partnersCard(), await holdingsCard(), await outboxCard(), reloadCard());
  if (still("admin")) show(...sections);
}

async function closureCard(kind) {
  const box = resultBox();
  const res = await call("GET", `/api/${kind}/closure`);
  const c = res.ok ? res.data : {};
  const status = h("p", { class: c.in_effect ? "closure-on" : "" }, res.ok ? (c.in_effect ? `In effect: ${c.description}` : (c.active ? `Set but not in effect today: ${c.description}` : "Open.")) : errorText(res));
  if (!mayAct(kind)) {
    return h("section", { class: "card", dataset: { closure: kind } }, h("h2", {}, `Temporarily inactive for ${kind}`), status,
      h("p", { class: "hint" }, `Your account may not change ${kind}.`));
  }
  const form = h("form", { class: "card", dataset: { closure: kind }, onsubmit: async (ev) => {
    ev.preventDefault();
    const v = formValues(form);
    const body = { active: !!v.active, start: v.start || null, end: v.end || null, note: v.note || "" };
    const put_ = await call("PUT", `/api/${kind}/closure`, body);
    if (put_.ok) {
      box.ok(`Saved. ${put_.data.in_effect ? "In effect now: " : ""}${put_.data.description || ""}`);
      status.textContent = put_.data.in_effect ? `In effect: ${put_.data.description}` : (put_.data.active ? `Set but not in effect today: ${put_.data.description}` : "Open.");
      status.className = put_.data.in_effect ? "closure-on" : "";
      refreshBanner(true);
    } else {
      box.fail(put_);
    }
  } },
  h("h2", {}, `Temporarily inactive for ${kind}`), status,
  field({ name: "active", type: "checkbox", label: `Temporarily inactive for ${kind}`, value: !!c.active, idPrefix: `${kind}-` }),
  h("div", { class: "row" },
    field({ name: "start", label: "From", type: "date", value: c.start || "", idPrefix: `${kind}-` }),
    field({ name: "end", label: "Until", type: "date", value: c.end || "", idPrefix: `${kind}-`,
      hint: "Leave both dates empty to close until unticked." })),
  field({ name: "note", label: "Note", value: c.note || "", idPrefix: `${kind}-` }),
  h("button", { type: "submit" }, "Save"), box);
  return form;
}

async function partnersCard() {
  const card = h("section", { class: "card", id: "partners" }, h("h2", {}, "Partners"));
  const res = await call("GET", "/api/admin/partners");
  if (!res.ok) {
    card.append(h("p", { class: "empty" }, errorText(res)));
    return card;
  }
  const yes = (v) => (v ? "yes" : "no");
  const closure = (v) => {
    if (!v) return "Open";
    const text = `Closed for lending ${v.start ? `from ${v.start} ` : ""}${v.end ? `until ${v.end}` : ""}${v.note ? ` (${v.note})` : ""}`;
    return v.in_effect ? h("strong", {}, text) : `${text} — not in effect today`;
  };
  const delivery = (d) => {
    if (!d) return "Nothing sent yet";
    const failure = d.last_failure_at
      ? [h("br"), d.outcome === "failing" ? h("strong", {}, "Failing: ") : "Earlier failure: ",
        `${when(d.last_failure_at)} ${d.last_error || ""}`]
      : null;
    return [d.last_success_at ? `Delivered ${when(d.last_success_at)}` : "Never delivered", failure,
      d.pending || d.failed ? [h("br"), `${d.pending} pending, ${d.failed} failed`] : null];
  };
  const rows = res.data.partners.map((p) => {
    const result = h("span", { class: "check-result", "aria-live": "polite" });
    const check = h("button", { type: "button", "aria-label": `Check now (${p.symbol})`, onclick: async () => {
      check.disabled = true;
      put(result, " Checking…");
      const r = await call("POST", `/api/admin/partners/${encodeURIComponent(p.symbol)}/check`);
      check.disabled = false;
      if (!r.ok) { put(result, h("strong", { class: "bad" }, ` ${errorText(r)}`)); return; }
      const c = r.data;
      put(result, c.reachable
        ? h("span", { class: "good" }, ` Reachable (HTTP ${c.http_status}, ${c.elapsed_ms} ms)`)
        : h("strong", { class: "bad" }, ` Unreachable: ${c.error || `HTTP ${c.http_status}`}`));
    } }, "Check now");
    return { attention: p.delivery?.outcome === "failing" || (p.closure && p.closure.in_effect),
      cells: [h("code", {}, p.symbol), p.name, h("span", { class: "url" }, p.url), p.iso18626_version,
        yes(p.borrow_from), yes(p.lend_to), closure(p.closure), delivery(p.delivery), [check, result]] };
  });
  card.append(table(["Symbol", "Name", "URL", "Version", "We borrow", "We lend", "Closure", "Deliveries", "Reachability"],
    rows, "No partners configured."));
  return card;
}

async function outboxCard(stateFilter = "") {
  const box = resultBox();
  const card = h("section", { class: "card", id: "outbox" });
  const load = async (filter) => {
    const res = await call("GET", `/api/admin/outbox${filter ? `?state=${encodeURIComponent(filter)}` : ""}`);
    const picker = h("form", { class: "inline", onsubmit: (ev) => { ev.preventDefault(); load(picker.elements.namedItem("state").value); } },
      field({ name: "state", label: "Show", type: "select", value: filter, idPrefix: "outbox-",
        options: [["", "All"], ["pending", "Pending (stuck or waiting)"], ["failed", "Failed"], ["sent", "Sent"]] }),
      h("button", { type: "submit" }, "Show"));
    if (!res.ok) { box.fail(res); put(card, h("h2", {}, "Outbox"), picker, box); return; }
    const rows = (res.data.outbox || []).map((o) => ({ attention: o.state !== "sent", cells: [
      String(o.id), o.kind || "", o.peer || "", o.state || "", String(o.attempts ?? ""), o.last_error || "",
      when(o.next_attempt_at), when(o.created_at),
      o.state !== "sent" ? h("button", { type: "button", onclick: async () => {
        const r = await call("POST", `/api/admin/outbox/${encodeURIComponent(o.id)}/retry`);
        if (r.ok) { await load(filter); box.ok(`Message ${o.id} will be sent again now.`); } else box.fail(r);
      } }, "Retry now") : ""] }));
    put(card, h("h2", {}, "Outbox"), picker,
      table(["#", "Kind", "Peer", "State", "Attempts", "Last error", "Next attempt", "Queued", ""], rows, "The outbox is empty."), box);
  };
  await load(stateFilter);
  return card;
}

// What auto-locate has to go on: no records (or an old import) explains NotHeld answers.
async function holdingsCard() {
  const card = h("section", { class: "card", id: "holdings" }, h("h2", {}, "Holdings"));
  const res = await call("GET", "/api/admin/holdings");
  if (!res.ok) { const box = resultBox(); box.fail(res); card.append(box); return card; }
  const d = res.data;
  const statuses = Object.entries(d.items_by_status || {}).sort((a, b) => b[1] - a[1])
    .map(([s, n]) => `${n} ${s.replace("_", " ")}`).join(", ");
  card.append(d.records
    ? h("p", {}, `${d.records} records, ${d.items} items${statuses ? ` (${statuses})` : ""}; last changed ${when(d.last_changed)}.`)
    : h("p", { class: "closure-on" }, "No holdings loaded: every request is left to staff. Load them with ill-node holdings import."));
  return card;
}

function reloadCard() {
  const box = resultBox();
  return h("section", { class: "card" }, h("h2", {}, "Configuration"),
    h("p", {}, "Reload partners, policies and closures from the configuration file."),
    h("button", { type: "button", onclick: async () => {
      const res = await call("POST", "/api/admin/reload");
      if (res.ok) box.ok(`Reloaded ${res.data.reloaded || ""}.`); else box.fail(res);
    } }, "Reload configuration"), box);
}

// -- start ---------------------------------------------------------------------------------

window.addEventListener("hashchange", route);
document.addEventListener("keydown", (ev) => {
  // "/" jumps to the queue search, as in many staff tools.
  if (ev.key === "/" && !/^(INPUT|TEXTAREA|SELECT)$/.test(document.activeElement?.tagName || "")) {
    const search = document.querySelector("input[type=search]");
    if (search) { ev.preventDefault(); search.focus(); }
  }
});
setInterval(() => refreshBanner(true), 60000);
route();
