/**
 * `netmonitor run` as a person runs it: the CLI process, real curl clients,
 * loopback origins reached through --resolve, SIGTERM to stop.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { has } from "../_helpers/tools.ts";
import { startOrigin, TEST_CA_PATH } from "../_helpers/origin.ts";
import { startControlServer } from "../../lib/decide/control.ts";
import { cliCommand, rulesFile, runCli, withDataDir } from "./_cli.ts";

const noCurl = !has("curl");

/** A running `netmonitor run` child: its port, and all it printed so far. */
interface Running {
  child: Deno.ChildProcess;
  port: number;
  out: { text: string };
  err: Promise<string>;
  /** Waits until stdout matches. */
  waitFor(re: RegExp, ms?: number): Promise<RegExpMatchArray>;
  /** SIGTERM, then the exit code. */
  stop(): Promise<number>;
}

/** Starts `netmonitor run --port 0 ...args`; `stdin: "piped"` keeps its input open. */
async function startRun(
  dataDir: string,
  args: string[],
  io: { stdin?: "piped" } = {},
): Promise<Running> {
  const child = cliCommand(["run", "--port", "0", ...args], { dataDir }, io).spawn();
  const out = { text: "" };
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const pump = (async () => {
    while (true) {
      const r = await reader.read();
      if (r.done) return;
      out.text += r.value;
    }
  })();
  const err = new Response(child.stderr).text();
  const waitFor = async (re: RegExp, ms = 30_000) => {
    const end = Date.now() + ms;
    while (Date.now() < end) {
      const m = out.text.match(re);
      if (m) return m;
      await new Promise((r) => setTimeout(r, 20));
    }
    throw new Error(`timed out waiting for ${re}; stdout so far:\n${out.text}`);
  };
  const m = await waitFor(/Listening on http:\/\/127\.0\.0\.1:(\d+)\n/);
  let status: Promise<Deno.CommandStatus> | undefined;
  return {
    child,
    port: Number(m[1]),
    out,
    err,
    waitFor,
    async stop() {
      if (!status) {
        try {
          child.kill("SIGTERM");
        } catch { /* exited */ }
        status = child.status;
      }
      const s = await status;
      await pump;
      return s.code;
    },
  };
}

