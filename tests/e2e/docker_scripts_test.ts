/**
 * The docker/*.sh scripts themselves: shellcheck, --help, usage errors, and
 * run-isolated.sh against the real engine (a container with no network).
 */

import assert from "node:assert/strict";
import { has } from "../_helpers/tools.ts";
import {
  dockerCleanup,
  dockerUnavailable,
  exec,
  REPO,
  runScript,
  scriptEnv,
  TEST_IMAGE,
  uniqueName,
} from "../_helpers/docker.ts";

const SCRIPTS = [
  "docker/run-monitored.sh",
  "docker/run-isolated.sh",
  "docker/manage-firewall.sh",
  "docker/_common.sh",
  "docker/_firewall.sh",
  ".ci/docker.sh",
  "tests/testdata/docker/build-image.sh",
];

Deno.test({
  name: "docker scripts: shellcheck passes on every script",
  ignore: !has("shellcheck"),
  async fn() {
    const res = await exec("shellcheck", ["-x", ...SCRIPTS]);
    assert.equal(res.code, 0, res.stdout + res.stderr);
  },
});

Deno.test("docker scripts: each has --help, and a bad option is a usage error (exit 2)", async () => {
  const env = { PATH: Deno.env.get("PATH") ?? "", HOME: "/nonexistent" };
  for (
    const [script, words] of [
      ["run-monitored.sh", ["--internal", "HTTP_PROXY", "NODE_EXTRA_CA_CERTS", "NETMONITOR_PORT"]],
      ["run-isolated.sh", ["--network none", "NETMONITOR_IMAGE", "NETMONITOR_DOCKER_ARGS"]],
      ["manage-firewall.sh", ["--stats", "--status", "netmonitor manage", "netmonitor prompt"]],
    ] as const
  ) {
    const help = await runScript(script, ["--help"], env);
    assert.equal(help.code, 0, `${script} --help: ${help.stderr}`);
    for (const w of words) assert.match(help.stdout, new RegExp(w), `${script} --help lacks ${w}`);
    const bad = await runScript(script, ["--no-such-flag"], env);
    assert.equal(bad.code, 2, `${script} --no-such-flag should exit 2`);
    assert.match(bad.stderr, /unknown option '--no-such-flag'/);
    assert.match(bad.stderr, /--help/);
  }
  const badPort = await runScript("run-monitored.sh", ["--port", "99999"], env);
  assert.equal(badPort.code, 2);
  // A security setting with a typo (or a word it does not know) is refused, never taken as off.
  for (const value of ["yes please", "ture", "2"]) {
    const bad = await runScript("run-monitored.sh", [TEST_IMAGE], {
      ...env,
      NETMONITOR_HOST_FIREWALL: value,
    });
    assert.equal(bad.code, 2, `NETMONITOR_HOST_FIREWALL=${value}: ${bad.stderr}`);
    assert.match(
      bad.stderr,
      new RegExp(`invalid NETMONITOR_HOST_FIREWALL '${value}' \\(expected 1 or 0\\)`),
    );
  }
  assert.match(badPort.stderr, /invalid port '99999'/);
  const ci = await exec("bash", [`${REPO}/.ci/docker.sh`, "--help"]);
  assert.equal(ci.code, 0);
  assert.match(ci.stdout, /Docker unavailable: <why>/);
  assert.match(ci.stdout, /75/);
});

