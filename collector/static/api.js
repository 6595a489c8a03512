// Talking to the collector: JSON reads with the API token, and the alert stream (server-sent
// events read through fetch, so the token travels as a header, which EventSource cannot send).

const TOKEN_KEY = "gradwatch.token";

export function getToken() {
  try {
    return localStorage.getItem(TOKEN_KEY) || "";
  } catch {
    return "";
  }
}

export function setToken(token) {
  try {
    if (token) localStorage.setItem(TOKEN_KEY, token);
    else localStorage.removeItem(TOKEN_KEY);
  } catch {
    // storage refused (private mode): the token lasts until the page closes
  }
  memoryToken = token;
  tokenWaiters.splice(0).forEach((resolve) => resolve());
}

let memoryToken = null;
const tokenWaiters = [];
let unauthorized = () => {};

/** Called with no argument whenever the collector answers 401. */
export function onUnauthorized(callback) {
  unauthorized = callback;
}

function headers(extra) {
  const out = Object.assign({}, extra);
  const token = memoryToken !== null ? memoryToken : getToken();
  if (token) out.Authorization = "Bearer " + token;
  return out;
}

export class HttpError extends Error {
  constructor(status, detail) {
    super(`HTTP ${status}: ${detail}`);
    this.status = status;
  }
}

/** GET a JSON document; HttpError on an error answer (401 also calls onUnauthorized). */
export async function getJSON(path) {
  const response = await fetch(path, { headers: headers({ Accept: "application/json" }), cache: "no-store" });
  if (!response.ok) {
    if (response.status === 401) unauthorized();
    let detail = response.statusText;
    try {
      detail = (await response.json()).detail || detail;
    } catch {
      // not JSON
    }
    throw new HttpError(response.status, detail);
  }
  return response.json();
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Parses the text of an event stream into messages: {event, data, id, comment}. */
export class EventParser {
  constructor(onMessage) {
    this.onMessage = onMessage;
    this.buffer = "";
    this.reset();
  }

  reset() {
    this.message = { event: "", data: [], id: null, comment: null };
  }

  push(text) {
    this.buffer += text;
    for (;;) {
      const match = /\r\n|\r|\n/.exec(this.buffer);
      if (!match) return;
      if (match[0] === "\r" && match.index === this.buffer.length - 1) return; // \r\n split
      const line = this.buffer.slice(0, match.index);
      this.buffer = this.buffer.slice(match.index + match[0].length);
      this.line(line);
    }
  }

  line(line) {
    const m = this.message;
    if (line === "") {
      if (m.data.length || m.comment !== null || m.id !== null || m.event) {
        this.onMessage({ event: m.event || "message", data: m.data.join("\n"), id: m.id, comment: m.comment });
      }
      this.reset();
      return;
    }
    if (line.startsWith(":")) {
      m.comment = line.slice(1).trim();
      return;
    }
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") m.event = value;
    else if (field === "data") m.data.push(value);
    else if (field === "id") m.id = value;
  }
}

/**
 * Follows /alerts/stream for ever: calls onOpen() once the stream is connected (before any
 * change it sends), onAlert(alert) per change, onState("live" | "down") as the connection
 * comes and goes; reconnects with Last-Event-ID, so nothing is missed or repeated.
 */
export async function followAlerts({ onOpen, onAlert, onState }) {
  let lastId = null;
  let delay = 500;
  for (;;) {
    try {
      const extra = { Accept: "text/event-stream" };
      if (lastId !== null) extra["Last-Event-ID"] = lastId;
      const response = await fetch("/alerts/stream", { headers: headers(extra), cache: "no-store" });
      if (response.status === 401) {
        onState("token");
        unauthorized();
        await new Promise((resolve) => tokenWaiters.push(resolve));
        continue;
      }
      if (!response.ok || !response.body) throw new HttpError(response.status, "alert stream");
      const pending = [];
      const parser = new EventParser((message) => pending.push(message));
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        parser.push(value);
        for (const message of pending.splice(0)) {
          if (message.id !== null) lastId = message.id;
          if (message.comment === "connected") {
            delay = 500;
            onState("live");
            await onOpen();
          } else if (message.event === "alert" && message.data) {
            onAlert(JSON.parse(message.data));
          }
        }
      }
    } catch {
      // the collector went away or the connection broke: reconnect below
    }
    onState("down");
    await sleep(delay);
    delay = Math.min(delay * 2, 10000);
  }
}
