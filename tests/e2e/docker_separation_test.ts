/**
 * What docker/run-monitored.sh keeps apart, against a real Docker engine:
 * - containers on its network do not reach each other (inter-container
 *   communication off), only the proxy; a network whose containers would is
 *   refused, or made again when an older run left it unused;
 * - one network serves one data dir: a network made for another data dir, with
 *   another data dir's containers on it, or open to another data dir's proxy
 *   is refused (its containers would get that data dir's rules);
 * - the data dir and the files the script writes are the user's alone, whatever
 *   the umask, and are never written through a symlink; a data dir that others
 *   can write to, or that belongs to someone else, is refused.
 *
 * Host names are mapped by the proxy's --resolve to this test's loopback
 * origins. Only containers, networks and files this test created are touched.
 */

import assert from "node:assert/strict";
import {
  containerIp,
  docker,
  dockerUnavailable,
  exec,
  type Monitored,
  networkBridge,
  networkGateway,
  rememberCa,
  REPO,
  runScript,
  setupMonitored,
  stopScriptProxy,
  TEST_IMAGE,
  uniqueName,
  waitFor,
} from "../_helpers/docker.ts";

const unavailable = await dockerUnavailable();
const ROOT = Deno.uid() === 0;
if (unavailable === null && !ROOT) {
  console.error(
    "SKIP: docker separation: not root, so the firewall and ownership checks are skipped",
  );
}

/** run-monitored.sh running `script` with sh in container `name`; the script's result. */
function runIn(env: Record<string, string>, name: string, script: string, args: string[] = []) {
  return runScript(
    "run-monitored.sh",
    ["--name", name, ...args, TEST_IMAGE, "sh", "-c", script],
    env,
    { timeoutMs: 180_000 },
  );
}

/** A file the container creates in a shared directory, and one the test creates for it. */
function signals(shared: string) {
  const exists = (f: string) => Deno.stat(`${shared}/${f}`).then(() => true, () => false);
  return {
    ready: (id: string) => waitFor(`${id}-ready`, () => exists(`${id}-ready`), 120_000),
    go: (id: string) => Deno.writeTextFile(`${shared}/${id}-go`, ""),
    /** Shell: says it is ready, then waits for its go. */
    wait: (id: string) =>
      `touch /shared/${id}-ready; while [ ! -f /shared/${id}-go ]; do sleep 0.1; done`,
  };
}

/** A network's labels and options, from `docker network inspect`. */
async function networkInfo(network: string) {
  const [info] = JSON.parse(await docker(["network", "inspect", network]));
  return {
    labels: (info.Labels ?? {}) as Record<string, string>,
    options: (info.Options ?? {}) as Record<string, string>,
  };
}

/** `iptables -S`, or "" without iptables (not root). */
async function iptablesRules(): Promise<string> {
  const res = await exec("iptables", ["-w", "-S"]).catch(() => null);
  return res?.code === 0 ? res.stdout : "";
}

/** A second data dir (0700) for the same network, with the first one's CA copied in. */
async function otherDataDir(m: Monitored, name: string): Promise<string> {
  const dir = `${m.dir}/${name}`;
  await Deno.mkdir(dir, { mode: 0o700 });
  for (const file of ["netmonitor-ca.pem", "netmonitor-ca-key.pem"]) {
    await Deno.copyFile(`${m.dataDir}/${file}`, `${dir}/${file}`).catch(() => {});
  }
  return dir;
}

