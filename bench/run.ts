/**
 * netmonitor benchmark: netmonitor side by side with a direct connection,
 * tinyproxy and mitmdump, against a local nginx origin, with wrk, hey and curl
 * as clients. Prints a markdown table to stdout (progress goes to stderr) and
 * saves it, with the date, machine and versions, to bench/results/latest.md.
 *
 *   deno task bench                 # full run (about 10 minutes)
 *   deno task bench --quick         # smoke check (about 1 minute)
 *   deno task bench --only http,connect --repeat 5
 *
 * Everything runs on loopback; every load is bounded in time or count; every
 * child runs in its own process group and is killed at the end, on error, or
 * on Ctrl-C. See bench/README.md for what each row means.
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  busyCpuSeconds,
  describeMachine,
  groupCpuSeconds,
  machine,
  reapedChildrenCpuSeconds,
} from "./_env.ts";
import { curl, hey, openTunnels, wrk } from "./_load.ts";
import { authority, type Origin, startOrigin } from "./_origin.ts";
import {
  freePort,
  groupPids,
  killAll,
  probe,
  runTool,
  type Service,
  startService,
  waitForPort,
} from "./_proc.ts";
import {
  type Contender,
  freshNames,
  type Mode,
  type NetmonitorCommand,
  type NetmonitorFlags,
  netmonitorFlags,
  type Proxy,
  startMitmdump,
  startNetmonitor,
  startTinyproxy,
  versions,
} from "./_proxies.ts";
import {
  addProblem,
  addSample,
  cell,
  CONTENDERS,
  fmt,
  renderDetails,
  renderTable,
  type Row,
  val,
  verdict,
} from "./_table.ts";

/** Sections that `--only` selects. */
const SECTIONS = ["http", "latency", "connect", "rss", "intercept", "first", "stats"] as const;
type Section = typeof SECTIONS[number];

const USAGE = `Usage: deno run -A bench/run.ts [options]

Options:
  --quick                 small counts and short runs, for a smoke check (results not saved
                          unless --out is given; nor are they with --only or --netmonitor-cmd)
  --only LIST             comma-separated sections: ${SECTIONS.join(",")}
  --repeat N              rounds per throughput/latency measurement; medians are reported
                          (default 3, quick 1)
  --duration S            seconds per wrk/hey run (default 10, quick 2)
  --rate N                total requests/s for the latency run (default 1000)
  --requests N            requests each proxy has served before RSS is sampled (default 100000)
  --tunnels N             open tunnels for the RSS sample (default 1000)
  --names N               never-seen hosts for the first-request test (default 20)
  --without LIST          skip contenders: tinyproxy,mitmdump,netmonitor
  --netmonitor-cmd CMD    how to start netmonitor (default: deno.json's "netmonitor" task), e.g.
                          "deno run -A --cpu-prof --cpu-prof-dir=/tmp/prof main.ts" or "dist/netmonitor"
  --out FILE              where to save the results (default bench/results/latest.md, for a
                          full run only)
  --keep                  keep the temporary directory (configs, logs, tool output)
  -h, --help              this text
`;

interface Settings {
  quick: boolean;
  only: Set<Section>;
  repeat: number;
  durationS: number;
  rate: number;
  requests: number;
  tunnels: number;
  names: number;
  without: Set<string>;
  netmonitor: NetmonitorCommand;
  out?: string;
  keep: boolean;
}

const REPO = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const CONCURRENCY = 32;

function settings(argv: string[]): Settings {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: "boolean", default: false },
      only: { type: "string" },
      repeat: { type: "string" },
      duration: { type: "string" },
      rate: { type: "string" },
      requests: { type: "string" },
      tunnels: { type: "string" },
      names: { type: "string" },
      without: { type: "string" },
      "netmonitor-cmd": { type: "string" },
      out: { type: "string" },
      keep: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    Deno.exit(0);
  }
  const q = values.quick;
  const num = (name: string, v: string | undefined, dflt: number) => {
    if (v === undefined) return dflt;
    const n = Number(v);
    if (!Number.isFinite(n) || n <= 0) usage(`--${name} must be a positive number, got "${v}"`);
    return n;
  };
  const only = new Set<Section>();
  for (
    const s of (values.only ?? SECTIONS.join(",")).split(",").map((x) => x.trim()).filter(Boolean)
  ) {
    if (!(SECTIONS as readonly string[]).includes(s)) usage(`unknown section "${s}" in --only`);
    only.add(s as Section);
  }
  const cmd = (values["netmonitor-cmd"] ?? shippedCommand()).split(/\s+/).filter(Boolean);
  return {
    quick: q,
    only,
    repeat: num("repeat", values.repeat, q ? 1 : 3),
    durationS: num("duration", values.duration, q ? 2 : 10),
    rate: num("rate", values.rate, 1000),
    requests: num("requests", values.requests, q ? 5000 : 100_000),
    tunnels: num("tunnels", values.tunnels, q ? 100 : 1000),
    names: num("names", values.names, q ? 3 : 20),
    without: new Set((values.without ?? "").split(",").filter(Boolean)),
    netmonitor: { cmd: cmd[0], args: cmd.slice(1), cwd: REPO },
    // Only a full run replaces the saved results; a partial or quick one prints only.
    out: values.out ??
      (q || values.only !== undefined || values["netmonitor-cmd"] !== undefined
        ? undefined
        : `${REPO}/bench/results/latest.md`),
    keep: values.keep,
  };
}

