/**
 * Slow and huge inputs past the head: request and response bodies that stall
 * (either side), idle tunnels, connection limits (total and per client IP),
 * and pooled upstream connections that carry bytes nobody asked for.
 *
 * Every timeout here is shortened to well under a second; every loop is
 * bounded in count and time; every address is loopback.
 */

import assert from "node:assert/strict";
import net from "node:net";
import {
  attempt,
  clientHello,
  newRecords,
  sleep,
  startAttackEnv,
  tlsRecords,
} from "../_helpers/attack.ts";
import type { AccessRecord } from "../../lib/proxy/mod.ts";
import { readHeadText, startRawOrigin } from "../_helpers/origin.ts";
import { RawClient, startTestProxy } from "../_helpers/proxy.ts";

const enc = new TextEncoder();

/** Resolves with the value, or rejects after `ms` saying what did not happen. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    p,
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

Deno.test("limits: a request body that stops coming gets 408 once it is idle, not while it trickles", async () => {
  const env = await startAttackEnv({ bodyIdleTimeoutMs: 400, responseTimeoutMs: 10_000 });
  const A = env.allowed;
  try {
    const c = await RawClient.connect(env.proxy.port);
    await c.send(
      `POST http://${A}/upload HTTP/1.1\r\nHost: ${A}\r\nContent-Length: 1000000000\r\n\r\nabc`,
    );
    // One byte every 100 ms for a second: slow, but never idle for 400 ms.
    for (let i = 0; i < 10; i++) {
      await sleep(100);
      await c.send("x");
    }
    // Meanwhile the proxy serves others.
    const ok = await attempt(
      env.proxy.port,
      `GET http://${A}/hello HTTP/1.1\r\nHost: ${A}\r\nConnection: close\r\n\r\n`,
    );
    assert.equal(ok.responses[0].status, 200);
    // Then the client stops sending.
    const r = await within(c.response(), 5000, "408 after the client stalled");
    const rest = await c.readToEnd(3000);
    c.close();
    assert.equal(r.status, 408);
    assert.equal(r.headers.get("connection"), "close");
    assert.match(
      r.text,
      /the client sent no request body bytes for 400 ms \(after 13 of 1000000000 bytes\)/,
    );
    assert.equal(rest, "", "the connection is closed after the 408");
    const recs = await newRecords(env.proxy, 0, 2);
    const rec = recs.find((x) => x.method === "POST")!;
    assert.deepEqual(
      [rec.status, rec.decision, rec.source, rec.bytesUp],
      [408, "allow", "rule", 13],
    );
    assert.match(rec.error!, /client sent no request body bytes for 400 ms/);
  } finally {
    await env.close();
  }
});

Deno.test("limits: an upstream that stops taking the request body gets 504", async () => {
  // Reads the head, then nothing: the request body backs up in the buffers.
  let release!: () => void;
  const released = new Promise<void>((r) => (release = r));
  const origin = startRawOrigin(async (conn) => {
    await readHeadText(conn);
    await released;
  });
  const proxy = await startTestProxy({
    rules: { "sink.test": "allow" },
    resolve: [["sink.test", origin.port, "127.0.0.1"]],
    bodyIdleTimeoutMs: 400,
    responseTimeoutMs: 10_000,
  });
  const H = `sink.test:${origin.port}`;
  const c = await RawClient.connect(proxy.port);
  try {
    const total = 64 << 20;
    await c.send(`PUT http://${H}/big HTTP/1.1\r\nHost: ${H}\r\nContent-Length: ${total}\r\n\r\n`);
    // Send until the buffers are full and writes stop (bounded: 64 MiB, or the answer).
    let answered = false;
    const sending = (async () => {
      const chunk = new Uint8Array(1 << 20);
      for (let i = 0; i < 64 && !answered; i++) await c.send(chunk);
    })().catch(() => {});
    const r = await within(c.response(), 8000, "504 after the upstream stalled");
    answered = true;
    assert.equal(r.status, 504);
    assert.match(
      r.text,
      new RegExp(`sink\\.test:${origin.port} accepted no request body bytes for 400 ms`),
    );
    c.close();
    await sending;
    const [rec] = await proxy.waitRecords(1);
    assert.deepEqual([rec.status, rec.decision], [504, "allow"]);
    assert.match(rec.error!, /accepted no request body bytes for 400 ms/);
    assert.ok(rec.bytesUp > 0 && rec.bytesUp < total, `bytesUp ${rec.bytesUp}`);
  } finally {
    c.close();
    release();
    await proxy.close();
    await origin.close();
  }
});

Deno.test("limits: a response body that stalls is cut, and the record says the upstream stalled", async () => {
  const origin = startRawOrigin(async (conn) => {
    await readHeadText(conn);
    await conn.write(enc.encode("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nten bytes."));
    // Then silence, until the proxy closes.
    const buf = new Uint8Array(1024);
    while ((await conn.read(buf)) !== null);
  });
  const proxy = await startTestProxy({
    rules: { "stall.test": "allow" },
    resolve: [["stall.test", origin.port, "127.0.0.1"]],
    bodyIdleTimeoutMs: 400,
  });
  const H = `stall.test:${origin.port}`;
  try {
    const c = await RawClient.connect(proxy.port);
    await c.send(`GET http://${H}/ HTTP/1.1\r\nHost: ${H}\r\n\r\n`);
    const text = await c.readToEnd(5000);
    c.close();
    assert.match(text, /^HTTP\/1\.1 200 OK\r\n/);
    assert.ok(text.endsWith("\r\n\r\nten bytes."), "the head and the 10 bytes, then a close");
    const [rec] = await proxy.waitRecords(1);
    assert.deepEqual([rec.status, rec.bytesDown], [200, 10]);
    assert.equal(
      rec.error,
      `stall.test:${origin.port} sent no response body bytes for 400 ms (after 10 bytes)`,
    );
  } finally {
    await proxy.close();
    await origin.close();
  }
});

Deno.test("limits: a client that stops reading a response is cut", async () => {
  const env = await startAttackEnv({ bodyIdleTimeoutMs: 400 });
  const A = env.allowed;
  try {
    const c = await RawClient.connect(env.proxy.port);
    // 32 MiB, more than the socket buffers on both sides of the proxy hold.
    await c.send(`GET http://${A}/bytes/33554432 HTTP/1.1\r\nHost: ${A}\r\n\r\n`);
    const [rec] = await within(env.proxy.waitRecords(1), 8000, "the exchange ends");
    c.close();
    assert.equal(rec.status, 200);
    assert.match(rec.error!, /^the client read no response body bytes for 400 ms/);
    assert.ok(rec.bytesDown < 33554432, `bytesDown ${rec.bytesDown}`);
  } finally {
    await env.close();
  }
});

Deno.test("limits: a client that pipelines small requests and never reads is cut, with its upstream", async () => {
  // Each response in one write, so it reaches the proxy whole and goes out
  // with its head in one write too: only that write can block.
  const body = "x".repeat(1000);
  let ended!: () => void;
  const originEnded = new Promise<void>((r) => (ended = r));
  const origin = startRawOrigin(async (conn) => {
    try {
      while ((await readHeadText(conn)) !== "") {
        await conn.write(enc.encode(`HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n${body}`));
      }
    } finally {
      ended();
    }
  });
  const proxy = await startTestProxy({
    rules: { "small.test": "allow" },
    resolve: [["small.test", origin.port, "127.0.0.1"]],
    bodyIdleTimeoutMs: 400,
  });
  const H = `small.test:${origin.port}`;
  try {
    const c = await RawClient.connect(proxy.port);
    // 20,000 responses (21 MB) are more than the socket buffers on both sides hold.
    const n = 20_000;
    await c.send(`GET http://${H}/ HTTP/1.1\r\nHost: ${H}\r\n\r\n`.repeat(n));
    let cut: AccessRecord | undefined;
    for (const end = Date.now() + 15_000; !cut && Date.now() < end; await sleep(50)) {
      cut = proxy.records.find((r) => r.error);
    }
    c.close();
    assert.ok(cut, `the client was not cut (${proxy.records.length} responses sent)`);
    assert.equal(cut.status, 200);
    assert.equal(cut.error, "the client read no response head bytes for 400 ms");
    assert.ok(proxy.records.length < n, `${proxy.records.length} records`);
    // The upstream connection was closed with it: the origin saw its end.
    await within(originEnded, 5000, "the origin's connection ends");
  } finally {
    await proxy.close();
    await origin.close();
  }
});

Deno.test("limits: a tunnel is closed after no bytes moved either way for the tunnel idle timeout", async () => {
  // Echoes whatever the tunnel carries.
  const origin = startRawOrigin(async (conn) => {
    const buf = new Uint8Array(65536);
    let n: number | null;
    while ((n = await conn.read(buf)) !== null) await conn.write(buf.subarray(0, n));
  });
  const proxy = await startTestProxy({
    rules: { "echo.test": "allow" },
    resolve: [["echo.test", origin.port, "127.0.0.1"]],
    tunnelIdleTimeoutMs: 500,
  });
  const H = `echo.test:${origin.port}`;
  try {
    const c = await RawClient.connect(proxy.port);
    await c.send(`CONNECT ${H} HTTP/1.1\r\nHost: ${H}\r\n\r\n`);
    assert.equal((await c.response({ head: true })).status, 200);
    const hello = tlsRecords(clientHello({ sni: ["echo.test"] }));
    await c.send(hello);
    assert.equal((await c.take(hello.length)).length, hello.length);
    // A TLS record's header, then its 6 bytes one every 200 ms for 1.2 s:
    // alive, echoed.
    const header = new Uint8Array([23, 3, 3, 0, 6]);
    await c.send(header);
    assert.equal((await c.take(5)).length, 5);
    for (let i = 0; i < 6; i++) {
      await sleep(200);
      await c.send("p");
      assert.equal(new TextDecoder().decode(await c.take(1)), "p");
    }
    // Then quiet: closed by the proxy.
    const started = Date.now();
    const rest = await c.readToEnd(5000);
    c.close();
    assert.equal(rest, "");
    assert.ok(Date.now() - started < 4000, "closed by the idle timeout");
    const [rec] = await proxy.waitRecords(1);
    assert.deepEqual([rec.method, rec.status, rec.decision], ["CONNECT", 200, "allow"]);
    assert.equal(rec.error, "tunnel idle: no bytes either way for 500 ms");
    assert.equal(rec.bytesUp, hello.length + 5 + 6);
    assert.equal(rec.bytesDown, hello.length + 5 + 6);
  } finally {
    await proxy.close();
    await origin.close();
  }
});

Deno.test("limits: a WebSocket relay is closed by the tunnel idle timeout too", async () => {
  const env = await startAttackEnv({ tunnelIdleTimeoutMs: 400 });
  const A = env.allowed;
  try {
    const c = await RawClient.connect(env.proxy.port);
    await c.send(
      `GET http://${A}/ws HTTP/1.1\r\nHost: ${A}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    );
    assert.equal((await c.response({ head: true })).status, 101);
    const rest = await c.readToEnd(5000);
    c.close();
    assert.equal(rest, "");
    const [rec] = await env.proxy.waitRecords(1);
    assert.equal(rec.status, 101);
    assert.equal(rec.error, "tunnel idle: no bytes either way for 400 ms");
  } finally {
    await env.close();
  }
});

/** Connects from `localAddress` (any 127/8 address) with node:net; resolves once connected. */
function connectFrom(port: number, localAddress: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host: "127.0.0.1", localAddress });
    s.once("connect", () => resolve(s));
    s.once("error", reject);
  });
}

