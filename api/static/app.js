// The web app: conversations over a collection, a document manager and a citation viewer, in plain
// JavaScript modules over the REST API (see /docs). No framework, no build step.
//
// Model output and document text are only ever inserted as text (text nodes, textContent), never as
// HTML: documents may contain "<script>" or "[bold]", and the answer is whatever the model wrote.

import {
  ApiError, collectionPath, documentPath, events, getJson, postJson, request, setApiKey, upload,
} from "./api.js";
import { el, storage } from "./dom.js";
import { documentText } from "./viewer.js";

const $ = (id) => document.getElementById(id);
const MARKER = /\[(\d+(?:\s*,\s*\d+)*)\]/g; // [3] or [1, 4], as the server's citation parser reads them
const KEYS = { apiKey: "rag.apiKey", collection: "rag.collection", conversations: "rag.conversations",
  current: "rag.current" };
const MAX_CONVERSATIONS = 30;
const HISTORY_TURNS = 10; // earlier turns sent with a follow-up (the server condenses the last few)
const MAX_TURN_CHARS = 20000; // the API's cap on one history turn
const PAGE = 100; // documents listed per page
const JOB_POLL_MS = 500;

const state = {
  conversations: [], // [{id, title, collection, updated, turns: [{question, filters, answer, hits, ...}]}]
  current: null, // the open conversation's id; null for a new chat
  controller: null, // aborts the answer being streamed
  collections: new Map(),
  documents: [], // the listed page(s) of the picked collection
  documentsTotal: 0,
  pending: new Map(), // file name -> status text, while an upload runs
  viewerOpener: null,
};

// -- errors --------------------------------------------------------------------------------------

/** What to tell the user about a failed request: the server's message, and what to do about it. */
function explain(err, doing) {
  if (!(err instanceof ApiError)) return `${doing} failed: ${err.message}`;
  const reason = `${err.message} (${err.type}, HTTP ${err.status})`;
  switch (err.status) {
    case 0: return `${doing} failed. ${err.message}`;
    case 401: return `${doing} needs a valid API key: enter one in the API key field. ${reason}`;
    case 403: return `${doing} is not allowed with this API key. ${reason}`;
    case 413: return `${doing} failed: it is larger than the server accepts. ${reason}`;
    case 502: case 504: return `${doing} failed: the language model did not answer. ${reason}`;
    default: return `${doing} failed: ${reason}`;
  }
}

function showError(message) {
  $("error-text").textContent = message;
  $("error").hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error-text").textContent = "";
}

function fail(doing) {
  return (err) => {
    showError(explain(err, doing));
    if (err instanceof ApiError && err.status === 401) $("api-key").focus();
  };
}

// -- conversations (kept in localStorage) --------------------------------------------------------

function loadConversations() {
  try {
    const saved = JSON.parse(storage.get(KEYS.conversations) || "[]");
    state.conversations = Array.isArray(saved) ? saved.filter((c) => c && Array.isArray(c.turns)) : [];
  } catch {
    state.conversations = [];
  }
  const current = storage.get(KEYS.current);
  state.current = state.conversations.some((c) => c.id === current) ? current : null;
}

/** Save the conversations; when the browser's quota is full, drop the oldest until they fit. */
function saveConversations() {
  state.conversations.sort((a, b) => b.updated - a.updated);
  state.conversations.length = Math.min(state.conversations.length, MAX_CONVERSATIONS);
  while (!storage.set(KEYS.conversations, JSON.stringify(state.conversations)) && state.conversations.length > 1) {
    state.conversations.pop();
  }
  storage.set(KEYS.current, state.current || "");
}

const conversation = () => state.conversations.find((c) => c.id === state.current) || null;

function renderConversations() {
  $("conversation-list").replaceChildren(...state.conversations.map((c) => {
    const turns = `${c.turns.length} question${c.turns.length === 1 ? "" : "s"}`;
    return el("li", { className: c.id === state.current ? "active" : "" },
      el("button", { type: "button", className: "conversation", dataset: { id: c.id },
        "aria-current": c.id === state.current ? "true" : "false" },
        el("span", { className: "conversation-title" }, c.title),
        el("small", {}, `${c.collection} · ${turns}`)),
      el("button", { type: "button", className: "forget secondary small", dataset: { forget: c.id },
        "aria-label": `Delete conversation: ${c.title}`, title: "Delete conversation" }, "×"));
  }));
}