/**
 * How users run netmonitor from source: deno.json's "netmonitor" task (it carries
 * the V8 flags the release binary is compiled with), else plain `deno run`.
 */
function shippedCommand(): string {
  try {
    const task = JSON.parse(Deno.readTextFileSync(`${REPO}/deno.json`)).tasks?.netmonitor;
    if (typeof task === "string" && task.startsWith("deno ")) return task;
  } catch { /* no deno.json: fall through */ }
  return "deno run -A main.ts";
}

function usage(msg: string): never {
  console.error(`error: ${msg}\n\n${USAGE}`);
  Deno.exit(2);
}

function progress(msg: string): void {
  console.error(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}`);
}

/** The rows of the table, in order. Cells are filled as measurements come in. */
function makeRows(s: Settings): Record<string, Row> {
  const pct = (c: Contender, row: Row) => {
    const d = val(row, "direct"), v = val(row, c);
    return c !== "direct" && d && v !== undefined ? `(${Math.round((100 * v) / d)}%)` : undefined;
  };
  const added = (c: Contender, row: Row) => {
    const d = val(row, "direct"), v = val(row, c);
    return c !== "direct" && d !== undefined && v !== undefined ? `(+${fmt(v - d, 1)})` : undefined;
  };
  const mib = (v: number | undefined) => (v === undefined ? undefined : v < 100);
  const rows: Row[] = [
    {
      id: "http_rps",
      metric: `HTTP keep-alive req/s (wrk, ${CONCURRENCY} conns, 1 KiB)`,
      cells: {},
      target: ">= tinyproxy and >= 10x mitmdump",
      judge: (r) => {
        const n = val(r, "netmonitor"), t = val(r, "tinyproxy"), m = val(r, "mitmdump");
        if (n === undefined || (t === undefined && m === undefined)) return undefined;
        return (t === undefined || n >= t) && (m === undefined || n >= 10 * m);
      },
      annotate: (c, r) => {
        const m = val(r, "mitmdump"), v = val(r, c);
        return c !== "mitmdump" && c !== "direct" && m && v !== undefined
          ? `(${fmt(v / m, 1)}x m.)`
          : undefined;
      },
    },
    {
      id: "http_cpu",
      metric: "CPU per proxied request, µs (same wrk runs)",
      cells: {},
      target: "(direct column: nginx alone)",
    },
    {
      id: "http_p99_sat",
      metric: `p99 latency at saturation, ms (same wrk runs)`,
      digits: 1,
      cells: {},
      target: "",
      annotate: added,
    },
    {
      id: "p99_added",
      metric: `p99 latency, ms, ${CONCURRENCY} clients at ${fmt(s.rate)} req/s (hey)`,
      digits: 1,
      cells: {},
      target: "added p99 < 5 ms",
      judge: (r) => {
        const n = val(r, "netmonitor"), d = val(r, "direct");
        return n === undefined || d === undefined ? undefined : n - d < 5;
      },
      annotate: added,
    },
    {
      id: "connect_mbps",
      metric: "CONNECT tunnel download MB/s (curl, TLS, large file)",
      digits: 0,
      cells: {},
      target: ">= 90% of direct",
      judge: (r) => {
        const n = val(r, "netmonitor"), d = val(r, "direct");
        return n === undefined || d === undefined ? undefined : n >= 0.9 * d;
      },
      annotate: pct,
    },
    {
      id: "connect_relay",
      metric: "same download vs a C byte relay, MB/s (direct column: socat forwarder)",
      digits: 0,
      cells: {},
      target: "",
      annotate: pct,
    },
    {
      id: "connect_cpu_relay",
      metric: "CPU of the relay per GB downloaded, core-s (direct column: socat forwarder)",
      digits: 2,
      cells: {},
      target: "",
    },
    {
      id: "connect_cpu_ends",
      metric: "CPU of curl + nginx per GB downloaded, core-s (same downloads)",
      digits: 2,
      cells: {},
      target: "",
    },
    {
      id: "rss_requests",
      metric: `RSS after ${fmt(s.requests)} requests, MiB`,
      digits: 1,
      cells: {},
      target: "< 100 MiB",
      judge: (r) => mib(val(r, "netmonitor")),
    },
    {
      id: "rss_tunnels",
      metric: `RSS with ${fmt(s.tunnels)} open tunnels, MiB`,
      digits: 1,
      cells: {},
      target: "< 100 MiB",
      judge: (r) => mib(val(r, "netmonitor")),
    },
    {
      id: "https_rps",
      metric: `HTTPS intercepted keep-alive req/s (hey, ${CONCURRENCY} conns)`,
      cells: {},
      target: ">= 10x mitmdump",
      judge: (r) => {
        const n = val(r, "netmonitor"), m = val(r, "mitmdump");
        return n === undefined || m === undefined ? undefined : n >= 10 * m;
      },
      annotate: (c, r) => {
        const m = val(r, "mitmdump"), v = val(r, c);
        return c === "netmonitor" && m && v !== undefined ? `(${fmt(v / m, 1)}x m.)` : undefined;
      },
    },
    {
      id: "https_cpu",
      metric: "CPU per intercepted request, µs (same hey runs)",
      cells: {},
      target: "(direct column: nginx alone)",
      annotate: (c, r) => {
        const m = val(r, "mitmdump"), v = val(r, c);
        return c === "netmonitor" && m && v ? `(1/${fmt(m / v, 1)} of m.)` : undefined;
      },
    },
    {
      id: "first_ms",
      metric: "First request to a never-seen host, ms (curl, median)",
      digits: 1,
      cells: {},
      target: "within 50 ms of direct",
      judge: (r) => {
        const n = val(r, "netmonitor"), d = val(r, "direct");
        return n === undefined || d === undefined ? undefined : n - d <= 50;
      },
      annotate: added,
    },
    {
      id: "first_max",
      metric: "First request to a never-seen host, ms (curl, worst)",
      digits: 1,
      cells: {},
      target: "",
      annotate: added,
    },
    {
      id: "rss_intercept",
      metric: "RSS after the interception runs, MiB",
      digits: 1,
      cells: {},
      target: "",
    },
    {
      id: "rss_intercept_conns",
      metric: `RSS with ${fmt(s.tunnels)} open intercepted connections, MiB`,
      digits: 1,
      cells: {},
      target: "",
    },
    {
      id: "stats_s",
      metric: `Stats: ${s.quick ? "100k" : "1M"} log lines summarised, s`,
      digits: 2,
      cells: {},
      target: "<= 5 s for 1M lines",
      judge: (r) => {
        const v = val(r, "netmonitor");
        return v === undefined || s.quick ? undefined : v <= 5;
      },
    },
  ];
  return Object.fromEntries(rows.map((r) => [r.id, r]));
}

/** Everything a run measures, plus context for the report. */
interface Run {
  s: Settings;
  tmp: string;
  rows: Record<string, Row>;
  notes: string[];
  origin?: Origin;
  nmFlags?: NetmonitorFlags;
}

function active(run: Run, c: Contender): boolean {
  if (c === "direct") return true;
  if (run.s.without.has(c)) return false;
  if (c === "netmonitor") return run.nmFlags !== undefined;
  return true;
}

async function startProxies(run: Run, mode: Mode): Promise<Proxy[]> {
  const origin = run.origin!;
  const out: Proxy[] = [];
  const dir = async (name: string) => {
    const d = `${run.tmp}/${name}-${mode}`;
    await Deno.mkdir(d, { recursive: true });
    return d;
  };
  const tryStart = async (c: Contender, f: () => Promise<Proxy>) => {
    if (!active(run, c)) return;
    try {
      progress(`starting ${c} (${mode})`);
      out.push(await f());
    } catch (e) {
      run.notes.push(`${c} (${mode}) did not start: ${e instanceof Error ? e.message : e}`);
      progress(`${c} did not start: ${e instanceof Error ? e.message.split("\n")[0] : e}`);
    }
  };
  if (mode === "tunnel") {
    await tryStart(
      "tinyproxy",
      async () => startTinyproxy({ origin, mode, dir: await dir("tinyproxy") }),
    );
  }
  await tryStart(
    "mitmdump",
    async () => startMitmdump({ origin, mode, dir: await dir("mitmdump") }),
  );
  await tryStart("netmonitor", async () =>
    startNetmonitor({
      origin,
      mode,
      dir: await dir("netmonitor"),
      command: run.s.netmonitor,
      flags: run.nmFlags!,
      extraNames: mode === "intercept" ? freshNames(origin, run.s.names, "nm") : [],
    }));
  return out;
}

/** Run `f` for direct and each proxy in turn, `repeat` times, interleaved. */
async function rounds(
  run: Run,
  proxies: Proxy[],
  label: string,
  f: (who: Contender, p?: Proxy) => Promise<void>,
  repeat = run.s.repeat,
): Promise<void> {
  for (let i = 0; i < repeat; i++) {
    const order: (Proxy | undefined)[] = [undefined, ...proxies];
    for (const p of order) {
      const who: Contender = p?.kind ?? "direct";
      progress(`${label}: ${who} (round ${i + 1}/${repeat})`);
      try {
        await f(who, p);
      } catch (e) {
        const msg = e instanceof Error ? e.message.split("\n")[0] : String(e);
        run.notes.push(`${label} / ${who}: ${msg}`);
        progress(`  failed: ${msg}`);
      }
    }
  }
}

function urlFor(o: Origin, host: string, tls: boolean, path: string): string {
  return `${tls ? "https" : "http"}://${authority(host, tls ? o.tlsPort : o.httpPort, tls)}${path}`;
}