Deno.test({
  name: "docker separation: containers on the script's network reach the proxy, not each other",
  ignore: unavailable !== null,
  sanitizeResources: false, // Deno.serve's TLS listener closes asynchronously after shutdown()
  async fn() {
    // "*": allow, so that only destination protection keeps B from A through the proxy.
    const m = await setupMonitored({
      names: ["allowed.test"],
      rules: { "allowed.test": "allow-domain", "*": "allow" },
    });
    const [nameA, nameB] = [uniqueName("icc-a"), uniqueName("icc-b")];
    const shared = `${m.dir}/shared`;
    await Deno.mkdir(shared);
    const sig = signals(shared);
    const env = { ...m.env, NETMONITOR_DOCKER_ARGS: `-v ${shared}:/shared` };
    try {
      // Run A serves a web page on the network, as any container can.
      const a = runIn(
        env,
        nameA,
        "mkdir -p /w && echo served-by-a >/w/index.html && httpd -p 5555 -h /w && " +
          sig.wait("a"),
      );
      await sig.ready("a");
      const ipA = await containerIp(nameA, m.network);
      // It does serve (asked from inside A).
      const self = await exec("docker", [
        "exec",
        nameA,
        "curl",
        "-sS",
        "-m",
        "5",
        "--noproxy",
        "*",
        `http://${ipA}:5555/`,
      ]);
      assert.match(self.stdout, /served-by-a/, self.stderr);

      // Run B, same data dir and network: A only through the proxy (which refuses it).
      const b = await runIn(
        env,
        nameB,
        `curl --noproxy '*' -sS -m 3 http://${ipA}:5555/; echo "direct=$?"; ` +
          `nc -w 3 ${ipA} 5555 </dev/null; echo "tcp=$?"; ` +
          `echo "proxy-to-a: $(curl -sS -m 10 http://${ipA}:5555/)"; ` +
          `echo "via-proxy: $(curl -sS -m 30 ${m.origins.url("http", "allowed.test", "/b")})"`,
      );
      assert.equal(b.code, 0, b.stdout + b.stderr);
      assert.doesNotMatch(b.stdout, /served-by-a/, "B reached A (directly or through the proxy)");
      assert.notEqual(Number(/direct=(\d+)/.exec(b.stdout)?.[1]), 0, b.stdout);
      assert.notEqual(Number(/tcp=(\d+)/.exec(b.stdout)?.[1]), 0, b.stdout);
      // Through the proxy, A is another container: refused even under "*": allow.
      assert.match(
        b.stdout,
        /proxy-to-a: netmonitor denied[^]*is in a container network of this host/,
        b.stdout,
      );
      assert.match(b.stdout, /via-proxy: origin http allowed\.test(:\d+)? GET \/b/);
      // The network as the script made it: no inter-container communication, labelled with
      // the data dir.
      const { labels, options } = await networkInfo(m.network);
      assert.equal(options["com.docker.network.bridge.enable_icc"], "false");
      assert.equal(labels["netmonitor.managed"], "1");
      assert.equal(labels["netmonitor.data-dir"], await Deno.realPath(m.dataDir));

      await sig.go("a");
      const resA = await a;
      assert.equal(resA.code, 0, resA.stdout + resA.stderr);
      assert.match(resA.stderr, /removed network/);
    } finally {
      await m.cleanup([nameA, nameB]);
    }
  },
});

