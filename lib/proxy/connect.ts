/**
 * CONNECT tunnels: decide on the target, dial, answer 200, check the
 * client's TLS ClientHello against the target, then relay the bytes or hand
 * the tunnel to the interceptor.
 *
 * Policy for what comes first in a tunnel (fail closed):
 * - a TLS ClientHello whose SNI names the CONNECT host: allowed;
 * - a ClientHello without SNI: allowed only when the CONNECT host is an IP
 *   literal (there is no name to check);
 * - a ClientHello naming another host, a malformed one, or one with an
 *   unparseable name: denied with a TLS access_denied alert, connection closed;
 * - anything that is not TLS (plain HTTP, SSH, ...), or nothing within the
 *   ClientHello timeout: denied and closed (plain HTTP gets a 403 first).
 *
 * A relayed tunnel stays checked after that: the client's bytes must stay
 * TLS records, and it may send no other ClientHello, except the second one
 * a HelloRetryRequest asks for, checked like the first (see TunnelHelloGuard).
 *
 * @module
 */

import { requestFraming, type RequestHead } from "../http1/mod.ts";
import { HttpParseError } from "../http1/errors.ts";
import { quote } from "../http1/head.ts";
import { HostError, isIpLiteral, normaliseHost, parseAuthority } from "../net/host.ts";
import { TargetError } from "../net/url.ts";
import { type ClientHello, ClientHelloError, parseClientHello } from "../tls/client_hello.ts";
import { TlsRecordError, TlsRecordStream } from "../tls/record_stream.ts";
import { type TunnelHelloError, TunnelHelloGuard } from "../tls/hello_retry.ts";
import { relay } from "./body.ts";
import type { Exchange } from "./context.ts";
import { type ByteCounts, closeQuietly, writeAll } from "./duplex.ts";
import { errorOutcome, ioErrorText } from "./errors.ts";
import { IdleWatch } from "./idle.ts";
import {
  BufferedReader,
  Deadline,
  DeadlineError,
  RELAY_QUIET_SIZE,
  RELAY_STREAM_SIZE,
} from "./reader.ts";
import {
  CONNECT_ESTABLISHED,
  decisionHeader,
  proxyResponse,
  TLS_ALERT_ACCESS_DENIED,
} from "./respond.ts";
import { checkHostHeader, HttpSession } from "./session.ts";
import type { Duplex, InterceptedTunnel } from "./types.ts";
import { certainRefusal, decisionExempts, type Dialled } from "./upstream.ts";

/** Largest ClientHello handshake message accepted, bytes. */
const MAX_HELLO = 65536;
/** Most TLS records it may be split over. */
const MAX_HELLO_RECORDS = 64;
/** Room for the largest hello in the most records, and the next record's header. */
const MAX_HELLO_BYTES = MAX_HELLO + 4 + 5 * (MAX_HELLO_RECORDS + 1);

