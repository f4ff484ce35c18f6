// The chat page: plain JavaScript over the REST API (see /docs). No framework, no build step.
//
// Model output and document text are only ever inserted as text (text nodes, textContent), never as
// HTML: documents may contain "<script>" or "[bold]", and the answer is whatever the model wrote.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const STORED_KEY = "rag.apiKey";
  const STORED_COLLECTION = "rag.collection";
  const MARKER = /\[(\d+(?:\s*,\s*\d+)*)\]/g; // [3] or [1, 4], as the server's citation parser reads them

  const state = { text: "", hits: new Map(), citations: new Map(), controller: null };

  // -- small helpers -------------------------------------------------------------------------------

  /** An element with properties (or attributes, for names like aria-*) and text or element children. */
  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(props)) {
      if (name === "dataset") Object.assign(node.dataset, value);
      else if (name in node) node[name] = value;
      else node.setAttribute(name, value);
    }
    node.append(...children); // strings become text nodes
    return node;
  }

  const storage = {
    get(name) {
      try { return localStorage.getItem(name) || ""; } catch { return ""; }
    },
    set(name, value) {
      try { value ? localStorage.setItem(name, value) : localStorage.removeItem(name); } catch { /* storage disabled */ }
    },
  };

  function showError(message) {
    const box = $("error");
    box.textContent = message;
    box.hidden = false;
  }

  function clearError() {
    $("error").hidden = true;
    $("error").textContent = "";
  }

  // -- the API -------------------------------------------------------------------------------------

  function headers(extra = {}) {
    const key = $("api-key").value.trim();
    return key ? { ...extra, Authorization: `Bearer ${key}` } : { ...extra };
  }

  /** The server's {"error": {"type", "message"}} as an Error, or the status line if the body is not that. */
  async function failure(response) {
    let type = `http_${response.status}`;
    let message = response.statusText || "request failed";
    try {
      const body = await response.json();
      if (body && body.error) {
        type = body.error.type || type;
        message = body.error.message || message;
      }
    } catch { /* not JSON: keep the status line */ }
    return new Error(`${message} (${type}, HTTP ${response.status})`);
  }

  async function api(path, options = {}) {
    const response = await fetch(path, { ...options, headers: headers(options.headers) });
    if (!response.ok) throw await failure(response);
    return response;
  }

  const collectionPath = () => `/v1/collections/${encodeURIComponent($("collection").value)}`;

  /** Server-Sent Events from a fetch body: yields {event, data} with data parsed as JSON. */
  async function* events(response) {
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value.replace(/\r/g, ""); // data lines are one-line JSON, so a bare \r is only framing
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let event = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) event = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        }
        if (data.length) yield { event, data: JSON.parse(data.join("\n")) };
      }
    }
  }

  // -- collections ---------------------------------------------------------------------------------

  async function loadCollections() {
    const select = $("collection");
    const wanted = select.value || storage.get(STORED_COLLECTION) || "default";
    const { collections } = await (await api("/v1/collections")).json();
    select.replaceChildren(...collections.map((c) =>
      el("option", { value: c.name }, `${c.name} (${c.documents} documents)`)));
    if (collections.some((c) => c.name === wanted)) select.value = wanted;
    if (!collections.length) showError("There is no collection this key may read.");
  }

  // -- filters -------------------------------------------------------------------------------------

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

  // -- sources, answer, citations ------------------------------------------------------------------

  /** `source § section (p. N)`: the citation's label, or the hit's metadata before citations arrive. */
  function label(n) {
    const hit = state.hits.get(n);
    const cited = state.citations.get(n);
    const meta = (hit && hit.metadata) || {};
    const source = (cited && cited.source) || meta.source || (hit && hit.doc_id) || `source ${n}`;
    const section = (cited && cited.section) || meta.section || "";
    let text = section ? `${source} § ${section}` : source;
    if (meta.page !== null && meta.page !== undefined && meta.page !== "") text += ` (p. ${meta.page})`;
    return text;
  }

  function renderSources() {
    const list = $("sources");
    list.replaceChildren(...[...state.hits.values()].map((hit) => {
      const snippet = hit.text.length > 180 ? `${hit.text.slice(0, 180)}…` : hit.text;
      return el("li", { className: state.citations.has(hit.n) ? "cited" : "" },
        el("button", { type: "button", className: "source", dataset: { n: hit.n } },
          el("span", { className: "badge" }, String(hit.n)),
          el("span", { className: "source-label" }, label(hit.n)),
          el("span", { className: "score" }, `score ${Number(hit.score).toFixed(2)}`)),
        el("p", { className: "snippet" }, snippet));
    }));
    $("sources-section").hidden = state.hits.size === 0;
  }

  function citeButton(n) {
    return el("button", {
      type: "button", className: "cite", dataset: { n }, "aria-label": `Source ${n}: ${label(n)}`, title: label(n),
    }, String(n));
  }

  /** The answer so far as text nodes, with each [n] marker a button (re-rendered as deltas arrive,
   * since a marker may be split across deltas). */
  function renderAnswer() {
    const parts = [];
    let last = 0;
    for (const match of state.text.matchAll(MARKER)) {
      parts.push(state.text.slice(last, match.index));
      const group = el("span", { className: "cite-group" }, "[");
      match[1].split(",").map((s) => Number(s.trim())).forEach((n, i) => {
        if (i) group.append(", ");
        group.append(state.hits.has(n)
          ? citeButton(n)
          : el("span", { className: "cite-invalid", title: "no retrieved source has this number" }, String(n)));
      });
      group.append("]");
      parts.push(group);
      last = match.index + match[0].length;
    }
    parts.push(state.text.slice(last));
    $("answer").replaceChildren(...parts);
  }

  function showChunk(n) {
    const hit = state.hits.get(n);
    if (!hit) return;
    $("chunk-label").textContent = `[${n}] ${label(n)}`;
    $("chunk-text").textContent = hit.text;
    $("chunk-ids").textContent = `document ${hit.doc_id} · chunk ${hit.chunk_id} · score ${Number(hit.score).toFixed(3)}`;
    for (const node of document.querySelectorAll("[data-n]")) {
      node.classList.toggle("active", Number(node.dataset.n) === n);
    }
    $("chunk-panel").focus();
  }

  function resetAnswer() {
    state.text = "";
    state.hits = new Map();
    state.citations = new Map();
    renderSources();
    $("answer").replaceChildren();
    $("answer-meta").textContent = "";
    $("chunk-label").textContent = "Click a citation marker or a source to see its text.";
    $("chunk-text").textContent = "";
    $("chunk-ids").textContent = "";
  }

  function handle(event, data) {
    switch (event) {
      case "sources":
        state.hits = new Map(data.hits.map((hit) => [hit.n, hit]));
        renderSources();
        break;
      case "delta":
        state.text += data.text;
        renderAnswer();
        break;
      case "citations":
        state.citations = new Map(data.citations.map((c) => [c.n, c]));
        renderSources();
        renderAnswer();
        break;
      case "done": {
        const parts = [data.model];
        if (data.usage && data.usage.total_tokens) parts.push(`${data.usage.total_tokens} tokens`);
        if (data.warnings && data.warnings.length) parts.push(`warnings: ${data.warnings.join("; ")}`);
        $("answer-meta").textContent = parts.filter(Boolean).join(" · ");
        break;
      }
      case "error":
        showError(`${data.message} (${data.type})`);
        break;
      default: // unknown events are ignored, so the server may add some
    }
  }

  function setBusy(busy) {
    $("ask").disabled = busy;
    $("stop").hidden = !busy;
    $("answer").setAttribute("aria-busy", String(busy));
  }

  async function ask(event) {
    event.preventDefault();
    clearError();
    const question = $("question").value.trim();
    if (!question) return;
    if (!$("collection").value) {
      showError("Pick a collection first.");
      return;
    }
    let filters;
    try {
      filters = parseFilters($("filters").value);
    } catch (err) {
      showError(err.message);
      return;
    }
    resetAnswer();
    state.controller = new AbortController();
    setBusy(true);
    try {
      const response = await api(`${collectionPath()}/ask`, {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
        body: JSON.stringify({ question, filters, stream: true }),
        signal: state.controller.signal,
      });
      for await (const { event: kind, data } of events(response)) handle(kind, data);
    } catch (err) {
      if (err.name !== "AbortError") showError(err.message);
    } finally {
      state.controller = null;
      setBusy(false);
    }
  }

  // -- upload --------------------------------------------------------------------------------------

  async function waitForJob(job, out) {
    while (job.status === "queued" || job.status === "running") {
      out.replaceChildren(el("p", { className: "meta" },
        `Ingesting in the background: ${job.files_done} of ${job.files_total} files (${job.status})…`));
      await new Promise((resolve) => setTimeout(resolve, 1000));
      job = await (await api(`/v1/jobs/${encodeURIComponent(job.id)}`)).json();
    }
    if (job.status === "failed") {
      throw new Error(job.error ? `${job.error.message} (${job.error.type})` : "The upload job failed.");
    }
    return job.report;
  }

  function renderReport(report, out) {
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
    out.replaceChildren(...nodes);
  }

  async function upload(event) {
    event.preventDefault();
    clearError();
    const files = [...$("files").files];
    if (!files.length || !$("collection").value) return;
    const form = new FormData();
    for (const file of files) form.append("files", file, file.name);
    const out = $("upload-report");
    out.replaceChildren(el("p", { className: "meta" }, `Uploading ${files.length} file(s)…`));
    $("upload").disabled = true;
    try {
      const response = await api(`${collectionPath()}/documents`, { method: "POST", body: form });
      const body = await response.json();
      renderReport(response.status === 202 ? await waitForJob(body, out) : body, out);
      $("files").value = "";
      await loadCollections(); // the document counts moved
    } catch (err) {
      out.replaceChildren();
      showError(err.message);
    } finally {
      $("upload").disabled = false;
    }
  }

  // -- wiring --------------------------------------------------------------------------------------

  function init() {
    $("api-key").value = storage.get(STORED_KEY);
    $("api-key").addEventListener("change", () => {
      storage.set(STORED_KEY, $("api-key").value.trim());
      clearError();
      loadCollections().catch((err) => showError(err.message));
    });
    $("collection").addEventListener("change", () => storage.set(STORED_COLLECTION, $("collection").value));
    $("refresh").addEventListener("click", () => {
      clearError();
      loadCollections().catch((err) => showError(err.message));
    });
    $("ask-form").addEventListener("submit", ask);
    $("question").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        $("ask-form").requestSubmit();
      }
    });
    $("stop").addEventListener("click", () => state.controller && state.controller.abort());
    $("upload-form").addEventListener("submit", upload);
    for (const container of [$("answer"), $("sources")]) {
      container.addEventListener("click", (event) => {
        const target = event.target.closest("[data-n]");
        if (target) showChunk(Number(target.dataset.n));
      });
    }
    loadCollections().catch((err) => showError(err.message));
  }

  init();
})();
