/**
 * `netmonitor prompt` end to end: the real CLI on a real terminal (tmux)
 * attached through the real control socket to a real broker and rules file.
 * Requests are injected by tests/e2e/_broker_fixture.ts (the proxy's
 * decision side without HTTP).
 */
import assert from "node:assert/strict";
import { has } from "../_helpers/tools.ts";
import { TmuxSession } from "./_tmux.ts";

const MAIN = new URL("../../main.ts", import.meta.url).pathname;
const FIXTURE = new URL("./_broker_fixture.ts", import.meta.url).pathname;

/** The fixture: a broker with a control socket; requests go in on stdin, decisions come out. */
class Proxy {
  readonly #child: Deno.ChildProcess;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #reader: ReadableStreamDefaultReader<string>;
  #buf = "";

  constructor(dataDir: string, timeoutMs = 60_000) {
    this.#child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", FIXTURE, "--data-dir", dataDir, "--socket", "--timeout", `${timeoutMs}`],
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    this.#writer = this.#child.stdin.getWriter();
    this.#reader = this.#child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  }

  /** Next JSON line the fixture printed. */
  async next(): Promise<Record<string, unknown>> {
    for (;;) {
      const i = this.#buf.indexOf("\n");
      if (i >= 0) {
        const line = this.#buf.slice(0, i);
        this.#buf = this.#buf.slice(i + 1);
        return JSON.parse(line);
      }
      const { value, done } = await this.#reader.read();
      if (done) throw new Error("fixture exited");
      this.#buf += value;
    }
  }

  async request(host: string, path: string): Promise<void> {
    const input = {
      target: { scheme: "http", host, port: 80, path },
      method: "GET",
      client: "10.0.0.2:4000",
    };
    await this.#writer.write(new TextEncoder().encode(JSON.stringify(input) + "\n"));
  }

  /** Ends input; the fixture exits once pending requests are decided. */
  async stop(): Promise<void> {
    await this.#writer.close().catch(() => {});
    for (;;) {
      const { done } = await this.#reader.read();
      if (done) break;
    }
    await this.#child.status;
  }
}

function promptCli(dataDir: string) {
  return { cmd: [Deno.execPath(), "run", "-A", MAIN, "prompt", "--data-dir", dataDir] };
}

const tty = { ignore: !has("tmux") };

/**
 * A person reads the prompt before answering. Keys typed within 400 ms of a
 * new prompt appearing are thrown away (the input guard), so wait longer.
 */
const reading = () => new Promise((r) => setTimeout(r, 600));

Deno.test("no proxy running: a clear error and exit 1", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nm-prompt-" });
  try {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", MAIN, "prompt", "--data-dir", dir],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(out.code, 1);
    const stderr = new TextDecoder().decode(out.stderr);
    assert.ok(
      stderr.includes(
        `No netmonitor proxy is running (no control socket at ${dir}/netmonitor.sock)`,
      ),
      stderr,
    );
    assert.ok(!stderr.includes("    at "), "no stack trace");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "an answer typed in `netmonitor prompt` releases the request and saves the rule",
  ...tty,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "nm-prompt-" });
    const proxy = new Proxy(dir);
    try {
      assert.deepEqual(await proxy.next(), { ready: true });
      await using t = await TmuxSession.start(promptCli(dir));
      await t.waitFor("Waiting for requests; Ctrl-C to quit.");
      await proxy.request("api.example.test", "/repos/user/repo");
      const screen = await t.waitFor("Your choice [1]:");
      for (
        const line of [
          "Network Access Request",
          "Host: api.example.test",
          "Method: GET",
          "Path: /repos/user/repo",
          "  3. Always allow api.example.test",
          "  6. Always deny this exact URL",
        ]
      ) {
        assert.ok(screen.includes(line), `missing "${line}" in:\n${screen}`);
      }
      await reading();
      await t.type("3");
      await t.press("Enter");
      assert.deepEqual(await proxy.next(), {
        host: "api.example.test",
        path: "/repos/user/repo",
        decision: {
          action: "allow",
          source: "prompt",
          reason: 'prompt: allow-domain (saved rule "api.example.test")',
        },
      });
      await t.waitFor("Answer accepted: allow-domain.");
      assert.deepEqual(JSON.parse(await Deno.readTextFile(`${dir}/network-rules.json`)), {
        "api.example.test": "allow-domain",
      });
      // Ctrl-C detaches cleanly.
      await t.press("C-c");
      assert.equal(await t.exitCode(), 0);
      await t.waitFor("Detached from the netmonitor proxy.");
    } finally {
      await proxy.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "two `netmonitor prompt` terminals: the first answer wins, the other is told",
  ...tty,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "nm-prompt-" });
    const proxy = new Proxy(dir);
    try {
      await proxy.next();
      await using first = await TmuxSession.start(promptCli(dir));
      await using second = await TmuxSession.start(promptCli(dir));
      await first.waitFor("Waiting for requests");
      await second.waitFor("Waiting for requests");
      await proxy.request("race.example.test", "/x");
      await first.waitFor("Your choice [1]:");
      await second.waitFor("Your choice [1]:");
      await reading();
      await first.type("2");
      await first.press("Enter");
      const d = await proxy.next();
      assert.deepEqual(d.decision, {
        action: "deny",
        source: "prompt",
        reason: "prompt: deny-once",
      });
      await first.waitFor("Answer accepted: deny-once.");
      await second.waitFor(/Prompt closed: answered elsewhere \(by prompt#\d+\): deny-once\./);
      // The second terminal is not stuck: it answers the next request.
      await proxy.request("next.example.test", "/y");
      const screen = await second.waitFor("Host: next.example.test");
      await second.waitFor("Your choice [1]:", 30_000, screen.indexOf("Host: next.example.test"));
      await reading();
      await second.press("Enter");
      assert.deepEqual((await proxy.next()).decision, {
        action: "allow",
        source: "prompt",
        reason: "prompt: allow-once",
      });
      await first.waitFor(/answered elsewhere \(by prompt#\d+\): allow-once/);
    } finally {
      await proxy.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "when the proxy goes away, `netmonitor prompt` says so and exits 0",
  ...tty,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "nm-prompt-" });
    const proxy = new Proxy(dir, 500);
    try {
      await proxy.next();
      await using t = await TmuxSession.start(promptCli(dir));
      await t.waitFor("Waiting for requests");
      // Nobody answers: the request times out and the prompt says so.
      await proxy.request("slow.example.test", "/");
      await t.waitFor("Your choice [1]:");
      assert.equal(((await proxy.next()).decision as { source: string }).source, "timeout");
      await t.waitFor("Prompt closed: no answer in time.");
      await proxy.stop();
      await t.waitFor("The netmonitor proxy went away; exiting.");
      assert.equal(await t.exitCode(), 0);
    } finally {
      await proxy.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

/** `netmonitor prompt` with `input` piped to its stdin (a script of answers). */
function pipedPrompt(dir: string, input: string) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, "prompt", "--data-dir", dir],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const w = child.stdin.getWriter();
  const written = w.write(new TextEncoder().encode(input)).then(() => w.close());
  // Bounded: a prompter that never notices its input ended fails the test instead of hanging it.
  const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
  let stdout = "";
  const reading = (async () => {
    for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) stdout += chunk;
  })();
  const stderr = new Response(child.stderr).text();
  return {
    async waitFor(text: string): Promise<void> {
      for (let i = 0; i < 400 && !stdout.includes(text); i++) {
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.ok(stdout.includes(text), `no "${text}" in:\n${stdout}`);
    },
    async finish() {
      await written;
      const { code } = await child.status;
      clearTimeout(timer);
      await reading;
      return { code, stdout, stderr: await stderr };
    },
  };
}

Deno.test("piped answers: empty input detaches at once; used-up answers detach after their rule", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nm-prompt-" });
  const proxy = new Proxy(dir);
  try {
    await proxy.next();
    const idle = await pipedPrompt(dir, "").finish();
    assert.equal(idle.code, 0, idle.stderr);
    assert.match(idle.stdout, /Attached to the netmonitor proxy .*\nInput closed; detached/);

    // One answer in the script: it answers the first prompt, and the prompter
    // leaves once the rule it saved is reported, not at the next prompt.
    const running = pipedPrompt(dir, "4\n");
    await running.waitFor("Waiting for requests");
    await proxy.request("once.example.test", "/a");
    assert.deepEqual((await proxy.next()).decision, {
      action: "deny",
      source: "prompt",
      reason: 'prompt: deny-domain (saved rule "once.example.test")',
    });
    const done = await running.finish();
    assert.equal(done.code, 0, done.stderr);
    assert.match(
      done.stdout,
      /Answer accepted: deny-domain\.\nSaved rule "once\.example\.test": deny-domain\.\nInput closed; detached from the netmonitor proxy\.\n$/,
    );
  } finally {
    await proxy.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("piped answers: the last answer's rule is reported even when another prompt comes first", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nm-prompt-" });
  // The second request waits for nobody: a short timeout decides it.
  const proxy = new Proxy(dir, 3_000);
  try {
    await proxy.next();
    // Two hosts wait: the second prompt is shown as soon as the first is
    // answered, before the first answer's rule has been saved.
    await proxy.request("first.example.test", "/a");
    await proxy.request("second.example.test", "/b");
    const running = pipedPrompt(dir, "4\n");
    const done = await running.finish();
    assert.equal(done.code, 0, done.stderr);
    assert.match(done.stdout, /Answer accepted: deny-domain\.\n/);
    assert.match(done.stdout, /Saved rule "first\.example\.test": deny-domain\.\n/);
    assert.match(done.stdout, /Input closed; detached from the netmonitor proxy\.\n$/);
  } finally {
    await proxy.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
