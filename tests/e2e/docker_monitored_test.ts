/**
 * docker/run-monitored.sh against a real Docker engine: the container reaches
 * allowed hosts only through the proxy (plain HTTP, and HTTPS with the CA
 * trusted inside), denied hosts get a 403, a prompt answered through
 * `netmonitor prompt` releases a request, the requests are in the log and in
 * stats, and what the script created is gone afterwards.
 *
 * Every host name below is mapped by the proxy's --resolve to a loopback
 * origin of this test: nothing leaves the machine.
 */

import assert from "node:assert/strict";
import {
  dockerUnavailable,
  exec,
  type Monitored,
  type Prompter,
  readLog,
  removeFirewall,
  REPO,
  runScript,
  setupMonitored,
  startPrompter,
  TEST_IMAGE,
  uniqueName,
} from "../_helpers/docker.ts";

const unavailable = await dockerUnavailable();

/** Runs `script` with sh in a monitored container; returns the script's result. */
function runInMonitored(m: Monitored, name: string, script: string, extraArgs: string[] = []) {
  return runScript(
    "run-monitored.sh",
    ["--name", name, ...extraArgs, TEST_IMAGE, "sh", "-c", script],
    m.env,
    { timeoutMs: 180_000 },
  );
}

/** A `netmonitor run` started outside the script, as an operator does. */
interface HandProxy {
  readonly pid: number;
  /** SIGTERM; the exit code. */
  stop(): Promise<number>;
  /** The exit code, once it exits by itself. */
  exited(): Promise<number>;
  /** SIGKILL, for cleanup after a failure. */
  kill(): Promise<void>;
}

/** Starts `netmonitor run` for `dataDir` on `m`'s gateway and port; resolves once it listens. */
async function startProxyByHand(m: Monitored, dataDir: string, args: string[]): Promise<HandProxy> {
  const proxy = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      `${REPO}/main.ts`,
      "run",
      "--listen",
      m.gateway!,
      "--port",
      String(m.port),
      ...args,
      ...m.env.NETMONITOR_RUN_ARGS.split(" "),
    ],
    env: { NETMONITOR_DATA_DIR: dataDir, NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const reader = proxy.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  while (!out.includes("Listening on")) {
    const { value, done } = await reader.read();
    if (done) {
      await proxy.status;
      throw new Error(`the proxy exited:\n${out}`);
    }
    out += value;
  }
  // Keep reading so the proxy never blocks on a full pipe.
  const drained = (async () => {
    while (!(await reader.read()).done) { /* request lines */ }
  })();
  const exited = async () => {
    const { code } = await proxy.status;
    await drained;
    return code;
  };
  return {
    pid: proxy.pid,
    stop() {
      proxy.kill("SIGTERM");
      return exited();
    },
    exited,
    async kill() {
      try {
        proxy.kill("SIGKILL");
      } catch { /* gone */ }
      await reader.cancel().catch(() => {});
      await proxy.status;
    },
  };
}