Deno.test({
  name: "docker separation: a network whose containers reach each other is refused, or made again",
  ignore: unavailable !== null,
  sanitizeResources: false,
  async fn() {
    const m = await setupMonitored({ names: ["allowed.test"], runArgs: ["--non-interactive"] });
    const name = uniqueName("icc-on");
    const squatter = uniqueName("squatter");
    try {
      // The user's own network, made with plain --internal: refused, and left alone.
      await docker(["network", "create", "--internal", m.network]);
      const mine = await runIn(m.env, name, "echo container-ran");
      assert.equal(mine.code, 1, mine.stdout + mine.stderr);
      assert.match(
        mine.stderr,
        new RegExp(
          `network ${m.network} lets its containers reach each other directly, not through ` +
            `the proxy \\(com\\.docker\\.network\\.bridge\\.enable_icc is not false\\), and it ` +
            `was not made by this script`,
        ),
      );
      assert.match(
        mine.stderr,
        /docker network create --internal -o com\.docker\.network\.bridge\.enable_icc=false NAME/,
      );
      assert.doesNotMatch(mine.stdout, /container-ran/);
      assert.doesNotMatch(mine.stderr, /starting the proxy|removed network/);
      assert.equal((await exec("docker", ["network", "inspect", m.network])).code, 0);

      // What an older version of the script made (label netmonitor.managed), still in use:
      // refused.
      await docker(["network", "rm", m.network]);
      await docker([
        "network",
        "create",
        "--internal",
        "--label",
        "netmonitor.managed=1",
        m.network,
      ]);
      const oldBridge = (await networkBridge(m.network))!;
      await docker([
        "run",
        "-d",
        "--pull",
        "never",
        "--name",
        squatter,
        "--network",
        m.network,
        TEST_IMAGE,
        "sleep",
        "120",
      ]);
      const inUse = await runIn(m.env, name, "echo container-ran");
      assert.equal(inUse.code, 1, inUse.stdout + inUse.stderr);
      assert.match(
        inUse.stderr,
        /reach each other directly.*it is in use \(containers: 1, other runs: 0\)/,
      );
      assert.doesNotMatch(inUse.stdout, /container-ran/);

      // Unused: made again, without inter-container communication, and used; the old
      // bridge's chain (left by a run killed before its cleanup) goes with it.
      await docker(["rm", "-f", squatter]);
      if (ROOT) {
        const chain = `NETMONITOR-${oldBridge}`;
        for (const args of [["-N", chain], ["-I", "INPUT", "1", "-i", oldBridge, "-j", chain]]) {
          const res = await exec("iptables", ["-w", ...args]);
          assert.equal(res.code, 0, res.stderr);
        }
      }
      const remade = await runIn(m.env, name, "echo container-ran", ["--keep-proxy"]);
      assert.equal(remade.code, 0, remade.stdout + remade.stderr);
      assert.match(remade.stdout, /container-ran/);
      assert.match(
        remade.stderr,
        new RegExp(
          `removed network ${m.network}, made by an older netmonitor with inter-container ` +
            `communication on; making it again with it off\n` +
            `netmonitor: created internal network ${m.network}`,
        ),
      );
      // (--keep-proxy keeps the network, to look at.)
      const { labels, options } = await networkInfo(m.network);
      assert.equal(options["com.docker.network.bridge.enable_icc"], "false");
      assert.equal(labels["netmonitor.data-dir"], await Deno.realPath(m.dataDir));
      if (ROOT) {
        const rules = await iptablesRules();
        assert.doesNotMatch(rules, new RegExp(`NETMONITOR-${oldBridge}`), "old chain left");
        assert.match(rules, new RegExp(`NETMONITOR-${await networkBridge(m.network)}`));
      }
    } finally {
      await m.cleanup([name, squatter]);
    }
  },
});

Deno.test({
  name: "docker separation: a network made for another data dir is refused",
  ignore: unavailable !== null,
  sanitizeResources: false,
  async fn() {
    // Data dir A lets everything through, and keeps its proxy (and so its network).
    const m = await setupMonitored({
      names: ["allowed.test", "other.test"],
      rules: { "*": "allow" },
      runArgs: ["--non-interactive"],
    });
    const [nameA, nameB] = [uniqueName("dir-a"), uniqueName("dir-b")];
    try {
      const a = await runIn(m.env, nameA, "echo a-ran", ["--keep-proxy"]);
      assert.equal(a.code, 0, a.stdout + a.stderr);
      await rememberCa(m.dataDir);
      const gateway = await networkGateway(m.network);

      // Data dir B, same network, its own port: its container must not get A's proxy.
      const dirB = await otherDataDir(m, "data-b");
      const portB = m.port + 1;
      const b = await runIn(
        { ...m.env, NETMONITOR_DATA_DIR: dirB, NETMONITOR_PORT: String(portB) },
        nameB,
        `echo "via-a: $(curl -sS -m 10 -x http://${gateway}:${m.port} ${
          m.origins.url("http", "other.test", "/b")
        })"`,
      );
      assert.equal(b.code, 1, b.stdout + b.stderr);
      assert.match(
        b.stderr,
        new RegExp(
          `network ${m.network} belongs to the data dir ${await Deno.realPath(m.dataDir)} ` +
            `\\(label netmonitor\\.data-dir\\), not to ${await Deno.realPath(dirB)}: one network ` +
            `serves one data dir`,
        ),
      );
      assert.doesNotMatch(b.stdout, /via-a/, "B's container ran");
      assert.doesNotMatch(b.stderr, /starting the proxy/);
      // A's network and proxy are left alone.
      assert.equal((await exec("docker", ["network", "inspect", m.network])).code, 0);
      (await Deno.connect({ hostname: gateway, port: m.port })).close();
    } finally {
      await m.cleanup([nameA, nameB]);
    }
  },
});

