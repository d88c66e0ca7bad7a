import assert from "node:assert/strict";
import { TlsRecordError, TlsRecordStream } from "../../lib/tls/record_stream.ts";
import { concat } from "../_helpers/attack.ts";

function record(type: number, len: number, version = 0x0303): Uint8Array {
  const r = new Uint8Array(5 + len);
  r.set([type, version >> 8, version & 0xff, len >> 8, len & 0xff]);
  r.fill(0x41, 5); // fragment bytes are never looked at
  return r;
}

const STREAM = concat(
  record(22, 300, 0x0301), // ClientHello
  record(20, 1), // change_cipher_spec
  record(23, 16384 + 256), // TLS 1.3 ciphertext
  record(23, 0), // a zero-length application-data record (TLS 1.2 allows it)
  record(21, 2), // alert
);

Deno.test("tls record stream: records pass whatever the split points", () => {
  for (const size of [1, 2, 3, 5, 7, 100, 4096, STREAM.length]) {
    const s = new TlsRecordStream();
    for (let o = 0; o < STREAM.length; o += size) s.push(STREAM.subarray(o, o + size));
    assert.equal(s.records, 5, `chunks of ${size}`);
  }
});

Deno.test("tls record stream: plain text or a bad header after valid records is refused", () => {
  const cases: [string, Uint8Array, RegExp][] = [
    ["plain HTTP", new TextEncoder().encode("GET /secret HTTP/1.1\r\n\r\n"), /content type 71/],
    ["unknown content type", record(25, 1), /content type 25/],
    ["SSL 2 style version", record(23, 1, 0x0200), /version 0x0200/],
    ["a future version", record(23, 1, 0x0305), /version 0x0305/],
    ["an oversized record", record(23, 16384 + 2049), /18433 bytes/],
  ];
  for (const [name, bad, message] of cases) {
    const s = new TlsRecordStream();
    s.push(STREAM);
    // Bytes arriving one at a time are refused at the header's last byte at the latest.
    assert.throws(
      () => {
        for (let i = 0; i < bad.length; i++) s.push(bad.subarray(i, i + 1));
      },
      (e: unknown) => e instanceof TlsRecordError && message.test(e.message),
      name,
    );
    assert.match(
      (() => {
        try {
          new TlsRecordStream().push(concat(STREAM, bad));
        } catch (e) {
          return (e as Error).message;
        }
        return "";
      })(),
      new RegExp(`at byte ${STREAM.length} of the tunnel`),
      name,
    );
  }
});
