/**
 * A proxy under test, decided by a real RuleSet, with its records collected;
 * and raw TCP clients for talking to it byte by byte.
 *
 * @module
 */

import { startProxy } from "../../lib/proxy/mod.ts";
import type {
  AccessRecord,
  DecideInput,
  FinalDecision,
  ProxyOptions,
  ProxyServer,
} from "../../lib/proxy/mod.ts";
import { makeRule, RuleSet } from "../../lib/rules/mod.ts";

/** A running proxy and what it recorded. */
export interface TestProxy {
  server: ProxyServer;
  port: number;
  /** `http://127.0.0.1:PORT`, for curl -x. */
  url: string;
  records: AccessRecord[];
  /** Inputs the decider saw, in order. */
  decided: DecideInput[];
  /** Waits until at least `n` records arrived (fails after `ms`). */
  waitRecords(n: number, ms?: number): Promise<AccessRecord[]>;
  close(): Promise<void>;
}

/** Options of {@linkcode startTestProxy}. */
export interface TestProxyOptions extends Partial<Omit<ProxyOptions, "resolve">> {
  /** Rules as in network-rules.json; "ask" (no rule) is denied with source "default". */
  rules?: Record<string, string>;
  /** `[host, port, address]` entries for `--resolve`. */
  resolve?: [string, number, string][];
}

/** A decider backed by a real RuleSet: no rule means deny (like `--non-interactive`). */
export function rulesDecider(rules: Record<string, string>) {
  const set = new RuleSet(Object.entries(rules).map(([p, a]) => makeRule(p, a)));
  return (input: DecideInput): Promise<FinalDecision> => {
    const d = set.decide(input.target);
    if (d.action === "ask") {
      return Promise.resolve({
        action: "deny",
        source: "default",
        reason: "no rule: --default deny",
      });
    }
    return Promise.resolve({ action: d.action, source: "rule", reason: d.reason, rule: d.rule });
  };
}

/** Starts a proxy on 127.0.0.1, port 0. */
export async function startTestProxy(options: TestProxyOptions = {}): Promise<TestProxy> {
  const records: AccessRecord[] = [];
  const decided: DecideInput[] = [];
  const waiters: (() => void)[] = [];
  const inner = options.decide ?? rulesDecider(options.rules ?? {});
  const { rules: _r, resolve, ...rest } = options;
  const server = await startProxy({
    ...rest,
    hostname: "127.0.0.1",
    port: options.port ?? 0,
    resolve: resolve ? new Map(resolve.map(([h, p, a]) => [`${h}:${p}`, a])) : undefined,
    decide: (input, signal) => {
      decided.push(input);
      return inner(input, signal);
    },
    record: (rec) => {
      records.push(rec);
      for (const w of waiters.splice(0)) w();
    },
  });
  const port = server.addr.port;
  return {
    server,
    port,
    url: `http://127.0.0.1:${port}`,
    records,
    decided,
    async waitRecords(n: number, ms = 5000) {
      const end = Date.now() + ms;
      while (records.length < n) {
        const left = end - Date.now();
        if (left <= 0) {
          throw new Error(
            `expected ${n} records, got ${records.length}: ${JSON.stringify(records, null, 1)}`,
          );
        }
        let timer: ReturnType<typeof setTimeout> | undefined;
        await new Promise<void>((r) => {
          waiters.push(r);
          timer = setTimeout(r, left);
        });
        clearTimeout(timer);
      }
      return records;
    },
    close: () => server.shutdown(),
  };
}

const enc = new TextEncoder();
const dec = new TextDecoder();

/** A raw TCP client connection with a read buffer. */
export class RawClient {
  #buf = new Uint8Array(0);
  eof = false;
  private constructor(readonly conn: Deno.TcpConn) {}

  static async connect(port: number): Promise<RawClient> {
    return new RawClient(await Deno.connect({ hostname: "127.0.0.1", port }));
  }

  async send(data: string | Uint8Array): Promise<void> {
    const b = typeof data === "string" ? enc.encode(data) : data;
    let o = 0;
    while (o < b.length) o += await this.conn.write(b.subarray(o));
  }

