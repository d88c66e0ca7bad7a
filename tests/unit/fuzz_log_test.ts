/**
 * Property-based tests of the access log: serialisation (lib/log/mod.ts),
 * redaction (lib/log/redact.ts) and the stats reader (lib/log/reader.ts).
 * Deterministic: seeded, bounded iterations.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  AccessLog,
  type AccessRecord,
  isSecretParamName,
  MAX_ERROR_CHARS,
  redactText,
  redactUrl,
  serialiseRecord,
} from "../../lib/log/mod.ts";
import { parseRecordLine, readAccessLog, readLastRecords } from "../../lib/log/reader.ts";
import { forAll, forAllAsync, type Rng } from "../_helpers/fuzz.ts";

const CANONICAL_ORDER = [
  "time",
  "client",
  "method",
  "url",
  "host",
  "decision",
  "source",
  "reason",
  "status",
  "bytesUp",
  "bytesDown",
  "durationMs",
  "error",
];

/** Pieces of hostile text: control characters, quotes, separators, JSON and log look-alikes. */
const NASTY = [
  "\n",
  "\r",
  "\r\n",
  "\t",
  "\0",
  "\x1b[2J",
  "\x7f",
  '"',
  "\\",
  '\\"',
  "\\n",
  "'",
  "\u2028",
  "\u2029",
  "\ufeff",
  "\ud800", // lone surrogates
  "\udfff",
  "é",
  "中文",
  "😀",
  "Ω",
  '","decision":"allow","x":"',
  '"}\n{"time":"2026-01-01T00:00:00.000Z","host":"evil.test","decision":"allow"}',
  '{"time":"',
  "%0a",
  "%00",
  "<script>",
  "${x}",
];

const PLAIN = "abcdefghijklmnopqrstuvwxyz0123456789-._~/:?#[]@!$&()*+,;=% ";

/** A string mixing plain characters and hostile pieces; sometimes very long. */
function nastyString(r: Rng, maxLen = 60, long = true): string {
  let s = "";
  const parts = r.int(maxLen);
  for (let i = 0; i < parts; i++) s += r.bool(0.3) ? r.pick(NASTY) : r.string(r.int(6), PLAIN);
  if (long && r.bool(0.02)) s += r.string(r.range(5000, 60000), PLAIN + "é中😀");
  return s;
}

function randomTime(r: Rng): string {
  return new Date(Date.UTC(2000, 0, 1) + r.int(100 * 365 * 24 * 3600) * 1000 + r.int(1000))
    .toISOString();
}

function randomClient(r: Rng): string {
  switch (r.int(4)) {
    case 0:
      return `${r.int(256)}.${r.int(256)}.${r.int(256)}.${r.int(256)}:${r.range(1, 65535)}`;
    case 1: {
      const groups = Array.from({ length: 8 }, () => r.int(65536).toString(16));
      return `[${groups.join(":")}]:${r.range(1, 65535)}`;
    }
    case 2:
      return `[::ffff:10.0.0.${r.int(256)}]:${r.range(1, 65535)}`;
    default:
      return nastyString(r, 10);
  }
}

function randomNumber(r: Rng): number {
  return r.pick([0, 1, 200, 403, r.int(1000), r.int(2 ** 31), Number.MAX_SAFE_INTEGER]);
}

/** A random record with hostile text everywhere text may go (`long`: some of it 5-60 K). */
function randomRecord(r: Rng, long = true): AccessRecord {
  const rec: AccessRecord = {
    time: randomTime(r),
    client: randomClient(r),
    method: r.bool(0.7) ? r.pick(["GET", "POST", "CONNECT", "DELETE"]) : nastyString(r, 8),
    url: r.bool(0.5) ? secretUrl(r, randomSecret(r)).url : nastyString(r, 60, long),
    host: r.bool(0.5) ? "example.test" : nastyString(r, 10),
    decision: r.pick(["allow", "deny", "error"] as const),
    source: r.pick(["rule", "prompt", "timeout", "default", "policy", "error"] as const),
    reason: nastyString(r, 60, long),
    status: randomNumber(r),
    bytesUp: randomNumber(r),
    bytesDown: randomNumber(r),
    durationMs: randomNumber(r),
  };
  if (r.bool()) rec.error = nastyString(r, 60, long);
  return rec;
}

