// Every staff action of both sides, as data: the API name, a label, the short form's
// fields, and which actions to offer first for a status (the rest stay under "More actions").
// Field conversions: list (scanned/typed values -> array), bool (yes/no select -> true/false),
// int, money (two inputs NAME.amount + NAME.currency -> {amount, currency}).

import { splitList } from "./lib.js";

const note = { name: "note", label: "Note", type: "textarea" };
const noteRequired = { name: "note", label: "Message", type: "textarea", required: true };
const yesNo = (name, label) => ({ name, label, type: "select", conv: "bool", required: true,
  options: [["", "Choose…"], ["true", "Yes"], ["false", "No"]] });
const date = (name, label, hint) => ({ name, label, type: "date", hint });
const money = (name, label) => ({ name, label, conv: "money" });

const REASON_UNFILLED = ["NotOnShelf", "NotHeld", "NonCirculating", "NotAvailableForILL",
  "PolicyProblem", "PoorCondition"];
const REASON_RETRY = ["OnLoan", "AtBindery", "OnOrder", "NotCurrentAvailableForILL",
  "MustMeetLoanCondition", "CostExceedsMaxCost", "LoanPossible", "MultiVolAvail",
  "NotFoundAsCited", "ReqDelDateNotPossible", "ReqDelMethodNotSupp", "ReqEditionNotPossible",
  "ReqFormatNotPossible", "ReqPayMethodNotSupported", "ReqServLevelNotSupp",
  "ReqServTypeNotPossible", "CourierNotSupp"];
const DELIVERY = ["", "Mail", "Courier", "URL", "Email", "ArticleExchange", "FTP", "Odyssey", "Ariel"];

export const ACTIONS = {
  borrowing: {
    receive: { label: "Receive", fields: [
      { name: "barcodes", label: "Temporary barcode(s)", required: true, conv: "list",
        hint: "One per volume (the lender's barcode is best); separate with spaces." },
      { name: "in_transit", type: "checkbox", label: "In transit to the pickup location" }, note] },
    on_hold: { label: "Put on hold shelf", fields: [note] },
    loan_to_patron: { label: "Loan to patron", fields: [note] },
    patron_return: { label: "Returned by patron", fields: [note] },
    return_to_partner: { label: "Return to partner", fields: [note] },
    renew: { label: "Request renewal", fields: [date("due_date", "Wanted due date"), note] },
    cancel: { label: "Cancel request", danger: true, fields: [
      { name: "reason", label: "Reason", required: true, value: "No longer needed" },
      { name: "notify_patron", type: "checkbox", label: "Notify the patron" }, note] },
    cancel_partner: { label: "Cancel active partner", danger: true, fields: [note],
      hint: "Withdraw the request from the current lender and move on in the rota." },
    condition_answer: { label: "Answer conditions", fields: [yesNo("accept", "Accept the conditions?"), note] },
    status_request: { label: "Ask partner for status", fields: [] },
    message: { label: "Message partner", fields: [noteRequired] },
    note: { label: "Add internal note", fields: [{ name: "note", label: "Note", type: "textarea", required: true }] },
    lost: { label: "Lost", danger: true, fields: [note] },
    rerequest: { label: "Re-request", fields: [
      { name: "partners", label: "Partners (symbols)", conv: "list", hint: "Leave empty for the rota." }, note] },
    mark_read: { label: "Mark messages read", fields: [] },
  },
  lending: {
    will_supply: { label: "Will supply", fields: [note] },
    expect_to_supply: { label: "Expect to supply", fields: [date("expected_delivery", "Expected delivery"), note] },
    add_conditions: { label: "Add conditions", fields: [
      { name: "conditions", label: "Conditions", required: true, conv: "list",
        hint: "LoanCondition codes, e.g. LibraryUseOnly NoReproduction" },
      money("cost", "Cost"), note] },
    reject: { label: "Reject", danger: true, fields: [
      { name: "reason", label: "Reason", type: "select", required: true, options: REASON_UNFILLED }, note] },
    retry_possible: { label: "Retry possible", fields: [
      { name: "reason", label: "Reason", type: "select", required: true, options: REASON_RETRY },
      date("retry_after", "Retry after"), date("retry_before", "Retry before"), money("cost", "Cost"), note] },
    ship: { label: "Ship", fields: [
      { name: "barcodes", label: "Item barcode(s)", conv: "list",
        hint: "Leave empty for the located item." },
      date("due_date", "Due date", "Empty: the loan period from today."),
      { name: "delivery_method", label: "Delivery method", type: "select", options: DELIVERY },
      { name: "tracking", label: "Tracking number" }, money("cost", "Charge"), note] },
    deliver_copy: { label: "Deliver copy", fields: [{ name: "url", label: "URL", type: "url" },
      { name: "delivery_method", label: "Delivery method", type: "select", options: DELIVERY },
      money("cost", "Charge"), note] },
    renew_answer: { label: "Answer renewal", fields: [yesNo("approve", "Approve the renewal?"),
      date("due_date", "New due date", "Empty: the renewal period from the due date."), note] },
    cancel_answer: { label: "Answer cancel", fields: [yesNo("approve", "Agree to cancel?"), note] },
    check_in: { label: "Check in", fields: [note] },
    lost: { label: "Lost / damaged", danger: true, fields: [money("charge", "Charge"),
      { name: "damaged", type: "checkbox", label: "Damaged (not lost)" }, note] },
    recall: { label: "Recall", fields: [date("due_date", "Return by"), note] },
    message: { label: "Message partner", fields: [noteRequired] },
    note: { label: "Add internal note", fields: [{ name: "text", label: "Note", type: "textarea", required: true }] },
    mark_read: { label: "Mark messages read", fields: [] },
  },
};

