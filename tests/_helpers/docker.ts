/**
 * Helpers for the Docker end-to-end tests: engine detection, unique names,
 * docker commands, the docker/*.sh scripts, and local stand-ins for internet
 * hosts (plain and TLS origins on a loopback address of their own, named
 * through the proxy's `--resolve`).
 *
 * Network rule: everything here talks to this machine only -- loopback
 * origins, and containers and networks the calling test created.
 *
 * @module
 */

import { fileURLToPath } from "node:url";

/** The repository root. */
export const REPO = fileURLToPath(new URL("../../", import.meta.url)).replace(/\/$/, "");

/** The offline test image built by tests/testdata/docker/build-image.sh (sh, busybox, curl). */
export const TEST_IMAGE = "netmonitor-test:latest";

const decoder = new TextDecoder();

/** The result of a finished command. */
export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Options of {@linkcode exec}. */
export interface ExecOptions {
  env?: Record<string, string>;
  cwd?: string;
  /** Text written to stdin; stdin is closed (EOF) otherwise. */
  stdin?: string;
  /** Kill the command after this many ms. @default {120000} */
  timeoutMs?: number;
}

/** Runs a command to completion and captures its output. Never throws for a non-zero exit. */
export async function exec(
  cmd: string,
  args: string[],
  options: ExecOptions = {},
): Promise<CommandResult> {
  const child = new Deno.Command(cmd, {
    args,
    env: options.env,
    cwd: options.cwd ?? REPO,
    stdin: options.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (options.stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(options.stdin));
    await writer.close();
  }
  // On timeout: SIGTERM first, so a script's EXIT trap cleans up; SIGKILL 10 s later.
  const kill = (signal: Deno.Signal) => {
    try {
      child.kill(signal);
    } catch { /* already gone */ }
  };
  let hard: ReturnType<typeof setTimeout> | undefined;
  const timer = setTimeout(() => {
    kill("SIGTERM");
    hard = setTimeout(() => kill("SIGKILL"), 10_000);
  }, options.timeoutMs ?? 120_000);
  try {
    const out = await child.output();
    return {
      code: out.code,
      stdout: decoder.decode(out.stdout),
      stderr: decoder.decode(out.stderr),
    };
  } finally {
    clearTimeout(timer);
    clearTimeout(hard);
  }
}

/** `docker ARGS...`; throws with docker's message when it fails. */
export async function docker(args: string[], options: ExecOptions = {}): Promise<string> {
  const res = await exec("docker", args, options);
  if (res.code !== 0) {
    throw new Error(`docker ${args.join(" ")} failed (${res.code}): ${res.stderr.trim()}`);
  }
  return res.stdout.trim();
}

/**
 * Why the Docker tests cannot run here, or null when they can: the docker CLI
 * answers, the engine is up, and the test image exists (built when missing).
 * Prints a `SKIP:` line once when they cannot.
 */
export async function dockerUnavailable(): Promise<string | null> {
  const why = await detect();
  if (why) {
    console.error(`SKIP: Docker end-to-end tests: Docker unavailable: ${why} (run .ci/docker.sh)`);
  }
  return why;
}

async function detect(): Promise<string | null> {
  let info: CommandResult;
  try {
    info = await exec("docker", ["info", "--format", "{{.ServerVersion}}"], { timeoutMs: 15_000 });
  } catch {
    return "the docker CLI is not installed";
  }
  if (info.code !== 0) return `the engine does not answer: ${info.stderr.trim().split("\n").pop()}`;
  const image = await exec("docker", ["image", "inspect", TEST_IMAGE]);
  if (image.code === 0) return null;
  const build = await exec("bash", [`${REPO}/tests/testdata/docker/build-image.sh`, TEST_IMAGE], {
    timeoutMs: 300_000,
  });
  if (build.code !== 0) return `cannot build ${TEST_IMAGE}: ${build.stderr.trim()}`;
  return null;
}

/**
 * `docker network create` arguments for a network as docker/run-monitored.sh wants it:
 * internal, and without inter-container communication (it refuses networks whose containers
 * reach each other directly).
 */
export const MONITORED_NETWORK_ARGS = [
  "--internal",
  "-o",
  "com.docker.network.bridge.enable_icc=false",
];

let counter = 0;
/** A name unique to this test run, e.g. `nm-e2e-1234-3-k2j4`; valid for containers and networks. */
export function uniqueName(label: string): string {
  counter++;
  const rand = Math.random().toString(36).slice(2, 6);
  return `nm-e2e-${label}-${Deno.pid}-${counter}-${rand}`;
}

/** Removes containers (force) and then networks; ignores what is already gone. */
export async function dockerCleanup(
  containers: string[],
  networks: string[] = [],
): Promise<void> {
  if (containers.length > 0) await exec("docker", ["rm", "-f", ...containers]);
  for (const net of networks) await exec("docker", ["network", "rm", net]);
}

/** The Linux bridge of a Docker network, or null when the network is gone. */
export async function networkBridge(network: string): Promise<string | null> {
  const id = await exec("docker", ["network", "inspect", "--format", "{{.Id}}", network]);
  return id.code === 0 ? `br-${id.stdout.trim().slice(0, 12)}` : null;
}

/**
 * Removes the host firewall rules docker/run-monitored.sh added for `network`
 * (kept by the script when the network was not its own). Quiet when none.
 */
export async function removeFirewall(network: string): Promise<void> {
  const bridge = await networkBridge(network);
  if (bridge === null) return;
  const chain = `NETMONITOR-${bridge}`;
  const input = await exec("iptables", ["-w", "-S", "INPUT"]).catch(() => null);
  for (const line of input?.stdout.split("\n") ?? []) {
    if (!line.endsWith(`-j ${chain}`)) continue;
    await exec("iptables", ["-w", "-D", ...line.split(" ").slice(1)]);
  }
  await exec("iptables", ["-w", "-F", chain]).catch(() => null);
  await exec("iptables", ["-w", "-X", chain]).catch(() => null);
  for (const dir of ["-i", "-o"]) {
    for (let i = 0; i < 10; i++) {
      const del = await exec("iptables", ["-w", "-D", "FORWARD", dir, bridge, "-j", "REJECT"])
        .catch(() => null);
      if (!del || del.code !== 0) break;
    }
  }
  for (const ip6Chain of ["INPUT", "FORWARD"]) {
    for (let i = 0; i < 10; i++) {
      const del = await exec("ip6tables", ["-w", "-D", ip6Chain, "-i", bridge, "-j", "REJECT"])
        .catch(() => null);
      if (!del || del.code !== 0) break;
    }
  }
}

/**
 * A TCP listener on `hostname` that counts what it accepts, and from where. With `hold`, each
 * connection gets `greeting` and is then held open, silent, until close();
 * otherwise it is closed at once.
 */
export function countingListener(
  hostname: string,
  { hold = false, greeting = "" }: { hold?: boolean; greeting?: string } = {},
) {
  const listener = Deno.listen({ hostname, port: 0 });
  let accepted = 0;
  const peers: string[] = [];
  const open = new Set<Deno.Conn>();
  const done = (async () => {
    try {
      for await (const conn of listener) {
        accepted++;
        peers.push((conn.remoteAddr as Deno.NetAddr).hostname);
        if (!hold) {
          conn.close();
          continue;
        }
        open.add(conn);
        if (greeting) await conn.write(new TextEncoder().encode(greeting)).catch(() => {});
      }
    } catch { /* closed */ }
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    get accepted() {
      return accepted;
    },
    /** The address of each connection accepted, in order. */
    get peers(): readonly string[] {
      return peers;
    },
    async close() {
      listener.close();
      await done;
      for (const conn of open) {
        try {
          conn.close();
        } catch { /* closed by the peer */ }
      }
    },
  };
}

/** The IPv4 gateway of a Docker network (the host's address on its bridge). */
export async function networkGateway(network: string): Promise<string> {
  const out = await docker([
    "network",
    "inspect",
    "--format",
    "{{range .IPAM.Config}}{{.Gateway}} {{end}}",
    network,
  ]);
  const gw = out.split(/\s+/).find((a) => /^\d+\.\d+\.\d+\.\d+$/.test(a));
  if (!gw) throw new Error(`network ${network} has no IPv4 gateway`);
  return gw;
}

/** A container's IPv4 address on `network`. */
export async function containerIp(container: string, network: string): Promise<string> {
  return await docker([
    "inspect",
    "--format",
    `{{(index .NetworkSettings.Networks "${network}").IPAddress}}`,
    container,
  ]);
}

/**
 * "Outside" for a leak test: a web server container `name` on a new ordinary
 * bridge network `network`, answering `target-reached` on port 80. Returns its
 * address there; the caller removes both.
 */
export async function startTargetServer(name: string, network: string): Promise<string> {
  await docker(["network", "create", network]);
  await docker([
    "run",
    "-d",
    "--pull",
    "never",
    "--name",
    name,
    "--network",
    network,
    TEST_IMAGE,
    "sh",
    "-c",
    "mkdir -p /w && echo target-reached >/w/index.html && exec httpd -f -p 80 -h /w",
  ]);
  return await containerIp(name, network);
}

/** A free TCP port on `hostname` (bound and released: a race is possible but harmless here). */
export function freePort(hostname = "127.0.0.1"): number {
  const l = Deno.listen({ hostname, port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** Environment for docker/*.sh and the CLI: an isolated data dir, the test image, no pulls. */
export function scriptEnv(
  dataDir: string,
  extra: Record<string, string> = {},
): Record<string, string> {
  return {
    NETMONITOR_DATA_DIR: dataDir,
    NETMONITOR_IMAGE: TEST_IMAGE,
    // Never let a typo make the engine try a registry (the network rule).
    NETMONITOR_PULL: "never",
    NETMONITOR_BIN: `${Deno.execPath()} run -A ${REPO}/main.ts`,
    NO_COLOR: "1",
    // Without root the script cannot add its firewall rules, and refuses to run unless told
    // to go without them; docker_isolation_test and docker_firewall_test cover the rules.
    ...(Deno.uid() === 0 ? {} : { NETMONITOR_HOST_FIREWALL: "0" }),
    ...extra,
  };
}

/** Runs a docker/*.sh script to completion. */
export function runScript(
  script: string,
  args: string[],
  env: Record<string, string>,
  options: Omit<ExecOptions, "env"> = {},
): Promise<CommandResult> {
  return exec("bash", [`${REPO}/docker/${script}`, ...args], { ...options, env });
}

/** Runs the netmonitor CLI (`deno run -A main.ts ARGS...`) to completion. */
export function netmonitor(
  args: string[],
  env: Record<string, string>,
  options: Omit<ExecOptions, "env"> = {},
): Promise<CommandResult> {
  return exec(Deno.execPath(), ["run", "-A", `${REPO}/main.ts`, ...args], { ...options, env });
}

// ---------------------------------------------------------------------------
// Local stand-ins for internet hosts.

/** A test PKI: a CA and one server certificate for every name given. */
export interface TestPki {
  caFile: string;
  certFile: string;
  keyFile: string;
}

/** Makes a CA and a server certificate (SAN: `names`) with openssl, in `dir`. */
export async function makePki(dir: string, names: string[]): Promise<TestPki> {
  const ossl = async (args: string[]) => {
    const res = await exec("openssl", args, { cwd: dir });
    if (res.code !== 0) throw new Error(`openssl ${args[0]} failed: ${res.stderr}`);
  };
  await ossl([
    "req",
    "-x509",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-keyout",
    "origin-ca.key",
    "-out",
    "origin-ca.pem",
    "-days",
    "2",
    "-subj",
    "/CN=netmonitor e2e origin CA",
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
  ]);
  await ossl([
    "req",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-keyout",
    "origin.key",
    "-out",
    "origin.csr",
    "-subj",
    "/CN=netmonitor e2e origin",
  ]);
  await Deno.writeTextFile(
    `${dir}/origin.ext`,
    `subjectAltName=${names.map((n) => `DNS:${n}`).join(",")}\n` +
      "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
  );
  await ossl([
    "x509",
    "-req",
    "-in",
    "origin.csr",
    "-CA",
    "origin-ca.pem",
    "-CAkey",
    "origin-ca.key",
    "-CAcreateserial",
    "-out",
    "origin.pem",
    "-days",
    "2",
    "-sha256",
    "-extfile",
    "origin.ext",
  ]);
  return {
    caFile: `${dir}/origin-ca.pem`,
    certFile: `${dir}/origin.pem`,
    keyFile: `${dir}/origin.key`,
  };
}

/** Plain and TLS origins that answer `origin <scheme> <Host> <METHOD> <path>` for any name. */
export interface Origins {
  /** The loopback address both listen on (a random 127.x.y.z, so ports 80/443 are free). */
  address: string;
  httpPort: number;
  httpsPort: number;
  pki: TestPki;
  /** `--resolve` arguments for `netmonitor run` mapping each name's http and https port here. */
  resolveArgs(names: string[]): string[];
  /** The URL of `path` on `name` with the right port (omitted when it is 80/443). */
  url(scheme: "http" | "https", name: string, path?: string): string;
  close(): Promise<void>;
}

/**
 * Starts the stand-in origins. They listen on ports 80 and 443 of a random
 * loopback address when that is possible (root), so URLs look like the real
 * ones (`https://github.com/...`); otherwise on free ports of 127.0.0.1.
 */
export async function startOrigins(dir: string, names: string[]): Promise<Origins> {
  const pki = await makePki(dir, names);
  const cert = await Deno.readTextFile(pki.certFile);
  const key = await Deno.readTextFile(pki.keyFile);
  const handler = (req: Request): Response => {
    const u = new URL(req.url);
    const scheme = u.protocol.replace(":", "");
    const host = req.headers.get("host") ?? "";
    return new Response(`origin ${scheme} ${host} ${req.method} ${u.pathname}${u.search}\n`);
  };
  let servers: Deno.HttpServer[] = [];
  let address = "127.0.0.1";
  const listen = (hostname: string, httpPort: number, httpsPort: number) => {
    const opts = { hostname, onListen: () => {} };
    const plain = Deno.serve({ ...opts, port: httpPort }, handler);
    try {
      const tls = Deno.serve({ ...opts, port: httpsPort, cert, key }, handler);
      return [plain, tls];
    } catch (e) {
      plain.shutdown();
      throw e;
    }
  };
  for (let attempt = 0; attempt < 5 && servers.length === 0; attempt++) {
    const b = () => 1 + Math.floor(Math.random() * 253);
    const candidate = `127.${100 + Math.floor(Math.random() * 100)}.${b()}.${b()}`;
    try {
      servers = listen(candidate, 80, 443);
      address = candidate;
    } catch { /* not root, or taken: try again, then fall back */ }
  }
  if (servers.length === 0) servers = listen("127.0.0.1", 0, 0);
  const [plain, tls] = servers;
  const httpPort = (plain.addr as Deno.NetAddr).port;
  const httpsPort = (tls.addr as Deno.NetAddr).port;
  const withPort = (scheme: "http" | "https", name: string) => {
    const port = scheme === "http" ? httpPort : httpsPort;
    return port === (scheme === "http" ? 80 : 443) ? name : `${name}:${port}`;
  };
  return {
    address,
    httpPort,
    httpsPort,
    pki,
    resolveArgs: (list) =>
      list.flatMap((n) => [
        "--resolve",
        `${n}:${httpPort}:${address}`,
        "--resolve",
        `${n}:${httpsPort}:${address}`,
      ]),
    url: (scheme, name, path = "/") => `${scheme}://${withPort(scheme, name)}${path}`,
    close: async () => {
      await Promise.all(servers.map((s) => s.shutdown()));
    },
  };
}

/** Polls `check` every 100 ms until it returns a value, or throws after `timeoutMs`. */
export async function waitFor<T>(
  what: string,
  check: () => Promise<T | undefined | null | false> | T | undefined | null | false,
  timeoutMs = 30_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (true) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

// ---------------------------------------------------------------------------
// A monitored run: data dir, stand-in origins, and the environment for
// docker/run-monitored.sh on a network of the test's own.

/** Options of {@linkcode setupMonitored}. */
export interface MonitoredOptions {
  /** Host names the origins answer for (mapped through `--resolve`). */
  names: string[];
  /** network-rules.json content, written before the run. */
  rules?: Record<string, string>;
  /** More `netmonitor run` arguments. */
  runArgs?: string[];
  /**
   * Create the internal network here (so its gateway is known before the run)
   * instead of letting the script create it: {@linkcode MONITORED_NETWORK_ARGS},
   * no labels, like a network of the user's. @default {false}
   */
  createNetwork?: boolean;
  /** The proxy port. @default {a random port} */
  port?: number;
}

/** What {@linkcode setupMonitored} prepared. */
export interface Monitored {
  dir: string;
  dataDir: string;
  network: string;
  port: number;
  origins: Origins;
  /** The gateway, when `createNetwork` was set. */
  gateway?: string;
  /** Environment for docker/*.sh (NETMONITOR_NETWORK, _PORT, _RUN_ARGS, _DATA_DIR, ...). */
  env: Record<string, string>;
  /** Stops the origins, removes the network (if still there) and the temp dir. */
  cleanup(containers?: string[]): Promise<void>;
}

/** A CA made once per test process and copied into each data dir (saves a key generation). */
let sharedCa: { cert: string; key: string } | undefined;

/** Remembers the CA a proxy generated in `dataDir`, for later data dirs. */
export async function rememberCa(dataDir: string): Promise<void> {
  if (sharedCa) return;
  try {
    sharedCa = {
      cert: await Deno.readTextFile(`${dataDir}/netmonitor-ca.pem`),
      key: await Deno.readTextFile(`${dataDir}/netmonitor-ca-key.pem`),
    };
  } catch { /* none generated */ }
}

/** Prepares a monitored run; call `cleanup()` in a finally block. */
export async function setupMonitored(opts: MonitoredOptions): Promise<Monitored> {
  const dir = await Deno.makeTempDir({ prefix: "nm-docker-e2e-" });
  const dataDir = `${dir}/data`;
  await Deno.mkdir(dataDir, { mode: 0o700 });
  if (sharedCa) {
    await Deno.writeTextFile(`${dataDir}/netmonitor-ca.pem`, sharedCa.cert);
    await Deno.writeTextFile(`${dataDir}/netmonitor-ca-key.pem`, sharedCa.key, { mode: 0o600 });
  }
  if (opts.rules) {
    await Deno.writeTextFile(`${dataDir}/network-rules.json`, JSON.stringify(opts.rules, null, 2));
  }
  const network = uniqueName("net");
  const port = opts.port ?? 20_000 + Math.floor(Math.random() * 30_000);
  let origins: Origins | undefined;
  let gateway: string | undefined;
  try {
    origins = await startOrigins(dir, opts.names);
    if (opts.createNetwork) {
      await docker(["network", "create", ...MONITORED_NETWORK_ARGS, network]);
      gateway = await networkGateway(network);
    }
  } catch (e) {
    await origins?.close();
    await exec("docker", ["network", "rm", network]);
    await Deno.remove(dir, { recursive: true });
    throw e;
  }
  const runArgs = [
    ...origins.resolveArgs(opts.names),
    "--upstream-ca",
    origins.pki.caFile,
    ...(opts.runArgs ?? []),
  ];
  const env = scriptEnv(dataDir, {
    NETMONITOR_NETWORK: network,
    NETMONITOR_PORT: String(port),
    NETMONITOR_RUN_ARGS: runArgs.join(" "),
  });
  const o = origins;
  return {
    dir,
    dataDir,
    network,
    port,
    origins: o,
    gateway,
    env,
    cleanup: async (containers = []) => {
      await rememberCa(dataDir);
      await stopScriptProxy(dataDir);
      await o.close();
      if (containers.length > 0) await exec("docker", ["rm", "-f", ...containers]);
      await removeFirewall(network);
      await dockerCleanup([], [network]);
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

/**
 * Stops the proxies that docker/run-monitored.sh started for `dataDir` and
 * could not stop itself (the script was killed): each pid file
 * (netmonitor-proxy-GATEWAY-PORT.pid) names a process group.
 */
export async function stopScriptProxy(dataDir: string): Promise<void> {
  let entries: Deno.DirEntry[] = [];
  try {
    entries = await Array.fromAsync(Deno.readDir(dataDir));
  } catch {
    return;
  }
  for (const entry of entries) {
    if (!/^netmonitor-proxy.*\.pid$/.test(entry.name)) continue;
    const text = await Deno.readTextFile(`${dataDir}/${entry.name}`).catch(() => "");
    await stopProcessGroup(Number(text.split(" ")[0]));
  }
}

async function stopProcessGroup(pid: number): Promise<void> {
  if (!Number.isInteger(pid) || pid <= 1) return;
  let cmdline = "";
  try {
    cmdline = (await Deno.readTextFile(`/proc/${pid}/cmdline`)).replaceAll("\0", " ");
  } catch {
    return; // gone
  }
  if (!cmdline.includes(" run --listen ")) return; // the pid now belongs to something else
  for (const signal of ["SIGTERM", "SIGKILL"] as const) {
    try {
      Deno.kill(-pid, signal);
    } catch {
      return;
    }
    for (let i = 0; i < 50; i++) {
      if (!(await Deno.stat(`/proc/${pid}`).then(() => true, () => false))) return;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/** The access log's records (JSON Lines), or [] when there is no log yet. */
export async function readLog(dataDir: string): Promise<Record<string, unknown>[]> {
  let text = "";
  try {
    text = await Deno.readTextFile(`${dataDir}/network-access.log`);
  } catch {
    return [];
  }
  return text.split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l));
}

/** `./docker/manage-firewall.sh --prompt` with piped input: the operator's second terminal. */
export interface Prompter {
  /** Waits for the next `Your choice [1]:` and returns the text shown since the last answer. */
  nextPrompt(timeoutMs?: number): Promise<string>;
  /** Types an answer (a menu digit) and Enter. */
  answer(choice: string): Promise<void>;
  /** Ends the input (the prompter detaches) and waits for it to exit. */
  close(): Promise<void>;
}

/** Starts the prompter once the proxy's control socket exists. */
export async function startPrompter(env: Record<string, string>): Promise<Prompter> {
  const dataDir = env.NETMONITOR_DATA_DIR;
  await waitFor(
    "the control socket",
    () => Deno.stat(`${dataDir}/netmonitor.sock`).then(() => true, () => false),
    90_000,
  );
  const child = new Deno.Command("bash", {
    args: [`${REPO}/docker/manage-firewall.sh`, "--prompt"],
    env,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const writer = child.stdin.getWriter();
  const stderr = new Response(child.stderr).text();
  let buffer = "";
  let closed = false;
  return {
    async nextPrompt(timeoutMs = 90_000) {
      const deadline = Date.now() + timeoutMs;
      while (!/Your choice \[1\]:/.test(buffer)) {
        const left = deadline - Date.now();
        if (left <= 0) throw new Error(`no prompt within ${timeoutMs} ms; shown:\n${buffer}`);
        let timer: ReturnType<typeof setTimeout> | undefined;
        const timeout = new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`no prompt; shown:\n${buffer}`)), left);
        });
        try {
          const { value, done } = await Promise.race([reader.read(), timeout]);
          if (done) throw new Error(`netmonitor prompt exited; shown:\n${buffer}\n${await stderr}`);
          buffer += value;
        } finally {
          clearTimeout(timer);
        }
      }
      const shown = buffer;
      buffer = "";
      return shown;
    },
    async answer(choice: string) {
      await writer.write(new TextEncoder().encode(`${choice}\n`));
    },
    async close() {
      if (closed) return;
      closed = true;
      await writer.close().catch(() => {});
      const drain = (async () => {
        try {
          while (!(await reader.read()).done) { /* drain */ }
        } catch { /* cancelled */ }
      })();
      const timer = setTimeout(() => {
        try {
          child.kill("SIGTERM");
        } catch { /* gone */ }
      }, 10_000);
      await drain;
      await stderr;
      await child.status;
      clearTimeout(timer);
    },
  };
}
