/**
 * Upstream failures (down, DNS, silent, broken) map to 502/504 with a body
 * that says what failed; stale keep-alive connections are retried; shutdown
 * answers what is in flight.
 */

import assert from "node:assert/strict";
import { readHeadText, startDnsServer, startOrigin, startRawOrigin } from "../_helpers/origin.ts";
import { RawClient, startTestProxy } from "../_helpers/proxy.ts";

const enc = new TextEncoder();

async function get(proxyPort: number, url: string, host: string) {
  const c = await RawClient.connect(proxyPort);
  try {
    await c.send(`GET ${url} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
    return await c.response();
  } finally {
    c.close();
  }
}

/** A port on 127.0.0.1 with nothing listening. */
function closedPort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

Deno.test("upstream: refused connection is 502 naming what failed", async () => {
  const port = closedPort();
  const proxy = await startTestProxy({
    rules: { "down.test": "allow-domain" },
    resolve: [["down.test", port, "127.0.0.1"]],
  });
  try {
    const r = await get(proxy.port, `http://down.test:${port}/`, `down.test:${port}`);
    assert.equal(r.status, 502);
    assert.equal(
      r.text,
      `netmonitor: cannot connect to down.test:${port} (127.0.0.1): connection refused\n`,
    );
    const [rec] = await proxy.waitRecords(1);
    assert.deepEqual([rec.decision, rec.source, rec.status], ["allow", "rule", 502]);
    assert.equal(rec.reason, 'rule "down.test": allow-domain');
    assert.match(rec.error!, /connection refused/);
  } finally {
    await proxy.close();
  }
});

Deno.test("upstream: a DNS failure is 502, for plain requests and CONNECT", async () => {
  const dns = await startDnsServer({});
  const proxy = await startTestProxy({ rules: { "*": "allow" }, nameServer: dns.nameServer });
  try {
    const r = await get(proxy.port, "http://nx.test/", "nx.test");
    assert.equal(r.status, 502);
    assert.match(r.text, /DNS lookup for nx\.test failed: no such host/);
    const c = await RawClient.connect(proxy.port);
    await c.send("CONNECT nx.test:443 HTTP/1.1\r\n\r\n");
    const rc = await c.response();
    assert.equal(rc.status, 502);
    assert.match(rc.text, /DNS lookup for nx\.test failed/);
    c.close();
    const recs = await proxy.waitRecords(2);
    assert.deepEqual(recs.map((x) => [x.method, x.status, x.decision]), [
      ["GET", 502, "allow"],
      ["CONNECT", 502, "allow"],
    ]);
    assert.deepEqual(dns.queries.slice(0, 1), ["nx.test"]);
  } finally {
    await proxy.close();
    await dns.close();
  }
});

Deno.test("upstream: an origin that never answers gives 504 after the response timeout", async () => {
  const silent = startRawOrigin(async (conn) => {
    await readHeadText(conn);
    // Never answer; wait for the proxy to give up and close.
    const buf = new Uint8Array(1024);
    while ((await conn.read(buf)) !== null);
  });
  const proxy = await startTestProxy({
    rules: { "silent.test": "allow-domain" },
    resolve: [["silent.test", silent.port, "127.0.0.1"]],
    responseTimeoutMs: 300,
  });
  try {
    const r = await get(
      proxy.port,
      `http://silent.test:${silent.port}/`,
      `silent.test:${silent.port}`,
    );
    assert.equal(r.status, 504);
    assert.match(r.text, new RegExp(`silent\\.test:${silent.port} did not answer within 300 ms`));
    const [rec] = await proxy.waitRecords(1);
    assert.deepEqual([rec.status, rec.decision], [504, "allow"]);
    assert.match(rec.error!, /did not answer within 300 ms/);
  } finally {
    await proxy.close();
    await silent.close();
  }
});

