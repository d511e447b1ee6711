// The patron request page: identity, the request form (pre-filled from an OpenURL link),
// the patron's own requests; while borrowing is suspended the form becomes a notice.

import { h, put, call, resultBox, field, formValues, markFieldErrors, statusLabel, when, day } from "./lib.js";

// -- patron identity ------------------------------------------------------------------------
// The patron types their library card number (patron_id).  Where the node asks for patron
// tokens (ill-node patron token ID), the access code the library gave is kept under
// "ill.patronToken" in sessionStorage, sent as a Bearer header, and the card number is the
// token's own (GET /api/whoami).
const PATRON = "ill.patronId";
const PATRON_TOKEN = "ill.patronToken";

export function patronHeaders() {
  const token = sessionStorage.getItem(PATRON_TOKEN);
  return token ? { Authorization: `Bearer ${token}` } : {};
}

function patronId() {
  return sessionStorage.getItem(PATRON) || "";
}

// -- OpenURL (what discovery systems send) ---------------------------------------------------

const ARTICLE_GENRES = new Set(["article", "chapter", "bookitem", "proceeding", "conference", "preprint", "document"]);

/** Form values from an OpenURL 1.0 (KEV, rft.*) or 0.1 query string. */
export function fromOpenURL(search) {
  const q = new URLSearchParams(search);
  const get = (...keys) => {
    for (const k of keys) { const v = q.get(k); if (v && v.trim()) return v.trim(); }
    return "";
  };
  const out = {};
  const genre = get("rft.genre", "genre").toLowerCase();
  const atitle = get("rft.atitle", "atitle");
  const container = get("rft.btitle", "rft.jtitle", "rft.title", "title", "jtitle", "btitle", "rft.stitle");
  if (container) out.title = container;
  if (atitle) out.title_of_component = atitle;
  if (!out.title && atitle && !ARTICLE_GENRES.has(genre)) { out.title = atitle; delete out.title_of_component; }
  const au = get("rft.au", "au");
  const last = get("rft.aulast", "aulast");
  const first = get("rft.aufirst", "aufirst", "rft.auinit", "auinit");
  const author = au || (last ? (first ? `${last}, ${first}` : last) : "");
  if (author) {
    if (out.title_of_component) out.author_of_component = author; else out.author = author;
  }
  const isbn = get("rft.isbn", "isbn");
  const issn = get("rft.issn", "rft.eissn", "issn", "eissn");
  if (isbn) out.isbn = isbn;
  if (issn) out.issn = issn;
  for (const id of [...q.getAll("rft_id"), ...q.getAll("id")]) {
    const m = /^(?:info:oclcnum\/|oclcnum:|\(OCoLC\))\s*(\d+)/i.exec(id.trim());
    if (m) out.oclc = m[1];
    const i = /^(?:info:isbn\/|urn:isbn:)(.+)$/i.exec(id.trim());
    if (i && !out.isbn) out.isbn = i[1];
  }
  const volume = get("rft.volume", "volume");
  const issue = get("rft.issue", "issue");
  const pages = get("rft.pages", "pages") || [get("rft.spage", "spage"), get("rft.epage", "epage")].filter(Boolean).join("-");
  const date = get("rft.date", "date");
  const publisher = get("rft.pub", "pub");
  const edition = get("rft.edition");
  if (volume) out.volume = volume;
  if (issue) out.issue = issue;
  if (pages) out.pages = pages;
  if (date) out.publication_date = date;
  if (publisher) out.publisher = publisher;
  if (edition) out.edition = edition;
  if (genre) out.format = ARTICLE_GENRES.has(genre) ? "digital" : "physical";
  else if (out.title_of_component) out.format = "digital";
  return out;
}

// -- the page --------------------------------------------------------------------------------

const identity = document.getElementById("identity");
const request = document.getElementById("request");
const mine = document.getElementById("mine");
const prefill = fromOpenURL(location.search);

