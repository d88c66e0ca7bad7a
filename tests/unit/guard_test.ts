import assert from "node:assert/strict";
import { addressKey, classifyAddress, DestinationGuard, parseIPv6 } from "../../lib/net/guard.ts";
import { normaliseHost } from "../../lib/net/host.ts";
import {
  addressForDial,
  dialableAnswer,
  parseResolveEntry,
  Resolver,
} from "../../lib/net/resolve.ts";
import { formatUrl, normalisePath, parseAbsoluteForm } from "../../lib/net/url.ts";
import { decisionExempts } from "../../lib/proxy/upstream.ts";
import type { Rule } from "../../lib/rules/types.ts";

/** What the proxy checks: the host as normalised, then as dialled. */
const classify = (spelling: string) => classifyAddress(addressForDial(normaliseHost(spelling)));

Deno.test("guard: every spelling of loopback is loopback", () => {
  for (
    const s of [
      "127.0.0.1",
      "2130706433",
      "0x7f000001",
      "0x7f.1",
      "0177.0.0.1",
      "0177.0000.0000.0001",
      "127.1",
      "127.0.1",
      "127.255.255.254",
      "::1",
      "[::1]",
      "[0:0:0:0:0:0:0:1]",
      "[::ffff:127.0.0.1]",
      "[::ffff:7f00:1]",
      "[0:0:0:0:0:ffff:127.0.0.1]",
      "[::127.0.0.1]",
      "[::ffff:0:127.0.0.1]",
      "[64:ff9b::127.0.0.1]",
      "[2002:7f00:1::]",
    ]
  ) {
    assert.equal(classify(s), "loopback", s);
  }
});

Deno.test("guard: link-local, metadata, unspecified, multicast, reserved", () => {
  const table: [string, string][] = [
    ["169.254.169.254", "link-local"],
    ["0xa9fea9fe", "link-local"],
    ["2852039166", "link-local"],
    ["[::ffff:169.254.169.254]", "link-local"],
    ["[fe80::1]", "link-local"],
    ["[febf::1]", "link-local"],
    ["[fec0::1]", "link-local"],
    ["0.0.0.0", "unspecified"],
    ["0", "unspecified"],
    ["0.1.2.3", "unspecified"],
    ["[::]", "unspecified"],
    ["[::ffff:0.0.0.0]", "unspecified"],
    ["224.0.0.1", "multicast"],
    ["239.255.255.250", "multicast"],
    ["[ff02::1]", "multicast"],
    ["255.255.255.255", "reserved"],
    ["[fd00:ec2::254]", "metadata"],
    ["[fd00:ec2::123]", "metadata"],
    ["100.100.100.200", "metadata"],
    ["[::ffff:100.100.100.200]", "metadata"],
    ["168.63.129.16", "metadata"],
    ["240.0.0.1", "reserved"],
  ];
  for (const [s, cls] of table) assert.equal(classify(s), cls, s);
});

Deno.test("guard: ordinary and private addresses are not protected", () => {
  for (
    const s of [
      "93.184.216.34",
      "10.0.0.1",
      "172.17.0.1",
      "192.168.1.1",
      "[2001:db8::1]",
      "[fd00::1]",
    ]
  ) {
    assert.equal(classify(s), undefined, s);
  }
  assert.equal(classifyAddress("not-an-ip"), "reserved");
});

Deno.test("guard: IPv6 parsing", () => {
  assert.deepEqual([...parseIPv6("::1")!], [...new Array(15).fill(0), 1]);
  assert.deepEqual([...parseIPv6("[fe80::1%eth0]")!].slice(0, 2), [0xfe, 0x80]);
  assert.equal(parseIPv6("1::2::3"), undefined);
  assert.equal(parseIPv6("1:2:3:4:5:6:7:8:9"), undefined);
  assert.equal(parseIPv6("12345::"), undefined);
  assert.equal(parseIPv6("::ffff:1.2.3"), undefined);
  assert.equal(addressKey("::ffff:10.0.0.1"), addressKey("10.0.0.1"));
});

