import assert from "node:assert/strict";
import {
  attachTerminal,
  backgroundLine,
  closedLine,
  createTerminalPrompter,
  DEFAULT_INPUT_GUARD_MS,
  foregroundFromStat,
  formatBrokerEvent,
  INPUT_DISCARDED_LINE,
  INPUT_DISCARDED_ON_CLOSE_LINE,
  INPUT_IGNORED_LINE,
  InputClosedError,
  parseChoice,
  PATH_SHOWN,
  printable,
  protectedNote,
  renderPrompt,
  StdinLineReader,
} from "../../cli/terminal_prompt.ts";
import { DecisionBroker } from "../../lib/decide/broker.ts";
import { type PendingRequest, PromptClosedError } from "../../lib/decide/types.ts";
import { RulesStore } from "../../lib/rules/mod.ts";
import { DestinationGuard } from "../../lib/net/guard.ts";

const designRequest: PendingRequest = {
  id: "1",
  host: "api.github.com",
  port: 443,
  scheme: "https",
  method: "GET",
  path: "/repos/user/repo",
  url: "https://api.github.com/repos/user/repo",
  client: "172.17.0.2:51234",
  reason: "no rule",
  waiting: 1,
};

const tunnel: PendingRequest = {
  id: "2",
  host: "pinned.example.test",
  port: 443,
  scheme: "https",
  method: "CONNECT",
  client: "172.17.0.2:51235",
  reason: "no rule",
  waiting: 1,
};

Deno.test("renders the original design's prompt verbatim, plus the client", () => {
  assert.equal(
    renderPrompt(designRequest) + "Your choice [1]: ",
    `================================================================================
Network Access Request
Host: api.github.com
Method: GET
Path: /repos/user/repo
Client: 172.17.0.2:51234
================================================================================

Choose action:
  1. Allow this request once
  2. Deny this request once
  3. Always allow api.github.com
  4. Always deny api.github.com
  5. Always allow this exact URL
  6. Always deny this exact URL

Your choice [1]: `,
  );
});

Deno.test("tunnels: no path, options 5 and 6 marked unavailable", () => {
  const text = renderPrompt(tunnel);
  assert.match(text, /^Path: \(unknown: HTTPS tunnel, not intercepted\)$/m);
  assert.match(
    text,
    /^ {2}5\. Always allow this exact URL \(not available: a tunnel has no URL\)$/m,
  );
  assert.match(
    text,
    /^ {2}6\. Always deny this exact URL \(not available: a tunnel has no URL\)$/m,
  );
});

Deno.test("non-default port, shared prompt and a special reason are shown", () => {
  const text = renderPrompt({
    ...designRequest,
    host: "svc.test",
    port: 8443,
    waiting: 3,
    reason: "rules file invalid",
  });
  assert.match(text, /^Host: svc\.test:8443$/m);
  assert.match(text, /^ {2}3\. Always allow svc\.test:8443$/m);
  assert.match(text, /^ {2}4\. Always deny svc\.test:8443$/m);
  assert.match(text, /^Waiting: 3 identical requests \(this answer applies to all of them\)$/m);
  assert.match(text, /^Reason: rules file invalid$/m);
  // An IP literal's host choices name the port they save, even the default one.
  const ip = renderPrompt({ ...designRequest, host: "127.0.0.1", port: 443 });
  assert.match(ip, /^Host: 127\.0\.0\.1$/m);
  assert.match(ip, /^ {2}3\. Always allow 127\.0\.0\.1:443$/m);
  assert.match(ip, /^ {2}4\. Always deny 127\.0\.0\.1:443$/m);
  // So do localhost names.
  const lh = renderPrompt({ ...designRequest, host: "localhost", port: 80 });
  assert.match(lh, /^ {2}3\. Always allow localhost:80$/m);
});