/** Serves a CONNECT request on `s`; the connection ends with the tunnel. */
export async function serveConnect(s: HttpSession, head: RequestHead, ex: Exchange): Promise<void> {
  const { ctx, conn } = s;
  let host: string;
  let port: number;
  try {
    ({ host, port } = parseAuthority(head.target));
  } catch (e) {
    const why = e instanceof HostError ? e.message : "invalid";
    throw new TargetError(`invalid CONNECT target ${quote(head.target)}: ${why}`);
  }
  ex.host = host;
  ex.url = `${host}:${port}`;
  const framing = requestFraming(head);
  if (framing.kind === "chunked" || (framing.kind === "length" && framing.length > 0)) {
    throw new HttpParseError("CONNECT request with a body");
  }
  checkHostHeader(head, "https", host, port, false, "CONNECT");

  const interceptor = ctx.intercept;
  const known = interceptor?.intercepts?.(host, port);
  const decider = known === true && ctx.decideTunnel ? ctx.decideTunnel : ctx.decide;
  const decision = await s.decide(head, { scheme: "https", host, port }, undefined, decider);
  ex.decided(decision);
  if (decision.action === "deny") {
    await s.deny(ex, head, host, decision, true);
    return;
  }
  const exempt = decisionExempts(decision, host);

  // Dial before answering, so a refused destination or a dead upstream gets
  // a real 403/502/504 instead of a tunnel that closes at once. A tunnel that
  // will be decrypted dials nothing yet: its requests dial once allowed.
  let dialled: Dialled | undefined;
  try {
    if (known !== true) {
      dialled = await ctx.dialer.dial(host, port, exempt);
    } else if (decision.source === "rule") {
      // A rule opened the tunnel as a whole ("*", a wildcard). One decided
      // per request ("policy") may yet see a URL rule naming this exact
      // address, which lifts the protection for that request.
      const refused = await certainRefusal(ctx.dialer, host, port, exempt);
      if (refused) throw refused;
    }
  } catch (e) {
    await s.fail(ex, e, head, true);
    return;
  }
  let handedOver = false;
  try {
    try {
      await writeAll(conn, CONNECT_ESTABLISHED);
    } catch (e) {
      ex.error = `client went away before the tunnel opened: ${ioErrorText(e)}`;
      return;
    }
    ex.status = 200;

    const hello = await readClientHello(s, ex, host);
    if (!hello) return;

    // The rules may have changed since `intercepts()` said to relay (a prompt
    // takes up to a minute, a ClientHello up to its timeout): a tunnel that
    // must be decrypted by now (a deny URL rule for its host and port landed)
    // is, whatever its CONNECT was decided as. Each request in it is decided.
    if (interceptor && (known !== false || interceptor.intercepts?.(host, port) === true)) {
      handedOver = true;
      await intercept(s, ex, host, port, hello, dialled, exempt);
      return;
    }
    await relayTunnel(s, ex, dialled!, hello, host);
  } finally {
    if (!handedOver) closeQuietly(dialled?.conn);
  }
}

/**
 * Relays a checked tunnel: `taken` (bytes already taken out of the reader,
 * from the ClientHello on), then what the reader holds, then both ways,
 * until both sides closed or no byte moved either way for
 * `tunnelIdleTimeoutMs`. `hello` is the checked ClientHello, for `host`.
 */
async function relayTunnel(
  s: HttpSession,
  ex: Exchange,
  dialled: Dialled,
  hello: ClientHello,
  host: string,
  taken?: Uint8Array,
): Promise<void> {
  const counts = { up: 0, down: 0 };
  let refused: TlsRecordError | TunnelHelloError | undefined;
  const watch = tunnelWatch(s, dialled.conn);
  s.setRelay(dialled.conn);
  // The client's side must stay TLS records from its ClientHello on: the
  // tunnel was allowed for TLS to this host (see TlsRecordStream). And it
  // may not name another host in a second ClientHello (see TunnelHelloGuard).
  const records = new TlsRecordStream();
  const hellos = new TunnelHelloGuard(hello.length, (h) => sniProblem(h, host), {
    maxLength: MAX_HELLO,
    maxRecords: MAX_HELLO_RECORDS,
  });
  const checkUp = (bytes: Uint8Array) => {
    try {
      records.push(bytes);
      hellos.client(bytes);
    } catch (e) {
      refused = e as TlsRecordError | TunnelHelloError;
      throw e;
    }
  };
  const checkDown = (bytes: Uint8Array) => hellos.server(bytes);
  try {
    if (taken) {
      try {
        checkUp(taken);
      } catch {
        closeQuietly(s.conn);
        return;
      }
      await writeAll(dialled.conn, taken);
      counts.up += taken.length;
    }
    const upstream = new BufferedReader(dialled.conn, { initialSize: RELAY_QUIET_SIZE });
    s.reader.streamSize = upstream.streamSize = RELAY_STREAM_SIZE;
    s.reader.quietSize = RELAY_QUIET_SIZE;
    await relay(s.reader, s.conn, upstream, dialled.conn, counts, watch, checkUp, checkDown);
  } finally {
    watch.stop();
    s.setRelay(undefined);
    ex.bytesUp += counts.up;
    ex.bytesDown += counts.down;
    if (watch.fired) ex.error = tunnelIdleError(watch.ms);
    if (refused instanceof TlsRecordError) {
      denyByPolicy(
        ex,
        "tunnel traffic after the ClientHello is not TLS (fail closed)",
        refused.message,
      );
    } else if (refused) {
      denyByPolicy(ex, refused.reason, refused.detail);
    }
  }
}