function openConversation(id) {
  if (state.controller) return; // an answer is streaming into the open one
  state.current = id;
  const open = conversation();
  if (open && state.collections.has(open.collection) && $("collection").value !== open.collection) {
    $("collection").value = open.collection;
    storage.set(KEYS.collection, open.collection);
    loadDocuments().catch(fail("Listing the documents"));
  }
  saveConversations();
  renderConversations();
  renderTranscript();
}

function newChat() {
  if (state.controller) state.controller.abort();
  state.current = null;
  saveConversations();
  renderConversations();
  renderTranscript();
  $("question").focus();
}

/** The turns a follow-up sends as `history`: the last answered ones, oldest first. */
function history(turns) {
  return turns.filter((t) => t.answer && !t.error).slice(-HISTORY_TURNS).flatMap((t) => [
    { role: "user", content: t.question.slice(0, MAX_TURN_CHARS) },
    { role: "assistant", content: t.answer.slice(0, MAX_TURN_CHARS) },
  ]);
}

// -- the transcript ------------------------------------------------------------------------------

/** `source § section (p. N)`: the citation's label, or the hit's metadata before citations arrive. */
function label(turn, n) {
  const hit = turn.hits.find((h) => h.n === n);
  const cited = turn.citations.find((c) => c.n === n);
  const meta = (hit && hit.metadata) || {};
  const source = (cited && cited.source) || meta.source || (hit && hit.doc_id) || `source ${n}`;
  const section = (cited && cited.section) || meta.section || "";
  let text = section ? `${source} § ${section}` : source;
  if (present(meta.page)) text += ` (p. ${meta.page})`;
  else if (present(meta.slide)) text += ` (slide ${meta.slide})`;
  return text;
}

const present = (value) => value !== null && value !== undefined && value !== "";

function sourcesNode(turn, open) {
  const cited = new Set(turn.citations.map((c) => c.n));
  const list = el("ol", { className: "sources" }, ...turn.hits.map((hit) => {
    const snippet = hit.text.length > 180 ? `${hit.text.slice(0, 180)}…` : hit.text;
    return el("li", { className: cited.has(hit.n) ? "cited" : "" },
      el("button", { type: "button", className: "source", dataset: { n: hit.n } },
        el("span", { className: "badge" }, String(hit.n)),
        el("span", { className: "source-label" }, label(turn, hit.n)),
        el("span", { className: "score" }, `score ${Number(hit.score).toFixed(2)}`)),
      el("p", { className: "snippet" }, snippet));
  }));
  const details = el("details", { className: "sources-box", open },
    el("summary", {}, `Sources (${turn.hits.length})`), list);
  details.hidden = turn.hits.length === 0;
  return details;
}

/** The answer as text nodes, each [n] marker a button (re-rendered as deltas arrive: a marker may be
 * split across two deltas). */
function answerParts(turn) {
  const parts = [];
  let last = 0;
  for (const match of turn.answer.matchAll(MARKER)) {
    parts.push(turn.answer.slice(last, match.index));
    const group = el("span", { className: "cite-group" }, "[");
    match[1].split(",").map((s) => Number(s.trim())).forEach((n, i) => {
      if (i) group.append(", ");
      group.append(turn.hits.some((h) => h.n === n)
        ? el("button", { type: "button", className: "cite", dataset: { n },
          "aria-label": `Source ${n}: ${label(turn, n)}`, title: label(turn, n) }, String(n))
        : el("span", { className: "cite-invalid", title: "no retrieved source has this number" }, String(n)));
    });
    group.append("]");
    parts.push(group);
    last = match.index + match[0].length;
  }
  parts.push(turn.answer.slice(last));
  return parts;
}

