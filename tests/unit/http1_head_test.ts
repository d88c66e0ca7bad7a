import assert from "node:assert/strict";
import {
  HeadScanner,
  HttpParseError,
  latin1Decode,
  latin1Encode,
  MAX_TARGET_LENGTH,
  parseRequestHead,
  parseResponseHead,
} from "../../lib/http1/mod.ts";
import { quote } from "../../lib/http1/head.ts";

const enc = (s: string) => latin1Encode(s);

/** Scans and parses a complete request head given as text. */
function req(text: string) {
  const buf = enc(text);
  const s = new HeadScanner(65536);
  const n = s.scan(buf);
  assert.ok(n > 0, "head should be complete");
  return { head: parseRequestHead(buf, s.start, n), length: n };
}

function rejects(text: string, status: number, pattern?: RegExp) {
  assert.throws(
    () => {
      const buf = enc(text);
      const s = new HeadScanner(65536);
      const n = s.scan(buf);
      if (n < 0) throw new Error("incomplete");
      parseRequestHead(buf, s.start, n);
    },
    (e: unknown) => {
      assert.ok(e instanceof HttpParseError, `expected HttpParseError, got ${e}`);
      assert.equal(e.status, status);
      if (pattern) assert.match(e.message, pattern);
      return true;
    },
  );
}

Deno.test("request head: absolute-form request with headers", () => {
  const text = "GET http://a.test/x?y=1 HTTP/1.1\r\nHost: a.test\r\nX-A:  v1 \r\nx-a: v2\r\n\r\n";
  const { head, length } = req(text + "BODY");
  assert.equal(length, text.length);
  assert.equal(head.method, "GET");
  assert.equal(head.target, "http://a.test/x?y=1");
  assert.equal(head.minor, 1);
  assert.equal(head.headers.get("host"), "a.test");
  assert.deepEqual(head.headers.getAll("x-a"), ["v1", "v2"]);
  assert.deepEqual(head.headers.names, ["Host", "X-A", "x-a"]);
  assert.equal(head.headers.count("x-a"), 2);
});

Deno.test("request head: HTTP/1.0, no headers, leading empty lines skipped", () => {
  const { head } = req("\r\n\r\nGET / HTTP/1.0\r\n\r\n");
  assert.equal(head.minor, 0);
  assert.equal(head.target, "/");
  assert.equal(head.headers.length, 0);
});

Deno.test("request head: scanner works across many small reads and reports -1 until complete", () => {
  const text = "POST http://a.test/ HTTP/1.1\r\nHost: a.test\r\nContent-Length: 3\r\n\r\nabc";
  const all = enc(text);
  const s = new HeadScanner(65536);
  let n = -1;
  for (let i = 1; i <= all.length && n < 0; i++) n = s.scan(all.subarray(0, i));
  assert.equal(n, text.indexOf("\r\n\r\n") + 4);
  const head = parseRequestHead(all, s.start, n);
  assert.equal(head.headers.get("content-length"), "3");
});

Deno.test("request head: malformed request lines get 400", () => {
  rejects("GET  http://a.test/ HTTP/1.1\r\n\r\n", 400, /malformed request line/);
  rejects("GET http://a.test/ HTTP/1.1 \r\n\r\n", 400);
  rejects("GET http://a.test/\r\n\r\n", 400);
  rejects("GET http://a.test/ HTTP/2.0\r\n\r\n", 400, /unsupported HTTP version 2.0/);
  rejects("GET http://a.test/ HTTP/0.9\r\n\r\n", 400, /unsupported HTTP version/);
  rejects("PRI * HTTP/2.0\r\n\r\n", 400, /HTTP\/2/);
  rejects("G(T http://a.test/ HTTP/1.1\r\n\r\n", 400);
  rejects("GET http://a.test/\u00e9 HTTP/1.1\r\n\r\n", 400);
  rejects("GET http://a.test/ http/1.1\r\n\r\n", 400);
});

