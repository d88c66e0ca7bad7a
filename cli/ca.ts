/**
 * `netmonitor ca`: the local CA that HTTPS interception signs with.
 *
 * - `ca path`: prints the certificate's path (creating the CA first if it
 *   does not exist yet, so trust can be set up before the first `run`);
 * - `ca export FILE`: copies the certificate to FILE (`-` for stdout);
 * - `ca info`: subject, SHA-256 fingerprint, validity, paths;
 * - `ca regenerate`: replaces the CA (asks first); clients must trust the new one.
 *
 * @module
 */

import type { Command } from "commander";
import {
  type CaFiles,
  caFingerprint,
  type CertificateAuthority,
  ensureCa,
  regenerateCa,
} from "../lib/tls/ca.ts";
import { ensureDataDir } from "../lib/paths.ts";
import { describeIoError } from "../lib/rules/mod.ts";
import { CliError, EXIT_FAILURE, UsageError } from "./_errors.ts";
import type { CliContext } from "./mod.ts";

/** Registers `netmonitor ca` and its subcommands. */
export function registerCaCommand(program: Command, ctx: CliContext): void {
  const ca = program
    .command("ca")
    .description("the local CA used to intercept HTTPS: path, export, info, regenerate");

  const files = (): CaFiles => ({ caCert: ctx.paths.caCert, caKey: ctx.paths.caKey });

  /** Loads the CA, creating it when missing; says so on stderr when it did. */
  const obtain = async (): Promise<CertificateAuthority> => {
    // Every ca command may create the CA: the data dir is made (or checked) as `run` does.
    await ensureDataDir(ctx.paths);
    const { ca: loaded, created } = await ensureCa(files());
    if (created) {
      ctx.stderr(
        `Created a new netmonitor CA in ${ctx.paths.dir}; HTTPS clients must trust ` +
          `${ctx.paths.caCert}\n`,
      );
    }
    return loaded;
  };

  ca.command("path")
    .description("print the CA certificate's path (creates the CA if there is none yet)")
    .action(async () => {
      await obtain();
      ctx.stdout(`${ctx.paths.caCert}\n`);
    });

  ca.command("export")
    .description("copy the CA certificate (PEM) to FILE, or to standard output for -")
    .argument("<file>", "destination file, or - for standard output")
    .action(async (file: string) => {
      const loaded = await obtain();
      if (file === "-") {
        ctx.stdout(loaded.certPem);
        return;
      }
      try {
        await Deno.writeTextFile(file, loaded.certPem, { mode: 0o644 });
      } catch (e) {
        // Worded like `rules export`.
        const why = e instanceof Deno.errors.NotFound
          ? "its directory does not exist"
          : e instanceof Error
          ? describeIoError(e)
          : String(e);
        throw new CliError(`Cannot write "${file}": ${why}`, { cause: e });
      }
      ctx.stdout(`Wrote the netmonitor CA certificate to ${file}\n`);
    });

  ca.command("info")
    .description("show the CA's name, fingerprint, validity and files")
    .action(async () => {
      const loaded = await obtain();
      ctx.stdout(await describe(loaded, files()));
    });

  ca.command("regenerate")
    .description("make a new CA (clients must trust the new certificate again)")
    .option("-y, --yes", "do not ask for confirmation")
    .action(async (opts: { yes?: boolean }) => {
      await ensureDataDir(ctx.paths);
      const f = files();
      const exists = await fileExists(f.caCert) || await fileExists(f.caKey);
      if (exists && !opts.yes) {
        if (!ctx.stdinIsTerminal) {
          throw new UsageError(
            "refusing to replace the CA without confirmation: standard input is not a terminal",
            { hint: `Run "netmonitor ca regenerate --yes" to replace it without asking.` },
          );
        }
        const ok = await ctx.confirmer.confirm(
          `Replace the netmonitor CA in ${ctx.paths.dir}? ` +
            "Every client that trusts the current one must then trust the new one",
        );
        if (!ok) {
          ctx.stderr("Aborted; the CA was not changed.\n");
          ctx.exitCode = EXIT_FAILURE;
          return;
        }
      }
      const fresh = await regenerateCa(f);
      ctx.stdout(
        `Created a new netmonitor CA.\n${await describe(fresh, f)}` +
          "Clients that trusted the old CA must now trust the new certificate (see the README:\n" +
          "  Trusting the CA), and a running `netmonitor run` must be restarted.\n",
      );
    });
}

async function describe(ca: CertificateAuthority, files: CaFiles): Promise<string> {
  return [
    `Subject:     ${ca.commonName}`,
    `SHA-256:     ${await caFingerprint(ca)}`,
    `Valid:       ${ca.notBefore.toISOString()} to ${ca.notAfter.toISOString()}`,
    `Certificate: ${files.caCert}`,
    `Private key: ${files.caKey} (keep it secret: it can impersonate any site to clients that trust the CA)`,
    "",
  ].join("\n");
}

async function fileExists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}
