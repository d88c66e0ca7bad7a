/**
 * Yes/no confirmation behind an interface, so tests answer for the user.
 * @module
 */

/** Asks a yes/no question. */
export interface Confirmer {
  /** Resolves true only for an explicit yes; end of input is no. */
  confirm(question: string): Promise<boolean>;
}

/** Reads one line from a byte stream (stdin). Null at end of input. */
export async function readLine(reader: { read(p: Uint8Array): Promise<number | null> }) {
  const decoder = new TextDecoder();
  const buf = new Uint8Array(256);
  let line = "";
  for (;;) {
    const n = await reader.read(buf);
    if (n === null) return line === "" ? null : line;
    line += decoder.decode(buf.subarray(0, n), { stream: true });
    const nl = line.indexOf("\n");
    if (nl >= 0) return line.slice(0, nl).replace(/\r$/, "");
  }
}

/** True for y/yes in any case, after trimming. */
export function isYes(answer: string | null): boolean {
  return answer !== null && /^(y|yes)$/i.test(answer.trim());
}

/**
 * Asks on the terminal with @inquirer/prompts (drawn on stderr, so stdout stays
 * clean for pipes). When stdin is not a terminal, reads one line instead:
 * commands refuse to ask without a terminal anyway, but a test harness may
 * still pipe an answer.
 */
export function terminalConfirmer(write: (text: string) => void): Confirmer {
  return {
    async confirm(question) {
      if (!Deno.stdin.isTerminal()) {
        write(`${question} [y/N] `);
        const answer = await readLine(Deno.stdin);
        if (answer === null) write("\n");
        return isYes(answer);
      }
      // Loaded on first use: it costs about 10 MiB of resident memory, which a
      // long-running `netmonitor run` would otherwise carry for nothing.
      const [{ confirm }, { default: process }] = await Promise.all([
        import("@inquirer/prompts"),
        import("node:process"),
      ]);
      try {
        return await confirm({ message: question, default: false }, { output: process.stderr });
      } catch (e) {
        // Ctrl-C or a closed terminal: that is not a yes.
        if (e instanceof Error && e.name === "ExitPromptError") return false;
        throw e;
      }
    },
  };
}
