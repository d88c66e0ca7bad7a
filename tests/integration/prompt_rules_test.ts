/**
 * "Always" prompt answers saved by a real `netmonitor run` proxy (runProxy
 * in-process, prompts through its control socket, rules file watched) while
 * the file is edited elsewhere: by `netmonitor rules add` in another process,
 * and by an editor that rewrites the file in place. Plain HTTP to a local
 * origin reached through --resolve.
 */
import assert from "node:assert/strict";
import { type RunConfig, runProxy } from "../../cli/run.ts";
import { connectControl } from "../../lib/decide/control.ts";
import type { PendingMessage, RuleMessage, ServerMessage } from "../../lib/decide/protocol.ts";
import { parseResolveEntry } from "../../lib/net/resolve.ts";
import { dataPaths } from "../../lib/paths.ts";
import { cliCommand } from "../e2e/_cli.ts";
import { startOrigin } from "../_helpers/origin.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** `GET url` through the proxy (absolute form); the whole response as text. */
async function get(proxyPort: number, url: string): Promise<{ status: number; text: string }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: proxyPort });
  try {
    const host = /^http:\/\/([^/]+)/.exec(url)![1];
    await conn.write(
      enc.encode(`GET ${url} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`),
    );
    let text = "";
    const buf = new Uint8Array(65536);
    for (let i = 0; i < 10_000; i++) {
      const n = await conn.read(buf);
      if (n === null) break;
      text += dec.decode(buf.subarray(0, n));
    }
    return { status: Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0), text };
  } finally {
    conn.close();
  }
}

