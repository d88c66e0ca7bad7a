/**
 * Adversarial tests: headers that must not cross the proxy. Proxy
 * credentials and hop-by-hop fields never reach the origin; an Upgrade to a
 * denied host is never relayed; the Host the origin sees is the one decided.
 */

import assert from "node:assert/strict";
import { attempt, newRecords, seenPaths, startAttackEnv } from "../_helpers/attack.ts";
import { startDnsServer, startHeadOnlyOrigin } from "../_helpers/origin.ts";
import { RawClient, startTestProxy } from "../_helpers/proxy.ts";

Deno.test("attack headers: proxy credentials and hop-by-hop fields are not forwarded", async (t) => {
  const env = await startAttackEnv();
  const A = env.allowed;
  const echo = async (extra: string) => {
    const a = await attempt(
      env.proxy.port,
      `GET http://${A}/echo HTTP/1.1\r\nHost: ${A}\r\n${extra}Connection: close\r\n\r\n`,
    );
    assert.equal(a.responses[0].status, 200, a.responses[0].text);
    return JSON.parse(a.responses[0].text).headers as Record<string, string>;
  };
  try {
    await t.step("Proxy-Authorization (any case, repeated)", async () => {
      const h = await echo(
        "Proxy-Authorization: Basic c2VjcmV0OnNlY3JldA==\r\nproxy-authorization: Bearer s3cr3t\r\n" +
          "PROXY-AUTHORIZATION: x\r\n",
      );
      assert.ok(!("proxy-authorization" in h), JSON.stringify(h));
      assert.ok(!JSON.stringify(h).includes("s3cr3t"));
    });
    await t.step("Connection: close, X-Secret strips X-Secret", async () => {
      const a = await attempt(
        env.proxy.port,
        `GET http://${A}/echo HTTP/1.1\r\nHost: ${A}\r\nX-Secret: hunter2\r\nX-Other: 1\r\nConnection: close, X-Secret\r\n\r\n`,
      );
      const h = JSON.parse(a.responses[0].text).headers;
      assert.ok(!("x-secret" in h), JSON.stringify(h));
      assert.equal(h["x-other"], "1");
    });
    await t.step("fields named in a second Connection header, in odd case", async () => {
      const h = await echo(
        "X-A: 1\r\nX-B: 2\r\nConnection: keep-alive\r\nConnection: x-a , X-B\r\n",
      );
      assert.ok(!("x-a" in h) && !("x-b" in h), JSON.stringify(h));
    });
    await t.step("fixed hop-by-hop fields", async () => {
      const h = await echo(
        "Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nTrailer: X-T\r\nUpgrade: h2c\r\n",
      );
      for (const n of ["keep-alive", "proxy-connection", "te", "trailer", "upgrade"]) {
        assert.ok(!(n in h), `${n} forwarded: ${JSON.stringify(h)}`);
      }
    });
    await t.step(
      "path overrides some servers route on (X-Original-URL, X-Rewrite-URL)",
      async () => {
        const h = await echo("X-Original-URL: /admin\r\nx-rewrite-url: /admin\r\n");
        assert.ok(!("x-original-url" in h) && !("x-rewrite-url" in h), JSON.stringify(h));
      },
    );
    await t.step("Connection cannot strip the proxy's own framing or Host", async () => {
      const a = await attempt(
        env.proxy.port,
        `POST http://${A}/echo HTTP/1.1\r\nHost: ${A}\r\nContent-Length: 5\r\nConnection: close, Content-Length, Host, Transfer-Encoding\r\n\r\nhello`,
      );
      const info = JSON.parse(a.responses[0].text);
      assert.equal(info.bodyLength, 5);
      assert.equal(info.headers.host, A);
    });
    await t.step("the origin sees the decided Host, not the client's spelling", async () => {
      const a = await attempt(
        env.proxy.port,
        `GET http://ALLOWED.test.:${env.p}/echo HTTP/1.1\r\nHost: Allowed.Test.:${env.p}\r\nConnection: close\r\n\r\n`,
      );
      assert.equal(JSON.parse(a.responses[0].text).headers.host, A);
    });
    await t.step("X-Netmonitor-Decision from a client is not trusted as a decision", async () => {
      const a = await attempt(
        env.proxy.port,
        `GET http://${env.denied}/x HTTP/1.1\r\nHost: ${env.denied}\r\nX-Netmonitor-Decision: allow\r\nConnection: close\r\n\r\n`,
      );
      assert.equal(a.responses[0].status, 403);
    });
  } finally {
    await env.close();
  }
});