/** What the log keeps of a record: the documented redaction of url, reason and error. */
function expected(rec: AccessRecord): AccessRecord {
  const out: AccessRecord = {
    ...rec,
    url: redactUrl(rec.url),
    reason: redactText(rec.reason),
  };
  if (rec.error !== undefined) {
    // Errors are cut after redaction, with the count of what was left out.
    const e = redactText(rec.error);
    out.error = e.length > MAX_ERROR_CHARS
      ? `${e.slice(0, MAX_ERROR_CHARS)}... (${e.length - MAX_ERROR_CHARS} more characters)`
      : e;
  }
  return out;
}

// ---------------------------------------------------------------------------
// Secrets. Their alphabet shares no letter with REDACTED, the JSON keys or
// the host names and fillers used around them, so any 3 characters of one
// found in a line are a leak.

const SECRET_ALPHABET = "QZXJVKWYqzxjvkwy";

function randomSecret(r: Rng): string {
  return r.string(r.range(8, 40), SECRET_ALPHABET);
}

/** Parameter names that carry secrets (checked against `isSecretParamName`). */
const SECRET_NAMES = [
  "token",
  "access_token",
  "refresh_token",
  "id_token",
  "api_key",
  "api-key",
  "apikey",
  "apiKey",
  "key",
  "secret",
  "client_secret",
  "password",
  "passwd",
  "pwd",
  "pass",
  "auth",
  "authorization",
  "sig",
  "signature",
  "X-Amz-Signature",
  "X-Amz-Credential",
  "X-Amz-Security-Token",
  "X-Goog-Signature",
  "code",
  "session",
  "sessionid",
  "JSESSIONID",
  "PHPSESSID",
  "sid",
  "jwt",
  "credentials",
  "my_access_key",
  "subscription-key",
  "privateKey",
  "oauth_token",
  "upload_token",
  "acc%65ss_token", // an escaped spelling
  "%74oken",
];

/** Spells a name in random case (servers compare these case-insensitively). */
function randomCase(r: Rng, s: string): string {
  return Array.from(s, (c) => r.bool(0.3) ? c.toUpperCase() : r.bool(0.3) ? c.toLowerCase() : c)
    .join("");
}

const FILLER = ["page=2", "q=hello", "sort=", "flag", "lang=en", "utm_source=mail", "a=b"];

const HOSTS = ["example.test", "api.example.test", "10.0.0.1", "[::1]", "bucket.s3.example.test"];

/** A URL (or request target) carrying `secret` where the log must redact it. */
function secretUrl(r: Rng, secret: string): { url: string; where: string } {
  const host = r.pick(HOSTS) + (r.bool(0.3) ? `:${r.range(1, 65535)}` : "");
  const path = r.pick(["/", "/a/b", "/x;v=1", "", "/upload/"]);
  const params = (kv: string) => {
    const list = Array.from({ length: r.int(4) }, () => r.pick(FILLER));
    list.splice(r.int(list.length + 1), 0, kv);
    return list.join(r.pick(["&", "&", ";"]));
  };
  const name = () => randomCase(r, r.pick(SECRET_NAMES));
  switch (r.int(9)) {
    case 0: {
      // Slashes in every spelling URL parsers read as `//` (backslashes too).
      const scheme = r.pick([
        "http://",
        "https://",
        "HTTP://",
        "http:///",
        "ws://",
        "ftp://",
        "http:\\/",
        "https:/\\",
        "http:\\\\",
        "HTTPS:/\\/",
        "http:\\/\\/",
      ]);
      const user = r.pick(["user:", "", "a:b:", "u%40x:"]);
      return { url: `${scheme}${user}${secret}@${host}${path}`, where: "userinfo" };
    }
    case 1: {
      // A malformed target or a tunnel target: no `scheme://`.
      const start = r.pick(["//", "http:/", "", "///", "\\/", "/\\", "\\\\", "http:\\"]);
      return { url: `${start}user:${secret}@${host}${path}`, where: "userinfo, no scheme" };
    }
    case 2:
      return { url: `https://${host}${path}?${params(`${name()}=${secret}`)}`, where: "query" };
    case 3:
      return { url: `https://${host}${path}#${params(`${name()}=${secret}`)}`, where: "fragment" };
    case 4:
      return { url: `${path || "/"}?${params(`${name()}=${secret}`)}`, where: "origin-form" };
    case 5:
      return {
        url: `http://${host}/app;${r.pick(["jsessionid", "token", "sid"])}=${secret}/page`,
        where: "path parameter",
      };
    case 6: {
      // A redirect target in a parameter, encoded once or twice.
      const inner = r.bool()
        ? `https://u:${secret}@${r.pick(HOSTS)}/cb`
        : `https://${r.pick(HOSTS)}/cb?${name()}=${secret}`;
      const once = encodeURIComponent(inner);
      const value = r.pick([inner, once, encodeURIComponent(once)]);
      return { url: `https://${host}/login?${params(`next=${value}`)}`, where: "nested URL" };
    }
    case 7:
      // A name-less value that is a credential by its look.
      return {
        url: `https://${host}/?${params(`v=ghp_${secret}0123456789012345`)}`,
        where: "token prefix",
      };
    default:
      return {
        url: `https://${host}${path}?${params(`${name()}=${secret}`)}#${params("x=1")}`,
        where: "query before a fragment",
      };
  }
}