/** The idle watch of a relay between `s`'s client and `peer`: closes both when it fires. */
export function tunnelWatch(s: HttpSession, peer: Duplex): IdleWatch {
  return new IdleWatch(s.ctx.limits.tunnelIdleTimeoutMs, () => {
    closeQuietly(s.conn);
    closeQuietly(peer);
  });
}

/** The record's error for a relay closed by the tunnel idle timeout. */
export function tunnelIdleError(ms: number): string {
  return `tunnel idle: no bytes either way for ${ms} ms`;
}

/**
 * Reads the ClientHello and applies the tunnel policy. Returns undefined
 * (after answering and filling the record) when the tunnel must not go on.
 */
async function readClientHello(
  s: HttpSession,
  ex: Exchange,
  host: string,
): Promise<ClientHello | undefined> {
  const { reader, conn, ctx } = s;
  const ms = ctx.limits.helloTimeoutMs;
  const deadline = new Deadline(ms, `no TLS ClientHello within ${ms} ms`);
  let hello: ClientHello | undefined;
  try {
    while (true) {
      if (reader.buffered > 0) {
        hello = parseClientHello(reader.view(), {
          maxLength: MAX_HELLO,
          maxRecords: MAX_HELLO_RECORDS,
        });
        if (hello) break;
      }
      if (!(await reader.fill(deadline, MAX_HELLO_BYTES))) {
        ex.error = "the client closed the tunnel before sending a TLS ClientHello";
        return undefined;
      }
    }
  } catch (e) {
    if (e instanceof DeadlineError) {
      denyByPolicy(ex, "tunnel did not start with a TLS ClientHello (fail closed)", e.message);
      return undefined;
    }
    if (e instanceof ClientHelloError) {
      if (e.notTls) {
        denyByPolicy(ex, "tunnel traffic is not TLS (fail closed)", e.message);
        if (looksLikeHttp(reader.view())) {
          const body = `netmonitor: a CONNECT tunnel must carry TLS; plain HTTP requests go ` +
            `to the proxy directly (http://... URLs)\n`;
          const r = proxyResponse(403, body, {
            close: true,
            decision: decisionHeader("deny", ex.reason),
          });
          await writeAll(conn, r.bytes).catch(() => {});
        }
      } else {
        denyByPolicy(ex, "malformed TLS ClientHello", e.message);
        await writeAll(conn, TLS_ALERT_ACCESS_DENIED).catch(() => {});
      }
      return undefined;
    }
    if (e instanceof RangeError) {
      // The read buffer filled up: cannot happen with the limits above, but
      // if it does, nothing was relayed and the record must say so.
      denyByPolicy(ex, "TLS ClientHello too large (fail closed)", e.message);
      await writeAll(conn, TLS_ALERT_ACCESS_DENIED).catch(() => {});
      return undefined;
    }
    ex.error = `reading the TLS ClientHello failed: ${ioErrorText(e)}`;
    return undefined;
  } finally {
    deadline.clear();
  }
  const mismatch = sniProblem(hello, host);
  if (mismatch) {
    denyByPolicy(ex, mismatch);
    await writeAll(conn, TLS_ALERT_ACCESS_DENIED).catch(() => {});
    return undefined;
  }
  return hello;
}

/**
 * Why a ClientHello may not go to `host`, or undefined when it may: its SNI
 * must name the CONNECT host (both normalised); no SNI only for IP literals.
 */
