// The chat page: join a room, read it live, talk, see who types and who is
// there; switch rooms; reconnect and resume (also across a reload and when
// coming back to a room) without gaps or duplicates. Typed commands are the
// terminal client's (commands.js).
//
// Everything peers send is put into the page with textContent, never as
// markup: a message "<img src=x onerror=alert(1)>" is shown as those
// characters. (The server's Content-Security-Policy is a second fence.)

import { Code, GrpcError, serverStream, unary } from "./grpc-web.js";
import {
  TYPING_START, TYPING_STOP, USER_JOINED, USER_LEFT,
  roomsRequest, roomsResponse, sendMessageRequest, setTypingRequest, subscribeEvent, subscribeRequest,
  whoRequest, whoResponse,
} from "./proto.js";
import {
  HELP, actionOf, charCount, memberEntries, parseInput, roomsText, whoText, withoutEpochs,
} from "./commands.js";

const BASE = `${location.origin}`;
const SERVICE = "chat.ChatService";
const STORE = "grpc-chat";
/** The server's room for an empty name (src/chat/mod.rs DEFAULT_ROOM). */
const DEFAULT_ROOM = "lobby";
/** Lines kept per room for a reload, or a return to the room, to show again. */
const KEEP = 300;
/** A typing start is repeated this often while typing, to keep it on. */
const TYPING_REFRESH_MS = 3000;
/** The member and room lists are asked for again this often… */
const SIDE_REFRESH_MS = 15000;
/** …and this long after a join or leave (a burst of them is one call). */
const SIDE_DEBOUNCE_MS = 300;
/**
 * Refusals of a join, as opposed to trouble on the way: a /join refused
 * with one of these goes back to the room we came from.
 */
const REFUSALS = new Set([
  Code.INVALID_ARGUMENT, Code.ALREADY_EXISTS, Code.PERMISSION_DENIED, Code.UNAUTHENTICATED,
  Code.RESOURCE_EXHAUSTED, Code.NOT_FOUND, Code.FAILED_PRECONDITION,
]);

const $ = (id) => document.getElementById(id);

// What survives a reload (sessionStorage: per tab):
//   {name, auth, room, joined, switching, rooms: {key: {lastId, epoch, transcript}}}
// with one entry per room visited, so coming back to a room resumes it;
// `switching` is {from, to} while a /join waits for its session (a reload
// meanwhile still goes back if the join is refused).
let saved = load();
// The live connection.
let token = null;
let abort = null;
let retryTimer = null;
let attempt = 0;
let typingSentAt = 0;
const typers = new Set();
/** The longest message, from the server (SessionStarted.max_message_chars). */
let maxChars = null;
let sideTimer = null;
let sideSoon = null;
/**
 * Whether the log follows new lines: true until the reader scrolls up, and
 * again once they scroll back to the bottom.
 */
let following = true;

function load() {
  try {
    const data = JSON.parse(sessionStorage.getItem(STORE));
    // A transcript saved by an older page (no per-room state) is dropped.
    return data?.rooms ? data : null;
  } catch {
    return null;
  }
}

function persist() {
  if (saved) sessionStorage.setItem(STORE, JSON.stringify(saved));
}

/** Room names are case-insensitive on the server; "" is the default room. */
function roomKey(room) {
  return (room || DEFAULT_ROOM).toLowerCase();
}

function roomName() {
  return saved.room || DEFAULT_ROOM;
}

