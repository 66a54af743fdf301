// The console's only way to the server: every call carries the key as a bearer token.
// The key lives in sessionStorage (this tab only, gone when it closes), never in a URL.

const KEY = "maas.apiKey";

export function getKey() { return sessionStorage.getItem(KEY); }
export function setKey(key) { sessionStorage.setItem(KEY, key); }
export function clearKey() { sessionStorage.removeItem(KEY); }

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function headers(extra = {}) {
  const key = getKey();
  return key ? { Authorization: `Bearer ${key}`, ...extra } : extra;
}

async function failure(response) {
  let code = "http_" + response.status;
  let message = response.statusText || `HTTP ${response.status}`;
  try {
    const body = await response.json();
    const err = typeof body.error === "object" && body.error ? body.error : body;
    code = err.code || code;
    message = (typeof err.message === "string" && err.message) || (typeof body.error === "string" && body.error) || message;
  } catch { /* not JSON */ }
  if (response.status === 401) window.dispatchEvent(new CustomEvent("maas:unauthenticated"));
  return new ApiError(response.status, code, message);
}

/** JSON in, JSON out; `body` objects are sent as JSON, strings and Blobs as they are. */
export async function api(path, { method = "GET", body, type, raw = false, signal } = {}) {
  const init = { method, headers: headers(), signal };
  if (body !== undefined) {
    if (typeof body === "string" || body instanceof Blob || body instanceof ArrayBuffer) {
      init.body = body;
      init.headers["Content-Type"] = type || "application/octet-stream";
    } else {
      init.body = JSON.stringify(body);
      init.headers["Content-Type"] = "application/json";
    }
  }
  const response = await fetch(path, init);
  if (!response.ok) throw await failure(response);
  if (raw) return response;
  if (response.status === 204) return null;
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

/** A Server-Sent Events stream over fetch (EventSource cannot send a key header).
 *  Calls onEvent({event, data, id}) for each event; resolves when the stream ends. */
export async function sse(path, { method = "GET", body, onEvent, signal } = {}) {
  const init = { method, headers: headers({ Accept: "text/event-stream" }), signal };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(path, init);
  if (!response.ok) throw await failure(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value.replace(/\r\n/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const event = { event: "message", data: "", id: null };
      const data = [];
      for (const line of block.split("\n")) {
        if (!line || line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const val = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "data") data.push(val);
        else if (field === "event") event.event = val;
        else if (field === "id") event.id = val;
      }
      if (!data.length) continue;
      event.data = data.join("\n");
      onEvent(event);
    }
  }
}

/** An upload with progress (fetch has no upload progress): resolves to the JSON answer. */
export function upload(path, file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    for (const [name, value] of Object.entries(headers({ "Content-Type": "application/octet-stream" }))) {
      xhr.setRequestHeader(name, value);
    }
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) onProgress(e.loaded / e.total); };
    xhr.onerror = () => reject(new ApiError(0, "network", "the upload failed (network)"));
    xhr.onload = () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch { /* empty */ }
      if (xhr.status >= 200 && xhr.status < 300) { resolve(body); return; }
      const err = body && typeof body.error === "object" ? body.error : body || {};
      reject(new ApiError(xhr.status, err.code || "http_" + xhr.status,
        (typeof err.message === "string" && err.message) || (body && body.error) || xhr.statusText));
    };
    xhr.send(file);
  });
}

export const enc = encodeURIComponent;
