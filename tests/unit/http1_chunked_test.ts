import assert from "node:assert/strict";
import { ChunkedDecoder, HttpParseError, writeChunkHeader } from "../../lib/http1/mod.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Decodes `input` fed in pieces of `step` bytes; returns data and bytes consumed. */
function decode(input: string | Uint8Array, step = Infinity, fromServer = false) {
  const bytes = typeof input === "string" ? enc.encode(input) : input;
  const d = new ChunkedDecoder({ fromServer });
  const out: number[] = [];
  let consumed = 0;
  let pos = 0;
  while (!d.done && pos < bytes.length) {
    const end = Math.min(bytes.length, pos + step);
    // Feed everything not yet consumed (as a caller with a buffer would).
    const n = d.decode(bytes, consumed, end, (p) => out.push(...p));
    consumed += n;
    pos = end;
  }
  return { data: dec.decode(new Uint8Array(out)), consumed, done: d.done };
}

Deno.test("chunked: decodes, stops exactly at the end of the body", () => {
  const body = "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
  const r = decode(body + "GET /next HTTP/1.1\r\n");
  assert.equal(r.data, "hello world");
  assert.equal(r.consumed, body.length);
  assert.equal(r.done, true);
});

Deno.test("chunked: byte-by-byte feeding gives the same result", () => {
  const body = "a;name=value\r\n0123456789\r\nA\r\nabcdefghij\r\n0\r\nX-Trailer: 1\r\n\r\n";
  const r = decode(body, 1);
  assert.equal(r.data, "0123456789abcdefghij");
  assert.equal(r.consumed, body.length);
  assert.equal(r.done, true);
});

Deno.test("chunked: extensions and trailers are accepted (and dropped)", () => {
  const r = decode('3 ; a=1;b="q s"\r\nabc\r\n0;last\r\nA: 1\r\nB-2: x y\r\n\r\n');
  assert.equal(r.data, "abc");
  assert.equal(r.done, true);
});

Deno.test("chunked: incomplete input asks for more", () => {
  const r = decode("5\r\nhel");
  assert.equal(r.data, "hel");
  assert.equal(r.done, false);
});

Deno.test("chunked: bad sizes, missing CRLFs, bare LF, overflow are 400", () => {
  const bad: [string, RegExp][] = [
    ["x\r\n", /invalid chunk size/],
    ["\r\n", /invalid chunk size/],
    ["-1\r\n", /invalid chunk size/],
    ["+5\r\nhello\r\n", /invalid chunk size/],
    ["0x5\r\nhello\r\n", /invalid chunk size/],
    ["5 \r\nhello\r\n0\r\n\r\n", /whitespace after chunk size/],
    ["5\nhello\r\n", /invalid chunk size \(byte 0xa\)/],
    ["5\r\rhello\r\n", /not ended by CRLF/],
    ["5\r\nhelloX\r\n", /not followed by CRLF/],
    ["5\r\nhello\n0\r\n\r\n", /not followed by CRLF/],
    ["1ffffffffffffffff\r\n", /too large/],
    ["fffffffffffffffff\r\n", /too large/],
    ["00000000000000001\r\n", /too large/],
    ["5;a\x01b\r\n", /invalid chunk extension/],
    ["0\r\nBad Name: x\r\n\r\n", /invalid trailer field name/],
    ["0\r\n x: folded\r\n\r\n", /invalid trailer field/],
    ["0\r\nA: b\x00\r\n\r\n", /control character/],
    ["0\r\nA: b\n\r\n", /control character/],
    ["0\r\n\rX", /not ended by CRLF/],
  ];
  for (const [input, msg] of bad) {
    assert.throws(() => decode(input), (e: unknown) => {
      assert.ok(e instanceof HttpParseError, input);
      assert.equal(e.status, 400, input);
      assert.match(e.message, msg, JSON.stringify(input));
      return true;
    });
  }
});

Deno.test("chunked: errors from a server carry 502", () => {
  assert.throws(() => decode("zz\r\n", Infinity, true), (e: unknown) => {
    assert.equal((e as HttpParseError).status, 502);
    assert.match((e as Error).message, /upstream sent a bad chunked body/);
    return true;
  });
});

Deno.test("chunked: the largest safe chunk size parses, a trailer flood is refused", () => {
  const d = new ChunkedDecoder();
  const size = enc.encode("1fffffffffffff\r\n");
  assert.equal(d.decode(size, 0, size.length, () => {}), size.length);
  assert.equal(d.done, false);
  const flood = "0\r\n" + "X: y\r\n".repeat(20000) + "\r\n";
  assert.throws(() => decode(flood), /trailer section too large/);
});

Deno.test("writeChunkHeader: hex size and CRLF", () => {
  const out = new Uint8Array(20);
  const n = writeChunkHeader(out, 0, 0x1a2b);
  assert.equal(dec.decode(out.subarray(0, n)), "1a2b\r\n");
});
