/**
 * The proxy engine (lib/proxy) without the CLI: allow-all decisions, records to
 * the access log, no prompts, no rules. It accepts the subset of
 * `netmonitor run`'s command line the benchmark uses, so the benchmark can run
 * it in netmonitor's column to separate engine cost from CLI cost:
 *
 *   deno task bench --only http --netmonitor-cmd "deno run -A bench/_engine_proxy.ts"
 *
 * CONNECT tunnels are intercepted with lib/tls (CA in the data dir) unless
 * --no-intercept is given.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { AccessLog } from "../lib/log/mod.ts";
import { startProxy, type TunnelInterceptor } from "../lib/proxy/mod.ts";
import { prepareInterception } from "../lib/tls/intercept.ts";

const HELP = `Usage: _engine_proxy.ts [--data-dir DIR] run --port PORT [--resolve HOST:PORT:ADDR]...
  --upstream-ca FILE  extra CA for origins
  --no-intercept      relay CONNECT tunnels without decrypting them
  --no-log            do not write the access log
`;

if (import.meta.main) {
  const { values, positionals } = parseArgs({
    args: Deno.args,
    allowPositionals: true,
    strict: false,
    options: {
      "data-dir": { type: "string" },
      port: { type: "string" },
      resolve: { type: "string", multiple: true },
      help: { type: "boolean" },
      "no-log": { type: "boolean" },
      "no-intercept": { type: "boolean" },
      "upstream-ca": { type: "string", multiple: true },
    },
  });
  if (values.help || positionals[0] !== "run") {
    console.log(HELP);
    Deno.exit(values.help ? 0 : 2);
  }
  const resolve = new Map<string, string>();
  for (const r of (values.resolve as string[] | undefined) ?? []) {
    const i = r.lastIndexOf(":");
    resolve.set(r.slice(0, i), r.slice(i + 1));
  }
  const dataDir = (values["data-dir"] as string | undefined) ?? Deno.makeTempDirSync();
  const log = values["no-log"] ? undefined : new AccessLog(`${dataDir}/network-access.log`);
  let intercept: TunnelInterceptor | undefined;
  if (!values["no-intercept"]) {
    intercept = (await prepareInterception({
      files: { caCert: `${dataDir}/netmonitor-ca.pem`, caKey: `${dataDir}/netmonitor-ca-key.pem` },
      upstreamCaFiles: (values["upstream-ca"] as string[] | undefined) ?? [],
    })).interceptor;
  }
  const server = await startProxy({
    port: Number(values.port ?? 8080),
    resolve,
    intercept,
    decide: () =>
      Promise.resolve({ action: "allow", source: "default", reason: "bench: allow all" }),
    record: (rec) => log?.write(rec),
  });
  console.log(`Listening on http://${server.addr.hostname}:${server.addr.port}`);
  // NM_BENCH_MEM=SECONDS prints Deno.memoryUsage() periodically, to tell heap from native memory.
  const memEvery = Number(Deno.env.get("NM_BENCH_MEM") ?? 0);
  if (memEvery > 0) {
    const mib = (n: number) => (n / 2 ** 20).toFixed(1);
    setInterval(() => {
      const m = Deno.memoryUsage();
      console.log(
        `memory: rss ${mib(m.rss)} heapTotal ${mib(m.heapTotal)} heapUsed ${mib(m.heapUsed)} ` +
          `external ${mib(m.external)} MiB`,
      );
    }, memEvery * 1000);
  }
  const stop = async () => {
    await server.shutdown();
    await log?.close();
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGTERM", stop);
  Deno.addSignalListener("SIGINT", stop);
  await server.finished;
}