/** The model, tokens and filter of an answer, and its warnings (folded: they can be long). */
function metaNode(turn) {
  const parts = [turn.model];
  if (turn.usage && turn.usage.total_tokens) parts.push(`${turn.usage.total_tokens} tokens`);
  if (turn.filters) parts.push(`filter ${JSON.stringify(turn.filters)}`);
  if (turn.stopped) parts.push("stopped");
  const node = el("div", { className: "meta answer-meta" }, parts.filter(Boolean).join(" · "));
  const warnings = turn.warnings || [];
  if (warnings.length) {
    node.append(el("details", { className: "warnings" },
      el("summary", {}, `${warnings.length} warning${warnings.length === 1 ? "" : "s"}`),
      el("ul", {}, ...warnings.map((w) => el("li", {}, w)))));
  }
  return node;
}

function turnNode(turn, index, last) {
  const busy = turn.status === "streaming";
  const node = el("li", { className: "turn", dataset: { turn: index } },
    el("div", { className: "question" }, el("span", { className: "who" }, "You"), el("p", {}, turn.question)),
    el("div", { className: "reply" },
      el("span", { className: "who" }, "Answer"),
      sourcesNode(turn, last),
      el("div", { className: "answer", "aria-busy": String(busy) }, ...answerParts(turn)),
      metaNode(turn)));
  if (turn.error) node.querySelector(".reply").append(el("p", { className: "turn-error", role: "alert" }, turn.error));
  return node;
}

function renderTranscript() {
  const open = conversation();
  const turns = open ? open.turns : [];
  $("transcript").replaceChildren(...turns.map((t, i) => turnNode(t, i, i === turns.length - 1)));
  $("chat-empty").hidden = turns.length > 0;
}

function renderTurn(turn) {
  const open = conversation();
  const index = open ? open.turns.indexOf(turn) : -1;
  const node = $("transcript").querySelector(`li.turn[data-turn="${index}"]`);
  if (node) node.replaceWith(turnNode(turn, index, index === open.turns.length - 1));
}

// -- asking --------------------------------------------------------------------------------------

/** A JSON object, or `field=value` conditions separated by ';' (sent as a list); null when empty. */
function parseFilters(text) {
  text = text.trim();
  if (!text) return null;
  if (text.startsWith("{")) {
    let value;
    try {
      value = JSON.parse(text);
    } catch (err) {
      throw new Error(`The filter is not valid JSON: ${err.message}`);
    }
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
      throw new Error("A JSON filter must be an object, such as {\"lang\": \"en\"}.");
    }
    return value;
  }
  return text.split(/[;\n]/).map((part) => part.trim()).filter(Boolean);
}

function handle(turn, event, data) {
  switch (event) {
    case "sources":
      turn.hits = data.hits;
      break;
    case "delta":
      turn.answer += data.text;
      break;
    case "citations":
      turn.citations = data.citations;
      break;
    case "done":
      Object.assign(turn, { model: data.model, usage: data.usage, warnings: data.warnings || [] });
      turn.status = "done";
      break;
    case "error": {
      const what = data.type === "llm_error" || data.type === "llm_timeout"
        ? "The language model did not answer"
        : "The answer failed";
      turn.error = `${what}: ${data.message} (${data.type}).${turn.hits.length ? " The sources above were found." : ""}`;
      turn.status = "failed";
      break;
    }
    default: // unknown events are ignored, so the server may add some
      return;
  }
  renderTurn(turn);
}

function setBusy(busy) {
  $("ask").disabled = busy;
  $("stop").hidden = !busy;
}