/** Free text (a decision reason, an error) quoting a URL with a secret, as the proxy writes them. */
function secretText(r: Rng, secret: string): string {
  const { url } = secretUrl(r, secret);
  const full = /^[a-z]+:\/\//i.test(url);
  // Documented contexts: a target quoted (as `quote()` does), or a whole URL
  // with its scheme anywhere in the text.
  const templates = [
    (u: string) => `rule "${u}": allow-url`,
    (u: string) => `invalid request target "${u}"`,
    (u: string) => `invalid Host header "${u}": invalid authority "${u}"`,
  ];
  if (full) {
    templates.push(
      (u) => `bad target (${u})`,
      (u) => `upstream ${u} refused`,
      (u) => `${u}`,
      (u) => `<${u}>`,
    );
  }
  return r.pick(templates)(url);
}

/** Every run of 3 characters of the secret that appears in the line. */
function leaks(line: string, secret: string): string[] {
  const found: string[] = [];
  for (let i = 0; i + 3 <= secret.length; i++) {
    const piece = secret.slice(i, i + 3);
    if (line.includes(piece)) found.push(piece);
  }
  return found;
}

// ---------------------------------------------------------------------------

Deno.test("fuzz log: records round-trip through one line each, redacted as documented", () => {
  forAll("round trip", { seed: 0x10c, runs: 1500 }, (r) => {
    const rec = randomRecord(r);
    const line = serialiseRecord(rec);
    assert.ok(!line.includes("\n") && !line.includes("\r"), "one line per record");
    const back = parseRecordLine(line);
    assert.deepEqual(back, expected(rec));
    assert.deepEqual(Object.keys(back), CANONICAL_ORDER.filter((k) => k in rec));
    // Redaction is stable: what the log says is redacted once and for all.
    assert.equal(redactUrl(back.url), back.url);
  });
});

Deno.test("fuzz log: no secret survives in a serialised line", () => {
  for (const name of SECRET_NAMES) assert.ok(isSecretParamName(name), name);
  forAll("secrets", { seed: 0x5ec7e7, runs: 3000 }, (r) => {
    const secret = randomSecret(r);
    const rec = randomRecord(r);
    // Fillers around it: nothing from the secret's alphabet.
    rec.client = "127.0.0.1:40000";
    rec.method = "GET";
    rec.host = "example.test";
    rec.reason = "no rule";
    delete rec.error;
    const field = r.pick(["url", "reason", "error"] as const);
    let where = field;
    if (field === "url") {
      const s = secretUrl(r, secret);
      rec.url = s.url;
      where += ` (${s.where})`;
    } else {
      rec.url = "https://example.test/";
      rec[field] = secretText(r, secret);
    }
    const line = serialiseRecord(rec);
    const found = leaks(line, secret);
    assert.deepEqual(found, [], `${where}: ${JSON.stringify(rec[field])} -> ${line}`);
  });
});

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "fuzz_log_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("fuzz log: the stats readers give back what the writer wrote, in any chunking", async () => {
  await withTempDir(async (dir) => {
    await forAllAsync("file round trip", { seed: 0xf11e, runs: 25 }, async (r, i) => {
      const path = join(dir, `access-${i}.log`);
      const recs = Array.from({ length: r.range(1, 40) }, () => randomRecord(r, i % 5 === 0));
      const log = new AccessLog(path, {
        onError: (e) => {
          throw e;
        },
      });
      for (const rec of recs) log.write(rec);
      await log.close();
      const want = recs.map(expected);
      const text = await Deno.readTextFile(path);
      assert.equal(text.split("\n").length, recs.length + 1, "one line per record");
      // Tiny reads (a read call per few bytes) only for short logs.
      const text8 = new TextEncoder().encode(text).length;
      const chunkBytes = text8 < 20_000
        ? r.pick([1, 7, 64, 333, 4096, 4096])
        : r.pick([333, 4096, 1 << 18]);
      const got: AccessRecord[] = [];
      let bad = 0;
      const opts = { chunkBytes, onBadLine: () => bad++ };
      for await (const rec of readAccessLog(path, opts)) got.push(rec);
      assert.equal(bad, 0);
      assert.deepEqual(got, want);
      const n = r.range(1, recs.length);
      const last = await readLastRecords(path, n, { chunkBytes });
      assert.equal(last.badLines, 0);
      assert.deepEqual(last.records, want.slice(-n));
    });
  });
});

