/**
 * Launchers for the proxies under test: tinyproxy and mitmdump (the Debian
 * packages) and netmonitor itself, each on a free loopback port with a
 * temporary configuration, in its own process group.
 *
 * Two modes:
 * - "tunnel": CONNECT is a byte relay (mitmdump --ignore-hosts '.*', netmonitor
 *   --no-intercept). Used for plain HTTP, latency, bulk tunnels, open tunnels, RSS.
 * - "intercept": HTTPS inside CONNECT is terminated with the proxy's CA.
 *
 * How the origin is addressed: tinyproxy and mitmdump resolve names through the
 * system resolver, and this benchmark never edits /etc/hosts, so they get the
 * origin's IP literal. netmonitor gets the name origin.test (and hN.origin.test),
 * mapped to that IP with --resolve, which is how it is meant to be pointed at
 * local servers, and which also exercises its SNI check (an IP literal has no SNI).
 *
 * @module
 */

import type { Origin } from "./_origin.ts";
import { freePort, groupMemory, probe, type Service, startService, waitForPort } from "./_proc.ts";

/** The contenders, in table order. */
export type Contender = "direct" | "tinyproxy" | "mitmdump" | "netmonitor";

/** What a proxy does with CONNECT. */
export type Mode = "tunnel" | "intercept";

/** A running proxy. */
export interface Proxy {
  kind: Exclude<Contender, "direct">;
  mode: Mode;
  service: Service;
  port: number;
  /** "http://127.0.0.1:PORT" */
  url: string;
  /** Host the client should put in URLs for the origin (name or IP). */
  originHost: string;
  /** CA file the client must trust for intercepted HTTPS (undefined in tunnel mode). */
  interceptCa?: string;
  /** Current memory of the proxy's process group. */
  memory(): ReturnType<typeof groupMemory>;
  /** Requests sent to it so far (the harness adds to this). */
  requests: number;
}

/** Common options. */
export interface LaunchOptions {
  origin: Origin;
  mode: Mode;
  /** Private temporary directory for this instance. */
  dir: string;
}

function finish(
  kind: Proxy["kind"],
  mode: Mode,
  service: Service,
  port: number,
  originHost: string,
  interceptCa?: string,
): Proxy {
  return {
    kind,
    mode,
    service,
    port,
    url: `http://127.0.0.1:${port}`,
    originHost,
    interceptCa,
    memory: () => groupMemory(service.pid),
    requests: 0,
  };
}

async function ready(service: Service, port: number, timeoutMs: number): Promise<void> {
  let exited = false;
  void service.status.then(() => exited = true);
  try {
    await waitForPort("127.0.0.1", port, timeoutMs, () => !exited);
  } catch (e) {
    let log = "";
    try {
      log = (await Deno.readTextFile(service.logPath)).slice(-2000);
    } catch { /* no log */ }
    await service.stop();
    throw new Error(`${service.name}: ${e instanceof Error ? e.message : e}\n${log}`);
  }
}

/** tinyproxy: no interception; CONNECT to any port (no ConnectPort line), minimal logging. */
export async function startTinyproxy(opts: LaunchOptions): Promise<Proxy> {
  const port = freePort();
  const conf = `${opts.dir}/tinyproxy.conf`;
  await Deno.writeTextFile(
    conf,
    [
      `Port ${port}`,
      "Listen 127.0.0.1",
      "Timeout 600",
      "MaxClients 4096",
      "Allow 127.0.0.1",
      "LogLevel Critical",
      `PidFile "${opts.dir}/tinyproxy.pid"`,
      "",
    ].join("\n"),
  );
  const service = await startService("tinyproxy", "tinyproxy", ["-d", "-c", conf], {
    logPath: `${opts.dir}/tinyproxy.log`,
  });
  await ready(service, port, 10_000);
  return finish("tinyproxy", opts.mode, service, port, opts.origin.addr);
}

