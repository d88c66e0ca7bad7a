/**
 * `netmonitor run`: the proxy, wired to the rules store (hot-reloaded), the
 * decision broker (terminal prompt and/or `netmonitor prompt` clients), the
 * access log, and TLS interception.
 *
 * @module
 */

import { type Command, Option } from "commander";
import { DecisionBroker } from "../lib/decide/broker.ts";
import {
  type ControlServer,
  ControlSocketBusyError,
  startControlServer,
} from "../lib/decide/control.ts";
import { AccessLog, DEFAULT_KEEP } from "../lib/log/mod.ts";
import type { InterfaceAddress } from "../lib/net/guard.ts";
import { HostError, isIpLiteral, normaliseHost } from "../lib/net/host.ts";
import { parseResolveEntry } from "../lib/net/resolve.ts";
import { type DataPaths, ensureDataDir } from "../lib/paths.ts";
import {
  type AccessRecord,
  type DecideInput,
  type FinalDecision,
  type ProxyServer,
  startProxy,
  type TunnelInterceptor,
} from "../lib/proxy/mod.ts";
import { type RuleSet, RulesStore } from "../lib/rules/mod.ts";
import { PassthroughList, prepareInterception } from "../lib/tls/intercept.ts";
import { UpstreamCaError } from "../lib/tls/upstream.ts";
import { colorEnabled, formatRecordLine, safeLines, terminalWidth } from "./_render.ts";
import { CliError, UsageError } from "./_errors.ts";
import { listenNotice } from "./_listen_notice.ts";
import type { CliContext } from "./mod.ts";
import {
  attachTerminal,
  formatBrokerEvent,
  ignoreTerminalStopSignals,
  inTerminalForeground,
} from "./terminal_prompt.ts";

/** Who answers requests that no rule covers. */
export type PromptMode = "terminal" | "socket" | "non-interactive";

/** Everything `netmonitor run` was asked for, validated. */
export interface RunConfig {
  /** Listening address (an IP literal). */
  listen: string;
  /** Listening port; 0 picks a free one. */
  port: number;
  /** `--resolve` entries, `host:port` -> address. */
  resolve: Map<string, string>;
  promptTimeoutMs: number;
  mode: PromptMode;
  /** `--default`: the non-interactive answer, and what a timed-out prompt gets. */
  defaultAction: "allow" | "deny";
  logMaxBytes: number;
  logKeep: number;
  /** Decrypt CONNECT tunnels (`--no-intercept` turns it off). */
  intercept: boolean;
  passthrough: string[];
  upstreamCa: string[];
  /**
   * Started in the background of the terminal it would have asked on: it asks
   * `netmonitor prompt` clients only (mode `socket`), and says so.
   */
  background?: boolean;
}

/** Raw option values from commander. */
interface RunFlags {
  port: string;
  listen: string;
  resolve: string[];
  promptTimeout: string;
  nonInteractive?: boolean;
  promptVia?: string;
  default?: string;
  logMaxSize: string;
  logKeep: string;
  intercept: boolean;
  passthrough: string[];
  upstreamCa: string[];
}

const collect = (v: string, all: string[]) => [...all, v];