/** Sends a request on a node socket and collects everything until the proxy closes. */
function exchangeFrom(s: net.Socket, request: string, ms = 5000): Promise<string> {
  return new Promise((resolve) => {
    let text = "";
    const timer = setTimeout(() => s.destroy(), ms);
    s.on("data", (d: Uint8Array) => (text += new TextDecoder().decode(d)));
    s.on("error", () => {});
    s.once("close", () => {
      clearTimeout(timer);
      resolve(text);
    });
    s.write(request);
  });
}

Deno.test("limits: connections over the per-client cap get 503 with Retry-After; other clients are served", async () => {
  const env = await startAttackEnv({ maxConnections: 10, maxConnectionsPerClient: 3 });
  const A = env.allowed;
  const held: RawClient[] = [];
  try {
    // Three silent connections from 127.0.0.1 fill its share.
    for (let i = 0; i < 3; i++) held.push(await RawClient.connect(env.proxy.port));
    await sleep(100);
    const refused = await attempt(
      env.proxy.port,
      `GET http://${A}/hello?token=s3cr3t HTTP/1.1\r\nHost: ${A}\r\n\r\n`,
      { closeMs: 3000 },
    );
    const r = refused.responses[0];
    assert.equal(r.status, 503);
    assert.equal(r.headers.get("retry-after"), "1");
    assert.equal(r.headers.get("connection"), "close");
    assert.match(r.text, /too many connections from 127\.0\.0\.1 \(limit 3 per client\)/);
    assert.ok(refused.closed, "closed after the 503");

    // Another client address is still served.
    const other = await connectFrom(env.proxy.port, "127.0.0.2");
    const text = await exchangeFrom(
      other,
      `GET http://${A}/hello HTTP/1.1\r\nHost: ${A}\r\nConnection: close\r\n\r\n`,
    );
    assert.match(text, /^HTTP\/1\.1 200 OK\r\n[\s\S]*hello from origin$/);

    // A closed connection frees its slot.
    held.pop()!.close();
    let status = 0;
    for (let i = 0; i < 40 && status !== 200; i++) {
      await sleep(50);
      const a = await attempt(
        env.proxy.port,
        `GET http://${A}/hello HTTP/1.1\r\nHost: ${A}\r\nConnection: close\r\n\r\n`,
      );
      status = a.responses[0].status;
    }
    assert.equal(status, 200);

    const recs = env.proxy.records;
    const deny = recs.filter((x) => x.error === "too many connections");
    assert.ok(deny.length >= 1);
    assert.deepEqual(
      [deny[0].method, deny[0].host, deny[0].decision, deny[0].source, deny[0].status],
      ["GET", "allowed.test", "deny", "policy", 503],
    );
    assert.match(deny[0].url, /^http:\/\/allowed\.test:\d+\/hello\?token=/);
    assert.equal(deny[0].reason, "too many connections from 127.0.0.1 (limit 3 per client)");
    assert.equal(env.origin.requests.length, recs.filter((x) => x.status === 200).length);
  } finally {
    for (const c of held) c.close();
    await env.close();
  }
});