async function waitUntil(what: string, ok: () => boolean, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

Deno.test("always answers and concurrent edits of the rules file in netmonitor run", async (t) => {
  const origin = await startOrigin({ name: "origin" });
  const p = origin.port;
  const hosts = ["host.test", "url.test", "slash.test", "edit0.test", "edit1.test"];
  const dir = await Deno.makeTempDir({ prefix: "nm-prompt-rules-" });
  const paths = dataPaths(dir);
  await Deno.writeTextFile(
    paths.rules,
    JSON.stringify({ [`http://slash.test:${p}/a/b`]: "allow-url" }, null, 2) + "\n",
  );
  const config: RunConfig = {
    listen: "127.0.0.1",
    port: 0,
    resolve: new Map(hosts.map((h) => {
      const { key, address } = parseResolveEntry(`${h}:${p}:127.0.0.1`);
      return [key, address] as const;
    })),
    promptTimeoutMs: 30_000,
    mode: "socket",
    defaultAction: "deny",
    logMaxBytes: 1 << 20,
    logKeep: 1,
    intercept: false,
    passthrough: [],
    upstreamCa: [],
  };
  const out = { stdout: "", stderr: "" };
  const stop = new AbortController();
  const running = runProxy(config, {
    paths,
    stdout: (s) => (out.stdout += s),
    stderr: (s) => (out.stderr += s),
    stdoutIsTerminal: false,
  }, stop.signal);
  let code: number | undefined;
  try {
    await waitUntil("Listening", () => /Listening on http:\/\/127\.0\.0\.1:\d+\n/.test(out.stdout));
    const port = Number(/Listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(out.stdout)![1]);
    const client = await connectControl(paths.controlSocket);
    const messages = client.messages();
    const next = async <T extends ServerMessage["type"]>(type: T) => {
      for (let i = 0; i < 100; i++) {
        const m = await messages.next();
        assert.ok(!m.done, `the control socket closed waiting for ${type}`);
        if (m.value.type === type) return m.value as Extract<ServerMessage, { type: T }>;
      }
      throw new Error(`no ${type} message`);
    };
    const rulesFile = async () => Object.entries(JSON.parse(await Deno.readTextFile(paths.rules)));
    /** `netmonitor rules add` in another process, as in another terminal. */
    const rulesAdd = async (pattern: string, action: string) => {
      const r = await cliCommand(["rules", "add", pattern, action], { dataDir: dir }).output();
      assert.equal(r.code, 0, dec.decode(r.stderr));
      assert.match(dec.decode(r.stdout), /^Added rule/);
    };

    try {
      await t.step(
        "a deny rule for the host added while the prompt is open beats 'always allow host'",
        async () => {
          const url = `http://host.test:${p}/a`;
          const response = get(port, url);
          const pending: PendingMessage = await next("pending");
          assert.equal(pending.request.url, url);
          await rulesAdd(`host.test:${p}`, "deny-domain");
          await client.answer(pending.request.id, "allow-domain");
          const rule: RuleMessage = await next("rule");
          assert.deepEqual([rule.pattern, rule.action, rule.saved], [
            `host.test:${p}`,
            "allow-domain",
            false,
          ]);
          assert.match(
            rule.error ?? "",
            /deny rule "host\.test:\d+": deny-domain was added meanwhile/,
          );
          const r = await response;
          assert.equal(r.status, 403);
          assert.match(r.text, new RegExp(`rule \\\\?"host\\.test:${p}\\\\?": deny-domain`));
          assert.deepEqual((await rulesFile()).filter(([k]) => k.startsWith("host.test")), [
            [`host.test:${p}`, "deny-domain"],
          ]);
        },
      );

      await t.step(
        "a deny URL rule added while the prompt is open beats 'always allow this URL'",
        async () => {
          const url = `http://url.test:${p}/a`;
          const response = get(port, url);
          const pending: PendingMessage = await next("pending");
          await rulesAdd(url, "deny-url");
          await client.answer(pending.request.id, "allow-url");
          const rule: RuleMessage = await next("rule");
          assert.equal(rule.saved, false);
          const r = await response;
          assert.equal(r.status, 403);
          assert.match(r.text, /deny-url/);
          assert.deepEqual((await rulesFile()).filter(([k]) => k.includes("url.test")), [
            [url, "deny-url"],
          ]);
        },
      );

      await t.step(
        "'always allow this URL' for /a//b next to a rule for /a/b saves a rule that covers it",
        async () => {
          const url = `http://slash.test:${p}/a//b`;
          const response = get(port, url);
          const pending: PendingMessage = await next("pending");
          assert.equal(pending.request.url, url);
          await client.answer(pending.request.id, "allow-url");
          const rule: RuleMessage = await next("rule");
          assert.deepEqual([rule.pattern, rule.saved], [url, true]);
          assert.notEqual((await response).status, 403);
          assert.deepEqual((await rulesFile()).filter(([k]) => k.includes("slash.test")), [
            [`http://slash.test:${p}/a/b`, "allow-url"],
            [url, "allow-url"],
          ]);
          // Asked again, it would wait for a prompt (30 s): it is answered by the rule at once.
          const again = await Promise.race([get(port, url), sleep(10_000).then(() => undefined)]);
          assert.ok(again, "the same request prompted again");
          assert.notEqual(again.status, 403);
        },
      );

      // The answer comes before the proxy has seen the file emptied, and after
      // its watcher has let the emptied file take effect (no rules in force).
      for (const [i, answerAfter] of [100, 1000].entries()) {
        await t.step(
          `an always answer ${answerAfter} ms into an editor's 3 s in-place rewrite keeps the editor's rules`,
          async () => {
            const three = {
              "a.test": "allow-domain",
              "evil.test": "deny-domain",
              "b.test": "allow",
            };
            await Deno.writeTextFile(paths.rules, JSON.stringify(three, null, 2) + "\n");
            await waitUntil("the reload", () => out.stdout.split(": 3 rules").length === i + 2);
            const url = `http://edit${i}.test:${p}/x`;
            const response = get(port, url);
            const pending: PendingMessage = await next("pending");
            // The editor: open with truncate, 3 s later write 4 rules through the same handle.
            const four = { ...three, "c.test": "allow-domain" };
            const editor = (async () => {
              const f = await Deno.open(paths.rules, { write: true, truncate: true });
              try {
                await sleep(3000);
                await f.write(enc.encode(JSON.stringify(four, null, 2) + "\n"));
              } finally {
                f.close();
              }
            })();
            await sleep(answerAfter);
            await client.answer(pending.request.id, "allow-domain");
            const rule: RuleMessage = await next("rule");
            assert.deepEqual([rule.pattern, rule.saved, rule.error], [
              `edit${i}.test:${p}`,
              true,
              undefined,
            ]);
            assert.notEqual((await response).status, 403);
            await editor;
            assert.deepEqual(await rulesFile(), [
              ...Object.entries(four),
              [`edit${i}.test:${p}`, "allow-domain"],
            ]);
          },
        );
      }
    } finally {
      client.close();
    }
  } finally {
    stop.abort();
    code = await running;
    await origin.close();
    await Deno.remove(dir, { recursive: true });
  }
  assert.equal(code, 0, out.stderr);
});
