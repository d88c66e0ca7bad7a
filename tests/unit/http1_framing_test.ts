import assert from "node:assert/strict";
import {
  clientKeepAlive,
  fieldLines,
  HeadScanner,
  hopByHop,
  HttpParseError,
  latin1Encode,
  parseRequestHead,
  parseResponseHead,
  requestFraming,
  responseFraming,
  serverKeepAlive,
  upgradeRequested,
} from "../../lib/http1/mod.ts";

function request(head: string) {
  const b = latin1Encode(head + "\r\n\r\n");
  const s = new HeadScanner();
  return parseRequestHead(b, s.start, s.scan(b));
}

function response(head: string) {
  const b = latin1Encode(head + "\r\n\r\n");
  const s = new HeadScanner(65536, true);
  return parseResponseHead(b, s.start, s.scan(b));
}

const R = "POST http://a.test/ HTTP/1.1\r\nHost: a.test";

Deno.test("request framing: other names with underscores are not framing", () => {
  for (const name of ["X_Content_Length", "Content_Length_X", "Transfer_Encodings", "X_Y"]) {
    assert.deepEqual(requestFraming(request(`${R}\r\n${name}: 5`)), { kind: "none" }, name);
  }
});

Deno.test("request framing: none, Content-Length, chunked", () => {
  assert.deepEqual(requestFraming(request("GET http://a.test/ HTTP/1.1\r\nHost: a.test")), {
    kind: "none",
  });
  assert.deepEqual(requestFraming(request(R + "\r\nContent-Length: 42")), {
    kind: "length",
    length: 42,
  });
  assert.deepEqual(requestFraming(request(R + "\r\nContent-Length: 0")), {
    kind: "length",
    length: 0,
  });
  assert.deepEqual(requestFraming(request(R + "\r\nTransfer-Encoding: chunked")), {
    kind: "chunked",
  });
  assert.deepEqual(requestFraming(request(R + "\r\nTransfer-Encoding: CHUNKED")), {
    kind: "chunked",
  });
});

Deno.test("request framing: smuggling-prone framing is refused with 400", () => {
  const bad: [string, RegExp][] = [
    ["\r\nContent-Length: 5\r\nTransfer-Encoding: chunked", /both/],
    ["\r\nTransfer-Encoding: chunked\r\nContent-Length: 5", /both/],
    ["\r\nContent-Length: 5\r\nContent-Length: 5", /more than one/],
    ["\r\nContent-Length: 5\r\nContent-Length: 6", /more than one/],
    ["\r\nContent-Length: 5, 5", /invalid Content-Length/],
    ["\r\nContent-Length: +5", /invalid Content-Length/],
    ["\r\nContent-Length: 0x10", /invalid Content-Length/],
    ["\r\nContent-Length: -1", /invalid Content-Length/],
    ["\r\nContent-Length: 1234567890123456", /invalid Content-Length/],
    ["\r\nContent-Length:", /invalid Content-Length/],
    ["\r\nTransfer-Encoding: gzip, chunked", /unsupported Transfer-Encoding/],
    ["\r\nTransfer-Encoding: chunked, chunked", /unsupported Transfer-Encoding/],
    ["\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked", /unsupported/],
    ["\r\nTransfer-Encoding: xchunked", /unsupported Transfer-Encoding/],
    ["\r\nTransfer-Encoding: identity", /unsupported Transfer-Encoding/],
    ["\r\nTransfer-Encoding: chunked;q=1", /unsupported Transfer-Encoding/],
    ["\r\nTransfer-Encoding: ", /unsupported Transfer-Encoding/],
    // Read as framing headers by servers that map names to HTTP_* variables (Puma).
    ["\r\nContent-Length: 5\r\nTransfer_Encoding: chunked", /"transfer_encoding" would be/],
    ["\r\nTRANSFER_ENCODING: chunked", /would be read as transfer-encoding/],
    ["\r\nContent_Length: 5", /would be read as content-length/],
    ["\r\nTransfer-Encoding: chunked\r\ncontent_length: 60", /would be read as content-length/],
    ["\r\nContent_length: 5", /would be read as content-length/],
    ["\r\nTransfer_encoding: chunked", /would be read as transfer-encoding/],
  ];
  for (const [extra, msg] of bad) {
    assert.throws(() => requestFraming(request(R + extra)), (e: unknown) => {
      assert.ok(e instanceof HttpParseError, extra);
      assert.equal(e.status, 400, extra);
      assert.match(e.message, msg, extra);
      return true;
    });
  }
  assert.throws(
    () => requestFraming(request("POST http://a.test/ HTTP/1.0\r\nTransfer-Encoding: chunked")),
    /HTTP\/1.0/,
  );
});

