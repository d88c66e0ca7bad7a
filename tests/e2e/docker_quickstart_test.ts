/**
 * The original design's Quick Start, typed as a person would in three real
 * terminals (tmux) against a real Docker engine:
 *
 * 1. `./docker/run-monitored.sh` -- a shell in the container; a request to a
 *    new host waits for the operator;
 * 2. `./docker/manage-firewall.sh --prompt` in a second terminal answers it;
 *    `./docker/manage-firewall.sh` opens the management menu;
 * 3. `./docker/manage-firewall.sh --stats` shows the request.
 *
 * The proxy uses the default port 8080 on the test's own network gateway.
 * api.github.com is mapped by --resolve to this test's loopback origin.
 */

import assert from "node:assert/strict";
import { has } from "../_helpers/tools.ts";
import {
  dockerUnavailable,
  exec,
  REPO,
  runScript,
  setupMonitored,
  uniqueName,
} from "../_helpers/docker.ts";
import { TmuxSession } from "./_tmux.ts";

const unavailable = has("tmux") ? await dockerUnavailable() : "tmux is not installed";

Deno.test({
  name: "docker quick start: run-monitored.sh, answer in another terminal, manage, stats",
  ignore: unavailable !== null,
  sanitizeResources: false, // Deno.serve's TLS listener closes asynchronously after shutdown()
  async fn() {
    const m = await setupMonitored({
      names: ["api.github.com"],
      port: 8080,
      runArgs: ["--prompt-timeout", "120s"],
    });
    const env = { ...m.env };
    delete env.NETMONITOR_PORT; // the default, 8080, as written
    const name = uniqueName("quickstart");
    const sessions: TmuxSession[] = [];
    try {
      // Terminal 1: the container.
      const container = await TmuxSession.start({
        cmd: ["./docker/run-monitored.sh", "--name", name],
        cwd: REPO,
        env,
      });
      sessions.push(container);
      let screen = await container.waitFor(/\/ # $/m, 120_000);
      assert.match(screen, /starting the proxy on \d+\.\d+\.\d+\.\d+:8080/);
      assert.match(screen, /answer prompts in another terminal with: netmonitor prompt/);
      const url = m.origins.url("https", "api.github.com", "/repos/user/repo");
      await container.type(`curl -sS ${url}; echo "[rc=$?]"`);
      await container.press("Enter");

      // Terminal 2: the operator answers.
      const prompt = await TmuxSession.start({
        cmd: ["./docker/manage-firewall.sh", "--prompt"],
        cwd: REPO,
        env,
      });
      sessions.push(prompt);
      screen = await prompt.waitFor("Your choice [1]:", 60_000);
      assert.match(screen, /Network Access Request/);
      assert.match(screen, /Host: api\.github\.com/);
      assert.match(screen, /Method: GET/);
      assert.match(screen, /Path: \/repos\/user\/repo/);
      assert.match(screen, /3\. Always allow api\.github\.com/);
      // Read the prompt first, as a person does: keys typed the instant it appears are ignored.
      await new Promise((r) => setTimeout(r, 600));
      await prompt.type("3");
      await prompt.press("Enter");

      screen = await container.waitFor(/\[rc=\d+\]/, 60_000);
      assert.match(screen, /origin https api\.github\.com(:\d+)? GET \/repos\/user\/repo/);
      assert.match(screen, /\[rc=0\]/);

      // Step 2: the management menu, in another terminal.
      const manage = await TmuxSession.start({
        cmd: ["./docker/manage-firewall.sh"],
        cwd: REPO,
        env,
      });
      sessions.push(manage);
      screen = await manage.waitFor(/Your choice \[1-9\]: $/m, 60_000);
      assert.match(screen, /Network Firewall Management/);
      await manage.type("5"); // List rules: the answer saved one
      await manage.press("Enter");
      screen = await manage.waitFor(/api\.github\.com.*allow-domain/, 30_000);
      await manage.waitFor(/Your choice \[1-9\]: $/m, 30_000, screen.lastIndexOf("allow-domain"));
      await manage.type("9");
      await manage.press("Enter");
      assert.equal(await manage.exitCode(30_000), 0);

      // Step 3: statistics only.
      const stats = await runScript("manage-firewall.sh", ["--stats"], env);
      assert.equal(stats.code, 0, stats.stderr);
      assert.match(stats.stdout, /api\.github\.com/);

      // Leave the container: the script cleans up after itself.
      await container.type("exit");
      await container.press("Enter");
      assert.equal(await container.exitCode(60_000), 0);
      screen = await container.screen();
      assert.match(screen, /stopping the proxy/);
      assert.match(screen, new RegExp(`removed network ${m.network}`));
      assert.notEqual((await exec("docker", ["network", "inspect", m.network])).code, 0);
    } finally {
      for (const s of sessions) await s[Symbol.asyncDispose]();
      await m.cleanup([name]);
    }
  },
});