/** What run-monitored.sh must leave behind: nothing it created. */
async function assertCleanedUp(m: Monitored, name: string, stderr: string) {
  assert.notEqual((await exec("docker", ["inspect", name])).code, 0, "container left behind");
  assert.notEqual(
    (await exec("docker", ["network", "inspect", m.network])).code,
    0,
    `network ${m.network} left behind\n${stderr}`,
  );
  assert.match(stderr, /stopping the proxy/);
  const left = await Array.fromAsync(Deno.readDir(m.dataDir));
  const pidFiles = left.filter((e) => /^netmonitor-proxy.*\.pid$/.test(e.name));
  assert.deepEqual(pidFiles, [], "pid file left");
  assert.deepEqual(await Array.fromAsync(Deno.readDir(`${m.dataDir}/netmonitor-runs`)), []);
  // No chain left for a bridge whose network is gone. Chains of networks that still exist are
  // other runs' (other tests may share the engine); one whose network another test is removing
  // right now goes within moments.
  let orphans: string[] = [];
  for (let i = 0; i < 25; i++) {
    const rules = await exec("iptables", ["-S"]);
    if (rules.code !== 0) return;
    const ids = (await exec("docker", ["network", "ls", "-q", "--no-trunc"])).stdout;
    orphans = [...rules.stdout.matchAll(/^-N NETMONITOR-br-([0-9a-f]+)$/gm)]
      .filter(([, id]) => !ids.split("\n").some((n) => n.startsWith(id)))
      .map(([chain]) => chain);
    if (orphans.length === 0) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  assert.deepEqual(orphans, [], `firewall chains left behind\n${stderr}`);
}

Deno.test({
  name: "docker monitored: allowed over HTTP and HTTPS, denied gets 403, logged, in stats",
  ignore: unavailable !== null,
  sanitizeResources: false, // Deno.serve's TLS listener closes asynchronously after shutdown()
  async fn() {
    const m = await setupMonitored({
      names: ["allowed.test", "denied.test"],
      rules: { "allowed.test": "allow-domain", "denied.test": "deny-domain" },
      runArgs: ["--prompt-timeout", "5s"],
    });
    const name = uniqueName("mon");
    // A gone proxy's output from an earlier network (its pid file is gone), and a running one's.
    const staleOut = `${m.dataDir}/netmonitor-proxy-172.31.250.1-${m.port}.out`;
    const liveOut = `${m.dataDir}/netmonitor-proxy-172.31.251.1-${m.port}.out`;
    await Deno.writeTextFile(staleOut, "Listening on http://172.31.250.1\n");
    await Deno.writeTextFile(liveOut, "Listening on http://172.31.251.1\n");
    await Deno.writeTextFile(liveOut.replace(/\.out$/, ".pid"), "");
    try {
      const o = m.origins;
      const script = [
        // The proxy settings and the CA are there.
        'echo "proxy=$HTTPS_PROXY bundle=$CURL_CA_BUNDLE node=$NODE_EXTRA_CA_CERTS"',
        `echo "plain: $(curl -sS -m 30 ${o.url("http", "allowed.test", "/plain?q=1")})"`,
        // HTTPS through the intercepting proxy: trusted through CURL_CA_BUNDLE ...
        `echo "tls-env: $(curl -sS -m 30 ${o.url("https", "allowed.test", "/tls")})"`,
        // ... and through the system store alone (no variable).
        `echo "tls-store: $(env -u CURL_CA_BUNDLE -u SSL_CERT_FILE curl -sS -m 30 ${
          o.url("https", "allowed.test", "/store")
        })"`,
        `echo "denied-http: $(curl -s -o /dev/null -w '%{http_code}' -m 30 ${
          o.url("http", "denied.test", "/nope")
        })"`,
        `echo "denied-https: $(curl -s -o /dev/null -w '%{http_connect}' -m 30 ${
          o.url("https", "denied.test", "/nope")
        })"`,
      ].join("; ");
      const res = await runInMonitored(m, name, script);
      assert.equal(res.code, 0, res.stdout + res.stderr);
      const out = res.stdout;
      assert.match(
        out,
        /proxy=http:\/\/\d+\.\d+\.\d+\.\d+:\d+ bundle=\/etc\/netmonitor\/ca-bundle\.pem/,
      );
      assert.match(out, /node=\/etc\/netmonitor\/ca\.crt/);
      assert.match(out, /plain: origin http allowed\.test(:\d+)? GET \/plain\?q=1/);
      assert.match(out, /tls-env: origin https allowed\.test(:\d+)? GET \/tls/);
      assert.match(out, /tls-store: origin https allowed\.test(:\d+)? GET \/store/);
      assert.match(out, /denied-http: 403/);
      assert.match(out, /denied-https: 403/);
      assert.match(
        res.stderr,
        /starting the proxy on \d+\.\d+\.\d+\.\d+:\d+ \(output: .*netmonitor-proxy-\d+\.\d+\.\d+\.\d+-\d+\.out\)/,
      );
      await assert.rejects(Deno.stat(staleOut), Deno.errors.NotFound, "a gone proxy's output");
      await Deno.stat(liveOut); // a proxy with a pid file keeps its output
      await Deno.remove(liveOut.replace(/\.out$/, ".pid"));
      await assertCleanedUp(m, name, res.stderr);

      // The log: one record per request, from the container's address, with full URLs.
      const records = await readLog(m.dataDir);
      const find = (pred: (r: Record<string, unknown>) => boolean) => records.find(pred);
      const fromContainer = (r: Record<string, unknown>) =>
        /^\d+\.\d+\.\d+\.\d+:\d+$/.test(String(r.client)) && !String(r.client).startsWith("127.");
      const plain = find((r) =>
        String(r.url).includes("allowed.test") && String(r.url).includes("/plain")
      );
      assert.ok(plain, JSON.stringify(records, null, 1));
      assert.equal(plain.decision, "allow");
      assert.equal(plain.status, 200);
      assert.ok(fromContainer(plain), `client ${plain.client}`);
      const tls = find((r) =>
        String(r.url).startsWith("https://allowed.test") && String(r.url).includes("/tls")
      );
      assert.ok(tls, "the intercepted HTTPS request is logged with its full URL");
      assert.equal(tls.status, 200);
      const denied = records.filter((r) => r.host === "denied.test");
      assert.ok(denied.length >= 2, JSON.stringify(denied));
      for (const r of denied) {
        assert.equal(r.decision, "deny");
        assert.equal(r.status, 403);
        assert.match(String(r.reason), /denied\.test/);
      }

      // Stats (the Quick Start's step 3) show both hosts.
      const stats = await runScript("manage-firewall.sh", ["--stats"], m.env);
      assert.equal(stats.code, 0, stats.stderr);
      assert.match(stats.stdout, /allowed\.test/);
      assert.match(stats.stdout, /denied\.test/);
    } finally {
      await m.cleanup([name]);
    }
  },
});

Deno.test({
  name: "docker monitored: a prompt answered through `netmonitor prompt` releases the request",
  ignore: unavailable !== null,
  sanitizeResources: false,
  async fn() {
    const m = await setupMonitored({ names: ["asked.test"], runArgs: ["--prompt-timeout", "90s"] });
    const name = uniqueName("prompt");
    let prompter: Prompter | undefined;
    try {
      const run = runInMonitored(
        m,
        name,
        `echo "asked: $(curl -sS -m 120 ${
          m.origins.url("http", "asked.test", "/repos/user/repo")
        })"`,
      );
      // The operator's second terminal: ./docker/manage-firewall.sh --prompt.
      prompter = await startPrompter(m.env);
      const shown = await prompter.nextPrompt();
      assert.match(shown, /={20,}\nNetwork Access Request\n/);
      assert.match(shown, /Host: asked\.test/);
      assert.match(shown, /Method: GET/);
      assert.match(shown, /Path: \/repos\/user\/repo/);
      assert.match(shown, /3\. Always allow asked\.test/);
      await prompter.answer("3");
      const res = await run;
      assert.equal(res.code, 0, res.stdout + res.stderr);
      assert.match(res.stdout, /asked: origin http asked\.test(:\d+)? GET \/repos\/user\/repo/);
      // "Always allow" was saved as a rule, and the log says who decided.
      const rules = JSON.parse(await Deno.readTextFile(`${m.dataDir}/network-rules.json`));
      assert.equal(rules["asked.test"], "allow-domain");
      const rec = (await readLog(m.dataDir)).find((r) => r.host === "asked.test");
      assert.ok(rec);
      assert.equal(rec.decision, "allow");
      assert.equal(rec.source, "prompt");
      await assertCleanedUp(m, name, res.stderr);
    } finally {
      await prompter?.close();
      await m.cleanup([name]);
    }
  },
});

/** What {@linkcode handProxyTest} gives its body. */
interface HandProxyEnv {
  m: Monitored;
  /** The container's name. */
  name: string;
  /** Starts `netmonitor run` for `dataDir` by hand; killed at the end if still running. */
  start(dataDir: string, args: string[]): Promise<HandProxy>;
}

/**
 * A test on a fresh network (allowed.test allowed) with proxies the operator
 * starts by hand; whatever the body leaves behind is cleaned up.
 */
function handProxyTest(name: string, prefix: string, body: (env: HandProxyEnv) => Promise<void>) {
  Deno.test({
    name,
    ignore: unavailable !== null,
    sanitizeResources: false,
    async fn() {
      const m = await setupMonitored({
        names: ["allowed.test"],
        rules: { "allowed.test": "allow-domain" },
        createNetwork: true,
      });
      const container = uniqueName(prefix);
      const started: HandProxy[] = [];
      try {
        await body({
          m,
          name: container,
          async start(dataDir, args) {
            const proxy = await startProxyByHand(m, dataDir, args);
            started.push(proxy);
            return proxy;
          },
        });
      } finally {
        for (const proxy of started) await proxy.kill();
        await removeFirewall(m.network);
        await m.cleanup([container]);
      }
    },
  });
}

handProxyTest(
  "docker monitored: reuses a proxy already listening on the gateway and leaves it running",
  "reuse",
  async ({ m, name, start }) => {
    const otherNetwork = uniqueName("net");
    try {
      // The operator started the proxy by hand, for this network's gateway.
      const proxy = await start(m.dataDir, ["--prompt-via", "socket"]);

      const res = await runInMonitored(
        m,
        name,
        `echo "reused: $(curl -sS -m 30 ${m.origins.url("http", "allowed.test", "/r")})"`,
      );
      assert.equal(res.code, 0, res.stdout + res.stderr);
      assert.match(res.stdout, /reused: origin http allowed\.test(:\d+)? GET \/r/);
      assert.match(res.stderr, /reusing the proxy already listening on /);
      assert.match(res.stderr, /was already running; it keeps running/);
      assert.doesNotMatch(res.stderr, /starting the proxy|stopping the proxy/);
      const conn = await Deno.connect({ hostname: m.gateway!, port: m.port });
      conn.close(); // still listening

      // Another network, same data dir: this proxy cannot serve it, and a second one
      // cannot start; the script says what to do.
      const other = await runScript(
        "run-monitored.sh",
        ["--network", otherNetwork, TEST_IMAGE, "true"],
        m.env,
        { timeoutMs: 120_000 },
      );
      assert.equal(other.code, 1, other.stderr);
      assert.match(other.stderr, /a netmonitor proxy is already running for .* but not on/);
      assert.match(other.stderr, /removed network/);

      assert.equal(await proxy.stop(), 0);
    } finally {
      await exec("docker", ["network", "rm", otherNetwork]);
    }
  },
);

handProxyTest(
  "docker monitored: a netmonitor of another data dir on the gateway port is not reused",
  "otherdir",
  async ({ m, name, start }) => {
    const otherDir = `${m.dir}/other-data`;
    await Deno.mkdir(otherDir, { mode: 0o700 });
    // Its rules would let everything through: the container must not get them.
    await Deno.writeTextFile(`${otherDir}/network-rules.json`, `{ "*": "allow" }`);
    const proxy = await start(otherDir, ["--non-interactive", "--default", "allow"]);
    const res = await runInMonitored(m, name, "echo container-ran");
    assert.equal(res.code, 1, res.stdout + res.stderr);
    assert.match(
      res.stderr,
      new RegExp(
        `${m.gateway}:${m.port} is served by a netmonitor proxy that is not one of ` +
          `${m.dataDir}'s \\(they listen on: nothing\\): another data dir's`,
      ),
    );
    assert.doesNotMatch(res.stdout, /container-ran/);
    assert.doesNotMatch(res.stderr, /reusing the proxy|starting the proxy/);
    assert.notEqual((await exec("docker", ["inspect", name])).code, 0, "the container ran");
    const conn = await Deno.connect({ hostname: m.gateway!, port: m.port });
    conn.close(); // the other data dir's proxy is left alone
    assert.equal(await proxy.stop(), 0);
  },
);

handProxyTest(
  "docker monitored: a proxy in the older script's pid file is taken over and stopped",
  "legacy",
  async ({ m, name, start }) => {
    // What the older run-monitored.sh left: one pid file for the data dir.
    const proxy = await start(m.dataDir, ["--prompt-via", "socket"]);
    await Deno.writeTextFile(
      `${m.dataDir}/netmonitor-proxy.pid`,
      `${proxy.pid} ${m.gateway} ${m.port} 0\n`,
    );
    const res = await runInMonitored(
      m,
      name,
      `echo "got: $(curl -sS -m 30 ${m.origins.url("http", "allowed.test", "/l")})"`,
    );
    assert.equal(res.code, 0, res.stdout + res.stderr);
    assert.match(res.stdout, /got: origin http allowed\.test(:\d+)? GET \/l/);
    assert.match(res.stderr, /reusing the proxy already listening on /);
    assert.match(res.stderr, new RegExp(`stopping the proxy \\(pid ${proxy.pid}\\)`));
    assert.equal(await proxy.exited(), 0);
    const left = await Array.fromAsync(Deno.readDir(m.dataDir));
    assert.deepEqual(left.filter((e) => e.name.endsWith(".pid")), [], "pid file left");
  },
);

handProxyTest(
  "docker monitored: a pid file whose process started at another time is not trusted",
  "reused-pid",
  async ({ m, name, start }) => {
    // A stale pid file whose pid now belongs to a proxy the operator started by hand
    // (same arguments): a start time that does not match says it is not the script's.
    const proxy = await start(m.dataDir, ["--prompt-via", "socket"]);
    const pidFile = `${m.dataDir}/netmonitor-proxy-${m.gateway}-${m.port}.pid`;
    await Deno.writeTextFile(pidFile, `${proxy.pid} ${m.gateway} ${m.port} 0 1\n`);
    const res = await runInMonitored(m, name, "echo container-ran");
    assert.equal(res.code, 0, res.stdout + res.stderr);
    assert.match(res.stderr, /reusing the proxy already listening on /);
    assert.match(res.stderr, /was already running; it keeps running/);
    assert.doesNotMatch(res.stderr, /stopping the proxy/);
    await assert.rejects(Deno.stat(pidFile), Deno.errors.NotFound);
    const conn = await Deno.connect({ hostname: m.gateway!, port: m.port });
    conn.close(); // still listening
    assert.equal(await proxy.stop(), 0);
  },
);

/**
 * Containers that take turns through a shared directory: each fetches `url`,
 * says it is ready (`ID-ready`), waits for its go (`ID-go`), fetches again.
 */
async function turnTaking(m: Monitored, url: string) {
  const shared = `${m.dir}/shared`;
  await Deno.mkdir(shared);
  const exists = (f: string) => Deno.stat(`${shared}/${f}`).then(() => true, () => false);
  const env = { ...m.env, NETMONITOR_DOCKER_ARGS: `-v ${shared}:/shared` };
  const script = (id: string) =>
    `echo "${id}1: $(curl -sS -m 30 ${url})"; touch /shared/${id}-ready; ` +
    `while [ ! -f /shared/${id}-go ]; do sleep 0.1; done; echo "${id}2: $(curl -sS -m 30 ${url})"`;
  return {
    async ready(id: string) {
      for (let i = 0; i < 900 && !(await exists(`${id}-ready`)); i++) {
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.ok(await exists(`${id}-ready`), `${id}-ready never appeared`);
    },
    go: (id: string) => Deno.writeTextFile(`${shared}/${id}-go`, ""),
    /** run-monitored.sh with container `name` taking turns as `id`. */
    run: (name: string, id: string, extraEnv: Record<string, string> = {}) =>
      runScript(
        "run-monitored.sh",
        ["--name", name, TEST_IMAGE, "sh", "-c", script(id)],
        { ...env, ...extraEnv },
        { timeoutMs: 180_000 },
      ),
  };
}

Deno.test({
  name: "docker monitored: concurrent runs share the proxy; the last one out stops it",
  ignore: unavailable !== null,
  sanitizeResources: false,
  async fn() {
    const m = await setupMonitored({
      names: ["allowed.test"],
      rules: { "allowed.test": "allow-domain" },
    });
    const [nameA, nameB] = [uniqueName("first"), uniqueName("second")];
    const turns = await turnTaking(m, m.origins.url("http", "allowed.test", "/shared"));
    try {
      const a = turns.run(nameA, "a");
      await turns.ready("a");
      const b = turns.run(nameB, "b");
      await turns.ready("b");
      await turns.go("a");
      const resA = await a;
      assert.equal(resA.code, 0, resA.stdout + resA.stderr);
      assert.match(resA.stdout, /a2: origin http allowed\.test/);
      assert.match(
        resA.stderr,
        /the proxy keeps running \(pid \d+\): network \S+ is still in use \(containers: 1, other runs: 1\)/,
      );
      assert.doesNotMatch(resA.stderr, /removed network/);
      await turns.go("b");
      const resB = await b;
      assert.equal(resB.code, 0, resB.stdout + resB.stderr);
      assert.match(resB.stderr, /reusing the proxy already listening/);
      assert.match(resB.stdout, /b2: origin http allowed\.test/); // after A left
      assert.match(resB.stderr, /stopping the proxy \(pid \d+\)/);
      await assertCleanedUp(m, nameB, resB.stderr);
    } finally {
      await m.cleanup([nameA, nameB]);
    }
  },
});

Deno.test({
  name: "docker monitored: a run on another network leaves the shared proxy to its users",
  ignore: unavailable !== null,
  sanitizeResources: false,
  async fn() {
    const m = await setupMonitored({
      names: ["allowed.test"],
      rules: { "allowed.test": "allow-domain" },
    });
    const [nameA, nameB, nameC] = [uniqueName("first"), uniqueName("other"), uniqueName("last")];
    const otherNetwork = uniqueName("net");
    const turns = await turnTaking(m, m.origins.url("http", "allowed.test", "/shared"));
    try {
      const a = turns.run(nameA, "a");
      await turns.ready("a");
      const c = turns.run(nameC, "c");
      await turns.ready("c");
      // Same data dir, another network: its proxy cannot start (one per data dir), and its
      // failure must not take the running proxy's pid file with it.
      const b = await turns.run(nameB, "b", { NETMONITOR_NETWORK: otherNetwork });
      assert.equal(b.code, 1, b.stdout + b.stderr);
      assert.match(b.stderr, /a netmonitor proxy is already running for/);
      assert.notEqual((await exec("docker", ["network", "inspect", otherNetwork])).code, 0);

      await turns.go("a");
      const resA = await a;
      assert.equal(resA.code, 0, resA.stdout + resA.stderr);
      assert.match(resA.stderr, /the proxy keeps running \(pid \d+\)/);
      await turns.go("c");
      const resC = await c;
      assert.equal(resC.code, 0, resC.stdout + resC.stderr);
      assert.match(resC.stdout, /c2: origin http allowed\.test/); // after A left
      assert.match(resC.stderr, /stopping the proxy \(pid \d+\)/);
      await assertCleanedUp(m, nameC, resC.stderr);
    } finally {
      await m.cleanup([nameA, nameB, nameC]);
      await removeFirewall(otherNetwork);
      await exec("docker", ["network", "rm", otherNetwork]);
    }
  },
});

Deno.test({
  name: "docker monitored: SIGTERM to the script stops the container, then cleans up",
  ignore: unavailable !== null,
  sanitizeResources: false,
  async fn() {
    const m = await setupMonitored({ names: ["allowed.test"] });
    const name = uniqueName("sigterm");
    const child = new Deno.Command("bash", {
      args: [
        `${REPO}/docker/run-monitored.sh`,
        "--name",
        name,
        TEST_IMAGE,
        "sh",
        "-c",
        "echo container-started; exec sleep 300",
      ],
      env: m.env,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const stderr = new Response(child.stderr).text();
    try {
      const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
      let out = "";
      while (!out.includes("container-started")) {
        const { value, done } = await reader.read();
        if (done) throw new Error(`the script ended early: ${out}\n${await stderr}`);
        out += value;
      }
      child.kill("SIGTERM");
      const status = await child.status;
      await reader.cancel();
      const err = await stderr;
      assert.equal(status.code, 143, err);
      assert.match(err, new RegExp(`stopping container ${name}`));
      await assertCleanedUp(m, name, err);
    } finally {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
      await child.status;
      await stderr;
      await m.cleanup([name]);
    }
  },
});

Deno.test({
  name: "docker monitored: --keep-proxy says what stays, and a later run cleans up after it",
  ignore: unavailable !== null,
  sanitizeResources: false,
  async fn() {
    const m = await setupMonitored({ names: ["kept.test"], runArgs: ["--non-interactive"] });
    const first = uniqueName("keep");
    const second = uniqueName("keep-after");
    try {
      const kept = await runInMonitored(m, first, "echo first-ran", ["--keep-proxy"]);
      assert.equal(kept.code, 0, kept.stdout + kept.stderr);
      const said = kept.stderr.match(/the proxy keeps running \(pid (\d+), --keep-proxy\)[^\n]*/);
      assert.ok(said, kept.stderr);
      // What the user is told stays behind once they stop the proxy, and who removes it.
      assert.match(said[0], new RegExp(`stays open to network ${m.network}`));
      assert.match(said[0], /until a later run of this script finds the proxy gone/);
      assert.equal((await exec("docker", ["network", "inspect", m.network])).code, 0);
      // Stopped as told: the network stays until the next run, which takes it all down.
      await exec("kill", ["-TERM", "--", `-${said[1]}`]);
      for (let i = 0; i < 50 && (await exec("kill", ["-0", said[1]])).code === 0; i++) {
        await new Promise((r) => setTimeout(r, 200));
      }
      const after = await runInMonitored(m, second, "echo second-ran");
      assert.equal(after.code, 0, after.stdout + after.stderr);
      assert.match(after.stderr, new RegExp(`removed network ${m.network}`));
      assert.notEqual((await exec("docker", ["network", "inspect", m.network])).code, 0);
    } finally {
      await m.cleanup([first, second]);
    }
  },
});