async function ask(event) {
  event.preventDefault();
  if (state.controller) return;
  clearError();
  const question = $("question").value.trim();
  const collection = $("collection").value;
  if (!question) return;
  if (!collection) {
    showError("Pick a collection first (enter an API key if the list is empty).");
    return;
  }
  let filters;
  try {
    filters = parseFilters($("filters").value);
  } catch (err) {
    showError(err.message);
    return;
  }
  let open = conversation();
  if (!open || open.collection !== collection) {
    open = { id: `c${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`,
      title: question.length > 80 ? `${question.slice(0, 80)}…` : question, collection, updated: Date.now(),
      turns: [] };
    state.conversations.unshift(open);
    state.current = open.id;
  }
  const earlier = history(open.turns);
  const turn = { question, filters, answer: "", hits: [], citations: [], model: "", usage: null, warnings: [],
    error: "", status: "streaming" };
  open.turns.push(turn);
  open.updated = Date.now();
  saveConversations();
  renderConversations();
  renderTranscript();
  $("question").value = "";
  $("transcript").lastElementChild.scrollIntoView({ block: "nearest" });

  const body = { question, filters, stream: true };
  if (earlier.length) body.history = earlier;
  state.controller = new AbortController();
  setBusy(true);
  try {
    const response = await postJson(collectionPath(collection, "/ask"), body, {
      headers: { Accept: "text/event-stream" }, signal: state.controller.signal,
    });
    for await (const { event: kind, data } of events(response)) handle(turn, kind, data);
    if (turn.status === "streaming") turn.status = "done";
  } catch (err) {
    if (err.name === "AbortError") {
      turn.stopped = true;
    } else {
      turn.error = explain(err, "The question");
      if (err instanceof ApiError && err.status === 401) $("api-key").focus();
    }
    turn.status = turn.error ? "failed" : "done";
  } finally {
    state.controller = null;
    setBusy(false);
    open.updated = Date.now();
    saveConversations();
    renderTurn(turn);
  }
}

// -- collections ---------------------------------------------------------------------------------

async function loadCollections() {
  const select = $("collection");
  const wanted = select.value || storage.get(KEYS.collection) || "default";
  let collections;
  try {
    ({ collections } = await getJson("/v1/collections"));
  } catch (err) {
    state.collections = new Map();
    select.replaceChildren();
    renderDocuments();
    throw err;
  }
  state.collections = new Map(collections.map((c) => [c.name, c]));
  select.replaceChildren(...collections.map((c) =>
    el("option", { value: c.name }, `${c.name} (${c.documents} document${c.documents === 1 ? "" : "s"})`)));
  if (state.collections.has(wanted)) select.value = wanted;
  if (!collections.length) showError("There is no collection this API key may read.");
  $("collection-field").classList.toggle("single", collections.length === 1);
  await loadDocuments();
}

function pickCollection() {
  const name = $("collection").value;
  storage.set(KEYS.collection, name);
  const open = conversation();
  if (open && open.collection !== name) newChat(); // a conversation stays with the collection it asked
  clearError();
  loadDocuments().catch(fail("Listing the documents"));
}

// -- the document manager ------------------------------------------------------------------------

async function loadDocuments(more = false) {
  const name = $("collection").value;
  if (!name) {
    state.documents = [];
    state.documentsTotal = 0;
    renderDocuments();
    return;
  }
  const offset = more ? state.documents.length : 0;
  const page = await getJson(collectionPath(name, `/documents?offset=${offset}&limit=${PAGE}`));
  if (name !== $("collection").value) return; // the picker moved on meanwhile
  state.documents = more ? [...state.documents, ...page.documents] : page.documents;
  state.documentsTotal = page.total;
  renderDocuments();
}

function renderDocuments() {
  const name = $("collection").value;
  const info = state.collections.get(name);
  const rows = [...state.pending].map(([file, status]) => el("tr", { className: "pending" },
    el("th", { scope: "row" }, el("span", { className: "doc-title" }, file)),
    el("td", {}, "–"), el("td", { className: "status" }, status), el("td")));
  for (const doc of state.documents) {
    const modified = doc.metadata && doc.metadata.modified ? String(doc.metadata.modified).slice(0, 10) : "";
    rows.push(el("tr", {},
      el("th", { scope: "row" },
        el("button", { type: "button", className: "link doc-open", dataset: { doc: doc.doc_id },
          title: `Show the chunks of ${doc.source}` }, doc.title || doc.doc_id),
        el("small", { className: "doc-source" }, doc.source)),
      el("td", { className: "num" }, String(doc.chunks)),
      el("td", { className: "status" }, "indexed", modified ? el("small", {}, modified) : ""),
      el("td", {}, el("button", { type: "button", className: "secondary small doc-delete",
        dataset: { doc: doc.doc_id }, "aria-label": `Delete ${doc.source}` }, "Delete"))));
  }
  $("document-rows").replaceChildren(...rows);
  $("documents").hidden = rows.length === 0;
  $("more-documents").hidden = state.documents.length >= state.documentsTotal;
  $("documents-summary").textContent = !name ? "No collection." : info
    ? `${name}: ${info.documents} document${info.documents === 1 ? "" : "s"}, ${info.chunks} chunks`
      + (state.documents.length < state.documentsTotal ? ` (${state.documents.length} shown)` : "")
    : "";
}