// Actions offered first, by status (the seeds' "Actions" menus).
const SUGGESTED = {
  borrowing: {
    created: ["cancel", "rerequest"],
    sent: ["status_request", "cancel_partner", "cancel"],
    expect_to_supply: ["receive", "status_request", "cancel_partner", "cancel"],
    will_supply: ["receive", "status_request", "cancel_partner", "cancel"],
    conditional: ["condition_answer", "cancel_partner", "cancel"],
    retry_wait: ["cancel_partner", "cancel"],
    shipped: ["receive", "lost"],
    received: ["on_hold", "loan_to_patron", "return_to_partner", "renew"],
    on_hold: ["loan_to_patron", "return_to_partner", "renew"],
    on_loan: ["patron_return", "return_to_partner", "renew", "lost"],
    returned_by_patron: ["return_to_partner"],
    overdue: ["patron_return", "return_to_partner", "renew", "lost"],
    recalled: ["patron_return", "return_to_partner", "lost"],
    unfilled: ["rerequest", "cancel"],
    renew_requested: ["status_request"],
    returned_to_partner: ["status_request"],
    cancel_requested: ["status_request"],
  },
  lending: {
    RECEIVED: ["will_supply", "ship", "reject", "retry_possible", "add_conditions", "expect_to_supply"],
    EXPECT_TO_SUPPLY: ["will_supply", "ship", "reject", "retry_possible", "add_conditions"],
    WILL_SUPPLY: ["ship", "deliver_copy", "reject", "retry_possible", "add_conditions"],
    CONDITIONAL: ["reject", "retry_possible"],
    SHIPPED: ["check_in", "recall", "lost"],
    OVERDUE: ["check_in", "recall", "lost"],
    RECALLED: ["check_in", "lost"],
    RETURN_SHIPPED: ["check_in", "lost"],
  },
};

/** The action names to show first for a request view; pending questions come first. */
export function suggested(role, view) {
  const names = [...(SUGGESTED[role][view.status] || [])];
  const st = view.state || {};
  if (role === "lending") {
    if (st.pending_cancel) names.unshift("cancel_answer");
    if (st.pending_renew) names.unshift("renew_answer");
    if ((st.unread || []).length) names.push("mark_read");
  } else if ((st.messages || []).some((m) => !m.read && m.direction !== "out")) {
    names.push("mark_read");
  }
  return [...new Set(names)];
}

/** Turn a submitted action form into the API's JSON action. */
export function actionBody(role, name, form) {
  const body = { action: name };
  for (const f of ACTIONS[role][name].fields) {
    if (f.conv === "money") {
      const amount = form.elements.namedItem(`${f.name}.amount`).value.trim();
      const currency = form.elements.namedItem(`${f.name}.currency`).value.trim().toUpperCase();
      if (amount) body[f.name] = { amount, currency: currency || "EUR" };
      continue;
    }
    const el = form.elements.namedItem(f.name);
    if (!el) continue;
    if (f.type === "checkbox") {
      if (el.checked) body[f.name] = true;
      continue;
    }
    const raw = el.value.trim();
    if (raw === "") continue;
    if (f.conv === "list") body[f.name] = splitList(raw);
    else if (f.conv === "bool") body[f.name] = raw === "true";
    else if (f.conv === "int") body[f.name] = Number.parseInt(raw, 10);
    else body[f.name] = raw;
  }
  return body;
}