Deno.test("docker scripts: manage-firewall.sh --status says whether the data dir's proxy runs", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nm-status-" });
  try {
    const env = scriptEnv(dir);
    const none = await runScript("manage-firewall.sh", ["--status"], env);
    assert.equal(none.code, 3, none.stderr);
    assert.equal(none.stdout, `No netmonitor proxy is running for ${dir}\n`);
    const json = await runScript("manage-firewall.sh", ["--status", "--json"], env);
    assert.deepEqual(JSON.parse(json.stdout), { running: false, dataDir: dir, proxies: [] });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("docker scripts: manage-firewall.sh's menu adds a passthrough rule", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nm-menu-" });
  try {
    // Add a rule, pinned.test, action 3 (passthrough); end of input leaves the menu.
    const res = await runScript("manage-firewall.sh", [], scriptEnv(dir), {
      stdin: "3\npinned.test\n3\n",
    });
    assert.equal(res.code, 0, res.stdout + res.stderr);
    assert.match(res.stdout, / {2}3\. passthrough \(allow, and relay its HTTPS without decrypting/);
    assert.match(res.stdout, /✓ Added: pinned\.test passthrough/);
    assert.match(
      await Deno.readTextFile(`${dir}/network-rules.json`),
      /"pinned\.test": "passthrough"/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("docker scripts: manage-firewall.sh refuses a data dir that others can write to", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nm-open-" });
  try {
    await Deno.writeTextFile(`${dir}/network-rules.json`, `{ "*": "allow" }`);
    await Deno.chmod(dir, 0o777);
    const env = scriptEnv(dir);
    for (const args of [["--status"], ["--stats"], ["--prompt"], []]) {
      const res = await runScript("manage-firewall.sh", args, env);
      assert.equal(res.code, 1, `${args}: ${res.stdout}${res.stderr}`);
      assert.match(
        res.stderr,
        new RegExp(`the data dir ${dir} \\(drwxrwxrwx\\) can be written by other users`),
      );
      assert.equal(res.stdout, "");
    }
    // A shared folder (sticky bit, like /tmp) is never to be made private.
    await Deno.chmod(dir, 0o1777);
    const shared = await runScript("manage-firewall.sh", ["--status"], env);
    assert.equal(shared.code, 1, shared.stdout + shared.stderr);
    assert.match(shared.stderr, /a shared folder \(sticky bit, like \/tmp\), so do not make it/);
    assert.match(shared.stderr, new RegExp(`NETMONITOR_DATA_DIR=${dir}/netmonitor`));
    assert.doesNotMatch(shared.stderr, /chmod/);
    // Read access for others is taken away; a private one works.
    await Deno.chmod(dir, 0o755);
    const ok = await runScript("manage-firewall.sh", ["--status"], env);
    assert.equal(ok.code, 3, ok.stderr);
    assert.equal((await Deno.stat(dir)).mode! & 0o777, 0o700);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("docker scripts: a data dir in a folder others can write to (no sticky bit) is refused", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "nm-above-" });
  try {
    const open = `${tmp}/open`;
    const dir = `${open}/data`;
    await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
    await Deno.chmod(open, 0o777);
    const env = scriptEnv(dir);
    const res = await runScript("manage-firewall.sh", ["--status"], env);
    assert.equal(res.code, 1, res.stdout + res.stderr);
    assert.match(
      res.stderr,
      new RegExp(
        `the folder ${open} above the data dir ${dir} \\(drwxrwxrwx\\) can be written by other ` +
          `users and has no sticky bit: .*chmod go-w ${open}`,
      ),
    );
    // Through a symlink the folder is still found, on the real path.
    await Deno.symlink(dir, `${tmp}/link`);
    const linked = await runScript("manage-firewall.sh", ["--status"], scriptEnv(`${tmp}/link`));
    assert.equal(linked.code, 1, linked.stdout + linked.stderr);
    assert.match(linked.stderr, new RegExp(`the folder ${open} above the data dir`));
    // Sticky, as /tmp is: fine.
    await Deno.chmod(open, 0o1777);
    const ok = await runScript("manage-firewall.sh", ["--status"], env);
    assert.equal(ok.code, 3, ok.stdout + ok.stderr);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

const unavailable = await dockerUnavailable();

Deno.test({
  name: "docker: .ci/docker.sh is idempotent (engine reused, image kept)",
  ignore: unavailable !== null,
  async fn() {
    const res = await exec("bash", [`${REPO}/.ci/docker.sh`], { timeoutMs: 300_000 });
    assert.equal(res.code, 0, res.stdout + res.stderr);
    assert.match(res.stdout, /docker engine: already running/);
    assert.match(res.stdout, /test image: netmonitor-test:latest is up to date/);
    const size = Number(
      await exec("docker", ["image", "inspect", "--format", "{{.Size}}", TEST_IMAGE])
        .then((r) => r.stdout.trim()),
    );
    assert.ok(size > 0 && size < 50 * 1024 * 1024, `test image is ${size} bytes; keep it < 50 MB`);
  },
});

Deno.test({
  name: "docker: run-isolated.sh runs the container with no network at all",
  ignore: unavailable !== null,
  async fn() {
    const name = uniqueName("isolated");
    try {
      const res = await runScript(
        "run-isolated.sh",
        [
          "--name",
          name,
          "--docker-arg=-e",
          "--docker-arg=MARK=from-flag",
          TEST_IMAGE,
          "sh",
          "-c",
          // Only the loopback interface; no route; a connection to anything fails at once.
          'echo "mark=$MARK env=$ENVMARK"; ls /sys/class/net; ip route; ' +
          "curl -sS -m 5 http://203.0.113.1/ >/dev/null 2>&1; echo curl=$?",
        ],
        scriptEnv("/nonexistent", { NETMONITOR_DOCKER_ARGS: "-e ENVMARK=from-env" }),
      );
      assert.equal(res.code, 0, res.stderr);
      assert.match(res.stdout, /mark=from-flag env=from-env/);
      const lines = res.stdout.trim().split("\n");
      assert.deepEqual(lines.slice(1, 2), ["lo"], res.stdout);
      assert.doesNotMatch(res.stdout, /default via/);
      assert.match(res.stdout, /curl=7/); // couldn't connect: network unreachable
      assert.match(res.stderr, /no network \(--network none\)/);
      // --rm: nothing left behind.
      const left = await exec("docker", ["inspect", name]);
      assert.notEqual(left.code, 0, "the container was not removed");
    } finally {
      await dockerCleanup([name]);
    }
  },
});

Deno.test({
  name: "docker: run-isolated.sh passes the container's exit status through",
  ignore: unavailable !== null,
  async fn() {
    const name = uniqueName("isolated-exit");
    try {
      const res = await runScript(
        "run-isolated.sh",
        ["--name", name, TEST_IMAGE, "sh", "-c", "exit 7"],
        scriptEnv("/nonexistent", { NETMONITOR_IMAGE: "" }),
      );
      assert.equal(res.code, 7, res.stderr);
    } finally {
      await dockerCleanup([name]);
    }
  },
});

Deno.test({
  name: "docker: run-monitored.sh checks the image before it sets up a network or a proxy",
  ignore: unavailable !== null,
  async fn() {
    const name = uniqueName("noimage");
    const network = uniqueName("noimage-net");
    const dataDir = await Deno.makeTempDir({ prefix: "nm-noimage-" });
    try {
      const image = `${TEST_IMAGE.split(":")[0]}:no-such-tag-${Deno.pid}`;
      const res = await runScript(
        "run-monitored.sh",
        ["--name", name, "--network", network, "--pull", "never", image, "true"],
        scriptEnv(dataDir),
      );
      assert.equal(res.code, 1, res.stderr);
      assert.match(res.stderr, /image \S+no-such-tag\S* is not here.*--pull never/);
      // Nothing was set up first: no network, no proxy started, no proxy output file.
      assert.doesNotMatch(res.stderr, /created internal network|starting the proxy/);
      const net = await exec("docker", ["network", "inspect", network]);
      assert.notEqual(net.code, 0, "the network must not have been created");
      const left = [...Deno.readDirSync(dataDir)].map((e) => e.name);
      assert.deepEqual(left.filter((n) => n.startsWith("netmonitor-proxy-")), []);
    } finally {
      await dockerCleanup([name], [network]);
      await Deno.remove(dataDir, { recursive: true });
    }
  },
});
