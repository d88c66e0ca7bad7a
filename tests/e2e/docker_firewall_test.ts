/**
 * docker/run-monitored.sh fails closed around its host firewall, against a
 * real Docker engine:
 * - a port on the gateway held by something that is not netmonitor is never
 *   taken for the proxy (the firewall would open it to the container);
 * - when the firewall rules cannot be added, no container runs, unless the
 *   operator says --no-host-firewall;
 * - IPv6 to the host's side of the bridge is refused, by ip6tables or, when
 *   ip6tables fails, by switching IPv6 off on the bridge;
 * - a chain left half-built is rebuilt whole, never trusted;
 * - the proxy port is closed again when no netmonitor listens there (the
 *   proxy exited at start);
 * - the rules stay while the network does (a container joined just before
 *   the cleanup removed it);
 * - while a container runs, rules taken away from outside (a firewall reload
 *   or flush) are restored, for every run that shares the network, and the
 *   last run still removes them all; when they cannot be restored, the
 *   container is stopped.
 *
 * Failing iptables/ip6tables are simulated by commands of those names placed
 * first on PATH. Only listeners, containers and networks this test created
 * are addressed.
 */

import assert from "node:assert/strict";
import dgram from "node:dgram";
import {
  countingListener,
  docker,
  dockerUnavailable,
  exec,
  type Monitored,
  networkBridge,
  networkGateway,
  removeFirewall,
  REPO,
  runScript,
  setupMonitored,
  startTargetServer,
  TEST_IMAGE,
  uniqueName,
  waitFor,
} from "../_helpers/docker.ts";

const unavailable = await dockerUnavailable();
const ROOT = Deno.uid() === 0;
if (unavailable === null && !ROOT) {
  console.error("SKIP: docker firewall: not root, so the IPv6 firewall check is skipped");
}
/**
 * The forged-packet check builds a static helper for the container: gcc and a static libc
 * (libc6-dev) must be there.
 */
const STATIC_CC = 'd=$(mktemp -d) && printf "int main(void){return 0;}" >"$d/t.c" && ' +
  'gcc -static -o "$d/t" "$d/t.c"; r=$?; rm -rf "$d"; exit $r';
const GCC = unavailable === null && ROOT && (await exec("sh", ["-c", STATIC_CC])).code === 0;
if (unavailable === null && ROOT && !GCC) {
  console.error(
    "SKIP: docker firewall: gcc cannot build static programs here (apt-get install gcc " +
      "libc6-dev), so the forged-packet check is skipped",
  );
}

/** A directory holding commands named `names` that fail like iptables without privileges. */
async function failingTools(dir: string, names: string[]): Promise<string> {
  const bin = `${dir}/failing-bin`;
  await Deno.mkdir(bin, { recursive: true });
  for (const name of names) {
    await Deno.writeTextFile(
      `${bin}/${name}`,
      `#!/bin/sh\necho "${name}: Permission denied (you must be root)" >&2\nexit 4\n`,
      { mode: 0o755 },
    );
  }
  return bin;
}

/** The bridge's IPv6 link-local address (EUI-64 from its MAC, as the kernel forms it). */
async function linkLocal(bridge: string): Promise<string> {
  const mac = (await Deno.readTextFile(`/sys/class/net/${bridge}/address`)).trim().split(":");
  const b = mac.map((h) => parseInt(h, 16));
  const eui = [b[0] ^ 2, b[1], b[2], 0xff, 0xfe, b[3], b[4], b[5]];
  const groups = [0, 2, 4, 6].map((i) => ((eui[i] << 8) | eui[i + 1]).toString(16));
  return `fe80::${groups.join(":")}`;
}

/** `iptables -S` (all chains), or "" when iptables cannot be read. */
async function iptablesRules(): Promise<string> {
  const res = await exec("iptables", ["-w", "-S"]);
  return res.code === 0 ? res.stdout : "";
}

/** `nc` from the container to the host's `address:port`; its exit status is printed as `tcp=N`. */
function ncProbe(address: string, port: number): string {
  return `nc -w 3 ${address} ${port} </dev/null; echo "tcp=$?"`;
}

/** The `tcp=N` status that ncProbe printed. */
function tcpStatus(out: string): number {
  return Number(/tcp=(\d+)/.exec(out)?.[1] ?? NaN);
}

/** Runs `script` in a monitored container; the result of the script. */
function runIn(m: Monitored, name: string, script: string, env: Record<string, string> = {}) {
  return runScript(
    "run-monitored.sh",
    ["--name", name, TEST_IMAGE, "sh", "-c", script],
    { ...m.env, ...env },
    { timeoutMs: 180_000 },
  );
}

