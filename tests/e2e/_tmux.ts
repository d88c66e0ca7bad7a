/**
 * Drives a program on a real terminal through tmux, as a person would: read
 * the screen, type keys, press Enter. Each session uses its own tmux server
 * (private socket in a temp dir), so tests never touch anyone's tmux.
 * @module
 */

/** Options for {@linkcode TmuxSession.start}. */
export interface TmuxOptions {
  /** Program and arguments. */
  cmd: string[];
  cwd?: string;
  /** Extra environment variables for the program. */
  env?: Record<string, string>;
  width?: number;
  height?: number;
}

function shellQuote(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

/** One program running in a private tmux server. */
export class TmuxSession {
  private constructor(readonly dir: string, readonly socket: string) {}

  /** Starts `cmd` in a new tmux session; after it exits, `[exited N]` is printed. */
  static async start(opts: TmuxOptions): Promise<TmuxSession> {
    const dir = await Deno.makeTempDir({ prefix: "nm-tmux-" });
    const s = new TmuxSession(dir, `${dir}/tmux.sock`);
    const envArgs = Object.entries(opts.env ?? {}).flatMap(([k, v]) => ["-e", `${k}=${v}`]);
    // Keep the pane open after the program exits so its last output and status can be read.
    // The wrapper shell survives Ctrl-C (sent to the whole pane) so the program's own exit shows.
    const script =
      `trap 'true' INT; ${opts.cmd.map(shellQuote).join(" ")}; printf '\\n[exited %d]\\n' $?; ` +
      `exec sleep 3600`;
    await s.#tmux(
      "new-session",
      "-d",
      "-s",
      "t",
      "-x",
      String(opts.width ?? 120),
      "-y",
      String(opts.height ?? 50),
      ...(opts.cwd ? ["-c", opts.cwd] : []),
      ...envArgs,
      "sh",
      "-c",
      script,
    );
    return s;
  }

  async #tmux(...args: string[]): Promise<string> {
    const out = await new Deno.Command("tmux", {
      args: ["-S", this.socket, "-f", "/dev/null", ...args],
      stdout: "piped",
      stderr: "piped",
      env: { TERM: "xterm-256color" },
    }).output();
    if (!out.success) {
      throw new Error(`tmux ${args[0]} failed: ${new TextDecoder().decode(out.stderr)}`);
    }
    return new TextDecoder().decode(out.stdout);
  }

  /** The whole screen plus scrollback, lines joined as typed (no wrapping breaks). */
  async screen(): Promise<string> {
    return await this.#tmux("capture-pane", "-p", "-J", "-S", "-2000", "-t", "t");
  }

  /** What the terminal shows now, without the scrollback. */
  async visible(): Promise<string> {
    return await this.#tmux("capture-pane", "-p", "-t", "t");
  }

  /**
   * Waits until the screen matches `pattern` (and, with `after`, the match
   * starts at or after that offset in the screen text); returns the screen.
   */
  async waitFor(pattern: RegExp | string, timeoutMs = 30_000, after = 0): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    let text = "";
    for (;;) {
      text = await this.screen();
      const rest = text.slice(after);
      if (typeof pattern === "string" ? rest.includes(pattern) : pattern.test(rest)) return text;
      if (Date.now() > deadline) {
        throw new Error(`timed out waiting for ${pattern}; screen:\n${text}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** Types text literally (no Enter). */
  async type(text: string): Promise<void> {
    await this.#tmux("send-keys", "-t", "t", "-l", text);
  }

  /** Presses named keys: `Enter`, `BSpace`, `C-c`, `C-d`... */
  async press(...keys: string[]): Promise<void> {
    await this.#tmux("send-keys", "-t", "t", ...keys);
  }

  /** Waits for the program to exit and returns its exit status. */
  async exitCode(timeoutMs = 30_000): Promise<number> {
    const text = await this.waitFor(/\[exited \d+\]/, timeoutMs);
    return Number(/\[exited (\d+)\]/.exec(text)![1]);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.#tmux("kill-server").catch(() => {});
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}