/** Shown when the node wants a patron token (401): where a sign-in would put it. */
function askForToken() {
  if (identity.querySelector("#patron-token-form")) return;
  const form = h("form", { class: "inline", id: "patron-token-form", onsubmit: (ev) => {
    ev.preventDefault();
    const v = form.elements.namedItem("token").value.trim();
    if (v) sessionStorage.setItem(PATRON_TOKEN, v); else sessionStorage.removeItem(PATRON_TOKEN);
    render();
  } },
  h("p", {}, "This library asks you to sign in for interlibrary loan. Paste the access code the library gave you."),
  field({ name: "token", label: "Access code", type: "password", idPrefix: "who-" }),
  h("button", { type: "submit" }, "Sign in"));
  identity.append(form);
}

function identityForm() {
  const form = h("form", { class: "inline", onsubmit: (ev) => {
    ev.preventDefault();
    const v = form.elements.namedItem("patron_id").value.trim();
    if (v) sessionStorage.setItem(PATRON, v); else sessionStorage.removeItem(PATRON);
    identityForm(); // keeps what was typed in the request form
    loadMine();
  } },
  field({ name: "patron_id", label: "Your library card number", value: patronId(), required: true, idPrefix: "who-" }),
  h("button", { type: "submit" }, patronId() ? "Change" : "Continue"));
  put(identity, h("h2", { id: "identity-title" }, "Who you are"), form);
}

async function requestSection() {
  const closure = await call("GET", "/api/patron/closure", undefined, patronHeaders());
  if (closure.status === 401) askForToken();
  if (closure.ok && closure.data && closure.data.in_effect) {
    const c = closure.data;
    const dates = c.start || c.end
      ? `from ${c.start || "now"} until ${c.end || "further notice"}`
      : "until further notice";
    put(request, h("div", { class: "notice", role: "alert", id: "closed-notice" },
      h("h2", {}, "Interlibrary loan requests are suspended"),
      h("p", {}, `The library is not taking new interlibrary loan requests ${dates}.`),
      c.note ? h("p", {}, c.note) : null,
      h("p", {}, "Please come back after that date, or ask at the library desk.")));
    return;
  }
  const box = resultBox();
  const form = h("form", { class: "card", id: "patron-form", novalidate: true, onsubmit: async (ev) => {
    ev.preventDefault();
    if (!patronId()) { box.fail({ status: 400, data: { error: "enter your library card number first" } }); identity.querySelector("input")?.focus(); return; }
    const body = { patron_id: patronId() };
    for (const [k, v] of Object.entries(formValues(form))) {
      if (typeof v === "boolean") { if (v) body[k] = true; } else body[k] = v;
    }
    const res = await call("POST", "/api/patron/requests", body, patronHeaders());
    if (res.status === 201) {
      box.ok(`Thank you: your request ${res.data.id} for “${res.data.title || "the item"}” is on its way (${statusLabel(res.data.status)}).`);
      form.reset();
      loadMine();
    } else {
      if (res.status === 401) askForToken();
      markFieldErrors(form, res);
      box.fail(res);
    }
  } },
  h("h2", {}, "What do you need?"),
  prefill.title || prefill.isbn || prefill.issn ? h("p", { class: "hint" }, "Filled in from your search; check and complete it.") : null,
  field({ name: "title", label: "Title (book or journal)", value: prefill.title, idPrefix: "p-" }),
  field({ name: "author", label: "Author", value: prefill.author, idPrefix: "p-" }),
  h("div", { class: "row" },
    field({ name: "isbn", label: "ISBN", value: prefill.isbn, idPrefix: "p-" }),
    field({ name: "issn", label: "ISSN", value: prefill.issn, idPrefix: "p-" }),
    field({ name: "oclc", label: "OCLC number", value: prefill.oclc, idPrefix: "p-" })),
  field({ name: "format", label: "I need", type: "select", value: prefill.format || "physical", idPrefix: "p-",
    options: [["physical", "The item itself (a loan)"], ["digital", "A copy of an article or chapter"]] }),
  h("div", { class: "row" },
    field({ name: "title_of_component", label: "Article or chapter title", value: prefill.title_of_component, idPrefix: "p-" }),
    field({ name: "author_of_component", label: "Article author", value: prefill.author_of_component, idPrefix: "p-" })),
  h("div", { class: "row" },
    field({ name: "volume", label: "Volume", value: prefill.volume, idPrefix: "p-" }),
    field({ name: "issue", label: "Issue", value: prefill.issue, idPrefix: "p-" }),
    field({ name: "pages", label: "Pages", value: prefill.pages, idPrefix: "p-" }),
    field({ name: "publication_date", label: "Year", value: prefill.publication_date, idPrefix: "p-" })),
  h("div", { class: "row" },
    field({ name: "pickup_location", label: "Pick up at", required: true, idPrefix: "p-" }),
    field({ name: "needed_by", label: "Not needed after", type: "date", idPrefix: "p-" })),
  field({ name: "copyright_agreed", type: "checkbox", label: "For copies: I agree to the copyright terms", idPrefix: "p-" }),
  field({ name: "note", label: "Anything else we should know", type: "textarea", idPrefix: "p-" }),
  h("button", { type: "submit", class: "primary" }, "Send request"), box);
  for (const k of ["publisher", "edition"]) {
    if (prefill[k]) form.append(h("input", { type: "hidden", name: k, value: prefill[k] }));
  }
  put(request, form);
}

