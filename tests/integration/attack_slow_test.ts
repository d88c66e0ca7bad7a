/**
 * Adversarial tests: slow and huge inputs. Every wait is bounded by the
 * proxy's (shortened) timeouts, oversized heads get 431, and the proxy keeps
 * serving an ordinary client while hundreds of connections misbehave.
 */

import assert from "node:assert/strict";
import { attempt, latin1, newRecords, sleep, startAttackEnv } from "../_helpers/attack.ts";
import { RawClient } from "../_helpers/proxy.ts";

const SHORT = { headerTimeoutMs: 800, idleTimeoutMs: 1500, responseTimeoutMs: 1500 };

Deno.test("attack slow: slowloris dribbling a head gets 408 within the header timeout", async () => {
  const env = await startAttackEnv(SHORT);
  try {
    const c = await RawClient.connect(env.proxy.port);
    await c.send(`GET http://${env.allowed}/hello HTTP/1.1\r\nHost: ${env.allowed}\r\n`);
    // Dribble a header byte every 100 ms, for at most 5 s; stop once answered.
    const started = Date.now();
    let answered = false;
    const reading = c.response().then((r) => {
      answered = true;
      return r;
    }, () => {
      answered = true;
      return undefined;
    });
    for (let i = 0; i < 50 && !answered; i++) {
      await c.send("X-Slow: a\r\n").catch(() => {});
      await sleep(100);
    }
    const r = await reading;
    c.close();
    assert.ok(r, "the proxy answered");
    assert.equal(r.status, 408);
    assert.ok(Date.now() - started < 5000, "dribbling did not extend the header deadline");
    const [rec] = await newRecords(env.proxy, 0, 1);
    assert.deepEqual([rec.status, rec.decision], [408, "error"]);
    assert.equal(env.origin.requests.length, 0);
  } finally {
    await env.close();
  }
});

Deno.test("attack slow: huge heads get 431 and a close", async (t) => {
  const env = await startAttackEnv(SHORT);
  const A = env.allowed;
  try {
    await t.step("70 KiB of headers", async () => {
      const big = "X-Big: " + "a".repeat(70 * 1024) + "\r\n";
      const a = await attempt(
        env.proxy.port,
        `GET http://${A}/hello HTTP/1.1\r\nHost: ${A}\r\n${big}\r\n`,
        {
          closeMs: 3000,
        },
      );
      assert.equal(a.responses[0].status, 431);
      assert.ok(a.closed);
      const [rec] = await newRecords(env.proxy, 0, 1);
      assert.equal(rec.status, 431);
    });
    await t.step("a 100 KiB request line", async () => {
      const before = env.proxy.records.length;
      const a = await attempt(
        env.proxy.port,
        `GET http://${A}/${"p".repeat(100 * 1024)} HTTP/1.1\r\nHost: ${A}\r\n\r\n`,
        { closeMs: 3000 },
      );
      assert.ok([414, 431].includes(a.responses[0].status), a.responses[0].statusLine);
      assert.ok(a.closed);
      const [rec] = await newRecords(env.proxy, before, 1);
      assert.ok(rec.url.length <= 2100, "the record's URL is bounded");
    });
    await t.step("a head that never ends (no CRLFCRLF, 1 MiB)", async () => {
      const before = env.proxy.records.length;
      const a = await attempt(
        env.proxy.port,
        `GET http://${A}/hello HTTP/1.1\r\n` + "X: y\r\n".repeat(150_000),
        { closeMs: 3000 },
      );
      assert.equal(a.responses[0].status, 431);
      await newRecords(env.proxy, before, 1);
    });
    await t.step("10,000 tiny headers: answered, and the proxy keeps serving", async () => {
      const before = env.proxy.records.length;
      const many = Array.from({ length: 10_000 }, (_, i) => `a${i % 10}:1\r\n`).join("");
      const a = await attempt(
        env.proxy.port,
        `GET http://${A}/hello HTTP/1.1\r\nHost: ${A}\r\n${many}\r\n`,
        {
          ms: 10_000,
          closeMs: 300,
        },
      );
      assert.ok(a.responses[0].status >= 200, a.responses[0].statusLine);
      await newRecords(env.proxy, before, 1);
      const ok = await attempt(
        env.proxy.port,
        `GET http://${A}/hello HTTP/1.1\r\nHost: ${A}\r\nConnection: close\r\n\r\n`,
      );
      assert.equal(ok.responses[0].status, 200);
    });
    assert.ok(!env.origin.requests.some((r) => r.path.startsWith("/ppp")));
  } finally {
    await env.close();
  }
});

