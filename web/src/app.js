// The chat page: join a room, read it live, talk, see who types; reconnect
// and resume (also across a reload) without gaps or duplicates.
//
// Everything peers send is put into the page with textContent, never as
// markup: a message "<img src=x onerror=alert(1)>" is shown as those
// characters. (The server's Content-Security-Policy is a second fence.)

import { Code, GrpcError, serverStream, unary } from "./grpc-web.js";
import {
  TYPING_START, TYPING_STOP, USER_JOINED, USER_LEFT,
  sendMessageRequest, setTypingRequest, subscribeEvent, subscribeRequest,
} from "./proto.js";

const BASE = `${location.origin}`;
const SERVICE = "chat.ChatService";
const STORE = "grpc-chat";
/** Lines kept for a reload to show again. */
const KEEP = 300;
/** A typing start is repeated this often while typing, to keep it on. */
const TYPING_REFRESH_MS = 3000;

const $ = (id) => document.getElementById(id);

// What survives a reload (sessionStorage: per tab).
let saved = load();
// The live connection.
let token = null;
let abort = null;
let retryTimer = null;
let attempt = 0;
let typingSentAt = 0;
const typers = new Set();

function load() {
  try {
    return JSON.parse(sessionStorage.getItem(STORE)) ?? null;
  } catch {
    return null;
  }
}

function persist() {
  if (saved) sessionStorage.setItem(STORE, JSON.stringify(saved));
}

function setStatus(text, kind = "") {
  const status = $("status");
  status.textContent = text;
  status.className = kind;
}

function time(seconds) {
  const d = seconds ? new Date(seconds * 1000) : new Date();
  return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hour12: false });
}

/** Appends one line to the log (and, unless replaying, to the saved transcript). */
function show(line, { replaying = false } = {}) {
  const li = document.createElement("li");
  li.className = line.kind + (line.mine ? " mine" : "");
  if (line.id) li.dataset.id = String(line.id);
  const when = document.createElement("span");
  when.className = "time";
  when.textContent = time(line.ts);
  li.append(when);
  if (line.who !== undefined) {
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = `[${line.mine ? "you" : line.who}]`;
    li.append(who);
  }
  const text = document.createElement("span");
  text.className = "text";
  text.textContent = line.text;
  li.append(text);
  const log = $("log");
  const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
  log.append(li);
  if (atBottom) log.scrollTop = log.scrollHeight;
  if (!replaying) {
    saved.transcript.push(line);
    if (saved.transcript.length > KEEP) saved.transcript.splice(0, saved.transcript.length - KEEP);
    persist();
  }
}

function notice(text) {
  show({ kind: "system", text: `-- ${text} --` });
}

function renderTyping() {
  const names = [...typers].sort();
  $("typing").textContent =
    names.length === 0 ? "" :
    names.length === 1 ? `${names[0]} is typing…` :
    `${names.join(", ")} are typing…`;
}

function handle(event) {
  switch (event.kind) {
    case "session":
      token = event.token;
      attempt = 0;
      // From now on, ALREADY_EXISTS means our own previous connection is
      // still leaving, not someone else holding the name.
      saved.joined = true;
      setStatus("connected", "connected");
      break;
    case "chatMessage": {
      // After a resume the server sends only what we missed; this check
      // also keeps a duplicate out if it ever did not.
      if (event.id && saved.lastId !== null && event.id <= saved.lastId) return;
      if (event.id) saved.lastId = event.id;
      typers.delete(event.username);
      renderTyping();
      show({ kind: "message", id: event.id, ts: event.timestamp, who: event.username,
             mine: event.username === saved.name, text: event.message });
      break;
    }
    case "typing":
      if (event.type === TYPING_START) typers.add(event.username);
      else typers.delete(event.username);
      renderTyping();
      break;
    case "user":
      if (event.type === USER_LEFT) {
        typers.delete(event.username);
        renderTyping();
      }
      if (event.username === saved.name) return;
      show({ kind: "presence", ts: event.timestamp,
             text: `* ${event.username} ${event.type === USER_JOINED ? "joined" : "left"}` });
      break;
    case "system":
      if (event.epoch) {
        if (saved.epoch && saved.epoch !== event.epoch) {
          // History was lost on the server: its ids start over and are not
          // comparable with ours.
          saved.lastId = null;
        }
        saved.epoch = event.epoch;
      }
      if (event.endOfHistory && saved.lastId === null) saved.lastId = 0;
      show({ kind: "system", ts: event.timestamp, text: `-- ${event.message} --` });
      break;
    default:
      // An event kind newer than this page: ignore it.
      break;
  }
  persist();
}