Deno.test("upstream: broken responses are 502; a body cut short ends the client connection", async () => {
  const behaviours: Record<string, string> = {
    "/garbage": "SSH-2.0-OpenSSH\r\n\r\n",
    "/close": "",
    "/badlength": "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
    "/badchunk": "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    "/short": "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b",
  };
  const origin = startRawOrigin(async (conn) => {
    const head = await readHeadText(conn);
    const path = head.split(" ")[1];
    if (behaviours[path]) await conn.write(enc.encode(behaviours[path]));
  });
  const proxy = await startTestProxy({
    rules: { "broken.test": "allow-domain" },
    resolve: [["broken.test", origin.port, "127.0.0.1"]],
  });
  const base = `http://broken.test:${origin.port}`;
  const host = `broken.test:${origin.port}`;
  try {
    const g = await get(proxy.port, `${base}/garbage`, host);
    assert.equal(g.status, 502);
    assert.match(g.text, /malformed status line from upstream: "SSH-2.0-OpenSSH"/);
    const c = await get(proxy.port, `${base}/close`, host);
    assert.equal(c.status, 502);
    assert.match(c.text, /closed the connection without answering/);
    const l = await get(proxy.port, `${base}/badlength`, host);
    assert.equal(l.status, 502);
    assert.match(l.text, /conflicting Content-Length/);

    // Once the head went out, the only honest signal left is closing.
    const raw = await RawClient.connect(proxy.port);
    await raw.send(`GET ${base}/badchunk HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
    const text = await raw.readToEnd();
    assert.match(text, /^HTTP\/1\.1 200 OK\r\n/);
    assert.match(text, /Transfer-Encoding: chunked\r\n\r\n$/);
    raw.close();
    const raw2 = await RawClient.connect(proxy.port);
    await raw2.send(`GET ${base}/short HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
    const text2 = await raw2.readToEnd();
    assert.match(text2, /Content-Length: 100\r\n\r\nonly ten b$/);
    raw2.close();

    const recs = await proxy.waitRecords(5);
    assert.deepEqual(recs.map((r) => r.status), [502, 502, 502, 200, 200]);
    assert.match(
      recs[3].error!,
      /response body from broken\.test:\d+ failed: upstream sent a bad chunked body/,
    );
    assert.match(recs[4].error!, /connection closed after 10 of 100 body bytes/);
    assert.equal(recs[4].bytesDown, 10);
  } finally {
    await proxy.close();
    await origin.close();
  }
});

Deno.test("upstream: a kept-alive upstream connection that was closed meanwhile is retried", async () => {
  let conns = 0;
  const origin = startRawOrigin(async (conn) => {
    conns++;
    await readHeadText(conn);
    // Answer keep-alive, then close anyway (a server's idle timeout).
    await conn.write(enc.encode("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
  });
  const proxy = await startTestProxy({
    rules: { "flaky.test": "allow-domain" },
    resolve: [["flaky.test", origin.port, "127.0.0.1"]],
  });
  const c = await RawClient.connect(proxy.port);
  try {
    for (let i = 0; i < 3; i++) {
      await c.send(
        `GET http://flaky.test:${origin.port}/${i} HTTP/1.1\r\nHost: flaky.test:${origin.port}\r\n\r\n`,
      );
      const r = await c.response();
      assert.equal(r.status, 200, `request ${i}`);
      assert.equal(r.text, "ok");
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(conns, 3);
    const recs = await proxy.waitRecords(3);
    assert.ok(recs.every((r) => r.status === 200 && r.error === undefined));
  } finally {
    c.close();
    await proxy.close();
    await origin.close();
  }
});

Deno.test("upstream: shutdown answers in-flight requests, denies waiting decisions with 503", async () => {
  const origin = await startOrigin();
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  const proxy = await startTestProxy({
    resolve: [["ok.test", origin.port, "127.0.0.1"], ["wait.test", origin.port, "127.0.0.1"]],
    decide: async (input, signal) => {
      if (input.target.host === "wait.test") {
        // A prompt nobody answers: only the abort ends it.
        await new Promise<void>((_, reject) =>
          signal.addEventListener("abort", () => reject(signal.reason))
        );
      }
      await held;
      return { action: "allow", source: "prompt", reason: "prompt: allow-once" };
    },
  });
  try {
    const inflight = get(
      proxy.port,
      `http://ok.test:${origin.port}/slow?ms=300`,
      `ok.test:${origin.port}`,
    );
    const waiting = get(
      proxy.port,
      `http://wait.test:${origin.port}/hello`,
      `wait.test:${origin.port}`,
    );
    const idle = await RawClient.connect(proxy.port);
    await new Promise((r) => setTimeout(r, 100));
    release();
    // The first request is now at the origin (which takes 300 ms to answer).
    while (origin.requests.length === 0) await new Promise((r) => setTimeout(r, 5));
    const closing = proxy.close();
    const [a, b] = await Promise.all([inflight, waiting]);
    await closing;
    assert.equal(a.status, 200);
    assert.equal(a.text, "slow");
    assert.equal(b.status, 503);
    assert.match(b.text, /shutting down/);
    assert.equal(await idle.readToEnd(), "", "idle connections are closed");
    idle.close();
    await assert.rejects(Deno.connect({ hostname: "127.0.0.1", port: proxy.port }));
    const recs = proxy.records;
    assert.equal(recs.length, 2);
    const w = recs.find((r) => r.host === "wait.test")!;
    assert.deepEqual([w.status, w.decision], [503, "error"]);
  } finally {
    await proxy.close();
    await origin.close();
  }
});

Deno.test("upstream: a request without an answer on a reused connection is retried only when idempotent", async () => {
  // Every connection answers its first request (keep-alive), then reads the
  // next one and closes without answering: a server that dropped the idle
  // connection just as the request arrived, or crashed while handling it.
  const seen: string[] = [];
  const origin = startRawOrigin(async (conn) => {
    let first = true;
    while (true) {
      const head = await readHeadText(conn);
      if (head === "") return;
      seen.push(head.slice(0, head.indexOf(" /")));
      if (!first) return;
      first = false;
      await conn.write(enc.encode("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
    }
  });
  const proxy = await startTestProxy({
    rules: { "once.test": "allow-domain" },
    resolve: [["once.test", origin.port, "127.0.0.1"]],
  });
  const host = `once.test:${origin.port}`;
  const c = await RawClient.connect(proxy.port);
  try {
    await c.send(`GET http://${host}/a HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
    assert.equal((await c.response()).status, 200);
    // Reuses the pooled connection, gets no answer: a POST is not repeated.
    await c.send(`POST http://${host}/b HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
    const post = await c.response();
    assert.equal(post.status, 502);
    assert.match(post.text, /closed the connection without answering/);
    assert.deepEqual(seen, ["GET", "POST"], "the POST reached the origin exactly once");

    const c2 = await RawClient.connect(proxy.port);
    try {
      await c2.send(`GET http://${host}/c HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
      assert.equal((await c2.response()).status, 200);
      // A GET is repeated on a new connection, which answers it.
      await c2.send(`GET http://${host}/d HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
      const get2 = await c2.response();
      assert.equal(get2.status, 200);
      assert.equal(get2.text, "ok");
      // DELETE is idempotent but its body could not be replayed: not repeated.
      await c2.send(
        `DELETE http://${host}/e HTTP/1.1\r\nHost: ${host}\r\nContent-Length: 2\r\n\r\nxy`,
      );
      assert.equal((await c2.response()).status, 502);
    } finally {
      c2.close();
    }
    assert.deepEqual(seen, ["GET", "POST", "GET", "GET", "GET", "DELETE"]);
    const recs = await proxy.waitRecords(5);
    assert.deepEqual(recs.map((r) => [r.method, r.status]), [
      ["GET", 200],
      ["POST", 502],
      ["GET", 200],
      ["GET", 200],
      ["DELETE", 502],
    ]);
    assert.match(recs[1].error!, /closed the connection without answering/);
  } finally {
    c.close();
    await proxy.close();
    await origin.close();
  }
});

Deno.test("upstream: a flood of interim (1xx) responses is cut with a 502; a few pass", async () => {
  // Parsing and passing on 50 MB of "100 Continue" cost the proxy's one
  // thread 18 s (a 50 MB body: 0.04 s), all within one response timeout.
  const answers: Record<string, string> = {
    "/few": "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n" +
      "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    "/flood": "HTTP/1.1 100 Continue\r\n\r\n".repeat(1000) +
      "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
  };
  const origin = startRawOrigin(async (conn) => {
    const head = await readHeadText(conn);
    const path = head.split(" ")[1];
    const bytes = enc.encode(answers[path]);
    for (let o = 0; o < bytes.length;) o += await conn.write(bytes.subarray(o));
  });
  const proxy = await startTestProxy({
    rules: { "o.test": "allow" },
    resolve: [["o.test", origin.port, "127.0.0.1"]],
  });
  const host = `o.test:${origin.port}`;
  try {
    for (const path of ["/few", "/flood"]) {
      const c = await RawClient.connect(proxy.port);
      await c.send(
        `GET http://${host}${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`,
      );
      const statuses: number[] = [];
      while (true) {
        const r = await c.response();
        statuses.push(r.status);
        if (r.status >= 200) break;
      }
      c.close();
      if (path === "/few") {
        assert.deepEqual(statuses, [100, 103, 200]);
      } else {
        assert.equal(statuses.at(-1), 502);
        assert.ok(statuses.length <= 1 + 32, `${statuses.length - 1} interim responses passed on`);
      }
    }
    const recs = await proxy.waitRecords(2);
    assert.equal(recs[0].status, 200);
    assert.equal(recs[1].status, 502);
    assert.match(recs[1].error ?? "", /more than 32 interim \(1xx\) responses/);
  } finally {
    await proxy.close();
    await origin.close();
  }
});
