/**
 * Adversarial tests: host confusion in plain HTTP proxy requests. An
 * attacker holding a rule for allowed.test tries to reach denied.test (both
 * names lead to the same real loopback origin, so a bypass would show up in
 * the origin's request list). Every attempt must be refused, the origin must
 * never see the smuggled path, and exactly one record must say what happened.
 */

import assert from "node:assert/strict";
import { attempt, newRecords, seenPaths, startAttackEnv } from "../_helpers/attack.ts";

interface Case {
  name: string;
  /** The raw request; `{A}` is allowed.test:P, `{D}` denied.test:P, `{P}` the port. */
  req: string;
  status: number;
  /** Expected record: decision and source. */
  decision: "deny" | "error";
  source: "policy" | "error" | "rule" | "default";
}

const cases: Case[] = [
  {
    name: "absolute URL allowed, Host denied",
    req: "GET http://{A}/m HTTP/1.1\r\nHost: {D}\r\n\r\n",
    status: 403,
    decision: "deny",
    source: "policy",
  },
  {
    name: "absolute URL denied, Host allowed",
    req: "GET http://{D}/m HTTP/1.1\r\nHost: {A}\r\n\r\n",
    status: 403,
    decision: "deny",
    source: "policy",
  },
  {
    name: "two Host headers, allowed then denied",
    req: "GET http://{A}/m HTTP/1.1\r\nHost: {A}\r\nHost: {D}\r\n\r\n",
    status: 400,
    decision: "error",
    source: "error",
  },
  {
    name: "two identical Host headers",
    req: "GET http://{A}/m HTTP/1.1\r\nHost: {A}\r\nHost: {A}\r\n\r\n",
    status: 400,
    decision: "error",
    source: "error",
  },
  {
    name: "Host as a list",
    req: "GET http://{A}/m HTTP/1.1\r\nHost: {A}, {D}\r\n\r\n",
    status: 400,
    decision: "error",
    source: "error",
  },
  {
    name: "Host with a different port",
    req: "GET http://{A}/m HTTP/1.1\r\nHost: allowed.test:1\r\n\r\n",
    status: 403,
    decision: "deny",
    source: "policy",
  },
  {
    name: "Host with two ports",
    req: "GET http://{A}/m HTTP/1.1\r\nHost: {A}:80\r\n\r\n",
    status: 400,
    decision: "error",
    source: "error",
  },
  {
    name: "Host with an empty port",
    req: "GET http://{A}/m HTTP/1.1\r\nHost: allowed.test:\r\n\r\n",
    status: 400,
    decision: "error",
    source: "error",
  },
  {
    name: "Host with port 0",
    req: "GET http://{A}/m HTTP/1.1\r\nHost: allowed.test:0\r\n\r\n",
    status: 400,
    decision: "error",
    source: "error",
  },
  {
    name: "Host with userinfo",
    req: "GET http://{A}/m HTTP/1.1\r\nHost: user@{A}\r\n\r\n",
    status: 400,
    decision: "error",
    source: "error",
  },
  {
    name: "URL userinfo naming the allowed host (http://allowed.test@denied.test/)",
    req: "GET http://allowed.test@{D}/m HTTP/1.1\r\nHost: {D}\r\n\r\n",
    status: 400,
    decision: "error",
    source: "error",
  },
  {
    name: "URL userinfo with a port (http://allowed.test:P@denied.test/)",
    req: "GET http://{A}@{D}/m HTTP/1.1\r\nHost: {D}\r\n\r\n",
    status: 400,
    decision: "error",
    source: "error",
  },
  {
    name: "backslash before @ (http://allowed.test\\@denied.test/)",
    req: "GET http://allowed.test\\@{D}/m HTTP/1.1\r\nHost: {D}\r\n\r\n",
    status: 400,
    decision: "error",
    source: "error",
  },
  {
    name: "backslash as a path separator (http://denied.test\\.allowed.test/)",
    req: "GET http://denied.test\\.{A}/m HTTP/1.1\r\nHost: {A}\r\n\r\n",
    status: 400,
    decision: "error",
    source: "error",
  },
  {
    name: "backslash right after the authority (http://allowed.test:P\\@denied.test)",
    req: "GET http://{A}\\@{D}/m HTTP/1.1\r\nHost: {A}\r\n\r\n",
    status: 400,
    decision: "error",
    source: "error",
  },
  {
    name: "fragment hiding the real host (http://denied.test#@allowed.test/)",
    req: "GET http://{D}#@{A}/m HTTP/1.1\r\nHost: {A}\r\n\r\n",
    status: 400,
    decision: "error",
    source: "error",
  },
  {
    name: "query hiding the real host (http://denied.test?@allowed.test/): decided as denied.test",
    req: "GET http://{D}?@{A}/m HTTP/1.1\r\nHost: {D}\r\n\r\n",
    status: 403,
    decision: "deny",
    source: "rule",
  },
  {
    name: "percent-encoded host",
    req: "GET http://%61llowed.test:{P}/m HTTP/1.1\r\nHost: {A}\r\n\r\n",
    status: 400,
    decision: "error",
    source: "error",
  },
  {
    name: "percent-encoded dot in the denied host",
    req: "GET http://denied%2etest:{P}/m HTTP/1.1\r\nHost: denied%2etest:{P}\r\n\r\n",
    status: 400,
    decision: "error",
    source: "error",
  },
  {
    name: "denied host with a trailing dot",
    req: "GET http://denied.test.:{P}/m HTTP/1.1\r\nHost: denied.test.:{P}\r\n\r\n",
    status: 403,
    decision: "deny",
    source: "rule",
  },
  {
    name: "denied host in upper case",
    req: "GET http://DENIED.TEST:{P}/m HTTP/1.1\r\nHost: DENIED.TEST:{P}\r\n\r\n",
    status: 403,
    decision: "deny",
    source: "rule",
  },
  {
    name: "denied host, upper-case scheme",
    req: "GET HTTP://{D}/m HTTP/1.1\r\nHost: {D}\r\n\r\n",
    status: 403,
    decision: "deny",
    source: "rule",
  },
  {
    name: "allowed name as a prefix label of another host",
    req:
      "GET http://allowed.test.denied.test:{P}/m HTTP/1.1\r\nHost: allowed.test.denied.test:{P}\r\n\r\n",
    status: 403,
    decision: "deny",
    source: "default",
  },
  {
    name: "IDN homograph in UTF-8 in the request line (Cyrillic a)",
    req: "GET http://\xd0\xb0llowed.test:{P}/m HTTP/1.1\r\nHost: {A}\r\n\r\n",
    status: 400,
    decision: "error",
    source: "error",
  },
  {
    name: "IDN homograph in UTF-8 in the Host header",
    req: "GET http://{A}/m HTTP/1.1\r\nHost: \xd0\xb0llowed.test:{P}\r\n\r\n",
    status: 403,
    decision: "deny",
    source: "policy",
  },
  {
    name: "IDN homograph as punycode (xn--llowed-2fg.test) is another host",
    req: "GET http://xn--llowed-2fg.test:{P}/m HTTP/1.1\r\nHost: xn--llowed-2fg.test:{P}\r\n\r\n",
    status: 403,
    decision: "deny",
    source: "default",
  },
  {
    name: "https:// absolute URL in plain HTTP (must use CONNECT)",
    req: "GET https://{A}/m HTTP/1.1\r\nHost: {A}\r\n\r\n",
    status: 400,
    decision: "error",
    source: "error",
  },
  {
    name: "other scheme",
    req: "GET ftp://{A}/m HTTP/1.1\r\nHost: {A}\r\n\r\n",
    status: 400,
    decision: "error",
    source: "error",
  },
  {
    name: "empty authority (http:///denied.test/m)",
    req: "GET http:///{D}/m HTTP/1.1\r\nHost: {D}\r\n\r\n",
    status: 400,
    decision: "error",
    source: "error",
  },
  {
    name: "single slash (http:/denied.test/m)",
    req: "GET http:/{D}/m HTTP/1.1\r\nHost: {D}\r\n\r\n",
    status: 400,
    decision: "error",
    source: "error",
  },
  {
    name: "origin-form request routed by Host only",
    req: "GET /m HTTP/1.1\r\nHost: {A}\r\n\r\n",
    status: 400,
    decision: "error",
    source: "error",
  },
  {
    name: "scheme-relative origin-form (//denied.test/m)",
    req: "GET //{D}/m HTTP/1.1\r\nHost: {A}\r\n\r\n",
    status: 400,
    decision: "error",
    source: "error",
  },
  {
    name: "asterisk-form",
    req: "OPTIONS * HTTP/1.1\r\nHost: {A}\r\n\r\n",
    status: 400,
    decision: "error",
    source: "error",
  },
  {
    name: "missing Host in HTTP/1.1",
    req: "GET http://{A}/m HTTP/1.1\r\n\r\n",
    status: 400,
    decision: "error",
    source: "error",
  },
  {
    name: "HTTP/1.0 absolute URL denied, Host allowed",
    req: "GET http://{D}/m HTTP/1.0\r\nHost: {A}\r\n\r\n",
    status: 403,
    decision: "deny",
    source: "policy",
  },
  {
    name: "IPv6 literal Host for a name URL",
    req: "GET http://{A}/m HTTP/1.1\r\nHost: [::1]:{P}\r\n\r\n",
    status: 403,
    decision: "deny",
    source: "policy",
  },
];