async function loadMine() {
  put(mine, h("h2", { id: "mine-title" }, "Your requests"));
  if (!patronId()) { mine.append(h("p", { class: "empty" }, "Enter your library card number to see your requests.")); return; }
  const res = await call("GET", `/api/patron/${encodeURIComponent(patronId())}/requests`, undefined, patronHeaders());
  const box = resultBox();
  if (!res.ok) { if (res.status === 401) askForToken(); box.fail(res); mine.append(box); return; }
  const rows = res.data.requests || [];
  if (!rows.length) { mine.append(h("p", { class: "empty" }, "You have no requests yet.")); return; }
  mine.append(h("div", { class: "table-wrap" }, h("table", { class: "stack" },
    h("thead", {}, h("tr", {}, ["Request", "Title", "Status", "Due back", "Updated", ""].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows.map((r) => h("tr", {},
      h("td", {}, r.id), h("td", {}, r.title || ""), h("td", {}, statusLabel(r.status)),
      h("td", {}, RENEWABLE.has(r.status) ? day(r.due_date) : ""), h("td", {}, when(r.updated_at)),
      h("td", {}, RENEWABLE.has(r.status)
        ? h("button", { type: "button", dataset: { renew: r.id }, onclick: () => renew(r, box) }, "Request renewal") : "")))))), box);
}

// A loan the patron holds (the staff console offers "renew" in the same statuses).
const RENEWABLE = new Set(["received", "on_hold", "on_loan", "overdue"]);

async function renew(r, box) {
  const res = await call("POST", `/api/patron/${encodeURIComponent(patronId())}/requests/${encodeURIComponent(r.id)}/renew`, {}, patronHeaders());
  if (res.ok) {
    await loadMine();
    mine.append(box);
    box.ok(`Renewal requested for ${r.id} (“${r.title || "your loan"}”): the lending library will answer.`);
  } else {
    if (res.status === 401) askForToken();
    box.fail(res, `${r.id}: `);
  }
}

/** With a patron token, the card number is the token's own. */
async function adoptTokenIdentity() {
  if (!patronHeaders().Authorization) return;
  const res = await call("GET", "/api/whoami", undefined, patronHeaders());
  if (res.ok && res.data.role === "patron") sessionStorage.setItem(PATRON, res.data.patron_id);
  else if (res.status === 401) sessionStorage.removeItem(PATRON_TOKEN);
}

async function render() {
  await adoptTokenIdentity();
  identityForm();
  requestSection();
  loadMine();
}

render();