Deno.test("request head: a malformed header line is described without its value (errors are logged)", () => {
  for (const line of ["Authorization Bearer ghp_SECRET0123", "Authorization Bearer ghp_SECRET:x"]) {
    rejects(
      `GET http://a.test/ HTTP/1.1\r\n${line}\r\n\r\n`,
      400,
      /starts with "Authorization", then " "/,
    );
    assert.throws(
      () => {
        const buf = enc(`GET http://a.test/ HTTP/1.1\r\n${line}\r\n\r\n`);
        const sc = new HeadScanner(65536);
        parseRequestHead(buf, sc.start, sc.scan(buf));
      },
      (e: unknown) => !(e as Error).message.includes("SECRET"),
    );
  }
  // A value wrapped onto a line of its own: nothing of it is shown.
  rejects(
    "GET http://a.test/ HTTP/1.1\r\nAuthorization: Bearer\r\nghp_SECRET0123456789\r\n\r\n",
    400,
    /without a name: not shown \(20 bytes\)/,
  );
});

Deno.test("request head: control characters, bare CR and obs-fold get 400", () => {
  rejects("GET http://a.test/ HTTP/1.1\r\nX: a\x00b\r\n\r\n", 400, /control character/);
  rejects("GET http://a.test/ HTTP/1.1\r\nX: a\x7fb\r\n\r\n", 400, /control character/);
  rejects("GET http://a.test/ HTTP/1.1\r\nX: a\rb\r\n\r\n", 400, /control character/);
  rejects("GET http://a.test/ HTTP/1.1\r\nX: a\r\n b\r\n\r\n", 400, /folding/);
  rejects("GET http://a.test/ HTTP/1.1\r\nX : a\r\n\r\n", 400, /invalid header name/);
  rejects("GET http://a.test/ HTTP/1.1\r\nX\u00e9: a\r\n\r\n", 400, /invalid header name/);
  rejects("GET http://a.test/ HTTP/1.1\r\n: a\r\n\r\n", 400, /without a name/);
  rejects("GET http://a.test/ HTTP/1.1\r\nno colon\r\n\r\n", 400, /without a name/);
});

Deno.test("request head: tabs and obs-text in values are kept byte for byte", () => {
  const { head } = req("GET http://a.test/ HTTP/1.1\r\nX: a\tb \xe9\xff\r\n\r\n");
  const v = head.headers.get("x")!;
  assert.equal(v, "a\tb \xe9\xff");
  assert.deepEqual([...latin1Encode(v)], [0x61, 0x09, 0x62, 0x20, 0xe9, 0xff]);
});

Deno.test("head scanner: bare LF is rejected as soon as it is seen", () => {
  const s = new HeadScanner(65536);
  assert.throws(() => s.scan(enc("GET / HTTP/1.1\nHost: x\n")), /bare LF/);
  const s2 = new HeadScanner(65536);
  assert.throws(() => s2.scan(enc("GET / HTTP/1.1\r\nHost: x\n\r\n")), /bare LF/);
  const s3 = new HeadScanner(65536);
  assert.throws(() => s3.scan(enc("\n")), /bare LF/);
});

Deno.test("head scanner: heads over the limit get 431 (502 from a server)", () => {
  const big = "GET / HTTP/1.1\r\nX: " + "a".repeat(70 * 1024);
  const s = new HeadScanner(65536);
  assert.throws(() => s.scan(enc(big)), (e: unknown) => (e as HttpParseError).status === 431);
  const s2 = new HeadScanner(65536, true);
  assert.throws(() => s2.scan(enc(big)), (e: unknown) => (e as HttpParseError).status === 502);
  // Exactly at the limit is fine.
  const line = "GET / HTTP/1.1\r\nX: ";
  const fill = 1000 - line.length - 4;
  const exact = line + "a".repeat(fill) + "\r\n\r\n";
  assert.equal(exact.length, 1000);
  assert.equal(new HeadScanner(1000).scan(enc(exact)), 1000);
  assert.throws(() => new HeadScanner(999).scan(enc(exact)), /larger than 999/);
});