Deno.test("attack host: every Host/URL confusion is refused, the origin sees nothing, one record each", async (t) => {
  const env = await startAttackEnv();
  const { p, proxy, origin } = env;
  const fill = (s: string) =>
    s.replaceAll("{A}", env.allowed).replaceAll("{D}", env.denied).replaceAll("{P}", String(p));
  try {
    for (const c of cases) {
      await t.step(c.name, async () => {
        const before = proxy.records.length;
        const seen = origin.requests.length;
        const req = fill(c.req);
        const a = await attempt(proxy.port, req);
        const r = a.responses[0];
        assert.equal(r.status, c.status, `${c.name}: ${r.statusLine}\n${r.text}`);
        if (c.status === 400) assert.ok(a.closed, "a malformed request closes the connection");
        if (c.status === 403) {
          assert.match(r.headers.get("x-netmonitor-decision") ?? "", /^deny; reason="/);
        }
        assert.equal(origin.requests.length, seen, `${c.name}: the origin was reached`);
        const [rec] = await newRecords(proxy, before, 1);
        assert.equal(rec.status, c.status);
        assert.equal(rec.decision, c.decision, `${c.name}: ${JSON.stringify(rec)}`);
        assert.equal(rec.source, c.source, `${c.name}: ${JSON.stringify(rec)}`);
        assert.ok(rec.method === "GET" || rec.method === "OPTIONS", JSON.stringify(rec));
        if (c.decision === "deny") assert.notEqual(rec.reason, "");
      });
    }
    // Positive control: the allowed host in odd but equivalent spellings works,
    // so the refusals above are not just a broken setup.
    await t.step("control: equivalent spellings of the allowed host are served", async () => {
      const a = await attempt(
        proxy.port,
        `GET http://ALLOWED.Test.:${p}/hello HTTP/1.1\r\nHost: allowed.TEST:${p}\r\nConnection: close\r\n\r\n`,
      );
      assert.equal(a.responses[0].status, 200);
      assert.equal(a.responses[0].text, "hello from origin");
      assert.deepEqual(seenPaths(origin), ["/hello"]);
    });
  } finally {
    await env.close();
  }
});

Deno.test("attack host: a URL deny rule is not dodged by path spellings", async (t) => {
  const env = await startAttackEnv({
    extraRules: (p) => ({ [`http://allowed.test:${p}/admin`]: "deny" }),
  });
  try {
    const spellings = [
      "/admin",
      "/admin?x=1",
      "/./admin",
      "/public/../admin",
      "/%61dmin",
      "/%2e/admin",
      "/public/%2e%2e/admin",
      "//admin",
      "/admin#frag",
      // nginx and Python's http.server on Unix decode %2F but keep %5C a plain
      // character: to them these are /admin.
      "/a%5Cb/..%2Fadmin",
      "/x%5Cy%2F..%2Fadmin",
    ];
    for (const s of spellings) {
      await t.step(s, async () => {
        const before = env.proxy.records.length;
        const a = await attempt(
          env.proxy.port,
          `GET http://${env.allowed}${s} HTTP/1.1\r\nHost: ${env.allowed}\r\n\r\n`,
        );
        const status = a.responses[0].status;
        assert.ok(status === 403 || status === 400, `${s}: ${a.responses[0].statusLine}`);
        const [rec] = await newRecords(env.proxy, before, 1);
        assert.notEqual(rec.decision, "allow");
      });
    }
    assert.ok(
      !seenPaths(env.origin).some((x) => x.toLowerCase().includes("admin")),
      `origin saw ${JSON.stringify(seenPaths(env.origin))}`,
    );
  } finally {
    await env.close();
  }
});

Deno.test("attack host: a URL allow rule is not stretched by a stray % next to escapes", async (t) => {
  const env = await startAttackEnv({
    extraRules: (p) => ({ [`http://urlonly.test:${p}/ok`]: "allow-url" }),
    names: { allowed: "allowed.test", denied: "denied.test", others: ["urlonly.test"] },
  });
  const h = `urlonly.test:${env.p}`;
  try {
    // Before the fix the proxy sent /secret/%2e%2e/ok, which routers that do not
    // resolve escaped dots (Express, object stores) serve as /secret/...
    for (const s of ["/secret/%%32e%%32e/ok", "/secret/%%32%65%%32%65/ok", "/x/%%32e%%32e/ok"]) {
      await t.step(s, async () => {
        const before = env.proxy.records.length;
        const a = await attempt(
          env.proxy.port,
          `GET http://${h}${s} HTTP/1.1\r\nHost: ${h}\r\n\r\n`,
        );
        const [rec] = await newRecords(env.proxy, before, 1);
        assert.notEqual(rec.decision, "allow", `${s}: ${a.responses[0].statusLine}`);
      });
    }
    assert.deepEqual(seenPaths(env.origin), []);
    const ok = await attempt(env.proxy.port, `GET http://${h}/ok HTTP/1.1\r\nHost: ${h}\r\n\r\n`);
    assert.equal(ok.responses[0].status, 404, "allowed: the origin answered (it has no /ok)");
    assert.deepEqual(seenPaths(env.origin), ["/ok"]);
  } finally {
    await env.close();
  }
});