Deno.test({
  name: "docker firewall: a gateway port held by something other than netmonitor is refused",
  ignore: unavailable !== null,
  sanitizeResources: false,
  async fn() {
    const m = await setupMonitored({ names: ["allowed.test"], createNetwork: true });
    const name = uniqueName("foreign");
    const listeners: ReturnType<typeof countingListener>[] = [];
    try {
      // A development server that speaks HTTP, and a service that says nothing at all.
      const holders = [
        countingListener(m.gateway!, {
          hold: true,
          greeting: "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndev\n",
        }),
        countingListener(m.gateway!, { hold: true }),
      ];
      listeners.push(...holders);
      for (const holder of holders) {
        const res = await runIn(m, name, "echo container-ran", {
          NETMONITOR_PORT: String(holder.port),
        });
        assert.equal(res.code, 1, res.stdout + res.stderr);
        assert.match(
          res.stderr,
          new RegExp(`${m.gateway}:${holder.port} is in use by something that is not a netmonitor`),
        );
        assert.doesNotMatch(res.stderr, /reusing the proxy|starting the proxy/);
        assert.doesNotMatch(res.stdout, /container-ran/);
        assert.notEqual((await exec("docker", ["inspect", name])).code, 0, "the container ran");
        assert.ok(holder.accepted >= 1, "the script did not look at the listener");
        const rules = await exec("iptables", ["-w", "-S"]);
        if (rules.code === 0) {
          assert.doesNotMatch(rules.stdout, new RegExp(`--dport ${holder.port} `), "port opened");
        }
      }
    } finally {
      for (const l of listeners) await l.close();
      await m.cleanup([name]);
    }
  },
});

Deno.test({
  name: "docker firewall: no container runs without the firewall rules, unless --no-host-firewall",
  ignore: unavailable !== null,
  sanitizeResources: false,
  async fn() {
    const m = await setupMonitored({ names: ["allowed.test"], runArgs: ["--non-interactive"] });
    const name = uniqueName("nofw");
    try {
      const bin = await failingTools(m.dir, ["iptables", "iptables-restore", "ip6tables"]);
      const env = { PATH: `${bin}:${Deno.env.get("PATH")}`, NETMONITOR_HOST_FIREWALL: "1" };
      const refused = await runIn(m, name, "echo container-ran", env);
      assert.equal(refused.code, 1, refused.stdout + refused.stderr);
      assert.match(
        refused.stderr,
        /cannot add the host firewall rules: .*(Permission denied|root)/,
      );
      assert.match(refused.stderr, /--no-host-firewall/);
      assert.doesNotMatch(refused.stderr, /starting the proxy/);
      assert.doesNotMatch(refused.stdout, /container-ran/);
      // The network the script created for this run is gone again.
      assert.match(refused.stderr, /removed network/);
      assert.notEqual((await exec("docker", ["network", "inspect", m.network])).code, 0);

      // The operator's explicit choice: runs, with a warning that says what it means.
      const chosen = await runIn(m, name, "echo container-ran", {
        ...env,
        NETMONITOR_HOST_FIREWALL: "0",
      });
      assert.equal(chosen.code, 0, chosen.stdout + chosen.stderr);
      assert.match(chosen.stdout, /container-ran/);
      assert.match(chosen.stderr, /no host firewall \(--no-host-firewall\): every service/);
    } finally {
      await m.cleanup([name]);
    }
  },
});