Deno.test("guard: own address, exemptions, loops", () => {
  const g = new DestinationGuard({ listenAddress: "172.17.0.1", listenPort: 8080 });
  assert.equal(g.check("172.17.0.1", 80, false), "proxy");
  assert.equal(g.check("::ffff:172.17.0.1", 22, false), "proxy");
  assert.equal(g.check("172.17.0.1", 80, true), undefined, "an exact rule may name it");
  assert.equal(g.check("172.17.0.1", 8080, true), "proxy", "but never our own socket");
  assert.equal(g.check("127.0.0.1", 5432, false), "loopback");
  assert.equal(g.check("127.0.0.1", 5432, true), undefined);
  assert.equal(g.check("127.0.0.2", 8080, true), "proxy", "loopback on our port may loop");
  assert.equal(g.check("0.0.0.0", 8080, true), "proxy");
  assert.equal(g.check("93.184.216.34", 8080, false), undefined);

  const wild = new DestinationGuard({
    listenAddress: "0.0.0.0",
    listenPort: 3128,
    interfaceAddresses: ["192.168.1.5", "fd00::5"],
  });
  assert.equal(wild.check("192.168.1.5", 443, false), "proxy");
  assert.equal(wild.check("fd00::5", 443, false), "proxy");
  assert.equal(wild.check("192.168.1.6", 443, false), undefined);

  const off = new DestinationGuard({ enabled: false, listenAddress: "127.0.0.1", listenPort: 1 });
  assert.equal(off.check("127.0.0.1", 80, false), undefined);
  assert.equal(off.check("127.0.0.1", 1, false), "proxy");
});

Deno.test("guard: every address of this host is protected, whatever the listen address", () => {
  const g = new DestinationGuard({
    listenAddress: "127.0.0.1",
    listenPort: 8080,
    interfaceAddresses: ["127.0.0.1", "172.17.0.1", "192.0.2.2", "fd00::2", "fe80::1"],
  });
  assert.equal(g.check("172.17.0.1", 2375, false), "host", "docker0 gateway");
  assert.equal(g.check("::ffff:172.17.0.1", 2375, false), "host", "in an IPv6 spelling");
  assert.equal(g.check("2002:ac11:1::1", 2375, false), "host", "wrapped in 6to4");
  assert.equal(g.check("2002:c000:202::1", 5432, false), "host", "6to4 of eth0");
  assert.equal(g.check("2002:ac11:2::1", 2375, false), undefined, "6to4 of another host");
  assert.equal(g.check("192.0.2.2", 5432, false), "host", "eth0");
  assert.equal(g.check("fd00::2", 22, false), "host");
  assert.equal(g.check("fe80::1", 22, false), "link-local", "the more specific class wins");
  assert.equal(g.check("172.17.0.2", 80, false), undefined, "a container is not this host");
  assert.equal(g.check("172.17.0.1", 2375, true), undefined, "an exact rule or --resolve may");
  assert.equal(g.check("172.17.0.1", 8080, true), "proxy", "never our port on this host");
  assert.equal(g.check("127.0.0.1", 8080, true), "proxy");
  assert.throws(
    () => g.assert("x.attacker.test", "172.17.0.1", 80, false),
    /^DestinationRefusedError: destination protection: x\.attacker\.test \(172\.17\.0\.1\) is an address of this host$/,
  );
  const off = new DestinationGuard({
    enabled: false,
    listenAddress: "127.0.0.1",
    listenPort: 8080,
    interfaceAddresses: ["172.17.0.1"],
  });
  assert.equal(off.check("172.17.0.1", 80, false), undefined);
  assert.equal(off.check("172.17.0.1", 8080, false), "proxy", "a loop is refused even when off");
});