/** The current room's saved state: resume point and transcript. */
function here() {
  saved.rooms[roomKey(saved.room)] ??= { lastId: null, epoch: null, transcript: [] };
  return saved.rooms[roomKey(saved.room)];
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

function span(className, text) {
  const s = document.createElement("span");
  s.className = className;
  s.textContent = text;
  return s;
}

/** Appends one line to the log (and, unless replaying, to the room's saved transcript). */
function show(line, { replaying = false } = {}) {
  // An answer that arrives after Leave has nowhere to go.
  if (!saved) return;
  const li = document.createElement("li");
  const action = line.kind === "message" ? actionOf(line.text) : null;
  li.className = (action === null ? line.kind : "action") + (line.mine ? " mine" : "");
  if (line.id) li.dataset.id = String(line.id);
  li.append(span("time", time(line.ts)));
  if (action !== null) {
    // proto/chat.proto's convention: "/me waves" from alice is `* alice waves`.
    li.append(span("who", `* ${line.who}`), span("text", action));
  } else {
    if (line.who !== undefined) li.append(span("who", `[${line.mine ? "you" : line.who}]`));
    li.append(span("text", line.text));
  }
  const log = $("log");
  log.append(li);
  if (following) log.scrollTop = log.scrollHeight;
  if (!replaying) {
    const { transcript } = here();
    transcript.push(line);
    if (transcript.length > KEEP) transcript.splice(0, transcript.length - KEEP);
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

/** Holds the input to the server's limit, counted as the server counts. */
function limitInput() {
  if (!maxChars) return;
  const input = $("text");
  // maxlength counts UTF-16 units, the server characters: allow one more
  // unit per character outside the BMP already typed.
  input.maxLength = maxChars + (input.value.length - charCount(input.value));
}

function handle(event) {
  const room = here();
  switch (event.kind) {
    case "session":
      token = event.token;
      attempt = 0;
      // From now on, ALREADY_EXISTS means our own previous connection is
      // still leaving, not someone else holding the name.
      saved.joined = true;
      saved.switching = null;
      if (event.username) saved.name = event.username;
      if (event.room && roomKey(event.room) === roomKey(saved.room)) saved.room = event.room;
      if (event.maxMessageChars) maxChars = event.maxMessageChars;
      limitInput();
      showWhere();
      setStatus("connected", "connected");
      refreshSide();
      break;
    case "chatMessage": {
      // After a resume the server sends only what we missed; this check
      // also keeps a duplicate out if it ever did not.
      if (event.id && room.lastId !== null && event.id <= room.lastId) return;
      if (event.id) room.lastId = event.id;
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
      refreshSoon();
      if (event.username === saved.name) return;
      show({ kind: "presence", ts: event.timestamp,
             text: `* ${event.username} ${event.type === USER_JOINED ? "joined" : "left"}` });
      break;
    case "system":
      if (event.epoch) {
        if (room.epoch && room.epoch !== event.epoch) {
          // History was lost on the server: its ids start over and are not
          // comparable with ours.
          room.lastId = null;
        }
        room.epoch = event.epoch;
      }
      if (event.endOfHistory && room.lastId === null) room.lastId = 0;
      // The epoch is an internal id: kept above, not shown.
      show({ kind: "system", ts: event.timestamp, text: `-- ${withoutEpochs(event.message)} --` });
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
  const { lastId, epoch } = here();
  const request = subscribeRequest({
    username: saved.name,
    room: saved.room,
    // Resume from the last message we showed in this room; unset on a
    // first join.
    lastId: lastId ?? undefined,
    epoch: epoch ?? "",
  });
  try {
    for await (const bytes of serverStream(BASE, `${SERVICE}/Subscribe`, request, { signal: controller.signal, metadata: metadata() })) {
      // A call we ended (room switch, leave) says nothing more.
      if (abort !== controller) return;
      handle(subscribeEvent(bytes));
    }
    lost(new GrpcError(Code.UNAVAILABLE, "the server ended the stream"), controller);
  } catch (error) {
    lost(error, controller);
  }
}

function lost(error, controller) {
  if (controller.signal.aborted || abort !== controller) return;
  token = null;
  typers.clear();
  renderTyping();
  const code = error instanceof GrpcError ? error.code : Code.UNKNOWN;
  const why = error.grpcMessage || error.message;
  if (saved.switching && REFUSALS.has(code)) {
    // A /join refused (the name is taken there, the room is full…): back
    // to the room we came from, which resumes where we left it.
    const { from, to } = saved.switching;
    saved.switching = null;
    saved.room = from;
    persist();
    showRoom();
    notice(`cannot join ${to}: ${why}`);
    attempt = 0;
    connect();
    return;
  }
  // A refused join (bad name, name taken) on the first try goes back to the
  // form; once joined, a name still held by our previous connection (a
  // reload racing its own departure) is worth retrying.
  const refused = code === Code.INVALID_ARGUMENT || code === Code.PERMISSION_DENIED ||
                  code === Code.UNAUTHENTICATED || (code === Code.ALREADY_EXISTS && !saved.joined);
  if (refused) {
    leave(why);
    return;
  }
  const delay = Math.min(10000, 250 * 2 ** attempt);
  attempt += 1;
  setStatus(`disconnected (${error.message}); retrying in ${Math.round(delay / 100) / 10} s`, "reconnecting");
  retryTimer = setTimeout(connect, delay);
}

/** Ends the current call, if any, and forgets what belonged to it. */
function stop() {
  abort?.abort();
  abort = null;
  clearTimeout(retryTimer);
  token = null;
  typingSentAt = 0;
  typers.clear();
  renderTyping();
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

// --- the member and room lists ----------------------------------------------

function refreshSoon() {
  clearTimeout(sideSoon);
  sideSoon = setTimeout(refreshSide, SIDE_DEBOUNCE_MS);
}

/** Asks for the room's members and the room list, and shows them. */
async function refreshSide() {
  clearTimeout(sideSoon);
  if (!saved || !token) return;
  const room = saved.room;
  const [who, rooms] = await Promise.allSettled([
    call("Who", whoRequest(room)).then(whoResponse),
    call("Rooms", roomsRequest()).then(roomsResponse),
  ]);
  // Switched or left meanwhile: the answer is about another room.
  if (!saved || saved.room !== room) return;
  if (who.status === "fulfilled") renderMembers(who.value);
  if (rooms.status === "fulfilled") renderRooms(rooms.value);
}

function renderMembers(who) {
  const { entries, more } = memberEntries(who, saved.name);
  const items = entries.map(({ name, you }) => {
    const li = document.createElement("li");
    li.textContent = name;
    if (you) {
      li.className = "you";
      li.append(span("mark", " (you)"));
    }
    return li;
  });
  if (more) {
    const li = document.createElement("li");
    li.className = "listeners";
    li.textContent = more;
    items.push(li);
  }
  $("members").replaceChildren(...items);
  $("member-count").textContent = String(who.users.length + who.listeners);
}

function renderRooms(rooms) {
  $("rooms").replaceChildren(...rooms.map(({ name, members }) => {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "room";
    button.append(span("name", name), span("count", String(members)));
    if (roomKey(name) === roomKey(saved.room)) {
      button.setAttribute("aria-current", "true");
    }
    button.addEventListener("click", () => switchRoom(name));
    li.append(button);
    return li;
  }));
}

// --- rooms --------------------------------------------------------------------

function showWhere() {
  $("where").textContent = `${saved.name} in ${roomName()}`;
  $("side-room").textContent = roomName();
}

/** Shows the current room: its name and its saved transcript. */
function showRoom() {
  showWhere();
  $("members").replaceChildren();
  $("member-count").textContent = "";
  $("log").replaceChildren();
  following = true;
  for (const line of here().transcript) show(line, { replaying: true });
}

/** /join ROOM: ends this room's call and subscribes to ROOM, resuming it if visited. */
function switchRoom(room) {
  if (roomKey(room) === roomKey(saved.room)) {
    notice(`already in ${roomName()}`);
    return;
  }
  saved.switching = { from: saved.switching?.from ?? saved.room, to: room };
  stop();
  saved.room = room;
  persist();
  showRoom();
  attempt = 0;
  connect();
}

function enter(fresh) {
  $("join").hidden = true;
  $("chat").hidden = false;
  if (fresh) saved.rooms = {};
  showRoom();
  $("text").focus();
  attempt = 0;
  clearInterval(sideTimer);
  sideTimer = setInterval(refreshSide, SIDE_REFRESH_MS);
  connect();
}

function leave(why) {
  stop();
  clearInterval(sideTimer);
  clearTimeout(sideSoon);
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

// --- commands -------------------------------------------------------------------

async function who() {
  try {
    const room = saved.room;
    const answer = whoResponse(await call("Who", whoRequest(room)));
    if (saved?.room !== room) return;
    renderMembers(answer);
    notice(whoText(answer));
  } catch (error) {
    notice(`/who failed: ${error.grpcMessage || error.message}`);
  }
}

async function rooms() {
  try {
    const answer = roomsResponse(await call("Rooms", roomsRequest()));
    if (!saved) return;
    renderRooms(answer);
    notice(roomsText(answer));
  } catch (error) {
    notice(`/rooms failed: ${error.grpcMessage || error.message}`);
  }
}

/** Runs one line of input; true when the input is done with (to be cleared). */
async function run(line) {
  const command = parseInput(line);
  switch (command.kind) {
    case "nothing":
      return false;
    case "say": {
      const n = charCount(command.text);
      if (maxChars && n > maxChars) {
        notice(`too long: ${n} characters; the server takes at most ${maxChars}`);
        return false;
      }
      return send(command.text);
    }
    case "join":
      switchRoom(command.room);
      return true;
    case "part":
      // As the terminal's /leave: back to lobby; from lobby, nowhere to go.
      if (roomKey(saved.room) === roomKey("lobby")) notice("you are in lobby; /quit leaves the chat");
      else switchRoom("lobby");
      return true;
    case "leave":
      leave();
      return true;
    case "rooms":
      rooms();
      return true;
    case "who":
      who();
      return true;
    case "help":
      for (const text of HELP) show({ kind: "system", text });
      return true;
    case "clear":
      $("log").replaceChildren();
      here().transcript = [];
      persist();
      return true;
    default:
      // Not sent: a typo must not reach the room.
      notice(command.why);
      return false;
  }
}

/** Whether the input is a command being typed (not worth a typing indicator). */
function typingCommand(value) {
  return value.startsWith("/") && !value.startsWith("//") && !value.startsWith("/me ");
}

$("join").addEventListener("submit", (e) => {
  e.preventDefault();
  $("join-error").textContent = "";
  saved = {
    name: $("name").value.trim(),
    room: $("room").value.trim(),
    // Kept for this tab only (sessionStorage), like the rest.
    auth: $("token").value.trim(),
    joined: false,
    switching: null,
    rooms: {},
  };
  persist();
  enter(true);
});

$("send").addEventListener("submit", async (e) => {
  e.preventDefault();
  const input = $("text");
  if (await run(input.value)) {
    input.value = "";
    limitInput();
  }
});

$("log").addEventListener("scroll", () => {
  const log = $("log");
  following = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
});
// A narrower window wraps more lines: still at the bottom if we were.
new ResizeObserver(() => {
  if (following) $("log").scrollTop = $("log").scrollHeight;
}).observe($("log"));

$("text").addEventListener("input", () => {
  const value = $("text").value;
  limitInput();
  typing(value.trim() !== "" && !typingCommand(value));
});
$("leave").addEventListener("click", () => leave());

// The page is going away: end the call now rather than when the server
// notices, so a reload finds the name free sooner.
window.addEventListener("pagehide", () => abort?.abort());

if (saved?.name) {
  // A reload: show what we had, and resume after it.
  enter(false);
}