/** Keep-alive throughput and CPU per request with wrk. */
async function sectionHttp(run: Run, proxies: Proxy[]): Promise<void> {
  const o = run.origin!;
  const { http_rps, http_cpu, http_p99_sat } = run.rows;
  // Warm-up (JIT, connection pools), not recorded.
  for (const p of [undefined, ...proxies]) {
    const r = await wrk({
      proxy: p?.url,
      url: urlFor(o, p?.originHost ?? o.addr, false, o.smallPath),
      connections: CONCURRENCY,
      durationS: 1,
      tmpDir: run.tmp,
    }).catch(() => undefined);
    if (p && r) p.requests += r.requests;
  }
  await rounds(run, proxies, "http keep-alive", async (who, p) => {
    const pids = groupPids(p ? p.service.pid : o.nginx.pid);
    const cpu0 = groupCpuSeconds(pids);
    const r = await wrk({
      proxy: p?.url,
      url: urlFor(o, p?.originHost ?? o.addr, false, o.smallPath),
      connections: CONCURRENCY,
      durationS: run.s.durationS,
      tmpDir: run.tmp,
    });
    const cpu = groupCpuSeconds(pids) - cpu0;
    if (p) p.requests += r.requests;
    addSample(http_rps, who, r.rps);
    if (r.requests > 0) addSample(http_cpu, who, (cpu / r.requests) * 1e6);
    if (r.latencyMs[99] !== undefined) addSample(http_p99_sat, who, r.latencyMs[99]);
    if (r.non2xx) addProblem(http_rps, who, `${r.non2xx} of ${r.requests} responses not 2xx/3xx`);
  });
}