async function deleteDocument(docId) {
  const name = $("collection").value;
  const doc = state.documents.find((d) => d.doc_id === docId);
  const source = doc ? doc.source : docId;
  // A native confirm: keyboard- and screen-reader-friendly as it is.
  if (!window.confirm(`Delete ${source} from ${name}? Its chunks leave the index and later answers.`)) return;
  clearError();
  try {
    await request(documentPath(name, docId), { method: "DELETE" });
  } catch (err) {
    fail(`Deleting ${source}`)(err);
    return;
  }
  $("upload-report").replaceChildren(el("p", { className: "meta" }, `Deleted ${source}.`));
  await loadCollections().catch(fail("Listing the collections"));
}

function setProgress(text, fraction) {
  $("upload-progress").hidden = false;
  $("upload-status").textContent = text;
  $("upload-bar").value = Math.round(Math.max(0, Math.min(1, fraction)) * 100);
}

async function waitForJob(job, files) {
  while (job.status === "queued" || job.status === "running") {
    const total = job.files_total || files.length;
    setProgress(`Indexing: ${job.files_done} of ${total} files (${job.status})…`, job.files_done / total);
    for (const file of files) state.pending.set(file, job.status === "queued" ? "queued" : "indexing");
    renderDocuments();
    await new Promise((resolve) => setTimeout(resolve, JOB_POLL_MS));
    job = await getJson(`/v1/jobs/${encodeURIComponent(job.id)}`);
  }
  if (job.status === "failed") {
    throw new Error(job.error ? `${job.error.message} (${job.error.type})` : "The upload job failed.");
  }
  return job.report;
}

function renderReport(report) {
  const counts = ["added", "updated", "unchanged", "removed", "failed"]
    .map((kind) => `${report[kind].length} ${kind}`).join(", ");
  const nodes = [el("p", { className: "summary" },
    `${counts}; ${report.chunks_added} chunk${report.chunks_added === 1 ? "" : "s"} added (${Number(report.seconds).toFixed(1)} s)`)];
  for (const kind of ["added", "updated", "unchanged", "removed"]) {
    if (report[kind].length) {
      nodes.push(el("p", {}, el("strong", {}, `${kind[0].toUpperCase()}${kind.slice(1)}: `), report[kind].join(", ")));
    }
  }
  if (report.failed.length) {
    nodes.push(el("p", {}, el("strong", {}, "Failed:")),
      el("ul", { className: "failed" }, ...report.failed.map((f) => el("li", {}, `${f.path}: ${f.reason}`))));
  }
  $("upload-report").replaceChildren(...nodes);
}

async function uploadFiles(event) {
  event.preventDefault();
  const files = [...$("files").files];
  const name = $("collection").value;
  if (!files.length || !name) return;
  clearError();
  const form = new FormData();
  for (const file of files) form.append("files", file, file.name);
  const names = files.map((f) => f.name);
  $("upload").disabled = true;
  $("upload-report").replaceChildren();
  try {
    setProgress(`Uploading ${files.length} file${files.length === 1 ? "" : "s"}…`, 0);
    for (const file of names) state.pending.set(file, "uploading");
    renderDocuments();
    const { status, body } = await upload(collectionPath(name, "/documents"), form, (sent, total) => {
      setProgress(`Uploading: ${Math.round((100 * sent) / total)} %`, sent / total);
      for (const file of names) state.pending.set(file, `uploading ${Math.round((100 * sent) / total)} %`);
      renderDocuments();
    });
    const report = status === 202 ? await waitForJob(body, names) : body;
    setProgress("Done.", 1);
    renderReport(report);
    $("files").value = "";
  } catch (err) {
    $("upload-report").replaceChildren(el("p", { className: "turn-error", role: "alert" },
      explain(err, "The upload")));
  } finally {
    state.pending.clear();
    $("upload").disabled = false;
    $("upload-progress").hidden = true;
    await loadCollections().catch(fail("Listing the collections")); // the counts moved
  }
}