Deno.test({
  name: "docker separation: a network of the user's serves one data dir at a time",
  ignore: unavailable !== null,
  sanitizeResources: false,
  async fn() {
    const m = await setupMonitored({
      names: ["allowed.test", "other.test"],
      rules: { "*": "allow" },
      runArgs: ["--non-interactive"],
      createNetwork: true, // unlabelled, like a network of the user's
    });
    const [nameA, nameA2, nameB] = [
      uniqueName("user-a"),
      uniqueName("user-a2"),
      uniqueName("user-b"),
    ];
    const shared = `${m.dir}/shared`;
    await Deno.mkdir(shared);
    const sig = signals(shared);
    const envA = { ...m.env, NETMONITOR_DOCKER_ARGS: `-v ${shared}:/shared` };
    const dirB = await otherDataDir(m, "data-b");
    const portB = m.port + 1;
    const envB = { ...m.env, NETMONITOR_DATA_DIR: dirB, NETMONITOR_PORT: String(portB) };
    const viaA = `http://${m.gateway}:${m.port}`;
    const scriptB =
      `echo "via-a: $(curl -sS -m 10 -x ${viaA} ${m.origins.url("http", "other.test", "/b")})"; ` +
      `echo "own: $(curl -s -o /dev/null -w '%{http_code}' -m 30 ${
        m.origins.url("http", "other.test", "/own")
      })"`;
    try {
      // A's container is on the network: B is refused.
      const a = runIn(envA, nameA, `echo a-ran; ${sig.wait("a")}`, ["--keep-proxy"]);
      await sig.ready("a");
      const whileA = await runIn(envB, nameB, scriptB);
      assert.equal(whileA.code, 1, whileA.stdout + whileA.stderr);
      assert.match(
        whileA.stderr,
        new RegExp(
          `network ${m.network} is in use by containers of the data dir ` +
            `${await Deno.realPath(m.dataDir)}: one network serves one data dir`,
        ),
      );
      assert.doesNotMatch(whileA.stdout, /via-a/);
      await sig.go("a");
      const resA = await a;
      assert.equal(resA.code, 0, resA.stdout + resA.stderr);
      assert.match(resA.stderr, /the proxy keeps running \(pid \d+, --keep-proxy\)/);
      await rememberCa(m.dataDir);

      if (ROOT) {
        // A's proxy is still open on the network (--keep-proxy). Another run of A, on another
        // port, keeps it open: same data dir.
        const portA2 = m.port + 2;
        const again = await runIn(
          { ...m.env, NETMONITOR_PORT: String(portA2) },
          nameA2,
          "echo a2-ran",
        );
        assert.equal(again.code, 0, again.stdout + again.stderr);
        assert.doesNotMatch(again.stderr, new RegExp(`closing port ${m.port} `));
        assert.match(await iptablesRules(), new RegExp(`--dport ${m.port} -j ACCEPT`));

        // B is refused: its container would reach A's proxy, and get A's rules.
        const openToA = await runIn(envB, nameB, scriptB);
        assert.equal(openToA.code, 1, openToA.stdout + openToA.stderr);
        assert.match(
          openToA.stderr,
          new RegExp(
            `network ${m.network} is open to a netmonitor proxy that is not one of ${dirB}'s, ` +
              `on ${m.gateway}:${m.port}: another data dir's`,
          ),
        );
        assert.doesNotMatch(openToA.stdout, /via-a/);
        assert.doesNotMatch(openToA.stderr, /starting the proxy/);
        // A's port stays open for A's containers.
        assert.match(await iptablesRules(), new RegExp(`--dport ${m.port} -j ACCEPT`));
      }

      // Once A's proxy is gone, B may use the network; A's port is closed to it.
      await stopScriptProxy(m.dataDir);
      const afterA = await runIn(envB, nameB, scriptB);
      assert.equal(afterA.code, 0, afterA.stdout + afterA.stderr);
      assert.doesNotMatch(afterA.stdout, /via-a: origin/);
      assert.match(afterA.stdout, /own: 403/); // B's rules: none, so denied
      if (ROOT) assert.match(afterA.stderr, new RegExp(`closing port ${m.port} on`));
    } finally {
      await stopScriptProxy(dirB);
      await m.cleanup([nameA, nameA2, nameB]);
    }
  },
});

