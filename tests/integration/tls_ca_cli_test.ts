/**
 * `netmonitor ca path | export | info | regenerate`, through the CLI's
 * `main()` with captured output and scripted confirmations, and once as a
 * real process.
 */
import assert from "node:assert/strict";
import { main } from "../../cli/mod.ts";
import { loadCa } from "../../lib/tls/ca.ts";

interface Run {
  code: number;
  stdout: string;
  stderr: string;
  asked: string[];
}

async function cli(
  args: string[],
  options: { terminal?: boolean; answer?: boolean } = {},
): Promise<Run> {
  let stdout = "";
  let stderr = "";
  const asked: string[] = [];
  const code = await main(args, {
    stdout: (t) => (stdout += t),
    stderr: (t) => (stderr += t),
    stdinIsTerminal: options.terminal ?? false,
    stdoutIsTerminal: false,
    confirmer: {
      confirm(question) {
        asked.push(question);
        return Promise.resolve(options.answer ?? false);
      },
    },
  });
  return { code, stdout, stderr, asked };
}

async function withDataDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const root = await Deno.makeTempDir({ prefix: "nm-ca-cli-" });
  try {
    await fn(`${root}/data`);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

Deno.test("ca path: creates the CA on first use, then just prints the path", async () => {
  await withDataDir(async (dir) => {
    const first = await cli(["--data-dir", dir, "ca", "path"]);
    assert.equal(first.code, 0, first.stderr);
    assert.equal(first.stdout, `${dir}/netmonitor-ca.pem\n`);
    assert.match(first.stderr, /^Created a new netmonitor CA in .*; HTTPS clients must trust/);
    assert.equal((await Deno.stat(`${dir}/netmonitor-ca-key.pem`)).mode! & 0o777, 0o600);
    const again = await cli(["--data-dir", dir, "ca", "path"]);
    assert.deepEqual([again.code, again.stdout, again.stderr], [0, first.stdout, ""]);
  });
});

Deno.test("ca export: to a file and to standard output", async () => {
  await withDataDir(async (dir) => {
    await cli(["--data-dir", dir, "ca", "path"]);
    const pem = await Deno.readTextFile(`${dir}/netmonitor-ca.pem`);
    const out = `${dir}/../exported.pem`;
    const r = await cli(["--data-dir", dir, "ca", "export", out]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await Deno.readTextFile(out), pem);
    assert.match(r.stdout, /^Wrote the netmonitor CA certificate to /);
    const dash = await cli(["--data-dir", dir, "ca", "export", "-"]);
    assert.equal(dash.stdout, pem);
    const bad = await cli(["--data-dir", dir, "ca", "export", `${dir}/no/such/dir/ca.pem`]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /^error: Cannot write ".*ca\.pem": its directory does not exist\n$/);
    const missing = await cli(["--data-dir", dir, "ca", "export"]);
    assert.equal(missing.code, 2);
  });
});

Deno.test("ca info: name, fingerprint, validity and files", async () => {
  await withDataDir(async (dir) => {
    const r = await cli(["--data-dir", dir, "ca", "info"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^Subject: +netmonitor CA \(.+ \d{4}-\d\d-\d\d\)\n/);
    assert.match(r.stdout, /\nSHA-256: +([0-9A-F]{2}:){31}[0-9A-F]{2}\n/);
    assert.match(r.stdout, new RegExp(`\\nCertificate: +${dir}/netmonitor-ca\\.pem\\n`));
  });
});

Deno.test("ca regenerate: asks first, refuses without a terminal, --yes replaces", async () => {
  await withDataDir(async (dir) => {
    await cli(["--data-dir", dir, "ca", "path"]);
    const files = { caCert: `${dir}/netmonitor-ca.pem`, caKey: `${dir}/netmonitor-ca-key.pem` };
    const original = (await loadCa(files)).certPem;

    const refused = await cli(["--data-dir", dir, "ca", "regenerate"]);
    assert.equal(refused.code, 2);
    assert.match(refused.stderr, /standard input is not a terminal/);
    assert.match(refused.stderr, /netmonitor ca regenerate --yes/);

    const declined = await cli(["--data-dir", dir, "ca", "regenerate"], {
      terminal: true,
      answer: false,
    });
    assert.equal(declined.code, 1);
    assert.match(declined.asked[0], /^Replace the netmonitor CA in .*must then trust the new one/);
    assert.equal((await loadCa(files)).certPem, original);

    const accepted = await cli(["--data-dir", dir, "ca", "regenerate"], {
      terminal: true,
      answer: true,
    });
    assert.equal(accepted.code, 0, accepted.stderr);
    assert.match(accepted.stdout, /must now trust the new certificate/);
    const replaced = (await loadCa(files)).certPem;
    assert.notEqual(replaced, original);

    const yes = await cli(["--data-dir", dir, "ca", "regenerate", "--yes"]);
    assert.equal(yes.code, 0);
    assert.equal(yes.asked.length, 0);
    assert.notEqual((await loadCa(files)).certPem, replaced);
    assert.equal((await Deno.stat(files.caKey)).mode! & 0o777, 0o600);
  });
});

Deno.test("ca: a corrupt CA is a clear error (exit 1), and regenerate repairs it", async () => {
  await withDataDir(async (dir) => {
    await cli(["--data-dir", dir, "ca", "path"]);
    await Deno.writeTextFile(`${dir}/netmonitor-ca.pem`, "garbage\n");
    const r = await cli(["--data-dir", dir, "ca", "path"]);
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /^error: Cannot load CA certificate ".*netmonitor-ca\.pem": .*; run "netmonitor ca regenerate"/,
    );
    assert.doesNotMatch(r.stderr, /unexpected failure|at /, "no stack trace");
    assert.equal((await cli(["--data-dir", dir, "ca", "regenerate", "--yes"])).code, 0);
    assert.equal((await cli(["--data-dir", dir, "ca", "path"])).code, 0);
  });
});

Deno.test("ca path as a real process: stdout is the path alone", async () => {
  await withDataDir(async (dir) => {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "main.ts", "ca", "path"],
      cwd: new URL("../..", import.meta.url).pathname,
      env: { NETMONITOR_DATA_DIR: dir },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    assert.equal(new TextDecoder().decode(out.stdout), `${dir}/netmonitor-ca.pem\n`);
  });
});
