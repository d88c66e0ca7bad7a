/**
 * `netmonitor status`'s prompts line: where a proxy's prompts are answered
 * (its terminal, `netmonitor prompt` clients), what nobody's answer gets, and
 * what an older proxy that does not say where is shown as.
 */
import assert from "node:assert/strict";
import { describePrompts, formatStatus } from "../../cli/status.ts";

const asking = (terminal: boolean, clients: number) => ({
  prompts: true,
  prompting: { terminal, clients, default: "deny" as const, timeoutMs: 60_000 },
});

Deno.test("status prompts: the terminal and the connected `netmonitor prompt` clients", () => {
  assert.equal(
    describePrompts(asking(true, 1)),
    "answered in the proxy's terminal and by 1 connected `netmonitor prompt` client; " +
      "unanswered requests are denied after 60s",
  );
  assert.equal(
    describePrompts(asking(true, 0)),
    "answered in the proxy's terminal (no `netmonitor prompt` client connected); " +
      "unanswered requests are denied after 60s",
  );
  assert.equal(
    describePrompts(asking(false, 2)),
    "answered by 2 connected `netmonitor prompt` clients; unanswered requests are denied after 60s",
  );
  assert.equal(
    describePrompts(asking(false, 0)),
    "nobody can answer them now: no `netmonitor prompt` client is connected and the proxy does " +
      "not ask in its terminal (run `netmonitor prompt`); unanswered requests are denied after 60s",
  );
  assert.equal(
    describePrompts({
      prompts: true,
      prompting: { terminal: false, clients: 1, default: "allow", timeoutMs: 1500 },
    }),
    "answered by 1 connected `netmonitor prompt` client; unanswered requests are allowed after 1500ms",
  );
});

Deno.test("status prompts: a non-interactive proxy says what requests no rule covers get", () => {
  for (const [action, gets] of [["deny", "denied"], ["allow", "allowed"]] as const) {
    assert.equal(
      describePrompts({
        prompts: false,
        prompting: { terminal: false, clients: 0, default: action },
      }),
      `none (non-interactive: requests no rule covers are ${gets})`,
    );
  }
});

Deno.test("status prompts: an older proxy, which does not say where, is still shown sensibly", () => {
  assert.equal(
    describePrompts({ prompts: true }),
    "yes (answer with `netmonitor prompt`, or in the proxy's terminal if it has one)",
  );
  assert.equal(describePrompts({ prompts: false }), "none (non-interactive: it answers by itself)");
  assert.equal(describePrompts({}), "unknown");
  assert.equal(
    formatStatus({
      running: true,
      dataDir: "/d",
      proxies: [{ pid: 7, listen: "127.0.0.1:8080", prompts: true }],
    }),
    "netmonitor proxy running (pid 7)\n" +
      "  listening: http://127.0.0.1:8080\n" +
      "  prompts:   yes (answer with `netmonitor prompt`, or in the proxy's terminal if it has one)\n" +
      "data dir: /d\n",
  );
});
