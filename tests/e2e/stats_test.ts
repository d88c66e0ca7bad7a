/**
 * `netmonitor stats` end to end: the CLI is spawned (`deno run -A main.ts`)
 * against a data dir holding the fixture log (two rotated files, a corrupt
 * line, a truncated last line) or a log written while the test runs.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { AccessLog, type AccessRecord } from "../../lib/log/mod.ts";
import type { StatsJson } from "../../lib/stats/json.ts";
import { has } from "../_helpers/tools.ts";
import { TmuxSession } from "./_tmux.ts";

const REPO = fileURLToPath(new URL("../../", import.meta.url));
const MAIN = join(REPO, "main.ts");
const FIXTURES = fileURLToPath(new URL("../testdata/logs/", import.meta.url));

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

async function netmonitor(args: string[], env: Record<string, string> = {}): Promise<Run> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, ...args],
    cwd: REPO,
    env: { NO_COLOR: "", TZ: "UTC", ...env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** A data dir with the fixture log and a rules file. */
async function fixtureDataDir(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "nm-stats-e2e-" });
  for (const f of ["network-access.log", "network-access.log.1", "network-access.log.2"]) {
    await Deno.copyFile(join(FIXTURES, f), join(dir, f));
  }
  await Deno.writeTextFile(
    join(dir, "network-rules.json"),
    '{\n  "*.github.test": "allow-domain",\n  "evil.test": "deny-domain"\n}\n',
  );
  return dir;
}

function rec(time: Date, host: string, extra: Partial<AccessRecord> = {}): AccessRecord {
  return {
    time: time.toISOString(),
    client: "127.0.0.1:5000",
    method: "GET",
    url: `http://${host}/`,
    host,
    decision: "allow",
    source: "rule",
    reason: `rule "${host}": allow-domain`,
    status: 200,
    bytesUp: 0,
    bytesDown: 100,
    durationMs: 2,
    ...extra,
  };
}

