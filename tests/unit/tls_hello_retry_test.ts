import assert from "node:assert/strict";
import { parseClientHello } from "../../lib/tls/client_hello.ts";
import { TunnelHelloError, TunnelHelloGuard } from "../../lib/tls/hello_retry.ts";
import { clientHello, concat, HRR_RANDOM, tlsRecords } from "../_helpers/attack.ts";

function serverHello(hrr: boolean): Uint8Array {
  const random = hrr ? HRR_RANDOM : new Array(32).fill(0x42);
  const body = [3, 3, ...random, 0, 0x13, 0x01, 0, 0, 6, 0, 43, 0, 2, 3, 4];
  const msg = [2, 0, 0, body.length, ...body];
  return new Uint8Array([22, 3, 3, 0, msg.length, ...msg]);
}

const CCS = new Uint8Array([20, 3, 3, 0, 1, 1]);
const WARNING_ALERT = new Uint8Array([21, 3, 3, 0, 2, 1, 112]);
const FIRST = tlsRecords(clientHello({ sni: ["a.test"] }));
const SAME = tlsRecords(clientHello({ sni: ["a.test"] }));
const OTHER = tlsRecords(clientHello({ sni: ["b.test"] }));

function guard(): TunnelHelloGuard {
  return new TunnelHelloGuard(
    parseClientHello(FIRST)!.length,
    (h) => h.serverName === "a.test" ? undefined : `SNI ${h.serverName} is not a.test`,
  );
}

/** Feeds `bytes` in `size`-byte pushes; returns the offset of the push that threw, or -1. */
function feed(push: (b: Uint8Array) => void, bytes: Uint8Array, size: number): number {
  for (let o = 0; o < bytes.length; o += size) {
    try {
      push(bytes.subarray(o, o + size));
    } catch (e) {
      assert.ok(e instanceof TunnelHelloError, String(e));
      return o;
    }
  }
  return -1;
}

const SIZES = [1, 2, 3, 5, 7, 64, 100000];

Deno.test("tunnel hello guard: a second ClientHello after a HelloRetryRequest is checked, whatever the splits", () => {
  for (const size of SIZES) {
    for (const serverSize of SIZES) {
      for (const split of [16384, 7]) {
        const same = tlsRecords(clientHello({ sni: ["a.test"] }), split);
        const other = tlsRecords(clientHello({ sni: ["b.test"] }), split);
        // The same host: relayed, and nothing after it is looked at.
        let g = guard();
        assert.equal(feed((b) => g.client(b), FIRST, size), -1);
        feed((b) => g.server(b), concat(WARNING_ALERT, serverHello(true), CCS), serverSize);
        assert.equal(feed((b) => g.client(b), concat(CCS, same, OTHER), size), -1);
        // Another host: refused in the push that holds its last byte, not before.
        g = guard();
        feed((b) => g.client(b), FIRST, size);
        feed((b) => g.server(b), concat(serverHello(true), CCS), serverSize);
        const bytes = concat(CCS, other);
        const at = feed((b) => g.client(b), bytes, size);
        assert.ok(at >= 0, `refused (chunks of ${size}, server ${serverSize}, records ${split})`);
        assert.ok(at + size >= bytes.length, `refused at the hello's end, not at ${at}`);
      }
    }
  }
});

Deno.test("tunnel hello guard: no handshake record before the server answers", () => {
  for (const size of SIZES) {
    const g = guard();
    // change_cipher_spec and early data may come first.
    const early = concat(FIRST, CCS, new Uint8Array([23, 3, 3, 0, 3, 1, 2, 3]));
    assert.equal(feed((b) => g.client(b), early, size), -1);
    const at = feed((b) => g.client(b), SAME, size);
    assert.ok(at >= 0 && at < 5, `refused at the record header (chunks of ${size})`);
  }
  let refused: unknown;
  try {
    const g = guard();
    g.client(concat(FIRST, SAME));
  } catch (e) {
    refused = e;
  }
  assert.ok(refused instanceof TunnelHelloError);
  assert.match(refused.message, /before the server answered/);
});

Deno.test("tunnel hello guard: after a ServerHello the client's handshake records pass", () => {
  for (const size of SIZES) {
    const g = guard();
    feed((b) => g.client(b), FIRST, size);
    feed((b) => g.server(b), serverHello(false), size);
    const flight = concat(tlsRecords(new Uint8Array([16, 0, 0, 2, 1, 2])), CCS, OTHER);
    assert.equal(feed((b) => g.client(b), flight, size), -1);
  }
});

Deno.test("tunnel hello guard: a server that is not TLS, or starts with another message, holds the client", () => {
  for (
    const server of [
      new TextEncoder().encode("HTTP/1.1 400 Bad Request\r\n\r\n"),
      tlsRecords(new Uint8Array([11, 0, 0, 40, ...new Array(40).fill(0)])),
    ]
  ) {
    const g = guard();
    g.client(FIRST);
    g.server(server);
    assert.throws(() => g.client(SAME), TunnelHelloError);
  }
});

Deno.test("tunnel hello guard: a malformed second ClientHello is refused", () => {
  const cases = [
    tlsRecords(new Uint8Array([16, 0, 0, 4, 1, 2, 3, 4])),
    new Uint8Array([22, 3, 3, 0, 0]),
    concat(tlsRecords(clientHello({ sni: ["a.test"] }), 20).subarray(0, 25), CCS),
  ];
  for (const bad of cases) {
    const g = guard();
    g.client(FIRST);
    g.server(serverHello(true));
    assert.throws(() => g.client(bad), /malformed TLS ClientHello/);
  }
});