Deno.test("guard: interface addresses are re-read lazily, at most every refreshMs", () => {
  let now = 0;
  let reads = 0;
  let current = ["192.0.2.2"];
  const g = new DestinationGuard({
    listenAddress: "127.0.0.1",
    listenPort: 8080,
    interfaceAddresses: () => {
      reads++;
      return current;
    },
    refreshMs: 10_000,
    now: () => now,
  });
  assert.equal(reads, 0, "nothing is read before the first check");
  assert.equal(g.check("192.0.2.2", 80, false), "host");
  assert.equal(g.check("172.18.0.1", 80, false), undefined);
  assert.equal(reads, 1);
  // A bridge appears (docker network create): covered once the reading is old.
  current = ["192.0.2.2", "172.18.0.1"];
  now = 9_999;
  assert.equal(g.check("172.18.0.1", 80, false), undefined);
  assert.equal(reads, 1);
  now = 10_000;
  assert.equal(g.check("172.18.0.1", 80, false), "host");
  assert.equal(reads, 2);
  // A reading that fails leaves only the classes (and loopback).
  const broken = new DestinationGuard({
    interfaceAddresses: () => {
      throw new Deno.errors.PermissionDenied("no sys permission");
    },
  });
  assert.equal(broken.check("127.0.0.1", 80, false), "loopback");
  assert.equal(broken.check("192.0.2.2", 80, false), undefined);
});

Deno.test("guard: container networks that cannot be read fail closed: every private address", () => {
  let fail = true;
  let now = 0;
  const g = new DestinationGuard({
    interfaceAddresses: () => {
      if (fail) throw new Deno.errors.PermissionDenied("no sys permission");
      return ["192.0.2.2"];
    },
    containerNetworks: ["172.18.0.1/16"],
    refreshMs: 1_000,
    now: () => now,
  });
  for (const a of ["172.17.0.2", "10.88.0.5", "192.168.16.2", "fd00::5", "::ffff:172.20.0.3"]) {
    assert.equal(g.check(a, 80, false), "container", a);
  }
  assert.equal(g.check("172.17.0.2", 80, true), undefined, "a rule naming it still may");
  assert.equal(g.check("93.184.215.14", 443, false), undefined, "a public address");
  // Once read, the networks read are the ones protected; a later failure keeps them.
  fail = false;
  now = 1_000;
  assert.equal(g.check("172.17.0.2", 80, false), undefined);
  assert.equal(g.check("172.18.0.2", 80, false), "container");
  fail = true;
  now = 2_000;
  assert.equal(g.check("172.17.0.2", 80, false), undefined);
  assert.equal(g.check("172.18.0.2", 80, false), "container");
});

Deno.test("guard: the real interface list is used by default", () => {
  const own = Deno.networkInterfaces().map((i) => i.address).filter((a) =>
    classifyAddress(a) === undefined
  );
  const g = new DestinationGuard({ listenAddress: "127.0.0.1", listenPort: 1 });
  for (const a of own) assert.equal(g.check(a, 80, false), "host", a);
});

const rule = (pattern: string, kind: Rule["kind"], verdict: "allow" | "deny" = "allow"): Rule => ({
  pattern,
  kind,
  verdict,
  action: kind === "url" ? `${verdict}-url` : `${verdict}-domain`,
});

Deno.test("guard: which decisions exempt a destination", () => {
  const d = (r: Rule | undefined, source: "rule" | "prompt" = "rule") => ({
    action: "allow" as const,
    source,
    reason: "x",
    rule: r,
  });
  assert.ok(decisionExempts(d(rule("127.0.0.1", "host")), "127.0.0.1"));
  assert.ok(decisionExempts(d(rule("0x7f.1", "host")), "127.0.0.1"));
  assert.ok(decisionExempts(d(rule("localhost", "host")), "localhost"));
  assert.ok(decisionExempts(d(rule("[::1]", "host")), "[::1]"));
  assert.ok(decisionExempts(d(rule("127.0.0.1:5432", "host")), "127.0.0.1"));
  assert.ok(decisionExempts(d(rule("http://127.0.0.1:3000/api", "url")), "127.0.0.1"));
  assert.ok(!decisionExempts(d(rule("127.0.0.1", "host")), "127.0.0.2"));
  assert.ok(!decisionExempts(d(rule("*.localhost", "wildcard")), "a.localhost"));
  assert.ok(!decisionExempts(d(rule("*", "any")), "127.0.0.1"));
  assert.ok(!decisionExempts(d(undefined, "prompt"), "127.0.0.1"));
  // A DNS name's answer can change after the rule was written (rebinding).
  assert.ok(!decisionExempts(d(rule("attacker.test", "host")), "attacker.test"));
});