Deno.test({
  name: "docker firewall: IPv6 to the host is refused by ip6tables, or else by switching it off",
  ignore: unavailable !== null || !ROOT,
  sanitizeResources: false,
  async fn() {
    const m = await setupMonitored({
      names: ["allowed.test"],
      runArgs: ["--non-interactive"],
      createNetwork: true,
    });
    const name = uniqueName("ipv6");
    // A host service on all IPv6 addresses, which includes the bridge's link-local one.
    const host = countingListener("::");
    try {
      const bridge = (await networkBridge(m.network))!;
      const target = `${await linkLocal(bridge)}%eth0`;
      // After the container's link-local address leaves duplicate address detection.
      const probe = "for i in $(seq 40); do " +
        "ip -6 addr show dev eth0 | grep -q 'fe80.*tentative' || break; sleep 0.25; done; " +
        `nc -w 3 ${target} ${host.port} </dev/null; echo "ipv6=$?"`;
      // A container whose own IPv6 is on (Docker's default is off; a user's --sysctl, or raw
      // frames, need not ask).
      const env = { NETMONITOR_DOCKER_ARGS: "--sysctl=net.ipv6.conf.all.disable_ipv6=0" };
      const ipv6Status = (out: string) => Number(/ipv6=(\d+)/.exec(out)?.[1] ?? NaN);

      // Control, without the host firewall: the probe reaches the host service.
      const open = await runIn(m, name, probe, { ...env, NETMONITOR_HOST_FIREWALL: "0" });
      assert.equal(open.code, 0, open.stdout + open.stderr);
      assert.equal(ipv6Status(open.stdout), 0, open.stdout + open.stderr);
      const reached = host.accepted;
      assert.ok(reached >= 1);

      // With ip6tables: INPUT and FORWARD reject the bridge.
      const withRules = await runIn(m, name, probe, env);
      assert.equal(withRules.code, 0, withRules.stdout + withRules.stderr);
      assert.notEqual(ipv6Status(withRules.stdout), 0, withRules.stdout);
      assert.equal(host.accepted, reached, "IPv6 reached the host through the firewall");
      const ip6 = await exec("ip6tables", ["-w", "-S"]);
      for (const chain of ["INPUT", "FORWARD"]) {
        assert.match(ip6.stdout, new RegExp(`-A ${chain} -i ${bridge} -j REJECT`), ip6.stdout);
      }
      await removeFirewall(m.network);

      // ip6tables failing: IPv6 is switched off on the bridge instead, and the run says so.
      const bin = await failingTools(m.dir, ["ip6tables"]);
      const fallback = await runIn(m, name, probe, {
        ...env,
        PATH: `${bin}:${Deno.env.get("PATH")}`,
      });
      assert.equal(fallback.code, 0, fallback.stdout + fallback.stderr);
      assert.match(fallback.stderr, /IPv6 is switched off on br-/);
      assert.notEqual(ipv6Status(fallback.stdout), 0, fallback.stdout);
      assert.equal(host.accepted, reached, "IPv6 reached the host with ip6tables failing");
      const flag = await Deno.readTextFile(`/proc/sys/net/ipv6/conf/${bridge}/disable_ipv6`);
      assert.equal(flag.trim(), "1");
    } finally {
      await host.close();
      await m.cleanup([name]);
    }
  },
});

Deno.test({
  name: "docker firewall: a half-built chain is rebuilt whole, and ports with no proxy are closed",
  ignore: unavailable !== null || !ROOT,
  sanitizeResources: false,
  async fn() {
    const m = await setupMonitored({
      names: ["allowed.test"],
      runArgs: ["--non-interactive"],
      createNetwork: true,
    });
    const name = uniqueName("halfbuilt");
    const host = countingListener(m.gateway!);
    try {
      // What a run killed between its first rules and its rejects leaves: the jump, an accept
      // for replies, and an accept for the port of a proxy that has died since -- where a
      // host service now listens.
      const bridge = (await networkBridge(m.network))!;
      const chain = `NETMONITOR-${bridge}`;
      const accept = (
        port: number,
      ) => ["-i", bridge, "-p", "tcp", "-d", m.gateway!, "--dport", String(port), "-j", "ACCEPT"];
      for (
        const args of [
          ["-N", chain],
          ["-A", chain, "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"],
          ["-A", chain, ...accept(host.port)],
          ["-I", "INPUT", "1", "-i", bridge, "-j", chain],
        ]
      ) {
        const res = await exec("iptables", ["-w", ...args]);
        assert.equal(res.code, 0, res.stderr);
      }
      const res = await runIn(m, name, ncProbe(m.gateway!, host.port));
      assert.equal(res.code, 0, res.stdout + res.stderr);
      assert.notEqual(tcpStatus(res.stdout), 0, res.stdout + res.stderr);
      // (The script itself asks that port whether it is a netmonitor: from the gateway.)
      assert.deepEqual(
        host.peers.filter((peer) => peer !== m.gateway),
        [],
        "the container reached a host port through the old chain",
      );
      const rules = await iptablesRules();
      assert.match(rules, new RegExp(`-A ${chain} -i ${bridge} -p tcp -j REJECT`), rules);
      // The user's network stays, and with it the chain; not the port of the stopped proxy.
      assert.doesNotMatch(rules, new RegExp(`--dport (${m.port}|${host.port}) `), rules);
      assert.match(res.stderr, new RegExp(`closing port ${host.port} on .*: no netmonitor proxy`));

      // A proxy that exits at start leaves no open port behind.
      const failed = await runIn(m, name, "echo container-ran", {
        NETMONITOR_RUN_ARGS: `${m.env.NETMONITOR_RUN_ARGS} --bogus-flag`,
      });
      assert.equal(failed.code, 1, failed.stdout + failed.stderr);
      assert.match(failed.stderr, /the proxy exited at start/);
      assert.doesNotMatch(failed.stdout, /container-ran/);
      assert.doesNotMatch(await iptablesRules(), new RegExp(`--dport ${m.port} `));

      // A run without the firewall still takes back what another run left open for its proxy.
      const added = await exec("iptables", ["-w", "-I", chain, "2", ...accept(m.port)]);
      assert.equal(added.code, 0, added.stderr);
      const unfenced = await runIn(m, name, "echo container-ran", {
        NETMONITOR_HOST_FIREWALL: "0",
      });
      assert.equal(unfenced.code, 0, unfenced.stdout + unfenced.stderr);
      assert.doesNotMatch(await iptablesRules(), new RegExp(`--dport ${m.port} `));
    } finally {
      await host.close();
      await m.cleanup([name]);
    }
  },
});

