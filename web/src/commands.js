// What a line typed into the page means, and how the server's texts are
// shown: pure functions, no DOM, so web/test/page-modules.test.mjs can
// table-test them under Node. The commands are the terminal client's
// (src/chat_client/command.rs):
//
//   hello            → a message "hello"
//   /me waves        → a message "/me waves" (shown as `* alice waves`)
//   //etc/hosts      → a message "/etc/hosts" (a doubled slash escapes)
//   /join ROOM       → switch rooms (a leading # is dropped); /j
//   /leave           → back to lobby, as in the terminal (in lobby: says so); /part
//   /quit            → leave the chat: back to the join form (the Leave button)
//   /rooms           → the rooms with members, and how many (Rooms); /list
//   /who             → who is in this room (Who); /names
//   /help, /clear

/** The prefix of a message that is an action (proto/chat.proto's convention). */
export const ACTION_PREFIX = "/me ";

/** The help text, one line each. */
export const HELP = [
  "commands:",
  "  /join ROOM   switch to ROOM; coming back, you see what you missed",
  "  /leave       leave this room for lobby",
  "  /quit        leave the chat (the Leave button)",
  "  /rooms       the rooms with people in them, and how many",
  "  /who         who is in this room",
  "  /me ACTION   say what you do: * NAME ACTION",
  "  /clear       clear the log",
  "  //text       send text that starts with /",
];

/**
 * One line of input → {kind, ...}: say {text}, join {room}, part, leave, rooms,
 * who, help, clear, nothing, invalid {why}.
 */
export function parseInput(line) {
  if (line.trim() === "") return { kind: "nothing" };
  if (line.startsWith("//")) return { kind: "say", text: line.slice(1) };
  if (!line.startsWith("/")) return { kind: "say", text: line };
  const match = /^\/(\S*)\s*([\s\S]*)$/.exec(line);
  const name = match[1].toLowerCase();
  const rest = match[2].trim();
  switch (name) {
    case "me":
      return rest ? { kind: "say", text: `${ACTION_PREFIX}${rest}` } : { kind: "invalid", why: "usage: /me ACTION" };
    case "join":
    case "j": {
      const room = rest.replace(/^#/, "").trim();
      if (!room || /\s/.test(room)) return { kind: "invalid", why: "usage: /join ROOM" };
      return { kind: "join", room };
    }
    case "leave":
    case "part":
      return { kind: "part" };
    case "quit":
      return { kind: "leave" };
    case "rooms":
    case "list":
      return { kind: "rooms" };
    case "who":
    case "names":
      return { kind: "who" };
    case "help":
    case "?":
      return { kind: "help" };
    case "clear":
      return { kind: "clear" };
    default:
      return { kind: "invalid", why: `unknown command /${name} (try /help; start with // to send a /)` };
  }
}

/** The action of a message text ("waves" for "/me waves"), or null. */
export function actionOf(text) {
  return text.startsWith(ACTION_PREFIX) ? text.slice(ACTION_PREFIX.length) : null;
}

/**
 * A server notice without the history epochs it names (internal ids, of no
 * use to a reader; the page takes the epoch from the event's own field):
 *
 *   end of history: 3 earlier messages (history epoch a30f…)   → end of history: 3 earlier messages
 *   history was lost since you were last here (history epoch X is now Y): showing …
 *                                                              → history was lost since you were last here: showing …
 *   history was lost (…): history epoch X is now Y             → history was lost (…)
 */
export function withoutEpochs(text) {
  return text
    .replace(/\s*\(history epoch [^()]*\)/g, "")
    .replace(/:?\s*history epoch \S+(\s+is now \S+)?/g, "")
    .trim();
}

/** Characters as the server counts them (Unicode scalar values). */
export function charCount(text) {
  let n = 0;
  for (const _ of text) n += 1;
  return n;
}

/** The member list: names sorted (case aside), ours marked; unnamed listeners counted. */
export function memberEntries(who, me) {
  const names = [...who.users].sort((a, b) => a.localeCompare(b, undefined, { sensitivity: "base" }));
  const entries = names.map((name) => ({ name, you: name.toLowerCase() === me.toLowerCase() }));
  return { entries, more: who.listeners ? `+ ${who.listeners} listening` : "" };
}

/** The /who answer, as the terminal client words it. */
export function whoText(who) {
  const names = who.users.length ? who.users.join(", ") : "nobody named";
  let text = `in ${who.room}: ${names} (${who.users.length})`;
  if (who.listeners === 1) text += "; 1 more has not spoken yet";
  else if (who.listeners > 1) text += `; ${who.listeners} more have not spoken yet`;
  return text;
}

/** The /rooms answer. */
export function roomsText(rooms) {
  if (rooms.length === 0) return "no room has anyone in it";
  return `rooms: ${rooms.map((r) => `${r.name} (${r.members})`).join(", ")}`;
}