/** The mode bits of `path` (not following a symlink). */
async function modeOf(path: string): Promise<number> {
  return (await Deno.lstat(path)).mode! & 0o7777;
}

Deno.test({
  name: "docker separation: the data dir and the script's files are private, never symlinks",
  ignore: unavailable !== null,
  sanitizeResources: false,
  async fn() {
    const m = await setupMonitored({
      names: ["allowed.test"],
      runArgs: ["--non-interactive"],
      createNetwork: true, // the gateway, so the output file's name, is known before the run
    });
    const name = uniqueName("files");
    const dataDir = `${m.dir}/fresh/data`;
    const env = { ...m.env, NETMONITOR_DATA_DIR: dataDir };
    const out = `${dataDir}/netmonitor-proxy-${m.gateway}-${m.port}.out`;
    const pidFile = `${dataDir}/netmonitor-proxy-${m.gateway}-${m.port}.pid`;
    try {
      // umask 000, a data dir that does not exist yet: everything made owner-only.
      const loose = await exec("bash", [
        "-c",
        'umask 000 && exec bash "$0" "$@"',
        `${REPO}/docker/run-monitored.sh`,
        "--name",
        name,
        "--keep-proxy",
        TEST_IMAGE,
        "echo",
        "container-ran",
      ], { env, timeoutMs: 180_000 });
      assert.equal(loose.code, 0, loose.stdout + loose.stderr);
      assert.match(loose.stdout, /container-ran/);
      assert.equal(await modeOf(`${m.dir}/fresh`), 0o700);
      assert.equal(await modeOf(dataDir), 0o700);
      assert.equal(await modeOf(`${dataDir}/netmonitor-runs`), 0o700);
      for (const file of [out, pidFile, `${dataDir}/netmonitor-run.lock`]) {
        assert.equal(await modeOf(file), 0o600, `${file}: ${(await modeOf(file)).toString(8)}`);
      }
      await stopScriptProxy(dataDir);

      // Symlinks where the script writes (only the data dir's owner could put them there
      // now): replaced, never followed.
      const victim = `${m.dir}/victim.txt`;
      await Deno.writeTextFile(victim, "precious\n");
      const elsewhere = `${m.dir}/elsewhere`;
      await Deno.mkdir(elsewhere);
      await Deno.writeTextFile(`${elsewhere}/12345`, "keep\n");
      await Deno.remove(out);
      await Deno.remove(pidFile).catch(() => {});
      await Deno.remove(`${dataDir}/netmonitor-run.lock`);
      await Deno.remove(`${dataDir}/netmonitor-runs`, { recursive: true });
      await Deno.symlink(victim, out);
      await Deno.symlink(victim, pidFile);
      await Deno.symlink(`${m.dir}/made-through-lock`, `${dataDir}/netmonitor-run.lock`);
      await Deno.symlink(elsewhere, `${dataDir}/netmonitor-runs`);
      const linked = await runIn(env, name, "echo container-ran");
      assert.equal(linked.code, 0, linked.stdout + linked.stderr);
      assert.equal(await Deno.readTextFile(victim), "precious\n", "written through a symlink");
      assert.ok((await Deno.lstat(out)).isFile, "the output file is still a symlink");
      assert.match(await Deno.readTextFile(out), /Listening on/);
      assert.equal(await modeOf(out), 0o600);
      await assert.rejects(Deno.lstat(`${m.dir}/made-through-lock`), Deno.errors.NotFound);
      assert.ok((await Deno.lstat(`${dataDir}/netmonitor-runs`)).isDirectory);
      assert.deepEqual(await Array.fromAsync(Deno.readDir(elsewhere), (e) => e.name), ["12345"]);

      // A data dir that others can write to: refused, nothing touched.
      await Deno.chmod(dataDir, 0o777);
      const before = (await Array.fromAsync(Deno.readDir(dataDir), (e) => e.name)).sort();
      const open = await runIn(env, name, "echo container-ran");
      assert.equal(open.code, 1, open.stdout + open.stderr);
      assert.match(
        open.stderr,
        new RegExp(
          `the data dir ${dataDir} \\(drwxrwxrwx\\) can be written by other users: .*` +
            `chmod 700 ${dataDir}`,
        ),
      );
      assert.doesNotMatch(open.stdout, /container-ran/);
      assert.deepEqual(
        (await Array.fromAsync(Deno.readDir(dataDir), (e) => e.name)).sort(),
        before,
      );
      assert.equal(await modeOf(dataDir), 0o777);
      await Deno.chmod(dataDir, 0o755);

      if (ROOT) {
        // Someone else's data dir, even for root.
        await Deno.chown(dataDir, 65534, 65534);
        const theirs = await runIn(env, name, "echo container-ran");
        assert.equal(theirs.code, 1, theirs.stdout + theirs.stderr);
        assert.match(
          theirs.stderr,
          new RegExp(`the data dir ${dataDir} belongs to uid 65534, not to you \\(uid 0\\)`),
        );
        assert.doesNotMatch(theirs.stdout, /container-ran/);
        await Deno.chown(dataDir, 0, 0);

        // Reached through someone else's symlink (they could repoint it after the check):
        // netmonitor's own check refuses it before the script writes anything.
        const link = `${m.dir}/their-link`;
        await Deno.symlink(dataDir, link);
        const lchown = await new Deno.Command("chown", { args: ["-h", "65534:65534", link] })
          .output();
        assert.equal(lchown.code, 0);
        const listed = (await Array.fromAsync(Deno.readDir(dataDir), (e) => e.name)).sort();
        const viaLink = await runIn({ ...env, NETMONITOR_DATA_DIR: link }, name, "echo ran");
        assert.equal(viaLink.code, 1, viaLink.stdout + viaLink.stderr);
        assert.match(
          viaLink.stderr,
          new RegExp(`netmonitor: error: symlink "${link}" on the way to the data dir .*65534`),
        );
        assert.doesNotMatch(viaLink.stdout, /ran/);
        assert.deepEqual(
          (await Array.fromAsync(Deno.readDir(dataDir), (e) => e.name)).sort(),
          listed,
          "the script wrote in the data dir before the check",
        );
      }

      // Group and world read access is taken away from a data dir of one's own.
      const tightened = await runIn(env, name, "echo container-ran");
      assert.equal(tightened.code, 0, tightened.stdout + tightened.stderr);
      assert.equal(await modeOf(dataDir), 0o700);
    } finally {
      await stopScriptProxy(dataDir);
      await m.cleanup([name]);
    }
  },
});