Deno.test({
  name: "docker firewall: the rules stay when a container joins before the network is removed",
  ignore: unavailable !== null || !ROOT,
  sanitizeResources: false,
  async fn() {
    const m = await setupMonitored({ names: ["allowed.test"], runArgs: ["--non-interactive"] });
    const name = uniqueName("race");
    const joiner = uniqueName("joiner");
    // A service on all the host's addresses, the gateway among them.
    const host = countingListener("0.0.0.0");
    try {
      // The race, made certain: `docker network rm` is preceded by another container joining.
      const realDocker = (await exec("sh", ["-c", "command -v docker"])).stdout.trim();
      const bin = `${m.dir}/race-bin`;
      await Deno.mkdir(bin);
      await Deno.writeTextFile(
        `${bin}/docker`,
        `#!/bin/sh
if [ "$1 $2" = "network rm" ]; then
  "${realDocker}" run -d --pull never --name ${joiner} --network "$3" ${TEST_IMAGE} sleep 120 >/dev/null
fi
exec "${realDocker}" "$@"
`,
        { mode: 0o755 },
      );
      const res = await runIn(m, name, "echo container-ran", {
        PATH: `${bin}:${Deno.env.get("PATH")}`,
      });
      assert.equal(res.code, 0, res.stdout + res.stderr);
      assert.match(res.stdout, /container-ran/);
      assert.equal(await docker(["inspect", "--format", "{{.State.Running}}", joiner]), "true");

      // The container that joined is still fenced in.
      const gateway = await networkGateway(m.network);
      const probe = await exec("docker", ["exec", joiner, "sh", "-c", ncProbe(gateway, host.port)]);
      assert.notEqual(tcpStatus(probe.stdout), 0, probe.stdout + probe.stderr);
      assert.equal(host.accepted, 0, "the joined container reached a host port");
      const bridge = (await networkBridge(m.network))!;
      assert.match(await iptablesRules(), new RegExp(`-A INPUT -i ${bridge} -j NETMONITOR-`));
      assert.match(
        res.stderr,
        new RegExp(`network ${m.network} stays \\(.*\\); so do its firewall`),
      );
      assert.doesNotMatch(res.stderr, /removed network/);
    } finally {
      await host.close();
      await m.cleanup([name, joiner]);
    }
  },
});

Deno.test({
  name:
    "docker firewall: nothing is forwarded from the network, even where Docker does not isolate it",
  ignore: unavailable !== null || !ROOT,
  sanitizeResources: false,
  async fn() {
    const m = await setupMonitored({
      names: ["allowed.test"],
      runArgs: ["--non-interactive"],
      createNetwork: true,
    });
    const name = uniqueName("forward");
    const control = uniqueName("forward-control");
    const bridgeNet = uniqueName("bridge");
    const target = uniqueName("target");
    const undo: string[][] = [];
    try {
      // "Outside": a web server on an ordinary bridge network.
      const targetIp = await startTargetServer(target, bridgeNet);
      // The network as Docker leaves it when it does not manage iptables (dockerd
      // --iptables=false, a common setup beside ufw, where FORWARD accepts), or after a
      // firewall reload dropped its rules: Docker's isolation rules of this --internal network
      // gone, and forwarding from its bridge accepted (here for this bridge only).
      const bridge = (await networkBridge(m.network))!;
      const subnet = await docker([
        "network",
        "inspect",
        "--format",
        "{{range .IPAM.Config}}{{.Subnet}}{{end}}",
        m.network,
      ]);
      for (
        const rule of [
          ["DOCKER-ISOLATION-STAGE-1", "!", "-s", subnet, "-o", bridge, "-j", "DROP"],
          ["DOCKER-ISOLATION-STAGE-1", "!", "-d", subnet, "-i", bridge, "-j", "DROP"],
        ]
      ) {
        if ((await exec("iptables", ["-w", "-D", ...rule])).code === 0) undo.push(["-A", ...rule]);
      }
      const accept = ["FORWARD", "-i", bridge, "-j", "ACCEPT"];
      assert.equal((await exec("iptables", ["-w", "-A", ...accept])).code, 0);
      undo.push(["-D", ...accept]);
      const probe = `curl --noproxy '*' -sS -m 5 http://${targetIp}/; echo "forward=$?"`;
      const forwardStatus = (out: string) => Number(/forward=(\d+)/.exec(out)?.[1] ?? NaN);

      // Control: a container on that network, before the script ran, reaches the target.
      const open = await exec("docker", [
        "run",
        "--rm",
        "--pull",
        "never",
        "--name",
        control,
        "--network",
        m.network,
        TEST_IMAGE,
        "sh",
        "-c",
        probe,
      ]);
      assert.match(open.stdout, /target-reached/, open.stdout + open.stderr);

      // The script's container does not: its own firewall refuses forwarding from the bridge.
      const res = await runIn(m, name, probe);
      assert.equal(res.code, 0, res.stdout + res.stderr);
      assert.doesNotMatch(res.stdout, /target-reached/, res.stdout);
      assert.notEqual(forwardStatus(res.stdout), 0, res.stdout + res.stderr);
      const rules = await iptablesRules();
      for (const dir of ["-i", "-o"]) {
        assert.match(rules, new RegExp(`-A FORWARD ${dir} ${bridge} -j REJECT`), rules);
      }
    } finally {
      for (const rule of undo.reverse()) await exec("iptables", ["-w", ...rule]);
      await exec("docker", ["rm", "-f", target, control]);
      await exec("docker", ["network", "rm", bridgeNet]);
      await m.cleanup([name]);
    }
  },
});