Deno.test("attack slow: a 1 GB body that never comes is bounded by the response timeout", async () => {
  const env = await startAttackEnv(SHORT);
  try {
    const c = await RawClient.connect(env.proxy.port);
    const started = Date.now();
    await c.send(
      `POST http://${env.allowed}/upload HTTP/1.1\r\nHost: ${env.allowed}\r\nContent-Length: 1073741824\r\n\r\nsome`,
    );
    let timedOut = false;
    const guard = setTimeout(() => {
      timedOut = true;
      c.close();
    }, 10_000);
    const text = await c.readToEnd(11_000);
    clearTimeout(guard);
    c.close();
    assert.ok(!timedOut, "the proxy ended the exchange on its own");
    assert.match(text, /^HTTP\/1\.1 50[24] /);
    assert.ok(Date.now() - started < 10_000);
    const [rec] = await newRecords(env.proxy, 0, 1);
    assert.ok(rec.status === 504 || rec.status === 502, JSON.stringify(rec));
    assert.equal(rec.bytesUp, 4);
  } finally {
    await env.close();
  }
});

Deno.test("attack slow: a declared chunked body that stalls is bounded too", async () => {
  const env = await startAttackEnv(SHORT);
  try {
    const c = await RawClient.connect(env.proxy.port);
    await c.send(
      `POST http://${env.allowed}/upload HTTP/1.1\r\nHost: ${env.allowed}\r\nTransfer-Encoding: chunked\r\n\r\n40000000\r\nabc`,
    );
    let timedOut = false;
    const guard = setTimeout(() => {
      timedOut = true;
      c.close();
    }, 10_000);
    const text = await c.readToEnd(11_000);
    clearTimeout(guard);
    c.close();
    assert.ok(!timedOut, "the proxy ended the exchange on its own");
    assert.match(text, /^HTTP\/1\.1 50[24] /);
    await newRecords(env.proxy, 0, 1);
  } finally {
    await env.close();
  }
});

Deno.test("attack slow: 300 misbehaving connections do not stop an ordinary client", async () => {
  const env = await startAttackEnv({ ...SHORT, headerTimeoutMs: 20_000, idleTimeoutMs: 20_000 });
  const bad: RawClient[] = [];
  try {
    for (let i = 0; i < 300; i++) {
      const c = await RawClient.connect(env.proxy.port);
      bad.push(c);
      // A third say nothing, a third send half a head, a third open a CONNECT and stall.
      if (i % 3 === 1) await c.send(`GET http://${env.allowed}/hello HTTP/1.1\r\nHost: `);
      if (i % 3 === 2) await c.send(`CONNECT ${env.allowed} HTTP/1.1\r\n\r\n`);
    }
    const started = Date.now();
    for (let i = 0; i < 5; i++) {
      const a = await attempt(
        env.proxy.port,
        `GET http://${env.allowed}/hello HTTP/1.1\r\nHost: ${env.allowed}\r\nConnection: close\r\n\r\n`,
      );
      assert.equal(a.responses[0].status, 200);
      assert.equal(a.responses[0].text, "hello from origin");
    }
    assert.ok(Date.now() - started < 10_000);
    // A denied request meanwhile is still denied.
    const d = await attempt(
      env.proxy.port,
      `GET http://${env.denied}/x HTTP/1.1\r\nHost: ${env.denied}\r\nConnection: close\r\n\r\n`,
    );
    assert.equal(d.responses[0].status, 403);
  } finally {
    for (const c of bad) c.close();
    await sleep(200);
    await env.close();
  }
  const recs = env.proxy.records;
  assert.equal(recs.filter((r) => r.url.endsWith("/hello") && r.status === 200).length, 5);
  assert.equal(recs.filter((r) => r.status === 403).length, 1);
});

Deno.test("attack slow: a keep-alive connection idle past the idle timeout is closed silently", async () => {
  const env = await startAttackEnv(SHORT);
  try {
    const c = await RawClient.connect(env.proxy.port);
    await c.send(
      latin1(`GET http://${env.allowed}/hello HTTP/1.1\r\nHost: ${env.allowed}\r\n\r\n`),
    );
    assert.equal((await c.response()).status, 200);
    const text = await c.readToEnd(6000);
    c.close();
    assert.equal(text, "", "closed without a response");
    await newRecords(env.proxy, 0, 1);
  } finally {
    await env.close();
  }
});