// -- the viewer: a document's chunks, or a cited chunk inside its document -----------------------

function openViewer(opener) {
  state.viewerOpener = opener || document.activeElement;
  const viewer = $("viewer");
  if (!viewer.open) viewer.showModal();
}

function closeViewer() {
  const viewer = $("viewer");
  if (viewer.open) viewer.close();
}

function chunkList(doc, citedId) {
  return el("ol", { className: "chunk-list" }, ...doc.chunk_list.map((chunk, i) => {
    const meta = chunk.metadata || {};
    const where = [`chunk ${i + 1} of ${doc.chunk_list.length}`];
    if (present(meta.section)) where.push(meta.section);
    if (present(meta.start) && present(meta.end)) where.push(`characters ${meta.start}–${meta.end}`);
    if (present(meta.page)) where.push(`page ${meta.page}`);
    if (present(meta.slide)) where.push(`slide ${meta.slide}`);
    const cited = chunk.chunk_id === citedId;
    return el("li", { className: cited ? "chunk cited" : "chunk", dataset: { chunk: chunk.chunk_id },
      "aria-current": cited ? "true" : "false" },
      el("p", { className: "meta" }, where.join(" · ")),
      cited ? el("mark", { className: "chunk-text" }, chunk.text) : el("div", { className: "chunk-text" }, chunk.text));
  }));
}

/** The viewer's body: the document as text with the cited span marked, or as its list of chunks. */
function renderViewerBody(doc, citedId, asChunks) {
  const body = $("viewer-body");
  const text = citedId && !asChunks ? documentText(doc.chunk_list, citedId) : null;
  if (text) {
    body.replaceChildren(el("div", { className: "doc-text" },
      text.before, el("mark", { className: "cited-span", id: "cited-span" }, text.cited), text.after));
  } else {
    body.replaceChildren(chunkList(doc, citedId));
  }
  $("viewer-mode").hidden = !citedId || !documentText(doc.chunk_list, citedId);
  $("viewer-mode").textContent = text ? "Show chunks" : "Show text";
  const target = body.querySelector("mark");
  if (target) target.scrollIntoView({ block: "center" });
  else body.scrollTop = 0;
}

/** Open a document in the viewer; with `cite` ({chunkId, n, label, text}), its cited chunk marked. */
async function showDocument(collection, docId, cite = null, opener = null) {
  $("viewer-title").textContent = cite ? `[${cite.n}] ${cite.label}` : docId;
  $("viewer-source").textContent = "Loading…";
  $("viewer-span").textContent = "";
  $("viewer-body").replaceChildren();
  $("viewer-mode").hidden = true;
  openViewer(opener);
  let doc;
  try {
    doc = await getJson(documentPath(collection, docId));
  } catch (err) {
    if (cite && err instanceof ApiError && err.status === 404) {
      // Deleted since the answer: the cited text is still in the conversation.
      $("viewer-source").textContent = `${docId} is no longer in ${collection}; the text the answer cited:`;
      $("viewer-body").replaceChildren(el("mark", { className: "chunk-text" }, cite.text));
    } else {
      $("viewer-source").textContent = explain(err, `Opening ${docId}`);
    }
    return;
  }
  if (!cite) $("viewer-title").textContent = doc.title || doc.doc_id;
  $("viewer-source").textContent = `${doc.source} · ${collection} · ${doc.chunks} chunk${doc.chunks === 1 ? "" : "s"}`;
  const index = cite ? doc.chunk_list.findIndex((c) => c.chunk_id === cite.chunkId) : -1;
  if (index >= 0) {
    const meta = doc.chunk_list[index].metadata || {};
    const span = [`Cited chunk ${index + 1} of ${doc.chunk_list.length}`];
    if (present(meta.start) && present(meta.end)) span.push(`characters ${meta.start}–${meta.end}`);
    if (present(meta.page)) span.push(`page ${meta.page}`);
    if (present(meta.slide)) span.push(`slide ${meta.slide}`);
    if (present(meta.section)) span.push(meta.section);
    $("viewer-span").textContent = span.join(" · ");
  } else if (cite) {
    $("viewer-span").textContent = "The cited chunk is no longer in this document (it was re-ingested since).";
  }
  const citedId = index >= 0 ? cite.chunkId : null;
  let asChunks = false;
  renderViewerBody(doc, citedId, asChunks);
  $("viewer-mode").onclick = () => {
    asChunks = !asChunks;
    renderViewerBody(doc, citedId, asChunks);
  };
}