/** p99 at a fixed offered rate with hey -q. */
async function sectionLatency(run: Run, proxies: Proxy[]): Promise<void> {
  const o = run.origin!;
  const row = run.rows.p99_added;
  const q = Math.max(1, Math.round(run.s.rate / CONCURRENCY));
  await rounds(run, proxies, "latency", async (who, p) => {
    const r = await hey({
      proxy: p?.url,
      url: urlFor(o, p?.originHost ?? o.addr, false, o.smallPath),
      concurrency: CONCURRENCY,
      durationS: run.s.durationS,
      qpsPerWorker: q,
    });
    if (p) p.requests += r.requests;
    if (r.latencyMs[99] !== undefined) addSample(row, who, r.latencyMs[99]);
    if (r.non2xx || r.errors) addProblem(row, who, `${r.non2xx} non-2xx, ${r.errors} errors`);
    const achieved = r.rps / (q * CONCURRENCY);
    if (achieved < 0.9) {
      addProblem(row, who, `sustained only ${fmt(r.rps)} of ${fmt(q * CONCURRENCY)} req/s`);
    }
  });
}

/**
 * Bulk download through CONNECT (no interception) vs direct TLS, with the CPU each part used:
 * on a small machine the two ends and the relay compete for the same cores, so the CPU budget
 * says what throughput any relay could reach here.
 */
async function sectionConnect(run: Run, proxies: Proxy[]): Promise<void> {
  const o = run.origin!;
  const { connect_mbps: row, connect_relay, connect_cpu_relay, connect_cpu_ends } = run.rows;
  const gb = o.largeBytes / 1e9;
  /** Runs one download; records its speed and CPU per GB (ends: curl + nginx; relay: `relay`). */
  const measured = async (
    relayPgid: number | undefined,
    get: () => Promise<{ status: number; bytes: number; speed: number }>,
  ) => {
    const nginx = groupPids(o.nginx.pid);
    const relay = relayPgid === undefined ? [] : groupPids(relayPgid);
    const ends0 = groupCpuSeconds(nginx) + reapedChildrenCpuSeconds();
    const relay0 = groupCpuSeconds(relay);
    const r = await get();
    if (r.status !== 200 || r.bytes !== o.largeBytes) {
      throw new Error(`status ${r.status}, ${r.bytes} of ${o.largeBytes} bytes`);
    }
    return {
      mbps: r.speed / 1e6,
      ends: (groupCpuSeconds(nginx) + reapedChildrenCpuSeconds() - ends0) / gb,
      relay: (groupCpuSeconds(relay) - relay0) / gb,
    };
  };
  const download = (p?: Proxy) =>
    measured(p?.service.pid, () =>
      curl({
        proxy: p?.url,
        url: urlFor(o, p?.originHost ?? o.name, true, o.largePath),
        cacert: o.caPath,
        resolve: [`${o.name}:${o.tlsPort}:${o.addr}`],
      }));
  // The ceiling for any relay that copies bytes through user space: socat forwarding TCP to the
  // origin (no CONNECT, no checks), measured in the same rounds.
  const socat = await startSocatRelay(run);
  const viaSocat = () =>
    measured(socat!.service.pid, () =>
      curl({
        url: `https://${authority(o.name, socat!.port, true)}${o.largePath}`,
        cacert: o.caPath,
        resolve: [`${o.name}:${socat!.port}:127.0.0.1`],
      })).catch((e) => {
        throw new Error(`socat: ${e instanceof Error ? e.message : e}`);
      });
  try {
    // One unrecorded download each first: the first transfer of a run is often much slower.
    for (const p of [undefined, ...proxies]) await download(p).catch(() => {});
    if (socat) await viaSocat().catch(() => {});
    // A transfer takes about a second and varies a lot with other load: more rounds than elsewhere.
    await rounds(run, proxies, "connect bulk", async (who, p) => {
      const d = await download(p);
      addSample(row, who, d.mbps);
      addSample(connect_cpu_ends, who, d.ends);
      if (p) addSample(connect_cpu_relay, who, d.relay);
      if (!socat) return;
      if (p) addSample(connect_relay, who, d.mbps);
      else {
        const s = await viaSocat();
        addSample(connect_relay, "direct", s.mbps);
        addSample(connect_cpu_relay, "direct", s.relay);
      }
    }, run.s.quick ? run.s.repeat : Math.max(5, run.s.repeat));
  } finally {
    await socat?.service.stop();
  }
  const budget = relayBudget(
    row.cells.direct?.value,
    connect_cpu_ends.cells.direct?.value,
    machine().cpus,
  );
  if (budget !== undefined) {
    const used = (c: Contender) => {
      const v = connect_cpu_relay.cells[c]?.value;
      return v === undefined ? undefined : `${c === "direct" ? "socat" : c} ${v.toFixed(2)}`;
    };
    const uses = CONTENDERS.map(used).filter((x) => x !== undefined).join(", ");
    run.notes.push(
      `connect CPU budget: at 90% of direct the two ends (${
        connect_cpu_ends.cells.direct!.value!.toFixed(2)
      } core-s per GB) and a relay share ${machine().cpus} cores, so a relay may use at most ` +
        `${budget.toFixed(2)} core-s per GB (a perfect overlap of all three); used: ${uses}`,
    );
  }
}

