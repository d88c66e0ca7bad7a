import assert from "node:assert/strict";
import {
  encodeMessage,
  LineSplitter,
  LineTooLongError,
  parseClientMessage,
  parseServerMessage,
  ProtocolError,
} from "../../lib/decide/protocol.ts";

const enc = new TextEncoder();

Deno.test("LineSplitter: lines across chunk boundaries, CRLF, multi-byte characters", () => {
  const s = new LineSplitter(64);
  const bytes = enc.encode("ab\r\ncd\nhé");
  const lines: string[] = [];
  // Feed one byte at a time: the é is split across two chunks.
  for (const b of bytes) lines.push(...s.push(Uint8Array.of(b)));
  assert.deepEqual(lines, ["ab", "cd"]);
  assert.equal(s.buffered, 3);
  assert.deepEqual(s.push(enc.encode("!\n")), ["hé!"]);
  assert.equal(s.buffered, 0);
});

Deno.test("LineSplitter: refuses a line over the limit, with or without its newline", () => {
  assert.throws(() => new LineSplitter(8).push(enc.encode("123456789")), LineTooLongError);
  assert.throws(() => new LineSplitter(8).push(enc.encode("123456789\n")), LineTooLongError);
  assert.deepEqual(new LineSplitter(8).push(enc.encode("12345678\n")), ["12345678"]);
});

Deno.test("client messages: valid answers parse, everything else names the problem", () => {
  assert.deepEqual(parseClientMessage('{"type":"answer","id":"7","answer":"deny-url"}'), {
    type: "answer",
    id: "7",
    answer: "deny-url",
  });
  const bad: [string, RegExp][] = [
    ["", /invalid JSON/],
    ["null", /expected a JSON object/],
    ['"answer"', /expected a JSON object/],
    ['{"type":"answer","id":7,"answer":"allow-once"}', /"id" must be a non-empty string/],
    ['{"type":"answer","id":"","answer":"allow-once"}', /"id" must be/],
    [`{"type":"answer","id":"${"9".repeat(65)}","answer":"allow-once"}`, /"id" must be/],
    ['{"type":"answer","id":"1","answer":"allow"}', /unknown answer "allow"/],
    ['{"type":"answer","id":"1"}', /unknown answer undefined/],
    ['{"type":"pending"}', /unknown message type "pending"/],
  ];
  for (const [line, pattern] of bad) {
    assert.throws(() => parseClientMessage(line), (e: Error) => {
      assert.ok(e instanceof ProtocolError, line);
      assert.match(e.message, pattern, line);
      return true;
    });
  }
});

Deno.test("server messages round-trip through encodeMessage", () => {
  const messages = [
    { type: "hello", version: 1, name: "prompt#1", pid: 42 },
    { type: "hello", version: 1, name: "prompt#2", pid: 42, listen: "[::1]:8080", prompts: false },
    {
      type: "hello",
      version: 1,
      name: "prompt#3",
      pid: 42,
      prompts: true,
      prompting: { terminal: true, clients: 2, default: "deny", timeoutMs: 60000 },
    },
    {
      type: "hello",
      version: 1,
      name: "prompt#4",
      pid: 42,
      prompts: false,
      prompting: { terminal: false, clients: 0, default: "allow" },
    },
    {
      type: "pending",
      request: {
        id: "3",
        host: "api.github.com",
        port: 443,
        scheme: "https",
        method: "GET",
        path: "/x?y=1",
        url: "https://api.github.com/x?y=1",
        client: "1.2.3.4:5",
        reason: "no rule",
        waiting: 2,
      },
    },
    {
      type: "pending",
      request: {
        id: "4",
        host: "t.test",
        port: 443,
        scheme: "https",
        method: "CONNECT",
        client: "1.2.3.4:6",
        reason: "no rule",
        waiting: 1,
      },
    },
    { type: "resolved", id: "3", outcome: "answered", by: "terminal", answer: "allow-once" },
    { type: "resolved", id: "4", outcome: "timeout" },
    { type: "rule", pattern: "api.github.com", action: "allow-domain", saved: true },
    { type: "rule", pattern: "x.test", action: "deny-domain", saved: false, error: "locked" },
    {
      type: "rule",
      pattern: "h.test",
      action: "allow-domain",
      saved: false,
      error: "kept",
      kept: { pattern: "h.test", action: "deny-domain" },
    },
    { type: "error", message: "nope", id: "3" },
  ] as const;
  for (const m of messages) {
    const line = encodeMessage(m);
    assert.ok(line.endsWith("\n") && !line.slice(0, -1).includes("\n"));
    assert.deepEqual(parseServerMessage(line.trimEnd()), m);
  }
  assert.throws(() => parseServerMessage('{"type":"pending","request":{"id":1}}'), ProtocolError);
  assert.throws(
    () => parseServerMessage('{"type":"rule","pattern":"x","action":"a"}'),
    ProtocolError,
  );
  assert.throws(
    () => parseServerMessage('{"type":"resolved","id":"1","outcome":"x"}'),
    ProtocolError,
  );
  assert.throws(() => parseServerMessage('{"type":"bye"}'), /unknown message type "bye"/);
  for (const extra of ['"listen":8080', '"prompts":"no"']) {
    assert.throws(
      () => parseServerMessage(`{"type":"hello","version":1,"name":"p","pid":1,${extra}}`),
      /malformed hello/,
    );
  }
});

Deno.test("hello: a prompting state this client cannot read is left out, not an error", () => {
  const hello = '{"type":"hello","version":1,"name":"p","pid":1,"prompts":true';
  for (
    const prompting of [
      '"yes"',
      "null",
      '{"terminal":1,"clients":0,"default":"deny"}',
      '{"terminal":true,"clients":-1,"default":"deny"}',
      '{"terminal":true,"clients":1.5,"default":"deny"}',
      '{"terminal":true,"clients":0,"default":"ask"}',
      '{"terminal":true,"clients":0,"default":"deny","timeoutMs":0}',
    ]
  ) {
    assert.deepEqual(
      parseServerMessage(`${hello},"prompting":${prompting}}`),
      { type: "hello", version: 1, name: "p", pid: 1, prompts: true },
      prompting,
    );
  }
});