Deno.test("resolver: --resolve entries, IP literals, localhost", async () => {
  assert.deepEqual(parseResolveEntry("Origin.Test.:443:127.0.0.1"), {
    key: "origin.test:443",
    address: "127.0.0.1",
  });
  assert.deepEqual(parseResolveEntry("[::1]:80:[::1]"), { key: "[::1]:80", address: "::1" });
  assert.deepEqual(parseResolveEntry("a.test:80:2130706433"), {
    key: "a.test:80",
    address: "127.0.0.1",
  });
  assert.throws(() => parseResolveEntry("a.test:80"), /expected HOST:PORT:ADDRESS/);
  assert.throws(() => parseResolveEntry("a.test:99999:1.2.3.4"), /invalid port/);
  assert.throws(() => parseResolveEntry("a.test:80:b.test"), /not an IP address/);

  const r = new Resolver({ map: new Map([["A.test:8080", "[::1]"]]) });
  assert.deepEqual(await r.resolve("a.test", 8080), [{ address: "::1", trusted: true }]);
  assert.deepEqual(await r.resolve("127.0.0.1", 80), [{ address: "127.0.0.1", trusted: false }]);
  assert.deepEqual(await r.resolve("[::1]", 80), [{ address: "::1", trusted: false }]);
  assert.deepEqual((await r.resolve("localhost", 80)).map((a) => a.address), ["127.0.0.1", "::1"]);
  assert.deepEqual((await r.resolve("x.localhost", 80)).map((a) => a.address), [
    "127.0.0.1",
    "::1",
  ]);
});

Deno.test("resolver: DNS answers with an IPv6 zone id are skipped, not a client error", () => {
  assert.equal(dialableAnswer("fe80::1%eth0"), undefined);
  assert.equal(dialableAnswer("[fe80::1%25eth0]"), undefined);
  assert.equal(dialableAnswer("not an address"), undefined);
  assert.equal(dialableAnswer("fe80::1"), "fe80::1");
  assert.equal(dialableAnswer("::ffff:127.0.0.1"), "127.0.0.1");
  assert.equal(dialableAnswer("10.0.0.1"), "10.0.0.1");
});

Deno.test("url: absolute-form parsing rejects userinfo, other schemes, bad hosts", () => {
  assert.deepEqual(parseAbsoluteForm("http://A.Test:80/x?y"), {
    scheme: "http",
    host: "a.test",
    port: 80,
    path: "/x?y",
  });
  assert.deepEqual(parseAbsoluteForm("HTTP://a.test:8080"), {
    scheme: "http",
    host: "a.test",
    port: 8080,
    path: "/",
  });
  assert.equal(parseAbsoluteForm("http://a.test?q=1").path, "/?q=1");
  assert.equal(parseAbsoluteForm("http://0x7f.1/").host, "127.0.0.1");
  assert.equal(parseAbsoluteForm("http://[::ffff:127.0.0.1]/").host, "127.0.0.1");
  for (
    const bad of [
      "http://user:pw@a.test/",
      "http://a.test@b.test/",
      "ftp://a.test/",
      "file:///etc/passwd",
      "http:///x",
      "http://a.test:0/",
      "http://a.test:70000/",
      "http://a.test:/",
      "http://a b/",
      "http://a%2etest/",
      "http://a.test/#frag",
      "http://a.test/a\\b",
      "//a.test/",
    ]
  ) {
    assert.throws(() => parseAbsoluteForm(bad), Error, bad);
  }
});

