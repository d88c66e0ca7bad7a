/**
 * The hosts file the resolver reads itself (see `hostsFileAddresses`).
 */

import assert from "node:assert/strict";
import { hostsFileAddresses, hostsFileParses } from "../../lib/net/resolve.ts";

Deno.test("resolver: hosts file names, any case, aliases, IPv6, comments and a trailing dot", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nm-hosts-" });
  try {
    const path = `${dir}/hosts`;
    await Deno.writeTextFile(
      path,
      "127.0.0.1 localhost\r\n10.0.0.1\tApp app.internal. # app\n::1 app six\n# 10.0.0.9 app\n" +
        "10.0.0.2 dup dup\n",
    );
    assert.deepEqual(await hostsFileAddresses(path, "app"), ["10.0.0.1", "::1"]);
    assert.deepEqual(await hostsFileAddresses(path, "app.internal"), ["10.0.0.1"]);
    assert.deepEqual(await hostsFileAddresses(path, "six"), ["::1"]);
    assert.deepEqual(await hostsFileAddresses(path, "dup"), ["10.0.0.2"], "one line, one address");
    assert.equal(await hostsFileAddresses(path, "other"), undefined);
    assert.equal(await hostsFileAddresses(`${dir}/missing`, "app"), undefined);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("resolver: a hosts file is parsed again only when it changed", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nm-hosts-" });
  try {
    const path = `${dir}/hosts`;
    // A blocklist hosts file: parsing it for every lookup stalled every connection.
    const lines = ["127.0.0.1 localhost"];
    for (let i = 0; i < 150_000; i++) lines.push(`0.0.0.0 ads${i}.tracker.example`);
    lines.push("10.1.2.3 myhost");
    await Deno.writeTextFile(path, lines.join("\n") + "\n");
    const old = new Date(Date.now() - 60_000);
    await Deno.utime(path, old, old);
    const before = hostsFileParses.count;
    assert.deepEqual(await hostsFileAddresses(path, "myhost"), ["10.1.2.3"]);
    for (let i = 0; i < 20; i++) {
      assert.deepEqual(await hostsFileAddresses(path, "myhost"), ["10.1.2.3"]);
    }
    assert.equal(hostsFileParses.count - before, 1, "21 lookups, one parse");
    // A change is seen at the next lookup, also one made just after a reading.
    await Deno.writeTextFile(path, "10.9.9.9 myhost\n");
    assert.deepEqual(await hostsFileAddresses(path, "myhost"), ["10.9.9.9"]);
    await Deno.writeTextFile(path, "10.8.8.8 myhost\n");
    assert.deepEqual(await hostsFileAddresses(path, "myhost"), ["10.8.8.8"]);
    await Deno.remove(path);
    assert.equal(await hostsFileAddresses(path, "myhost"), undefined);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