/** Registers `netmonitor run`. */
export function registerRunCommand(program: Command, ctx: CliContext): void {
  program
    .command("run")
    .description(
      "start the proxy: decide every request from the rules, ask when no rule applies, " +
        "log everything",
    )
    .option("-p, --port <port>", "port to listen on (0 picks a free one)", "8080")
    .option(
      "--listen <address>",
      "IP address to listen on; anything but loopback lets other machines use the proxy",
      "127.0.0.1",
    )
    .option(
      "--resolve <host:port:address>",
      "send requests for host:port to this address, like curl --resolve (repeatable); " +
        "mapped addresses are trusted by destination protection",
      collect,
      [],
    )
    .option(
      "--prompt-timeout <duration>",
      "how long a request waits for an answer (60s, 2m, 500ms); then --default decides it",
      "60s",
    )
    .option(
      "--non-interactive",
      "never ask: requests no rule covers get --default (the default when stdin is not a terminal)",
    )
    .addOption(
      new Option(
        "--prompt-via <where>",
        "who answers: terminal (this terminal and `netmonitor prompt` clients) or socket " +
          "(only `netmonitor prompt` clients, for a proxy in the background); default: " +
          "terminal when stdin is one, else --non-interactive",
      ).choices(["terminal", "socket"]),
    )
    .addOption(
      new Option(
        "--default <action>",
        "answer for requests nobody decides: non-interactive requests and timed-out prompts",
      ).choices(["allow", "deny"]).default("deny"),
    )
    .option(
      "--log-max-size <size>",
      "rotate network-access.log at this size (10MiB, 500KiB, 1GB)",
      "10MiB",
    )
    .option("--log-keep <n>", "rotated log files to keep", String(DEFAULT_KEEP))
    .option("--no-intercept", "relay HTTPS tunnels without decrypting them (host-only decisions)")
    .option(
      "--passthrough <host>",
      "relay tunnels to this host or *.domain without decrypting them (repeatable); " +
        'the rules file can say it too: "host": "passthrough"',
      collect,
      [],
    )
    .option(
      "--upstream-ca <file>",
      "also trust this CA (PEM) for origin certificates (repeatable)",
      collect,
      [],
    )
    .addHelpText(
      "after",
      "\nPrints `Listening on http://ADDR:PORT` when ready, then one line per request.\n" +
        "Ctrl-C (SIGINT) or SIGTERM stops it cleanly: requests in flight are answered,\n" +
        "the log is flushed, the exit code is 0.",
    )
    .action(async (flags: RunFlags) => {
      const config = avoidTerminalInBackground(
        parseRunFlags(flags, ctx.stdinIsTerminal),
        ctx.stdinIsTerminal,
        inTerminalForeground(),
      );
      // A proxy must never be stopped by the kernel for using its terminal
      // from the background (a read, a mode change, or output under `stty
      // tostop`): such use fails instead, and the prompt waits for `fg`.
      ignoreTerminalStopSignals();
      ctx.exitCode = await runProxy(config, {
        paths: ctx.paths,
        stdout: ctx.stdout,
        stderr: ctx.stderr,
        stdoutIsTerminal: ctx.stdoutIsTerminal,
      });
    });
}

/**
 * Validates `run`'s flags.
 * @throws {UsageError} naming the bad flag.
 */