/**
 * The most CPU (core-seconds per GB) a relay may use for a download through it to reach 90%
 * of `directMbps` on `cpus` cores, when the two ends use `endsPerGb`; undefined when unknown.
 */
function relayBudget(
  directMbps: number | undefined,
  endsPerGb: number | undefined,
  cpus: number,
): number | undefined {
  if (!directMbps || endsPerGb === undefined) return undefined;
  const gbPerS = (0.9 * directMbps) / 1000;
  return cpus / gbPerS - endsPerGb;
}

/** socat forwarding a loopback port to the origin's TLS port; undefined without socat. */
async function startSocatRelay(
  run: Run,
): Promise<{ service: Service; port: number } | undefined> {
  if (!(await probe("sh", ["-c", "command -v socat"]))) {
    run.notes.push("connect_relay: socat is not installed (apt-get install socat); row left empty");
    return undefined;
  }
  const o = run.origin!;
  const port = freePort();
  const service = await startService("socat", "socat", [
    "-b",
    String(256 * 1024),
    `TCP-LISTEN:${port},bind=127.0.0.1,reuseaddr,fork`,
    `TCP:${o.addr}:${o.tlsPort}`,
  ], { logPath: `${run.tmp}/socat.log` });
  await waitForPort("127.0.0.1", port);
  return { service, port };
}

/** How long a proxy rests after a load before its RSS is sampled, ms. */
const SETTLE_MS = 1000;

/** Bring each proxy to `requests` served, sample RSS, open tunnels, sample RSS. */
async function sectionRss(run: Run, proxies: Proxy[]): Promise<void> {
  const o = run.origin!;
  const caPem = await Deno.readTextFile(o.caPath);
  for (const p of proxies) {
    const missing = run.s.requests - p.requests;
    if (missing > 0) {
      progress(
        `rss: ${p.kind} has served ${fmt(p.requests)} requests; sending ${fmt(missing)} more`,
      );
      try {
        const r = await hey({
          proxy: p.url,
          url: urlFor(o, p.originHost, false, o.smallPath),
          concurrency: CONCURRENCY,
          // hey splits -n evenly between workers, rounding down.
          requests: Math.ceil(missing / CONCURRENCY) * CONCURRENCY,
        });
        p.requests += r.requests;
        if (r.non2xx || r.errors) {
          addProblem(run.rows.rss_requests, p.kind, `${r.non2xx} non-2xx, ${r.errors} errors`);
        }
      } catch (e) {
        run.notes.push(`rss top-up / ${p.kind}: ${e instanceof Error ? e.message : e}`);
      }
    }
    // Like the tunnels below: sample the resting process, not the last burst's garbage.
    await new Promise((r) => setTimeout(r, SETTLE_MS));
    const m1 = p.memory();
    if (m1.processes === 0) {
      addProblem(run.rows.rss_requests, p.kind, "the proxy is not running any more");
      continue;
    }
    addSample(run.rows.rss_requests, p.kind, m1.rssKiB / 1024);
    cell(run.rows.rss_requests, p.kind).text = `(peak ${fmt(m1.peakKiB / 1024)})`;
    if (p.requests < run.s.requests) {
      addProblem(run.rows.rss_requests, p.kind, `only ${fmt(p.requests)} requests served`);
    }
    progress(
      `rss: ${p.kind} ${(m1.rssKiB / 1024).toFixed(1)} MiB after ${fmt(p.requests)} requests`,
    );
    progress(`rss: opening ${fmt(run.s.tunnels)} tunnels through ${p.kind}`);
    const t = await openTunnels({
      proxyHost: "127.0.0.1",
      proxyPort: p.port,
      host: p.originHost,
      port: o.tlsPort,
      caPem,
      count: run.s.tunnels,
    });
    try {
      await new Promise((r) => setTimeout(r, SETTLE_MS)); // let the proxy settle
      const m2 = p.memory();
      addSample(run.rows.rss_tunnels, p.kind, m2.rssKiB / 1024);
      cell(run.rows.rss_tunnels, p.kind).text = `(peak ${fmt(m2.peakKiB / 1024)})`;
      if (t.open < run.s.tunnels) {
        addProblem(
          run.rows.rss_tunnels,
          p.kind,
          `only ${t.open} of ${run.s.tunnels} tunnels opened: ${t.failures.join("; ")}`,
        );
      }
      progress(`rss: ${p.kind} ${(m2.rssKiB / 1024).toFixed(1)} MiB with ${t.open} tunnels open`);
    } finally {
      t.close();
    }
  }
}

