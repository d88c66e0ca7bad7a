/**
 * Adversarial end-to-end test of log integrity: the real CLI
 * (`netmonitor run --non-interactive`) takes a series of hostile requests;
 * network-access.log must then hold exactly one parseable line per request,
 * with a sensible decision, and no secret from any of them -- neither in the
 * log nor on the terminal.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { startOrigin } from "../_helpers/origin.ts";
import { attempt, expectSilentClose, latin1 } from "../_helpers/attack.ts";
import { cliCommand, rulesFile, withDataDir } from "./_cli.ts";

interface Running {
  port: number;
  out: { text: string };
  stop(): Promise<number>;
}

async function startRun(dataDir: string, args: string[]): Promise<Running> {
  const child = cliCommand([
    "run",
    "--port",
    "0",
    "--non-interactive",
    "--default",
    "deny",
    ...args,
  ], {
    dataDir,
  }).spawn();
  const out = { text: "" };
  const pump = (async () => {
    for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) out.text += chunk;
  })();
  const err = new Response(child.stderr).text();
  const end = Date.now() + 30_000;
  let m: RegExpMatchArray | null = null;
  while (Date.now() < end && !(m = out.text.match(/Listening on http:\/\/127\.0\.0\.1:(\d+)\n/))) {
    await new Promise((r) => setTimeout(r, 20));
  }
  if (!m) {
    child.kill("SIGKILL");
    await child.status;
    await pump;
    throw new Error(`netmonitor run did not start: ${out.text}\n${await err}`);
  }
  return {
    port: Number(m[1]),
    out,
    async stop() {
      try {
        child.kill("SIGTERM");
      } catch { /* exited */ }
      const s = await child.status;
      await pump;
      await err;
      return s.code;
    },
  };
}

/** Secrets sent in the requests below; none may appear in the log or on the terminal. */
const SECRETS = {
  queryToken: "QTOKENsecret000111",
  authorization: "AUTHsecret222333",
  cookie: "COOKIEsecret444555",
  proxyAuth: "PROXYAUTHsecret666",
  urlPassword: "URLPWsecret777888",
  apiKey: "APIKEYsecret999000",
  pathToken: "ghp_PATHTOKENsecret1234567890abcdef",
  hostPassword: "HOSTPWsecret121212",
  connectPassword: "CONNPWsecret343434",
  badLineToken: "BADLINEsecret565656",
  deniedToken: "DENIEDsecret787878",
  password: "PASSWORDsecret909090",
};