Deno.test("e2e stats: the dashboard as plain text when piped", async () => {
  const dir = await fixtureDataDir();
  try {
    const r = await netmonitor(["--data-dir", dir, "stats"], { COLUMNS: "100" });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, "");
    const out = r.stdout;
    assert.ok(!out.includes("\x1b["), "no colour codes when piped");
    assert.match(out, /Range {2}2026-11-28 10:00:05 → 10:08:00/);
    assert.match(
      out,
      /Requests 12 {4}Allowed 7 {4}Denied 4 {4}Prompted 2 {4}Timed out 1 {4}Errors 2/,
    );
    assert.match(out, /Sent 600 B {4}Received 30\.3 KiB/);
    assert.match(
      out,
      /2 log lines were not readable[^]*First:\s+network-access\.log\.1 line 3: not JSON/,
    );
    assert.match(out, /Requests per minute {2}peak 2\/min\n {2}[▁-█]{60}\n/);
    assert.match(out, /Top hosts/);
    assert.match(out, /api\.github\.test +█+ +3\n/);
    // Times of today show the clock; older ones the date too (the fixture is of 2026-11-28;
    // the CLI runs with TZ=UTC).
    const fixtureDay = new Date().toISOString().slice(0, 10) === "2026-11-28";
    const seen = (clock: string) => fixtureDay ? clock : `2026-11-28 ${clock.slice(0, 5)}`;
    assert.match(
      out,
      new RegExp(
        "HOST +REQS +ALLOW +DENY +ERR +SENT +RECEIVED +LAST SEEN\\n {2}" +
          `api\\.github\\.test +3 +3 +0 +0 +500 B +21\\.2 KiB +${seen("10:05:10")}`,
      ),
    );
    assert.match(out, /Recent requests {2}newest first\n {2}TIME +DECISION +METHOD +STATUS +URL/);
    assert.match(
      out,
      new RegExp(`${seen("10:08:00")} +ALLOW +GET +200 +http://pypi\\.test/simple/`),
    );
    assert.match(out, /Active rules \(2\)/);
    assert.match(out, /evil\.test +deny-domain/);
    for (const line of out.split("\n")) {
      assert.ok([...line].length <= 100, `fits 100 columns: ${line}`);
    }
    for (const columns of [60, 50, 40]) {
      const narrow = await netmonitor(["--data-dir", dir, "stats"], { COLUMNS: String(columns) });
      for (const line of narrow.stdout.split("\n")) {
        assert.ok([...line].length <= columns, `fits ${columns} columns: ${line}`);
      }
      // A split pane still shows what was requested: the URL goes last, after the details.
      assert.match(narrow.stdout, /Recent requests {2}newest first\n {2}TIME +DECISION +.*URL\n/);
      assert.match(narrow.stdout, new RegExp(`${seen("10:08:00")} +ALLOW +.*http://p`));
      // And the hosts table its host names and counts.
      assert.match(narrow.stdout, /HOST +REQS +ALLOW +DENY/);
    }
    const colour = await netmonitor(["--data-dir", dir, "stats"], { FORCE_COLOR: "1" });
    assert.ok(colour.stdout.includes("\x1b[32m"), "FORCE_COLOR turns colours on");
    const none = await netmonitor(["--data-dir", dir, "stats"], {
      FORCE_COLOR: "1",
      NO_COLOR: "1",
    });
    assert.ok(!none.stdout.includes("\x1b["), "NO_COLOR wins");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("e2e stats: --json follows the documented schema", async () => {
  const dir = await fixtureDataDir();
  try {
    const r = await netmonitor(["--data-dir", dir, "stats", "--json"]);
    assert.equal(r.code, 0, r.stderr);
    const j: StatsJson = JSON.parse(r.stdout);
    assert.equal(j.schemaVersion, 1);
    assert.equal(j.logFile, join(dir, "network-access.log"));
    assert.deepEqual(j.range, {
      since: null,
      last: null,
      first: "2026-11-28T10:00:05.000Z",
      latest: "2026-11-28T10:08:00.000Z",
    });
    assert.deepEqual(j.totals, {
      requests: 12,
      allowed: 7,
      denied: 4,
      prompted: 2,
      timedOut: 1,
      errors: 2,
      bytesUp: 600,
      bytesDown: 31010,
    });
    assert.equal(j.badLines, 2);
    assert.equal(j.firstBadLine?.file, join(dir, "network-access.log.1"));
    assert.equal(j.firstBadLine?.line, 3);
    assert.equal(j.hosts.length, 7);
    assert.deepEqual(j.hosts[0], {
      host: "api.github.test",
      requests: 3,
      allowed: 3,
      denied: 0,
      errors: 0,
      bytesUp: 500,
      bytesDown: 21700,
      firstSeen: "2026-11-28T10:00:05.000Z",
      lastSeen: "2026-11-28T10:05:10.000Z",
    });
    assert.equal(j.requestsPerMinute.counts.length, 60);
    assert.equal(j.requestsPerMinute.counts.reduce((a, b) => a + b, 0), 12);
    assert.equal(j.recent.length, 12);
    assert.equal(j.recent.at(-1)!.url, "http://pypi.test/simple/");
    assert.deepEqual(j.rules, [
      { pattern: "*.github.test", action: "allow-domain" },
      { pattern: "evil.test", action: "deny-domain" },
    ]);
    assert.equal(j.rulesError, undefined);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("e2e stats: --since and --last narrow the range", async () => {
  const dir = await fixtureDataDir();
  try {
    const since = await netmonitor([
      "--data-dir",
      dir,
      "stats",
      "--json",
      "--since",
      "2026-11-28T10:05:00Z",
    ]);
    const js: StatsJson = JSON.parse(since.stdout);
    assert.equal(js.totals.requests, 5);
    assert.equal(js.range.since, "2026-11-28T10:05:00.000Z");
    const last = await netmonitor(["--data-dir", dir, "stats", "--json", "--last", "3"]);
    const jl: StatsJson = JSON.parse(last.stdout);
    assert.equal(jl.totals.requests, 3);
    assert.equal(jl.range.last, 3);
    assert.deepEqual(jl.hosts.map((h) => h.host), ["[::1]", "bad.test", "pypi.test"]);
    const plain = await netmonitor(["--data-dir", dir, "stats", "--last", "3"]);
    assert.match(plain.stdout, /\(last 3\)/);
    assert.match(plain.stdout, /Requests 3 /);

    // A relative --since against a log written now.
    const now = Date.now();
    const log = new AccessLog(join(dir, "recent.log"));
    log.write(rec(new Date(now - 3 * 3600_000), "old.test"));
    log.write(rec(new Date(now - 20 * 60_000), "new.test"));
    await log.close();
    const fresh = await Deno.makeTempDir({ prefix: "nm-stats-e2e-" });
    try {
      await Deno.rename(join(dir, "recent.log"), join(fresh, "network-access.log"));
      const hour = await netmonitor(["--data-dir", fresh, "stats", "--json", "--since", "1h"]);
      const jh: StatsJson = JSON.parse(hour.stdout);
      assert.deepEqual(jh.hosts.map((h) => h.host), ["new.test"]);
      const day = await netmonitor(["--data-dir", fresh, "stats", "--json", "--since", "1d"]);
      assert.equal((JSON.parse(day.stdout) as StatsJson).totals.requests, 2);
    } finally {
      await Deno.remove(fresh, { recursive: true });
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("e2e stats: bad options are usage errors (exit 2 with a hint)", async () => {
  const dir = await fixtureDataDir();
  try {
    for (
      const [args, message] of [
        [["--since", "yesterday"], /--since.*expected a duration like 30m, 1h or 2d/],
        [["--last", "0"], /--last must be a whole number, 1 or more/],
        [["--last", "ten"], /--last must be a whole number/],
        [["--interval", "0"], /--interval must be a number of seconds/],
      ] as const
    ) {
      const r = await netmonitor(["--data-dir", dir, "stats", ...args]);
      assert.equal(r.code, 2, args.join(" "));
      assert.match(r.stderr, message);
      assert.match(r.stderr, /Run "netmonitor stats --help" for usage\./);
      assert.equal(r.stdout, "");
    }
    // --interval without --watch would show one summary and never refresh.
    const r = await netmonitor(["--data-dir", dir, "stats", "--interval", "5"]);
    assert.equal(r.code, 2);
    assert.equal(
      r.stderr,
      'error: --interval only applies with --watch\nRun "netmonitor stats --watch --interval 5" to refresh.\n',
    );
    assert.equal(r.stdout, "");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("e2e stats: an empty data dir and a broken rules file", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nm-stats-e2e-" });
  try {
    const r = await netmonitor(["--data-dir", dir, "stats"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /No requests logged yet\./);
    assert.match(
      r.stdout.replace(/\s+/g, " "),
      /No rules file yet: every request is asked about \(or, where the proxy does not ask, gets its --default\)/,
    );
    await Deno.writeTextFile(join(dir, "network-rules.json"), '{ "github.com": "alow" }');
    const j: StatsJson = JSON.parse(
      (await netmonitor(["--data-dir", dir, "stats", "--json"])).stdout,
    );
    assert.equal(j.totals.requests, 0);
    assert.deepEqual(j.rules, []);
    assert.match(j.rulesError!, /unknown action "alow"/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("e2e stats: --watch (piped) re-reads incrementally and stops cleanly on SIGINT", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nm-stats-e2e-" });
  const logPath = join(dir, "network-access.log");
  const log = new AccessLog(logPath);
  log.write(rec(new Date(), "first.test"));
  await log.flush();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, "--data-dir", dir, "stats", "--watch", "--json", "--interval", "0.3"],
    cwd: REPO,
    env: { TZ: "UTC" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const frames: StatsJson[] = [];
  const stderr = new Response(child.stderr).text();
  const reading = (async () => {
    let buf = "";
    for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
      buf += chunk;
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        frames.push(JSON.parse(buf.slice(0, nl)));
        buf = buf.slice(nl + 1);
      }
    }
  })();
  const waitFor = async (pred: () => boolean) => {
    const deadline = Date.now() + 30_000;
    while (!pred()) {
      if (Date.now() > deadline) throw new Error(`timed out; frames: ${frames.length}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  try {
    await waitFor(() => frames.length >= 1);
    assert.equal(frames[0].totals.requests, 1);
    log.write(rec(new Date(), "second.test", { decision: "deny", status: 403 }));
    log.write(rec(new Date(), "second.test", { decision: "deny", status: 403 }));
    await log.flush();
    await waitFor(() => frames.at(-1)!.totals.requests === 3);
    const f = frames.at(-1)!;
    assert.equal(f.totals.denied, 2);
    assert.deepEqual(f.hosts.map((h) => [h.host, h.requests]), [["second.test", 2], [
      "first.test",
      1,
    ]]);
    // The series ends at the current minute while watching.
    assert.equal(f.requestsPerMinute.counts.at(-1)! + f.requestsPerMinute.counts.at(-2)!, 3);
  } finally {
    child.kill("SIGINT");
    const status = await child.status;
    await reading;
    await log.close();
    assert.equal(status.code, 0, await stderr);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "e2e stats: --watch on a terminal redraws in place and Ctrl-C restores the screen",
  ignore: !has("tmux"),
  fn: async () => {
    const dir = await fixtureDataDir();
    try {
      await using tmux = await TmuxSession.start({
        cmd: [Deno.execPath(), "run", "-A", MAIN, "--data-dir", dir, "stats", "--watch"],
        cwd: REPO,
        env: { TZ: "UTC", NO_COLOR: "" },
        width: 110,
        height: 60,
      });
      const screen = await tmux.waitFor(
        /Refreshing every 2s · updated \d\d:\d\d:\d\d · Ctrl-C quits/,
      );
      assert.match(screen, /Requests 12 {4}Allowed 7/);
      assert.match(screen, /Active rules \(2\)/);
      // Another process appends while we watch; the next refresh shows it.
      const log = new AccessLog(join(dir, "network-access.log"));
      log.write(rec(new Date(), "live.test"));
      await log.close();
      await tmux.waitFor(/Requests 13 /);
      assert.match(await tmux.screen(), /live\.test/);
      await tmux.press("C-c");
      assert.equal(await tmux.exitCode(), 0);
      // Back on the normal screen: the dashboard is gone with the alternate screen.
      assert.doesNotMatch(await tmux.screen(), /Refreshing every/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

/** Reads `stream` until `pattern` shows up; returns the match. Keeps draining after. */
async function readUntil(
  stream: ReadableStream<Uint8Array>,
  pattern: RegExp,
  sink: { text: string },
): Promise<RegExpExecArray> {
  const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`output ended before ${pattern}:\n${sink.text}`);
    sink.text += value;
    const m = pattern.exec(sink.text);
    if (m) {
      // Keep reading in the background so the child never blocks on a full pipe.
      (async () => {
        for (;;) {
          const r = await reader.read().catch(() => ({ done: true, value: undefined }));
          if (r.done) break;
          sink.text += r.value;
        }
      })();
      return m;
    }
  }
}

async function curl(proxyPort: number, args: string[]): Promise<string> {
  const out = await new Deno.Command("curl", {
    args: [
      "-s",
      "-o",
      "/dev/null",
      "-w",
      "%{http_code}",
      "--max-time",
      "20",
      "-x",
      `http://127.0.0.1:${proxyPort}`,
      ...args,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  return new TextDecoder().decode(out.stdout);
}

Deno.test({
  name: "e2e stats: numbers from a log written by a real proxy run",
  ignore: !has("curl"),
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "nm-stats-proxy-" });
    // A loopback origin that the proxy reaches through --resolve (nothing leaves this machine).
    const origin = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
      const url = new URL(req.url);
      const body = await req.arrayBuffer();
      if (url.pathname === "/big") return new Response("x".repeat(10_000));
      if (url.pathname === "/upload") return new Response(`got ${body.byteLength}`);
      return new Response("hello world");
    });
    const port = origin.addr.port;
    await Deno.writeTextFile(
      join(dir, "network-rules.json"),
      '{ "blocked.test": "deny-domain" }\n',
    );
    const proxy = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        MAIN,
        "--data-dir",
        dir,
        "run",
        "--non-interactive",
        "--default",
        "allow",
        "--port",
        "0",
        "--resolve",
        `origin.test:${port}:127.0.0.1`,
        "--resolve",
        `blocked.test:${port}:127.0.0.1`,
      ],
      cwd: REPO,
      env: { NO_COLOR: "1", TZ: "UTC" },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const out = { text: "" };
    const stderr = new Response(proxy.stderr).text();
    let stopped = false;
    try {
      const m = await readUntil(proxy.stdout, /Listening on http:\/\/[^\s:]+:(\d+)/, out);
      const proxyPort = Number(m[1]);
      const base = `http://origin.test:${port}`;
      assert.equal(await curl(proxyPort, [`${base}/hello`]), "200");
      assert.equal(await curl(proxyPort, [`${base}/big`]), "200");
      assert.equal(
        await curl(proxyPort, ["--data-binary", "y".repeat(500), `${base}/upload`]),
        "200",
      );
      assert.equal(await curl(proxyPort, [`${base}/api?token=s3cr3t-value&page=2`]), "200");
      assert.equal(await curl(proxyPort, [`http://blocked.test:${port}/`]), "403");
      proxy.kill("SIGTERM");
      assert.equal((await proxy.status).code, 0, await stderr);
      stopped = true;

      const logText = await Deno.readTextFile(join(dir, "network-access.log"));
      assert.ok(!logText.includes("s3cr3t"), "the token never reaches the log");
      assert.equal(logText.trim().split("\n").length, 5);

      const r = await netmonitor(["--data-dir", dir, "stats", "--json"]);
      assert.equal(r.code, 0, r.stderr);
      const j: StatsJson = JSON.parse(r.stdout);
      assert.equal(j.badLines, 0);
      assert.equal(j.totals.requests, 5);
      assert.equal(j.totals.allowed, 4);
      assert.equal(j.totals.denied, 1);
      assert.equal(j.totals.errors, 0);
      assert.ok(j.totals.bytesUp >= 500, `bytesUp ${j.totals.bytesUp}`);
      assert.ok(j.totals.bytesDown >= 10_000 + 11 * 2, `bytesDown ${j.totals.bytesDown}`);
      assert.deepEqual(j.hosts.map((h) => [h.host, h.requests, h.allowed, h.denied]), [
        ["origin.test", 4, 4, 0],
        ["blocked.test", 1, 0, 1],
      ]);
      const sources = j.recent.map((x) => x.source);
      assert.deepEqual(sources, ["default", "default", "default", "default", "rule"]);
      assert.match(j.recent[3].url, /\/api\?token=REDACTED&page=2$/);
      assert.equal(j.recent[4].status, 403);
      assert.match(j.recent[4].reason, /blocked\.test/);
      assert.deepEqual(j.rules, [{ pattern: "blocked.test", action: "deny-domain" }]);
      assert.equal(j.requestsPerMinute.counts.reduce((a, b) => a + b, 0), 5);

      const plain = await netmonitor(["--data-dir", dir, "stats"]);
      assert.match(plain.stdout, /Requests 5 {4}Allowed 4 {4}Denied 1/);
      assert.match(plain.stdout, /origin\.test +4 +4 +0 +0/);
      assert.match(plain.stdout, /DENY +GET +403 +http:\/\/blocked\.test:\d+\//);
    } finally {
      if (!stopped) {
        proxy.kill("SIGKILL");
        await proxy.status;
        await stderr;
      }
      await origin.shutdown();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("e2e stats and rules list: 200,000 hosts and rules are listed, not a crash", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nm-stats-e2e-big-" });
  try {
    const n = 200_000;
    const t = new Date("2026-11-29T08:00:00Z");
    const lines: string[] = [];
    for (let i = 0; i < n; i++) lines.push(JSON.stringify(rec(t, `h${i}.test`)));
    await Deno.writeTextFile(join(dir, "network-access.log"), lines.join("\n") + "\n");
    const rules: string[] = [];
    for (let i = 0; i < n; i++) rules.push(`"h${i}.test": "allow-domain"`);
    await Deno.writeTextFile(join(dir, "network-rules.json"), `{${rules.join(",\n")}}\n`);
    const stats = await netmonitor(["--data-dir", dir, "stats", "--hosts", "0"]);
    assert.equal(stats.code, 0, stats.stderr);
    // The stats keep at most 50,000 hosts by name (memory stays bounded).
    const hostRows = stats.stdout.split("\n").filter((l) => /^ {2}h\d+\.test +1 /.test(l));
    assert.ok(hostRows.length >= 50_000, `${hostRows.length} host rows`);
    assert.match(stats.stdout, /\n {2}h199999\.test +allow-domain\n?$/);
    const list = await netmonitor(["--data-dir", dir, "rules", "list"]);
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stdout, /^200,?000 rules in /);
    assert.match(list.stdout, /\n {2}h199999\.test +allow-domain\n$/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