/** RSS while many intercepted (TLS-terminated) connections are open, each having served one request. */
async function sectionInterceptedConns(run: Run, proxies: Proxy[]): Promise<void> {
  const o = run.origin!;
  const row = run.rows.rss_intercept_conns;
  for (const p of proxies) {
    if (!p.interceptCa) continue;
    progress(`rss: opening ${fmt(run.s.tunnels)} intercepted connections through ${p.kind}`);
    const t = await openTunnels({
      proxyHost: "127.0.0.1",
      proxyPort: p.port,
      host: p.originHost,
      port: o.tlsPort,
      caPem: await Deno.readTextFile(p.interceptCa),
      count: run.s.tunnels,
    });
    try {
      await new Promise((r) => setTimeout(r, SETTLE_MS));
      addSample(row, p.kind, p.memory().rssKiB / 1024);
      if (t.open < run.s.tunnels) {
        addProblem(
          row,
          p.kind,
          `only ${t.open} of ${run.s.tunnels} opened: ${t.failures.join("; ")}`,
        );
      }
    } finally {
      t.close();
    }
  }
}

/** Intercepted HTTPS keep-alive throughput with hey. */
async function sectionIntercept(run: Run, proxies: Proxy[]): Promise<void> {
  const o = run.origin!;
  const row = run.rows.https_rps;
  await rounds(run, proxies, "https intercept", async (who, p) => {
    const pids = groupPids(p ? p.service.pid : o.nginx.pid);
    const cpu0 = groupCpuSeconds(pids);
    const r = await hey({
      proxy: p?.url,
      url: urlFor(o, p?.originHost ?? o.addr, true, o.smallPath),
      concurrency: CONCURRENCY,
      durationS: run.s.durationS,
    });
    const cpu = groupCpuSeconds(pids) - cpu0;
    if (p) p.requests += r.requests;
    addSample(row, who, r.rps);
    if (r.requests > 0) addSample(run.rows.https_cpu, who, (cpu / r.requests) * 1e6);
    if (r.non2xx || r.errors) addProblem(row, who, `${r.non2xx} non-2xx, ${r.errors} errors`);
  });
}

/** First request to never-seen hosts: fresh curl, fresh name (or IP for mitmdump). */
async function sectionFirst(run: Run, proxies: Proxy[]): Promise<void> {
  const o = run.origin!;
  const { first_ms, first_max } = run.rows;
  // Warm each proxy up on the main host: the first-ever request may pay for JIT and key generation.
  for (const p of proxies) {
    try {
      const r = await curl({
        proxy: p.url,
        url: urlFor(o, p.originHost, true, o.smallPath),
        cacert: p.interceptCa,
      });
      if (r.status !== 200) throw new Error(`status ${r.status}`);
    } catch (e) {
      run.notes.push(`first-request warm-up / ${p.kind}: ${e instanceof Error ? e.message : e}`);
    }
  }
  const nmNames = freshNames(o, run.s.names, "nm");
  const directNames = freshNames(o, run.s.names, "direct");
  const samples = new Map<Contender, number[]>();
  for (let i = 0; i < run.s.names; i++) {
    const jobs: [Contender, () => Promise<number>][] = [[
      "direct",
      async () => {
        const r = await curl({
          url: urlFor(o, directNames[i], true, o.smallPath),
          cacert: o.caPath,
          resolve: [`${directNames[i]}:${o.tlsPort}:${o.addr}`],
        });
        if (r.status !== 200) throw new Error(`status ${r.status} for ${directNames[i]}`);
        return r.totalMs;
      },
    ]];
    for (const p of proxies) {
      let host: string | undefined;
      if (p.kind === "netmonitor") host = nmNames[i];
      else if (p.kind === "mitmdump") host = o.extraAddrs[i]; // mitmdump resolves only IPs here
      if (!host || !p.interceptCa) continue;
      jobs.push([p.kind, async () => {
        const r = await curl({
          proxy: p.url,
          url: urlFor(o, host, true, o.smallPath),
          cacert: p.interceptCa,
        });
        if (r.status !== 200) throw new Error(`status ${r.status} for ${host}`);
        return r.totalMs;
      }]);
    }
    for (const [who, job] of jobs) {
      try {
        const ms = await job();
        samples.set(who, [...(samples.get(who) ?? []), ms]);
      } catch (e) {
        addProblem(first_ms, who, e instanceof Error ? e.message.split("\n")[0] : String(e));
      }
    }
  }
  for (const [who, xs] of samples) {
    for (const x of xs) addSample(first_ms, who, x);
    addSample(first_max, who, Math.max(...xs));
  }
  progress(
    `first request: ${
      [...samples].map(([w, xs]) => `${w} ${xs.map((x) => x.toFixed(0)).join("/")}`).join(", ")
    }`,
  );
}

