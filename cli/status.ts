/**
 * `netmonitor status`: is a proxy running for this data dir, where does it
 * listen, and does it prompt? Asked through the control socket, which only a
 * live proxy answers.
 *
 * @module
 */

import type { Command } from "commander";
import { connectControl, NoProxyError } from "../lib/decide/control.ts";
import type { HelloMessage } from "../lib/decide/protocol.ts";
import { CliError } from "./_errors.ts";
import type { CliContext } from "./mod.ts";

/** Exit code when no proxy is running (as `systemctl status` does). */
export const EXIT_NOT_RUNNING = 3;

/** How long a proxy gets to greet before it counts as hung, ms. */
const GREETING_TIMEOUT_MS = 5000;

/** What `status --json` prints. */
export interface ProxyStatus {
  running: boolean;
  dataDir: string;
  pid?: number;
  /** `ADDR:PORT`; absent while the proxy is still starting. */
  listen?: string;
  prompts?: boolean;
}

/** Registers `netmonitor status`. */
export function registerStatusCommand(program: Command, ctx: CliContext): void {
  program
    .command("status")
    .description("show whether a proxy is running for the data dir, and where it listens")
    .option("--json", "print one JSON object instead of text")
    .addHelpText(
      "after",
      "\nExits 0 when a proxy is running, 3 when none is, 1 on other errors.",
    )
    .action(async (opts: { json?: boolean }) => {
      const status = await proxyStatus(ctx.paths.controlSocket, ctx.paths.dir);
      ctx.stdout(opts.json ? JSON.stringify(status) + "\n" : formatStatus(status));
      if (!status.running) ctx.exitCode = EXIT_NOT_RUNNING;
    });
}

/** Asks the control socket at `socketPath` who is running. */
export async function proxyStatus(socketPath: string, dataDir: string): Promise<ProxyStatus> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const hung = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(
          new CliError(
            `The netmonitor proxy did not answer on ${socketPath} within ` +
              `${GREETING_TIMEOUT_MS / 1000} s; it may be hung`,
          ),
        ),
      GREETING_TIMEOUT_MS,
    );
  });
  let hello: Omit<HelloMessage, "type">;
  try {
    const client = await Promise.race([connectControl(socketPath), hung]);
    hello = client.hello;
    client.close();
  } catch (e) {
    if (e instanceof NoProxyError) return { running: false, dataDir };
    throw e;
  } finally {
    clearTimeout(timer);
  }
  return {
    running: true,
    dataDir,
    pid: hello.pid,
    ...(hello.listen !== undefined ? { listen: hello.listen } : {}),
    ...(hello.prompts !== undefined ? { prompts: hello.prompts } : {}),
  };
}

/** The text `netmonitor status` prints. */
export function formatStatus(s: ProxyStatus): string {
  if (!s.running) return `No netmonitor proxy is running for ${s.dataDir}\n`;
  const prompts = s.prompts === undefined
    ? "unknown"
    : s.prompts
    ? "yes (on its terminal, or `netmonitor prompt`)"
    : "no (--non-interactive: it answers by itself)";
  return `netmonitor proxy running (pid ${s.pid})\n` +
    `  listening: ${s.listen !== undefined ? `http://${s.listen}` : "not yet (starting)"}\n` +
    `  prompts:   ${prompts}\n` +
    `  data dir:  ${s.dataDir}\n`;
}
