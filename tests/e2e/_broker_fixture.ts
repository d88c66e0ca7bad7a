/**
 * Test-only stand-in for the proxy's decision side: a real DecisionBroker on a
 * real rules file, with the real terminal prompter and/or the real control
 * socket, and requests injected by the test instead of arriving over HTTP.
 *
 *   deno run -A tests/e2e/_broker_fixture.ts --data-dir DIR [--terminal] [--socket]
 *     [--timeout MS] [--request JSON]... [--out FILE]
 *
 * `--request` decides a DecideInput (JSON) at start. Without `--terminal`,
 * stdin lines are DecideInputs too, and stdin EOF ends the fixture. Every
 * decision, then `{"done":true}`, is written as a JSON line to `--out`
 * (default stdout); `{"ready":true}` comes first, once everything listens.
 * @module
 */

import { type DecideInput, DecisionBroker } from "../../lib/decide/broker.ts";
import { startControlServer } from "../../lib/decide/control.ts";
import { dataPaths } from "../../lib/paths.ts";
import { RulesStore } from "../../lib/rules/mod.ts";
import { createTerminalPrompter, StdinLineReader } from "../../cli/terminal_prompt.ts";

const args = [...Deno.args];
const opt = (name: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const requests = args.flatMap((a, i) => a === "--request" ? [JSON.parse(args[i + 1])] : []);
const paths = dataPaths(opt("--data-dir"));
const out = opt("--out");
const enc = new TextEncoder();
const emit = (o: unknown) => {
  const line = enc.encode(JSON.stringify(o) + "\n");
  if (out) Deno.writeFileSync(out, line, { append: true });
  else Deno.stdout.writeSync(line);
};

const rules = new RulesStore(paths.rules);
await rules.load();
const broker = new DecisionBroker({
  rules,
  promptTimeoutMs: Number(opt("--timeout") ?? 60_000),
});
const server = args.includes("--socket")
  ? await startControlServer(broker, paths.controlSocket)
  : undefined;
let lines: StdinLineReader | undefined;
if (args.includes("--terminal")) {
  lines = new StdinLineReader();
  const write = (s: string) => void Deno.stdout.writeSync(enc.encode(s));
  broker.addPrompter(createTerminalPrompter({ lines, write }));
}
emit({ ready: true });

const decide = async (input: DecideInput) => {
  emit({ host: input.target.host, path: input.target.path, decision: await broker.decide(input) });
};
const pending = requests.map(decide);
if (!args.includes("--terminal")) {
  const dec = new TextDecoder();
  let buf = "";
  for await (const chunk of Deno.stdin.readable) {
    buf += dec.decode(chunk, { stream: true });
    for (let i = buf.indexOf("\n"); i >= 0; i = buf.indexOf("\n")) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      if (line.trim()) pending.push(decide(JSON.parse(line)));
    }
  }
}
await Promise.all(pending);
emit({ done: true });
broker.close();
await server?.close();
await lines?.close();
Deno.exit(0);
