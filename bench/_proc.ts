/**
 * Child-process management for the benchmark: every program runs in its own
 * process group (through `setsid`), so that stopping it also stops whatever it
 * forked (nginx workers, shells). Every spawned group is tracked and killed by
 * {@linkcode killAll}, which run.ts calls in `finally` and on SIGINT/SIGTERM.
 *
 * @module
 */

/** A long-running child (server or proxy) in its own process group. */
export interface Service {
  /** Short label used in messages. */
  readonly name: string;
  /** PID of the group leader; also the process group id. */
  readonly pid: number;
  /** Resolves when the leader exits. */
  readonly status: Promise<Deno.CommandStatus>;
  /** Where stdout and stderr go (one file). */
  readonly logPath: string;
  /** SIGTERM the group, then SIGKILL after `graceMs` (default 3000). */
  stop(graceMs?: number): Promise<void>;
}

const live = new Set<Service>();
/** Set by killAll: nothing new may start once cleanup began (Ctrl-C during a run). */
let stopping = false;

function refuseWhenStopping(cmd: string): void {
  if (stopping) throw new Error(`Cannot start ${cmd}: the benchmark is stopping`);
}

/** Options for {@linkcode startService}. */
export interface StartOptions {
  /** Working directory. Default: the current one. */
  cwd?: string;
  /** Extra environment variables. */
  env?: Record<string, string>;
  /** File that receives the child's stdout and stderr. */
  logPath: string;
}

/**
 * Start `cmd args...` in a new process group, its stdout and stderr appended to
 * `logPath` by the shell, not through a pipe: a pipe drained by this process
 * would make a chatty child (netmonitor prints a line per request) wait for us.
 */
export function startService(
  name: string,
  cmd: string,
  args: string[],
  opts: StartOptions,
): Promise<Service> {
  refuseWhenStopping(cmd);
  const child = new Deno.Command("setsid", {
    args: ["sh", "-c", 'exec "$@" >>"$BENCH_LOG_PATH" 2>&1', "sh", cmd, ...args],
    cwd: opts.cwd,
    env: { ...opts.env, BENCH_LOG_PATH: opts.logPath },
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  let exited = false;
  const status = child.status.then((s) => {
    exited = true;
    return s;
  });
  const service: Service = {
    name,
    pid: child.pid,
    status,
    logPath: opts.logPath,
    async stop(graceMs = 3000) {
      live.delete(service);
      if (!exited) signalGroup(child.pid, "SIGTERM");
      const timer = new Promise<"timeout">((r) => {
        const id = setTimeout(() => r("timeout"), graceMs);
        void status.then(() => clearTimeout(id));
      });
      if ((await Promise.race([status, timer])) === "timeout") signalGroup(child.pid, "SIGKILL");
      await status;
      // Workers that outlived the leader (nginx) still belong to the group.
      signalGroup(child.pid, "SIGKILL");
    },
  };
  live.add(service);
  return Promise.resolve(service);
}

function signalGroup(pgid: number, sig: Deno.Signal): void {
  try {
    Deno.kill(-pgid, sig);
  } catch { /* group already gone */ }
}

/** Stop every service still running. Safe to call more than once. */
export async function killAll(): Promise<void> {
  stopping = true;
  await Promise.all([...live].map((s) => s.stop(1500)));
}

/** Result of {@linkcode runTool}. */
export interface ToolResult {
  code: number;
  stdout: string;
  stderr: string;
  /** True when the run was cut short by `timeoutMs`. */
  timedOut: boolean;
}

/**
 * Run a short-lived program (load generator, curl) in its own process group and
 * collect its output. It is killed after `timeoutMs` (default 120 s), and on
 * {@linkcode killAll}.
 */
export async function runTool(
  cmd: string,
  args: string[],
  opts: { timeoutMs?: number; cwd?: string; env?: Record<string, string> } = {},
): Promise<ToolResult> {
  refuseWhenStopping(cmd);
  const child = new Deno.Command("setsid", {
    args: [cmd, ...args],
    cwd: opts.cwd,
    env: opts.env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const handle: Service = {
    name: cmd,
    pid: child.pid,
    status: child.status,
    logPath: "",
    stop() {
      signalGroup(child.pid, "SIGKILL");
      return Promise.resolve();
    },
  };
  live.add(handle);
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    signalGroup(child.pid, "SIGKILL");
  }, opts.timeoutMs ?? 120_000);
  try {
    const out = await child.output();
    return {
      code: out.code,
      stdout: new TextDecoder().decode(out.stdout),
      stderr: new TextDecoder().decode(out.stderr),
      timedOut,
    };
  } finally {
    clearTimeout(timer);
    live.delete(handle);
    signalGroup(child.pid, "SIGKILL");
  }
}

/** Run a program and return its trimmed stdout+stderr, or "" when it cannot run. */
export async function probe(cmd: string, args: string[]): Promise<string> {
  try {
    const out = await new Deno.Command(cmd, { args, stdin: "null" }).output();
    const td = new TextDecoder();
    return (td.decode(out.stdout) + td.decode(out.stderr)).trim();
  } catch {
    return "";
  }
}

/** PIDs whose process group is `pgid`. */
export function groupPids(pgid: number): number[] {
  const pids: number[] = [];
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      const stat = Deno.readTextFileSync(`/proc/${entry.name}/stat`);
      // Fields after the command name "(...)": state ppid pgrp ...
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (Number(fields[2]) === pgid) pids.push(Number(entry.name));
    } catch { /* process exited while scanning */ }
  }
  return pids;
}

/** Memory of one process group, in KiB, summed over its processes. */
export interface GroupMemory {
  /** Sum of VmRSS. */
  rssKiB: number;
  /** Sum of VmHWM (peak RSS). */
  peakKiB: number;
  /** Number of processes counted. */
  processes: number;
}

/** Sum VmRSS and VmHWM over every process in group `pgid` (the `setsid` leader's pid). */
export function groupMemory(pgid: number): GroupMemory {
  let rssKiB = 0, peakKiB = 0, processes = 0;
  for (const pid of groupPids(pgid)) {
    try {
      const status = Deno.readTextFileSync(`/proc/${pid}/status`);
      const rss = /^VmRSS:\s+(\d+) kB/m.exec(status);
      const hwm = /^VmHWM:\s+(\d+) kB/m.exec(status);
      if (!rss) continue; // zombie or kernel thread
      rssKiB += Number(rss[1]);
      peakKiB += Number(hwm?.[1] ?? rss[1]);
      processes++;
    } catch { /* exited */ }
  }
  return { rssKiB, peakKiB, processes };
}

/** Resolve once a TCP connect to host:port succeeds; throw after `timeoutMs`. */
export async function waitForPort(
  hostname: string,
  port: number,
  timeoutMs = 20_000,
  alive?: () => boolean,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (true) {
    try {
      const c = await Deno.connect({ hostname, port });
      c.close();
      return;
    } catch (e) {
      if (alive && !alive()) {
        throw new Error(`Cannot start: process exited before ${hostname}:${port} opened`);
      }
      if (Date.now() > deadline) {
        throw new Error(`Cannot connect to ${hostname}:${port} after ${timeoutMs} ms: ${e}`);
      }
      await sleep(100);
    }
  }
}

/** A free TCP port on 127.0.0.1 (bind port 0, read it, close). */
export function freePort(hostname = "127.0.0.1"): number {
  const l = Deno.listen({ hostname, port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** Promise-based sleep. */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