export function parseRunFlags(flags: RunFlags, stdinIsTerminal: boolean): RunConfig {
  const port = wholeNumber(flags.port, "--port", 0, 65535);
  let listen: string;
  try {
    listen = normaliseHost(flags.listen);
  } catch {
    throw new UsageError(`--listen "${flags.listen}" is not an IP address`);
  }
  if (!isIpLiteral(listen)) {
    throw new UsageError(`--listen "${flags.listen}" is not an IP address`, {
      hint: "Use an address such as 127.0.0.1, 172.17.0.1 or ::1.",
    });
  }
  if (listen.startsWith("[")) listen = listen.slice(1, -1);
  const resolve = new Map<string, string>();
  for (const entry of flags.resolve) {
    try {
      const { key, address } = parseResolveEntry(entry);
      resolve.set(key, address);
    } catch (e) {
      throw new UsageError(e instanceof HostError ? e.message : String(e));
    }
  }
  const promptTimeoutMs = parseDuration(flags.promptTimeout, "--prompt-timeout");
  if (flags.nonInteractive && flags.promptVia) {
    throw new UsageError("--non-interactive and --prompt-via exclude each other");
  }
  const mode: PromptMode = flags.nonInteractive
    ? "non-interactive"
    : flags.promptVia === "socket"
    ? "socket"
    : flags.promptVia === "terminal" || stdinIsTerminal
    ? "terminal"
    : "non-interactive";
  const logMaxBytes = parseSize(flags.logMaxSize, "--log-max-size");
  const logKeep = wholeNumber(flags.logKeep, "--log-keep", 0, 1000);
  try {
    new PassthroughList(flags.passthrough);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  return {
    listen,
    port,
    resolve,
    promptTimeoutMs,
    mode,
    defaultAction: flags.default === "allow" ? "allow" : "deny",
    logMaxBytes,
    logKeep,
    intercept: flags.intercept,
    passthrough: flags.passthrough,
    upstreamCa: flags.upstreamCa,
  };
}

/**
 * A run that would ask on the terminal, started in the background of it
 * (`netmonitor run &`; `foreground` false, from {@linkcode inTerminalForeground}),
 * asks `netmonitor prompt` clients instead: raw mode or a read of the
 * terminal would stop the whole process (SIGTTOU, SIGTTIN) at its first
 * prompt. Unknown (`undefined`, not Linux) keeps the terminal.
 */
export function avoidTerminalInBackground(
  config: RunConfig,
  stdinIsTerminal: boolean,
  foreground: boolean | undefined,
): RunConfig {
  if (config.mode !== "terminal" || !stdinIsTerminal || foreground !== false) return config;
  return { ...config, mode: "socket", background: true };
}

function wholeNumber(v: string, name: string, min: number, max: number): number {
  const n = Number(v);
  if (!/^\d+$/.test(v.trim()) || n < min || n > max) {
    throw new UsageError(`${name} must be a whole number from ${min} to ${max}, not "${v}"`);
  }
  return n;
}

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/**
 * Parses `60s`, `2m`, `500ms`, `1h` or a plain number of seconds into ms.
 * @throws {UsageError}
 */
export function parseDuration(text: string, name: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/i.exec(text);
  const ms = m ? Number(m[1]) * DURATION_UNITS[(m[2] ?? "s").toLowerCase()] : NaN;
  if (!(ms >= 1) || !Number.isFinite(ms) || ms > 2_147_483_647) {
    throw new UsageError(`${name} must be a duration such as 60s, 2m or 500ms, not "${text}"`);
  }
  return Math.round(ms);
}

const SIZE_UNITS: Record<string, number> = {
  "": 1,
  b: 1,
  k: 1024,
  kb: 1000,
  kib: 1024,
  m: 1024 ** 2,
  mb: 1000 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gb: 1000 ** 3,
  gib: 1024 ** 3,
};

/**
 * Parses `10MiB`, `500KiB`, `1GB`, `10M` (binary) or a plain byte count.
 * @throws {UsageError}
 */
export function parseSize(text: string, name: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(text);
  const unit = m ? SIZE_UNITS[m[2].toLowerCase()] : undefined;
  const n = m && unit !== undefined ? Math.floor(Number(m[1]) * unit) : NaN;
  if (!(n >= 1024)) {
    throw new UsageError(`${name} must be a size of at least 1KiB such as 10MiB, not "${text}"`);
  }
  return n;
}

/** Fails as `startProxy` would if `config`'s address cannot be listened on. */
function probeListen(config: RunConfig): void {
  try {
    Deno.listen({ hostname: config.listen, port: config.port }).close();
  } catch (e) {
    throw listenError(e, config);
  }
}

/** The CLI's error for a listener that could not be opened. */
function listenError(e: unknown, config: RunConfig): unknown {
  const where = hostPort(config.listen, config.port);
  if (e instanceof Deno.errors.AddrInUse) {
    return new CliError(
      `Cannot listen on ${where}: the address is in use ` +
        `(another netmonitor, or another program); choose another --port`,
    );
  }
  if (e instanceof Deno.errors.AddrNotAvailable || e instanceof Deno.errors.PermissionDenied) {
    return new CliError(`Cannot listen on ${where}: ${(e as Error).message}`);
  }
  return e;
}

/** Where `runProxy` reads and writes. */
export interface RunIo {
  paths: DataPaths;
  stdout(text: string): void;
  stderr(text: string): void;
  stdoutIsTerminal: boolean;
}

/**
 * Runs the proxy until SIGINT/SIGTERM (or `stop` aborts), then shuts down
 * cleanly. Returns the exit code.
 */
export async function runProxy(
  config: RunConfig,
  io: RunIo,
  stop?: AbortSignal,
): Promise<number> {
  const { paths } = io;
  await ensureDataDir(paths);
  const rules = new RulesStore(paths.rules);
  await rules.load();
  // Validated by parseRunFlags; built first so nothing needs cleaning up if it throws.
  const passthrough = new TunnelPassthrough(new PassthroughList(config.passthrough), rules);

  const color = colorEnabled({ isTerminal: () => io.stdoutIsTerminal });
  let printLine = (text: string) => io.stdout(text + "\n");
  // Lines go out in one write per 20 ms at most (below what a person
  // notices): stdout writes are blocking, and one per request cost 3-12% of
  // the proxy's thread (more on a pipe than on a file). Everything goes
  // through this one queue, in order.
  const out = new Batcher<string>((lines) => printLine(lines.join("\n")), 20);
  const say = (text: string) => out.push(text);
  // Lines about the operator's own answers (a rule saved, or not): shown at
  // once, above an open prompt, where other lines wait until it closes.
  let printUrgent = (text: string) => printLine(text);
  const sayUrgent = (text: string) => {
    out.flush();
    printUrgent(text);
  };
  // Warnings quote the rules file and the log's errors: no raw control characters.
  const warn = (text: string) => io.stderr(`warning: ${safeLines(text)}\n`);

  const log = new AccessLog(paths.log, {
    maxBytes: config.logMaxBytes,
    keep: config.logKeep,
    onError: (e) => warn(e.message),
  });
  const width = io.stdoutIsTerminal ? () => terminalWidth(100, true) : () => undefined;
  // Records are logged and printed a moment after their response went out,
  // a batch at a time: the requests of a burst are answered first, and the
  // bookkeeping for all of them follows (shutdown flushes what is left).
  const records = new Batcher<AccessRecord>((batch) => {
    const w = width();
    for (const rec of batch) {
      log.write(rec);
      // One record that cannot be shown must not take the proxy down.
      try {
        say(formatRecordLine(rec, { color, width: w }));
      } catch (e) {
        warn(`cannot show a ${rec.method} record: ${e instanceof Error ? e.message : e}`);
      }
    }
  }, 10);
  const broker = new DecisionBroker({
    rules,
    promptTimeoutMs: config.promptTimeoutMs,
    timeoutAction: config.defaultAction,
    nonInteractive: config.mode === "non-interactive"
      ? { default: config.defaultAction }
      : undefined,
    onEvent: (e) => {
      const line = formatBrokerEvent(e);
      if (line !== undefined) sayUrgent(line);
    },
  });

  const cleanup: (() => Promise<void> | void)[] = [];
  const runCleanup = async () => {
    for (const fn of cleanup.splice(0).reverse()) {
      try {
        await fn();
      } catch (e) {
        warn(`while stopping: ${e instanceof Error ? e.message : e}`);
      }
    }
  };
  // Run in reverse: the broker first (its waiting requests get their records),
  // then the records still batched, then the log.
  cleanup.push(() => log.close(), () => records.close(), () => broker.close());

  const warnPassthrough = (set: RuleSet) => {
    if (!config.intercept) {
      for (const line of undecryptedDenyWarnings(set)) warn(line);
      return;
    }
    for (const line of passthrough.warnings(set)) warn(line);
  };

  let proxy: ProxyServer;
  // For `netmonitor status`: who answers prompts. The terminal asks from the
  // start (it attaches once the proxy listens) until its input ends.
  let terminalAsks = config.mode === "terminal";
  let control: ControlServer | undefined;
  try {
    let intercept: TunnelInterceptor | undefined;
    if (config.intercept) {
      // An address that cannot be listened on must not leave a new CA behind.
      probeListen(config);
      const prepared = await prepareInterception({
        files: paths,
        upstreamCaFiles: config.upstreamCa,
        isPassthrough: (host, port) => passthrough.mayRelayDecided(host, port),
      }).catch((e) => {
        if (!(e instanceof UpstreamCaError)) throw e;
        throw new UsageError(e.message, {
          hint:
            "--upstream-ca takes a PEM file of CA certificates, e.g. /etc/ssl/certs/ca-certificates.crt",
        });
      });
      const inner = prepared.interceptor;
      intercept = {
        intercepts: (host, port) => !passthrough.isPassthrough(host, port),
        intercept: (req) => inner.intercept(req),
      };
      if (prepared.created) {
        say(
          `Created the netmonitor CA: ${paths.caCert}\n` +
            "  HTTPS clients must trust it (see the README, or `netmonitor ca path`).",
        );
      }
    }

    // Where this proxy listens and whether it prompts, for `netmonitor
    // status` (and run-monitored.sh, before it reuses a proxy): one socket per
    // proxy, since several that never prompt may share a data dir (one per
    // Docker network). Only the proxy that prompts owns netmonitor.sock.
    const prompts = config.mode !== "non-interactive";
    const describe = () => ({
      prompts,
      ...(proxy ? { listen: hostPort(proxy.addr.hostname, proxy.addr.port) } : {}),
      prompting: {
        terminal: terminalAsks,
        clients: control?.clients ?? 0,
        default: config.defaultAction,
        ...(prompts ? { timeoutMs: config.promptTimeoutMs } : {}),
      },
    });
    if (Deno.build.os !== "windows") {
      try {
        const status = await startControlServer(
          broker,
          `${paths.proxiesDir}/${Deno.pid}.sock`,
          // Named after this process: no other proxy claims it.
          { describe, prompters: false, lock: false },
        );
        cleanup.push(() => status.close());
      } catch (e) {
        warn(`${(e as Error).message}; \`netmonitor status\` cannot see this proxy`);
      }
    }
    if (prompts) {
      try {
        control = await startControlServer(broker, paths.controlSocket, { describe });
        cleanup.push(() => control!.close());
      } catch (e) {
        // Another proxy owning this data dir, or prompts that only the socket
        // could answer: fatal. Otherwise the terminal still answers.
        if (e instanceof ControlSocketBusyError) {
          throw new CliError(
            `${(e as Error).message}: only one proxy per data dir asks (\`netmonitor status\` ` +
              `shows it). Run this one with --non-interactive, or with its own --data-dir`,
            { cause: e },
          );
        }
        if (config.mode === "socket") throw e;
        warn(`${(e as Error).message}; \`netmonitor prompt\` cannot attach`);
      }
    }

    try {
      proxy = await startProxy({
        hostname: config.listen,
        port: config.port,
        resolve: config.resolve,
        decide: (input, signal) =>
          config.intercept
            ? broker.decide(input, signal)
            : decideUndecrypted(rules, input, (i) => broker.decide(i, signal)),
        // A tunnel that turned passthrough since `intercepts()` is decided like
        // any relayed tunnel (rules, then the prompt).
        decideTunnel: (input, signal) =>
          passthrough.isPassthrough(input.target.host, input.target.port)
            ? broker.decide(input, signal)
            : Promise.resolve(decideInterceptedTunnel(rules, input)),
        record: (rec: AccessRecord) => records.push(rec),
        intercept,
      });
    } catch (e) {
      throw listenError(e, config);
    }
  } catch (e) {
    await runCleanup();
    out.close();
    throw e;
  }

  const watcher = rules.watch({
    onReload: (set) => {
      const n = set.rules.length;
      say(`Rules reloaded from ${paths.rules}: ${n} rule${n === 1 ? "" : "s"}`);
      warnPassthrough(set);
    },
    onError: (e) => warn(`${e.message}\nThe last good rules stay in force.`),
    onWarning: (message) => warn(`rules: ${message}`),
  });
  cleanup.push(() => watcher.close());

  const addr = proxy.addr;
  out.flush();
  io.stdout(`Listening on http://${hostPort(addr.hostname, addr.port)}\n`);
  const reach = listenNotice(config.listen, localInterfaces());
  if (reach?.warning) warn(reach.text);
  else if (reach) say(reach.text);
  if (config.background) {
    warn(
      "started in the background of this terminal, so requests are not asked here (reading " +
        "the terminal would stop netmonitor): answer them with `netmonitor prompt` in another " +
        `terminal (data dir ${paths.dir})`,
    );
  }
  say(describeMode(config, paths));
  warnPassthrough(rules.current);

  if (config.mode === "terminal") {
    out.flush();
    const terminal = attachTerminal(broker, {
      write: (t) => io.stdout(t),
      ansi: io.stdoutIsTerminal,
      onInputClosed: () => {
        terminalAsks = false;
        say("Terminal input closed: answer prompts with `netmonitor prompt`, or they time out.");
      },
    });
    printLine = (text) => terminal.printLine(text);
    printUrgent = (text) => terminal.printLine(text, { urgent: true });
    cleanup.push(async () => {
      terminalAsks = false;
      out.flush();
      printLine = (text) => io.stdout(text + "\n");
      printUrgent = (text) => printLine(text);
      await terminal.close();
    });
  }

  // Wait for a signal (or the test's abort), or the listener failing.
  const signals: Deno.Signal[] = Deno.build.os === "windows" ? ["SIGINT"] : ["SIGINT", "SIGTERM"];
  let onSignal!: () => void;
  const stopped = new Promise<string>((resolve) => {
    onSignal = () => resolve("signal");
    stop?.addEventListener("abort", () => resolve("stop"), { once: true });
  });
  for (const s of signals) Deno.addSignalListener(s, onSignal);
  try {
    await Promise.race([stopped, proxy.finished]);
  } finally {
    for (const s of signals) Deno.removeSignalListener(s, onSignal);
  }

  say("Stopping: answering requests in flight...");
  // The broker first: requests waiting on a prompt are answered as shut down
  // (not as withdrawn, and no queued prompt flashes up), and an "always"
  // answer still being saved is waited for.
  await broker.close();
  await proxy.shutdown();
  records.close();
  await runCleanup();
  out.close();
  io.stdout("Stopped.\n");
  return 0;
}

/**
 * Collects items and hands them to `handle` together, at most once per
 * `delayMs`, so a burst of requests costs one terminal write and one timer,
 * not one per request (at thousands of requests a second both showed up in
 * profiles). `flush()` hands over what is queued now; `close()` flushes and
 * hands every later item over at once.
 */
export class Batcher<T> {
  readonly #handle: (items: T[]) => void;
  readonly #delayMs: number;
  #items: T[] = [];
  #timer: ReturnType<typeof setTimeout> | undefined;
  #closed = false;

  /**
   * @param handle gets one or more items, in the order they were pushed.
   * @param delayMs how long an item may wait for others.
   */
  constructor(handle: (items: T[]) => void, delayMs: number) {
    this.#handle = handle;
    this.#delayMs = delayMs;
  }

  push(item: T): void {
    if (this.#closed) return this.#handle([item]);
    this.#items.push(item);
    this.#timer ??= setTimeout(() => this.flush(), this.#delayMs);
  }

  /** Hands over the queued items now. */
  flush(): void {
    if (this.#timer !== undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
    if (this.#items.length === 0) return;
    const items = this.#items;
    this.#items = [];
    this.#handle(items);
  }

  /** Flushes; later items are handed over at once. */
  close(): void {
    this.flush();
    this.#closed = true;
  }
}

/**
 * The decision for a CONNECT that will be decrypted: every request inside is
 * decided (and prompted) with its full URL, so the tunnel itself is only
 * refused when a rule denies the whole host and no URL rule could allow part
 * of it. No prompt here: one question per request is enough. A host that a
 * `passthrough` rule relays is decided by that rule (allow), like any
 * host-level rule.
 */
export function decideInterceptedTunnel(
  rules: { current: RulesStore["current"] },
  input: DecideInput,
): FinalDecision {
  const set = rules.current;
  const { host, port } = input.target;
  if (!set.hasUrlRulesFor(host, port) || set.isPassthrough(host, port)) {
    const d = set.decide(input.target);
    if (d.action === "deny" || d.action === "allow") {
      return { action: d.action, source: "rule", reason: d.reason, rule: d.rule };
    }
  }
  return {
    action: "allow",
    source: "policy",
    reason: "HTTPS intercepted: each request is decided on its own",
  };
}

/**
 * With `--no-intercept`, a CONNECT is decided on its host alone, so a deny URL
 * rule for its host and port could not be enforced on what the tunnel
 * carries: such a CONNECT is denied (fail closed) instead of relayed.
 * Undefined for every other request.
 */
export function refuseUndecryptable(
  set: RuleSet,
  input: DecideInput,
): Promise<FinalDecision> | undefined {
  if (input.method !== "CONNECT") return undefined;
  const { host, port } = input.target;
  const rule = set.denyUrlRuleFor(host, port);
  if (!rule) return undefined;
  return Promise.resolve({
    action: "deny",
    source: "policy",
    reason: `deny URL rule "${rule.pattern}" needs HTTPS decrypted, and --no-intercept is set ` +
      `(fail closed)`,
  });
}

/**
 * The decision with `--no-intercept`: {@linkcode refuseUndecryptable}, then
 * `decide` (rules, the prompt), then `refuseUndecryptable` again for an
 * allowed CONNECT, since the rules may have changed while it waited (a prompt
 * takes up to a minute): a deny URL rule that landed meanwhile still denies
 * the tunnel, which would otherwise be relayed with it in force.
 */
export async function decideUndecrypted(
  rules: { readonly current: RuleSet },
  input: DecideInput,
  decide: (input: DecideInput) => Promise<FinalDecision>,
): Promise<FinalDecision> {
  const refused = refuseUndecryptable(rules.current, input);
  if (refused) return refused;
  const d = await decide(input);
  if (d.action !== "allow") return d;
  return await (refuseUndecryptable(rules.current, input) ?? d);
}

/** What to tell the operator about the tunnels {@linkcode refuseUndecryptable} denies. */
export function undecryptedDenyWarnings(set: RuleSet): string[] {
  return set.httpsDenyTargets().map(({ host, port, rule }) =>
    `--no-intercept: every CONNECT to ${hostPort(host, port)} is denied: the deny URL rule ` +
    `"${rule.pattern}" can only be enforced on decrypted HTTPS (deny or allow the host instead)`
  );
}

/**
 * Which CONNECT tunnels `netmonitor run` relays without decrypting them:
 * those `--passthrough` names, and those a `passthrough` rule covers in the
 * live rules (so a rules edit applies to the next tunnel). A deny URL rule for
 * the host and port overrides both: it can only be enforced on decrypted
 * traffic, so such tunnels are intercepted (fail closed).
 */
export class TunnelPassthrough {
  readonly #flags: PassthroughList;
  readonly #rules: { readonly current: RuleSet };

  /**
   * @param flags the `--passthrough` entries
   * @param rules the live rules (a `RulesStore`); read on every call
   */
  constructor(flags: PassthroughList, rules: { readonly current: RuleSet }) {
    this.#flags = flags;
    this.#rules = rules;
  }

  /**
   * Before a CONNECT to `host:port` (normalised) is decided: true relays it,
   * and it is then decided like any tunnel that is not decrypted.
   */
  isPassthrough(host: string, port: number): boolean {
    const set = this.#rules.current;
    if (set.isPassthrough(host, port)) return true;
    return this.#flags.size > 0 && this.#flags.matches(host) && !set.hasDenyUrlRulesFor(host, port);
  }

  /**
   * For a tunnel decided as a decrypted one (its CONNECT allowed without a
   * host decision) that has become passthrough since (the rules changed in
   * between): relay it only when the rules now allow the host itself, else
   * keep decrypting it so each request is still decided.
   */
  mayRelayDecided(host: string, port: number): boolean {
    return this.isPassthrough(host, port) &&
      this.#rules.current.decide({ scheme: "https", host, port }).action === "allow";
  }

  /** What to tell the operator about passthrough in `set`: rule conflicts, and flags a deny URL rule overrides. */
  warnings(set: RuleSet): string[] {
    const out = set.warnings().map((w) => w.message);
    if (this.#flags.size === 0) return out;
    for (const { host, port, rule } of set.httpsDenyTargets()) {
      if (!this.#flags.matches(host)) continue;
      out.push(
        `--passthrough does not apply to ${host}:${port}: the deny URL rule "${rule.pattern}" ` +
          `needs its tunnels decrypted, so ${host}:${port} is intercepted`,
      );
    }
    return out;
  }
}

function hostPort(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

/** This host's interface addresses; none when they cannot be read (the listen warning stays). */
function localInterfaces(): InterfaceAddress[] {
  try {
    return Deno.networkInterfaces();
  } catch {
    return [];
  }
}

function describeMode(config: RunConfig, paths: DataPaths): string {
  const answers = config.mode === "terminal"
    ? `asking in this terminal (and \`netmonitor prompt\`), ${config.defaultAction} after ${
      seconds(config.promptTimeoutMs)
    }`
    : config.mode === "socket"
    ? `asking \`netmonitor prompt\` clients, ${config.defaultAction} after ${
      seconds(config.promptTimeoutMs)
    }`
    : `non-interactive: requests no rule covers are ${
      config.defaultAction === "allow" ? "allowed" : "denied"
    }`;
  const https = config.intercept ? "HTTPS intercepted" : "HTTPS relayed (host-only decisions)";
  return `Rules: ${paths.rules} (watched). Log: ${paths.log}. ${https}. Unknown requests: ${answers}.`;
}

function seconds(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}