Deno.test("limits: connections over the total cap get 503, CONNECTs too, and are recorded", async () => {
  const env = await startAttackEnv({ maxConnections: 2, maxConnectionsPerClient: 100 });
  const A = env.allowed;
  const held: RawClient[] = [];
  try {
    for (let i = 0; i < 2; i++) held.push(await RawClient.connect(env.proxy.port));
    await sleep(100);
    const a = await attempt(env.proxy.port, `CONNECT ${A} HTTP/1.1\r\nHost: ${A}\r\n\r\n`, {
      closeMs: 3000,
    });
    assert.equal(a.responses[0].status, 503);
    assert.match(a.responses[0].text, /too many connections to netmonitor \(limit 2\)/);
    assert.ok(a.closed);
    // A client that sends nothing is answered (and recorded) too, after a moment.
    const silent = await attempt(env.proxy.port, "", { closeMs: 3000 });
    assert.equal(silent.responses[0].status, 503);
    const recs = await newRecords(env.proxy, 0, 2);
    assert.deepEqual(
      recs.map((x) => [x.method, x.url, x.status, x.decision, x.source, x.error]),
      [
        ["CONNECT", A, 503, "deny", "policy", "too many connections"],
        ["", "", 503, "deny", "policy", "too many connections"],
      ],
    );
    assert.equal(recs[0].host, "allowed.test");
  } finally {
    for (const c of held) c.close();
    await env.close();
  }
});