async function curl(proxyPort: number, args: string[]) {
  const out = await new Deno.Command("curl", {
    args: ["-sS", "--max-time", "20", "-x", `http://127.0.0.1:${proxyPort}`, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const d = new TextDecoder();
  return { code: out.code, stdout: d.decode(out.stdout), stderr: d.decode(out.stderr) };
}

Deno.test({
  name: "e2e run: allows and denies from the rules, logs every request, exits 0 on SIGTERM",
  ignore: noCurl,
  async fn() {
    const origin = await startOrigin();
    await withDataDir(async (dir) => {
      await Deno.writeTextFile(
        rulesFile(dir),
        '{\n  // comment\n  "origin.test": "allow-domain",\n  "blocked.test": "deny-domain"\n}\n',
      );
      const p = origin.port;
      const run = await startRun(dir, [
        "--resolve",
        `origin.test:${p}:127.0.0.1`,
        "--resolve",
        `blocked.test:${p}:127.0.0.1`,
        "--no-intercept",
      ]);
      try {
        const ok = await curl(run.port, [`http://origin.test:${p}/hello`]);
        assert.equal(ok.stdout, "hello from origin");
        const no = await curl(run.port, [
          "-w",
          "%{http_code}",
          "-o",
          "/dev/null",
          `http://blocked.test:${p}/`,
        ]);
        assert.equal(no.stdout, "403");
        const unknown = await curl(run.port, [
          "-w",
          "%{http_code}",
          "-o",
          "/dev/null",
          `http://unknown.test:${p}/`,
        ]);
        assert.equal(unknown.stdout, "403", "stdin is not a terminal: non-interactive, deny");
        await run.waitFor(/DENY\s+GET\s+403 http:\/\/unknown\.test/);
        assert.match(run.out.text, /ALLOW GET\s+200 http:\/\/origin\.test:\d+\/hello/);
        assert.match(
          run.out.text,
          /DENY\s+GET\s+403 http:\/\/blocked\.test:\d+\/\s.*rule "blocked\.test": deny-domain/,
        );
      } finally {
        assert.equal(await run.stop(), 0, await run.err);
      }
      assert.match(run.out.text, /Stopped\.\n$/);
      const lines = (await Deno.readTextFile(join(dir, "network-access.log"))).trim().split("\n");
      assert.equal(lines.length, 3);
      const recs = lines.map((l) => JSON.parse(l));
      assert.deepEqual(recs.map((r) => [r.host, r.decision, r.source, r.status]), [
        ["origin.test", "allow", "rule", 200],
        ["blocked.test", "deny", "rule", 403],
        ["unknown.test", "deny", "default", 403],
      ]);
    });
    await origin.close();
  },
});

Deno.test({
  name: "e2e run: rules edited by another process take effect without a restart",
  ignore: noCurl,
  async fn() {
    const origin = await startOrigin();
    await withDataDir(async (dir) => {
      const p = origin.port;
      const run = await startRun(dir, ["--resolve", `live.test:${p}:127.0.0.1`, "--no-intercept"]);
      try {
        const url = `http://live.test:${p}/hello`;
        const code = async () =>
          (await curl(run.port, ["-w", "%{http_code}", "-o", "/dev/null", url])).stdout;
        assert.equal(await code(), "403");
        const add = await runCli(["rules", "add", "live.test", "allow-domain"], { dataDir: dir });
        assert.equal(add.code, 0, add.stderr);
        await run.waitFor(/Rules reloaded/);
        assert.equal(await code(), "200");
        // An invalid edit keeps the last good rules.
        await Deno.writeTextFile(rulesFile(dir), '{ "live.test": "alow" }');
        await new Promise((r) => setTimeout(r, 500));
        assert.equal(await code(), "200");
      } finally {
        assert.equal(await run.stop(), 0);
      }
      assert.match(await run.err, /warning: .*alow.*\nThe last good rules stay in force\./s);
    });
    await origin.close();
  },
});

Deno.test({
  name: "e2e run: SIGTERM answers a request in flight before exiting",
  ignore: noCurl,
  async fn() {
    const origin = await startOrigin();
    await withDataDir(async (dir) => {
      await Deno.writeTextFile(rulesFile(dir), '{ "slow.test": "allow" }');
      const p = origin.port;
      const run = await startRun(dir, ["--resolve", `slow.test:${p}:127.0.0.1`, "--no-intercept"]);
      const inflight = curl(run.port, [`http://slow.test:${p}/slow?ms=700`]);
      await new Promise((r) => setTimeout(r, 250));
      const code = await run.stop();
      assert.equal((await inflight).stdout, "slow");
      assert.equal(code, 0);
      const log = await Deno.readTextFile(join(dir, "network-access.log"));
      assert.match(log, /"url":"http:\/\/slow\.test:\d+\/slow\?ms=700".*"status":200/);
    });
    await origin.close();
  },
});

Deno.test({
  name:
    "e2e run: --prompt-via socket: a `netmonitor prompt` answer releases the request and saves the rule",
  ignore: noCurl,
  async fn() {
    const origin = await startOrigin();
    await withDataDir(async (dir) => {
      const p = origin.port;
      const run = await startRun(dir, [
        "--resolve",
        `ask.test:${p}:127.0.0.1`,
        "--prompt-via",
        "socket",
        "--no-intercept",
      ]);
      let prompt: Deno.ChildProcess | undefined;
      try {
        const request = curl(run.port, [`http://ask.test:${p}/hello`]);
        await run.waitFor(/no prompt is attached/);
        prompt = cliCommand(["prompt"], { dataDir: dir }, { stdin: "piped" }).spawn();
        const w = prompt.stdin.getWriter();
        await w.write(new TextEncoder().encode("3\n")); // always allow ask.test
        const r = await request;
        assert.equal(r.stdout, "hello from origin");
        await w.close();
        const rules = JSON.parse(await Deno.readTextFile(rulesFile(dir)));
        assert.deepEqual(rules, { [`ask.test:${p}`]: "allow-domain" });
        await run.waitFor(/ALLOW GET\s+200 http:\/\/ask\.test/);
      } finally {
        if (prompt) {
          try {
            prompt.kill("SIGTERM");
          } catch { /* exited */ }
          await prompt.output().catch(() => {});
        }
        assert.equal(await run.stop(), 0);
      }
      const rec = JSON.parse((await Deno.readTextFile(join(dir, "network-access.log"))).trim());
      assert.deepEqual([rec.decision, rec.source], ["allow", "prompt"]);
    });
    await origin.close();
  },
});

Deno.test({
  name: "e2e run: HTTPS is intercepted with the CA made in the data dir (key 0600)",
  ignore: noCurl,
  async fn() {
    const origin = await startOrigin({ tls: true });
    await withDataDir(async (dir) => {
      const p = origin.port;
      await Deno.writeTextFile(
        rulesFile(dir),
        `{ "https://origin.test:${p}/secret": "deny-url", "origin.test": "allow" }`,
      );
      const run = await startRun(dir, [
        "--resolve",
        `origin.test:${p}:127.0.0.1`,
        "--upstream-ca",
        TEST_CA_PATH,
      ]);
      try {
        assert.match(run.out.text, /Created the netmonitor CA/);
        const ca = join(dir, "netmonitor-ca.pem");
        assert.equal((await Deno.stat(join(dir, "netmonitor-ca-key.pem"))).mode! & 0o777, 0o600);
        const ok = await curl(run.port, ["--cacert", ca, `https://origin.test:${p}/hello`]);
        assert.equal(ok.stdout, "hello from origin", ok.stderr);
        const no = await curl(run.port, [
          "--cacert",
          ca,
          "-w",
          "%{http_code}",
          "-o",
          "/dev/null",
          `https://origin.test:${p}/secret`,
        ]);
        assert.equal(no.stdout, "403");
        await run.waitFor(/DENY\s+GET\s+403 https:\/\/origin\.test:\d+\/secret/);
      } finally {
        assert.equal(await run.stop(), 0);
      }
    });
    await origin.close();
  },
});

Deno.test("e2e status: every proxy of the data dir, where it listens and whether it asks", async () => {
  await withDataDir(async (dir) => {
    const none = await runCli(["status"], { dataDir: dir });
    assert.equal(none.code, 3, none.stderr);
    assert.equal(none.stdout, `No netmonitor proxy is running for ${dir}\n`);
    const noneJson = await runCli(["status", "--json"], { dataDir: dir });
    assert.deepEqual(JSON.parse(noneJson.stdout), { running: false, dataDir: dir, proxies: [] });

    // Two that never prompt (one per Docker network, say), then one that asks.
    const quiet = await startRun(dir, ["--non-interactive", "--no-intercept"]);
    const second = await startRun(dir, ["--non-interactive", "--no-intercept"]);
    let asking: Running | undefined;
    try {
      const prompt = await runCli(["prompt"], { dataDir: dir });
      assert.equal(prompt.code, 1);
      assert.match(
        prompt.stderr,
        /runs non-interactively \(--non-interactive, or no terminal on its standard input\): it answers every request by itself/,
      );
      // The way out works whichever made it so: a proxy started without a terminal
      // (nohup, a service) never saw --non-interactive, so removing it is no advice.
      assert.match(prompt.stderr, /\nRestart it with --prompt-via socket to answer its requests/);
      assert.doesNotMatch(prompt.stderr, /Restart it without --non-interactive/);
      asking = await startRun(dir, ["--prompt-via", "socket", "--no-intercept"]);
      const text = await runCli(["status"], { dataDir: dir });
      assert.equal(text.code, 0, text.stderr);
      assert.match(
        text.stdout,
        new RegExp(
          `netmonitor proxy running \\(pid ${quiet.child.pid}\\)\n` +
            `  listening: http://127\\.0\\.0\\.1:${quiet.port}\n` +
            `  prompts: +none \\(non-interactive: requests no rule covers are denied\\)\n`,
        ),
      );
      // --prompt-via socket and no `netmonitor prompt` attached: nobody can answer.
      assert.ok(
        text.stdout.includes(
          `listening: http://127.0.0.1:${asking.port}\n  prompts:   nobody can answer them now: ` +
            "no `netmonitor prompt` client is connected and the proxy does not ask in its " +
            "terminal (run `netmonitor prompt`); unanswered requests are denied after 60s\n",
        ),
        text.stdout,
      );
      assert.match(text.stdout, new RegExp(`data dir: ${dir}\n$`));
      // A second proxy that would ask is refused, and told what to do instead.
      const another = await runCli([
        "run",
        "--port",
        "0",
        "--prompt-via",
        "socket",
        "--no-intercept",
      ], {
        dataDir: dir,
      });
      assert.equal(another.code, 1);
      assert.match(
        another.stderr,
        /^error: Another netmonitor proxy is running \(control socket .* is live\): only one proxy per data dir asks \(`netmonitor status` shows it\)\. Run this one with --non-interactive, or with its own --data-dir\n$/m,
      );
      const json = JSON.parse((await runCli(["status", "--json"], { dataDir: dir })).stdout);
      const never = { terminal: false, clients: 0, default: "deny" };
      const expected = [
        {
          pid: quiet.child.pid,
          listen: `127.0.0.1:${quiet.port}`,
          prompts: false,
          prompting: never,
        },
        {
          pid: second.child.pid,
          listen: `127.0.0.1:${second.port}`,
          prompts: false,
          prompting: never,
        },
        {
          pid: asking.child.pid,
          listen: `127.0.0.1:${asking.port}`,
          prompts: true,
          prompting: { terminal: false, clients: 0, default: "deny", timeoutMs: 60_000 },
        },
      ].sort((a, b) => a.pid - b.pid);
      assert.deepEqual(json, { running: true, dataDir: dir, proxies: expected });

      // The first one leaves: the others are still seen.
      assert.equal(await quiet.stop(), 0);
      const after = JSON.parse((await runCli(["status", "--json"], { dataDir: dir })).stdout);
      assert.deepEqual(
        after.proxies.map((p: { pid: number }) => p.pid),
        [second.child.pid, asking.child.pid].sort((a, b) => a - b),
      );
      // One that is killed leaves its socket behind; status removes it.
      second.child.kill("SIGKILL");
      await second.child.status;
      const killed = JSON.parse((await runCli(["status", "--json"], { dataDir: dir })).stdout);
      assert.deepEqual(killed.proxies.map((p: { pid: number }) => p.pid), [asking.child.pid]);
      assert.deepEqual(
        (await Array.fromAsync(Deno.readDir(`${dir}/proxies`))).map((e) => e.name),
        [`${asking.child.pid}.sock`],
      );
    } finally {
      await quiet.stop();
      await second.stop();
      if (asking) assert.equal(await asking.stop(), 0);
    }
    assert.equal((await runCli(["status"], { dataDir: dir })).code, 3);
  });
});

/** The `prompts:` line `netmonitor status` prints for the one proxy of `dir`. */
async function promptsLine(dir: string): Promise<string> {
  const r = await runCli(["status"], { dataDir: dir });
  assert.equal(r.code, 0, r.stdout + r.stderr);
  return r.stdout.match(/^ {2}prompts: +(.*)$/m)![1];
}

/** `netmonitor prompt` attached to the proxy of `dir`, its input kept open; `close` detaches it. */
async function attachPrompt(dir: string) {
  const child = cliCommand(["prompt"], { dataDir: dir }, { stdin: "piped" }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!text.includes("Attached to the netmonitor proxy")) {
    const r = await reader.read();
    if (r.done) throw new Error(`netmonitor prompt did not attach:\n${text}`);
    text += r.value;
  }
  return {
    /** Ends its input (it detaches and exits); its exit code and all it printed. */
    async close() {
      await child.stdin.close();
      const err = new Response(child.stderr).text();
      for (let r = await reader.read(); !r.done; r = await reader.read()) text += r.value;
      return { code: (await child.status).code, output: text + (await err) };
    },
  };
}

Deno.test("e2e status: says where prompts are answered, and by how many `netmonitor prompt` clients", async () => {
  await withDataDir(async (dir) => {
    // The proxy's own terminal asks (its input, kept open, is the terminal here).
    const run = await startRun(dir, ["--prompt-via", "terminal", "--no-intercept"], {
      stdin: "piped",
    });
    try {
      assert.equal(
        await promptsLine(dir),
        "answered in the proxy's terminal (no `netmonitor prompt` client connected); " +
          "unanswered requests are denied after 60s",
      );
      const first = await attachPrompt(dir);
      assert.equal(
        await promptsLine(dir),
        "answered in the proxy's terminal and by 1 connected `netmonitor prompt` client; " +
          "unanswered requests are denied after 60s",
      );
      const second = await attachPrompt(dir);
      assert.match(await promptsLine(dir), /and by 2 connected `netmonitor prompt` clients;/);
      const json = JSON.parse((await runCli(["status", "--json"], { dataDir: dir })).stdout);
      assert.deepEqual(json.proxies[0].prompting, {
        terminal: true,
        clients: 2,
        default: "deny",
        timeoutMs: 60_000,
      });
      for (const client of [first, second]) {
        const { code, output } = await client.close();
        assert.equal(code, 0, output);
      }
      // A client that left is not counted.
      let line = "";
      for (let i = 0; i < 100 && !line.includes("(no `netmonitor prompt`"); i++) {
        line = await promptsLine(dir);
        if (!line.includes("(no `netmonitor prompt`")) await new Promise((r) => setTimeout(r, 50));
      }
      assert.match(line, /^answered in the proxy's terminal \(no `netmonitor prompt` client/);
    } finally {
      await run.child.stdin.close().catch(() => {});
      assert.equal(await run.stop(), 0);
    }
    // Non-interactive with --default allow says so.
    const quiet = await startRun(dir, [
      "--non-interactive",
      "--default",
      "allow",
      "--no-intercept",
    ]);
    try {
      assert.equal(
        await promptsLine(dir),
        "none (non-interactive: requests no rule covers are allowed)",
      );
    } finally {
      assert.equal(await quiet.stop(), 0);
    }
  });
});

Deno.test("e2e status: an older proxy, whose hello does not say who answers, is still shown", async () => {
  await withDataDir(async (dir) => {
    // What a proxy from before `prompting` says on its status socket.
    const old = await startControlServer(
      { addPrompter: () => () => {}, subscribe: () => () => {} },
      `${dir}/proxies/${Deno.pid}.sock`,
      { describe: () => ({ prompts: true, listen: "127.0.0.1:8080" }), prompters: false },
    );
    try {
      const text = await runCli(["status"], { dataDir: dir });
      assert.equal(text.code, 0, text.stderr);
      assert.equal(
        text.stdout,
        `netmonitor proxy running (pid ${Deno.pid})\n` +
          "  listening: http://127.0.0.1:8080\n" +
          "  prompts:   yes (answer with `netmonitor prompt`, or in the proxy's terminal if it has one)\n" +
          `data dir: ${dir}\n`,
      );
      const json = JSON.parse((await runCli(["status", "--json"], { dataDir: dir })).stdout);
      assert.deepEqual(json.proxies, [{ pid: Deno.pid, listen: "127.0.0.1:8080", prompts: true }]);
    } finally {
      await old.close();
    }
  });
});

Deno.test({
  name: "e2e run: with --no-intercept, a host with a deny URL rule gets no tunnel (fail closed)",
  ignore: noCurl,
  async fn() {
    const origin = await startOrigin({ tls: true });
    await withDataDir(async (dir) => {
      const p = origin.port;
      await Deno.writeTextFile(
        rulesFile(dir),
        `{ "https://origin.test:${p}/secret": "deny-url", "origin.test": "allow-domain" }`,
      );
      const run = await startRun(dir, [
        "--no-intercept",
        "--non-interactive",
        "--resolve",
        `origin.test:${p}:127.0.0.1`,
      ]);
      try {
        const r = await curl(run.port, [
          "--cacert",
          TEST_CA_PATH,
          "-w",
          "%{http_connect}",
          "-o",
          "/dev/null",
          `https://origin.test:${p}/secret`,
        ]);
        assert.equal(r.stdout, "403", r.stderr);
        await run.waitFor(/DENY\s+CONNECT\s+403 origin\.test:\d+/);
      } finally {
        assert.equal(await run.stop(), 0);
      }
      const err = await run.err;
      assert.match(
        err,
        new RegExp(
          `--no-intercept: every CONNECT to origin\\.test:${p} is denied: the deny URL rule`,
        ),
      );
      const rec = JSON.parse((await Deno.readTextFile(join(dir, "network-access.log"))).trim());
      assert.deepEqual([rec.method, rec.decision, rec.source], ["CONNECT", "deny", "policy"]);
      assert.match(rec.reason, /needs HTTPS decrypted, and --no-intercept is set/);
      assert.equal(origin.requests.length, 0);
    });
    await origin.close();
  },
});

Deno.test({
  name: "e2e run: a URL nesting thousands of URLs is logged redacted, and the proxy goes on",
  ignore: noCurl,
  async fn() {
    const origin = await startOrigin();
    await withDataDir(async (dir) => {
      const p = origin.port;
      const run = await startRun(dir, [
        "--non-interactive",
        "--no-intercept",
        "--resolve",
        `deep.test:${p}:127.0.0.1`,
      ]);
      try {
        // 700 deep: as deep as a target within the 8 KiB limit can be.
        const deep = `http://deep.test:${p}/?a=` + "http://x?a=".repeat(700) + "1";
        const r = await curl(run.port, ["-w", "%{http_code}", "-o", "/dev/null", deep]);
        assert.equal(r.stdout, "403", r.stderr);
        await run.waitFor(/DENY\s+GET\s+403 http:\/\/deep\.test/);
        // Still serving.
        const again = await curl(run.port, [
          "-w",
          "%{http_code}",
          "-o",
          "/dev/null",
          `http://deep.test:${p}/`,
        ]);
        assert.equal(again.stdout, "403");
      } finally {
        assert.equal(await run.stop(), 0);
      }
      const recs = (await Deno.readTextFile(join(dir, "network-access.log"))).trim().split("\n")
        .map((l) => JSON.parse(l));
      assert.equal(recs.length, 2);
      assert.ok(recs[0].url.length < 200, `${recs[0].url.length} characters logged`);
    });
    await origin.close();
  },
});

Deno.test("e2e run: bad flags are usage errors (exit 2); a busy port is a clear error (exit 1)", async () => {
  await withDataDir(async (dir) => {
    for (
      const [args, msg] of [
        [["--port", "99999"], /--port must be a whole number from 0 to 65535/],
        [["--listen", "example.com"], /--listen "example.com" is not an IP address/],
        [["--resolve", "a.test:80"], /expected HOST:PORT:ADDRESS/],
        [["--prompt-timeout", "soon"], /--prompt-timeout must be a duration/],
        [["--log-max-size", "12"], /--log-max-size must be a size/],
        [["--default", "maybe"], /argument 'maybe' is invalid/],
        [["--non-interactive", "--prompt-via", "socket"], /exclude each other/],
        [
          ["--port", "0", "--upstream-ca", join(dir, "missing.pem")],
          /Cannot read --upstream-ca ".*missing\.pem": .*\n.*PEM file of CA certificates/,
        ],
      ] as [string[], RegExp][]
    ) {
      const r = await runCli(["run", ...args], { dataDir: dir });
      assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
      assert.match(r.stderr, msg);
    }
    const busy = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    try {
      const port = (busy.addr as Deno.NetAddr).port;
      for (const args of [["--no-intercept"], []]) {
        const r = await runCli(["run", ...args, "--port", String(port)], { dataDir: dir });
        assert.equal(r.code, 1);
        assert.match(r.stderr, /Cannot listen on 127\.0\.0\.1:\d+: the address is in use/);
      }
      // Nothing to listen on, so no CA was made for it.
      await assert.rejects(() => Deno.stat(join(dir, "netmonitor-ca.pem")), Deno.errors.NotFound);
    } finally {
      busy.close();
    }
  });
});

/** `netmonitor run --port 0` as a terminal runs it; options follow. */
const RUN_ON_PORT_0 = [
  Deno.execPath(),
  "run",
  "-A",
  "--no-check",
  new URL("../../main.ts", import.meta.url).pathname,
  "run",
  "--port",
  "0",
];

Deno.test({
  name:
    "e2e run: on a terminal, the original design's prompt is answered with a digit; Ctrl-C exits 0",
  ignore: noCurl || !has("tmux"),
  async fn() {
    const { TmuxSession } = await import("./_tmux.ts");
    const origin = await startOrigin();
    await withDataDir(async (dir) => {
      const p = origin.port;
      await using tty = await TmuxSession.start({
        cmd: [
          ...RUN_ON_PORT_0,
          "--no-intercept",
          "--resolve",
          `tty.test:${p}:127.0.0.1`,
        ],
        cwd: dir,
        env: { NETMONITOR_DATA_DIR: dir, NO_COLOR: "1" },
      });
      const screen = await tty.waitFor(/Listening on http:\/\/127\.0\.0\.1:(\d+)/);
      const port = Number(screen.match(/Listening on http:\/\/127\.0\.0\.1:(\d+)/)![1]);
      const request = curl(port, [`http://tty.test:${p}/hello?x=1`]);
      const prompt = await tty.waitFor(/Your choice \[1\]:/);
      assert.match(
        prompt,
        /={20,}\nNetwork Access Request\nHost: tty\.test:\d+\nMethod: GET\nPath: \/hello\?x=1\n/,
      );
      assert.match(prompt, /1\. Allow this request once/);
      assert.match(prompt, /6\. Always deny this exact URL/);
      // Read the prompt first, as a person does: keys typed the instant it appears are ignored.
      await new Promise((r) => setTimeout(r, 600));
      await tty.type("5");
      await tty.press("Enter");
      const r = await request;
      assert.equal(r.stdout, "hello from origin");
      await tty.waitFor(/ALLOW GET\s+200 http:\/\/tty\.test:\d+\/hello\?x=1/);
      // Saved: the same URL is now allowed by the rule without a prompt.
      assert.equal(
        (await curl(port, [`http://tty.test:${p}/hello?x=1`])).stdout,
        "hello from origin",
      );
      const rules = JSON.parse(await Deno.readTextFile(rulesFile(dir)));
      assert.deepEqual(Object.values(rules), ["allow-url"]);
      await tty.press("C-c");
      assert.equal(await tty.exitCode(), 0);
      assert.match(await tty.screen(), /Stopped\./);
    });
    await origin.close();
  },
});

Deno.test({
  name: "e2e run: on a terminal, an intercepted HTTPS request is prompted with its method and path",
  ignore: noCurl || !has("tmux"),
  async fn() {
    const { TmuxSession } = await import("./_tmux.ts");
    const origin = await startOrigin({ tls: true });
    await withDataDir(async (dir) => {
      const p = origin.port;
      await using tty = await TmuxSession.start({
        cmd: [
          ...RUN_ON_PORT_0,
          "--resolve",
          `tls.test:${p}:127.0.0.1`,
          "--upstream-ca",
          TEST_CA_PATH,
        ],
        cwd: dir,
        env: { NETMONITOR_DATA_DIR: dir, NO_COLOR: "1" },
      });
      const screen = await tty.waitFor(/Listening on http:\/\/127\.0\.0\.1:(\d+)/);
      const port = Number(screen.match(/Listening on http:\/\/127\.0\.0\.1:(\d+)/)![1]);
      const ca = join(dir, "netmonitor-ca.pem");
      const secret = `https://tls.test:${p}/secret?page=2`;
      const request = curl(port, [
        "--cacert",
        ca,
        "-w",
        "%{http_code}",
        "-o",
        "/dev/null",
        "-X",
        "POST",
        secret,
      ]);
      const prompt = await tty.waitFor(/Method: POST\nPath: .*\n[^]*Your choice \[1\]:/);
      assert.match(
        prompt,
        /Network Access Request\nHost: tls\.test:\d+\nMethod: POST\nPath: \/secret\?page=2\n/,
      );
      await new Promise((r) => setTimeout(r, 600));
      await tty.type("6");
      await tty.press("Enter");
      assert.equal((await request).stdout, "403");
      await tty.waitFor(/DENY\s+POST\s+403 https:\/\/tls\.test:\d+\/secret\?page=2/);
      const rules = JSON.parse(await Deno.readTextFile(rulesFile(dir)));
      assert.equal(rules[secret], "deny-url");
      assert.equal(origin.requests.some((r) => r.path.startsWith("/secret")), false);
      await tty.press("C-c");
      assert.equal(await tty.exitCode(), 0);
    });
    await origin.close();
  },
});

Deno.test({
  name: "e2e run: a prompt nobody answers is denied after --prompt-timeout, and the log says so",
  ignore: noCurl,
  async fn() {
    const origin = await startOrigin();
    await withDataDir(async (dir) => {
      const p = origin.port;
      const run = await startRun(dir, [
        "--resolve",
        `wait.test:${p}:127.0.0.1`,
        "--prompt-via",
        "socket",
        "--prompt-timeout",
        "300ms",
        "--no-intercept",
      ]);
      try {
        const r = await curl(run.port, ["-w", " %{http_code}", `http://wait.test:${p}/`]);
        assert.match(r.stdout, / 403$/);
        assert.match(r.stdout, /no answer/i);
      } finally {
        assert.equal(await run.stop(), 0);
      }
      const rec = JSON.parse((await Deno.readTextFile(join(dir, "network-access.log"))).trim());
      assert.deepEqual([rec.decision, rec.source, rec.status], ["deny", "timeout", 403]);
    });
    await origin.close();
  },
});

/** The command line that starts `netmonitor run` from a shell, quoted for it. */
function shellRun(dir: string, args: string[]): string {
  const q = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;
  return [
    `NETMONITOR_DATA_DIR=${q(dir)}`,
    "NO_COLOR=1",
    ...[...RUN_ON_PORT_0, "--no-intercept", ...args].map(q),
  ].join(" ");
}

/** The process state letter from /proc/PID/stat (T: stopped), or undefined once it is gone. */
async function procState(pid: number): Promise<string | undefined> {
  try {
    const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
    return stat.slice(stat.lastIndexOf(")") + 1).trim().split(" ")[0];
  } catch {
    return undefined;
  }
}

/** Ends a proxy this test started in a shell: continued, SIGTERM, then SIGKILL after 10 s. */
async function endProxy(pid: number): Promise<void> {
  for (const sig of ["SIGCONT", "SIGTERM"] as const) {
    try {
      Deno.kill(pid, sig);
    } catch { /* gone */ }
  }
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    const state = await procState(pid);
    if (state === undefined || state === "Z") return;
    await new Promise((r) => setTimeout(r, 100));
  }
  try {
    Deno.kill(pid, "SIGKILL");
  } catch { /* gone */ }
}

/** The pid of the one proxy running for `dir`, from `netmonitor status --json`. */
async function proxyPid(dir: string): Promise<number> {
  const r = await runCli(["status", "--json"], { dataDir: dir });
  assert.equal(r.code, 0, r.stdout + r.stderr);
  const { proxies } = JSON.parse(r.stdout) as { proxies: { pid: number; prompts: boolean }[] };
  assert.equal(proxies.length, 1);
  assert.equal(proxies[0].prompts, true, "it still prompts (through the socket)");
  return proxies[0].pid;
}

const onLinuxTty = noCurl || !has("tmux") || !has("bash") || Deno.build.os !== "linux";

/**
 * An interactive bash in tmux (job control on) that has started
 * `netmonitor run` for `dir`, in the background (`&`) when asked; once it
 * listens: the terminal, its port and its pid.
 */
async function shellWithProxy(dir: string, args: string[], background: boolean) {
  const { TmuxSession } = await import("./_tmux.ts");
  const tty = await TmuxSession.start({
    cmd: ["bash", "--norc", "--noprofile", "-i"],
    cwd: dir,
    env: { PS1: "$ " },
  });
  try {
    await tty.waitFor(/\$ $/m);
    await tty.type(shellRun(dir, args) + (background ? " &" : ""));
    await tty.press("Enter");
    const screen = await tty.waitFor(/Listening on http:\/\/127\.0\.0\.1:(\d+)/);
    const port = Number(screen.match(/Listening on http:\/\/127\.0\.0\.1:(\d+)/)![1]);
    return { tty, port, pid: await proxyPid(dir) };
  } catch (e) {
    await tty[Symbol.asyncDispose]();
    throw e;
  }
}

Deno.test({
  name:
    "e2e run: started in the background of a shell (`run &`), it asks through the socket instead of stopping",
  ignore: onLinuxTty,
  async fn() {
    const origin = await startOrigin();
    await withDataDir(async (dir) => {
      const p = origin.port;
      // `&` in an interactive shell with job control puts the job in the background.
      const shell = await shellWithProxy(
        dir,
        ["--resolve", `bg.test:${p}:127.0.0.1`, "--prompt-timeout", "1s"],
        true,
      );
      await using tty = shell.tty;
      const { port, pid } = shell;
      try {
        // A request no rule covers: nobody answers, so it is denied after 1 s.
        const r = await curl(port, ["-w", " %{http_code}", `http://bg.test:${p}/unknown`]);
        assert.notEqual(await procState(pid), "T", "not stopped by SIGTTOU/SIGTTIN");
        assert.match(r.stdout, / 403$/, r.stderr);
        assert.match(r.stdout, /no answer within 1s/);
        await tty.waitFor(/DENY\s+GET\s+403 http:\/\/bg\.test:\d+\/unknown\s.*no answer within 1s/);
        // It asked through the socket, and said where to answer.
        const text = await tty.screen();
        assert.match(
          text,
          /warning: started in the background of this terminal, so requests are not asked here .*answer them with `netmonitor prompt` in another terminal/,
        );
        assert.match(text, /Unknown requests: asking `netmonitor prompt` clients, deny after 1s\./);
        assert.match(text, /Waiting for an answer about bg\.test:\d+: no prompt is attached/);
        // Still serving, still not stopped.
        const again = await curl(port, [
          "-w",
          "%{http_code}",
          "-o",
          "/dev/null",
          `http://bg.test:${p}/`,
        ]);
        assert.equal(again.stdout, "403");
        assert.notEqual(await procState(pid), "T");
        assert.doesNotMatch(await tty.screen(), /Stopped/);
      } finally {
        await endProxy(pid);
      }
      const recs = (await Deno.readTextFile(join(dir, "network-access.log"))).trim().split("\n")
        .map((l) => JSON.parse(l));
      assert.deepEqual(recs.map((r) => [r.host, r.decision, r.source]), [
        ["bg.test", "deny", "timeout"],
        ["bg.test", "deny", "timeout"],
      ]);
    });
    await origin.close();
  },
});

Deno.test({
  name:
    "e2e run: put in the background after it asked (Ctrl-Z, bg), it keeps serving; `fg` asks again",
  ignore: onLinuxTty,
  async fn() {
    const origin = await startOrigin();
    await withDataDir(async (dir) => {
      const p = origin.port;
      const shell = await shellWithProxy(dir, ["--resolve", `job.test:${p}:127.0.0.1`], false);
      await using tty = shell.tty;
      const { port, pid } = shell;
      let prompt: Deno.ChildProcess | undefined;
      try {
        // Asked on the terminal: the reader is now reading it, in raw mode.
        const first = curl(port, ["-w", " %{http_code}", `http://job.test:${p}/first`]);
        await tty.waitFor(/Path: \/first\n[^]*Your choice \[1\]:/);
        await new Promise((r) => setTimeout(r, 600));
        await tty.type("2");
        await tty.press("Enter");
        assert.match((await first).stdout, / 403$/);
        // Ctrl-Z, then bg: the read that was waiting on the terminal must not stop it.
        await tty.press("C-z");
        await tty.waitFor(/Stopped/);
        await tty.type("bg");
        await tty.press("Enter");
        await tty.waitFor(/\$ bg\n/);
        await new Promise((r) => setTimeout(r, 500));
        assert.notEqual(await procState(pid), "T", "bg: running, not stopped by SIGTTIN");
        // A request now: no prompt on the terminal, one line saying why; the socket answers.
        const second = curl(port, ["-w", " %{http_code}", `http://job.test:${p}/second`]);
        await tty.waitFor(
          /Waiting for an answer about job\.test:\d+: this process is in the background/,
        );
        assert.notEqual(await procState(pid), "T");
        prompt = cliCommand(["prompt"], { dataDir: dir }, { stdin: "piped" }).spawn();
        const w = prompt.stdin.getWriter();
        await w.write(new TextEncoder().encode("2\n"));
        assert.match((await second).stdout, / 403$/);
        await w.close();
        assert.notEqual(await procState(pid), "T");
        // Back in front: the terminal asks again, in raw mode (Backspace edits).
        await tty.type("fg");
        await tty.press("Enter");
        await tty.waitFor(/\nfg\n/);
        await new Promise((r) => setTimeout(r, 500));
        const third = curl(port, ["-w", " %{http_code}", `http://job.test:${p}/third`]);
        await tty.waitFor(/Path: \/third\n[^]*Your choice \[1\]:/);
        await new Promise((r) => setTimeout(r, 600));
        await tty.type("1");
        await tty.press("BSpace");
        await tty.type("2");
        await tty.press("Enter");
        assert.match((await third).stdout, / 403$/);
        await tty.press("C-c");
        await tty.waitFor(/\nStopped\.\n/);
      } finally {
        if (prompt) {
          try {
            prompt.kill("SIGTERM");
          } catch { /* exited */ }
          await prompt.output().catch(() => {});
        }
        await endProxy(pid);
      }
      const recs = (await Deno.readTextFile(join(dir, "network-access.log"))).trim().split("\n")
        .map((l) => JSON.parse(l));
      assert.deepEqual(recs.map((r) => [r.decision, r.source]), [
        ["deny", "prompt"],
        ["deny", "prompt"],
        ["deny", "prompt"],
      ]);
    });
    await origin.close();
  },
});

/**
 * An attacker's client of the proxy on `port`: a request to ok.test (on the
 * origin port `originPort`) whose response it never reads, then a harmless
 * request to a.test that waits for a prompt. Killing it resets the a.test
 * connection (RST: unread bytes), which withdraws that prompt.
 */
async function spawnHarmlessClient(
  dir: string,
  port: number,
  originPort: number,
): Promise<Deno.ChildProcess> {
  const p = originPort;
  const script = join(dir, "attacker.ts");
  await Deno.writeTextFile(
    script,
    `const c = await Deno.connect({ hostname: "127.0.0.1", port: ${port} });
const enc = new TextEncoder();
await c.write(enc.encode("GET http://ok.test:${p}/hello HTTP/1.1\\r\\nHost: ok.test:${p}\\r\\n\\r\\n"));
await new Promise((r) => setTimeout(r, 300));
await c.write(enc.encode("GET http://a.test:${p}/harmless HTTP/1.1\\r\\nHost: a.test:${p}\\r\\n\\r\\n"));
await new Promise((r) => setTimeout(r, 60_000));
`,
  );
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net=127.0.0.1", script],
    stdout: "null",
    stderr: "null",
  }).spawn();
}

Deno.test({
  name:
    "e2e run: on a terminal, a half-typed answer to a withdrawn prompt does not let a later Enter allow the next",
  ignore: noCurl || !has("tmux"),
  async fn() {
    const { TmuxSession } = await import("./_tmux.ts");
    const origin = await startOrigin();
    await withDataDir(async (dir) => {
      const p = origin.port;
      await Deno.writeTextFile(rulesFile(dir), '{ "ok.test": "allow-domain" }');
      await using tty = await TmuxSession.start({
        cmd: [
          ...RUN_ON_PORT_0,
          "--no-intercept",
          "--resolve",
          `ok.test:${p}:127.0.0.1`,
          "--resolve",
          `a.test:${p}:127.0.0.1`,
          "--resolve",
          `b.test:${p}:127.0.0.1`,
        ],
        cwd: dir,
        env: { NETMONITOR_DATA_DIR: dir, NO_COLOR: "1" },
      });
      const screen = await tty.waitFor(/Listening on http:\/\/127\.0\.0\.1:(\d+)/);
      const port = Number(screen.match(/Listening on http:\/\/127\.0\.0\.1:(\d+)/)![1]);
      // The attacker's client: a harmless request, and the one it wants allowed
      // queued behind (see spawnHarmlessClient).
      const harmless = await spawnHarmlessClient(dir, port, p);
      try {
        await attackedPrompt(tty, harmless, port, p);
      } finally {
        try {
          harmless.kill("SIGKILL");
        } catch { /* already killed */ }
        await harmless.status;
      }
      assert.equal(origin.requests.some((q) => q.path.startsWith("/exfiltrate")), false);
    });
    await origin.close();
  },
});

/** The review's repro, on the terminal of the test above: see there. */
async function attackedPrompt(
  tty: import("./_tmux.ts").TmuxSession,
  harmless: Deno.ChildProcess,
  port: number,
  p: number,
): Promise<void> {
  await tty.waitFor(/Host: a\.test:\d+\n[^]*Your choice \[1\]:/);
  const exfiltrate = curl(port, [
    "-w",
    " %{http_code}",
    `http://b.test:${p}/exfiltrate?secret=1`,
  ]);
  let settled = false;
  exfiltrate.finally(() => settled = true);
  await new Promise((r) => setTimeout(r, 600));
  // The operator types 2 (deny) for a.test; 0.1 s later the attacker resets
  // the a.test connection, so that prompt is withdrawn and b.test's shown.
  await tty.type("2");
  const typedAt = Date.now();
  await new Promise((r) => setTimeout(r, 100));
  harmless.kill("SIGKILL");
  const shown = await tty.waitFor(/Host: b\.test:\d+\n[^]*Your choice \[1\]:/);
  // The operator's Enter, at least 0.7 s after the 2 and past the 0.4 s input guard.
  const guardEnds = Date.now() + 450;
  await new Promise((r) => setTimeout(r, Math.max(typedAt + 700, guardEnds) - Date.now()));
  await tty.press("Enter");
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(settled, false, "b.test was not allowed by the leftover Enter");
  assert.match(
    shown,
    /Prompt closed: request withdrawn[^\n]*\nInput discarded: the prompt it was for closed\./,
  );
  await tty.waitFor("(input discarded: it was begun before this request appeared");
  assert.doesNotMatch(await tty.screen(), /ALLOW GET\s+200 http:\/\/b\.test/);
  // A fresh answer for b.test counts.
  await tty.type("2");
  await tty.press("Enter");
  const r = await exfiltrate;
  assert.match(r.stdout, / 403$/);
  assert.match(r.stdout, /prompt: deny-once/);
  await tty.waitFor(/DENY\s+GET\s+403 http:\/\/b\.test:\d+\/exfiltrate/);
  await tty.press("C-c");
  assert.equal(await tty.exitCode(), 0);
}

Deno.test({
  name:
    "e2e run: on a terminal, a flood of record lines cannot scroll the prompt being answered off the screen",
  ignore: noCurl || !has("tmux"),
  async fn() {
    // The review's repro: the operator reads a.test; its client resets the
    // connection, b.test takes its place, and the container at once sends
    // requests a rule denies. Their record lines, printed above the open
    // question, scrolled b.test's prompt and "Prompt closed" away: the
    // screen showed only record lines and "Your choice [1]:", and the
    // operator's "1", meant for a.test, allowed b.test.
    const { TmuxSession } = await import("./_tmux.ts");
    const origin = await startOrigin();
    await withDataDir(async (dir) => {
      const p = origin.port;
      await Deno.writeTextFile(
        rulesFile(dir),
        '{ "ok.test": "allow-domain", "denied.test": "deny-domain" }',
      );
      await using tty = await TmuxSession.start({
        cmd: [
          ...RUN_ON_PORT_0,
          "--no-intercept",
          ...["ok.test", "a.test", "b.test", "denied.test"].flatMap((h) => [
            "--resolve",
            `${h}:${p}:127.0.0.1`,
          ]),
        ],
        cwd: dir,
        env: { NETMONITOR_DATA_DIR: dir, NO_COLOR: "1" },
        height: 40,
      });
      const screen = await tty.waitFor(/Listening on http:\/\/127\.0\.0\.1:(\d+)/);
      const port = Number(screen.match(/Listening on http:\/\/127\.0\.0\.1:(\d+)/)![1]);
      // As in the test above: killing this client resets the a.test connection.
      const harmless = await spawnHarmlessClient(dir, port, p);
      try {
        await tty.waitFor(/Host: a\.test:\d+\n[^]*Your choice \[1\]:/);
        const exfiltrate = curl(port, ["-w", " %{http_code}", `http://b.test:${p}/exfiltrate`]);
        await new Promise((r) => setTimeout(r, 300));
        harmless.kill("SIGKILL");
        await tty.waitFor(/Host: b\.test:\d+\n[^]*Your choice \[1\]:/);
        for (let i = 0; i < 45; i++) {
          assert.match((await curl(port, [`http://denied.test:${p}/x${i}`])).stdout, /denied/);
        }
        // Give the record lines time to reach the terminal (they are batched).
        await new Promise((r) => setTimeout(r, 500));
        const visible = await tty.visible();
        assert.match(visible, /Host: b\.test:\d+\nMethod: GET\nPath: \/exfiltrate\n/);
        assert.match(visible, /Your choice \[1\]: *\n*$/);
        assert.doesNotMatch(visible, /denied\.test/);
        await tty.type("2");
        await tty.press("Enter");
        assert.match((await exfiltrate).stdout, / 403$/);
        // The lines held while the prompt was open follow its answer.
        await tty.waitFor(/DENY\s+GET\s+403 http:\/\/denied\.test:\d+\/x44/);
        await tty.press("C-c");
        assert.equal(await tty.exitCode(), 0);
      } finally {
        try {
          harmless.kill("SIGKILL");
        } catch { /* already killed */ }
        await harmless.status;
      }
      assert.equal(origin.requests.some((q) => q.path.startsWith("/exfiltrate")), false);
    });
    await origin.close();
  },
});