  /** Reads more bytes; false at end of stream (or a reset). */
  async #more(): Promise<boolean> {
    if (this.eof) return false;
    const chunk = new Uint8Array(65536);
    let n: number | null;
    try {
      n = await this.conn.read(chunk);
    } catch {
      n = null;
    }
    if (n === null) {
      this.eof = true;
      return false;
    }
    const next = new Uint8Array(this.#buf.length + n);
    next.set(this.#buf);
    next.set(chunk.subarray(0, n), this.#buf.length);
    this.#buf = next;
    return true;
  }

  /** Bytes received and not yet taken. */
  get pending(): Uint8Array {
    return this.#buf;
  }

  /** Takes `n` bytes (reading as needed); fewer at end of stream. */
  async take(n: number): Promise<Uint8Array> {
    while (this.#buf.length < n && await this.#more());
    const out = this.#buf.slice(0, n);
    this.#buf = this.#buf.slice(out.length);
    return out;
  }

  /** Reads one response: head, then a Content-Length or chunked body (or until close). */
  async response(opts: { head?: boolean } = {}): Promise<RawResponse> {
    let idx: number;
    while ((idx = indexOf(this.#buf, "\r\n\r\n")) < 0) {
      if (!(await this.#more())) {
        throw new Error(`connection closed before a response head: ${dec.decode(this.#buf)}`);
      }
    }
    const headText = dec.decode(this.#buf.subarray(0, idx));
    this.#buf = this.#buf.slice(idx + 4);
    const [statusLine, ...lines] = headText.split("\r\n");
    const status = Number(statusLine.split(" ")[1]);
    const headers = new Map<string, string>();
    for (const l of lines) {
      const c = l.indexOf(":");
      headers.set(l.slice(0, c).toLowerCase(), l.slice(c + 1).trim());
    }
    let body: Uint8Array;
    if (opts.head || status === 204 || status === 304 || (status >= 100 && status < 200)) {
      body = new Uint8Array(0);
    } else if (headers.has("content-length")) {
      body = await this.take(Number(headers.get("content-length")));
    } else if (headers.get("transfer-encoding") === "chunked") {
      const parts: number[] = [];
      while (true) {
        let nl: number;
        while ((nl = indexOf(this.#buf, "\r\n")) < 0) {
          if (!(await this.#more())) throw new Error("closed in chunked body");
        }
        const size = parseInt(dec.decode(this.#buf.subarray(0, nl)), 16);
        this.#buf = this.#buf.slice(nl + 2);
        if (size === 0) {
          await this.take(2);
          break;
        }
        parts.push(...(await this.take(size)));
        await this.take(2);
      }
      body = new Uint8Array(parts);
    } else {
      while (await this.#more());
      body = this.#buf;
      this.#buf = new Uint8Array(0);
    }
    return { status, statusLine, headers, body, text: dec.decode(body) };
  }

  /** Everything until the peer closes (or `ms` passes). */
  async readToEnd(ms = 5000): Promise<string> {
    const timer = setTimeout(() => this.close(), ms);
    try {
      while (await this.#more());
    } finally {
      clearTimeout(timer);
    }
    const s = dec.decode(this.#buf);
    this.#buf = new Uint8Array(0);
    return s;
  }

  close(): void {
    try {
      this.conn.close();
    } catch {
      // closed
    }
  }
}

/** A parsed response from {@linkcode RawClient.response}. */
export interface RawResponse {
  status: number;
  statusLine: string;
  headers: Map<string, string>;
  body: Uint8Array;
  text: string;
}

function indexOf(hay: Uint8Array, needle: string): number {
  const n = enc.encode(needle);
  outer: for (let i = 0; i + n.length <= hay.length; i++) {
    for (let j = 0; j < n.length; j++) if (hay[i + j] !== n[j]) continue outer;
    return i;
  }
  return -1;
}

/** Runs curl through the proxy; returns exit code, stdout, stderr. */
export async function curl(
  proxyUrl: string,
  args: string[],
): Promise<{ code: number; stdout: string; stderr: string; bytes: Uint8Array }> {
  const out = await new Deno.Command("curl", {
    args: ["-sS", "--max-time", "20", "-x", proxyUrl, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  return {
    code: out.code,
    stdout: dec.decode(out.stdout),
    stderr: dec.decode(out.stderr),
    bytes: out.stdout,
  };
}