Deno.test("e2e attack: hostile requests give one log line each and leak no secret", async (t) => {
  const origin = await startOrigin();
  const p = origin.port;
  await withDataDir(async (dir) => {
    await Deno.writeTextFile(
      rulesFile(dir),
      JSON.stringify({ "allowed.test": "allow-domain", "denied.test": "deny-domain" }, null, 2),
    );
    const run = await startRun(dir, [
      "--no-intercept",
      "--resolve",
      `allowed.test:${p}:127.0.0.1`,
      "--resolve",
      `denied.test:${p}:127.0.0.1`,
    ]);
    const A = `allowed.test:${p}`;
    const D = `denied.test:${p}`;
    const S = SECRETS;
    // [name, raw request, expected status, expected decision]
    const cases: [string, string, number, string][] = [
      [
        "allowed, with secrets in query and headers",
        `GET http://${A}/hello?token=${S.queryToken}&x=1 HTTP/1.1\r\nHost: ${A}\r\n` +
        `Authorization: Bearer ${S.authorization}\r\nCookie: session=${S.cookie}\r\n` +
        `Proxy-Authorization: Basic ${S.proxyAuth}\r\nConnection: close\r\n\r\n`,
        200,
        "allow",
      ],
      [
        "api_key in the query",
        `GET http://${A}/hello?api_key=${S.apiKey} HTTP/1.1\r\nHost: ${A}\r\nConnection: close\r\n\r\n`,
        200,
        "allow",
      ],
      [
        "password in the query",
        `GET http://${A}/hello?password=${S.password} HTTP/1.1\r\nHost: ${A}\r\nConnection: close\r\n\r\n`,
        200,
        "allow",
      ],
      [
        "token as a path segment",
        `GET http://${A}/repos/${S.pathToken}/x HTTP/1.1\r\nHost: ${A}\r\nConnection: close\r\n\r\n`,
        404,
        "allow",
      ],
      [
        "denied, token in the query",
        `GET http://${D}/x?access_token=${S.deniedToken} HTTP/1.1\r\nHost: ${D}\r\nConnection: close\r\n\r\n`,
        403,
        "deny",
      ],
      [
        "credentials in the URL",
        `GET http://user:${S.urlPassword}@${A}/ HTTP/1.1\r\nHost: ${A}\r\n\r\n`,
        400,
        "error",
      ],
      [
        "credentials in the Host header",
        `GET http://${A}/ HTTP/1.1\r\nHost: user:${S.hostPassword}@${A}\r\n\r\n`,
        400,
        "error",
      ],
      [
        "credentials in a CONNECT target",
        `CONNECT user:${S.connectPassword}@${A} HTTP/1.1\r\n\r\n`,
        400,
        "error",
      ],
      [
        "malformed request line with a token",
        `GET http://${A}/?token=${S.badLineToken} x HTTP/1.1\r\nHost: ${A}\r\n\r\n`,
        400,
        "error",
      ],
      ["Host mismatch", `GET http://${A}/m HTTP/1.1\r\nHost: ${D}\r\n\r\n`, 403, "deny"],
      [
        "CL.TE smuggling",
        `POST http://${A}/echo HTTP/1.1\r\nHost: ${A}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
        400,
        "error",
      ],
      [
        "odd loopback spelling",
        `GET http://2130706433:${p}/ HTTP/1.1\r\nHost: 2130706433:${p}\r\nConnection: close\r\n\r\n`,
        403,
        "deny",
      ],
      [
        "NUL in a header",
        `GET http://${A}/ HTTP/1.1\r\nHost: ${A}\r\nX: a\x00b\r\n\r\n`,
        400,
        "error",
      ],
      ["CONNECT to a denied host", `CONNECT ${D} HTTP/1.1\r\n\r\n`, 403, "deny"],
      [
        "CONNECT, then plain HTTP in the tunnel",
        `CONNECT ${A} HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\nHost: ${A}\r\n\r\n`,
        200,
        "deny",
      ],
    ];
    let logText = "";
    try {
      for (const [name, req, status] of cases) {
        if (name.startsWith("CONNECT, then")) {
          const r = await expectSilentClose(run.port, latin1(req), 5000);
          assert.match(r.text, /^HTTP\/1\.1 200 /, name);
          continue;
        }
        const a = await attempt(run.port, req, { closeMs: 300 });
        assert.equal(a.responses[0].status, status, `${name}: ${a.responses[0].statusLine}`);
      }
    } finally {
      assert.equal(await run.stop(), 0, "exit code 0 on SIGTERM");
      await origin.close();
      logText = await Deno.readTextFile(join(dir, "network-access.log")).catch(() => "");
    }
    const lines = logText.split("\n").filter((l) => l !== "");
    await t.step("exactly one parseable log line per request", () => {
      assert.equal(lines.length, cases.length, logText);
      const recs = lines.map((l) => JSON.parse(l));
      const decisions = recs.map((r) => r.decision).sort();
      assert.deepEqual(decisions, cases.map((c) => c[3]).sort(), logText);
      for (const r of recs) {
        assert.ok(
          typeof r.reason === "string" && r.reason !== "",
          `a reason: ${JSON.stringify(r)}`,
        );
        assert.ok(["rule", "policy", "error", "default"].includes(r.source), JSON.stringify(r));
      }
    });
    for (const [what, secret] of Object.entries(SECRETS)) {
      await t.step(`no ${what} secret in the log or on the terminal`, () => {
        const line = lines.find((l) => l.includes(secret));
        const term = run.out.text.split("\n").find((l) => l.includes(secret));
        assert.ok(
          line === undefined && term === undefined,
          `the ${what} leaks:\n  log: ${line ?? "(clean)"}\n  terminal: ${term ?? "(clean)"}`,
        );
      });
    }
  });
});
