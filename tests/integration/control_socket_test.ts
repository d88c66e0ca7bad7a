import assert from "node:assert/strict";
import { type DecideInput, DecisionBroker } from "../../lib/decide/broker.ts";
import {
  connectControl,
  ControlSocketBusyError,
  NoProxyError,
  ProxyBusyError,
  startControlServer,
} from "../../lib/decide/control.ts";
import { listProxies } from "../../cli/status.ts";
import { LineSplitter, parseServerMessage, type ServerMessage } from "../../lib/decide/protocol.ts";
import { RulesStore } from "../../lib/rules/mod.ts";

/** A real rules store on an empty rules file in `dir`: every request asks. */
function emptyRules(dir: string): RulesStore {
  return new RulesStore(`${dir}/network-rules.json`);
}

/** A raw protocol client: writes any bytes, reads parsed server messages. */
class RawClient {
  readonly #splitter = new LineSplitter(1 << 20);
  readonly #queue: ServerMessage[] = [];
  readonly #buf = new Uint8Array(65536);
  #eof = false;
  private constructor(readonly conn: Deno.UnixConn) {}
  static async connect(path: string): Promise<RawClient> {
    return new RawClient(await Deno.connect({ transport: "unix", path }));
  }
  async send(text: string): Promise<void> {
    const bytes = new TextEncoder().encode(text);
    let off = 0;
    while (off < bytes.length) off += await this.conn.write(bytes.subarray(off));
  }
  /** Next message, or null when the server closed the connection. */
  async next(): Promise<ServerMessage | null> {
    while (this.#queue.length === 0 && !this.#eof) {
      let n: number | null = null;
      try {
        n = await this.conn.read(this.#buf);
      } catch {
        n = null;
      }
      if (n === null) this.#eof = true;
      else {
        for (const l of this.#splitter.push(this.#buf.subarray(0, n))) {
          this.#queue.push(parseServerMessage(l));
        }
      }
    }
    return this.#queue.shift() ?? null;
  }
  async expect<T extends ServerMessage["type"]>(
    type: T,
  ): Promise<Extract<ServerMessage, { type: T }>> {
    const m = await this.next();
    assert.ok(m, `expected a ${type} message, the connection closed`);
    assert.equal(m.type, type, `expected ${type}, got ${JSON.stringify(m)}`);
    return m as Extract<ServerMessage, { type: T }>;
  }
  close(): void {
    try {
      this.conn.close();
    } catch {
      // already closed
    }
  }
}

function req(host: string, path?: string): DecideInput {
  return {
    target: { scheme: path ? "http" : "https", host, port: path ? 80 : 443, path },
    method: path ? "GET" : "CONNECT",
    client: "127.0.0.1:5000",
  };
}

async function setup(opts: { timeoutMs?: number } = {}) {
  const dir = await Deno.makeTempDir({ prefix: "nm-control-" });
  const path = `${dir}/data/netmonitor.sock`;
  const rules = emptyRules(dir);
  const broker = new DecisionBroker({ rules, promptTimeoutMs: opts.timeoutMs ?? 30_000 });
  const server = await startControlServer(broker, path);
  return {
    dir,
    path,
    rules,
    broker,
    server,
    async [Symbol.asyncDispose]() {
      broker.close();
      await server.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

Deno.test("two clients: the first answer wins, both see it resolved", async () => {
  await using env = await setup();
  const a = await RawClient.connect(env.path);
  const b = await RawClient.connect(env.path);
  try {
    const helloA = await a.expect("hello");
    const helloB = await b.expect("hello");
    assert.equal(helloA.version, 1);
    assert.equal(helloA.pid, Deno.pid);
    assert.notEqual(helloA.name, helloB.name);

    const decision = env.broker.decide(req("api.example.test", "/repos/u/r"));
    const pa = await a.expect("pending");
    const pb = await b.expect("pending");
    assert.equal(pa.request.id, pb.request.id);
    assert.equal(pa.request.host, "api.example.test");
    assert.equal(pa.request.path, "/repos/u/r");
    assert.equal(pa.request.url, "http://api.example.test/repos/u/r");

    await b.send(
      JSON.stringify({ type: "answer", id: pb.request.id, answer: "allow-domain" }) + "\n",
    );
    assert.deepEqual(await decision, {
      action: "allow",
      source: "prompt",
      reason: 'prompt: allow-domain (saved rule "api.example.test")',
    });
    const expected = {
      type: "resolved",
      id: pa.request.id,
      outcome: "answered",
      by: helloB.name,
      answer: "allow-domain",
    };
    assert.deepEqual(await a.expect("resolved"), expected);
    assert.deepEqual(await b.expect("resolved"), expected);
    // Both are told the rule was saved.
    const saved = {
      type: "rule",
      pattern: "api.example.test",
      action: "allow-domain",
      saved: true,
    };
    assert.deepEqual(await a.expect("rule"), saved);
    assert.deepEqual(await b.expect("rule"), saved);
    assert.deepEqual(
      JSON.parse(await Deno.readTextFile(env.rules.path)),
      { "api.example.test": "allow-domain" },
    );

    // A late answer from the loser is refused, and the connection stays up.
    await a.send(JSON.stringify({ type: "answer", id: pa.request.id, answer: "deny-once" }) + "\n");
    const err = await a.expect("error");
    assert.equal(err.id, pa.request.id);
    assert.match(err.message, /not pending/);

    // Both still get the next prompt.
    const next = env.broker.decide(req("next.test", "/"));
    const na = await a.expect("pending");
    await b.expect("pending");
    await a.send(JSON.stringify({ type: "answer", id: na.request.id, answer: "deny-once" }) + "\n");
    assert.equal((await next).action, "deny");
    assert.equal((await a.expect("resolved")).by, helloA.name);
    assert.equal((await b.expect("resolved")).by, helloA.name);
  } finally {
    a.close();
    b.close();
  }
});

Deno.test("a status socket: hello says where the proxy listens and whether it asks; no prompts", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nm-control-" });
  const path = `${dir}/proxies/${Deno.pid}.sock`;
  // A broker that asks: were the client a prompter, it would be shown the prompt.
  const broker = new DecisionBroker({ rules: emptyRules(dir), promptTimeoutMs: 300 });
  let listen: string | undefined;
  const server = await startControlServer(broker, path, {
    describe: () => ({ prompts: true, ...(listen ? { listen } : {}) }),
    prompters: false,
  });
  try {
    // Before the proxy listens: no address yet.
    const early = await connectControl(path);
    assert.equal(early.hello.listen, undefined);
    assert.equal(early.hello.prompts, true);
    early.close();
    listen = "172.18.0.1:8080";
    const c = await RawClient.connect(path);
    try {
      const hello = await c.expect("hello");
      assert.deepEqual([hello.listen, hello.prompts, hello.pid], [listen, true, Deno.pid]);
      // Nobody is asked: the prompt times out, and this client was shown nothing.
      const d = await broker.decide(req("quiet.test", "/"));
      assert.equal(d.action, "deny");
      assert.match(d.reason, /timed out|no answer/i);
      await c.send(`{"type":"answer","id":"1","answer":"allow-once"}\n`);
      assert.match((await c.expect("error")).message, /not pending/);
    } finally {
      c.close();
    }
  } finally {
    broker.close();
    await server.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a rule that could not be saved is reported to the clients", async () => {
  await using env = await setup();
  const a = await RawClient.connect(env.path);
  try {
    await a.expect("hello");
    // A rules file that does not parse: the store refuses to edit it.
    await Deno.mkdir(`${env.dir}/data`, { recursive: true });
    await Deno.writeTextFile(env.rules.path, '{ "x.test": "allow", oops }');
    const decision = env.broker.decide(req("unsaved.test", "/"));
    const p = await a.expect("pending");
    await a.send(
      JSON.stringify({ type: "answer", id: p.request.id, answer: "allow-domain" }) + "\n",
    );
    assert.equal((await decision).action, "allow");
    assert.equal((await a.expect("resolved")).answer, "allow-domain");
    const m = await a.expect("rule");
    assert.deepEqual([m.pattern, m.action, m.saved], ["unsaved.test", "allow-domain", false]);
    assert.ok(m.error && m.error.length > 0);
  } finally {
    a.close();
  }
});

Deno.test("bad messages get an error and the connection stays up", async () => {
  await using env = await setup();
  const c = await RawClient.connect(env.path);
  try {
    await c.expect("hello");
    const decision = env.broker.decide(req("tunnel.test"));
    const p = await c.expect("pending");
    assert.equal(p.request.path, undefined);
    assert.equal(p.request.url, undefined);
    const cases: [string, RegExp][] = [
      ["{not json", /invalid JSON/],
      ["[1,2]", /expected a JSON object/],
      [JSON.stringify({ type: "hello" }), /unknown message type "hello"/],
      [JSON.stringify({ type: "answer", answer: "allow-once" }), /"id" must be/],
      [JSON.stringify({ type: "answer", id: "nope", answer: "allow-once" }), /not pending/],
      [JSON.stringify({ type: "answer", id: p.request.id, answer: "alow-once" }), /unknown answer/],
      [
        JSON.stringify({ type: "answer", id: p.request.id, answer: "allow-url" }),
        /tunnel has no URL/,
      ],
    ];
    for (const [line, pattern] of cases) {
      await c.send(line + "\n");
      const err = await c.expect("error");
      assert.match(err.message, pattern, line);
    }
    // Blank lines are ignored; CRLF line ends are accepted.
    await c.send("\n\r\n");
    await c.send(
      JSON.stringify({ type: "answer", id: p.request.id, answer: "deny-once" }) + "\r\n",
    );
    assert.deepEqual(await decision, {
      action: "deny",
      source: "prompt",
      reason: "prompt: deny-once",
    });
    assert.equal((await c.expect("resolved")).outcome, "answered");
  } finally {
    c.close();
  }
});

Deno.test("an oversized line closes that client only", async () => {
  await using env = await setup();
  const big = await RawClient.connect(env.path);
  const good = await RawClient.connect(env.path);
  try {
    await big.expect("hello");
    await good.expect("hello");
    // 70 KiB without a newline: over the 64 KiB limit.
    await big.send("x".repeat(70 * 1024)).catch(() => {});
    assert.match((await big.expect("error")).message, /too long/);
    assert.equal(await big.next(), null, "server closed the connection");
    const decision = env.broker.decide(req("still.test", "/"));
    const p = await good.expect("pending");
    await good.send(
      JSON.stringify({ type: "answer", id: p.request.id, answer: "allow-once" }) + "\n",
    );
    assert.equal((await decision).action, "allow");
    assert.equal(env.server.clients, 1);
  } finally {
    big.close();
    good.close();
  }
});

Deno.test("a client that drops is detached; the prompt waits for another", async () => {
  await using env = await setup();
  const gone = await RawClient.connect(env.path);
  await gone.expect("hello");
  const decision = env.broker.decide(req("drop.test", "/"));
  await gone.expect("pending");
  gone.close();
  while (env.server.clients > 0) await new Promise((r) => setTimeout(r, 5));
  assert.equal(env.broker.pending().length, 1, "still pending after the drop");

  const client = await connectControl(env.path);
  try {
    const it = client.messages();
    const m = (await it.next()).value as ServerMessage;
    assert.equal(m.type, "pending");
    if (m.type !== "pending") return;
    assert.equal(m.request.host, "drop.test");
    await client.answer(m.request.id, "allow-once");
    assert.equal((await decision).action, "allow");
    const r = (await it.next()).value as ServerMessage;
    assert.deepEqual(r, {
      type: "resolved",
      id: m.request.id,
      outcome: "answered",
      by: client.hello.name,
      answer: "allow-once",
    });
  } finally {
    client.close();
  }
});

Deno.test("clients are told when a prompt times out, and when the proxy goes away", async () => {
  const env = await setup({ timeoutMs: 30 });
  const client = await connectControl(env.path);
  try {
    const it = client.messages();
    const decision = env.broker.decide(req("slow.test", "/"));
    const p = (await it.next()).value as ServerMessage;
    assert.equal(p.type, "pending");
    assert.equal((await decision).source, "timeout");
    const r = (await it.next()).value as ServerMessage;
    assert.equal(r.type, "resolved");
    assert.equal(r.type === "resolved" && r.outcome, "timeout");
    env.broker.close();
    await env.server.close();
    assert.equal((await it.next()).done, true, "messages end when the proxy goes away");
    await assert.rejects(Deno.lstat(env.path), Deno.errors.NotFound);
  } finally {
    client.close();
    await Deno.remove(env.dir, { recursive: true });
  }
});

Deno.test("socket is 0600 in a 0700 directory, even if the directory was looser", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nm-control-" });
  const data = `${dir}/data`;
  await Deno.mkdir(data, { mode: 0o755 });
  await Deno.chmod(data, 0o755);
  const broker = new DecisionBroker({ rules: emptyRules(dir) });
  const server = await startControlServer(broker, `${data}/netmonitor.sock`);
  try {
    const sock = await Deno.lstat(`${data}/netmonitor.sock`);
    assert.ok(sock.isSocket);
    assert.equal(sock.mode! & 0o777, 0o600);
    assert.equal((await Deno.stat(data)).mode! & 0o777, 0o700);
  } finally {
    broker.close();
    await server.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("refuses to start while another live proxy owns the socket", async () => {
  await using env = await setup();
  const other = new DecisionBroker({ rules: emptyRules(env.dir) });
  await assert.rejects(
    startControlServer(other, env.path),
    (err: Error) =>
      err instanceof ControlSocketBusyError && /Another netmonitor proxy/.test(err.message),
  );
  other.close();
  // The live server still works.
  const c = await connectControl(env.path);
  c.close();
});

Deno.test("a stale socket left by a dead proxy is replaced", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nm-control-" });
  const path = `${dir}/netmonitor.sock`;
  // A process that binds the socket and is killed cannot clean it up.
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "eval",
      `Deno.listen({ transport: "unix", path: ${
        JSON.stringify(path)
      } }); console.log("up"); setInterval(() => {}, 1000);`,
    ],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.getReader();
  await reader.read();
  child.kill("SIGKILL");
  await child.status;
  reader.releaseLock();
  await child.stdout.cancel();
  assert.ok((await Deno.lstat(path)).isSocket, "stale socket left behind");
  await assert.rejects(connectControl(path), NoProxyError);

  const broker = new DecisionBroker({ rules: emptyRules(dir) });
  const server = await startControlServer(broker, path);
  try {
    const c = await connectControl(path);
    assert.equal(c.hello.pid, Deno.pid);
    c.close();
  } finally {
    broker.close();
    await server.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("two proxies starting at once over a stale socket: only one owns it", async () => {
  // Both find the dead proxy's socket; without taking turns, the second
  // removed the socket the first had just bound, and both went on prompting.
  const dir = await Deno.makeTempDir({ prefix: "nm-control-" });
  const path = `${dir}/netmonitor.sock`;
  try {
    for (let i = 0; i < 100; i++) {
      // A stale socket: a killed proxy's, with nobody listening (a hard link
      // keeps the file when the listener's close removes its name).
      const l = Deno.listen({ transport: "unix", path: `${dir}/dead.sock` });
      await Deno.link(`${dir}/dead.sock`, path);
      l.close();
      assert.ok((await Deno.lstat(path)).isSocket, "stale socket left behind");
      await assert.rejects(connectControl(path), NoProxyError);
      const b1 = new DecisionBroker({ rules: emptyRules(dir) });
      const b2 = new DecisionBroker({ rules: emptyRules(dir) });
      const started = await Promise.allSettled([
        startControlServer(b1, path),
        startControlServer(b2, path),
      ]);
      const servers = started.flatMap((r) => r.status === "fulfilled" ? [r.value] : []);
      for (const r of started) {
        if (r.status === "rejected") {
          assert.ok(r.reason instanceof ControlSocketBusyError, String(r.reason));
        }
      }
      try {
        assert.equal(servers.length, 1, `round ${i}: ${servers.length} proxies own the socket`);
      } finally {
        b1.close();
        b2.close();
        for (const s of servers) await s.close();
        await Deno.remove(path).catch(() => {});
      }
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("refuses a path that is not a socket; no proxy gives a clear error", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nm-control-" });
  try {
    await Deno.writeTextFile(`${dir}/netmonitor.sock`, "not a socket");
    const broker = new DecisionBroker({ rules: emptyRules(dir) });
    await assert.rejects(startControlServer(broker, `${dir}/netmonitor.sock`), /not a socket/);
    broker.close();
    await assert.rejects(
      connectControl(`${dir}/missing.sock`),
      (err: Error) =>
        err instanceof NoProxyError &&
        err.message === `No netmonitor proxy is running (no control socket at ${dir}/missing.sock)`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a socket path over the Unix limit gets a clear error", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nm-control-" });
  const long = `${dir}/${"d".repeat(120)}/netmonitor.sock`;
  try {
    const broker = new DecisionBroker({ rules: emptyRules(dir) });
    await assert.rejects(startControlServer(broker, long), /over the 107-byte limit.*--data-dir/);
    await assert.rejects(connectControl(long), /over the 107-byte limit/);
    broker.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a status socket at its client limit: status reports the proxy busy and keeps the socket", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nm-control-" });
  const proxies = `${dir}/proxies`;
  const path = `${proxies}/${Deno.pid}.sock`;
  const broker = new DecisionBroker({ rules: emptyRules(dir), promptTimeoutMs: 300 });
  const server = await startControlServer(broker, path, {
    describe: () => ({ prompts: false, listen: "127.0.0.1:8080" }),
    prompters: false,
    maxClients: 2,
  });
  const held = [await connectControl(path), await connectControl(path)];
  try {
    await assert.rejects(connectControl(path), ProxyBusyError);
    assert.deepEqual(await listProxies(proxies), [{ pid: Deno.pid, busy: true }]);
    assert.ok((await Deno.stat(path)).isSocket, "the live proxy's socket stays");
    for (const c of held) c.close();
    // Once a client leaves, it answers again.
    let listed: Awaited<ReturnType<typeof listProxies>> = [];
    for (let i = 0; i < 50 && listed[0]?.listen === undefined; i++) {
      await new Promise((r) => setTimeout(r, 20));
      listed = await listProxies(proxies);
    }
    assert.deepEqual(listed, [{ pid: Deno.pid, listen: "127.0.0.1:8080", prompts: false }]);
  } finally {
    for (const c of held) c.close();
    await server.close();
    broker.close();
    await Deno.remove(dir, { recursive: true });
  }
});