/**
 * bench/stats_bench.ts (owned by the stats engineer) exports runStatsBench(lines).
 * It runs in its own process, so that its peak RSS is its own and a missing
 * lib/stats cannot break the rest of the benchmark.
 */
async function sectionStats(run: Run): Promise<void> {
  const path = `${REPO}/bench/stats_bench.ts`;
  const row = run.rows.stats_s;
  try {
    await Deno.stat(path);
  } catch {
    cell(row, "netmonitor").text = "n/a (bench/stats_bench.ts missing)";
    return;
  }
  const lines = run.s.quick ? 100_000 : 1_000_000;
  progress(`stats: summarising ${fmt(lines)} log lines (bench/stats_bench.ts)`);
  const code = `import { runStatsBench } from ${
    JSON.stringify(new URL("./stats_bench.ts", import.meta.url).href)
  };
console.log(JSON.stringify(await runStatsBench(${lines})));`;
  const r = await runTool("deno", ["eval", "--quiet", "--ext=ts", code], {
    cwd: REPO,
    timeoutMs: 600_000,
  });
  const last = r.stdout.trim().split("\n").at(-1) ?? "";
  let res: { lines: number; summariseSeconds: number; lastSeconds: number; peakRssBytes: number };
  try {
    res = JSON.parse(last);
    if (typeof res.summariseSeconds !== "number") throw new Error("no summariseSeconds");
  } catch {
    cell(row, "netmonitor").text = `failed (exit ${r.code})`;
    run.notes.push(
      `stats_bench.ts failed: ${(r.stderr || r.stdout).trim().split("\n").slice(-5).join(" | ")}`,
    );
    return;
  }
  addSample(row, "netmonitor", res.summariseSeconds);
  cell(row, "netmonitor").text = `(${fmt(res.lines / res.summariseSeconds / 1000)}k lines/s, ` +
    `peak RSS ${fmt(res.peakRssBytes / 2 ** 20)} MiB, --last 20 in ${
      fmt(res.lastSeconds * 1000)
    } ms)`;
}

async function stopAll(proxies: Proxy[]): Promise<void> {
  await Promise.all(proxies.map((p) => p.service.stop(5000)));
}

function report(
  run: Run,
  started: Date,
  vers: Record<string, string>,
  backgroundPct: number,
): string {
  const m = machine();
  const rows = Object.values(run.rows).filter((r) => Object.keys(r.cells).length > 0);
  const o = run.origin;
  const lines = [
    `# netmonitor benchmark${run.s.quick ? " (quick)" : ""}`,
    "",
    `- Date: ${started.toISOString().replace(/\.\d+Z$/, "Z")}`,
    `- Machine: ${describeMachine(m)}; other work on the machine used ${
      backgroundPct.toFixed(0)
    }% of all CPUs ` +
    `just before the run; load average at the end ${
      Deno.loadavg().map((x) => x.toFixed(2)).join(" ")
    }`,
    `- Versions: ${Object.entries(vers).map(([k, v]) => `${k}: ${v}`).join("; ")}`,
    `- Settings: ${run.s.repeat} round(s) per measurement (medians shown), ${run.s.durationS} s per wrk/hey run, ` +
    `${CONCURRENCY} connections; origin nginx on ${
      o ? `${o.addr}:${o.httpPort}/${o.tlsPort}` : "?"
    }, ` +
    `${o ? fmt(o.smallBytes) : "?"} B small body, ${
      o ? fmt(o.largeBytes / 2 ** 20) : "?"
    } MiB large file`,
    "",
    renderTable(rows),
    "",
    "`!` marks a cell with problems (see below); `(x m.)` is the multiple of mitmdump; `(+n)` is the difference",
    "to direct; `(n%)` is the share of direct. Verdicts judge netmonitor only.",
    "",
  ];
  const details = renderDetails(rows);
  const verdicts = rows.filter((r) => verdict(r) === "FAIL").map((r) => r.metric);
  if (verdicts.length) lines.push(`Targets missed: ${verdicts.join("; ")}.`, "");
  if (details || run.notes.length) {
    lines.push("## Details", "", details, ...run.notes.map((n) => `- ${n}`), "");
  }
  if (o && !o.standardPorts) {
    lines.push(
      "Note: the origin could not bind ports 80/443, so URLs carry a port and hey sends it inside SNI.",
      "",
    );
  }
  return lines.join("\n");
}

