// End-to-end test of the chat page in headless Chromium (Debian's, driven by
// playwright-core), run by tests/web_browser.rs against a real chat-server
// (started with --max-message-chars <limit>): two browser users and one
// chat-client (line mode) in one room; a page switches rooms and comes back;
// the page at 360 px wide.
//
//   node browser.mjs <page url> <chat-client binary> <native address> <room> <artefact dir> <limit>
//
// Prints "ok <step>" per step passed; exits non-zero at the first failure,
// with the screenshots taken so far in the artefact dir.

import { spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import { connect as http2Connect } from "node:http2";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const [url, chatClient, address, room, artefacts, limitArg] = process.argv.slice(2);
const LIMIT = Number(limitArg);
mkdirSync(artefacts, { recursive: true });
const WAIT = 15000;
const HOSTILE = "<img src=x onerror=alert(1)>";

// Lines from tests/web_browser.rs (it answers "restarted").
const stdinLines = createInterface({ input: process.stdin });
const pendingLines = [];
const lineWaiters = [];
stdinLines.on("line", (line) => (lineWaiters.length ? lineWaiters.shift()(line) : pendingLines.push(line)));
function nextStdinLine() {
  return pendingLines.length ? Promise.resolve(pendingLines.shift()) : new Promise((r) => lineWaiters.push(r));
}

// --- chat-client in line mode ------------------------------------------

class LineClient {
  constructor(user, inRoom = room) {
    this.lines = [];
    this.waiters = [];
    this.child = spawn(chatClient, ["--address", address, "--user", user, "--room", inRoom, "--line"], {
      stdio: ["pipe", "pipe", "pipe"],
    });
    let partial = "";
    this.child.stdout.on("data", (chunk) => {
      partial += chunk.toString("utf8");
      const parts = partial.split("\n");
      partial = parts.pop();
      this.lines.push(...parts);
      this.waiters = this.waiters.filter((w) => !w());
    });
    this.stderr = "";
    this.child.stderr.on("data", (chunk) => (this.stderr += chunk));
  }

  say(line) {
    this.child.stdin.write(`${line}\n`);
  }

  /** Waits for a stdout line matching `pred` (a string is an exact line). */
  expect(pred, what = String(pred)) {
    const test = typeof pred === "string" ? (l) => l === pred : (l) => pred.test(l);
    return new Promise((resolve, reject) => {
      const check = () => {
        const found = this.lines.find(test);
        if (found !== undefined) resolve(found);
        return found !== undefined;
      };
      if (check()) return;
      this.waiters.push(check);
      setTimeout(() => reject(new Error(`chat-client never printed ${what}\n${this.lines.join("\n")}\n${this.stderr}`)), WAIT);
    });
  }

  count(line) {
    return this.lines.filter((l) => l === line).length;
  }
}

/**
 * A member without a name: a native ChatStream call (Node's own HTTP/2)
 * that sends nothing and reads the room. Who counts it as a listener.
 */
function chatStreamListener(inRoom) {
  const session = http2Connect(`http://${address}`);
  session.on("error", () => {});
  const stream = session.request({
    ":method": "POST", ":path": "/chat.ChatService/ChatStream",
    "content-type": "application/grpc", te: "trailers", "chat-room": inRoom,
  });
  stream.on("data", () => {});
  stream.on("error", () => {});
  return { close: () => session.destroy() };
}

// --- the browser ----------------------------------------------------------

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  // Root on a CI machine cannot use Chromium's sandbox.
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
const dialogs = [];
const consoleErrors = [];

async function openPage(name) {
  const context = await browser.newContext({ viewport: { width: 900, height: 640 } });
  const page = await context.newPage();
  page.on("dialog", (d) => {
    dialogs.push(`${name}: ${d.message()}`);
    d.dismiss();
  });
  page.on("pageerror", (e) => consoleErrors.push(`${name}: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error") consoleErrors.push(`${name}: ${m.text()}`);
  });
  await page.goto(url);
  await page.fill("#name", name);
  await page.fill("#room", room);
  await page.click("#join button[type=submit]");
  await page.waitForSelector("#status.connected", { timeout: WAIT });
  return { page, context, name };
}

/** The texts of the log lines, e.g. "[alice] hello". */
async function logLines(page) {
  return page.$$eval("#log li", (items) =>
    items.map((li) => [...li.children].filter((c) => !c.classList.contains("time")).map((c) => c.textContent).join(" ")),
  );
}

async function expectLine(page, text) {
  await page.waitForFunction(
    (want) => [...document.querySelectorAll("#log li")].some((li) =>
      [...li.children].filter((c) => !c.classList.contains("time")).map((c) => c.textContent).join(" ") === want),
    text,
    { timeout: WAIT },
  ).catch(async () => {
    throw new Error(`page never showed ${JSON.stringify(text)}; it shows:\n${(await logLines(page)).join("\n")}`);
  });
}

async function expectLineMatching(page, pattern) {
  await page.waitForFunction(
    (source) => [...document.querySelectorAll("#log li .text")].some((t) => new RegExp(source).test(t.textContent)),
    pattern.source,
    { timeout: WAIT },
  ).catch(async () => {
    throw new Error(`page never showed ${pattern}; it shows:\n${(await logLines(page)).join("\n")}`);
  });
}

async function countLine(page, text) {
  return (await logLines(page)).filter((l) => l === text).length;
}

/** Each of `lines` is shown exactly once. */
async function expectOnce(page, lines, when) {
  for (const line of lines) {
    const n = await countLine(page, line);
    if (n !== 1) throw new Error(`${when} the page shows ${JSON.stringify(line)} ${n} times:\n${(await logLines(page)).join("\n")}`);
  }
}

/** Waits until the log shows `text` at least `n` times. */
async function expectCount(page, text, n) {
  await page.waitForFunction(
    ([want, n]) => [...document.querySelectorAll("#log li")].filter((li) =>
      [...li.children].filter((c) => !c.classList.contains("time")).map((c) => c.textContent).join(" ") === want).length >= n,
    [text, n],
    { timeout: WAIT },
  ).catch(async () => {
    throw new Error(`page never showed ${JSON.stringify(text)} ${n} times; it shows:\n${(await logLines(page)).join("\n")}`);
  });
}

/** Waits for the member list to read `want` (e.g. ["alice (you)", "bob"]). */
async function expectMembers(page, want) {
  const read = () => page.$$eval("#members li", (items) => items.map((li) => li.textContent));
  await page.waitForFunction(
    (want) => JSON.stringify([...document.querySelectorAll("#members li")].map((li) => li.textContent)) === want,
    JSON.stringify(want),
    { timeout: WAIT },
  ).catch(async () => {
    throw new Error(`member list never read ${JSON.stringify(want)}: ${JSON.stringify(await read())}`);
  });
}

/** Waits for the room list to read `want` (e.g. ["lobby 2"]: name and count). */
async function expectRooms(page, want) {
  const read = () => page.$$eval("#rooms button", (items) =>
    items.map((b) => `${b.querySelector(".name").textContent} ${b.querySelector(".count").textContent}`));
  await page.waitForFunction(
    (want) => JSON.stringify([...document.querySelectorAll("#rooms button")].map((b) =>
      `${b.querySelector(".name").textContent} ${b.querySelector(".count").textContent}`)) === want,
    JSON.stringify(want),
    { timeout: WAIT },
  ).catch(async () => {
    throw new Error(`room list never read ${JSON.stringify(want)}: ${JSON.stringify(await read())}`);
  });
}

/** Asks /who until the answer is `line` (the server's view may lag a call). */
async function whoUntil(page, line) {
  const answers = async () => (await logLines(page)).filter((l) => l.startsWith("-- in "));
  for (let i = 0; i < 50; i++) {
    const before = (await answers()).length;
    await say(page, "/who");
    await page.waitForFunction(
      (n) => [...document.querySelectorAll("#log li .text")].filter((t) => t.textContent.startsWith("-- in ")).length > n,
      before,
      { timeout: WAIT },
    );
    if ((await answers()).at(-1) === line) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`/who never answered ${JSON.stringify(line)}:\n${(await logLines(page)).join("\n")}`);
}

async function say(page, text) {
  await page.fill("#text", text);
  await page.press("#text", "Enter");
}

async function shot(page, name) {
  await page.screenshot({ path: join(artefacts, `${name}.png`) });
}

let carol;
try {
  const alice = await openPage("alice");
  await expectLine(alice.page, `-- welcome to ${room}, alice: you are the only one here --`);
  console.log("ok alice joined");

  carol = new LineClient("carol");
  await carol.expect(`-- welcome to ${room}, carol: also here: alice --`);
  await expectLine(alice.page, "* carol joined");

  const bob = await openPage("bob");
  await expectLine(bob.page, `-- welcome to ${room}, bob: also here: alice, carol --`);
  await expectLine(alice.page, "* bob joined");
  await carol.expect("* bob joined");
  console.log("ok joins seen by everyone");

  // Beside the log: who is here (sorted, ourselves marked) and the rooms
  // with their counts.
  await expectMembers(alice.page, ["alice (you)", "bob", "carol"]);
  await expectMembers(bob.page, ["alice", "bob (you)", "carol"]);
  await expectRooms(alice.page, [`${room} 3`]);
  console.log("ok member list");

  // The input is held to the server's limit (SessionStarted), not the
  // page's fallback; a longer text (pasted by a script) is not sent.
  const maxLength = await alice.page.$eval("#text", (input) => input.maxLength);
  if (maxLength !== LIMIT) throw new Error(`the input takes ${maxLength} characters, the server ${LIMIT}`);
  await alice.page.$eval("#text", (input, n) => (input.value = "x".repeat(n)), LIMIT + 1);
  await alice.page.press("#text", "Enter");
  await expectLine(alice.page, `-- too long: ${LIMIT + 1} characters; the server takes at most ${LIMIT} --`);
  await alice.page.fill("#text", "");
  console.log("ok input limit from the server");

  // Typing in a page shows on the other page and in chat-client.
  await bob.page.type("#text", "hello from bob", { delay: 5 });
  await alice.page.waitForFunction(() => document.getElementById("typing").textContent === "bob is typing…", null, { timeout: WAIT });
  await carol.expect(/bob.*typing/, "bob typing");
  console.log("ok typing seen");
  await shot(alice.page, "alice-sees-bob-typing");

  await bob.page.press("#text", "Enter");
  await expectLine(bob.page, "[you] hello from bob");
  await expectLine(alice.page, "[bob] hello from bob");
  await carol.expect("[bob] hello from bob");
  // Sending ended the indicator.
  await alice.page.waitForFunction(() => document.getElementById("typing").textContent === "", null, { timeout: WAIT });

  carol.say("hi browsers");
  await carol.expect("[you] hi browsers");
  await expectLine(alice.page, "[carol] hi browsers");
  await expectLine(bob.page, "[carol] hi browsers");
  console.log("ok messages between pages and chat-client");

  // Actions (proto/chat.proto: a text starting with "/me "), page →
  // terminal and terminal → page; own ones shown the same way.
  await say(alice.page, "/me waves");
  await carol.expect("* alice waves");
  await expectLine(alice.page, "* alice waves");
  await expectLine(bob.page, "* alice waves");
  carol.say("/me nods");
  await expectLine(alice.page, "* carol nods");
  await expectLine(bob.page, "* carol nods");
  const actions = await bob.page.$$eval("#log li.action", (items) => items.length);
  if (actions !== 2) throw new Error(`${actions} lines in the action style, not 2`);
  console.log("ok /me both ways");

  // Commands as in the terminal; an unknown one is not sent.
  await say(alice.page, "/frobnicate now");
  await expectLine(alice.page, "-- unknown command /frobnicate (try /help; start with // to send a /) --");
  await say(alice.page, "/who");
  await expectLine(alice.page, `-- in ${room}: alice, bob, carol (3) --`);
  await say(alice.page, "/rooms");
  await expectLine(alice.page, `-- rooms: ${room} (3) --`);
  await say(alice.page, "/help");
  await expectLine(alice.page, "commands:");
  // A member without a name is counted, in the answer and in the list.
  const listener = chatStreamListener(room);
  await whoUntil(alice.page, `-- in ${room}: alice, bob, carol (3); 1 more has not spoken yet --`);
  await expectMembers(alice.page, ["alice (you)", "bob", "carol", "+ 1 listening"]);
  listener.close();
  await whoUntil(alice.page, `-- in ${room}: alice, bob, carol (3) --`);
  await expectMembers(alice.page, ["alice (you)", "bob", "carol"]);
  console.log("ok commands");

  // Markup from a peer is text.
  await alice.page.fill("#text", HOSTILE);
  await alice.page.press("#text", "Enter");
  await expectLine(bob.page, `[alice] ${HOSTILE}`);
  await expectLine(alice.page, `[you] ${HOSTILE}`);
  await carol.expect(`[alice] ${HOSTILE}`);
  for (const { page } of [alice, bob]) {
    const images = await page.$$eval("#log img", (imgs) => imgs.length);
    if (images !== 0) throw new Error("a peer's markup became an element");
  }
  if (dialogs.length) throw new Error(`a script ran: ${dialogs.join("; ")}`);
  console.log("ok markup shown as text");
  await shot(bob.page, "bob");
  await shot(alice.page, "alice");

  // A reload resumes: what was shown is shown once, and the chat goes on.
  await bob.page.reload();
  await bob.page.waitForSelector("#status.connected", { timeout: WAIT });
  await alice.page.fill("#text", "after the reload");
  await alice.page.press("#text", "Enter");
  await expectLine(bob.page, "[alice] after the reload");
  for (const line of ["[you] hello from bob", "[carol] hi browsers", `[alice] ${HOSTILE}`, "[alice] after the reload"]) {
    const n = await countLine(bob.page, line);
    if (n !== 1) throw new Error(`after the reload bob shows ${JSON.stringify(line)} ${n} times:\n${(await logLines(bob.page)).join("\n")}`);
  }
  console.log("ok reload resumes without duplicates");
  await shot(bob.page, "bob-after-reload");

  // Away and back: bob's tab leaves the page, alice talks meanwhile, bob
  // comes back; the page resumes from its last id and shows what was missed,
  // once.
  await bob.page.goto("about:blank");
  await expectLine(alice.page, "* bob left");
  await alice.page.fill("#text", "while you were away");
  await alice.page.press("#text", "Enter");
  await expectLine(alice.page, "[you] while you were away");
  await bob.page.goto(url);
  await bob.page.waitForSelector("#status.connected", { timeout: WAIT });
  await expectLine(bob.page, "[alice] while you were away");
  for (const line of ["[you] hello from bob", "[alice] after the reload", "[alice] while you were away"]) {
    const n = await countLine(bob.page, line);
    if (n !== 1) throw new Error(`after coming back bob shows ${JSON.stringify(line)} ${n} times:\n${(await logLines(bob.page)).join("\n")}`);
  }
  // The server was asked to resume (it sent the one missed message), not
  // to replay the room: the page's own duplicate check is the second fence.
  const ends = (await logLines(bob.page)).filter((l) => l.startsWith("-- end of history:"));
  if (ends.at(-1) !== "-- end of history: 1 earlier message --") {
    throw new Error(`not resumed from the last id: ${JSON.stringify(ends)}`);
  }
  console.log("ok missed messages resumed once");

  // Room switch: bob goes to another room with /join (the room list shows
  // both) and reloads there, alice talks meanwhile, bob comes back by
  // clicking the room: resumed in that room, what he missed shown once.
  const side = `${room}-side`;
  const bobLeft = await countLine(alice.page, "* bob left");
  await say(bob.page, `/join ${side}`);
  await expectLine(bob.page, `-- welcome to ${side}, bob: you are the only one here --`);
  await expectCount(alice.page, "* bob left", bobLeft + 1);
  await expectMembers(bob.page, ["bob (you)"]);
  await expectRooms(bob.page, [`${room} 2`, `${side} 1`]);
  await expectMembers(alice.page, ["alice (you)", "carol"]);
  await say(bob.page, "only in the side room");
  await expectLine(bob.page, "[you] only in the side room");
  // A reload keeps the room, and each room's place.
  await bob.page.reload();
  await bob.page.waitForSelector("#status.connected", { timeout: WAIT });
  const whereAfterReload = await bob.page.$eval("#where", (e) => e.textContent);
  if (whereAfterReload !== `bob in ${side}`) throw new Error(`after a reload the page says ${JSON.stringify(whereAfterReload)}`);
  await expectOnce(bob.page, ["[you] only in the side room"], "after a reload in the other room");
  await say(alice.page, "while bob is in the other room");
  await expectLine(alice.page, "[you] while bob is in the other room");
  await bob.page.locator("#rooms .name").getByText(room, { exact: true }).click();
  await expectLine(bob.page, "[alice] while bob is in the other room");
  await bob.page.waitForSelector("#status.connected", { timeout: WAIT });
  await expectOnce(bob.page, ["[you] hello from bob", "* alice waves", "[alice] while you were away", "[alice] while bob is in the other room"], "back in the room");
  if (await countLine(bob.page, "[you] only in the side room")) throw new Error("the side room's lines show in the first room");
  const backEnds = (await logLines(bob.page)).filter((l) => l.startsWith("-- end of history:"));
  if (backEnds.at(-1) !== "-- end of history: 1 earlier message --") {
    throw new Error(`coming back did not resume: ${JSON.stringify(backEnds)}`);
  }
  await expectMembers(bob.page, ["alice", "bob (you)", "carol"]);
  console.log("ok room switch");

  // A switch the server refuses (the name is taken there) goes back to the
  // room we came from, with a notice; nothing shown twice.
  const taken = `${room}-taken`;
  const otherBob = new LineClient("bob", taken);
  await otherBob.expect(`-- welcome to ${taken}, bob: you are the only one here --`);
  await say(bob.page, `/join ${taken}`);
  await expectLineMatching(bob.page, new RegExp(`^-- cannot join ${taken}: `));
  await bob.page.waitForSelector("#status.connected", { timeout: WAIT });
  const where = await bob.page.$eval("#where", (e) => e.textContent);
  if (where !== `bob in ${room}`) throw new Error(`after a refused switch the page says ${JSON.stringify(where)}`);
  await expectOnce(bob.page, ["[you] hello from bob", "[alice] while bob is in the other room"], "after a refused switch");
  otherBob.child.kill();
  console.log("ok refused room switch goes back");

  // The server is killed and started again (tests/web_browser.rs does it
  // when asked on stdout): both pages notice, retry, and resume by
  // themselves; history was in memory, so they are told it was lost; the
  // chat goes on, nothing shown twice.
  console.log("restart-server");
  await nextStdinLine();
  for (const { page } of [alice, bob]) {
    await page.waitForSelector("#status.connected", { timeout: WAIT });
  }
  await expectLine(bob.page, "-- history was lost since you were last here: showing the latest messages --");
  // chat-client reconnects by itself too: alice sees carol join again.
  await alice.page.waitForFunction(
    () => [...document.querySelectorAll("#log li .text")].filter((t) => t.textContent === "* carol joined").length >= 2,
    null,
    { timeout: WAIT },
  );
  await expectMembers(alice.page, ["alice (you)", "bob", "carol"]);
  await alice.page.fill("#text", "after the restart");
  await alice.page.press("#text", "Enter");
  await expectLine(bob.page, "[alice] after the restart");
  for (const line of ["[you] hello from bob", "[alice] while you were away", "[alice] after the restart"]) {
    const n = await countLine(bob.page, line);
    if (n !== 1) throw new Error(`after the restart bob shows ${JSON.stringify(line)} ${n} times`);
  }
  // Chromium logs the broken and refused requests of the outage as console
  // errors: expected here, so they are dropped (uncaught exceptions stay).
  const outage = /Failed to load resource: net::ERR_(INCOMPLETE_CHUNKED_ENCODING|CONNECTION_REFUSED|CONNECTION_RESET|EMPTY_RESPONSE)/;
  for (let i = consoleErrors.length - 1; i >= 0; i--) if (outage.test(consoleErrors[i])) consoleErrors.splice(i, 1);
  console.log("ok pages reconnect after a server restart");

  // Epochs (and ids) are the page's business, not the reader's.
  for (const { page, name } of [alice, bob]) {
    const text = await page.evaluate(() => document.body.innerText);
    const leak = /history epoch|\b[0-9a-f]{16}\b/.exec(text);
    if (leak) throw new Error(`${name}'s page shows an internal id (${leak[0]}):\n${text}`);
  }
  console.log("ok no internal ids on screen");

  // A phone: 360 px wide. Nothing cut off: Send and Leave inside the
  // viewport, no sideways scrolling, a log wide enough to read, the member
  // list below it.
  await alice.page.setViewportSize({ width: 360, height: 640 });
  const layout = await alice.page.evaluate(() => {
    const box = (selector) => {
      const r = document.querySelector(selector).getBoundingClientRect();
      return { left: r.left, right: r.right, top: r.top, bottom: r.bottom, width: r.width };
    };
    return {
      send: box("#send button[type=submit]"), leave: box("#leave"), input: box("#text"), log: box("#log"),
      members: box("#members"), scrollWidth: document.documentElement.scrollWidth,
    };
  });
  for (const name of ["send", "leave"]) {
    const b = layout[name];
    if (b.left < 0 || b.right > 360 || b.top < 0 || b.bottom > 640 || b.width === 0) {
      throw new Error(`at 360 px the ${name} button is at ${JSON.stringify(b)}`);
    }
  }
  if (layout.scrollWidth > 360) throw new Error(`at 360 px the page is ${layout.scrollWidth} px wide`);
  if (layout.log.width < 300 || layout.input.width < 120) throw new Error(`at 360 px: ${JSON.stringify(layout)}`);
  if (layout.members.width === 0 || layout.members.top < layout.log.bottom) throw new Error(`at 360 px the member list: ${JSON.stringify(layout)}`);
  await alice.page.screenshot({ path: join(artefacts, "narrow-360.png"), fullPage: true });
  await alice.page.setViewportSize({ width: 900, height: 640 });
  console.log("ok usable at 360 px");

  // The picture for the README: the conversation, someone typing.
  await bob.page.type("#text", "are you", { delay: 5 });
  await alice.page.waitForFunction(() => document.getElementById("typing").textContent === "bob is typing…", null, { timeout: WAIT });
  await shot(alice.page, "web-chat");

  // Leaving is seen.
  carol.say("/quit");
  await expectLine(alice.page, "* carol left");
  const bobLeftBefore = await countLine(alice.page, "* bob left");
  await bob.page.click("#leave");
  await expectCount(alice.page, "* bob left", bobLeftBefore + 1);
  await expectMembers(alice.page, ["alice (you)"]);
  console.log("ok leaves seen");
  await shot(alice.page, "alice-at-the-end");

  if (carol.lines.some((l) => l.includes("frobnicate") || l.includes("xxxxxxxx"))) {
    throw new Error("a refused command or text reached the room");
  }
  if (consoleErrors.length) throw new Error(`errors in the pages:\n${consoleErrors.join("\n")}`);
  console.log("ok done");
  await browser.close();
  carol.child.kill();
  process.exit(0);
} catch (e) {
  console.error(`FAILED: ${e?.stack ?? e}`);
  await browser.close().catch(() => {});
  carol?.child.kill();
  process.exit(1);
}
