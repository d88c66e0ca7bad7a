/**
 * The terminal prompt on a real TTY (tmux), driven like a person: read the
 * prompt, type a digit, press Enter. The broker, rules file and prompter are
 * the real ones; requests are injected by tests/e2e/_broker_fixture.ts.
 */
import assert from "node:assert/strict";
import { has } from "../_helpers/tools.ts";
import { TmuxSession } from "./_tmux.ts";

const FIXTURE = new URL("./_broker_fixture.ts", import.meta.url).pathname;

const DESIGN_PROMPT =
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

Your choice [1]:`;

function request(host: string, path?: string, method = path ? "GET" : "CONNECT") {
  return JSON.stringify({
    target: { scheme: "https", host, port: 443, ...(path ? { path } : {}) },
    method,
    client: "172.17.0.2:51234",
  });
}

interface Result {
  host: string;
  path?: string;
  decision: { action: string; source: string; reason: string };
}

async function run(requests: string[], body: (t: TmuxSession) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "nm-tty-" });
  const out = `${dir}/out.jsonl`;
  try {
    await using tmux = await TmuxSession.start({
      cmd: [
        Deno.execPath(),
        "run",
        "-A",
        FIXTURE,
        "--data-dir",
        dir,
        "--terminal",
        "--out",
        out,
        ...requests.flatMap((r) => ["--request", r]),
      ],
    });
    await body(tmux);
    assert.equal(await tmux.exitCode(), 0);
    const results = (await Deno.readTextFile(out)).trim().split("\n").map((l) => JSON.parse(l));
    const rules = await Deno.readTextFile(`${dir}/network-rules.json`).then(
      JSON.parse,
      () => ({}),
    );
    return {
      results: results.filter((r) => r.decision) as Result[],
      rules: rules as Record<string, string>,
    };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const tty = { ignore: !has("tmux") };

/**
 * A person reads the prompt before answering. Keys typed within 400 ms of a
 * new prompt appearing are thrown away (the input guard), so wait longer.
 */
const reading = () => new Promise((r) => setTimeout(r, 600));

Deno.test({
  name: "TTY: the design's prompt; a bad choice is asked again; 3 saves the host",
  ...tty,
  fn: async () => {
    const { results, rules } = await run(
      [request("api.github.com", "/repos/user/repo")],
      async (t) => {
        const screen = await t.waitFor("Your choice [1]:");
        assert.ok(screen.includes(DESIGN_PROMPT), `prompt differs from the design:\n${screen}`);
        await reading();
        await t.type("9");
        await t.press("Enter");
        await t.waitFor('Invalid choice "9": type a number from 1 to 6 and press Enter.');
        await t.type("3");
        await t.press("Enter");
      },
    );
    assert.deepEqual(results.map((r) => r.decision), [{
      action: "allow",
      source: "prompt",
      reason: 'prompt: allow-domain (saved rule "api.github.com")',
    }]);
    assert.deepEqual(rules, { "api.github.com": "allow-domain" });
  },
});

Deno.test({
  name: "TTY: Enter alone allows once; Backspace edits the choice",
  ...tty,
  fn: async () => {
    const { results, rules } = await run(
      [request("one.example.test", "/a"), request("two.example.test", "/b")],
      async (t) => {
        await t.waitFor("Your choice [1]:");
        await reading();
        await t.press("Enter");
        const screen = await t.waitFor("Host: two.example.test");
        const from = screen.indexOf("Host: two.example.test");
        await t.waitFor("Your choice [1]:", 30_000, from);
        await reading();
        // Typed 6 by mistake, erased it, then 2.
        await t.type("6");
        await t.press("BSpace");
        await t.type("2");
        await t.press("Enter");
      },
    );
    assert.deepEqual(
      results.map((r) => [r.host, r.decision.action, r.decision.reason]).sort(),
      [
        ["one.example.test", "allow", "prompt: allow-once"],
        ["two.example.test", "deny", "prompt: deny-once"],
      ],
    );
    assert.deepEqual(rules, {});
  },
});

Deno.test({
  name: "TTY: a tunnel offers no URL answers; 5 is refused, 4 denies the host",
  ...tty,
  fn: async () => {
    const { results, rules } = await run([request("pinned.example.test")], async (t) => {
      const screen = await t.waitFor("Your choice [1]:");
      assert.match(screen, /Path: \(unknown: HTTPS tunnel, not intercepted\)/);
      assert.match(
        screen,
        /5\. Always allow this exact URL \(not available: a tunnel has no URL\)/,
      );
      await reading();
      await t.type("5");
      await t.press("Enter");
      await t.waitFor("Options 5 and 6 need a URL");
      await t.type("4");
      await t.press("Enter");
    });
    assert.deepEqual(results.map((r) => r.decision), [{
      action: "deny",
      source: "prompt",
      reason: 'prompt: deny-domain (saved rule "pinned.example.test")',
    }]);
    assert.deepEqual(rules, { "pinned.example.test": "deny-domain" });
  },
});

Deno.test({
  name: "TTY: 6 saves the exact URL as deny-url",
  ...tty,
  fn: async () => {
    const { results, rules } = await run([request("api.example.test", "/v1/x?q=1")], async (t) => {
      await t.waitFor("Your choice [1]:");
      await reading();
      await t.type("6");
      await t.press("Enter");
    });
    assert.equal(
      results[0].decision.reason,
      'prompt: deny-url (saved rule "https://api.example.test/v1/x?q=1")',
    );
    assert.deepEqual(rules, { "https://api.example.test/v1/x?q=1": "deny-url" });
  },
});