Deno.test("request values cannot inject terminal control sequences", () => {
  const text = renderPrompt({
    ...designRequest,
    path: "/x\x1b[2K\rHost: github.com\u202e",
    method: "G\x07ET",
  });
  // deno-lint-ignore no-control-regex
  assert.ok(!/[\x00-\x09\x0b-\x1f\x7f\u202e]/.test(text), "no control characters besides newline");
  assert.match(text, /^Path: \/x\\u\{1b\}\[2K\\u\{d\}Host: github\.com\\u\{202e\}$/m);
  assert.match(text, /^Method: G\\u\{7\}ET$/m);
  assert.equal(printable("a".repeat(10), 4), "aaaa... (6 more characters)");
});

Deno.test("parses choices: digits, empty for 1, names; refuses the rest clearly", () => {
  const cases: [string, string][] = [
    ["", "allow-once"],
    ["1", "allow-once"],
    ["2", "deny-once"],
    [" 3 ", "allow-domain"],
    ["4", "deny-domain"],
    ["5", "allow-url"],
    ["6", "deny-url"],
    ["Allow-Domain", "allow-domain"],
  ];
  for (const [input, answer] of cases) {
    assert.deepEqual(parseChoice(input, designRequest), { answer }, JSON.stringify(input));
  }
  assert.deepEqual(parseChoice("7", designRequest), {
    error: 'Invalid choice "7": type a number from 1 to 6 and press Enter.',
  });
  assert.deepEqual(parseChoice("yes", tunnel), {
    error: 'Invalid choice "yes": type a number from 1 to 4 and press Enter.',
  });
  assert.deepEqual(parseChoice("5", tunnel), {
    error: "Options 5 and 6 need a URL, and a tunnel has none: type a number from 1 to 4.",
  });
  assert.deepEqual(parseChoice("3", tunnel), { answer: "allow-domain" });
});

/** Lines typed into a pipe-mode reader. */
function typed() {
  const ts = new TransformStream<Uint8Array, Uint8Array>();
  const writer = ts.writable.getWriter();
  const enc = new TextEncoder();
  return {
    readable: ts.readable,
    type: (s: string) => writer.write(enc.encode(s)),
    end: () => writer.close(),
  };
}

Deno.test("terminal prompter: asks again on invalid input, answers on a digit", async () => {
  const input = typed();
  const lines = new StdinLineReader({ input: input.readable, terminal: false });
  let out = "";
  const prompter = createTerminalPrompter({ lines, write: (s) => out += s });
  assert.equal(prompter.name, "terminal");
  const answer = prompter.ask(tunnel, new AbortController().signal);
  await input.type("9\n");
  await input.type("5\n");
  await input.type("3\n");
  assert.equal(await answer, "allow-domain");
  assert.equal(out.split("Your choice [1]: ").length - 1, 3, "asked three times");
  assert.match(out, /Invalid choice "9"/);
  assert.match(out, /Options 5 and 6 need a URL/);
  await input.end();
  await lines.close();
});

Deno.test("a protected IP literal's prompt says allow once cannot reach it", () => {
  const at = (host: string, url = true): PendingRequest => ({
    ...designRequest,
    host,
    port: 80,
    scheme: "http",
    ...(url ? { url: `http://${host}/x`, path: "/x" } : { url: undefined, path: undefined }),
  });
  const note = (host: string, url = true) =>
    renderPrompt(at(host, url)).split("\n").find((l) => l.startsWith("Protected:"));
  assert.equal(
    note("127.0.0.5"),
    "Protected: a loopback address; allow once still gets a 403, only a rule naming it (3 or 5) " +
      "lets it through",
  );
  assert.match(note("169.254.169.254")!, /^Protected: a link-local address;/);
  assert.match(note("[::1]", false)!, /^Protected: a loopback address; .* \(3\) lets it through$/);
  assert.match(note("0.0.0.0")!, /^Protected: an unspecified address;/);
  assert.match(note("[::ffff:127.0.0.1]")!, /^Protected: a loopback address;/);
  // The note comes inside the banner, before the choices.
  const lines = renderPrompt(at("127.0.0.5")).split("\n");
  assert.ok(lines.indexOf(note("127.0.0.5")!) < lines.indexOf("Choose action:"));
  // This host's addresses and its container networks, as the proxy's guard sees them.
  const guard = new DestinationGuard({
    interfaceAddresses: ["172.17.0.1"],
    containerNetworks: ["172.17.0.1/16"],
  });
  assert.match(
    protectedNote(at("172.17.0.1"), guard)!,
    /^Protected: an address of this host; .* \(3 or 5\) lets it through$/,
  );
  assert.match(
    protectedNote(at("172.17.0.9"), guard)!,
    /^Protected: an address in a container network of this host \(another container\);/,
  );
  assert.equal(protectedNote(at("172.18.0.9"), guard), undefined);
  // Private addresses and names: no note (names are not resolved by the prompt).
  assert.equal(note("10.1.2.3"), undefined);
  assert.equal(note("192.168.1.1"), undefined);
  assert.equal(note("localhost"), undefined);
  assert.equal(note("api.github.com"), undefined);
});

Deno.test("terminal prompter: v shows a path the prompt cut, then asks again", async () => {
  const tail = "/tail-\u202e-end";
  const long: PendingRequest = {
    ...designRequest,
    path: "/" + "a".repeat(PATH_SHOWN) + tail,
    url: "https://api.github.com/" + "a".repeat(PATH_SHOWN) + tail,
  };
  const rendered = renderPrompt(long);
  assert.match(rendered, /\.\.\. \(19 more characters; type v and Enter to see all of it\)\n/);
  assert.ok(!rendered.includes("tail-"), "the tail is not shown at first");
  // A path the prompt shows whole has nothing to view: v is not an answer.
  assert.deepEqual(parseChoice("v", designRequest), {
    error: 'Invalid choice "v": type a number from 1 to 6 and press Enter.',
  });
  assert.deepEqual(parseChoice(" View ", long), { view: true });

  const input = typed();
  const lines = new StdinLineReader({ input: input.readable, terminal: false });
  let out = "";
  const prompter = createTerminalPrompter({ lines, write: (s) => out += s });
  const answer = prompter.ask(long, new AbortController().signal);
  await input.type("v\n");
  await input.type("2\n");
  assert.equal(await answer, "deny-once");
  assert.equal(out.split("Your choice [1]: ").length - 1, 2, "asked again after v");
  // Whole, and still made printable (the bidi override is escaped).
  assert.ok(
    out.includes(`Full path:\n/${"a".repeat(PATH_SHOWN)}`),
  );
  assert.ok(out.includes("/tail-\\u{202e}-end\n"));
  await input.end();
  await lines.close();
});

Deno.test("terminal prompter: Enter alone allows once", async () => {
  const input = typed();
  const lines = new StdinLineReader({ input: input.readable, terminal: false });
  const prompter = createTerminalPrompter({ lines, write: () => {} });
  const answer = prompter.ask(designRequest, new AbortController().signal);
  await input.type("\r\n");
  assert.equal(await answer, "allow-once");
  await input.end();
  await lines.close();
});

Deno.test("terminal prompter: an abort prints why and stops reading", async () => {
  const input = typed();
  const lines = new StdinLineReader({ input: input.readable, terminal: false });
  let out = "";
  const prompter = createTerminalPrompter({ lines, write: (s) => out += s });
  const ac = new AbortController();
  const answer = prompter.ask(designRequest, ac.signal);
  await new Promise((r) => setTimeout(r, 0));
  ac.abort(new PromptClosedError({ kind: "answered", by: "prompt#1", answer: "deny-once" }));
  await assert.rejects(answer, PromptClosedError);
  assert.ok(
    out.endsWith(
      "Your choice [1]: \nPrompt closed: answered elsewhere (by prompt#1): deny-once.\n",
    ),
  );
  // The line typed afterwards does not belong to that prompt (and nobody reads it).
  await input.type("2\n");
  await input.end();
  await lines.close();
  assert.equal(
    closedLine(new PromptClosedError({ kind: "timeout" })),
    "Prompt closed: no answer in time.",
  );
});

Deno.test("terminal prompter: end of input rejects with InputClosedError", async () => {
  const input = typed();
  const lines = new StdinLineReader({ input: input.readable, terminal: false });
  const prompter = createTerminalPrompter({ lines, write: () => {} });
  const answer = prompter.ask(designRequest, new AbortController().signal);
  await input.end();
  await assert.rejects(answer, InputClosedError);
  assert.equal(await lines.readLine(), null);
  await lines.close();
});

Deno.test("pipe mode: lines nobody waits for are dropped unless asked to keep them", async () => {
  for (const discardUnread of [true, false]) {
    const input = typed();
    const lines = new StdinLineReader({ input: input.readable, terminal: false, discardUnread });
    // Start the pump with a read, answer it, then type a line nobody reads.
    const first = lines.readLine();
    await input.type("first\nstray\n");
    assert.equal(await first, "first");
    await new Promise((r) => setTimeout(r, 0));
    const next = lines.readLine();
    await input.type("next\n");
    assert.equal(await next, discardUnread ? "next" : "stray");
    await input.end();
    await lines.close();
  }
});

Deno.test("terminal mode: edits keys, echoes, drops keys typed between prompts", async () => {
  const input = typed();
  let echoed = "";
  const modes: boolean[] = [];
  const lines = new StdinLineReader({
    input: input.readable,
    terminal: { setRaw: (on) => modes.push(on), echo: (s) => echoed += s },
  });
  const first = lines.readLine();
  // 3, Backspace, arrow-up escape sequence, 4, Enter.
  await input.type("3\x7f\x1b[A4\r");
  assert.equal(await first, "4");
  assert.equal(echoed, "3\b \b4\r\n");
  assert.deepEqual(modes, [true]);
  // Typed while no prompt reads: not echoed, and the line it begins is
  // thrown away up to its Enter, even when that Enter comes during a read.
  await input.type("6");
  await new Promise((r) => setTimeout(r, 0));
  assert.equal(lines.discarding, true);
  let discards = 0;
  const second = lines.readLine(undefined, { onDiscarded: () => discards++ });
  await input.type("\r");
  await until(() => discards === 1);
  assert.equal(lines.discarding, false);
  await input.type("\x15abc\x15\r");
  assert.equal(await second, "", "Ctrl-U cleared the line; the stray 6 and its Enter were dropped");
  assert.equal(echoed, "3\b \b4\r\n" + "abc" + "\b \b".repeat(3) + "\r\n");
  // Partial input of an aborted read never reaches the next read, nor does
  // the Enter that ends it.
  const ac = new AbortController();
  const third = lines.readLine(ac.signal);
  await input.type("5");
  await new Promise((r) => setTimeout(r, 0));
  ac.abort(new Error("closed"));
  await assert.rejects(third, /closed/);
  assert.equal(lines.discarding, true);
  const fourth = lines.readLine(undefined, { onDiscarded: () => discards++ });
  await input.type("\r");
  await until(() => discards === 2);
  await input.type("1\r");
  assert.equal(await fourth, "1");
  // Ctrl-D on an empty line ends input and restores the terminal.
  const fifth = lines.readLine();
  await input.type("\x04");
  assert.equal(await fifth, null);
  assert.deepEqual(modes, [true, false]);
  await input.end();
  await lines.close();
});

Deno.test("attachTerminal: answers through the broker; detaches itself at end of input", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nm-term-" });
  const input = typed();
  const lines = new StdinLineReader({ input: input.readable, terminal: false });
  const broker = new DecisionBroker({
    rules: new RulesStore(`${dir}/network-rules.json`),
    promptTimeoutMs: 50,
  });
  let out = "";
  let closedCalls = 0;
  const term = attachTerminal(broker, {
    lines,
    write: (s) => out += s,
    onInputClosed: () => closedCalls++,
  });
  try {
    const d = broker.decide({
      target: { scheme: "http", host: "a.test", port: 80, path: "/" },
      method: "GET",
      client: "127.0.0.1:1",
    });
    await until(() => out.includes("Your choice [1]: "));
    await input.type("4\n");
    assert.equal((await d).reason, 'prompt: deny-domain (saved rule "a.test")');
    await input.end();
    // Input is gone: the next prompt has no prompter and times out.
    const later = await broker.decide({
      target: { scheme: "http", host: "b.test", port: 80, path: "/" },
      method: "GET",
      client: "127.0.0.1:1",
    });
    assert.equal(later.source, "timeout");
    assert.equal(closedCalls, 1);
  } finally {
    broker.close();
    await term.close();
    await lines.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("formatBrokerEvent: lines for saves, failures and unattended prompts", () => {
  assert.equal(
    formatBrokerEvent({ type: "rule-saved", pattern: "api.github.com", action: "allow-domain" }),
    'Saved rule "api.github.com": allow-domain',
  );
  assert.equal(
    formatBrokerEvent({
      type: "rule-save-failed",
      pattern: "x.test",
      action: "deny-domain",
      error: "disk full",
    }),
    'Could not save rule "x.test": deny-domain (disk full); the answer was applied once',
  );
  assert.equal(
    formatBrokerEvent({
      type: "rule-save-failed",
      pattern: "h.test",
      action: "allow-domain",
      error: "a deny rule was added meanwhile",
      kept: { pattern: "h.test", action: "deny-domain" },
    }),
    'Could not save rule "h.test": allow-domain (a deny rule was added meanwhile); ' +
      'the deny rule "h.test" decided instead',
  );
  assert.equal(
    formatBrokerEvent({ type: "prompt-shown", request: designRequest, prompters: 0 }),
    "Waiting for an answer about api.github.com: no prompt is attached " +
      "(run `netmonitor prompt` in another terminal)",
  );
  assert.equal(
    formatBrokerEvent({ type: "prompt-shown", request: designRequest, prompters: 1 }),
    undefined,
  );
});

Deno.test("formatBrokerEvent: a saved exact-URL rule's secrets are redacted, as in record lines", () => {
  // `netmonitor run`'s output is often a file (run-monitored.sh writes it to
  // netmonitor-proxy-*.out): the URL of an "always allow this exact URL"
  // answer is the container's request, tokens and all.
  const url = "https://api.test/cb?code=SECRETCODE1&state=ok#access_token=SECRETTOK1";
  const lines = [
    formatBrokerEvent({ type: "rule-saved", pattern: url, action: "allow-url" }),
    formatBrokerEvent({
      type: "rule-save-failed",
      pattern: url,
      action: "allow-url",
      error: `rule ${JSON.stringify(url)}: allow-url not saved: disk full`,
    }),
    formatBrokerEvent({
      type: "rule-save-failed",
      pattern: url,
      action: "allow-url",
      error: `the deny rule ${JSON.stringify(url)}: deny-url was added meanwhile`,
      kept: { pattern: url, action: "deny-url" },
    }),
    formatBrokerEvent({
      type: "prompter-failed",
      prompter: "terminal",
      error: `cannot show ${url}`,
    }),
  ];
  for (const line of lines) {
    assert.ok(line !== undefined);
    assert.doesNotMatch(line, /SECRET/, line);
    assert.match(line, /https:\/\/api\.test\/cb\?code=REDACTED&state=ok/, line);
  }
});

Deno.test("printLine: other output waits while a question is open, and follows its answer", async () => {
  const input = typed();
  const lines = new StdinLineReader({
    input: input.readable,
    terminal: { setRaw: () => {}, echo: () => {} },
  });
  let out = "";
  const prompter = createTerminalPrompter({
    lines,
    write: (s) => out += s,
    ansi: true,
    inputGuardMs: 0,
  });
  prompter.printLine("before");
  assert.equal(out, "before\n");
  const answer = prompter.ask(designRequest, new AbortController().signal);
  await input.type("3");
  await until(() => lines.partial === "3");
  out = "";
  prompter.printLine("GET http://other.test/ 200");
  prompter.printLine("GET http://other.test/2 200");
  assert.equal(out, "", "the question stays right under its prompt");
  await input.type("\r");
  assert.equal(await answer, "allow-domain");
  assert.equal(out, "GET http://other.test/ 200\nGET http://other.test/2 200\n");
  out = "";
  prompter.printLine("after");
  assert.equal(out, "after\n");
  await input.end();
  await lines.close();
});

/** A terminal-mode reader on typed input with a clock the test moves by hand. */
function guardedTerminal() {
  const input = typed();
  const clock = { now: 0 };
  let echoed = "";
  const lines = new StdinLineReader({
    input: input.readable,
    terminal: { setRaw: () => {}, echo: (s) => echoed += s },
    now: () => clock.now,
  });
  return { input, clock, lines, echoed: () => echoed };
}

/** Waits until `cond` holds (a few event-loop turns at most in practice; fails after 5 s). */
async function until(cond: () => boolean): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${cond}`);
    await new Promise((r) => setTimeout(r, 1));
  }
}

Deno.test("input guard: keys typed as a new prompt appears are ignored, and it says so", async () => {
  assert.equal(DEFAULT_INPUT_GUARD_MS, 400);
  const { input, clock, lines, echoed } = guardedTerminal();
  let out = "";
  const prompter = createTerminalPrompter({
    lines,
    write: (s) => out += s,
    ansi: true,
    inputGuardMs: 400,
  });
  const answer = prompter.ask(designRequest, new AbortController().signal);
  let answered = false;
  answer.then(() => answered = true, () => {});
  // Enter meant for the previous prompt lands 10 ms after this one was drawn.
  clock.now = 10;
  await input.type("\r");
  await until(() => out.includes(INPUT_IGNORED_LINE));
  assert.ok(
    out.endsWith(`Your choice [1]: \r\x1b[2K${INPUT_IGNORED_LINE}\nYour choice [1]: `),
    JSON.stringify(out),
  );
  // More keys inside the window: dropped too, not echoed, said only once.
  clock.now = 399;
  await input.type("6");
  await new Promise((r) => setTimeout(r, 5));
  assert.equal(lines.partial, "");
  assert.equal(echoed(), "");
  assert.equal(out.split(INPUT_IGNORED_LINE).length - 1, 1);
  assert.equal(answered, false);
  // The line that 6 began was not typed for this prompt: the rest of it, up
  // to and including its Enter, is thrown away too, and it says so.
  clock.now = 400;
  await input.type("1\r");
  await until(() => out.includes(INPUT_DISCARDED_LINE));
  assert.ok(
    out.endsWith(`\r\x1b[2K${INPUT_DISCARDED_LINE}\nYour choice [1]: `),
    JSON.stringify(out),
  );
  assert.equal(answered, false);
  assert.equal(echoed(), "");
  // After that the operator's choice counts.
  await input.type("9\r");
  await until(() => out.includes('Invalid choice "9"'));
  // Asked again about the same request: not guarded.
  await input.type("2\r");
  assert.equal(await answer, "deny-once");
  assert.equal(echoed(), "9\r\n2\r\n");
  await input.end();
  await lines.close();
});

Deno.test("input guard: 0 turns it off; piped (scripted) input is never guarded", async () => {
  const t = guardedTerminal();
  const off = createTerminalPrompter({ lines: t.lines, write: () => {}, inputGuardMs: 0 });
  const a = off.ask(designRequest, new AbortController().signal);
  await t.input.type("\r");
  assert.equal(await a, "allow-once");
  await t.input.end();
  await t.lines.close();

  const piped = typed();
  const lines = new StdinLineReader({ input: piped.readable, terminal: false, now: () => 0 });
  let out = "";
  const on = createTerminalPrompter({ lines, write: (s) => out += s, inputGuardMs: 400 });
  const b = on.ask(designRequest, new AbortController().signal);
  await piped.type("4\n");
  assert.equal(await b, "deny-domain");
  assert.ok(!out.includes(INPUT_IGNORED_LINE));
  await piped.end();
  await lines.close();
});

Deno.test("input guard: an Enter meant for a withdrawn request does not answer the next one", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nm-term-" });
  const { input, clock, lines } = guardedTerminal();
  const broker = new DecisionBroker({ rules: new RulesStore(`${dir}/network-rules.json`) });
  let out = "";
  const term = attachTerminal(broker, { lines, write: (s) => out += s, inputGuardMs: 400 });
  const req = (host: string) => ({
    target: { scheme: "http" as const, host, port: 80, path: "/" },
    method: "GET",
    client: "127.0.0.1:1",
  });
  try {
    const gone = new AbortController();
    const a = broker.decide(req("a.test"), gone.signal);
    const b = broker.decide(req("b.test"));
    await until(() => out.includes("Host: a.test") && out.endsWith("Your choice [1]: "));
    // The operator reads a.test for a while...
    clock.now = 5_000;
    // ...its client withdraws it just as they press Enter: b.test takes its place.
    gone.abort();
    assert.equal((await a).source, "error");
    await until(() => out.includes("Host: b.test") && out.endsWith("Your choice [1]: "));
    clock.now = 5_050;
    await input.type("\r");
    await until(() => out.includes(INPUT_IGNORED_LINE));
    assert.equal(broker.pending()[0]?.host, "b.test", "b.test is still waiting");
    clock.now = 6_000;
    await input.type("2\r");
    assert.deepEqual(await b, { action: "deny", source: "prompt", reason: "prompt: deny-once" });
  } finally {
    broker.close();
    await term.close();
    await input.end();
    await lines.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a withdrawn prompt's half-typed answer does not turn a later Enter into allow once", async () => {
  // The review's repro: the operator types 2 (deny) for a.test; 0.1 s later
  // its client resets the connection, so b.test (queued behind it) is shown;
  // the operator's Enter lands 0.7 s after the 2, past the input guard.
  const dir = await Deno.makeTempDir({ prefix: "nm-term-" });
  const { input, clock, lines, echoed } = guardedTerminal();
  const broker = new DecisionBroker({ rules: new RulesStore(`${dir}/network-rules.json`) });
  let out = "";
  const term = attachTerminal(broker, {
    lines,
    write: (s) => out += s,
    ansi: true,
    inputGuardMs: 400,
  });
  const req = (host: string, path: string) => ({
    target: { scheme: "http" as const, host, port: 8080, path },
    method: "GET",
    client: "127.0.0.1:1",
  });
  try {
    const gone = new AbortController();
    const a = broker.decide(req("a.test", "/harmless"), gone.signal);
    const b = broker.decide(req("b.test", "/exfiltrate?secret=1"));
    await until(() => out.includes("Host: a.test") && out.endsWith("Your choice [1]: "));
    clock.now = 5_000;
    await input.type("2");
    await until(() => lines.partial === "2");
    clock.now = 5_100;
    gone.abort();
    assert.equal((await a).source, "error");
    await until(() => out.includes("Host: b.test") && out.endsWith("Your choice [1]: "));
    clock.now = 5_700;
    await input.type("\r");
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(broker.pending()[0]?.host, "b.test", "b.test still waits for a fresh answer");
    // Past the input guard: this is the discard's doing, and the screen says so.
    assert.ok(!out.includes(INPUT_IGNORED_LINE));
    assert.match(
      out,
      new RegExp(`Prompt closed: [^\\n]*\\.\\n${INPUT_DISCARDED_ON_CLOSE_LINE}\\n`),
    );
    assert.ok(out.endsWith(`\r\x1b[2K${INPUT_DISCARDED_LINE}\nYour choice [1]: `));
    // A fresh answer, typed for b.test, counts.
    clock.now = 6_500;
    await input.type("2\r");
    assert.deepEqual(await b, { action: "deny", source: "prompt", reason: "prompt: deny-once" });
    assert.equal(echoed(), "2" + "2\r\n", "the discarded Enter was not echoed");
  } finally {
    broker.close();
    await term.close();
    await input.end();
    await lines.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a prompt closing under erased input, or before any key, discards accordingly", async () => {
  const { input, lines } = guardedTerminal();
  let discards = 0;
  const onDiscarded = () => discards++;
  // Typed 2, erased it: keys were typed for the prompt, so the rest of that line goes too.
  const ac = new AbortController();
  const first = lines.readLine(ac.signal, { onDiscarded });
  await input.type("2\x7f");
  await new Promise((r) => setTimeout(r, 5));
  assert.equal(lines.partial, "");
  ac.abort(new Error("withdrawn"));
  await assert.rejects(first, /withdrawn/);
  assert.equal(lines.discarding, true);
  const second = lines.readLine(undefined, { onDiscarded });
  await input.type("1\r");
  await until(() => discards === 1);
  // Nothing typed for a prompt that closes: nothing is discarded.
  const ac2 = new AbortController();
  const third = lines.readLine(ac2.signal, { onDiscarded });
  ac2.abort(new Error("timeout"));
  await assert.rejects(third, /timeout/);
  assert.equal(lines.discarding, false);
  // second is still open: an arrow key does not begin a line, Enter answers it.
  await input.type("\x1b[B\r");
  assert.equal(await second, "");
  assert.equal(discards, 1);
  await input.end();
  await lines.close();
});

Deno.test("input typed into the guard window and finished after it does not answer", async () => {
  const { input, clock, lines } = guardedTerminal();
  let ignored = 0;
  let discards = 0;
  const read = lines.readLine(undefined, {
    guardMs: 400,
    onIgnored: () => ignored++,
    onDiscarded: () => discards++,
  });
  clock.now = 50;
  await input.type("2");
  await until(() => ignored === 1);
  clock.now = 700;
  await input.type("\r");
  await until(() => discards === 1);
  clock.now = 800;
  await input.type("4\r");
  assert.equal(await read, "4");
  // An Enter alone inside the window ends nothing pending: the next line counts.
  const again = lines.readLine(undefined, { guardMs: 400, onDiscarded: () => discards++ });
  clock.now = 900;
  await input.type("\r");
  await new Promise((r) => setTimeout(r, 5));
  assert.equal(lines.discarding, false);
  clock.now = 1_300;
  await input.type("3\r");
  assert.equal(await again, "3");
  assert.equal(discards, 1);
  await input.end();
  await lines.close();
});

Deno.test("keys that follow an Enter in the same read begin a line typed while no prompt reads", async () => {
  // Over ssh (or a paste) "1", Enter and "2" can arrive in one read: the 1
  // answers the prompt, the 2 is typed while none is open. Its line, Enter
  // included, must not answer the next prompt (an Enter alone allows once).
  const { input, clock, lines, echoed } = guardedTerminal();
  let discards = 0;
  const first = lines.readLine(undefined, { guardMs: 400 });
  clock.now = 1_000;
  await input.type("1\r2");
  assert.equal(await first, "1");
  await new Promise((r) => setTimeout(r, 5));
  assert.equal(lines.discarding, true, "the 2 begins a line for no prompt");
  const second = lines.readLine(undefined, { guardMs: 400, onDiscarded: () => discards++ });
  clock.now = 2_000;
  await input.type("\r");
  await until(() => discards === 1);
  await input.type("4\r");
  assert.equal(await second, "4");
  assert.equal(echoed(), "1\r\n" + "4\r\n", "the 2 was not echoed");
  await input.end();
  await lines.close();
});

Deno.test("foregroundFromStat: pgrp (field 5) against tpgid (field 8), after the last ')'", () => {
  // pid (comm) state ppid pgrp session tty_nr tpgid flags ...
  assert.equal(foregroundFromStat("4242 (deno) S 100 4242 100 34816 4242 4194560 0 0"), true);
  assert.equal(foregroundFromStat("4242 (deno) S 100 4242 100 34816 100 4194560 0 0"), false);
  // A command name with spaces and parentheses cannot shift the fields.
  assert.equal(
    foregroundFromStat("77 (a) b 1 2 3 4 5 6) R 10 77 10 34817 99 0 0\n"),
    false,
  );
  assert.equal(foregroundFromStat("77 (x) 9 9 (y) S 10 77 10 34817 77 0"), true);
  // No controlling terminal (tty_nr 0, tpgid -1), or garbage: unknown.
  assert.equal(foregroundFromStat("5 (deno) S 1 5 5 0 -1 4194560"), undefined);
  assert.equal(foregroundFromStat("5 (deno) S 1 5"), undefined);
  assert.equal(foregroundFromStat("nonsense"), undefined);
});

Deno.test("background: the terminal is neither read nor put in raw mode until the process is in front", async () => {
  const input = typed();
  const modes: boolean[] = [];
  let foreground = false;
  const lines = new StdinLineReader({
    input: input.readable,
    terminal: { setRaw: (on) => modes.push(on), echo: () => {} },
    foreground: () => foreground,
    foregroundPollMs: 5,
  });
  let out = "";
  const prompter = createTerminalPrompter({ lines, write: (s) => out += s, inputGuardMs: 0 });
  assert.equal(lines.inForeground(), false);

  // Shown in the background: one line, no prompt, no raw mode, no read.
  const ac = new AbortController();
  const first = prompter.ask(designRequest, ac.signal);
  await until(() => out.includes("Waiting for an answer"));
  assert.equal(out, `\n${backgroundLine(designRequest)}\n`);
  assert.match(out, /`fg`.*`netmonitor prompt` in another terminal/);
  await new Promise((r) => setTimeout(r, 30));
  assert.deepEqual(modes, []);
  // Closed (answered elsewhere, timed out) while still in the background.
  ac.abort(new PromptClosedError({ kind: "timeout" }));
  await assert.rejects(first, PromptClosedError);
  assert.ok(out.endsWith("Prompt closed: no answer in time.\n"), JSON.stringify(out));
  assert.ok(!out.includes("Your choice"));

  // The next one waits too, and is asked once the process is back in front.
  out = "";
  const second = prompter.ask(designRequest, new AbortController().signal);
  await until(() => out.includes("Waiting for an answer"));
  const typing = input.type("4\r"); // typed before fg: only read once in front
  await new Promise((r) => setTimeout(r, 30));
  assert.deepEqual(modes, []);
  foreground = true;
  await until(() => out.endsWith("Your choice [1]: "));
  assert.match(out, /Network Access Request/);
  assert.equal(await second, "deny-domain");
  await typing;
  assert.deepEqual(modes, [true]);

  // Back in the background: the terminal's mode is left to the shell.
  foreground = false;
  await input.end();
  await lines.close();
  assert.deepEqual(modes, [true]);
});

Deno.test("background: closing the reader ends a wait for the foreground", async () => {
  const input = typed();
  const lines = new StdinLineReader({
    input: input.readable,
    terminal: { setRaw: () => {}, echo: () => {} },
    foreground: () => false,
    foregroundPollMs: 5,
  });
  const prompter = createTerminalPrompter({ lines, write: () => {} });
  const asked = prompter.ask(designRequest, new AbortController().signal);
  await new Promise((r) => setTimeout(r, 20));
  await lines.close();
  await assert.rejects(asked, InputClosedError);
  await input.end();
});

Deno.test("a key typed after Esc is never swallowed: Esc, 2, Enter denies, it does not allow once", async () => {
  // The reader skipped the key after a lone Esc as the end of an escape
  // sequence, without echo: Esc (a vim habit, or to "cancel"), then 2 and
  // Enter answered "" (allow once) instead of 2 (deny).
  const { input, clock, lines, echoed } = guardedTerminal();
  let out = "";
  const prompter = createTerminalPrompter({ lines, write: (s) => out += s, inputGuardMs: 400 });
  const answer = prompter.ask(designRequest, new AbortController().signal);
  await until(() => out.endsWith("Your choice [1]: "));
  clock.now = 5_000;
  await input.type("\x1b");
  await new Promise((r) => setTimeout(r, 5));
  await input.type("2\r");
  assert.equal(await answer, "deny-once");
  assert.equal(echoed(), "2\r\n", "the 2 is echoed");
  // Alt-2 (Esc and 2 in one read) types 2 too.
  const alt = lines.readLine();
  await input.type("\x1b2\r");
  assert.equal(await alt, "2");
  // A sequence cut short by a control key (a real terminal never sends one)
  // gives back its keys: the line is not the empty default.
  const cut = lines.readLine();
  await input.type("\x1b[2\r");
  assert.equal(await cut, "[2");
  // Complete sequences (arrow keys, SS3 keys) are still skipped.
  const arrows = lines.readLine();
  await input.type("\x1b[A\x1bOB\x1b[3~4\r");
  assert.equal(await arrows, "4");
  await input.end();
  await lines.close();
});

Deno.test("output printed while a prompt is open cannot push that prompt off the screen", async () => {
  // The review's repro on a real terminal: the operator reads a.test; its
  // client resets the connection, b.test takes its place, and at once the
  // container sends requests a rule denies: their record lines, printed above
  // the open question, scrolled b.test's banner (and "Prompt closed") away,
  // and the operator's "1", meant for a.test, allowed b.test.
  const dir = await Deno.makeTempDir({ prefix: "nm-term-" });
  const { input, clock, lines } = guardedTerminal();
  const broker = new DecisionBroker({ rules: new RulesStore(`${dir}/network-rules.json`) });
  let out = "";
  const term = attachTerminal(broker, {
    lines,
    write: (s) => out += s,
    ansi: true,
    inputGuardMs: 400,
  });
  const req = (host: string, path: string) => ({
    target: { scheme: "http" as const, host, port: 80, path },
    method: "GET",
    client: "127.0.0.1:1",
  });
  try {
    const gone = new AbortController();
    const a = broker.decide(req("a.test", "/docs"), gone.signal);
    const b = broker.decide(req("b.test", "/upload?secret=1"));
    await until(() => out.includes("Host: a.test") && out.endsWith("Your choice [1]: "));
    clock.now = 5_000;
    gone.abort();
    await a;
    await until(() => out.includes("Host: b.test") && out.endsWith("Your choice [1]: "));
    for (let i = 0; i < 30; i++) {
      term.printLine(`12:00:00.000 DENY  GET 403 http://denied.test/x${i} (a)`);
    }
    term.printLine(Array.from({ length: 300 }, (_, i) => `denied line ${i} (b)`).join("\n"));
    // The operator still sees b.test's prompt right above the question.
    assert.ok(!out.includes("(a)") && !out.includes("(b)"), "nothing printed while it is open");
    const shown = out.slice(out.lastIndexOf("Network Access Request"));
    assert.ok(shown.startsWith("Network Access Request\nHost: b.test\n"));
    assert.ok(shown.endsWith("  6. Always deny this exact URL\n\nYour choice [1]: "));
    // A line about the operator's own answer (a rule not saved) is not held:
    // it goes above the question at once, which is redrawn below it.
    term.printLine('Could not save rule "a.test": allow-domain (disk full)', { urgent: true });
    assert.ok(
      out.endsWith(
        '\r\x1b[2KCould not save rule "a.test": allow-domain (disk full)\nYour choice [1]: ',
      ),
      JSON.stringify(out.slice(-120)),
    );
    clock.now = 6_000;
    await input.type("2\r");
    assert.equal((await b).action, "deny");
    // The held lines follow the answer, in order; a flood is cut short.
    const after = out.slice(out.lastIndexOf("Your choice [1]: "));
    assert.match(after, /x0 \(a\)\n[^]*x29 \(a\)\ndenied line 0 \(b\)\n/);
    assert.equal(
      after.split("\n").filter((l) => l.endsWith("(a)") || l.endsWith("(b)")).length,
      200,
    );
    assert.match(after, /\(130 more lines printed while the prompt was open are not shown/);
    // Once no question is open, lines go out at once again.
    out = "";
    term.printLine("later");
    assert.equal(out, "later\n");
  } finally {
    broker.close();
    await term.close();
    await input.end();
    await lines.close();
    await Deno.remove(dir, { recursive: true });
  }
});