async function main(): Promise<number> {
  const s = settings(Deno.args);
  for (const tool of ["nginx", "openssl", "wrk", "hey", "curl", "setsid"]) {
    if (!(await probe("sh", ["-c", `command -v ${tool}`]))) {
      console.error(
        `error: "${tool}" is required (apt-get install ${tool === "setsid" ? "util-linux" : tool})`,
      );
      return 1;
    }
  }
  for (const tool of ["tinyproxy", "mitmdump"]) {
    if (!s.without.has(tool) && !(await probe("sh", ["-c", `command -v ${tool}`]))) {
      progress(`${tool} not installed: its column stays empty`);
      s.without.add(tool);
    }
  }
  const tmp = await Deno.makeTempDir({ prefix: "netmonitor-bench-" });
  // When we are root, nginx workers run as an unprivileged user: let them traverse to the files.
  await Deno.chmod(tmp, 0o711);
  const run: Run = { s, tmp, rows: makeRows(s), notes: [] };
  // Background load (other engineers' jobs) makes numbers noisy; record how busy the machine was.
  const busy0 = busyCpuSeconds();
  await new Promise((r) => setTimeout(r, 2000));
  const backgroundPct = (100 * (busyCpuSeconds() - busy0)) / (2 * machine().cpus);
  const started = new Date();
  const onSignal = () => {
    progress("interrupted: stopping every child process");
    void killAll().finally(() => {
      if (!s.keep) Deno.removeSync(tmp, { recursive: true });
      Deno.exit(130);
    });
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  let vers: Record<string, string> = {};
  try {
    if (!s.without.has("netmonitor")) {
      run.nmFlags = await netmonitorFlags(s.netmonitor);
      if (!run.nmFlags) {
        run.notes.push(
          `netmonitor: "${
            [s.netmonitor.cmd, ...s.netmonitor.args].join(" ")
          } run --help" failed; column empty`,
        );
        progress("netmonitor's run command is not available: its column stays empty");
      } else if (
        !run.nmFlags.has("--data-dir") && !run.nmFlags.help.includes("NETMONITOR_DATA_DIR")
      ) {
        // Without either, netmonitor would write rules and logs into the real ~/docker-agent-data.
        run.notes.push(
          "netmonitor: no --data-dir option; not started (it would use the real data dir)",
        );
        run.nmFlags = undefined;
      }
    }
    vers = await versions(run.nmFlags ? s.netmonitor : undefined);
    const largeBytes = (s.quick ? 32 : 256) * 2 ** 20;
    run.origin = await startOrigin({ dir: `${tmp}/origin`, largeBytes, extraAddrs: s.names });
    progress(
      `origin nginx on ${run.origin.addr} ports ${run.origin.httpPort}/${run.origin.tlsPort}`,
    );

    const tunnelSections: Section[] = ["http", "latency", "connect", "rss"];
    if (tunnelSections.some((x) => s.only.has(x))) {
      const proxies = await startProxies(run, "tunnel");
      try {
        if (s.only.has("http")) await sectionHttp(run, proxies);
        if (s.only.has("latency")) await sectionLatency(run, proxies);
        if (s.only.has("connect")) await sectionConnect(run, proxies);
        if (s.only.has("rss")) await sectionRss(run, proxies);
      } finally {
        await stopAll(proxies);
      }
    }
    if (s.only.has("intercept") || s.only.has("first")) {
      const proxies = await startProxies(run, "intercept");
      try {
        if (s.only.has("intercept")) await sectionIntercept(run, proxies);
        if (s.only.has("first")) await sectionFirst(run, proxies);
        for (const p of proxies) {
          addSample(run.rows.rss_intercept, p.kind, p.memory().rssKiB / 1024);
        }
        if (s.only.has("rss")) await sectionInterceptedConns(run, proxies);
      } finally {
        await stopAll(proxies);
      }
    }
    if (s.only.has("stats")) await sectionStats(run);
  } finally {
    await killAll();
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
    if (s.keep) progress(`kept ${tmp}`);
    else await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
  const text = report(run, started, vers, backgroundPct);
  console.log(text);
  if (s.out) {
    await Deno.mkdir(s.out.replace(/\/[^/]*$/, ""), { recursive: true });
    await Deno.writeTextFile(s.out, text);
    // The file lives in the repository, where CI runs `deno fmt --check`.
    await probe("deno", ["fmt", "--quiet", s.out]);
    progress(`saved ${s.out}`);
  }
  return 0;
}

if (import.meta.main) {
  Deno.exit(await main());
}
