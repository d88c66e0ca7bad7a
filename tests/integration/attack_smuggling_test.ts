/**
 * Adversarial tests: request smuggling and response splitting. Every
 * ambiguous framing is refused with 400 and a close before anything reaches
 * the origin; a request pipelined after a body is decided on its own; an
 * origin cannot inject headers or responses through the proxy.
 */

import assert from "node:assert/strict";
import {
  attempt,
  latin1,
  newRecords,
  seenPaths,
  startAttackEnv,
  startRecordingOrigin,
} from "../_helpers/attack.ts";
import { startDnsServer, startHeadOnlyOrigin } from "../_helpers/origin.ts";
import { RawClient, startTestProxy } from "../_helpers/proxy.ts";

/** `{A}` allowed.test:P, `{D}` denied.test:P; the smuggled request always asks for /smuggled. */
const SMUGGLED = "GET http://{D}/smuggled HTTP/1.1\r\nHost: {D}\r\n\r\n";

interface Case {
  name: string;
  req: string;
  /** The origin may see the outer request's head (body framing errors are found mid-body). */
  outerMayReach?: boolean;
}

const badFraming: Case[] = [
  {
    name: "Transfer_Encoding beside Content-Length (read as TE by Puma)",
    req:
      "POST http://{A}/echo HTTP/1.1\r\nHost: {A}\r\nContent-Length: 4\r\nTransfer_Encoding: chunked\r\n\r\n" +
      "0\r\n\r\n" + SMUGGLED,
  },
  {
    name: "Content_Length on a GET",
    req: "GET http://{A}/hello HTTP/1.1\r\nHost: {A}\r\nContent_Length: 60\r\n\r\n" + SMUGGLED,
  },
  {
    name: "Content-Length and Transfer-Encoding (CL.TE)",
    req:
      "POST http://{A}/echo HTTP/1.1\r\nHost: {A}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n" +
      "0\r\n\r\n" + SMUGGLED,
  },
  {
    name: "Transfer-Encoding before Content-Length (TE.CL)",
    req:
      "POST http://{A}/echo HTTP/1.1\r\nHost: {A}\r\nTransfer-Encoding: chunked\r\nContent-Length: 60\r\n\r\n" +
      "0\r\n\r\n" + SMUGGLED,
  },
  {
    name: "Transfer-Encoding: chunked, identity",
    req:
      "POST http://{A}/echo HTTP/1.1\r\nHost: {A}\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n" +
      SMUGGLED,
  },
  {
    name: "Transfer-Encoding: identity, chunked",
    req:
      "POST http://{A}/echo HTTP/1.1\r\nHost: {A}\r\nTransfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n" +
      SMUGGLED,
  },
  {
    name: "Transfer-Encoding: xchunked",
    req:
      "POST http://{A}/echo HTTP/1.1\r\nHost: {A}\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n" +
      SMUGGLED,
  },
  {
    name: "Transfer-Encoding: chunked;q=1",
    req:
      "POST http://{A}/echo HTTP/1.1\r\nHost: {A}\r\nTransfer-Encoding: chunked;q=1\r\n\r\n0\r\n\r\n" +
      SMUGGLED,
  },
  {
    name: "two Transfer-Encoding: chunked headers",
    req:
      "POST http://{A}/echo HTTP/1.1\r\nHost: {A}\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" +
      SMUGGLED,
  },
  {
    name: "Transfer-Encoding with a space before the colon",
    req:
      "POST http://{A}/echo HTTP/1.1\r\nHost: {A}\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n" +
      SMUGGLED,
  },
  {
    name: "Transfer-Encoding line with a leading space (obs-fold of Host)",
    req:
      "POST http://{A}/echo HTTP/1.1\r\nHost: {A}\r\n Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" +
      SMUGGLED,
  },
  {
    name: "Transfer-Encoding value folded onto the next line",
    req:
      "POST http://{A}/echo HTTP/1.1\r\nHost: {A}\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n" +
      SMUGGLED,
  },
  {
    name: "Transfer-Encoding with a vertical tab",
    req:
      "POST http://{A}/echo HTTP/1.1\r\nHost: {A}\r\nTransfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n" +
      SMUGGLED,
  },
  {
    name: "Transfer-Encoding in HTTP/1.0",
    req:
      "POST http://{A}/echo HTTP/1.0\r\nHost: {A}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" +
      SMUGGLED,
  },
  {
    name: "two equal Content-Length headers",
    req:
      "POST http://{A}/echo HTTP/1.1\r\nHost: {A}\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello" +
      SMUGGLED,
  },
  {
    name: "two different Content-Length headers",
    req:
      "POST http://{A}/echo HTTP/1.1\r\nHost: {A}\r\nContent-Length: 5\r\nContent-Length: 0\r\n\r\nhello" +
      SMUGGLED,
  },
  {
    name: "Content-Length as a list (5, 5)",
    req: "POST http://{A}/echo HTTP/1.1\r\nHost: {A}\r\nContent-Length: 5, 5\r\n\r\nhello" +
      SMUGGLED,
  },
  {
    name: "Content-Length: +5",
    req: "POST http://{A}/echo HTTP/1.1\r\nHost: {A}\r\nContent-Length: +5\r\n\r\nhello" + SMUGGLED,
  },
  {
    name: "Content-Length: -1",
    req: "POST http://{A}/echo HTTP/1.1\r\nHost: {A}\r\nContent-Length: -1\r\n\r\n" + SMUGGLED,
  },
  {
    name: "Content-Length: 0x5",
    req: "POST http://{A}/echo HTTP/1.1\r\nHost: {A}\r\nContent-Length: 0x5\r\n\r\nhello" +
      SMUGGLED,
  },
  {
    name: "Content-Length: 5.0",
    req: "POST http://{A}/echo HTTP/1.1\r\nHost: {A}\r\nContent-Length: 5.0\r\n\r\nhello" +
      SMUGGLED,
  },
  {
    name: "Content-Length: 1e1",
    req: "POST http://{A}/echo HTTP/1.1\r\nHost: {A}\r\nContent-Length: 1e1\r\n\r\nhello" +
      SMUGGLED,
  },
  {
    name: "empty Content-Length",
    req: "POST http://{A}/echo HTTP/1.1\r\nHost: {A}\r\nContent-Length: \r\n\r\n" + SMUGGLED,
  },
  {
    name: "Content-Length over 2^53",
    req:
      "POST http://{A}/echo HTTP/1.1\r\nHost: {A}\r\nContent-Length: 99999999999999999999\r\n\r\n" +
      SMUGGLED,
  },
  {
    name: "oversize chunk size (17 hex digits)",
    req:
      "POST http://{A}/echo HTTP/1.1\r\nHost: {A}\r\nTransfer-Encoding: chunked\r\n\r\n1000000000000000a\r\n" +
      SMUGGLED,
    outerMayReach: true,
  },
  {
    name: "chunk size with leading zeros past 16 digits",
    req:
      "POST http://{A}/echo HTTP/1.1\r\nHost: {A}\r\nTransfer-Encoding: chunked\r\n\r\n00000000000000000005\r\nhello\r\n0\r\n\r\n" +
      SMUGGLED,
    outerMayReach: true,
  },
  {
    name: "negative chunk size",
    req:
      "POST http://{A}/echo HTTP/1.1\r\nHost: {A}\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n" +
      SMUGGLED,
    outerMayReach: true,
  },
  {
    name: "chunk size 0x prefix",
    req:
      "POST http://{A}/echo HTTP/1.1\r\nHost: {A}\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n" +
      SMUGGLED,
    outerMayReach: true,
  },
  {
    name: "chunk data longer than its size",
    req:
      "POST http://{A}/echo HTTP/1.1\r\nHost: {A}\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n" +
      SMUGGLED,
    outerMayReach: true,
  },
  {
    name: "chunk size line ended by a bare LF",
    req:
      "POST http://{A}/echo HTTP/1.1\r\nHost: {A}\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n" +
      SMUGGLED,
    outerMayReach: true,
  },
  {
    name: "whitespace after the chunk size",
    req:
      "POST http://{A}/echo HTTP/1.1\r\nHost: {A}\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n" +
      SMUGGLED,
    outerMayReach: true,
  },
  {
    name: "chunk extension with a bare LF inside",
    req:
      "POST http://{A}/echo HTTP/1.1\r\nHost: {A}\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\nc\r\nhello\r\n0\r\n\r\n" +
      SMUGGLED,
    outerMayReach: true,
  },
  {
    name: "last chunk without the final CRLF, then a request",
    req: "POST http://{A}/echo HTTP/1.1\r\nHost: {A}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n" +
      SMUGGLED,
    outerMayReach: true,
  },
  {
    name: "trailer section with an obs-fold line",
    req:
      "POST http://{A}/echo HTTP/1.1\r\nHost: {A}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: a\r\n b\r\n\r\n" +
      SMUGGLED,
    outerMayReach: true,
  },
  { name: "bare LF line endings", req: "GET http://{A}/hello HTTP/1.1\nHost: {A}\n\n" },
  {
    name: "bare LF after the request line only",
    req: "GET http://{A}/hello HTTP/1.1\nHost: {A}\r\n\r\n",
  },
  {
    name: "bare CR inside a header value",
    req: "GET http://{A}/hello HTTP/1.1\r\nHost: {A}\r\nX-A: a\rTransfer-Encoding: chunked\r\n\r\n",
  },
  {
    name: "NUL in the request line",
    req: "GET http://{A}/hello\x00 HTTP/1.1\r\nHost: {A}\r\n\r\n",
  },
  { name: "NUL in the method", req: "G\x00T http://{A}/hello HTTP/1.1\r\nHost: {A}\r\n\r\n" },
  {
    name: "NUL in a header value",
    req: "GET http://{A}/hello HTTP/1.1\r\nHost: {A}\r\nX-A: a\x00b\r\n\r\n",
  },
  {
    name: "NUL in the Host value",
    req: "GET http://{A}/hello HTTP/1.1\r\nHost: {A}\x00.denied.test\r\n\r\n",
  },
  {
    name: "ESC in a header value",
    req: "GET http://{A}/hello HTTP/1.1\r\nHost: {A}\r\nX-A: \x1b[31mred\r\n\r\n",
  },
  {
    name: "DEL in a header value",
    req: "GET http://{A}/hello HTTP/1.1\r\nHost: {A}\r\nX-A: a\x7fb\r\n\r\n",
  },
  {
    name: "form feed in a header name",
    req: "GET http://{A}/hello HTTP/1.1\r\nHost: {A}\r\nX\x0cA: b\r\n\r\n",
  },
  {
    name: "space in a header name",
    req: "GET http://{A}/hello HTTP/1.1\r\nHost: {A}\r\nX A: b\r\n\r\n",
  },
  {
    name: "header line without a colon",
    req: "GET http://{A}/hello HTTP/1.1\r\nHost: {A}\r\nJustAName\r\n\r\n",
  },
  {
    name: "empty header name",
    req: "GET http://{A}/hello HTTP/1.1\r\nHost: {A}\r\n: value\r\n\r\n",
  },
  {
    name: "tab between method and target",
    req: "GET\thttp://{A}/hello HTTP/1.1\r\nHost: {A}\r\n\r\n",
  },
  {
    name: "two spaces after the method",
    req: "GET  http://{A}/hello HTTP/1.1\r\nHost: {A}\r\n\r\n",
  },
  { name: "space inside the target", req: "GET http://{A}/he llo HTTP/1.1\r\nHost: {A}\r\n\r\n" },
  {
    name: "trailing space after the version",
    req: "GET http://{A}/hello HTTP/1.1 \r\nHost: {A}\r\n\r\n",
  },
  { name: "lower-case version", req: "GET http://{A}/hello http/1.1\r\nHost: {A}\r\n\r\n" },
  { name: "HTTP/1.2", req: "GET http://{A}/hello HTTP/1.2\r\nHost: {A}\r\n\r\n" },
  { name: "HTTP/2.0 request line", req: "GET http://{A}/hello HTTP/2.0\r\nHost: {A}\r\n\r\n" },
  { name: "HTTP/0.9 request line", req: "GET http://{A}/hello\r\n\r\n" },
  { name: "HTTP/2 preface", req: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" },
  {
    name: "8-bit byte in the target",
    req: "GET http://{A}/h\xe9llo HTTP/1.1\r\nHost: {A}\r\n\r\n",
  },
  {
    name: "too many empty lines before the request",
    req: "\r\n\r\n\r\n\r\n\r\n\r\nGET http://{A}/hello HTTP/1.1\r\nHost: {A}\r\n\r\n",
  },
];

Deno.test("attack smuggling: ambiguous framing and bad bytes get 400, a close, and never reach the origin", async (t) => {
  const env = await startAttackEnv();
  const fill = (s: string) => s.replaceAll("{A}", env.allowed).replaceAll("{D}", env.denied);
  try {
    for (const c of badFraming) {
      await t.step(c.name, async () => {
        const before = env.proxy.records.length;
        const seen = env.origin.requests.length;
        const a = await attempt(env.proxy.port, fill(c.req), { closeMs: 2500 });
        const r = a.responses[0];
        assert.ok(
          r.status === 400 || r.status === 505 || r.status === 501,
          `${c.name}: ${r.statusLine} ${r.text}`,
        );
        assert.ok(a.closed, `${c.name}: the connection must be closed`);
        assert.ok(
          !/HTTP\/1\.[01] \d\d\d/.test(a.rest),
          `${c.name}: a second response followed: ${a.rest}`,
        );
        const [rec] = await newRecords(env.proxy, before, 1);
        assert.equal(rec.status, r.status);
        assert.equal(rec.decision, "error", JSON.stringify(rec));
        if (!c.outerMayReach) {
          assert.equal(env.origin.requests.length, seen, `${c.name}: reached the origin`);
        } else {
          // The head went out before the body turned bad: the origin must not
          // have answered it as a complete request.
          for (const q of env.origin.requests.slice(seen)) assert.equal(q.path, "/echo");
        }
        assert.ok(!seenPaths(env.origin).includes("/smuggled"));
      });
    }
  } finally {
    await env.close();
  }
});

Deno.test("attack smuggling: a request pipelined after a body is decided on its own", async (t) => {
  const env = await startAttackEnv();
  const A = env.allowed;
  const D = env.denied;
  const smuggled = `GET http://${D}/smuggled HTTP/1.1\r\nHost: ${D}\r\n\r\n`;
  const bodies: [string, string][] = [
    [
      "Content-Length body",
      `POST http://${A}/echo HTTP/1.1\r\nHost: ${A}\r\nContent-Length: 5\r\n\r\nhello`,
    ],
    [
      "chunked body with an extension",
      `POST http://${A}/echo HTTP/1.1\r\nHost: ${A}\r\nTransfer-Encoding: chunked\r\n\r\n5;ext="x"\r\nhello\r\n0\r\n\r\n`,
    ],
    [
      "chunked body with a trailer",
      `POST http://${A}/echo HTTP/1.1\r\nHost: ${A}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n`,
    ],
    [
      "GET with a Content-Length body",
      `GET http://${A}/echo HTTP/1.1\r\nHost: ${A}\r\nContent-Length: 5\r\n\r\nhello`,
    ],
  ];
  try {
    for (const [name, first] of bodies) {
      await t.step(name, async () => {
        const before = env.proxy.records.length;
        const a = await attempt(env.proxy.port, first + smuggled, { responses: 2 });
        assert.equal(a.responses[0].status, 200);
        // (Deno's origin does not expose GET bodies.)
        if (first.startsWith("POST")) assert.equal(JSON.parse(a.responses[0].text).bodyLength, 5);
        assert.equal(a.responses[1].status, 403);
        const recs = await newRecords(env.proxy, before, 2);
        assert.deepEqual(recs.map((r) => [r.decision, r.status]), [["allow", 200], ["deny", 403]]);
        assert.match(recs[1].url, /denied\.test:\d+\/smuggled$/);
      });
    }
    // A body that *looks* like a request to the denied host is just a body.
    await t.step("a body spelling out a request is forwarded as a body", async () => {
      const before = env.proxy.records.length;
      const a = await attempt(
        env.proxy.port,
        `POST http://${A}/echo HTTP/1.1\r\nHost: ${A}\r\nContent-Length: ${smuggled.length}\r\nConnection: close\r\n\r\n${smuggled}`,
      );
      assert.equal(JSON.parse(a.responses[0].text).bodyLength, smuggled.length);
      await newRecords(env.proxy, before, 1);
    });
    // A denied request with a body: the body is never read as a request.
    await t.step("the body of a denied request is not parsed as the next request", async () => {
      const before = env.proxy.records.length;
      const inner = `GET http://${A}/hello HTTP/1.1\r\nHost: ${A}\r\n\r\n`;
      const a = await attempt(
        env.proxy.port,
        `POST http://${D}/x HTTP/1.1\r\nHost: ${D}\r\nContent-Length: ${inner.length}\r\n\r\n${inner}`,
        { closeMs: 3000 },
      );
      assert.equal(a.responses[0].status, 403);
      assert.ok(a.closed, "denied with an unread body: closed");
      assert.ok(!a.rest.includes("HTTP/1.1"), `no second response: ${a.rest}`);
      await newRecords(env.proxy, before, 1);
    });
    assert.ok(!seenPaths(env.origin).includes("/smuggled"));
    assert.ok(!seenPaths(env.origin).includes("/x"));
    assert.ok(!seenPaths(env.origin).includes("/hello"));
  } finally {
    await env.close();
  }
});

Deno.test("attack smuggling: an origin cannot split or smuggle responses through the proxy", async (t) => {
  const dns = await startDnsServer({});
  const responses: Record<string, string> = {
    "/bare-lf": "HTTP/1.1 200 OK\r\nX-A: a\nInjected: 1\r\nContent-Length: 2\r\n\r\nok",
    "/bare-cr": "HTTP/1.1 200 OK\r\nX-A: a\rSet-Cookie: evil=1\r\nContent-Length: 2\r\n\r\nok",
    "/nul": "HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\nok",
    "/two-cl": "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 40\r\n\r\nok",
    "/bad-cl": "HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok",
    "/te-gzip": "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nok",
    "/obs-fold": "HTTP/1.1 200 OK\r\nX-A: a\r\n Set-Cookie: evil=1\r\nContent-Length: 2\r\n\r\nok",
    "/bad-status": "HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok",
  };
  const origin = startRecordingOrigin((first) => {
    const line = new TextDecoder().decode(first).split("\r\n")[0];
    const path = line.split(" ")[1];
    const r = responses[path];
    return r ? latin1(r) : latin1("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
  });
  const p = origin.port;
  const proxy = await startTestProxy({
    rules: { "raw.test": "allow" },
    nameServer: dns.nameServer,
    resolve: [["raw.test", p, "127.0.0.1"]],
    responseTimeoutMs: 3000,
  });
  try {
    for (const path of Object.keys(responses)) {
      await t.step(path, async () => {
        const before = proxy.records.length;
        const a = await attempt(
          proxy.port,
          `GET http://raw.test:${p}${path} HTTP/1.1\r\nHost: raw.test:${p}\r\n\r\n`,
          {
            closeMs: 1000,
          },
        );
        const r = a.responses[0];
        assert.equal(
          r.status,
          502,
          `${path}: ${r.statusLine}\n${[...r.headers].join("\n")}\n${r.text}`,
        );
        assert.ok(!r.headers.has("injected") && !r.headers.has("set-cookie"), path);
        const [rec] = await newRecords(proxy, before, 1);
        assert.equal(rec.status, 502);
        assert.equal(rec.decision, "allow");
        assert.ok(rec.error, "the record says what failed");
      });
    }
  } finally {
    await proxy.close();
    await origin.close();
    await dns.close();
  }
});

Deno.test("attack smuggling: a bad chunked body from the origin is cut, never completed", async () => {
  const dns = await startDnsServer({});
  const origin = startRecordingOrigin(() =>
    latin1(
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\nzz\r\n" +
        "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled",
    )
  );
  const p = origin.port;
  const proxy = await startTestProxy({
    rules: { "raw.test": "allow" },
    nameServer: dns.nameServer,
    resolve: [["raw.test", p, "127.0.0.1"]],
  });
  try {
    const c = await RawClient.connect(proxy.port);
    await c.send(`GET http://raw.test:${p}/ HTTP/1.1\r\nHost: raw.test:${p}\r\n\r\n`);
    const text = await c.readToEnd(3000);
    c.close();
    assert.match(text, /^HTTP\/1\.1 200 /);
    assert.ok(
      !text.endsWith("0\r\n\r\n"),
      `the client must see a truncated body, not a complete one: ${text}`,
    );
    assert.ok(!text.includes("smuggled"));
    const [rec] = await newRecords(proxy, 0, 1);
    assert.match(rec.error ?? "", /chunk/);
  } finally {
    await proxy.close();
    await origin.close();
    await dns.close();
  }
});

Deno.test("attack smuggling: Content-Length plus Transfer-Encoding from the origin is re-framed once", async () => {
  const dns = await startDnsServer({});
  const origin = startRecordingOrigin(() =>
    latin1(
      "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n" +
        "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled",
    )
  );
  const p = origin.port;
  const proxy = await startTestProxy({
    rules: { "raw.test": "allow" },
    nameServer: dns.nameServer,
    resolve: [["raw.test", p, "127.0.0.1"]],
  });
  try {
    const a = await attempt(
      proxy.port,
      `GET http://raw.test:${p}/ HTTP/1.1\r\nHost: raw.test:${p}\r\n\r\nGET http://raw.test:${p}/2 HTTP/1.1\r\nHost: raw.test:${p}\r\n\r\n`,
      { responses: 1, closeMs: 1500 },
    );
    const r = a.responses[0];
    assert.equal(r.text, "ok");
    assert.ok(!(r.headers.has("content-length") && r.headers.has("transfer-encoding")));
    assert.ok(
      !a.rest.includes("smuggled"),
      `the origin's extra response leaked to the client: ${a.rest}`,
    );
  } finally {
    await proxy.close();
    await origin.close();
    await dns.close();
  }
});

/**
 * An origin that never reads request bodies (a "CL.0" server: Python's
 * http.server for a GET, a static handler answering 405, a 417 to
 * `Expect: 100-continue`): it reads the next request from where the head
 * ended, honouring only `Connection: close`. Records each request line.
 */
function startBodyIgnoringOrigin() {
  const lines: string[] = [];
  const origin = startHeadOnlyOrigin((head) => {
    lines.push(head.split("\r\n")[0]);
    return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
  });
  return { ...origin, lines };
}

Deno.test("attack smuggling: an origin that ignores request bodies never reads one as a request", async (t) => {
  const dns = await startDnsServer({});
  const origin = startBodyIgnoringOrigin();
  const p = origin.port;
  const A = `raw.test:${p}`;
  const proxy = await startTestProxy({
    // Only /public is allowed: everything else on the host is denied.
    rules: { [`http://${A}/public`]: "allow-url" },
    nameServer: dns.nameServer,
    resolve: [["raw.test", p, "127.0.0.1"]],
    responseTimeoutMs: 3000,
  });
  const smuggled = `DELETE /admin HTTP/1.1\r\nHost: other.test\r\n\r\n`;
  const chunk = smuggled.length.toString(16);
  const cases: [string, string][] = [
    [
      "GET with a Content-Length body",
      `GET http://${A}/public HTTP/1.1\r\nHost: ${A}\r\nContent-Length: ${smuggled.length}\r\n\r\n${smuggled}`,
    ],
    [
      "POST with a Content-Length body",
      `POST http://${A}/public HTTP/1.1\r\nHost: ${A}\r\nContent-Length: ${smuggled.length}\r\n\r\n${smuggled}`,
    ],
    [
      "chunked body",
      `POST http://${A}/public HTTP/1.1\r\nHost: ${A}\r\nTransfer-Encoding: chunked\r\n\r\n${chunk}\r\n${smuggled}\r\n0\r\n\r\n`,
    ],
    [
      "WebSocket upgrade with a body",
      `GET http://${A}/public HTTP/1.1\r\nHost: ${A}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nContent-Length: ${smuggled.length}\r\n\r\n${smuggled}`,
    ],
  ];
  try {
    for (const [name, req] of cases) {
      await t.step(name, async () => {
        const before = proxy.records.length;
        const seen = origin.lines.length;
        const a = await attempt(proxy.port, req, { closeMs: 1500 });
        assert.equal(a.responses[0].status, 200, name);
        const [rec] = await newRecords(proxy, before, 1);
        assert.equal(rec.decision, "allow");
        // Give a smuggled request time to arrive.
        await new Promise((r) => setTimeout(r, 300));
        assert.deepEqual(
          origin.lines.slice(seen).map((l) => l.split(" ").slice(0, 2).join(" ")),
          [`${req.split(" ")[0]} /public`],
          `${name}: the origin read a request nobody decided`,
        );
      });
    }
  } finally {
    await proxy.close();
    await origin.close();
    await dns.close();
  }
});