Deno.test("fuzz log: a line cut by a crash and glued to the next costs only itself", async () => {
  await withTempDir(async (dir) => {
    await forAllAsync("cut and glued", { seed: 0x91ed, runs: 40 }, async (r, i) => {
      const path = join(dir, `glued-${i}.log`);
      const recs = Array.from({ length: r.range(2, 8) }, () => randomRecord(r, false));
      const lines = recs.map(serialiseRecord);
      const k = r.int(lines.length - 1);
      // The crash cut line k somewhere; the next writer appended line k+1 to it.
      const cut = lines[k].slice(0, r.range(1, lines[k].length - 1));
      const text = [...lines.slice(0, k), cut + lines[k + 1], ...lines.slice(k + 2)].join("\n");
      await Deno.writeTextFile(path, text + "\n");
      const want = recs.map(expected).filter((_, j) => j !== k);
      const got: AccessRecord[] = [];
      let bad = 0;
      const chunkBytes = r.pick([13, 100, 4096, 1 << 18]);
      for await (const rec of readAccessLog(path, { chunkBytes, onBadLine: () => bad++ })) {
        got.push(rec);
      }
      assert.deepEqual(got, want);
      assert.equal(bad, 1);
      const last = await readLastRecords(path, recs.length, { chunkBytes });
      assert.deepEqual(last.records, want);
      assert.equal(last.badLines, 1);
    });
  });
});

Deno.test("fuzz log: over-long lines are skipped the same way forwards and backwards", async () => {
  await withTempDir(async (dir) => {
    await forAllAsync("line limit", { seed: 0x1e7, runs: 30 }, async (r, i) => {
      const path = join(dir, `long-${i}.log`);
      const maxLineBytes = r.range(300, 3000);
      const recs = Array.from({ length: r.range(1, 12) }, () => {
        const rec = randomRecord(r, false);
        rec.reason = r.string(r.int(maxLineBytes), r.pick(["ab", "é中", "😀x"]));
        return rec;
      });
      const lines = recs.map(serialiseRecord);
      await Deno.writeTextFile(path, lines.join("\n") + "\n");
      const bytes = (s: string) => new TextEncoder().encode(s).length;
      // The documented limit is in bytes (the newline aside).
      const want = recs.map(expected).filter((_, j) => bytes(lines[j]) <= maxLineBytes);
      const chunkBytes = r.pick([17, 50, 500, 5000, 1 << 18]);
      const got: AccessRecord[] = [];
      let bad = 0;
      const opts = { chunkBytes, maxLineBytes, onBadLine: () => bad++ };
      for await (const rec of readAccessLog(path, opts)) got.push(rec);
      assert.deepEqual(got.map((x) => x.time), want.map((x) => x.time), `chunk ${chunkBytes}`);
      assert.equal(bad, recs.length - want.length);
      const last = await readLastRecords(path, recs.length, { chunkBytes, maxLineBytes });
      assert.deepEqual(last.records.map((x) => x.time), want.map((x) => x.time));
      assert.equal(last.badLines, recs.length - want.length);
    });
  });
});