Deno.test("url: paths are normalised so rules see what is forwarded", () => {
  const table: [string, string][] = [
    ["/a/b", "/a/b"],
    ["/a/./b", "/a/b"],
    ["/a/../b", "/b"],
    ["/a/%2e%2E/b", "/b"],
    ["/%61dmin", "/admin"],
    ["/a%2fb", "/a%2Fb"],
    ["/a%7eb?x=%7e&y=%2f", "/a~b?x=~&y=%2F"],
    ["//evil.test/x", "//evil.test/x"],
    ["/a b", "/a%20b"],
    ['/q?a="<x>"', "/q?a=%22%3Cx%3E%22"],
    ["/?", "/?"],
  ];
  for (const [raw, want] of table) assert.equal(normalisePath(raw), want, raw);
  assert.throws(() => normalisePath("a"), /must start with/);
  assert.equal(formatUrl("https", "a.test", 443, "/x"), "https://a.test/x");
  assert.equal(formatUrl("http", "[::1]", 8080, "/"), "http://[::1]:8080/");
});

Deno.test("guard: addresses in this host's container networks are protected as another container", () => {
  const g = new DestinationGuard({
    listenAddress: "127.0.0.1",
    listenPort: 8080,
    interfaceAddresses: ["172.17.0.1", "172.19.0.1", "192.0.2.2"],
    containerNetworks: [
      "172.17.0.1/16",
      "172.19.0.1/20",
      "fd00:c0::1/64",
      "nonsense",
      "10.0.0.1/0",
    ],
  });
  assert.equal(g.check("172.17.0.1", 80, false), "host", "the gateway is this host");
  assert.equal(g.check("172.17.0.2", 80, false), "container");
  assert.equal(g.check("172.17.255.254", 80, false), "container");
  assert.equal(g.check("172.19.15.9", 7777, false), "container", "a /20");
  assert.equal(g.check("172.19.16.1", 7777, false), undefined, "just outside the /20");
  assert.equal(g.check("::ffff:172.17.0.5", 80, false), "container", "an IPv6 spelling");
  assert.equal(g.check("64:ff9b::172.17.0.5", 80, false), "container", "NAT64");
  assert.equal(g.check("2002:ac11:5::1", 80, false), "container", "wrapped in 6to4");
  assert.equal(g.check("fd00:c0::42", 80, false), "container", "an IPv6 container network");
  assert.equal(g.check("fd00:c1::42", 80, false), undefined);
  assert.equal(g.check("10.1.2.3", 80, false), undefined, "a /0 is never a container network");
  assert.equal(g.check("192.0.2.3", 80, false), undefined, "eth0's LAN is not one");
  assert.equal(g.check("172.17.0.2", 80, true), undefined, "an exact rule naming it may");
  assert.throws(
    () => g.assert("172.17.0.2", "172.17.0.2", 80, false),
    /^DestinationRefusedError: destination protection: 172\.17\.0\.2 is in a container network of this host$/,
  );
});

Deno.test("guard: by default the container networks are the container bridges' subnets", () => {
  const bridges = Deno.networkInterfaces().filter((i) =>
    /^(docker\d+|br-[0-9a-f]{12}|podman\d+|cni-podman\d+)$/.test(i.name) && i.family === "IPv4"
  );
  const g = new DestinationGuard({ listenAddress: "127.0.0.1", listenPort: 1 });
  for (const b of bridges) {
    // The gateway's neighbour: another container's address on that bridge.
    const [a, b2, c, d] = b.address.split(".").map(Number);
    const other = `${a}.${b2}.${c}.${d === 2 ? 3 : 2}`;
    assert.equal(g.check(other, 80, false), "container", `${b.name} ${b.cidr}: ${other}`);
  }
  const lan = Deno.networkInterfaces().filter((i) => i.name === "eth0" && i.family === "IPv4");
  for (const i of lan) {
    const [a, b2, c, d] = i.address.split(".").map(Number);
    const other = `${a}.${b2}.${c}.${d === 2 ? 3 : 2}`;
    assert.equal(g.check(other, 80, false), undefined, `${i.name} is not a container network`);
  }
});
