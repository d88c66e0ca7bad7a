/**
 * Malformed and hostile input from raw TCP clients: every class gets its
 * 400/403/408/431, a record, and the proxy keeps serving everyone else.
 */

import assert from "node:assert/strict";
import { startOrigin, startRawOrigin } from "../_helpers/origin.ts";
import { RawClient, startTestProxy } from "../_helpers/proxy.ts";
import { serialiseRecord } from "../../lib/log/mod.ts";

/** Sends `request` on a fresh connection; returns the response and whether the proxy closed. */
async function exchange(port: number, request: string | Uint8Array) {
  const c = await RawClient.connect(port);
  try {
    await c.send(request);
    const r = await c.response();
    const rest = await c.readToEnd(3000);
    return { ...r, closed: c.eof && rest === "" };
  } finally {
    c.close();
  }
}

Deno.test("malformed: each class of bad request head gets 400/414/431, a record, and a close", async () => {
  const origin = await startOrigin();
  const proxy = await startTestProxy({
    rules: { "ok.test": "allow-domain" },
    resolve: [["ok.test", origin.port, "127.0.0.1"]],
  });
  const u = `http://ok.test:${origin.port}/`;
  const h = `Host: ok.test:${origin.port}\r\n`;
  const cases: [string, string, number, RegExp][] = [
    [
      "request line with extra part",
      `GET ${u} HTTP/1.1 x\r\n${h}\r\n`,
      400,
      /malformed request line/,
    ],
    [
      "request line with two spaces",
      `GET  ${u} HTTP/1.1\r\n${h}\r\n`,
      400,
      /malformed request line/,
    ],
    ["no version", `GET ${u}\r\n${h}\r\n`, 400, /malformed request line/],
    ["HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400, /HTTP\/2 is not supported/],
    ["HTTP/1.2", `GET ${u} HTTP/1.2\r\n${h}\r\n`, 400, /unsupported HTTP version 1\.2/],
    [
      "Content-Length with Transfer-Encoding",
      `POST ${u} HTTP/1.1\r\n${h}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
      400,
      /both Transfer-Encoding and Content-Length/,
    ],
    [
      "double Content-Length",
      `POST ${u} HTTP/1.1\r\n${h}Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello`,
      400,
      /more than one Content-Length/,
    ],
    [
      "Content-Length list",
      `POST ${u} HTTP/1.1\r\n${h}Content-Length: 5, 5\r\n\r\nhello`,
      400,
      /invalid Content-Length/,
    ],
    [
      "Transfer-Encoding not chunked",
      `POST ${u} HTTP/1.1\r\n${h}Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n`,
      400,
      /unsupported Transfer-Encoding/,
    ],
    [
      "Transfer-Encoding in HTTP/1.0",
      `POST ${u} HTTP/1.0\r\n${h}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
      400,
      /HTTP\/1\.0/,
    ],
    ["bare LF", `GET ${u} HTTP/1.1\n${h}\n`, 400, /bare LF/],
    ["bare CR", `GET ${u} HTTP/1.1\r\nX: a\rb\r\n${h}\r\n`, 400, /control character/],
    ["NUL in a header", `GET ${u} HTTP/1.1\r\nX: a\x00b\r\n${h}\r\n`, 400, /control character/],
    [
      "escape in a header",
      `GET ${u} HTTP/1.1\r\nX: \x1b[31m\r\n${h}\r\n`,
      400,
      /control character/,
    ],
    ["obs-fold", `GET ${u} HTTP/1.1\r\n${h}X: a\r\n  folded\r\n\r\n`, 400, /folding/],
    ["space before colon", `GET ${u} HTTP/1.1\r\n${h}X-A : b\r\n\r\n`, 400, /invalid header name/],
    ["missing Host", `GET ${u} HTTP/1.1\r\n\r\n`, 400, /missing Host header/],
    ["two Hosts", `GET ${u} HTTP/1.1\r\n${h}${h}\r\n`, 400, /more than one Host/],
    [
      "origin-form",
      `GET /hello HTTP/1.1\r\n${h}\r\n`,
      400,
      /not a proxy request: netmonitor is an HTTP proxy/,
    ],
    ["asterisk-form", `OPTIONS * HTTP/1.1\r\n${h}\r\n`, 400, /not a proxy request/],
    [
      "userinfo",
      `GET http://ok.test@evil.test/ HTTP/1.1\r\nHost: evil.test\r\n\r\n`,
      400,
      /credentials in the URL/,
    ],
    ["ftp scheme", `GET ftp://ok.test/ HTTP/1.1\r\n${h}\r\n`, 400, /unsupported URL scheme "ftp"/],
    [
      "https absolute-form",
      `GET https://ok.test/ HTTP/1.1\r\nHost: ok.test\r\n\r\n`,
      400,
      /through a CONNECT tunnel/,
    ],
    [
      "backslash in path",
      `GET http://ok.test:${origin.port}/a\\b HTTP/1.1\r\n${h}\r\n`,
      400,
      /backslash/,
    ],
    [
      "percent in host",
      `GET http://ok%2etest/ HTTP/1.1\r\n${h}\r\n`,
      400,
      /invalid character in host/,
    ],
    [
      "a request target over 8 KiB",
      `GET http://ok.test:${origin.port}/${"p".repeat(8192)} HTTP/1.1\r\n${h}\r\n`,
      414,
      /request target of 8\d{3} bytes, longer than the 8192 allowed/,
    ],
    [
      "70 KiB of headers",
      `GET ${u} HTTP/1.1\r\n${h}X-Big: ${"a".repeat(70 * 1024)}\r\n\r\n`,
      431,
      /request head larger than 65536 bytes/,
    ],
    [
      "many small headers",
      `GET ${u} HTTP/1.1\r\n${h}${"X-A: b\r\n".repeat(12000)}\r\n`,
      431,
      /larger than/,
    ],
  ];
  try {
    for (const [name, req, status, body] of cases) {
      const r = await exchange(proxy.port, req);
      assert.equal(r.status, status, name);
      assert.match(r.text, body, name);
      assert.equal(r.headers.get("connection"), "close", name);
      assert.ok(r.closed, `${name}: the proxy closes the connection`);
    }
    const recs = await proxy.waitRecords(cases.length);
    cases.forEach(([name, , status, body], i) => {
      const rec = recs[i];
      assert.equal(rec.status, status, name);
      assert.equal(rec.decision, "error", name);
      assert.equal(rec.source, "error", name);
      assert.match(rec.error!, body, name);
      assert.equal(
        rec.reason,
        status === 431
          ? "request head too large"
          : status === 414
          ? "request target too long"
          : "malformed request",
        name,
      );
    });
    assert.equal(recs[0].method, "GET");
    assert.equal(recs[0].url, u);
    assert.equal(origin.requests.length, 0, "nothing malformed reached the origin");
  } finally {
    await proxy.close();
    await origin.close();
  }
});

Deno.test("malformed: a Host header naming another host is refused by policy (403)", async () => {
  const origin = await startOrigin();
  const proxy = await startTestProxy({
    rules: { "ok.test": "allow-domain", "other.test": "allow-domain" },
    resolve: [["ok.test", origin.port, "127.0.0.1"]],
  });
  try {
    const r = await exchange(
      proxy.port,
      `GET http://ok.test:${origin.port}/ HTTP/1.1\r\nHost: other.test:${origin.port}\r\n\r\n`,
    );
    assert.equal(r.status, 403);
    assert.match(r.headers.get("x-netmonitor-decision")!, /^deny; reason="Host header/);
    assert.match(r.text, /does not match the URL host ok\.test:\d+/);
    // Same host in another spelling is fine.
    const ok = await exchange(
      proxy.port,
      `GET http://ok.test:${origin.port}/hello HTTP/1.1\r\nHost: OK.TEST.:${origin.port}\r\nConnection: close\r\n\r\n`,
    );
    assert.equal(ok.status, 200);
    const [rec] = await proxy.waitRecords(2);
    assert.deepEqual([rec.decision, rec.source, rec.status], ["deny", "policy", 403]);
  } finally {
    await proxy.close();
    await origin.close();
  }
});

Deno.test("malformed: bad chunked request bodies are 400 and the upstream exchange is dropped", async () => {
  let upstreamSaw = "";
  const origin = startRawOrigin(async (conn) => {
    const buf = new Uint8Array(65536);
    while (true) {
      const n = await conn.read(buf);
      if (n === null) return;
      upstreamSaw += new TextDecoder().decode(buf.subarray(0, n));
    }
  });
  const proxy = await startTestProxy({
    rules: { "ok.test": "allow-domain" },
    resolve: [["ok.test", origin.port, "127.0.0.1"]],
  });
  const head =
    `POST http://ok.test:${origin.port}/ HTTP/1.1\r\nHost: ok.test:${origin.port}\r\nTransfer-Encoding: chunked\r\n\r\n`;
  const bodies: [string, RegExp][] = [
    ["zz\r\nhello\r\n0\r\n\r\n", /invalid chunk size/],
    ["5\r\nhelloXX0\r\n\r\n", /not followed by CRLF/],
    ["fffffffffffffffff\r\n", /chunk size too large/],
    ["5\nhello\r\n0\r\n\r\n", /invalid chunk size/],
    ["-5\r\nhello\r\n0\r\n\r\n", /invalid chunk size/],
  ];
  try {
    for (const [body, msg] of bodies) {
      const r = await exchange(proxy.port, head + body);
      assert.equal(r.status, 400, body);
      assert.match(r.text, msg, body);
    }
    const recs = await proxy.waitRecords(bodies.length);
    for (const rec of recs) {
      assert.deepEqual([rec.method, rec.status, rec.decision, rec.source], [
        "POST",
        400,
        "error",
        "error",
      ]);
    }
    assert.doesNotMatch(upstreamSaw, /zz|XX|ffff/, "invalid chunk bytes are never forwarded");
  } finally {
    await proxy.close();
    await origin.close();
  }
});

Deno.test("malformed: slowloris heads get 408 while other clients are served", async () => {
  const origin = await startOrigin();
  const proxy = await startTestProxy({
    rules: { "ok.test": "allow-domain" },
    resolve: [["ok.test", origin.port, "127.0.0.1"]],
    headerTimeoutMs: 400,
  });
  const slow = await RawClient.connect(proxy.port);
  const silent = await RawClient.connect(proxy.port);
  try {
    await slow.send(`GET http://ok.test:${origin.port}/ HTTP/1.1\r\nHost: ok`);
    const dribble = setInterval(() => slow.send("k").catch(() => {}), 50);
    // Meanwhile a normal client is served.
    const good = await exchange(
      proxy.port,
      `GET http://ok.test:${origin.port}/hello HTTP/1.1\r\nHost: ok.test:${origin.port}\r\nConnection: close\r\n\r\n`,
    );
    assert.equal(good.status, 200);
    const r = await slow.response();
    clearInterval(dribble);
    assert.equal(r.status, 408);
    assert.match(r.text, /request head not received within 400 ms/);
    // A connection that never sends a byte is closed without an answer or a record.
    assert.equal(await silent.readToEnd(), "");
    const recs = await proxy.waitRecords(2);
    const rec = recs.find((x) => x.status === 408)!;
    assert.deepEqual([rec.method, rec.decision, rec.reason], [
      "GET",
      "error",
      "request head timeout",
    ]);
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(proxy.records.length, 2);
  } finally {
    slow.close();
    silent.close();
    await proxy.close();
    await origin.close();
  }
});

Deno.test("malformed: an idle keep-alive connection is closed after the idle timeout", async () => {
  const origin = await startOrigin();
  const proxy = await startTestProxy({
    rules: { "ok.test": "allow-domain" },
    resolve: [["ok.test", origin.port, "127.0.0.1"]],
    idleTimeoutMs: 300,
  });
  const c = await RawClient.connect(proxy.port);
  try {
    await c.send(
      `GET http://ok.test:${origin.port}/hello HTTP/1.1\r\nHost: ok.test:${origin.port}\r\n\r\n`,
    );
    assert.equal((await c.response()).status, 200);
    assert.equal(await c.readToEnd(), "");
    assert.equal(proxy.records.length, 1);
  } finally {
    c.close();
    await proxy.close();
    await origin.close();
  }
});

Deno.test("malformed: a client closing mid-head or mid-body is recorded, nothing is left hanging", async () => {
  const origin = await startOrigin();
  const proxy = await startTestProxy({
    rules: { "ok.test": "allow-domain" },
    resolve: [["ok.test", origin.port, "127.0.0.1"]],
  });
  try {
    const a = await RawClient.connect(proxy.port);
    await a.send(`GET http://ok.test:${origin.port}/ HTTP/1.1\r\nHo`);
    await a.conn.closeWrite();
    const ra = await a.response();
    assert.equal(ra.status, 400);
    a.close();
    const b = await RawClient.connect(proxy.port);
    await b.send(
      `POST http://ok.test:${origin.port}/upload HTTP/1.1\r\nHost: ok.test:${origin.port}\r\nContent-Length: 100\r\n\r\nonly-some`,
    );
    await new Promise((r) => setTimeout(r, 100));
    b.close();
    const recs = await proxy.waitRecords(2);
    assert.match(recs[0].error!, /closed in the middle of a request head/);
    assert.equal(recs[1].method, "POST");
    assert.ok(recs[1].error, JSON.stringify(recs[1]));
  } finally {
    await proxy.close();
    await origin.close();
  }
});

Deno.test("malformed: a request target cut short for the record keeps no part of a credential", async () => {
  const proxy = await startTestProxy({ rules: { "ok.test": "allow-domain" } });
  const h = "Host: ok.test\r\n";
  // The password starts where the record's copy of the target used to be cut
  // (200 characters of a head that cannot be parsed, 2,000 of a bad target).
  const at = (n: number) => `http://${"u".repeat(n)}:SECRETPW${"p".repeat(40)}@ok.test/`;
  const cases = [
    `GET ${at(185)} HTTP/1.1\n${h}\n`, // bare LF: the head is not parsed
    `GET ${at(185)}${"a".repeat(8200)} HTTP/1.1\r\n${h}\r\n`, // 414
    `GET ${at(1985)} HTTP/1.1\r\n${h}\r\n`, // credentials refused (TargetError)
    `GET /x?a=1&k=${"0123456789abcdef".repeat(20)} HTTP/1.1\n${h}\n`, // long hex value, cut
    // 431 inside the authority: the `@` never arrives.
    `GET http://u:SECRETPW${"p".repeat(70 * 1024)}@ok.test/ HTTP/1.1\r\n${h}\r\n`,
  ];
  try {
    for (const req of cases) await exchange(proxy.port, req);
    const recs = await proxy.waitRecords(cases.length);
    for (const rec of recs) {
      const line = serialiseRecord(rec);
      assert.equal(line.includes(":SEC"), false, line.slice(0, 300));
      assert.equal(line.includes("0123456789abcdef0"), false, line.slice(0, 300));
      assert.ok(line.includes("REDACTED"), line.slice(0, 300));
    }
  } finally {
    await proxy.close();
  }
});

Deno.test("malformed: a bad host with a quote in it keeps no secret in the record's error", async () => {
  const proxy = await startTestProxy({ rules: { "ok.test": "allow-domain" } });
  // The host's error quoted it raw: the `"` inside closed the quote early and
  // the rest was never read as a target, so its query stayed in the log.
  const cases = [
    `GET http://ok.test/ HTTP/1.1\r\nHost: a"/x?token=SECRETQ1\r\n\r\n`,
    `GET http://ok.test/ HTTP/1.1\r\nHost: a" /x?api_key=SECRETQ2\r\n\r\n`,
    `CONNECT h"?token=SECRETQ3:443 HTTP/1.1\r\n\r\n`,
    `GET http://h";token=SECRETQ4/ HTTP/1.1\r\n\r\n`,
  ];
  try {
    for (const req of cases) assert.equal((await exchange(proxy.port, req)).status, 400, req);
    const recs = await proxy.waitRecords(cases.length);
    for (const rec of recs) {
      assert.ok(rec.error?.includes("host"), String(rec.error));
      const error = serialiseRecord(rec).split('"error":')[1];
      assert.equal(error.includes("SECRETQ"), false, error);
    }
  } finally {
    await proxy.close();
  }
});

Deno.test("malformed: a request head cut short by shutdown still gets its one record", async () => {
  const proxy = await startTestProxy({
    rules: { "ok.test": "allow-domain" },
    shutdownGraceMs: 200,
  });
  const slow = await RawClient.connect(proxy.port);
  const closer = await RawClient.connect(proxy.port);
  const idle = await RawClient.connect(proxy.port);
  try {
    await slow.send("GET http://ok.test/slow?token=SECRET1 HTTP/1.1\r\nHost: ok");
    await closer.send("GET http://ok.test/closer HTTP/1.1\r\nHo");
    await new Promise((r) => setTimeout(r, 100));
    const closing = proxy.close();
    closer.close(); // ends its half head while the proxy stops
    await closing;
    const recs = proxy.records;
    assert.deepEqual(recs.map((r) => r.url).sort(), [
      "http://ok.test/closer",
      "http://ok.test/slow?token=SECRET1",
    ]);
    for (const r of recs) {
      assert.deepEqual([r.decision, r.reason], ["error", "shutting down"], JSON.stringify(r));
      assert.match(r.error!, /before the request head was complete/);
    }
  } finally {
    slow.close();
    idle.close();
    await proxy.close();
  }
});
