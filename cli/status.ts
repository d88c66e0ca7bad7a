/**
 * `netmonitor status`: which proxies run for this data dir, where they listen,
 * and whether they prompt. Each proxy answers on its own status socket,
 * `<data-dir>/proxies/PID.sock`, which only a live proxy answers (so a proxy
 * that died cannot be listed); sockets nobody answers are removed.
 *
 * @module
 */

import type { Command } from "commander";
import { connectControl, NoProxyError, ProxyBusyError } from "../lib/decide/control.ts";
import type { PromptingState } from "../lib/decide/protocol.ts";
import type { CliContext } from "./mod.ts";
import { checkDataDir } from "../lib/paths.ts";

/** Exit code when no proxy is running (as `systemctl status` does). */
export const EXIT_NOT_RUNNING = 3;

/** How long a proxy gets to greet before it counts as hung, ms. */
const GREETING_TIMEOUT_MS = 3000;

/** One running proxy. */
export interface ProxyInfo {
  pid: number;
  /** `ADDR:PORT`; absent while the proxy is still starting. */
  listen?: string;
  prompts?: boolean;
  /** Who answers its prompts right now; absent from older proxies. */
  prompting?: PromptingState;
  /** Set when it did not greet in time. */
  hung?: true;
  /** Set when it refused this client (too many clients on its socket). */
  busy?: true;
}

/** What `status --json` prints. */
export interface ProxyStatus {
  running: boolean;
  dataDir: string;
  proxies: ProxyInfo[];
}

/** Registers `netmonitor status`. */
export function registerStatusCommand(program: Command, ctx: CliContext): void {
  program
    .command("status")
    .description(
      "show the proxies running for the data dir, where they listen, who answers their prompts",
    )
    .option("--json", "print one JSON object instead of text")
    .addHelpText(
      "after",
      "\nExits 0 when a proxy is running, 3 when none is, 1 on other errors.",
    )
    .action(async (opts: { json?: boolean }) => {
      // Refuses an unsafe data dir; a missing one means no proxy.
      await checkDataDir(ctx.paths);
      const proxies = await listProxies(ctx.paths.proxiesDir);
      const status = { running: proxies.length > 0, dataDir: ctx.paths.dir, proxies };
      ctx.stdout(opts.json ? JSON.stringify(status) + "\n" : formatStatus(status));
      if (!status.running) ctx.exitCode = EXIT_NOT_RUNNING;
    });
}

/** The proxies that answer on a status socket in `dir`, by pid. */
export async function listProxies(dir: string): Promise<ProxyInfo[]> {
  let names: string[];
  try {
    names = (await Array.fromAsync(Deno.readDir(dir)))
      .filter((e) => /^\d+\.sock$/.test(e.name))
      .map((e) => e.name);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return [];
    throw e;
  }
  const found = await Promise.all(names.map((n) => ask(`${dir}/${n}`, Number.parseInt(n))));
  return found.filter((p) => p !== undefined).sort((a, b) => a.pid - b.pid);
}

async function ask(path: string, pid: number): Promise<ProxyInfo | undefined> {
  const connecting = connectControl(path);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const hung = new Promise<"hung">((r) => timer = setTimeout(() => r("hung"), GREETING_TIMEOUT_MS));
  try {
    const client = await Promise.race([connecting, hung]);
    if (client === "hung") {
      connecting.then((c) => c.close(), () => {});
      return { pid, hung: true };
    }
    client.close();
    const { pid: helloPid, listen, prompts, prompting } = client.hello;
    return {
      pid: helloPid,
      ...(listen !== undefined ? { listen } : {}),
      ...(prompts !== undefined ? { prompts } : {}),
      ...(prompting !== undefined ? { prompting } : {}),
    };
  } catch (e) {
    if (e instanceof ProxyBusyError) return { pid, busy: true };
    if (!(e instanceof NoProxyError)) throw e;
    // Nothing listens: a proxy that died without cleaning up. A socket that
    // accepted and then said nothing belongs to a live process: it stays.
    if (e.gone) await Deno.remove(path).catch(() => {});
    return undefined;
  } finally {
    clearTimeout(timer);
  }
}

/** The text `netmonitor status` prints. */
export function formatStatus(s: ProxyStatus): string {
  if (!s.running) return `No netmonitor proxy is running for ${s.dataDir}\n`;
  const blocks = s.proxies.map((p) => {
    if (p.hung) return `netmonitor proxy (pid ${p.pid}) did not answer: it may be hung\n`;
    if (p.busy) {
      return `netmonitor proxy running (pid ${p.pid}), but it refused this client: ` +
        `too many clients on its socket\n`;
    }
    return `netmonitor proxy running (pid ${p.pid})\n` +
      `  listening: ${p.listen !== undefined ? `http://${p.listen}` : "not yet (starting)"}\n` +
      `  prompts:   ${describePrompts(p)}\n`;
  });
  return blocks.join("") + `data dir: ${s.dataDir}\n`;
}

/** Where a proxy's prompts are answered, and what happens when nobody answers. */
export function describePrompts(p: Pick<ProxyInfo, "prompts" | "prompting">): string {
  const state = p.prompting;
  if (p.prompts === false) {
    return state
      ? `none (non-interactive: requests no rule covers are ${past(state.default)})`
      : "none (non-interactive: it answers by itself)";
  }
  if (p.prompts === undefined) return "unknown";
  // An older proxy says that it asks, not where.
  if (!state) {
    return "yes (answer with `netmonitor prompt`, or in the proxy's terminal if it has one)";
  }
  const clients = `${state.clients} connected \`netmonitor prompt\` client` +
    (state.clients === 1 ? "" : "s");
  const unanswered = state.timeoutMs === undefined
    ? ""
    : `; unanswered requests are ${past(state.default)} after ${seconds(state.timeoutMs)}`;
  if (state.terminal && state.clients > 0) {
    return `answered in the proxy's terminal and by ${clients}${unanswered}`;
  }
  if (state.terminal) {
    return `answered in the proxy's terminal (no \`netmonitor prompt\` client connected)${unanswered}`;
  }
  if (state.clients > 0) return `answered by ${clients}${unanswered}`;
  return "nobody can answer them now: no `netmonitor prompt` client is connected and the proxy " +
    `does not ask in its terminal (run \`netmonitor prompt\`)${unanswered}`;
}

function past(action: "allow" | "deny"): string {
  return action === "allow" ? "allowed" : "denied";
}

function seconds(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}