/** mitmdump: quiet, streams large bodies, verifies the origin against its CA. */
export async function startMitmdump(opts: LaunchOptions): Promise<Proxy> {
  const port = freePort();
  const confdir = `${opts.dir}/mitmproxy`;
  await Deno.mkdir(confdir, { recursive: true });
  const args = [
    "--listen-host",
    "127.0.0.1",
    "-p",
    String(port),
    "-q",
    "--set",
    `confdir=${confdir}`,
    "--set",
    "stream_large_bodies=1m",
    "--set",
    `ssl_verify_upstream_trusted_ca=${opts.origin.caPath}`,
  ];
  if (opts.mode === "tunnel") args.push("--ignore-hosts", ".*");
  const service = await startService("mitmdump", "mitmdump", args, {
    logPath: `${opts.dir}/mitmdump.log`,
  });
  await ready(service, port, 30_000);
  const ca = opts.mode === "intercept" ? `${confdir}/mitmproxy-ca-cert.pem` : undefined;
  return finish("mitmdump", opts.mode, service, port, opts.origin.addr, ca);
}

/** How to run netmonitor: a command line prefix, e.g. ["deno", "run", "-A", "main.ts"]. */
export interface NetmonitorCommand {
  cmd: string;
  args: string[];
  cwd: string;
}

/** Flags that `netmonitor run --help` advertises (netmonitor grows while this is written). */
export interface NetmonitorFlags {
  help: string;
  has(flag: string): boolean;
}

/** Read `netmonitor --help` and `netmonitor run --help`; undefined when `run` does not exist. */
export async function netmonitorFlags(nm: NetmonitorCommand): Promise<NetmonitorFlags | undefined> {
  const help = async (args: string[]) => {
    const out = await new Deno.Command(nm.cmd, {
      args: [...nm.args, ...args, "--help"],
      cwd: nm.cwd,
      stdin: "null",
      env: { NO_COLOR: "1" },
    }).output().catch(() => undefined);
    return out?.code === 0 ? new TextDecoder().decode(out.stdout) : undefined;
  };
  const run = await help(["run"]);
  if (!run || !run.includes("--port")) return undefined;
  const text = `${await help([]) ?? ""}\n${run}`;
  return {
    help: text,
    has: (flag) => new RegExp(`(^|[\\s,[])${flag}([\\s,=<\\[]|$)`, "m").test(text),
  };
}

/** Names hN.origin.test used for never-seen-host requests, mapped by --resolve. */
export function freshNames(origin: Origin, count: number, tag: string): string[] {
  return Array.from({ length: count }, (_, i) => `h${i + 1}-${tag}.${origin.name}`);
}

/** Options for {@linkcode startNetmonitor}. */
export interface NetmonitorLaunch extends LaunchOptions {
  command: NetmonitorCommand;
  flags: NetmonitorFlags;
  /** Extra names to map to the origin (for never-seen-host tests). */
  extraNames?: string[];
  /** Extra arguments (e.g. V8 flags are not here: put them in `command`). */
  extraArgs?: string[];
}

/**
 * netmonitor run: non-interactive, default allow, rules file allowing
 * origin.test and *.origin.test, --resolve for every name on both origin ports.
 */
