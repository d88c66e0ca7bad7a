/**
 * Leak-proofness of docker/run-monitored.sh against a real Docker engine: a
 * process in the monitored container that ignores the proxy settings reaches
 * nothing -- not a container on an ordinary bridge network (which a container
 * on that bridge does reach), not the host's other ports, not the host's
 * other addresses, not DNS -- while the proxy keeps working.
 *
 * Only containers, networks and listeners this test created are addressed.
 */

import assert from "node:assert/strict";
import {
  countingListener,
  docker,
  dockerCleanup,
  dockerUnavailable,
  exec,
  networkGateway,
  removeFirewall,
  runScript,
  setupMonitored,
  startTargetServer,
  TEST_IMAGE,
  uniqueName,
  waitFor,
} from "../_helpers/docker.ts";

const unavailable = await dockerUnavailable();

/** The host firewall needs root (or passwordless sudo, which these tests do not assume). */
const FIREWALL = Deno.uid() === 0;
if (unavailable === null && !FIREWALL) {
  console.error("SKIP: docker isolation: not root, so the host-firewall checks are skipped");
}

Deno.test({
  name: "docker isolation: a connection that ignores the proxy reaches nothing outside",
  ignore: unavailable !== null,
  sanitizeResources: false, // Deno.serve's TLS listener closes asynchronously after shutdown()
  async fn() {
    const m = await setupMonitored({
      names: ["allowed.test"],
      rules: { "allowed.test": "allow-domain" },
      createNetwork: true,
    });
    const bridgeNet = uniqueName("bridge");
    const target = uniqueName("target");
    const name = uniqueName("leak");
    const listeners: ReturnType<typeof countingListener>[] = [];
    try {
      // "Outside": a web server in a container on an ordinary bridge network.
      const targetIp = await startTargetServer(target, bridgeNet);
      // Control: from the same ordinary bridge, the target answers.
      const control = await exec("docker", [
        "run",
        "--rm",
        "--pull",
        "never",
        "--network",
        bridgeNet,
        TEST_IMAGE,
        "sh",
        "-c",
        `for i in 1 2 3 4 5 6 7 8 9 10; do curl -sS -m 3 http://${targetIp}/ && exit 0; sleep 0.5; done; exit 1`,
      ]);
      assert.equal(control.code, 0, control.stderr);
      assert.match(control.stdout, /target-reached/);

      // The host's other ports: on the monitored network's gateway, and on another host address.
      const onGateway = countingListener(m.gateway!);
      listeners.push(onGateway);
      const bridgeGateway = await networkGateway(bridgeNet);
      const onOtherAddress = countingListener(bridgeGateway);
      listeners.push(onOtherAddress);

      const o = m.origins;
      // The probes run side by side (each waits out its own timeout), then the proxy check.
      const probes = [
        `curl --noproxy '*' -sS -m 3 http://${targetIp}/; echo "direct-target=$?"`,
        `nc -w 3 ${targetIp} 80 </dev/null; echo "raw-tcp-target=$?"`,
        `curl --noproxy '*' -sS -m 3 http://${m.gateway}:${onGateway.port}/; echo "host-port=$?"`,
        `curl --noproxy '*' -sS -m 3 http://${bridgeGateway}:${onOtherAddress.port}/; echo "host-address=$?"`,
        `env -u http_proxy -u HTTP_PROXY curl -sS -m 5 ${
          o.url("http", "allowed.test", "/direct")
        }; ` +
        'echo "no-proxy-name=$?"',
        `timeout 6 nslookup allowed.test >/dev/null 2>&1; echo "dns=$?"`,
      ];
      // Then it stays up until the test says go, so the proxy can be probed from elsewhere.
      const shared = `${m.dir}/shared`;
      await Deno.mkdir(shared);
      const script = probes.map((p) => `(${p}) &`).join(" ") + " wait; " +
        `echo "via-proxy: $(curl -sS -m 30 ${o.url("http", "allowed.test", "/proxied")})"; ` +
        "touch /shared/probed; while [ ! -f /shared/go ]; do sleep 0.1; done";
      const run = runScript(
        "run-monitored.sh",
        ["--name", name, TEST_IMAGE, "sh", "-c", script],
        { ...m.env, NETMONITOR_DOCKER_ARGS: `-v ${shared}:/shared` },
        { timeoutMs: 180_000 },
      );
      await waitFor(
        "the probes",
        () => Deno.stat(`${shared}/probed`).then(() => true, () => false),
        120_000,
      );
      // The proxy listens (the host reaches it), but only the monitored network may use it:
      // a container on another network is refused.
      (await Deno.connect({ hostname: m.gateway!, port: m.port })).close();
      const stranger = await exec("docker", [
        "run",
        "--rm",
        "--pull",
        "never",
        "--network",
        bridgeNet,
        TEST_IMAGE,
        "sh",
        "-c",
        `curl -sS -m 5 -x http://${m.gateway}:${m.port} http://allowed.test/; echo "stranger=$?"`,
      ]);
      await Deno.writeTextFile(`${shared}/go`, "");
      const res = await run;
      if (FIREWALL) assert.match(stranger.stdout, /stranger=7/, stranger.stdout + stranger.stderr);
      assert.equal(res.code, 0, res.stdout + res.stderr);
      if (Deno.env.get("NM_E2E_DEBUG")) console.log(res.stdout, res.stderr);
      const status = (key: string) => {
        const match = new RegExp(`${key}=(\\d+)`).exec(res.stdout);
        assert.ok(match, `${key} missing:\n${res.stdout}\n${res.stderr}`);
        return Number(match[1]);
      };
      for (const key of ["direct-target", "raw-tcp-target", "no-proxy-name", "dns"]) {
        assert.notEqual(status(key), 0, `${key} succeeded:\n${res.stdout}`);
      }
      assert.doesNotMatch(res.stdout, /target-reached/);
      assert.match(res.stdout, /via-proxy: origin http allowed\.test(:\d+)? GET \/proxied/);
      if (FIREWALL) {
        // The host firewall refuses the host's other ports and addresses at once (reset).
        assert.equal(status("host-port"), 7, res.stdout);
        assert.equal(status("host-address"), 7, res.stdout);
        assert.equal(onGateway.accepted, 0, "a host port other than the proxy's was reached");
        assert.equal(onOtherAddress.accepted, 0, "another host address was reached");
      } else {
        assert.match(res.stderr, /no host firewall \(--no-host-firewall\)/);
      }
      // The network was there before: the script keeps it (and says nothing about removing it).
      assert.doesNotMatch(res.stderr, /removed network/);
      assert.equal((await exec("docker", ["network", "inspect", m.network])).code, 0);
      if (FIREWALL) {
        // The proxy it started is stopped, so its port is closed again; the rest stays shut.
        const rules = await exec("iptables", ["-w", "-S"]);
        assert.doesNotMatch(rules.stdout, new RegExp(`--dport ${m.port} .*ACCEPT`), rules.stdout);
        assert.match(rules.stdout, /-A NETMONITOR-br-\S+ -i br-\S+ -p tcp -j REJECT/);
      }
    } finally {
      for (const l of listeners) await l.close();
      await removeFirewall(m.network);
      await dockerCleanup([name, target], [bridgeNet]);
      await m.cleanup();
    }
  },
});

Deno.test({
  name: "docker isolation: the script refuses a network that is not internal",
  ignore: unavailable !== null,
  sanitizeResources: false,
  async fn() {
    const m = await setupMonitored({ names: ["allowed.test"] });
    try {
      await docker(["network", "create", m.network]); // an ordinary bridge: containers could bypass
      const res = await runScript("run-monitored.sh", [TEST_IMAGE, "true"], m.env);
      assert.equal(res.code, 1);
      assert.match(res.stderr, new RegExp(`network ${m.network} is not internal`));
      assert.doesNotMatch(res.stderr, /starting the proxy/);
    } finally {
      await m.cleanup();
    }
  },
});