/** Subscribes and reads until the call ends; schedules a reconnect. */
async function connect() {
  clearTimeout(retryTimer);
  abort = new AbortController();
  const controller = abort;
  setStatus(attempt ? "reconnecting…" : "connecting…", attempt ? "reconnecting" : "");
  const request = subscribeRequest({
    username: saved.name,
    room: saved.room,
    // Resume from the last message we showed; unset on a first join.
    lastId: saved.lastId ?? undefined,
    epoch: saved.epoch ?? "",
  });
  try {
    for await (const bytes of serverStream(BASE, `${SERVICE}/Subscribe`, request, { signal: controller.signal, metadata: metadata() })) {
      handle(subscribeEvent(bytes));
    }
    lost(new GrpcError(Code.UNAVAILABLE, "the server ended the stream"), controller);
  } catch (error) {
    lost(error, controller);
  }
}

function lost(error, controller) {
  token = null;
  typers.clear();
  renderTyping();
  if (controller.signal.aborted || abort !== controller) return;
  const code = error instanceof GrpcError ? error.code : Code.UNKNOWN;
  // A refused join (bad name, name taken) on the first try goes back to the
  // form; once joined, a name still held by our previous connection (a
  // reload racing its own departure) is worth retrying.
  const refused = code === Code.INVALID_ARGUMENT || code === Code.PERMISSION_DENIED ||
                  code === Code.UNAUTHENTICATED || (code === Code.ALREADY_EXISTS && !saved.joined);
  if (refused) {
    leave(error.grpcMessage || error.message);
    return;
  }
  const delay = Math.min(10000, 250 * 2 ** attempt);
  attempt += 1;
  setStatus(`disconnected (${error.message}); retrying in ${Math.round(delay / 100) / 10} s`, "reconnecting");
  retryTimer = setTimeout(connect, delay);
}

/** Request metadata: a bearer token, for servers that require one. */
function metadata() {
  return saved?.auth ? { authorization: `Bearer ${saved.auth}` } : {};
}

async function call(method, request) {
  return unary(BASE, `${SERVICE}/${method}`, request, { metadata: metadata() });
}

async function send(text) {
  if (!token) {
    notice("not connected: message not sent");
    return false;
  }
  try {
    await call("SendMessage", sendMessageRequest(token, text));
    typingSentAt = 0;
    return true;
  } catch (error) {
    notice(error.grpcMessage || error.message);
    return false;
  }
}

function typing(active) {
  if (!token) return;
  const now = Date.now();
  if (active && now - typingSentAt < TYPING_REFRESH_MS) return;
  if (!active && typingSentAt === 0) return;
  typingSentAt = active ? now : 0;
  call("SetTyping", setTypingRequest(token, active ? TYPING_START : TYPING_STOP)).catch(() => {});
}

function enter(fresh) {
  $("join").hidden = true;
  $("chat").hidden = false;
  $("where").textContent = `${saved.name} in ${saved.room || "lobby"}`;
  $("log").replaceChildren();
  if (!fresh) for (const line of saved.transcript) show(line, { replaying: true });
  $("text").focus();
  attempt = 0;
  connect();
}

function leave(why) {
  abort?.abort();
  abort = null;
  clearTimeout(retryTimer);
  token = null;
  sessionStorage.removeItem(STORE);
  const name = saved?.name ?? "";
  const room = saved?.room ?? "";
  saved = null;
  $("chat").hidden = true;
  $("join").hidden = false;
  $("name").value = name;
  $("room").value = room;
  $("join-error").textContent = why ?? "";
  $("where").textContent = "";
  setStatus("not connected");
}

$("join").addEventListener("submit", (e) => {
  e.preventDefault();
  $("join-error").textContent = "";
  saved = {
    name: $("name").value.trim(),
    room: $("room").value.trim(),
    // Kept for this tab only (sessionStorage), like the rest.
    auth: $("token").value.trim(),
    lastId: null,
    epoch: null,
    joined: false,
    transcript: [],
  };
  persist();
  enter(true);
});

$("send").addEventListener("submit", async (e) => {
  e.preventDefault();
  const input = $("text");
  const text = input.value;
  if (!text.trim()) return;
  if (await send(text)) input.value = "";
});

$("text").addEventListener("input", () => typing($("text").value.trim() !== ""));
$("leave").addEventListener("click", () => leave());

// The page is going away: end the call now rather than when the server
// notices, so a reload finds the name free sooner.
window.addEventListener("pagehide", () => abort?.abort());

if (saved?.name) {
  // A reload: show what we had, and resume after it.
  enter(false);
}
