/**
 * The original design's Examples 1-3, run as written against a real Docker
 * engine, with local stand-ins for the internet hosts: `pip` and `claude` in
 * the container are small scripts that fetch what the real tools would, and
 * pypi.org, files.pythonhosted.org, github.com and api.anthropic.com are
 * mapped by the proxy's --resolve to this test's loopback origins before any
 * request is made. Nothing leaves the machine.
 */

import assert from "node:assert/strict";
import {
  dockerUnavailable,
  exec,
  type Monitored,
  type Prompter,
  readLog,
  runScript,
  setupMonitored,
  startPrompter,
  TEST_IMAGE,
  uniqueName,
} from "../_helpers/docker.ts";

const unavailable = await dockerUnavailable();

/** Every name a stand-in tool may ask for; each is mapped to a local origin. */
const NAMES = [
  "pypi.org",
  "files.pythonhosted.org",
  "github.com",
  "api.anthropic.com",
  "evil.test",
];

/** Writes the stand-in tools and returns `docker run` arguments that put them on PATH. */
async function standInTools(m: Monitored): Promise<string> {
  const o = m.origins;
  const pip = `#!/bin/sh
# Stand-in for "pip install PACKAGE": the index, then the file (what pip fetches).
[ "$1" = install ] || { echo "usage: pip install PACKAGE" >&2; exit 2; }
set -e
curl -sS -f -m 60 ${o.url("https", "pypi.org", '/simple/"$2"/')}
curl -sS -f -m 60 ${
    o.url("https", "files.pythonhosted.org", '/packages/"$2"-2.32.3-py3-none-any.whl')
  }
echo "Successfully installed $2"
`;
  const claude = `#!/bin/sh
# Stand-in for an AI tool: one API call with the prompt.
curl -sS -f -m 120 -X POST -d "$*" ${o.url("https", "api.anthropic.com", "/v1/messages")}
`;
  await Deno.mkdir(`${m.dir}/bin`);
  await Deno.writeTextFile(`${m.dir}/bin/pip`, pip, { mode: 0o755 });
  await Deno.writeTextFile(`${m.dir}/bin/claude`, claude, { mode: 0o755 });
  return `-v ${m.dir}/bin/pip:/usr/local/bin/pip:ro -v ${m.dir}/bin/claude:/usr/local/bin/claude:ro`;
}

/** `./docker/run-monitored.sh` with the container's command (the user's typing in the container). */
async function runMonitored(m: Monitored, name: string, command: string) {
  const env = { ...m.env, NETMONITOR_DOCKER_ARGS: await standInTools(m) };
  return {
    env,
    result: runScript("run-monitored.sh", ["--name", name, TEST_IMAGE, "sh", "-c", command], env, {
      timeoutMs: 180_000,
    }),
  };
}

