import assert from "node:assert/strict";
import {
  defaultPort,
  formatAuthority,
  HostError,
  isIpLiteral,
  normaliseHost,
  parseAuthority,
} from "../../lib/net/host.ts";

Deno.test("normaliseHost: canonical spellings", () => {
  const cases: Array<[string, string]> = [
    ["github.com", "github.com"],
    ["GitHub.COM", "github.com"],
    ["github.com.", "github.com"],
    ["  github.com  ", "github.com"],
    ["BÜCHER.de.", "xn--bcher-kva.de"],
    ["xn--bcher-kva.de", "xn--bcher-kva.de"],
    ["faß.de", "xn--fa-hia.de"],
    ["ｅxample.com", "example.com"], // full-width letter folds to ASCII
    ["_dmarc.example.com", "_dmarc.example.com"],
    // IPv4 in every spelling the WHATWG parser accepts becomes dotted decimal.
    ["127.0.0.1", "127.0.0.1"],
    ["127.1", "127.0.0.1"],
    ["0x7f.1", "127.0.0.1"],
    ["0x7f000001", "127.0.0.1"],
    ["2130706433", "127.0.0.1"],
    ["0177.0.0.1", "127.0.0.1"],
    ["1.2.3.4.", "1.2.3.4"],
    // IPv6: bracketed, compressed, lower case; brackets optional on input.
    ["[::1]", "[::1]"],
    ["[0:0:0:0:0:0:0:1]", "[::1]"],
    ["::1", "[::1]"],
    ["[2001:DB8::1]", "[2001:db8::1]"],
    // IPv4-mapped IPv6 reaches the IPv4 host: same spelling as that host.
    ["[::ffff:1.2.3.4]", "1.2.3.4"],
    ["[::ffff:7f00:1]", "127.0.0.1"],
    ["::ffff:10.0.0.1", "10.0.0.1"],
  ];
  for (const [input, want] of cases) {
    assert.equal(normaliseHost(input), want, input);
  }
});

Deno.test("normaliseHost: rejects unusable hosts", () => {
  for (
    const bad of [
      "",
      " ",
      ".",
      "..",
      "a..b",
      ".a",
      "a.com..",
      "exa mple.com",
      "ex%41mple.com",
      "a/b",
      "a?b",
      "a#b",
      "user@host",
      "a\\b",
      "*.com",
      "1.2.3.256",
      "1.2.3.4.5",
      "08.1.1.1",
      "xn--zz",
      "-a.com",
      "a-.com",
      "[fe80::1%25eth0]",
      "[::1",
      // A port after an IPv6 literal is not part of a host (--passthrough,
      // --resolve's address and --listen would drop it silently).
      "[::1]:8443",
      "[::1]:",
      "[::1].",
      "a".repeat(64) + ".com",
      ("a".repeat(60) + ".").repeat(5) + "com",
    ]
  ) {
    assert.throws(() => normaliseHost(bad), HostError, JSON.stringify(bad));
  }
});

Deno.test("normaliseHost: remembered answers equal fresh ones, failures are never remembered", () => {
  const spellings = ["GitHub.COM.", "0x7f.1", "[::FFFF:7f00:1]", "faß.de"];
  const first = spellings.map((h) => normaliseHost(h));
  // Enough distinct names to overflow the cache several times over.
  for (let i = 0; i < 5000; i++) {
    assert.equal(normaliseHost(`h${i}.Example.com`), `h${i}.example.com`);
  }
  assert.deepEqual(spellings.map((h) => normaliseHost(h)), first);
  assert.deepEqual(first, ["github.com", "127.0.0.1", "127.0.0.1", "xn--fa-hia.de"]);
  for (let i = 0; i < 3; i++) assert.throws(() => normaliseHost("a..b"), HostError);
  // Long inputs are not kept, and are still answered.
  const padded = " ".repeat(300) + "Example.COM";
  assert.equal(normaliseHost(padded), "example.com");
  assert.equal(normaliseHost(padded), "example.com");
});

Deno.test("isIpLiteral", () => {
  assert.equal(isIpLiteral("1.2.3.4"), true);
  assert.equal(isIpLiteral("[::1]"), true);
  assert.equal(isIpLiteral("github.com"), false);
  assert.equal(isIpLiteral("1.2.3.com"), false);
});

Deno.test("parseAuthority", () => {
  assert.deepEqual(parseAuthority("GitHub.com:443"), { host: "github.com", port: 443 });
  assert.deepEqual(parseAuthority("github.com", 80), { host: "github.com", port: 80 });
  assert.deepEqual(parseAuthority("[::1]:8080"), { host: "[::1]", port: 8080 });
  assert.deepEqual(parseAuthority("0x7f.1:80"), { host: "127.0.0.1", port: 80 });
  for (const bad of ["github.com", "github.com:0", "github.com:65536", "::1:80", "a:b", "a:1:2"]) {
    assert.throws(() => parseAuthority(bad), HostError, bad);
  }
});

Deno.test("defaultPort and formatAuthority", () => {
  assert.equal(defaultPort("http"), 80);
  assert.equal(defaultPort("https"), 443);
  assert.equal(defaultPort("ftp"), undefined);
  assert.equal(formatAuthority("github.com", 443, "https"), "github.com");
  assert.equal(formatAuthority("github.com", 443, "http"), "github.com:443");
  assert.equal(formatAuthority("[::1]", 8080), "[::1]:8080");
});
