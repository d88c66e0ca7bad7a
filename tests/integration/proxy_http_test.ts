/**
 * HTTP forwarding through the proxy against real loopback origins: allowed
 * and denied requests, keep-alive, bodies in every framing, upgrades, and
 * the record of each.
 */

import assert from "node:assert/strict";
import { has } from "../_helpers/tools.ts";
import {
  patternBytes,
  readHeadText,
  sha256,
  startOrigin,
  startRawOrigin,
} from "../_helpers/origin.ts";
import { curl, RawClient, startTestProxy } from "../_helpers/proxy.ts";

const noCurl = !has("curl");

Deno.test({
  name: "http: allowed GET through curl is forwarded and recorded",
  ignore: noCurl,
  async fn() {
    const origin = await startOrigin();
    const proxy = await startTestProxy({
      rules: { "origin.test": "allow-domain" },
      resolve: [["origin.test", origin.port, "127.0.0.1"]],
    });
    try {
      const url = `http://origin.test:${origin.port}/hello`;
      const r = await curl(proxy.url, [url]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, "hello from origin");
      const [rec] = await proxy.waitRecords(1);
      assert.equal(rec.method, "GET");
      assert.equal(rec.url, url);
      assert.equal(rec.host, "origin.test");
      assert.equal(rec.decision, "allow");
      assert.equal(rec.source, "rule");
      assert.equal(rec.reason, 'rule "origin.test": allow-domain');
      assert.equal(rec.status, 200);
      assert.equal(rec.bytesUp, 0);
      assert.equal(rec.bytesDown, 17);
      assert.match(rec.client, /^127\.0\.0\.1:\d+$/);
      assert.match(rec.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
      assert.ok(rec.durationMs >= 0);
      assert.equal(rec.error, undefined);
      assert.deepEqual(proxy.decided[0].target, {
        scheme: "http",
        host: "origin.test",
        port: origin.port,
        path: "/hello",
      });
      assert.equal(proxy.decided[0].url, url);
      assert.equal(origin.requests[0].headers.host, `origin.test:${origin.port}`);
    } finally {
      await proxy.close();
      await origin.close();
    }
  },
});

Deno.test({
  name: "http: denied request gets 403 naming host and rule, with the decision header",
  ignore: noCurl,
  async fn() {
    const origin = await startOrigin();
    const proxy = await startTestProxy({
      rules: { "blocked.test": "deny-domain" },
      resolve: [["blocked.test", origin.port, "127.0.0.1"], [
        "other.test",
        origin.port,
        "127.0.0.1",
      ]],
    });
    try {
      const r = await curl(proxy.url, ["-i", `http://blocked.test:${origin.port}/x?y=1`]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /^HTTP\/1\.1 403 Forbidden\r\n/);
      assert.match(
        r.stdout,
        /\r\nX-Netmonitor-Decision: deny; reason="rule \\"blocked.test\\": deny-domain"\r\n/,
      );
      assert.match(r.stdout, /host: blocked\.test\n/);
      assert.match(r.stdout, /reason: rule "blocked\.test": deny-domain/);
      const r2 = await curl(proxy.url, ["-i", `http://other.test:${origin.port}/`]);
      assert.match(r2.stdout, /^HTTP\/1\.1 403 /);
      assert.match(r2.stdout, /no rule: --default deny/);
      const [a, b] = await proxy.waitRecords(2);
      assert.deepEqual(
        [a.decision, a.source, a.status, a.reason],
        ["deny", "rule", 403, 'rule "blocked.test": deny-domain'],
      );
      assert.ok(a.bytesDown > 0);
      assert.deepEqual([b.decision, b.source, b.status], ["deny", "default", 403]);
      assert.equal(origin.requests.length, 0, "denied requests never reach the origin");
    } finally {
      await proxy.close();
      await origin.close();
    }
  },
});

/** A raw keep-alive origin that says which connection and request number served it. */
function countingOrigin() {
  let conns = 0;
  const heads: string[] = [];
  const origin = startRawOrigin(async (conn) => {
    const id = ++conns;
    let n = 0;
    const buf = new Uint8Array(65536);
    let have = "";
    while (true) {
      while (!have.includes("\r\n\r\n")) {
        const r = await conn.read(buf);
        if (r === null) return;
        have += new TextDecoder().decode(buf.subarray(0, r));
      }
      const end = have.indexOf("\r\n\r\n") + 4;
      heads.push(have.slice(0, end));
      have = have.slice(end);
      const body = `conn=${id} req=${++n}`;
      await conn.write(
        new TextEncoder().encode(
          `HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\nConnection: keep-alive, X-Hop\r\n` +
            `X-Hop: secret\r\nKeep-Alive: timeout=5\r\nX-End: 1\r\n\r\n${body}`,
        ),
      );
    }
  });
  return { origin, heads };
}

Deno.test("http: keep-alive, sequential and pipelined requests share one upstream connection", async () => {
  const { origin, heads } = countingOrigin();
  const proxy = await startTestProxy({
    rules: { "ka.test": "allow-domain" },
    resolve: [["ka.test", origin.port, "127.0.0.1"]],
  });
  const c = await RawClient.connect(proxy.port);
  try {
    const req = (p: string) =>
      `GET http://ka.test:${origin.port}${p} HTTP/1.1\r\nHost: ka.test:${origin.port}\r\n\r\n`;
    await c.send(req("/1"));
    const r1 = await c.response();
    assert.equal(r1.text, "conn=1 req=1");
    // Hop-by-hop fields of the response, and those its Connection names, are gone.
    assert.equal(r1.headers.get("x-hop"), undefined);
    assert.equal(r1.headers.get("keep-alive"), undefined);
    assert.equal(r1.headers.get("connection"), undefined);
    assert.equal(r1.headers.get("x-end"), "1");
    await c.send(req("/2"));
    assert.equal((await c.response()).text, "conn=1 req=2");
    // Pipelined: two requests in one write.
    await c.send(req("/3") + req("/4"));
    assert.equal((await c.response()).text, "conn=1 req=3");
    assert.equal((await c.response()).text, "conn=1 req=4");
    const recs = await proxy.waitRecords(4);
    assert.deepEqual(recs.map((r) => r.url.replace(/.*\//, "/")), ["/1", "/2", "/3", "/4"]);
    assert.ok(recs.every((r) => r.client === recs[0].client && r.status === 200));
    assert.equal(heads.length, 4);
    assert.match(heads[0], /^GET \/1 HTTP\/1\.1\r\nHost: ka\.test:\d+\r\n\r\n$/);
  } finally {
    c.close();
    await proxy.close();
    await origin.close();
  }
});

Deno.test("http: a new host on the same client connection gets its own upstream", async () => {
  const { origin } = countingOrigin();
  const proxy = await startTestProxy({
    rules: { "a.test": "allow-domain", "b.test": "allow-domain" },
    resolve: [["a.test", origin.port, "127.0.0.1"], ["b.test", origin.port, "127.0.0.1"]],
  });
  const c = await RawClient.connect(proxy.port);
  try {
    for (
      const [h, want] of [["a.test", "conn=1 req=1"], ["b.test", "conn=2 req=1"], [
        "b.test",
        "conn=2 req=2",
      ]]
    ) {
      await c.send(`GET http://${h}:${origin.port}/ HTTP/1.1\r\nHost: ${h}:${origin.port}\r\n\r\n`);
      assert.equal((await c.response()).text, want);
    }
    await proxy.waitRecords(3);
  } finally {
    c.close();
    await proxy.close();
    await origin.close();
  }
});

Deno.test({
  name: "http: curl reuses its connection for two URLs (keep-alive on the client side)",
  ignore: noCurl,
  async fn() {
    const origin = await startOrigin();
    const proxy = await startTestProxy({
      rules: { "origin.test": "allow-domain" },
      resolve: [["origin.test", origin.port, "127.0.0.1"]],
    });
    try {
      const u = `http://origin.test:${origin.port}`;
      const r = await curl(proxy.url, [`${u}/hello`, `${u}/echo`, `${u}/hello`]);
      assert.equal(r.code, 0, r.stderr);
      const recs = await proxy.waitRecords(3);
      assert.equal(new Set(recs.map((x) => x.client)).size, 1);
    } finally {
      await proxy.close();
      await origin.close();
    }
  },
});

Deno.test({
  name: "http: large bodies stream both ways in Content-Length and chunked framing",
  ignore: noCurl,
  async fn() {
    const origin = await startOrigin();
    const proxy = await startTestProxy({
      rules: { "origin.test": "allow-domain" },
      resolve: [["origin.test", origin.port, "127.0.0.1"]],
    });
    const dir = await Deno.makeTempDir();
    try {
      const size = 24 * 1024 * 1024 + 7;
      const data = patternBytes(size, 3);
      const file = `${dir}/upload.bin`;
      await Deno.writeFile(file, data);
      const want = await sha256(data);
      const u = `http://origin.test:${origin.port}`;

      const up1 = await curl(proxy.url, ["--data-binary", `@${file}`, `${u}/upload`]);
      assert.equal(up1.code, 0, up1.stderr);
      assert.deepEqual(JSON.parse(up1.stdout), { bodyLength: size, bodySha256: want });

      const up2 = await curl(proxy.url, [
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        `@${file}`,
        `${u}/upload`,
      ]);
      assert.equal(up2.code, 0, up2.stderr);
      assert.deepEqual(JSON.parse(up2.stdout), { bodyLength: size, bodySha256: want });

      const down1 = await curl(proxy.url, [`${u}/bytes/${size}`]);
      assert.equal(down1.bytes.length, size);
      assert.equal(await sha256(down1.bytes), await sha256(patternBytes(size)));
      const down2 = await curl(proxy.url, ["-D", `${dir}/h`, `${u}/chunked/${size}`]);
      assert.equal(down2.bytes.length, size);
      assert.equal(await sha256(down2.bytes), await sha256(patternBytes(size)));
      assert.match(await Deno.readTextFile(`${dir}/h`), /transfer-encoding: chunked/i);

      const recs = await proxy.waitRecords(4);
      assert.deepEqual(recs.map((r) => [r.method, r.status, r.bytesUp, r.bytesDown > 0]), [
        ["POST", 200, size, true],
        ["POST", 200, size, true],
        ["GET", 200, 0, true],
        ["GET", 200, 0, true],
      ]);
      assert.equal(recs[2].bytesDown, size);
      assert.equal(recs[3].bytesDown, size);
    } finally {
      await Deno.remove(dir, { recursive: true });
      await proxy.close();
      await origin.close();
    }
  },
});

Deno.test("http: chunked request bodies are re-encoded canonically (extensions, trailers dropped)", async () => {
  let seen = "";
  const origin = startRawOrigin(async (conn) => {
    const buf = new Uint8Array(65536);
    let text = "";
    while (!text.includes("0\r\n\r\n")) {
      const n = await conn.read(buf);
      if (n === null) break;
      text += new TextDecoder().decode(buf.subarray(0, n));
    }
    seen = text;
    await conn.write(new TextEncoder().encode("HTTP/1.1 204 No Content\r\n\r\n"));
  });
  const proxy = await startTestProxy({
    rules: { "c.test": "allow-domain" },
    resolve: [["c.test", origin.port, "127.0.0.1"]],
  });
  const c = await RawClient.connect(proxy.port);
  try {
    await c.send(
      `POST http://c.test:${origin.port}/ HTTP/1.1\r\nHost: c.test:${origin.port}\r\n` +
        `Transfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n` +
        `5;ext="a b"\r\nhello\r\n000006\r\n world\r\n0\r\nX-T: 1\r\n\r\n`,
    );
    const r = await c.response();
    assert.equal(r.status, 204);
    const body = seen.slice(seen.indexOf("\r\n\r\n") + 4);
    assert.match(seen, /\r\nTransfer-Encoding: chunked\r\n/);
    assert.doesNotMatch(seen, /Trailer:/);
    // Whatever the piece sizes, the decoded body is the same and nothing else is passed on.
    assert.doesNotMatch(body, /ext|X-T/);
    const decoded = body.split("\r\n").filter((_, i) => i % 2 === 1).join("");
    assert.equal(decoded, "hello world");
    const [rec] = await proxy.waitRecords(1);
    assert.equal(rec.bytesUp, 11);
    assert.equal(rec.status, 204);
  } finally {
    c.close();
    await proxy.close();
    await origin.close();
  }
});

Deno.test("http: request headers are cleaned (hop-by-hop, Proxy-Authorization) and Host rewritten", async () => {
  const origin = await startOrigin();
  const proxy = await startTestProxy({
    rules: { "origin.test": "allow-domain" },
    resolve: [["origin.test", origin.port, "127.0.0.1"]],
  });
  const c = await RawClient.connect(proxy.port);
  try {
    await c.send(
      `GET http://ORIGIN.test.:${origin.port}/echo HTTP/1.1\r\nHost: Origin.Test:${origin.port}\r\n` +
        "Proxy-Authorization: Basic dXNlcjpwYXNz\r\nProxy-Connection: keep-alive\r\n" +
        "Connection: keep-alive, X-Private\r\nX-Private: 1\r\nKeep-Alive: 300\r\nTE: trailers\r\n" +
        "Authorization: Bearer end-to-end\r\nX-Keep: yes\r\n\r\n",
    );
    const r = await c.response();
    assert.equal(r.status, 200);
    const echo = JSON.parse(r.text);
    const h = echo.headers as Record<string, string>;
    assert.equal(h.host, `origin.test:${origin.port}`);
    assert.equal(h["x-keep"], "yes");
    assert.equal(h.authorization, "Bearer end-to-end");
    for (
      const gone of ["proxy-authorization", "proxy-connection", "x-private", "keep-alive", "te"]
    ) {
      assert.equal(h[gone], undefined, gone);
    }
    const [rec] = await proxy.waitRecords(1);
    assert.equal(rec.url, `http://origin.test:${origin.port}/echo`);
    assert.doesNotMatch(JSON.stringify(rec), /dXNlcjpwYXNz|end-to-end/);
  } finally {
    c.close();
    await proxy.close();
    await origin.close();
  }
});

Deno.test("http: HTTP/1.0 client gets chunked responses as close-delimited bodies", async () => {
  const origin = await startOrigin();
  const proxy = await startTestProxy({
    rules: { "origin.test": "allow-domain" },
    resolve: [["origin.test", origin.port, "127.0.0.1"]],
  });
  const c = await RawClient.connect(proxy.port);
  try {
    await c.send(`GET http://origin.test:${origin.port}/chunked/50000 HTTP/1.0\r\n\r\n`);
    const text = await c.readToEnd();
    const head = text.slice(0, text.indexOf("\r\n\r\n"));
    assert.match(head, /^HTTP\/1\.0 200 /);
    assert.doesNotMatch(head, /transfer-encoding/i);
    assert.match(head, /\r\nConnection: close/);
    assert.equal(text.length - head.length - 4, 50000);
    const [rec] = await proxy.waitRecords(1);
    assert.equal(rec.bytesDown, 50000);
  } finally {
    c.close();
    await proxy.close();
    await origin.close();
  }
});

Deno.test("http: HEAD keeps Content-Length without a body; 204/304 have none", async () => {
  const origin = await startOrigin();
  const proxy = await startTestProxy({
    rules: { "origin.test": "allow-domain" },
    resolve: [["origin.test", origin.port, "127.0.0.1"]],
  });
  const c = await RawClient.connect(proxy.port);
  try {
    const h = `Host: origin.test:${origin.port}\r\n\r\n`;
    await c.send(`HEAD http://origin.test:${origin.port}/bytes/1234 HTTP/1.1\r\n${h}`);
    const r = await c.response({ head: true });
    assert.equal(r.status, 200);
    assert.equal(r.headers.get("content-length"), "1234");
    await c.send(`GET http://origin.test:${origin.port}/status/204 HTTP/1.1\r\n${h}`);
    assert.equal((await c.response()).status, 204);
    await c.send(`GET http://origin.test:${origin.port}/hello HTTP/1.1\r\n${h}`);
    assert.equal((await c.response()).text, "hello from origin");
    const recs = await proxy.waitRecords(3);
    assert.deepEqual(recs.map((r) => [r.method, r.status, r.bytesDown]), [
      ["HEAD", 200, 0],
      ["GET", 204, 0],
      ["GET", 200, 17],
    ]);
  } finally {
    c.close();
    await proxy.close();
    await origin.close();
  }
});

Deno.test({
  name: "http: Expect: 100-continue is relayed",
  ignore: noCurl,
  async fn() {
    const origin = await startOrigin();
    const proxy = await startTestProxy({
      rules: { "origin.test": "allow-domain" },
      resolve: [["origin.test", origin.port, "127.0.0.1"]],
    });
    try {
      const r = await curl(proxy.url, [
        "-H",
        "Expect: 100-continue",
        "--data-binary",
        "abcdef",
        "-v",
        `http://origin.test:${origin.port}/upload`,
      ]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stderr, /< HTTP\/1\.1 100 Continue/);
      assert.equal(JSON.parse(r.stdout).bodyLength, 6);
      const [rec] = await proxy.waitRecords(1);
      assert.equal(rec.status, 200);
      assert.equal(rec.bytesUp, 6);
    } finally {
      await proxy.close();
      await origin.close();
    }
  },
});

/** A masked client WebSocket frame (RFC 6455). */
function wsFrame(text: string): Uint8Array {
  const payload = new TextEncoder().encode(text);
  const mask = [1, 2, 3, 4];
  return new Uint8Array([
    0x81,
    0x80 | payload.length,
    ...mask,
    ...payload.map((b, i) => b ^ mask[i % 4]),
  ]);
}

Deno.test("http: WebSocket upgrade is relayed once allowed", async () => {
  const origin = await startOrigin();
  const proxy = await startTestProxy({
    rules: { "origin.test": "allow-domain" },
    resolve: [["origin.test", origin.port, "127.0.0.1"]],
  });
  const c = await RawClient.connect(proxy.port);
  try {
    await c.send(
      `GET http://origin.test:${origin.port}/ws HTTP/1.1\r\nHost: origin.test:${origin.port}\r\n` +
        "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n" +
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    );
    const r = await c.response({ head: true });
    assert.equal(r.status, 101);
    assert.equal(r.headers.get("upgrade")?.toLowerCase(), "websocket");
    assert.equal(r.headers.get("sec-websocket-accept"), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    await c.send(wsFrame("ping through the proxy"));
    const frame = await c.take(2 + 22);
    assert.equal(frame[0], 0x81);
    assert.equal(frame[1], 22);
    assert.equal(new TextDecoder().decode(frame.subarray(2)), "ping through the proxy");
    c.close();
    const [rec] = await proxy.waitRecords(1);
    assert.equal(rec.status, 101);
    assert.equal(rec.decision, "allow");
    assert.equal(rec.bytesUp, 28);
    assert.equal(rec.bytesDown >= 24, true);
  } finally {
    c.close();
    await proxy.close();
    await origin.close();
  }
});

Deno.test("http: a denied upgrade is a 403 and nothing is relayed", async () => {
  const origin = startRawOrigin(async (conn) => {
    await readHeadText(conn);
    throw new Error("must not be reached");
  });
  const proxy = await startTestProxy({ resolve: [["ws.test", origin.port, "127.0.0.1"]] });
  const c = await RawClient.connect(proxy.port);
  try {
    await c.send(
      `GET http://ws.test:${origin.port}/ws HTTP/1.1\r\nHost: ws.test:${origin.port}\r\n` +
        "Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    );
    assert.equal((await c.response()).status, 403);
    const [rec] = await proxy.waitRecords(1);
    assert.deepEqual([rec.decision, rec.status], ["deny", 403]);
  } finally {
    c.close();
    await proxy.close();
    await origin.close();
  }
});

Deno.test("http: an h2c upgrade is not forwarded (only WebSocket upgrades are relayed)", async () => {
  let head = "";
  const origin = startRawOrigin(async (conn) => {
    head = await readHeadText(conn);
    // A server that would switch if asked: it must not have been asked.
    await conn.write(new TextEncoder().encode("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
  });
  const proxy = await startTestProxy({
    rules: { "h2c.test": "allow-domain" },
    resolve: [["h2c.test", origin.port, "127.0.0.1"]],
  });
  const c = await RawClient.connect(proxy.port);
  try {
    await c.send(
      `GET http://h2c.test:${origin.port}/ HTTP/1.1\r\nHost: h2c.test:${origin.port}\r\n` +
        "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
    );
    const r = await c.response();
    assert.equal(r.status, 200);
    assert.doesNotMatch(head, /upgrade|http2-settings/i);
    const [rec] = await proxy.waitRecords(1);
    assert.equal(rec.status, 200);
  } finally {
    c.close();
    await proxy.close();
    await origin.close();
  }
});

Deno.test("http: a client that half-closes after its request still gets the response", async () => {
  const origin = await startOrigin();
  let decisions = 0;
  const proxy = await startTestProxy({
    resolve: [["origin.test", origin.port, "127.0.0.1"], ["no.test", origin.port, "127.0.0.1"]],
    // A slow decision (a prompt): the client's end of stream arrives meanwhile.
    decide: async (input) => {
      decisions++;
      await new Promise((r) => setTimeout(r, 100));
      return input.target.host === "no.test"
        ? { action: "deny", source: "prompt", reason: "prompt: deny-once" }
        : { action: "allow", source: "prompt", reason: "prompt: allow-once" };
    },
  });
  const host = `origin.test:${origin.port}`;
  const ask = async (request: string) => {
    const c = await RawClient.connect(proxy.port);
    try {
      await c.send(request);
      await c.conn.closeWrite(); // shutdown(SHUT_WR): "that was my last request"
      const r = await c.response();
      return { r, rest: await c.readToEnd() };
    } finally {
      c.close();
    }
  };
  try {
    const get = await ask(`GET http://${host}/hello HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
    assert.equal(get.r.status, 200);
    assert.equal(get.r.text, "hello from origin");
    assert.equal(get.rest, "", "then the proxy closes the connection");

    const post = await ask(
      `POST http://${host}/upload HTTP/1.1\r\nHost: ${host}\r\nContent-Length: 5\r\n\r\nhello`,
    );
    assert.equal(post.r.status, 200);
    assert.equal(JSON.parse(post.r.text).bodyLength, 5);

    const nhost = `no.test:${origin.port}`;
    const denied = await ask(`GET http://${nhost}/ HTTP/1.1\r\nHost: ${nhost}\r\n\r\n`);
    assert.equal(denied.r.status, 403);
    assert.match(denied.r.text, /netmonitor denied GET/);

    assert.equal(decisions, 3);
    const recs = await proxy.waitRecords(3);
    assert.deepEqual(recs.map((r) => [r.method, r.status, r.error]), [
      ["GET", 200, undefined],
      ["POST", 200, undefined],
      ["GET", 403, undefined],
    ]);
    assert.equal(recs[1].bytesUp, 5);
  } finally {
    await proxy.close();
    await origin.close();
  }
});
