/**
 * Connection limits: how many client connections are open, in total and per
 * client IP, and how a connection beyond a limit is refused.
 *
 * A refused connection gets a `503` with `Retry-After` (after its request
 * line was read, briefly, so the record says what was refused and the answer
 * is not destroyed by a reset over unread bytes) and is closed. Only a few
 * refusals are answered at once; beyond that a refused connection is closed
 * at once. Each refusal is recorded either way.
 *
 * @module
 */

import { parseAuthority } from "../net/host.ts";
import { parseAbsoluteForm } from "../net/url.ts";
import { Exchange, type ServerContext } from "./context.ts";
import { closeQuietly, writeAll } from "./duplex.ts";
import { BufferedReader, Deadline } from "./reader.ts";
import { proxyResponse } from "./respond.ts";
import { printable, requestLineStart } from "./session.ts";

/** The record's `error` for a connection refused by a limit. */
export const TOO_MANY_CONNECTIONS = "too many connections";

/** Refusals answered at the same time; more are closed without an answer. */
export const MAX_ANSWERED_REFUSALS = 64;

/** Time a refused connection gets to send its request line, ms. */
const REFUSE_READ_MS = 500;
/** Then time to take the 503 and close its side, ms. */
const REFUSE_ANSWER_MS = 500;

/** Counts open client connections, in total and per client IP. */
export class ConnectionLimiter {
  #total = 0;
  readonly #perClient = new Map<string, number>();

  constructor(readonly max: number, readonly maxPerClient: number) {}

  /** Client connections counted in now. */
  get total(): number {
    return this.#total;
  }

  /**
   * Counts in a new connection from `ip`, or says why it must be refused
   * (then nothing was counted).
   */
  admit(ip: string): string | undefined {
    if (this.#total >= this.max) {
      return `too many connections to netmonitor (limit ${this.max})`;
    }
    const n = this.#perClient.get(ip) ?? 0;
    if (n >= this.maxPerClient) {
      return `too many connections from ${ip} (limit ${this.maxPerClient} per client)`;
    }
    this.#total++;
    this.#perClient.set(ip, n + 1);
    return undefined;
  }

  /** Counts out a connection admitted for `ip`. */
  release(ip: string): void {
    this.#total--;
    const n = (this.#perClient.get(ip) ?? 1) - 1;
    if (n > 0) this.#perClient.set(ip, n);
    else this.#perClient.delete(ip);
  }
}

/**
 * Refuses a connection over a limit: reads its request line for up to half a
 * second, answers `503` (when `answer`), drains, closes, and records it
 * (decision deny, source policy, `error` "too many connections").
 */
export async function refuseConnection(
  conn: Deno.TcpConn,
  client: string,
  reason: string,
  ctx: ServerContext,
  answer: boolean,
): Promise<void> {
  const ex = new Exchange(client);
  ex.decision = "deny";
  ex.source = "policy";
  ex.reason = reason;
  ex.error = TOO_MANY_CONNECTIONS;
  const untrack = ctx.track({ idle: true, tunnel: false, cut: () => closeQuietly(conn) });
  let deadline: Deadline | undefined;
  try {
    if (!answer) return;
    deadline = new Deadline(REFUSE_READ_MS, "refusal");
    const reader = new BufferedReader(conn);
    try {
      while (reader.buffered < 4096 && reader.view().indexOf(10) < 0) {
        if (!(await reader.fill(deadline))) break;
      }
    } catch {
      // slow, silent or gone: answer with what arrived
    }
    describe(ex, reader.view());
    const r = proxyResponse(503, `netmonitor: ${reason}; try again later\n`, {
      close: true,
      retryAfter: 1,
      head: ex.method === "HEAD",
    });
    deadline.clear();
    deadline = new Deadline(REFUSE_ANSWER_MS, "refusal");
    try {
      await Promise.race([writeAll(conn, r.bytes), deadline.promise]);
      ex.status = 503;
      ex.bytesDown = r.bodyLength;
      await conn.closeWrite();
      for (let drained = 0; drained < 65536;) {
        drained += reader.buffered;
        reader.consume(reader.buffered);
        if (!(await reader.fill(deadline))) break;
      }
    } catch {
      // the client went away or would not read: close
    }
  } finally {
    deadline?.clear();
    untrack();
    closeQuietly(conn);
    ex.finish(ctx);
  }
}

/** Fills the record's method, URL and host from a request line, when there is one. */
function describe(ex: Exchange, bytes: Uint8Array): void {
  const m = requestLineStart(bytes);
  if (!m) return;
  ex.method = m.method;
  ex.url = printable(m.target, m.cut);
  if (m.cut) return;
  try {
    ex.host = m.method === "CONNECT"
      ? parseAuthority(m.target).host
      : parseAbsoluteForm(m.target).host;
  } catch {
    // not a target we can name a host for
  }
}