Deno.test("head scanner: too many empty lines before the request line", () => {
  const s = new HeadScanner(65536);
  assert.throws(() => s.scan(enc("\r\n".repeat(10) + "GET / HTTP/1.1\r\n\r\n")), /empty lines/);
});

Deno.test("head scanner: too many empty lines before a status line are the server's fault (502)", () => {
  // The upstream sent them: answering the client 400 would blame the client.
  const s = new HeadScanner(65536, true);
  assert.throws(
    () => s.scan(enc("\r\n".repeat(5) + "HTTP/1.1 200 OK\r\n\r\n")),
    (e: unknown) =>
      e instanceof HttpParseError && e.status === 502 && /empty lines/.test(e.message),
  );
  // Up to four are skipped, as before a request line.
  const ok = new HeadScanner(65536, true);
  const b = enc("\r\n".repeat(4) + "HTTP/1.1 200 OK\r\n\r\n");
  assert.equal(ok.scan(b), b.length);
  assert.equal(ok.start, 8);
});

Deno.test("response head: status line variants and errors", () => {
  const parse = (t: string) => {
    const b = enc(t);
    const s = new HeadScanner(65536, true);
    const n = s.scan(b);
    return parseResponseHead(b, s.start, n);
  };
  const r = parse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n");
  assert.equal(r.status, 200);
  assert.equal(r.reason, "OK");
  assert.equal(r.minor, 1);
  assert.equal(parse("HTTP/1.0 404\r\n\r\n").reason, "");
  assert.equal(parse("HTTP/1.1 500 Internal \xe9rror\r\n\r\n").reason, "Internal \xe9rror");
  for (const bad of ["HTTP/1.1 20 OK\r\n\r\n", "HTTP/2 200 OK\r\n\r\n", "ICY 200 OK\r\n\r\n"]) {
    assert.throws(() => parse(bad), (e: unknown) => (e as HttpParseError).status === 502);
  }
  assert.throws(
    () => parse("HTTP/1.1 200 OK\r\nX: \x01\r\n\r\n"),
    (e: unknown) => (e as HttpParseError).status === 502,
  );
});

Deno.test("latin1: decode/encode round-trips every byte value", () => {
  const all = new Uint8Array(256).map((_, i) => i);
  const s = latin1Decode(all, 0, 256);
  assert.equal(s.length, 256);
  assert.deepEqual([...latin1Encode(s)], [...all]);
  const big = new Uint8Array(20000).map((_, i) => i % 256);
  assert.deepEqual([...latin1Encode(latin1Decode(big, 0, big.length))], [...big]);
});

Deno.test("request head: a target over MAX_TARGET_LENGTH gets 414; one at it is accepted", () => {
  const at = "/" + "a".repeat(MAX_TARGET_LENGTH - 1);
  assert.equal(req(`GET ${at} HTTP/1.1\r\nHost: a\r\n\r\n`).head.target, at);
  rejects(
    `GET ${at}b HTTP/1.1\r\nHost: a\r\n\r\n`,
    414,
    /^request target of 8193 bytes, longer than the 8192 allowed$/,
  );
});

Deno.test("quote: a cut never leaves the start of a credential or secret in an error message", () => {
  const user = "u".repeat(60);
  for (
    const s of [
      `GET http://${user}:hunter2hunter2@h.test/ HTTP/1.1\x80`,
      `http://${user}:hunter2hunter2@h.test/`,
      `GET /x?a=${"a".repeat(50)}&token=hunter2hunter2hunter2 HTTP/1.1`,
    ]
  ) {
    const q = quote(s);
    assert.equal(q.includes("hunter2"), false, q);
  }
  assert.equal(quote("GET http://h.test/ HTTP/1.1"), '"GET http://h.test/ HTTP/1.1"');
});
