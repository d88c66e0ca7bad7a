/** What the record says about a client's ALPN offers: short, whatever the client sent. */
import assert from "node:assert/strict";
import { describeOffers } from "../../lib/tls/intercept.ts";

Deno.test("describeOffers: plain names as they are, odd or long ones quoted and cut, a few at most", () => {
  assert.equal(describeOffers(["h2"]), "h2");
  assert.equal(describeOffers(["h2", "h3"]), "h2, h3");
  assert.equal(describeOffers(["a b\u0001"]), '"a b\\u0001"');
  const long = "x".repeat(255);
  assert.equal(describeOffers([long]), JSON.stringify("x".repeat(32) + "..."));
  const many = Array.from({ length: 200 }, () => long);
  const text = describeOffers(many);
  assert.ok(text.length < 250, `${text.length} characters`);
  assert.match(text, /\(and 196 more\)$/);
});