Deno.test({
  name:
    "docker firewall: the container cannot forge packets (no NET_RAW); given NET_RAW, a forged reply to a host flow is refused",
  ignore: unavailable !== null || !ROOT || !GCC,
  sanitizeResources: false,
  async fn() {
    const m = await setupMonitored({
      names: ["allowed.test"],
      runArgs: ["--non-interactive"],
      createNetwork: true,
    });
    const name = uniqueName("forged");
    const control = uniqueName("forged-control");
    const otherNet = uniqueName("other");
    // A host process's UDP flow (a DNS query, say) with a peer that is not on the monitored
    // network: here an unused address on another bridge, so nothing leaves this machine.
    const host = dgram.createSocket("udp4");
    const received: string[] = [];
    let refresh: ReturnType<typeof setInterval> | undefined;
    try {
      const spoof = `${m.dir}/spoof-udp`;
      const cc = await exec("gcc", [
        "-static",
        "-O2",
        "-o",
        spoof,
        `${REPO}/tests/testdata/docker/spoof-udp.c`,
      ]);
      assert.equal(cc.code, 0, cc.stderr);
      await docker(["network", "create", otherNet]);
      const hostAddress = await networkGateway(otherNet);
      const peer = hostAddress.replace(/\.\d+$/, ".99");
      const peerPort = 5353;
      await new Promise<void>((resolve) => host.bind(0, hostAddress, () => resolve()));
      host.on("message", (msg, from) => received.push(`${from.address}:${from.port} ${msg}`));
      const hostPort = host.address().port;
      // Sent again and again, so that the flow (conntrack's entry) is there all along.
      const ask = () => host.send("query", peerPort, peer);
      ask();
      refresh = setInterval(ask, 1000);
      // From inside a container, with Docker's default capabilities (NET_RAW): a datagram that
      // claims to come from the peer, sent to the host's side of the flow.
      const forge = (text: string) =>
        `for i in 1 2 3 4 5; do /spoof ${peer} ${peerPort} ${hostAddress} ${hostPort} ${text}; ` +
        "sleep 0.2; done; echo forged";
      const mount = ["-v", `${spoof}:/spoof:ro`];

      // Control: without the script's firewall (before it ran), the forged datagram is taken.
      const open = await exec("docker", [
        "run",
        "--rm",
        "--pull",
        "never",
        "--name",
        control,
        ...mount,
        "--network",
        m.network,
        TEST_IMAGE,
        "sh",
        "-c",
        forge("control"),
      ]);
      assert.match(open.stdout, /forged/, open.stdout + open.stderr);
      await new Promise((r) => setTimeout(r, 500));
      if (!received.some((r) => r.endsWith(" control"))) {
        // A host with strict reverse-path filtering drops such packets before any rule.
        console.error(
          "SKIP: docker firewall: forged packets do not reach the host here (rp_filter)",
        );
        return;
      }

      // The script's container has no NET_RAW: it cannot open a raw socket at all.
      const capless = await runIn(m, name, `(${forge("no-net-raw")}) 2>&1`, {
        NETMONITOR_DOCKER_ARGS: mount.join(" "),
      });
      assert.equal(capless.code, 0, capless.stdout + capless.stderr);
      assert.match(capless.stdout, /socket: Operation not permitted/, capless.stdout);

      // Given it back (--docker-arg --cap-add=NET_RAW), the host firewall still refuses.
      const res = await runIn(m, `${name}-raw`, forge("through-firewall"), {
        NETMONITOR_DOCKER_ARGS: [...mount, "--cap-add=NET_RAW"].join(" "),
      });
      assert.equal(res.code, 0, res.stdout + res.stderr);
      assert.match(res.stdout, /forged/, res.stdout + res.stderr);
      assert.doesNotMatch(res.stdout + res.stderr, /not permitted/, res.stdout + res.stderr);
      await new Promise((r) => setTimeout(r, 500));
      assert.deepEqual(
        received.filter((r) => / (no-net-raw|through-firewall)$/.test(r)),
        [],
        "a forged packet from the container reached a host socket",
      );
    } finally {
      clearInterval(refresh);
      host.close();
      await exec("docker", ["rm", "-f", control]);
      await m.cleanup([name, `${name}-raw`]);
      await exec("docker", ["network", "rm", otherNet]);
    }
  },
});

