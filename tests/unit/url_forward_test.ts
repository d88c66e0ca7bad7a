/**
 * What an allow URL rule is compared with is exactly what the proxy forwards:
 * `forwardedPathQuery` (rules) and `parseAbsoluteForm`/`normalisePath`
 * (proxy) must agree, and normalising a forwarded target again must not
 * change it (the rules engine normalises the path it is given once more).
 */

import assert from "node:assert/strict";
import { normalisePath, parseAbsoluteForm } from "../../lib/net/url.ts";
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