Deno.test("attack headers: an Upgrade to a denied host is never relayed", async (t) => {
  const env = await startAttackEnv();
  const D = env.denied;
  const ws =
    "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
    "Sec-WebSocket-Version: 13\r\n";
  try {
    for (
      const [name, req] of [
        ["WebSocket to the denied host", `GET http://${D}/ws HTTP/1.1\r\nHost: ${D}\r\n${ws}\r\n`],
        [
          "h2c upgrade to the denied host",
          `GET http://${D}/ws HTTP/1.1\r\nHost: ${D}\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n`,
        ],
        [
          "WebSocket to the allowed host with a denied Host header",
          `GET http://${env.allowed}/ws HTTP/1.1\r\nHost: ${D}\r\n${ws}\r\n`,
        ],
      ]
    ) {
      await t.step(name, async () => {
        const before = env.proxy.records.length;
        const a = await attempt(env.proxy.port, req);
        assert.equal(a.responses[0].status, 403, a.responses[0].statusLine);
        assert.ok(!a.rest.includes("101"), "no switch after the refusal");
        const [rec] = await newRecords(env.proxy, before, 1);
        assert.equal(rec.decision, "deny");
      });
    }
    await t.step(
      "optimistic WebSocket frames after a refused Upgrade: closed, one record",
      async () => {
        // A client may send frames right after its Upgrade request. When the
        // upgrade is refused, those bytes must not be parsed as the next HTTP
        // request (which yields a second, empty "malformed request" record):
        // a refused Upgrade should close the connection.
        const before = env.proxy.records.length;
        const a = await attempt(
          env.proxy.port,
          `GET http://${D}/ws HTTP/1.1\r\nHost: ${D}\r\n${ws}\r\n\x81\x85hello`,
          { closeMs: 3000 },
        );
        assert.equal(a.responses[0].status, 403);
        assert.ok(!a.rest.includes("HTTP/1.1 400"), `frames were parsed as HTTP: ${a.rest}`);
        const [rec] = await newRecords(env.proxy, before, 1);
        assert.equal(rec.decision, "deny");
      },
    );
    assert.deepEqual(seenPaths(env.origin), []);
    await t.step("control: a WebSocket to the allowed host is relayed", async () => {
      const before = env.proxy.records.length;
      const a = await attempt(
        env.proxy.port,
        `GET http://${env.allowed}/ws HTTP/1.1\r\nHost: ${env.allowed}\r\n${ws}\r\n`,
        { closeMs: 200 },
      );
      assert.equal(a.responses[0].status, 101);
      await newRecords(env.proxy, before, 1);
    });
  } finally {
    await env.close();
  }
});

Deno.test("attack headers: a 101 that is not a WebSocket handshake opens no relay", async (t) => {
  // An origin that answers 101 without switching (a status it reflects, a
  // broken handler) would leave the client a raw pipe to its HTTP parser:
  // every request sent through it reaches the origin undecided.
  const answers: Record<string, string> = {
    "/bare": "HTTP/1.1 101 Switching Protocols\r\n\r\n",
    "/no-accept":
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    "/wrong-accept":
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n",
    "/other-protocol":
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
  };
  const seen: string[] = [];
  const origin = startHeadOnlyOrigin((head) => {
    const line = head.slice(0, head.indexOf("\r\n"));
    seen.push(line);
    return answers[line.split(" ")[1]] ?? "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
  });
  const p = origin.port;
  const dns = await startDnsServer({});
  const proxy = await startTestProxy({
    rules: {
      [`http://ws.test:${p}/bare`]: "allow-url",
      [`http://ws.test:${p}/no-accept`]: "allow-url",
      [`http://ws.test:${p}/wrong-accept`]: "allow-url",
      [`http://ws.test:${p}/other-protocol`]: "allow-url",
    },
    nameServer: dns.nameServer,
    resolve: [["ws.test", p, "127.0.0.1"]],
  });
  const ws =
    "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
    "Sec-WebSocket-Version: 13\r\n";
  const undecided = "GET /admin HTTP/1.1\r\nHost: other.test\r\n\r\n";
  try {
    for (const path of Object.keys(answers)) {
      await t.step(path, async () => {
        const before = proxy.records.length;
        const c = await RawClient.connect(proxy.port);
        try {
          await c.send(
            `GET http://ws.test:${p}${path} HTTP/1.1\r\nHost: ws.test:${p}\r\n${ws}\r\n`,
          );
          const r = await c.response({ head: true });
          // What a client would send through a relay it believes open.
          await c.send(undecided).catch(() => {});
          await c.readToEnd(1500);
          assert.equal(r.status, 502, `${path}: ${r.statusLine}`);
        } finally {
          c.close();
        }
        const [rec] = await newRecords(proxy, before, 1);
        assert.equal(rec.status, 502);
        assert.match(rec.error ?? "", /WebSocket/);
        assert.ok(!seen.some((l) => l.startsWith("GET /admin")), `${path}: ${seen.join(" | ")}`);
      });
    }
  } finally {
    await proxy.close();
    await origin.close();
    await dns.close();
  }
});
