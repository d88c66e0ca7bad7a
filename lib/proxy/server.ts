/**
 * The socket shell: accepts connections (within the connection limits), runs
 * a session per connection, and shuts down cleanly.
 *
 * @module
 */

import { DestinationGuard } from "../net/guard.ts";
import { Resolver } from "../net/resolve.ts";
import { ConnectionLimiter, MAX_ANSWERED_REFUSALS, refuseConnection } from "./admission.ts";
import type { Limits, Live, ServerContext } from "./context.ts";
import { closeQuietly } from "./duplex.ts";
import { MemoryReducer } from "./memory.ts";
import { BufferedReader } from "./reader.ts";
import { HttpSession } from "./session.ts";
import type { ProxyOptions, ProxyServer } from "./types.ts";
import { Dialer } from "./upstream.ts";

/** Default timeouts and limits (see {@linkcode ProxyOptions}). */
export const DEFAULTS: Readonly<
  Limits & { shutdownGraceMs: number; maxConnections: number; maxConnectionsPerClient: number }
> = Object.freeze({
  connectTimeoutMs: 10_000,
  headerTimeoutMs: 15_000,
  idleTimeoutMs: 60_000,
  responseTimeoutMs: 60_000,
  bodyIdleTimeoutMs: 60_000,
  tunnelIdleTimeoutMs: 600_000,
  helloTimeoutMs: 10_000,
  maxHeaderBytes: 65536,
  shutdownGraceMs: 5_000,
  maxConnections: 4096,
  maxConnectionsPerClient: 2048,
});

/** After a response that closes the connection, unread client bytes are drained this long. */
const LINGER_MS = 2000;

/**
 * Starts the proxy. Resolves once it listens.
 *
 * @throws {Deno.errors.AddrInUse} and other listen errors.
 */
