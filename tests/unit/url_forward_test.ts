/**
 * What an allow URL rule is compared with is exactly what the proxy forwards:
 * `forwardedPathQuery` (rules) and `parseAbsoluteForm`/`normalisePath`
 * (proxy) must agree, and normalising a forwarded target again must not
 * change it (the rules engine normalises the path it is given once more).
 */

import assert from "node:assert/strict";
import {
  authorityOf,
  cachedAuthorities,
  normalisePath,
  parseAbsoluteForm,
} from "../../lib/net/url.ts";
import { HostError } from "../../lib/net/host.ts";
import { canonicalPathQuery, forwardedPathQuery } from "../../lib/rules/pattern.ts";

const RESTS = [
  "",
  "/",
  "?q=1",
  "/a/b",
  "/a//b",
  "//a/b",
  "/a/./b/../c",
  "/a/%2e%2E/b",
  "/a%3Bb",
  "/a;b",
  "/a%3bb",
  "/%61dmin",
  "/a%2fb",
  "/s?q=a+b",
  "/s?q=a%20b",
  "/s?q=a%2Bb&x=%7e",
  "/a b",
  "/café",
  "/caf%c3%a9",
  '/q?a="<x>"',
  "/a?",
  "/..%2e/x",
  "/a/.%2E/b",
  // A stray % next to escapes: decoding must not make new escapes (%%32e is not %2e).
  "/a/%%32e%%32e/b",
  "/secret/%%32e%%32e/ok",
  "/%%41a",
  "/%",
  "/a%",
  "/a%2",
  "/100%?q=50%&r=%zz",
  "/%%%32%65",
];

Deno.test("forwardedPathQuery is what parseAbsoluteForm forwards", () => {
  for (const rest of RESTS) {
    assert.equal(
      forwardedPathQuery(rest),
      parseAbsoluteForm(`http://h.test${rest}`).path,
      JSON.stringify(rest),
    );
  }
  assert.equal(forwardedPathQuery("/a\\b"), undefined, "the proxy refuses a backslash");
});

Deno.test("normalisePath is idempotent on what it forwards", () => {
  for (const rest of RESTS) {
    const once = forwardedPathQuery(rest)!;
    assert.equal(normalisePath(once), once, JSON.stringify(rest));
  }
});

Deno.test("normalisePath is idempotent on random spellings with stray %", () => {
  // Bounded: a fixed seed, a few thousand short targets over a hostile alphabet.
  let seed = 12345;
  const rand = (n: number) => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  const alphabet = ["%", "2", "e", "E", "3", "4", "1", "f", "/", ".", "a", "?", "%2e", "%25"];
  for (let i = 0; i < 5000; i++) {
    let rest = "/";
    for (let j = 0, n = 1 + rand(12); j < n; j++) rest += alphabet[rand(alphabet.length)];
    const once = normalisePath(rest);
    assert.equal(normalisePath(once), once, JSON.stringify(rest));
  }
});

Deno.test("a stray % never becomes a dot segment upstream", () => {
  assert.equal(normalisePath("/secret/%%32e%%32e/ok"), "/secret/%252e%252e/ok");
  assert.equal(normalisePath("/%%41a"), "/%25Aa");
  assert.equal(normalisePath("/100%?q=50%"), "/100%25?q=50%25");
});

Deno.test("the forwarded form is never looser than the canonical form", () => {
  // Two targets forwarded the same must be canonically the same, so an allow
  // URL rule that matches can never be shadowed by a deny with another meaning.
  for (const rest of RESTS) {
    const raw = rest === "" ? "/" : rest.startsWith("?") ? `/${rest}` : rest;
    assert.deepEqual(
      canonicalPathQuery(forwardedPathQuery(rest)!),
      canonicalPathQuery(raw),
      JSON.stringify(rest),
    );
  }
});

Deno.test("authorityOf: remembers hosts, but not authorities too long to be one", () => {
  assert.equal(authorityOf("memo.test:81").port, 81);
  const before = cachedAuthorities();
  assert.ok(before >= 1);
  for (let i = 0; i < 20; i++) {
    assert.throws(() => authorityOf(`${"a".repeat(60 * 1024)}${i}.test`), HostError);
  }
  assert.equal(cachedAuthorities(), before, "long authorities are not kept");
});
