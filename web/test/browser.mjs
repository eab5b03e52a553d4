// End-to-end test of the chat page in headless Chromium (Debian's, driven by
// playwright-core), run by tests/web_browser.rs against a real chat-server:
// two browser users and one chat-client (line mode) in one room.
//
//   node browser.mjs <page url> <chat-client binary> <native address> <room> <artefact dir>
//
// Prints "ok <step>" per step passed; exits non-zero at the first failure,
// with the screenshots taken so far in the artefact dir.

import { spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const [url, chatClient, address, room, artefacts] = process.argv.slice(2);
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
  constructor(user) {
    this.lines = [];
    this.waiters = [];
    this.child = spawn(chatClient, ["--address", address, "--user", user, "--room", room, "--line"], {
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
  if (!ends.at(-1)?.startsWith("-- end of history: 1 earlier message (")) {
    throw new Error(`not resumed from the last id: ${JSON.stringify(ends)}`);
  }
  console.log("ok missed messages resumed once");

  // The server is killed and started again (tests/web_browser.rs does it
  // when asked on stdout): both pages notice, retry, and resume by
  // themselves; history was in memory, so they are told it was lost; the
  // chat goes on, nothing shown twice.
  console.log("restart-server");
  await nextStdinLine();
  for (const { page } of [alice, bob]) {
    await page.waitForSelector("#status.connected", { timeout: WAIT });
  }
  await expectLineMatching(bob.page, /^-- history was lost since you were last here/);
  // chat-client reconnects by itself too: alice sees carol join again.
  await alice.page.waitForFunction(
    () => [...document.querySelectorAll("#log li .text")].filter((t) => t.textContent === "* carol joined").length >= 2,
    null,
    { timeout: WAIT },
  );
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

  // The picture for the README: the conversation, someone typing.
  await bob.page.type("#text", "are you", { delay: 5 });
  await alice.page.waitForFunction(() => document.getElementById("typing").textContent === "bob is typing…", null, { timeout: WAIT });
  await shot(alice.page, "web-chat");

  // Leaving is seen.
  carol.say("/quit");
  await expectLine(alice.page, "* carol left");
  await bob.page.click("#leave");
  await expectLine(alice.page, "* bob left");
  console.log("ok leaves seen");
  await shot(alice.page, "alice-at-the-end");

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