export function startProxy(options: ProxyOptions): Promise<ProxyServer> {
  const hostname = options.hostname ?? "127.0.0.1";
  const listener = Deno.listen({ hostname, port: options.port ?? 8080, transport: "tcp" });
  const addr = listener.addr as Deno.NetAddr;
  const limits: Limits = {
    connectTimeoutMs: options.connectTimeoutMs ?? DEFAULTS.connectTimeoutMs,
    headerTimeoutMs: options.headerTimeoutMs ?? DEFAULTS.headerTimeoutMs,
    idleTimeoutMs: options.idleTimeoutMs ?? DEFAULTS.idleTimeoutMs,
    responseTimeoutMs: options.responseTimeoutMs ?? DEFAULTS.responseTimeoutMs,
    bodyIdleTimeoutMs: options.bodyIdleTimeoutMs ?? DEFAULTS.bodyIdleTimeoutMs,
    tunnelIdleTimeoutMs: options.tunnelIdleTimeoutMs ?? DEFAULTS.tunnelIdleTimeoutMs,
    helloTimeoutMs: options.helloTimeoutMs ?? DEFAULTS.helloTimeoutMs,
    maxHeaderBytes: options.maxHeaderBytes ?? DEFAULTS.maxHeaderBytes,
  };
  const graceMs = options.shutdownGraceMs ?? DEFAULTS.shutdownGraceMs;
  const maxConnections = Math.max(1, options.maxConnections ?? DEFAULTS.maxConnections);
  const limiter = new ConnectionLimiter(
    maxConnections,
    Math.max(1, options.maxConnectionsPerClient ?? Math.ceil(maxConnections / 2)),
  );
  let refusing = 0;
  const guard = new DestinationGuard({
    enabled: options.protectDestinations ?? true,
    listenAddress: addr.hostname,
    listenPort: addr.port,
  });
  const resolver = new Resolver({ map: options.resolve, nameServer: options.nameServer });
  const dialer = new Dialer({ resolver, guard, connectTimeoutMs: limits.connectTimeoutMs });
  const shutdownController = new AbortController();
  const live = new Set<Live>();
  const running = new Set<Promise<void>>();
  let closing = false;
  const reducer = options.reduceMemory === false ? undefined : new MemoryReducer();
  const record = options.record;

  const ctx: ServerContext = {
    limits,
    decide: options.decide,
    decideTunnel: options.decideTunnel,
    record: reducer
      ? (rec) => {
        reducer.touch();
        record(rec);
      }
      : record,
    dialer,
    intercept: options.intercept,
    shutdown: shutdownController.signal,
    get closing() {
      return closing;
    },
    track(l: Live) {
      live.add(l);
      return () => live.delete(l);
    },
  };

  const serveConn = async (conn: Deno.TcpConn): Promise<void> => {
    // Heads and bodies go out as separate writes: Nagle would hold the
    // second one for a delayed ACK (40 ms).
    try {
      conn.setNoDelay(true);
    } catch {
      // already gone; the session will notice
    }
    reducer?.touch();
    const client = clientAddress(conn.remoteAddr as Deno.NetAddr);
    const reader = new BufferedReader(conn, { maxSize: limits.maxHeaderBytes + 65536 });
    const session = new HttpSession(ctx, conn, reader, client);
    let lingering = false;
    const untrack = ctx.track({
      get idle() {
        return lingering || session.idle;
      },
      get tunnel() {
        return session.tunnel;
      },
      cut: () => session.cut(),
    });
    try {
      await session.run();
      lingering = true;
      if (!reader.eof && !closing) await linger(conn, reader);
    } catch {
      // a session never throws on client behaviour; whatever this was, the
      // connection is done
    } finally {
      untrack();
      closeQuietly(conn);
      reducer?.freed(reader.buf.length);
    }
  };

  const acceptLoop = async (): Promise<void> => {
    while (true) {
      let conn: Deno.TcpConn;
      try {
        conn = await listener.accept();
      } catch (e) {
        if (closing || e instanceof Deno.errors.BadResource) return;
        // Out of file descriptors and the like: back off, keep serving.
        await new Promise((r) => setTimeout(r, 100));
        continue;
      }
      const ra = conn.remoteAddr as Deno.NetAddr;
      const refused = limiter.admit(ra.hostname);
      let p: Promise<void>;
      if (refused === undefined) {
        p = serveConn(conn).finally(() => limiter.release(ra.hostname));
      } else {
        // Answering costs a moment per connection: only a few at once.
        const answer = refusing < MAX_ANSWERED_REFUSALS;
        if (answer) refusing++;
        p = refuseConnection(conn, clientAddress(ra), refused, ctx, answer)
          .finally(() => {
            if (answer) refusing--;
          });
      }
      running.add(p);
      p.finally(() => running.delete(p));
    }
  };

  let resolveFinished!: () => void;
  const finished = new Promise<void>((r) => (resolveFinished = r));
  const accepting = acceptLoop();
  let shutdownPromise: Promise<void> | undefined;
  // A listener that dies on its own ends the server too (and `finished` says so).
  accepting.then(() => {
    if (!closing) shutdown();
  });

  const shutdown = (): Promise<void> => {
    shutdownPromise ??= (async () => {
      closing = true;
      reducer?.stop();
      try {
        listener.close();
      } catch {
        // already closed
      }
      shutdownController.abort();
      await accepting;
      for (const l of live) if (l.idle || l.tunnel) l.cut();
      let timer: ReturnType<typeof setTimeout> | undefined;
      const grace = new Promise<void>((r) => (timer = setTimeout(r, graceMs)));
      // Idle-check again while in-flight exchanges finish.
      const sweep = setInterval(() => {
        for (const l of live) if (l.idle || l.tunnel) l.cut();
      }, 50);
      await Promise.race([Promise.all([...running]), grace]);
      clearInterval(sweep);
      clearTimeout(timer);
      for (const l of live) l.cut();
      await Promise.all([...running]);
      resolveFinished();
    })();
    return shutdownPromise;
  };

  return Promise.resolve({ addr, shutdown, finished });
}

/** `ip:port`, `[v6]:port`. */
function clientAddress(ra: Deno.NetAddr): string {
  return ra.hostname.includes(":") ? `[${ra.hostname}]:${ra.port}` : `${ra.hostname}:${ra.port}`;
}

/**
 * Half-closes and drains what the client still sends for a moment before
 * closing, so a response followed by close is not destroyed by a TCP reset
 * caused by unread request bytes (RFC 9112 9.6).
 */
async function linger(conn: Deno.TcpConn, reader: BufferedReader): Promise<void> {
  try {
    await conn.closeWrite();
  } catch {
    return;
  }
  const deadline = Date.now() + LINGER_MS;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<boolean>((r) => (timer = setTimeout(() => r(false), LINGER_MS)));
  try {
    let drained = 0;
    while (Date.now() < deadline && drained < 1 << 20) {
      reader.consume(reader.buffered);
      const more = await Promise.race([reader.fill().catch(() => false), timeout]);
      if (!more) break;
      drained += reader.buffered;
    }
  } finally {
    clearTimeout(timer);
  }
}