export async function startNetmonitor(opts: NetmonitorLaunch): Promise<Proxy> {
  const port = freePort();
  const dataDir = `${opts.dir}/netmonitor-data`;
  await Deno.mkdir(dataDir, { recursive: true });
  const o = opts.origin;
  await Deno.writeTextFile(
    `${dataDir}/network-rules.json`,
    JSON.stringify({ [o.name]: "allow-domain", [`*.${o.name}`]: "allow-domain" }, null, 2) + "\n",
  );
  const f = opts.flags;
  // --data-dir is a global option: it goes before the command.
  const args = [...opts.command.args, "--data-dir", dataDir, "run", "--port", String(port)];
  if (f.has("--listen")) args.push("--listen", "127.0.0.1");
  if (f.has("--non-interactive")) args.push("--non-interactive");
  if (f.has("--default")) args.push("--default", "allow");
  if (f.has("--upstream-ca")) args.push("--upstream-ca", o.caPath);
  const names = [o.name, ...(opts.extraNames ?? [])];
  for (const n of names) {
    args.push("--resolve", `${n}:${o.httpPort}:${o.addr}`);
    args.push("--resolve", `${n}:${o.tlsPort}:${o.addr}`);
  }
  if (opts.mode === "tunnel") {
    if (f.has("--no-intercept")) args.push("--no-intercept");
    else if (f.has("--passthrough")) { for (const n of names) args.push("--passthrough", n); }
  }
  args.push(...(opts.extraArgs ?? []));
  const env: Record<string, string> = { NO_COLOR: "1", NETMONITOR_DATA_DIR: dataDir };
  const service = await startService("netmonitor", opts.command.cmd, args, {
    cwd: opts.command.cwd,
    env,
    logPath: `${opts.dir}/netmonitor.log`,
  });
  await ready(service, port, 60_000);
  let ca: string | undefined;
  if (opts.mode === "intercept") ca = await netmonitorCa(opts.command, dataDir);
  return finish("netmonitor", opts.mode, service, port, o.name, ca);
}

/** Path of netmonitor's CA certificate: `netmonitor ca path`, else the data dir's PEM. */
async function netmonitorCa(nm: NetmonitorCommand, dataDir: string): Promise<string | undefined> {
  const out = await new Deno.Command(nm.cmd, {
    args: [...nm.args, "--data-dir", dataDir, "ca", "path"],
    cwd: nm.cwd,
    env: { NETMONITOR_DATA_DIR: dataDir, NO_COLOR: "1" },
    stdin: "null",
  }).output().catch(() => undefined);
  const path = out?.code === 0
    ? new TextDecoder().decode(out.stdout).trim().split("\n").at(-1)
    : "";
  if (path) {
    try {
      await Deno.stat(path);
      return path;
    } catch { /* fall through */ }
  }
  for (const e of Deno.readDirSync(dataDir)) {
    if (/ca.*(cert)?\.(pem|crt)$/i.test(e.name) && !/key/i.test(e.name)) {
      return `${dataDir}/${e.name}`;
    }
  }
  return undefined;
}

/** One-line version strings of the tools involved. */
export async function versions(nm?: NetmonitorCommand): Promise<Record<string, string>> {
  const first = (s: string) => s.split("\n")[0].trim();
  const v: Record<string, string> = {
    deno: first(await probe("deno", ["--version"])),
    nginx: first(await probe("nginx", ["-v"])).replace("nginx version: ", ""),
    tinyproxy: first(await probe("tinyproxy", ["-v"])),
    mitmdump: first(await probe("mitmdump", ["--version"])).replace(/^Mitmproxy:\s*/, "mitmproxy "),
    wrk: first(await probe("wrk", ["--version"])).replace(/ Copyright.*/, ""),
    hey: "hey " + first(await probe("dpkg-query", ["-W", "-f", "${Version}", "hey"])),
    curl: first(await probe("curl", ["--version"])).split(" ").slice(0, 2).join(" "),
    socat: first(await probe("socat", ["-V"]).then((v) => v.split("\n")[1] ?? "")).replace(
      / on .*/,
      "",
    ),
  };
  if (nm) {
    const rev = first(await probe("git", ["-C", nm.cwd, "rev-parse", "--short", "HEAD"]));
    const dirty =
      (await probe("git", ["-C", nm.cwd, "status", "--porcelain", "--", "lib", "main.ts", "cli"]))
        ? "+uncommitted"
        : "";
    v.netmonitor = `${rev}${dirty} (${[nm.cmd, ...nm.args].join(" ")})`;
  }
  return v;
}