Deno.test("response framing: no-body statuses and HEAD, chunked wins, close-delimited", () => {
  assert.equal(responseFraming(response("HTTP/1.1 204 No Content"), "GET").kind, "none");
  assert.equal(responseFraming(response("HTTP/1.1 304 Not Modified"), "GET").kind, "none");
  assert.equal(responseFraming(response("HTTP/1.1 100 Continue"), "GET").kind, "none");
  assert.equal(
    responseFraming(response("HTTP/1.1 200 OK\r\nContent-Length: 9"), "HEAD").kind,
    "none",
  );
  assert.deepEqual(responseFraming(response("HTTP/1.1 200 OK\r\nContent-Length: 9"), "GET"), {
    kind: "length",
    length: 9,
  });
  assert.deepEqual(
    responseFraming(
      response("HTTP/1.1 200 OK\r\nContent-Length: 9, 9\r\nContent-Length: 9"),
      "GET",
    ),
    { kind: "length", length: 9 },
  );
  assert.equal(
    responseFraming(
      response("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9"),
      "GET",
    ).kind,
    "chunked",
  );
  assert.equal(responseFraming(response("HTTP/1.1 200 OK"), "GET").kind, "close");
});

Deno.test("response framing: conflicting lengths and unknown codings are 502", () => {
  for (
    const h of [
      "HTTP/1.1 200 OK\r\nContent-Length: 9\r\nContent-Length: 10",
      "HTTP/1.1 200 OK\r\nContent-Length: nine",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked",
    ]
  ) {
    assert.throws(() => responseFraming(response(h), "GET"), (e: unknown) => {
      assert.equal((e as HttpParseError).status, 502, h);
      return true;
    });
  }
});

Deno.test("hop-by-hop: fixed set, Connection-named fields, protected fields stay", () => {
  const head = request(
    "GET http://a.test/ HTTP/1.1\r\nHost: a.test\r\nConnection: keep-alive, X-Secret, Content-Length, Host\r\n" +
      "Keep-Alive: 5\r\nProxy-Authorization: Basic Zm9vOmJhcg==\r\nProxy-Connection: keep-alive\r\n" +
      "TE: trailers\r\nTrailer: X\r\nUpgrade: h2c\r\nX-Secret: s\r\nAccept: */*\r\nAuthorization: Bearer t",
  );
  const drop = hopByHop(head.headers, true);
  const lines = fieldLines(head.headers, drop);
  assert.equal(lines, "Accept: */*\r\nAuthorization: Bearer t\r\n");
  // "Connection: Content-Length" must not make us drop framing we re-apply
  // ourselves, nor Host: they are in the fixed set and written by the proxy.
  assert.ok(drop.has("content-length") && drop.has("host"));
  const res = response(
    "HTTP/1.1 200 OK\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nSet-Cookie: a=b",
  );
  assert.equal(fieldLines(res.headers, hopByHop(res.headers, false)), "Set-Cookie: a=b\r\n");
});

Deno.test("keep-alive and upgrade detection", () => {
  assert.equal(clientKeepAlive(request("GET / HTTP/1.1")), true);
  assert.equal(clientKeepAlive(request("GET / HTTP/1.1\r\nConnection: Close")), false);
  assert.equal(clientKeepAlive(request("GET / HTTP/1.0")), false);
  assert.equal(clientKeepAlive(request("GET / HTTP/1.0\r\nConnection: keep-alive")), true);
  assert.equal(serverKeepAlive(response("HTTP/1.1 200 OK")), true);
  assert.equal(serverKeepAlive(response("HTTP/1.1 200 OK\r\nConnection: close")), false);
  assert.equal(serverKeepAlive(response("HTTP/1.0 200 OK")), false);
  // HTTP/1.0 with Transfer-Encoding: faulty framing, the connection is closed
  // after it (RFC 9112 6.1), whatever Connection says.
  assert.equal(serverKeepAlive(response("HTTP/1.0 200 OK\r\nConnection: keep-alive")), true);
  assert.equal(
    serverKeepAlive(
      response("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked"),
    ),
    false,
  );
  assert.equal(
    serverKeepAlive(response("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked")),
    true,
  );
  // Both Transfer-Encoding and Content-Length: read as chunked, never reused.
  assert.equal(
    serverKeepAlive(
      response("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5"),
    ),
    false,
  );
  assert.equal(
    upgradeRequested(request("GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket")),
    "websocket",
  );
  assert.equal(upgradeRequested(request("GET / HTTP/1.1\r\nUpgrade: websocket")), undefined);
  assert.equal(
    upgradeRequested(request("GET / HTTP/1.0\r\nConnection: Upgrade\r\nUpgrade: websocket")),
    undefined,
  );
});
