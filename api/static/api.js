// The REST API as the page uses it: JSON requests, Server-Sent Events, uploads with progress, and errors
// as ApiError values whose text says what to do. No framework, no build step.

/** A failed request: `status` (0 when the server was not reached), the server's error `type`, its message. */
export class ApiError extends Error {
  constructor(status, type, message) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.type = type;
  }
}

let apiKey = "";

/** The key sent with every request from now on ("" for none). */
export function setApiKey(key) {
  apiKey = key.trim();
}

function authorization(headers = {}) {
  return apiKey ? { ...headers, Authorization: `Bearer ${apiKey}` } : { ...headers };
}

/** The server's {"error": {"type", "message"}} as an ApiError, or the status line if the body is not that. */
function failure(status, statusText, body) {
  let type = `http_${status}`;
  let message = statusText || "request failed";
  if (body && body.error) {
    type = body.error.type || type;
    message = body.error.message || message;
  }
  return new ApiError(status, type, message);
}

function unreachable(err) {
  return new ApiError(0, "network", `The server did not answer (${err.message}). Is rag serve still running?`);
}

/** fetch() with the API key; resolves to the Response when it is a 2xx, else throws an ApiError. */
export async function request(path, options = {}) {
  let response;
  try {
    response = await fetch(path, { ...options, headers: authorization(options.headers) });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw unreachable(err);
  }
  if (!response.ok) {
    let body = null;
    try { body = await response.json(); } catch { /* not JSON: keep the status line */ }
    throw failure(response.status, response.statusText, body);
  }
  return response;
}

export async function getJson(path, options) {
  return (await request(path, options)).json();
}

export function postJson(path, body, options = {}) {
  return request(path, {
    ...options, method: "POST", headers: { "Content-Type": "application/json", ...options.headers },
    body: JSON.stringify(body),
  });
}

/** `/v1/collections/NAME` plus `rest`; a document id keeps its slashes (the route takes a path). */
export function collectionPath(name, rest = "") {
  return `/v1/collections/${encodeURIComponent(name)}${rest}`;
}

export function documentPath(name, docId) {
  return collectionPath(name, `/documents/${docId.split("/").map(encodeURIComponent).join("/")}`);
}

/** Server-Sent Events from a fetch Response: yields {event, data} with data parsed as JSON. */
export async function* events(response) {
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

/**
 * POST a FormData with upload progress (fetch has none): `onProgress(sent, total)` as bytes leave.
 * Resolves to {status, body}; a non-2xx answer rejects with an ApiError.
 */
export function upload(path, form, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    for (const [name, value] of Object.entries(authorization())) xhr.setRequestHeader(name, value);
    xhr.responseType = "json";
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) onProgress(event.loaded, event.total);
    });
    xhr.addEventListener("load", () => {
      if (xhr.status >= 200 && xhr.status < 300) resolve({ status: xhr.status, body: xhr.response });
      else reject(failure(xhr.status, xhr.statusText, xhr.response));
    });
    // The server answers 413 as soon as a body passes its cap and closes the connection; a browser still
    // sending may then see only a broken connection.
    xhr.addEventListener("error", () => reject(new ApiError(0, "network",
      "The upload was cut off: the server closed the connection. The files may be larger than it accepts "
      + "(api.max_upload_mb), or it stopped.")));
    xhr.send(form);
  });
}