Deno.test("limits: a flood of refused connections is bounded: a few are answered, the rest closed, all recorded", async () => {
  const env = await startAttackEnv({ maxConnections: 1 });
  const held = await RawClient.connect(env.proxy.port);
  const flood: RawClient[] = [];
  try {
    await sleep(100);
    // Silent connections: each answered refusal waits (briefly) for a request line.
    for (let i = 0; i < 150; i++) flood.push(await RawClient.connect(env.proxy.port));
    const recs = await newRecords(env.proxy, 0, 150);
    assert.ok(recs.every((x) => x.error === "too many connections" && x.decision === "deny"));
    const answered = recs.filter((x) => x.status === 503).length;
    const closed = recs.filter((x) => x.status === 0).length;
    assert.equal(answered + closed, 150);
    assert.ok(closed >= 1, "beyond the answered refusals, connections are closed at once");
    // And the held connection is still served.
    await held.send(
      `GET http://${env.allowed}/hello HTTP/1.1\r\nHost: ${env.allowed}\r\n\r\n`,
    );
    assert.equal((await held.response()).status, 200);
  } finally {
    held.close();
    for (const c of flood) c.close();
    await env.close();
  }
});

/**
 * A keep-alive origin that answers `/first` with `extra` bytes after the
 * response (`delayMs` later, or in the same write when 0) and any other path
 * with its name; it counts connections and notes the paths per connection.
 */