export function sniProblem(hello: ClientHello, host: string): string | undefined {
  const sni = hello.serverName;
  if (sni === undefined) {
    return isIpLiteral(host)
      ? undefined
      : `TLS ClientHello without SNI in a tunnel to ${host} (fail closed)`;
  }
  let name: string;
  try {
    name = normaliseHost(sni);
  } catch {
    return `invalid SNI ${quote(sni)} in a tunnel to ${host}`;
  }
  return name === host ? undefined : `SNI ${quote(sni)} does not match the CONNECT host ${host}`;
}

function denyByPolicy(ex: Exchange, reason: string, error?: string): void {
  ex.decision = "deny";
  ex.source = "policy";
  ex.reason = reason;
  if (error !== undefined) ex.error = error;
}

function looksLikeHttp(b: Uint8Array): boolean {
  const m = /^[A-Z]{3,10} \S/.exec(String.fromCharCode(...b.subarray(0, 16)));
  return m !== null;
}

/** Hands an allowed, checked tunnel to the interceptor, or relays it if it declines. */
async function intercept(
  s: HttpSession,
  ex: Exchange,
  host: string,
  port: number,
  hello: ClientHello,
  dialled: Dialled | undefined,
  exempt: boolean,
): Promise<void> {
  const { ctx, reader, conn, client } = s;
  const counts: ByteCounts = { read: 0, written: 0 };
  const prefix = reader.take();
  const clientSide = readerDuplex(reader, conn, counts);
  let tunnel: InterceptedTunnel | null;
  try {
    tunnel = await ctx.intercept!.intercept({
      host,
      port,
      client,
      hello,
      conn: clientSide,
      prefix,
      signal: ctx.shutdown,
    });
  } catch (e) {
    closeQuietly(dialled?.conn);
    ex.bytesUp = prefix.length + counts.read;
    ex.bytesDown = counts.written;
    ex.error = `TLS interception failed: ${e instanceof Error ? e.message : String(e)}`;
    return;
  }
  if (tunnel === null) {
    // Passthrough after all: relay, starting with the ClientHello already read.
    if (!dialled) {
      try {
        dialled = await ctx.dialer.dial(host, port, exempt);
      } catch (e) {
        // The 200 is out: all that is left is to close. A refusal (destination
        // protection) is recorded as one, as it is before a 200.
        const o = errorOutcome(e);
        if (o.kind === "policy") denyByPolicy(ex, o.message);
        else ex.error = o.message;
        return;
      }
    }
    try {
      await relayTunnel(s, ex, dialled, hello, host, prefix);
    } catch (e) {
      ex.error = `tunnel to ${host}:${port} failed: ${ioErrorText(e)}`;
    } finally {
      closeQuietly(dialled.conn);
    }
    return;
  }
  const inner = new HttpSession(
    ctx,
    tunnel.client,
    new BufferedReader(tunnel.client),
    client,
    {
      host,
      port,
      connectUpstream: (tcp, h, p) => tunnel.connectUpstream(tcp, h, p),
      preconnected: dialled,
    },
  );
  s.setInner(inner);
  try {
    await inner.run();
  } finally {
    s.setInner(undefined);
    closeQuietly(tunnel.client);
    ex.bytesUp = prefix.length + counts.read;
    ex.bytesDown = counts.written;
  }
}

/** The client connection as a Duplex that first yields what `reader` buffered. */
function readerDuplex(reader: BufferedReader, conn: Duplex, counts: ByteCounts): Duplex {
  return {
    async read(p: Uint8Array): Promise<number | null> {
      if (reader.buffered === 0 && !(await reader.fill())) return null;
      const n = Math.min(p.length, reader.buffered);
      p.set(reader.buf.subarray(reader.start, reader.start + n));
      reader.consume(n);
      counts.read += n;
      return n;
    },
    async write(p: Uint8Array): Promise<number> {
      const n = await conn.write(p);
      counts.written += n;
      return n;
    },
    closeWrite: () => conn.closeWrite(),
    close: () => closeQuietly(conn),
  };
}