Deno.test({
  name: "docker example 1: analyze package installation (pip install requests)",
  ignore: unavailable !== null,
  sanitizeResources: false, // Deno.serve's TLS listener closes asynchronously after shutdown()
  async fn() {
    // "Whitelist Common Services", as the Common Workflows section writes the rules file.
    const m = await setupMonitored({
      names: NAMES,
      rules: {
        "github.com": "allow-domain",
        "*.github.com": "allow-domain",
        "pypi.org": "allow-domain",
        "files.pythonhosted.org": "allow-domain",
        "npmjs.org": "allow-domain",
        "registry.npmjs.org": "allow-domain",
      },
    });
    const name = uniqueName("ex1");
    try {
      const { env, result } = await runMonitored(m, name, "pip install requests");
      const res = await result;
      assert.equal(res.code, 0, res.stdout + res.stderr);
      assert.match(res.stdout, /origin https pypi\.org(:\d+)? GET \/simple\/requests\//);
      assert.match(
        res.stdout,
        /origin https files\.pythonhosted\.org(:\d+)? GET \/packages\/requests-/,
      );
      assert.match(res.stdout, /Successfully installed requests/);
      // "Observe all network requests": the log (grep by host) and the stats.
      const grep = await exec("grep", ["pypi.org", `${m.dataDir}/network-access.log`]);
      assert.equal(grep.code, 0);
      assert.match(grep.stdout, /https:\/\/pypi\.org(:\d+)?\/simple\/requests\//);
      const stats = await runScript("manage-firewall.sh", ["--stats"], env);
      assert.equal(stats.code, 0, stats.stderr);
      assert.match(stats.stdout, /pypi\.org/);
      assert.match(stats.stdout, /files\.pythonhosted\.org/);
    } finally {
      await m.cleanup([name]);
    }
  },
});

Deno.test({
  name: "docker example 2: restrict to essential services only (github.com, pypi.org, * deny)",
  ignore: unavailable !== null,
  sanitizeResources: false,
  async fn() {
    const m = await setupMonitored({
      names: NAMES,
      rules: { "github.com": "allow-domain", "pypi.org": "allow-domain", "*": "deny" },
    });
    const name = uniqueName("ex2");
    try {
      const o = m.origins;
      const code = (url: string, label: string) =>
        `echo "${label}=$(curl -s -o /dev/null -m 60 -w '%{http_code}/%{http_connect}' ${url})"`;
      const { result } = await runMonitored(
        m,
        name,
        [
          code(o.url("https", "github.com", "/user/repo"), "github"),
          code(o.url("https", "pypi.org", "/simple/"), "pypi"),
          code(o.url("https", "files.pythonhosted.org", "/packages/x.whl"), "files"),
          code(o.url("http", "evil.test", "/exfiltrate"), "evil-http"),
          code(o.url("https", "api.anthropic.com", "/v1/messages"), "anthropic"),
        ].join("; "),
      );
      const res = await result;
      assert.equal(res.code, 0, res.stdout + res.stderr);
      assert.match(res.stdout, /github=200\//);
      assert.match(res.stdout, /pypi=200\//);
      // Everything else: denied by "*" at once (no prompt, no waiting).
      assert.match(res.stdout, /files=000\/403/);
      assert.match(res.stdout, /evil-http=403\//);
      assert.match(res.stdout, /anthropic=000\/403/);
      const records = await readLog(m.dataDir);
      for (const host of ["files.pythonhosted.org", "evil.test", "api.anthropic.com"]) {
        const rec = records.find((r) => r.host === host);
        assert.ok(rec, `${host} not logged`);
        assert.equal(rec.decision, "deny");
        assert.equal(rec.source, "rule");
        assert.match(String(rec.reason), /"\*"/);
      }
    } finally {
      await m.cleanup([name]);
    }
  },
});

Deno.test({
  name: "docker example 3: audit AI tool network usage (clean rules, prompt, stats)",
  ignore: unavailable !== null,
  sanitizeResources: false,
  async fn() {
    const m = await setupMonitored({ names: NAMES, runArgs: ["--prompt-timeout", "90s"] });
    const name = uniqueName("ex3");
    let prompter: Prompter | undefined;
    try {
      // "Start with clean rules": rm ~/docker-agent-data/network-rules.json
      await Deno.remove(`${m.dataDir}/network-rules.json`).catch(() => {});
      const { env, result } = await runMonitored(m, name, 'claude "Write hello world in Python"');
      prompter = await startPrompter(env);
      const shown = await prompter.nextPrompt();
      assert.match(shown, /Host: api\.anthropic\.com/);
      assert.match(shown, /Method: POST/);
      assert.match(shown, /Path: \/v1\/messages/);
      await prompter.answer("1"); // allow this request once
      const res = await result;
      assert.equal(res.code, 0, res.stdout + res.stderr);
      assert.match(res.stdout, /origin https api\.anthropic\.com(:\d+)? POST \/v1\/messages/);
      // "Review what endpoints were accessed".
      const stats = await runScript("manage-firewall.sh", ["--stats"], env);
      assert.equal(stats.code, 0, stats.stderr);
      assert.match(stats.stdout, /api\.anthropic\.com/);
      // Allow once saves no rule.
      const rules = await Deno.readTextFile(`${m.dataDir}/network-rules.json`).catch(() => "{}");
      assert.doesNotMatch(rules, /anthropic/);
    } finally {
      await prompter?.close();
      await m.cleanup([name]);
    }
  },
});