function startSloppyOrigin(first: string, extra: string, delayMs: number) {
  const seen: string[][] = [];
  const origin = startRawOrigin(async (conn) => {
    const mine: string[] = [];
    seen.push(mine);
    while (true) {
      const head = await readHeadText(conn);
      if (!head.includes("\r\n\r\n")) return;
      const path = head.split(" ")[1];
      mine.push(path);
      if (path === "/first") {
        if (delayMs === 0) {
          await conn.write(enc.encode(first + extra));
        } else {
          await conn.write(enc.encode(first));
          await sleep(delayMs);
          await conn.write(enc.encode(extra));
        }
      } else {
        const body = `real answer to ${path}`;
        await conn.write(
          enc.encode(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n${body}`),
        );
      }
    }
  });
  return { origin, seen };
}

const SMUGGLED = "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled";

Deno.test("limits: bytes an origin sends after a response are never taken for the next response", async (t) => {
  const cases: [string, string, string, number, string][] = [
    // name, first response, extra bytes, delay, method of the first request
    [
      "extra bytes in the same write",
      "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
      SMUGGLED,
      0,
      "GET",
    ],
    [
      "extra bytes a moment later",
      "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
      SMUGGLED,
      100,
      "GET",
    ],
    ["a body after a 204", "HTTP/1.1 204 No Content\r\n\r\n", "smuggled" + SMUGGLED, 0, "GET"],
    [
      "a body after a 304",
      "HTTP/1.1 304 Not Modified\r\nContent-Length: 8\r\n\r\n",
      "smuggled" + SMUGGLED,
      50,
      "GET",
    ],
    [
      "a body after a HEAD response",
      "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n",
      "smuggled" + SMUGGLED,
      0,
      "HEAD",
    ],
  ];
  for (const [name, first, extra, delayMs, method] of cases) {
    await t.step(name, async () => {
      const { origin, seen } = startSloppyOrigin(first, extra, delayMs);
      const proxy = await startTestProxy({
        rules: { "sloppy.test": "allow" },
        resolve: [["sloppy.test", origin.port, "127.0.0.1"]],
      });
      const H = `sloppy.test:${origin.port}`;
      const c = await RawClient.connect(proxy.port);
      try {
        await c.send(`${method} http://${H}/first HTTP/1.1\r\nHost: ${H}\r\n\r\n`);
        const r1 = await within(c.response({ head: method === "HEAD" }), 5000, "first response");
        assert.ok([200, 204, 304].includes(r1.status));
        await sleep(delayMs + 200);
        await c.send(`GET http://${H}/second HTTP/1.1\r\nHost: ${H}\r\n\r\n`);
        const r2 = await within(c.response(), 5000, "second response");
        assert.equal(r2.status, 200);
        assert.equal(r2.text, "real answer to /second");
        // The second request went out on a new upstream connection.
        assert.deepEqual(seen, [["/first"], ["/second"]]);
        const recs = await proxy.waitRecords(2);
        assert.deepEqual(recs.map((x) => x.status), [r1.status, 200]);
      } finally {
        c.close();
        await proxy.close();
        await origin.close();
      }
    });
  }
});

Deno.test("limits: a clean keep-alive origin connection is still reused", async () => {
  const { origin, seen } = startSloppyOrigin(
    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    "",
    0,
  );
  const proxy = await startTestProxy({
    rules: { "sloppy.test": "allow" },
    resolve: [["sloppy.test", origin.port, "127.0.0.1"]],
  });
  const H = `sloppy.test:${origin.port}`;
  const c = await RawClient.connect(proxy.port);
  try {
    for (const p of ["/first", "/second", "/third"]) {
      await c.send(`GET http://${H}${p} HTTP/1.1\r\nHost: ${H}\r\n\r\n`);
      assert.equal((await within(c.response(), 5000, p)).status, 200);
      await sleep(50);
    }
    assert.deepEqual(seen, [["/first", "/second", "/third"]]);
  } finally {
    c.close();
    await proxy.close();
    await origin.close();
  }
});

Deno.test("limits: an origin connection that carried a request body is not reused", async (t) => {
  // An origin that reads heads only (as some do for a GET) takes the body for
  // a request of its own, and answers it late: on a reused connection that
  // answer would be taken for the next request's, and the next request would
  // reach the origin behind a request nobody decided.
  const SMUGGLE_DELAY_MS = 300;
  for (
    const [name, framing, body] of [
      ["Content-Length", "Content-Length", "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"],
      ["chunked", "Transfer-Encoding", "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"],
    ] as const
  ) {
    await t.step(name, async () => {
      const seen: string[][] = [];
      const origin = startRawOrigin(async (conn) => {
        const mine: string[] = [];
        seen.push(mine);
        while (true) {
          const head = await readHeadText(conn);
          const line = head.split("\r\n")[0];
          if (!line.includes(" ")) return;
          const path = line.split(" ")[1];
          mine.push(path);
          if (path === "/smuggled") await sleep(SMUGGLE_DELAY_MS);
          const text = `answer to ${path}`;
          await conn.write(
            enc.encode(`HTTP/1.1 200 OK\r\nContent-Length: ${text.length}\r\n\r\n${text}`),
          );
        }
      });
      const proxy = await startTestProxy({
        rules: { "sloppy.test": "allow" },
        resolve: [["sloppy.test", origin.port, "127.0.0.1"]],
      });
      const H = `sloppy.test:${origin.port}`;
      const c = await RawClient.connect(proxy.port);
      try {
        const framed = framing === "Content-Length"
          ? `Content-Length: ${body.length}\r\n\r\n${body}`
          : `Transfer-Encoding: chunked\r\n\r\n${body.length.toString(16)}\r\n${body}\r\n0\r\n\r\n`;
        await c.send(`GET http://${H}/first HTTP/1.1\r\nHost: ${H}\r\n${framed}`);
        const r1 = await within(c.response(), 5000, "first response");
        assert.equal(r1.text, "answer to /first");
        await sleep(50);
        await c.send(`GET http://${H}/second HTTP/1.1\r\nHost: ${H}\r\n\r\n`);
        const r2 = await within(c.response(), 5000, "second response");
        assert.equal(r2.text, "answer to /second");
        // The second request went out on a new connection. The origin did see
        // the body as a request: a proxy cannot stop an origin misreading.
        await sleep(SMUGGLE_DELAY_MS);
        assert.equal(seen.length, 2);
        assert.deepEqual(seen[1], ["/second"]);
        const recs = await proxy.waitRecords(2);
        assert.deepEqual(recs.map((x) => [x.url.replace(/^.*\//, "/"), x.status]), [
          ["/first", 200],
          ["/second", 200],
        ]);
      } finally {
        c.close();
        await proxy.close();
        await origin.close();
      }
    });
  }
});
