/**
 * Names are looked up as written: the search domains of /etc/resolv.conf
 * never turn `secret` (decided as `secret`) into `secret.corp.example`
 * (which a rule may deny). Run in a network and mount namespace of its own,
 * with a resolv.conf naming a tiny DNS server on that namespace's loopback,
 * so no query leaves the machine.
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { hasAll } from "../_helpers/tools.ts";

const DNS = fileURLToPath(new URL("../testdata/dns/tiny_dns.py", import.meta.url));
const RESOLVE = fileURLToPath(new URL("../../lib/net/resolve.ts", import.meta.url));

/** True when this user may make network and mount namespaces (root, or allowed by the kernel). */
async function canUnshare(): Promise<boolean> {
  if (!hasAll("unshare", "ip", "python3", "mount")) return false;
  const r = await new Deno.Command("unshare", {
    args: ["--net", "--mount", "true"],
    stdout: "null",
    stderr: "null",
  }).output().catch(() => undefined);
  if (r?.success) return true;
  console.error("SKIP: cannot make network and mount namespaces (unshare --net --mount)");
  return false;
}

const PROBE = `
import { Resolver } from ${JSON.stringify(RESOLVE)};
const hostsFile = Deno.env.get("HOSTS_FILE");
const r = new Resolver({ hostsFile });
for (const name of ["secret", "secret.corp.example", "myhost", "myhost.local"]) {
  try {
    console.log(JSON.stringify({ name, addresses: (await r.resolve(name, 80)).map((a) => a.address) }));
  } catch (e) {
    console.log(JSON.stringify({ name, error: e.message }));
  }
}
`;

Deno.test({
  name: "resolver: search domains are not applied; the hosts file still is",
  ignore: !(await canUnshare()),
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "nm-search-" });
    try {
      await Deno.writeTextFile(
        `${dir}/resolv.conf`,
        "nameserver 127.0.0.1\nsearch corp.example\noptions ndots:1 attempts:1 timeout:2\n",
      );
      await Deno.writeTextFile(
        `${dir}/hosts`,
        "127.0.0.7 myhost   # a comment\n127.0.0.8 MYHOST.LOCAL\n",
      );
      await Deno.writeTextFile(`${dir}/probe.ts`, PROBE);
      const script = [
        "set -e",
        "ip link set lo up",
        `mount --bind "$D/resolv.conf" /etc/resolv.conf`,
        `python3 "$DNS" 127.0.0.1 53 secret.corp.example=127.0.0.9 >"$D/dns.log" &`,
        `for _ in $(seq 50); do grep -q ready "$D/dns.log" && break; sleep 0.1; done`,
        `HOSTS_FILE="$D/hosts" "$DENO" run -A "$D/probe.ts"`,
        "kill %1",
      ].join("\n");
      const out = await new Deno.Command("unshare", {
        args: ["--net", "--mount", "bash", "-c", script],
        env: { D: dir, DNS, DENO: Deno.execPath(), DENO_NO_UPDATE_CHECK: "1" },
        stdout: "piped",
        stderr: "piped",
      }).output();
      const stderr = new TextDecoder().decode(out.stderr);
      assert.ok(out.success, stderr);
      const results = Object.fromEntries(
        new TextDecoder().decode(out.stdout).trim().split("\n").map((l) => {
          const r = JSON.parse(l);
          return [r.name, r];
        }),
      );
      // Without the fix, "secret" resolved to secret.corp.example's 127.0.0.9.
      assert.equal(results.secret.addresses, undefined, JSON.stringify(results.secret));
      assert.match(results.secret.error, /no such host .*without the search domains/);
      assert.deepEqual(results["secret.corp.example"].addresses, ["127.0.0.9"]);
      assert.deepEqual(results.myhost.addresses, ["127.0.0.7"]);
      assert.deepEqual(results["myhost.local"].addresses, ["127.0.0.8"]);
      const queries = (await Deno.readTextFile(`${dir}/dns.log`)).split("\n")
        .filter((l) => l.startsWith("query ")).map((l) => l.slice(6));
      assert.ok(queries.includes("secret"), queries.join(", "));
      // Only the names asked for, in order: no search domain tried for "secret".
      assert.ok(
        queries.indexOf("secret.corp.example") > queries.lastIndexOf("secret"),
        `a search domain was tried: ${queries.join(", ")}`,
      );
      assert.ok(!queries.some((q) => q.startsWith("myhost")), queries.join(", "));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