/** A run of run-monitored.sh in the background, its output collected as it comes. */
interface BackgroundRun {
  name: string;
  readonly stderr: string;
  /** The script's exit status and output, once it exited. */
  done: Promise<{ code: number; stdout: string; stderr: string }>;
  kill(signal: Deno.Signal): void;
}

/**
 * Starts a monitored container that waits until /tmp/stop exists in it (`docker exec NAME touch
 * /tmp/stop`), then exits with `code`; SIGTERM ends it at once.
 */
function startRun(
  m: Monitored,
  name: string,
  env: Record<string, string> = {},
  code = 0,
): BackgroundRun {
  const script = `trap 'exit 0' TERM; until [ -e /tmp/stop ]; do sleep 0.2; done; exit ${code}`;
  const child = new Deno.Command("bash", {
    args: [`${REPO}/docker/run-monitored.sh`, "--name", name, TEST_IMAGE, "sh", "-c", script],
    env: { ...m.env, ...env },
    cwd: REPO,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let stderr = "";
  const collect = (async () => {
    for await (const text of child.stderr.pipeThrough(new TextDecoderStream())) stderr += text;
  })();
  const stdout = new Response(child.stdout).text();
  const done = (async () => {
    const status = await child.status;
    await collect;
    return { code: status.code, stdout: await stdout, stderr };
  })();
  return {
    name,
    get stderr() {
      return stderr;
    },
    done,
    kill(signal) {
      try {
        child.kill(signal);
      } catch { /* exited */ }
    },
  };
}

/** The run's result, once it ended; throws after `timeoutMs`. */
async function ended(run: BackgroundRun, timeoutMs = 60_000) {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`${run.name}: the run did not end:\n${run.stderr}`)),
      timeoutMs,
    );
  });
  try {
    return await Promise.race([run.done, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Waits until the run's container runs; fails with the script's output if the script ends. */
async function waitRunning(run: BackgroundRun): Promise<void> {
  let ended = false;
  run.done.then(() => ended = true);
  await waitFor(`container ${run.name} running`, async () => {
    if (ended) throw new Error(`the run ended early:\n${run.stderr}`);
    const res = await exec("docker", ["inspect", "--format", "{{.State.Running}}", run.name]);
    return res.stdout.trim() === "true";
  }, 120_000);
}

/** The pids of the script's processes (the script and its watcher) for container `name`. */
async function scriptProcesses(name: string): Promise<number[]> {
  const pids: number[] = [];
  for await (const entry of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    const cmdline = await Deno.readTextFile(`/proc/${entry.name}/cmdline`).catch(() => "");
    const args = cmdline.split("\0");
    if (
      /(^|\/)bash$/.test(args[0]) && args[1]?.endsWith("/run-monitored.sh") && args.includes(name)
    ) {
      pids.push(Number(entry.name));
    }
  }
  return pids;
}

/** The rules that mention `bridge`, from iptables-save and ip6tables-save. */
async function bridgeRules(bridge: string): Promise<string[]> {
  const lines: string[] = [];
  for (const cmd of ["iptables-save", "ip6tables-save"]) {
    const res = await exec(cmd, []);
    lines.push(...res.stdout.split("\n").filter((l) => l.includes(bridge)));
  }
  return lines;
}

/** True when every rule the script adds for the bridge (and its proxy port) is there. */
async function firewallIntact(bridge: string, gateway: string, port: number): Promise<boolean> {
  const chain = `NETMONITOR-${bridge}`;
  const checks = [
    ["iptables", "INPUT", "-i", bridge, "-j", chain],
    ["iptables", "INPUT", "-d", gateway, "-j", chain],
    ["iptables", chain, "-i", bridge, "-j", "REJECT", "--reject-with", "icmp-admin-prohibited"],
    ["iptables", chain, "-i", bridge, "-p", "tcp", "-d", gateway, "--dport", String(port)]
      .concat(["-j", "ACCEPT"]),
    ["iptables", "FORWARD", "-i", bridge, "-j", "REJECT"],
    ["iptables", "FORWARD", "-o", bridge, "-j", "REJECT"],
    ["ip6tables", "INPUT", "-i", bridge, "-j", "REJECT"],
    ["ip6tables", "FORWARD", "-i", bridge, "-j", "REJECT"],
  ];
  for (const [cmd, ...rule] of checks) {
    if ((await exec(cmd, ["-w", "-C", ...rule])).code !== 0) return false;
  }
  return true;
}

Deno.test({
  name:
    "docker firewall: rules taken away while containers run (a firewall reload) are restored, and removed by the last run",
  ignore: unavailable !== null || !ROOT,
  sanitizeResources: false,
  async fn() {
    const m = await setupMonitored({ names: ["allowed.test"], runArgs: ["--non-interactive"] });
    const first = startRun(m, uniqueName("watch-a"));
    let second: BackgroundRun | undefined;
    // A service on all the host's addresses, the gateway among them.
    const host = countingListener("0.0.0.0");
    let bridge = "";
    try {
      await waitRunning(first);
      // A second run on the same network shares the chain and the proxy.
      second = startRun(m, uniqueName("watch-b"), {}, 3);
      await waitRunning(second);
      const runs = [first, second];
      bridge = (await networkBridge(m.network))!;
      const gateway = await networkGateway(m.network);
      const chain = `NETMONITOR-${bridge}`;
      const ipt = async (...args: string[]) => {
        const res = await exec("iptables", ["-w", ...args]);
        assert.equal(res.code, 0, res.stderr);
      };
      assert.ok(await firewallIntact(bridge, gateway, m.port), await iptablesRules());
      for (const run of runs) {
        assert.ok((await scriptProcesses(run.name)).length >= 2, "no watcher");
      }

      /** The container is fenced in: the host port refused, the proxy port open. */
      const assertFenced = async (run: BackgroundRun) => {
        const probe = await exec("docker", [
          "exec",
          run.name,
          "sh",
          "-c",
          ncProbe(gateway, host.port),
        ]);
        assert.notEqual(tcpStatus(probe.stdout), 0, probe.stdout + probe.stderr);
        // Any answer of the proxy (a 403: no rule allows it) shows the port is open.
        const viaProxy = await exec("docker", [
          "exec",
          run.name,
          "sh",
          "-c",
          "curl -s -o /dev/null -w '%{http_code}' -m 10 http://allowed.test/",
        ]);
        assert.match(viaProxy.stdout, /^[1-5]\d\d$/, viaProxy.stdout + viaProxy.stderr);
      };
      /** Each run's warnings that its watcher restored the rules. */
      const warnings = (run: BackgroundRun) =>
        run.stderr.split("\n").filter((l) => l.includes("was changed from outside"));
      /** Takes rules away; waits for a watcher to put them back and say what was missing. */
      const tamper = async (what: RegExp, action: () => Promise<void>) => {
        const seen = runs.map((run) => warnings(run).length);
        const since = () => runs.flatMap((run, i) => warnings(run).slice(seen[i])).join("\n");
        await action();
        await waitFor(
          `the rules restored after: ${what}`,
          async () => await firewallIntact(bridge, gateway, m.port) && what.test(since()),
          30_000,
        );
        assert.match(since(), /Restored the rules/);
        for (const run of runs) await assertFenced(run);
      };
      for (const run of runs) await assertFenced(run);

      // The jumps to the chain go (what a reload of INPUT does).
      await tamper(new RegExp(`missing: the INPUT jump from ${bridge} to ${chain}`), async () => {
        await ipt("-D", "INPUT", "-i", bridge, "-j", chain);
        await ipt("-D", "INPUT", "-d", gateway, "-j", chain);
      });
      // The chain is emptied (iptables -F flushes every chain).
      await tamper(
        new RegExp(`missing: the rejects in ${chain}, the accept of port ${m.port}`),
        () => ipt("-F", chain),
      );
      // A FORWARD reject and an ip6tables reject go.
      await tamper(
        new RegExp(
          `the FORWARD reject from ${bridge}[\\s\\S]*the ip6tables INPUT reject from ${bridge}`,
        ),
        async () => {
          await ipt("-D", "FORWARD", "-i", bridge, "-j", "REJECT");
          const res = await exec("ip6tables", ["-w", "-D", "INPUT", "-i", bridge, "-j", "REJECT"]);
          assert.equal(res.code, 0, res.stderr);
        },
      );
      // All of it, chain and all (a reload that writes the whole table).
      await tamper(
        new RegExp(`missing: the INPUT jump from ${bridge}[\\s\\S]*the rejects in ${chain}`),
        () => removeFirewall(m.network),
      );

      // The first run ends (SIGTERM): its watcher goes with it; the rules stay for the second.
      first.kill("SIGTERM");
      const firstDone = await ended(first);
      assert.equal(firstDone.code, 143, firstDone.stderr);
      assert.deepEqual(await scriptProcesses(first.name), [], "a process of the first run is left");
      assert.ok(await firewallIntact(bridge, gateway, m.port), await iptablesRules());
      runs.splice(0, 1);
      await tamper(new RegExp(`missing: the rejects in ${chain}`), () => ipt("-F", chain));
      assert.match(second.stderr, /Restored the rules/);

      // The last run ends (its container fails): everything it added is gone, watcher too.
      await docker(["exec", second.name, "touch", "/tmp/stop"]);
      const secondDone = await ended(second);
      assert.equal(secondDone.code, 3, secondDone.stderr);
      assert.match(secondDone.stderr, /removed network/);
      assert.deepEqual(await scriptProcesses(second.name), [], "a process of the run is left");
      assert.deepEqual(await bridgeRules(bridge), []);
      assert.doesNotMatch(await iptablesRules(), new RegExp(chain));
      assert.equal(host.accepted, 0, "a container reached a host port");

      // Without the host firewall, there is nothing to watch: no watcher.
      const unfenced = startRun(m, uniqueName("watch-none"), { NETMONITOR_HOST_FIREWALL: "0" });
      try {
        await waitRunning(unfenced);
        assert.equal((await scriptProcesses(unfenced.name)).length, 1);
      } finally {
        await exec("docker", ["exec", unfenced.name, "touch", "/tmp/stop"]);
        const res = await ended(unfenced);
        assert.equal(res.code, 0, res.stderr);
        assert.doesNotMatch(res.stderr, /changed from outside/);
      }
    } finally {
      for (const run of [first, second]) {
        if (!run) continue;
        run.kill("SIGTERM");
        await run.done;
      }
      await host.close();
      await m.cleanup([first.name, ...(second ? [second.name] : [])]);
    }
  },
});

Deno.test({
  name: "docker firewall: when the rules cannot be restored, the container is stopped",
  ignore: unavailable !== null || !ROOT,
  sanitizeResources: false,
  async fn() {
    const m = await setupMonitored({ names: ["allowed.test"], runArgs: ["--non-interactive"] });
    // iptables-restore (each name the script may pick) works once, for the run's setup, and
    // then fails: a firewall that can no longer be written.
    const bin = `${m.dir}/once-bin`;
    await Deno.mkdir(bin);
    for (const tool of ["iptables-restore", "iptables-nft-restore", "iptables-legacy-restore"]) {
      const real = (await exec("sh", ["-c", `PATH=$PATH:/usr/sbin:/sbin command -v ${tool}`]))
        .stdout.trim();
      if (!real) continue;
      await Deno.writeTextFile(
        `${bin}/${tool}`,
        `#!/bin/sh
mkdir "${bin}/applied" 2>/dev/null && exec "${real}" "$@"
echo "${tool}: Permission denied (you must be root)" >&2
exit 4
`,
        { mode: 0o755 },
      );
    }
    const run = startRun(m, uniqueName("watch-fail"), { PATH: `${bin}:${Deno.env.get("PATH")}` });
    let bridge = "";
    try {
      await waitRunning(run);
      bridge = (await networkBridge(m.network))!;
      const chain = `NETMONITOR-${bridge}`;
      const del = await exec("iptables", ["-w", "-D", "INPUT", "-i", bridge, "-j", chain]);
      assert.equal(del.code, 0, del.stderr);
      const res = await ended(run);
      assert.equal(res.code, 1, res.stderr);
      assert.match(
        res.stderr,
        new RegExp(
          `missing: the INPUT jump from ${bridge} to ${chain}\\), and restoring it failed: .*` +
            `Permission denied.*Stopping container ${run.name}`,
        ),
      );
      assert.match(res.stderr, /was stopped: its host firewall rules were taken away/);
      assert.doesNotMatch(res.stderr, /Restored the rules/);
      assert.notEqual((await exec("docker", ["inspect", run.name])).code, 0, "container left");
      assert.deepEqual(await scriptProcesses(run.name), [], "a process of the run is left");
      // The cleanup still removed the rest (and the network).
      assert.match(res.stderr, /removed network/);
      assert.deepEqual(await bridgeRules(bridge), []);
    } finally {
      run.kill("SIGTERM");
      await run.done;
      await m.cleanup([run.name]);
    }
  },
});