function citationClicked(event) {
  const target = event.target.closest("[data-n]");
  if (!target) return;
  const open = conversation();
  const turn = open && open.turns[Number(target.closest("li.turn").dataset.turn)];
  const n = Number(target.dataset.n);
  const hit = turn && turn.hits.find((h) => h.n === n);
  if (!hit) return;
  showDocument(open.collection, hit.doc_id, { chunkId: hit.chunk_id, n, label: label(turn, n), text: hit.text }, target);
}

// -- wiring --------------------------------------------------------------------------------------

function useKey() {
  const key = $("api-key").value.trim();
  storage.set(KEYS.apiKey, key);
  setApiKey(key);
  clearError();
  loadCollections().catch(fail("Listing the collections"));
}

function init() {
  $("api-key").value = storage.get(KEYS.apiKey);
  setApiKey($("api-key").value);
  $("api-key").addEventListener("change", useKey);
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    useKey();
  });
  $("collection").addEventListener("change", pickCollection);
  $("refresh").addEventListener("click", () => {
    clearError();
    loadCollections().catch(fail("Listing the collections"));
  });
  $("error-close").addEventListener("click", clearError);

  $("new-chat").addEventListener("click", newChat);
  $("conversation-list").addEventListener("click", (event) => {
    const forget = event.target.closest("[data-forget]");
    const pick = event.target.closest("[data-id]");
    if (forget) {
      state.conversations = state.conversations.filter((c) => c.id !== forget.dataset.forget);
      if (state.current === forget.dataset.forget) state.current = null;
      saveConversations();
      renderConversations();
      renderTranscript();
      $("new-chat").focus();
    } else if (pick) {
      openConversation(pick.dataset.id);
    }
  });

  $("ask-form").addEventListener("submit", ask);
  $("question").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("ask-form").requestSubmit();
    }
  });
  $("stop").addEventListener("click", () => state.controller && state.controller.abort());
  $("transcript").addEventListener("click", citationClicked);

  $("upload-form").addEventListener("submit", uploadFiles);
  $("more-documents").addEventListener("click", () => loadDocuments(true).catch(fail("Listing the documents")));
  $("document-rows").addEventListener("click", (event) => {
    const open = event.target.closest(".doc-open");
    const remove = event.target.closest(".doc-delete");
    if (open) showDocument($("collection").value, open.dataset.doc, null, open);
    if (remove) deleteDocument(remove.dataset.doc);
  });

  $("viewer-close").addEventListener("click", closeViewer);
  $("viewer").addEventListener("click", (event) => { // a click on the backdrop closes it
    if (event.target === $("viewer")) closeViewer();
  });
  $("viewer").addEventListener("close", () => {
    const opener = state.viewerOpener;
    state.viewerOpener = null;
    if (opener && opener.isConnected) opener.focus();
  });

  loadConversations();
  renderConversations();
  renderTranscript();
  loadCollections().catch(fail("Listing the collections"));
}

init();
