/**
 * The HTTP/1.1 request loop of one client connection.
 *
 * The same loop serves a plain proxy connection (absolute-form requests,
 * CONNECT) and the decrypted stream of an intercepted tunnel (origin-form
 * requests for the tunnel's host, upstreams reached over TLS). Per request:
 * read and parse the head, check target and Host, decide, then forward with
 * streamed bodies, or answer 4xx/5xx. Every request ends in exactly one
 * record.
 *
 * @module
 */

import {
  type BodyFraming,
  clientKeepAlive,
  fieldLines,
  HeadScanner,
  hopByHop,
  HttpParseError,
  latin1Decode,
  latin1Encode,
  latin1EncodeInto,
  parseRequestHead,
  parseResponseHead,
  quote,
  requestFraming,
  type RequestHead,
  responseContentLength,
  responseFraming,
  type ResponseHead,
  serverKeepAlive,
  upgradeRequested,
} from "../http1/mod.ts";
import { defaultPort, formatAuthority, HostError } from "../net/host.ts";
import { redactCutTarget, redactUrl } from "../log/redact.ts";
import {
  authorityOf,
  formatUrl,
  normalisePath,
  parseAbsoluteForm,
  TargetError,
} from "../net/url.ts";
import type { RequestTarget } from "../rules/types.ts";
import { type BodyOutput, copyBody, relay } from "./body.ts";
import { serveConnect, tunnelIdleError, tunnelWatch } from "./connect.ts";
import { Exchange, type Live, type ServerContext } from "./context.ts";
import { closeQuietly, writeAll } from "./duplex.ts";
import {
  ClientGoneError,
  errorOutcome,
  ioErrorText,
  NotProxyRequestError,
  PolicyError,
  ShutdownError,
  StallError,
  UpstreamError,
  UpstreamTimeoutError,
} from "./errors.ts";
import { IdleWatch } from "./idle.ts";
import { BufferedReader, coarseNow, Deadline, DeadlineError } from "./reader.ts";
import { decisionHeader, proxyResponse } from "./respond.ts";
import type { DecideInput, Duplex, FinalDecision } from "./types.ts";
import { decisionExempts, type Dialled } from "./upstream.ts";

/** The tunnel an intercepted session serves. */
export interface TunnelTarget {
  host: string;
  port: number;
  /** Wraps a dialled TCP connection in verified TLS to the origin. */
  connectUpstream(tcp: Deno.TcpConn, host: string, port: number): Promise<Duplex>;
  /** The connection dialled for the CONNECT itself; used by the first request. */
  preconnected?: Dialled;
}

interface Upstream {
  key: string;
  conn: Duplex;
  reader: BufferedReader;
  exempted: boolean;
  trusted: boolean;
  /** A read on the pooled connection failed: it cannot be reused. */
  broken?: boolean;
}

/** The request body of one exchange, copied in the background. */
interface RequestBody {
  done: boolean;
  failed: unknown;
  /** Body bytes written upstream. */
  bytes: number;
  /** Stamped by the copy; fires when it stalls (see `bodyIdleTimeoutMs`). */
  watch?: IdleWatch;
  /** Why the body stalled, once `watch` fired. */
  stall?: StallError;
  /** The response head arrived: a stall now cuts both connections. */
  responding: boolean;
}

/** The upstream closed a connection without answering (maybe a stale keep-alive one). */
class NoAnswerError extends UpstreamError {}

const ABSOLUTE = /^[a-zA-Z][a-zA-Z0-9+.-]*:\/\//;
/** Error responses to clients that do not read get this long before the connection is cut. */
const ERROR_WRITE_MS = 5000;
/**
 * Interim (1xx) responses passed on per request; more are the upstream's
 * error (502). One request sees one `100 Continue` and perhaps a few `103
 * Early Hints`; an upstream that streams 1xx heads for the whole response
 * timeout made the proxy parse and pass on each (50 MB of them took 18 s of
 * its one thread, 450 times a body's cost per byte).
 */
export const MAX_INTERIM_RESPONSES = 32;

/** Serves HTTP/1.1 requests on one client connection (or decrypted tunnel). */
export class HttpSession implements Live {
  #idle = false;
  #tunnel = false;
  #upstream: Upstream | undefined;
  #relayPeer: Duplex | undefined;
  #inner: HttpSession | undefined;
  readonly #scanner: HeadScanner;
  readonly #resScanner: HeadScanner;

  constructor(
    readonly ctx: ServerContext,
    readonly conn: Duplex,
    readonly reader: BufferedReader,
    readonly client: string,
    readonly tunnelTarget?: TunnelTarget,
  ) {
    this.#scanner = new HeadScanner(ctx.limits.maxHeaderBytes, false);
    this.#resScanner = new HeadScanner(ctx.limits.maxHeaderBytes, true);
  }

  get idle(): boolean {
    return this.#inner ? this.#inner.idle : this.#idle;
  }

  get tunnel(): boolean {
    return this.#tunnel;
  }

  cut(): void {
    this.#inner?.cut();
    closeQuietly(this.conn);
    closeQuietly(this.#upstream?.conn);
    closeQuietly(this.#relayPeer);
  }

  /** Marks the session as a relay to `peer` (closed with it on shutdown). */
  setRelay(peer: Duplex | undefined): void {
    this.#tunnel = peer !== undefined;
    this.#relayPeer = peer;
  }

  /** Sets the session serving an intercepted tunnel on this connection. */
  setInner(inner: HttpSession | undefined): void {
    this.#inner = inner;
  }

  /** Serves requests until the client or a policy ends the connection. */
  async run(): Promise<void> {
    try {
      let first = true;
      while (first || !this.ctx.closing) {
        const head = await this.#readHead(first);
        if (!head) return;
        first = false;
        if (!(await this.#serve(head))) return;
      }
    } finally {
      this.#dropUpstream();
      const pre = this.tunnelTarget?.preconnected;
      if (pre) {
        closeQuietly(pre.conn);
        this.tunnelTarget!.preconnected = undefined;
      }
    }
  }

  // ---------------------------------------------------------------- heads

  async #readHead(first: boolean): Promise<RequestHead | undefined> {
    const { reader, ctx } = this;
    const limits = ctx.limits;
    const scanner = this.#scanner;
    scanner.reset();
    // Until a first byte arrives the connection is idle: a timeout then
    // closes it silently (nothing was asked). A new connection gets the
    // header timeout for that first byte, a kept-alive one the idle timeout.
    let phase: "idle" | "head" = reader.buffered > 0 ? "head" : "idle";
    // The head's own deadline is made only when its bytes do not come in
    // one read (most heads do): it counts from the first byte either way.
    let deadline: Deadline | undefined = phase === "head"
      ? undefined
      : first
      ? new Deadline(limits.headerTimeoutMs, "idle")
      : this.#headDeadline("idle");
    try {
      while (true) {
        if (reader.buffered > 0) {
          if (phase === "idle") {
            deadline?.clear();
            deadline = undefined;
            phase = "head";
          }
          const n = scanner.scan(reader.view());
          if (n >= 0) {
            const head = parseRequestHead(
              reader.buf,
              reader.start + scanner.start,
              reader.start + n,
            );
            reader.consume(n);
            return head;
          }
        }
        if (reader.eof) {
          if (reader.buffered === 0) return undefined;
          if (ctx.closing) return this.#cutByShutdown();
          throw new HttpParseError("connection closed in the middle of a request head");
        }
        this.#idle = phase === "idle";
        if (this.#idle && ctx.closing) return undefined;
        deadline ??= this.#headDeadline(phase);
        await reader.fill(deadline, limits.maxHeaderBytes + 4);
        this.#idle = false;
      }
    } catch (e) {
      this.#idle = false;
      if (e instanceof DeadlineError && phase === "idle") return undefined;
      if (ctx.closing && !(e instanceof HttpParseError)) {
        return phase === "head" && reader.buffered > 0 ? this.#cutByShutdown() : undefined;
      }
      if (!(e instanceof HttpParseError) && !(e instanceof DeadlineError)) {
        // The client reset or closed mid-head: nothing to answer.
        if (reader.buffered === 0) return undefined;
        const ex = this.#malformedExchange();
        ex.error = `client connection failed mid-head: ${ioErrorText(e)}`;
        ex.finish(ctx);
        return undefined;
      }
      const ex = this.#malformedExchange();
      await this.#fail(ex, e, undefined, true);
      ex.finish(ctx);
      return undefined;
    } finally {
      deadline?.clear();
    }
  }

  #headDeadline(phase: "idle" | "head"): Deadline {
    const l = this.ctx.limits;
    return phase === "idle"
      ? new Deadline(l.idleTimeoutMs, "idle")
      : new Deadline(l.headerTimeoutMs, `request head not received within ${l.headerTimeoutMs} ms`);
  }

  /**
   * Records a request whose head had begun to arrive when the proxy stopped
   * (it is one request, answered or not, like a head cut by its client).
   */
  #cutByShutdown(): undefined {
    const ex = this.#malformedExchange();
    ex.reason = "shutting down";
    ex.error = "the proxy stopped before the request head was complete";
    ex.finish(this.ctx);
    return undefined;
  }

  /** An exchange for a head that could not be parsed, with what can be read of its request line. */
  #malformedExchange(): Exchange {
    const ex = new Exchange(this.client);
    const view = this.reader.view();
    const m = requestLineStart(view);
    if (m) {
      ex.method = m.method;
      ex.url = printable(m.target, m.cut);
    }
    return ex;
  }

  // ------------------------------------------------------------ requests

  async #serve(head: RequestHead): Promise<boolean> {
    const ex = new Exchange(this.client);
    ex.method = head.method;
    ex.url = printable(head.target);
    try {
      return await this.#handle(head, ex);
    } catch (e) {
      await this.#fail(ex, e, head, true);
      return false;
    } finally {
      ex.finish(this.ctx);
    }
  }

  async #handle(head: RequestHead, ex: Exchange): Promise<boolean> {
    const tt = this.tunnelTarget;
    let target: RequestTarget & { path: string };
    if (!tt) {
      if (head.method === "CONNECT") {
        await serveConnect(this, head, ex);
        return false;
      }
      if (!ABSOLUTE.test(head.target)) throw new NotProxyRequestError(head.target);
      const abs = parseAbsoluteForm(head.target);
      if (abs.scheme !== "http") {
        throw new TargetError("https:// URLs must be requested through a CONNECT tunnel");
      }
      target = abs;
    } else {
      // Known before the request is refused, so its record still names it.
      ex.host = tt.host;
      if (head.method === "CONNECT") throw new HttpParseError("CONNECT inside a tunnel");
      if (head.target.startsWith("/")) {
        target = {
          scheme: "https",
          host: tt.host,
          port: tt.port,
          path: normalisePath(head.target),
        };
      } else if (ABSOLUTE.test(head.target)) {
        const abs = parseAbsoluteForm(head.target);
        if (abs.scheme !== "https" || abs.host !== tt.host || abs.port !== tt.port) {
          throw new PolicyError(
            `request for ${formatUrl(abs.scheme, abs.host, abs.port, "")} inside the tunnel to ` +
              `${formatAuthority(tt.host, tt.port)}`,
          );
        }
        target = abs;
      } else {
        throw new TargetError(`invalid request target ${quote(head.target)}`);
      }
    }
    ex.host = target.host;
    const url = formatUrl(target.scheme, target.host, target.port, target.path);
    ex.url = url;
    checkHostHeader(head, target.scheme, target.host, target.port, true, tt ? "tunnel" : "URL");
    const framing = requestFraming(head);
    // A WebSocket handshake has no body: an Upgrade with one is forwarded as
    // a plain request (closed after its answer, see upstreamRequestHead).
    const upgrade = carriesBody(framing) ? undefined : websocketUpgrade(head);

    const decision = await this.decide(head, target, url);
    ex.decided(decision);
    // After an Upgrade request a client may already send the new protocol's
    // bytes: unless the upgrade happens, the connection cannot carry another
    // HTTP request.
    const upgradeAsked = upgradeRequested(head) !== undefined;
    if (decision.action === "deny") {
      const keep = framing.kind === "none" && clientKeepAlive(head) && !this.ctx.closing &&
        !upgradeAsked;
      await this.deny(ex, head, target.host, decision, !keep);
      return keep;
    }
    return await this.#forward(head, target, framing, upgrade, decision, ex, upgradeAsked);
  }

  /**
   * Asks the decider. Its signal aborts when the client goes away (noticed
   * by a read started here; its bytes stay buffered) or the proxy shuts down.
   * A decider that fails denies (fail closed).
   *
   * @throws {ClientGoneError} or {ShutdownError} when aborted before an answer.
   */
  async decide(
    head: RequestHead,
    target: RequestTarget,
    url: string | undefined,
    decider: ServerContext["decide"] = this.ctx.decide,
  ): Promise<FinalDecision> {
    const ctx = this.ctx;
    if (ctx.shutdown.aborted) throw new ShutdownError();
    const ac = new AbortController();
    const onShutdown = () => ac.abort(new ShutdownError());
    ctx.shutdown.addEventListener("abort", onShutdown);
    let settled = false;
    const gone = () => {
      if (!settled) {
        ac.abort(new ClientGoneError("the client went away while waiting for a decision"));
      }
    };
    if (!this.reader.eof) {
      try {
        // Only a failed read means the client is gone. An end of stream may
        // be a half-close (shutdown(SHUT_WR)) after a complete request, and
        // such a client still reads the response; the session ends after it.
        this.reader.watch().then(undefined, gone);
      } catch {
        // buffer full of pipelined bytes: nothing to watch
      }
    }
    const input: DecideInput = { target, method: head.method, client: this.client };
    if (url !== undefined) input.url = url;
    try {
      const d = await decider(input, ac.signal);
      // Aborted meanwhile (shutdown, client gone): whatever the decider
      // answered, the request ends here.
      if (ac.signal.aborted) throw ac.signal.reason;
      if (!d || (d.action !== "allow" && d.action !== "deny")) {
        return { action: "deny", source: "error", reason: "decider returned no valid decision" };
      }
      return d;
    } catch (e) {
      if (ac.signal.aborted) throw ac.signal.reason;
      const msg = e instanceof Error ? e.message : String(e);
      return { action: "deny", source: "error", reason: `decision failed: ${msg}` };
    } finally {
      settled = true;
      ctx.shutdown.removeEventListener("abort", onShutdown);
    }
  }

  /** Answers a denied request with 403 and `X-Netmonitor-Decision`. */
  async deny(
    ex: Exchange,
    head: RequestHead,
    host: string,
    decision: FinalDecision,
    close: boolean,
  ): Promise<void> {
    ex.status = 403;
    const what = head.method === "CONNECT" ? `CONNECT ${ex.url}` : `${head.method} ${ex.url}`;
    const body = `netmonitor denied ${what}\nhost: ${host}\nreason: ${decision.reason}\n`;
    const r = proxyResponse(403, body, {
      close,
      decision: decisionHeader("deny", decision.reason),
      head: head.method === "HEAD",
    });
    await this.#writeError(ex, r.bytes, r.bodyLength);
  }

  /**
   * Answers an error (see `errorOutcome`) and fills the record. Policy
   * refusals are logged as deny/policy; malformed requests as error/error;
   * upstream failures keep the decision and set `error`.
   */
  async fail(
    ex: Exchange,
    e: unknown,
    head: RequestHead | undefined,
    close: boolean,
  ): Promise<void> {
    await this.#fail(ex, e, head, close);
  }

  async #fail(
    ex: Exchange,
    e: unknown,
    head: RequestHead | undefined,
    close: boolean,
  ): Promise<void> {
    if (e instanceof ClientGoneError) {
      ex.status = 0;
      ex.reason ||= e.message;
      ex.error = e.message;
      return;
    }
    const o = errorOutcome(e);
    ex.status = o.status;
    let decision: string | undefined;
    if (o.kind === "policy") {
      ex.decision = "deny";
      ex.source = "policy";
      ex.reason = o.message;
      decision = decisionHeader("deny", o.message);
    } else {
      if (o.kind === "client" || ex.reason === "") {
        ex.decision = o.kind === "client" ? "error" : ex.decision;
        ex.source = o.kind === "client" ? "error" : ex.source;
        ex.reason = o.kind === "client" ? clientErrorReason(o.status) : o.message;
      }
      ex.error = o.message;
    }
    const body = o.kind === "policy"
      ? `netmonitor denied ${
        head?.method ?? "request"
      } ${ex.url}\nhost: ${ex.host}\nreason: ${o.message}\n`
      : `netmonitor: ${o.message}\n`;
    const r = proxyResponse(o.status, body, { close, decision, head: head?.method === "HEAD" });
    await this.#writeError(ex, r.bytes, r.bodyLength);
  }

  /**
   * Writes relayed bytes (a response head, with a small body) to the client.
   * A client that reads none of them for the body idle timeout is cut, with
   * `alsoClose` (the upstream it holds): a small response fits in the socket
   * buffers, but pipelined requests fill them, and without a watch such a
   * client held both connections for ever.
   *
   * @throws {StallError} when the client was cut for not reading.
   */
  async #writeWatched(bytes: Uint8Array, what: string, alsoClose: Duplex): Promise<void> {
    let stall: StallError | undefined;
    const watch = new IdleWatch(this.ctx.limits.bodyIdleTimeoutMs, (w) => {
      stall = new StallError(`the client read no ${what} bytes for ${w.ms} ms`, "client");
      closeQuietly(alsoClose);
      closeQuietly(this.conn);
    });
    watch.waiting = "write";
    try {
      await writeAll(this.conn, bytes);
    } catch (e) {
      throw stall ?? e;
    } finally {
      watch.stop();
    }
  }

  /** Writes a response the proxy made itself; a client that does not read is cut. */
  async #writeError(ex: Exchange, bytes: Uint8Array, bodyLength: number): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      await Promise.race([
        writeAll(this.conn, bytes),
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Error("client does not read")), ERROR_WRITE_MS);
        }),
      ]);
      ex.bytesDown = bodyLength;
    } catch (e) {
      ex.error ??= `could not send the ${ex.status} response: ${ioErrorText(e)}`;
      closeQuietly(this.conn);
    } finally {
      clearTimeout(timer);
    }
  }

  // ----------------------------------------------------------- forwarding

  async #forward(
    head: RequestHead,
    target: RequestTarget & { path: string },
    framing: BodyFraming,
    upgrade: string | undefined,
    decision: FinalDecision,
    ex: Exchange,
    upgradeAsked: boolean,
  ): Promise<boolean> {
    const body: RequestBody = {
      done: framing.kind === "none",
      failed: undefined,
      bytes: 0,
      responding: false,
    };
    try {
      return await this.#exchange(head, target, framing, upgrade, decision, ex, upgradeAsked, body);
    } finally {
      body.watch?.stop();
    }
  }

  async #exchange(
    head: RequestHead,
    target: RequestTarget & { path: string },
    framing: BodyFraming,
    upgrade: string | undefined,
    decision: FinalDecision,
    ex: Exchange,
    upgradeAsked: boolean,
    body: RequestBody,
  ): Promise<boolean> {
    const exempt = decisionExempts(decision, target.host);
    const key = `${target.host}:${target.port}`;
    const requestHead = upstreamRequestHead(head, target, framing, upgrade);
    let up: Upstream;
    let res: ResponseHead;
    while (true) {
      const pooled = this.#takeUpstream(key, exempt);
      try {
        up = pooled ?? (await this.#connect(target, exempt));
      } catch (e) {
        // Nothing was sent upstream; without a body to skip, the client
        // connection can carry on.
        const keep = framing.kind === "none" && clientKeepAlive(head) && !this.ctx.closing &&
          !upgradeAsked;
        await this.#fail(ex, e, head, !keep);
        return keep;
      }
      try {
        await writeAll(up.conn, requestHead);
      } catch (e) {
        closeQuietly(up.conn);
        if (pooled && retryable(head, framing)) continue;
        throw new UpstreamError(`sending the request to ${key} failed: ${ioErrorText(e)}`);
      }
      if (framing.kind !== "none") {
        const u = up;
        const watch = this.#requestBodyWatch(body, u, key, framing);
        body.watch = watch;
        copyBody(this.reader, u.conn, framing, "same", false, (n) => (body.bytes += n), watch)
          .then(() => {
            body.done = true;
          }, (e) => {
            body.failed = e;
            // A bad or truncated request body: stop the exchange.
            if (e?.side === "source") closeQuietly(u.conn);
          })
          .finally(() => watch.stop());
      }
      try {
        res = await this.#readResponseHead(up, head, key, body);
        body.responding = true;
        break;
      } catch (e) {
        closeQuietly(up.conn);
        // A kept-alive connection the upstream closed meanwhile: the request
        // may not have been seen, or may have been and its answer lost. Only a
        // request that is safe to repeat is sent again (RFC 9110 9.2.2).
        if (e instanceof NoAnswerError && pooled && retryable(head, framing)) continue;
        // A failing or stalled request body closes the upstream first, so
        // `body.stall`/`body.failed` is already set when that is why the
        // response could not be read.
        ex.bytesUp = body.bytes;
        if (body.stall) throw body.stall;
        const f = body.failed as { side?: string; cause?: unknown; message?: string } | undefined;
        if (f?.side === "source") {
          if (f.cause instanceof HttpParseError) throw f.cause;
          throw new ClientGoneError(`the client stopped sending the request body: ${f.message}`);
        }
        throw e;
      }
    }

    let resFraming: BodyFraming;
    try {
      resFraming = responseFraming(res, head.method);
    } catch (e) {
      closeQuietly(up.conn);
      throw e;
    }
    if (res.status === 101) {
      if (upgrade === undefined) {
        closeQuietly(up.conn);
        throw new UpstreamError(`${key} switched protocols without being asked to`);
      }
      // Only a real WebSocket handshake opens the relay: a 101 from a server
      // that did not switch (one that reflects a status, say) would give the
      // client a raw pipe to its HTTP parser, for requests nobody decided.
      const bad = await badWebSocketHandshake(head, res);
      if (bad !== undefined) {
        closeQuietly(up.conn);
        throw new UpstreamError(`${key} answered 101 without a valid WebSocket handshake: ${bad}`);
      }
      await this.#relayUpgrade(head, res, up, ex);
      return false;
    }

    const minor = head.minor;
    let output: BodyOutput = "same";
    let closeClient = !clientKeepAlive(head) || this.ctx.closing || !body.done || upgradeAsked;
    if (resFraming.kind === "close") closeClient = true;
    if (resFraming.kind === "chunked") {
      if (minor === 1) {
        output = "chunked";
      } else {
        output = "raw";
        closeClient = true;
      }
    }
    ex.status = res.status;
    const text = clientResponseHead(res, resFraming, minor, closeClient, head.method);
    // A small body that already arrived with the head goes out in the same
    // write: one syscall per response on the hot path.
    const r = up.reader;
    let inline = 0;
    if (
      resFraming.kind === "length" && resFraming.length <= 16384 && r.buffered >= resFraming.length
    ) {
      inline = resFraming.length;
    }
    const out = new Uint8Array(text.length + inline);
    latin1EncodeInto(text, out, 0);
    if (inline > 0) out.set(r.buf.subarray(r.start, r.start + inline), text.length);
    try {
      await this.#writeWatched(out, "response head", up.conn);
    } catch (e) {
      closeQuietly(up.conn);
      ex.error = e instanceof StallError
        ? e.message
        : `client went away before the response: ${ioErrorText(e)}`;
      return false;
    }
    let resStall: string | undefined;
    let resWatch: IdleWatch | undefined;
    try {
      if (inline > 0) {
        r.consume(inline);
        ex.bytesDown += inline;
      } else if (resFraming.kind !== "none") {
        const u = up;
        resWatch = new IdleWatch(this.ctx.limits.bodyIdleTimeoutMs, (w) => {
          resStall = w.waiting === "read"
            ? `${key} sent no response body bytes for ${w.ms} ms (after ${ex.bytesDown} bytes)`
            : `the client read no response body bytes for ${w.ms} ms (after ${ex.bytesDown} bytes)`;
          closeQuietly(u.conn);
          closeQuietly(this.conn);
        });
        await copyBody(
          r,
          this.conn,
          resFraming,
          output,
          true,
          (n) => (ex.bytesDown += n),
          resWatch,
        );
      }
    } catch (e) {
      closeQuietly(up.conn);
      const be = e as { side?: string; message?: string; cause?: unknown };
      ex.error = resStall ?? body.stall?.message ??
        (be.side === "source"
          ? `response body from ${key} failed: ${be.cause ? ioErrorText(be.cause) : be.message}`
          : `client went away during the response: ${ioErrorText(be.cause ?? e)}`);
      ex.bytesUp = body.bytes;
      return false;
    } finally {
      resWatch?.stop();
    }
    ex.bytesUp = body.bytes;
    if (!body.done) {
      // The response ended before the request body: the upstream did not
      // want it. Neither connection can carry another request.
      closeQuietly(up.conn);
      return false;
    }
    // Bytes after the end of the response (a misframed or hostile origin)
    // would be read as the next response: such a connection is not reused.
    // Nor is one that carried a request body: an origin that ignores a body
    // (a GET's, say) reads it as a request of its own, one nobody decided,
    // and its answer may come late enough to be taken for the next one's.
    const reusable = serverKeepAlive(res) && resFraming.kind !== "close" && !body.failed &&
      !carriesBody(framing) && up.reader.buffered === 0 && !up.reader.eof && !this.ctx.closing;
    if (reusable) this.#pool(up);
    else closeQuietly(up.conn);
    if (closeClient) await this.#endWrite();
    return !closeClient;
  }

  /**
   * Ends the client connection's write side after a complete response that
   * closes it. In a decrypted tunnel that sends TLS close_notify: a body that
   * ends with the connection (no length) is complete only with it, and a
   * connection merely dropped is how a truncated body ends (which is what the
   * client gets when the origin's body was cut short). A client that does not
   * take it within `ERROR_WRITE_MS` is cut.
   */
  async #endWrite(): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      await Promise.race([
        this.conn.closeWrite(),
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Error("client does not read")), ERROR_WRITE_MS);
        }),
      ]);
    } catch {
      closeQuietly(this.conn);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * The idle watch of a request body being copied upstream. When it fires
   * the upstream connection is closed, which ends the wait for the response
   * head (answered 408 or 504 with `body.stall`); once the response started,
   * the client connection is cut too.
   */
  #requestBodyWatch(body: RequestBody, u: Upstream, key: string, framing: BodyFraming): IdleWatch {
    return new IdleWatch(this.ctx.limits.bodyIdleTimeoutMs, (w) => {
      const of = framing.kind === "length" ? ` of ${framing.length}` : "";
      body.stall = w.waiting === "read"
        ? new StallError(
          `the client sent no request body bytes for ${w.ms} ms (after ${body.bytes}${of} bytes)`,
          "client",
        )
        : new StallError(
          `${key} accepted no request body bytes for ${w.ms} ms (after ${body.bytes}${of} bytes)`,
          "upstream",
        );
      closeQuietly(u.conn);
      if (body.responding) closeQuietly(this.conn);
    });
  }

  /**
   * Waits for the upstream's response head. The upstream gets
   * `responseTimeoutMs` from the last request byte it was sent: a request
   * body still streaming up keeps the wait going (its own stalls are the
   * body idle timeout's business).
   */
  async #readResponseHead(
    up: Upstream,
    head: RequestHead,
    key: string,
    body: RequestBody,
  ): Promise<ResponseHead> {
    const ms = this.ctx.limits.responseTimeoutMs;
    const message = `${key} did not answer within ${ms} ms`;
    let since = coarseNow();
    let deadline = new Deadline(ms, message);
    const scanner = this.#resScanner;
    const r = up.reader;
    let interims = 0;
    try {
      while (true) {
        scanner.reset();
        let got = r.buffered > 0;
        let res: ResponseHead | undefined;
        while (!res) {
          if (r.buffered > 0) {
            const n = scanner.scan(r.view());
            if (n >= 0) {
              res = parseResponseHead(r.buf, r.start + scanner.start, r.start + n);
              r.consume(n);
              break;
            }
          }
          let more: boolean;
          try {
            while (true) {
              try {
                more = await r.fill(deadline, this.ctx.limits.maxHeaderBytes + 4);
                break;
              } catch (e) {
                const w = body.watch;
                if (!(e instanceof DeadlineError) || !w || w.last <= since) throw e;
                // Request body bytes went up meanwhile: count from the last one.
                since = w.last;
                deadline.clear();
                deadline = new Deadline(since + ms - coarseNow(), message);
              }
            }
          } catch (e) {
            if (e instanceof DeadlineError) {
              // A request body that stalled as long as its idle timeout is
              // what is late, not the answer.
              if (body.watch && !body.done && body.watch.poll() && body.stall) throw body.stall;
              const incomplete = body.done
                ? ""
                : ` (the request body was incomplete: ${body.bytes} bytes sent)`;
              throw new UpstreamTimeoutError(e.message + incomplete);
            }
            if (!got) throw new NoAnswerError(`${key} closed the connection without answering`);
            throw new UpstreamError(`reading the response from ${key} failed: ${ioErrorText(e)}`);
          }
          if (!more) {
            if (!got) throw new NoAnswerError(`${key} closed the connection without answering`);
            throw new UpstreamError(
              `${key} closed the connection in the middle of the response head`,
            );
          }
          got = true;
        }
        if (res.status >= 200 || res.status === 101) return res;
        if (++interims > MAX_INTERIM_RESPONSES) {
          throw new UpstreamError(
            `${key} sent more than ${MAX_INTERIM_RESPONSES} interim (1xx) responses`,
          );
        }
        // 100 Continue, 103 Early Hints: pass on to HTTP/1.1 clients.
        if (head.minor === 1) {
          const interim = `HTTP/1.1 ${res.status} ${res.reason}\r\n` +
            fieldLines(res.headers, hopByHop(res.headers, false)) + "\r\n";
          // A client that does not take it is cut; the response write then fails.
          await this.#writeWatched(latin1Encode(interim), "interim response", up.conn).catch(
            () => {},
          );
        }
      }
    } finally {
      deadline.clear();
    }
  }

  async #relayUpgrade(
    head: RequestHead,
    res: ResponseHead,
    up: Upstream,
    ex: Exchange,
  ): Promise<void> {
    ex.status = 101;
    const s = `HTTP/1.1 101 ${res.reason}\r\n` +
      fieldLines(res.headers, hopByHop(res.headers, false)) +
      `Connection: Upgrade\r\nUpgrade: ${
        res.headers.get("upgrade") ?? head.headers.get("upgrade")
      }\r\n\r\n`;
    try {
      await this.#writeWatched(latin1Encode(s), "101 response", up.conn);
    } catch (e) {
      closeQuietly(up.conn);
      ex.error = e instanceof StallError
        ? e.message
        : `client went away before the upgrade: ${ioErrorText(e)}`;
      return;
    }
    const counts = { up: 0, down: 0 };
    const watch = tunnelWatch(this, up.conn);
    this.setRelay(up.conn);
    try {
      await relay(this.reader, this.conn, up.reader, up.conn, counts, watch);
    } finally {
      watch.stop();
      this.setRelay(undefined);
      closeQuietly(up.conn);
      ex.bytesUp = counts.up;
      ex.bytesDown = counts.down;
      if (watch.fired) ex.error = tunnelIdleError(watch.ms);
    }
  }

  /**
   * Keeps `up` for the next request, with a read pending on it: anything the
   * upstream sends while the connection is idle (bytes nobody asked for, a
   * close, a reset) is noticed, and such a connection is never reused (its
   * bytes would be taken for the next response).
   */
  #pool(up: Upstream): void {
    this.#upstream = up;
    up.broken = false;
    let watching: Promise<boolean>;
    try {
      watching = up.reader.watch();
    } catch {
      this.#dropUpstream();
      return;
    }
    watching.then((more) => {
      // Still idle in the pool: drop it now (bytes or end of stream).
      if (this.#upstream === up && (more || up.reader.eof)) this.#dropUpstream();
    }, () => {
      up.broken = true;
      if (this.#upstream === up) this.#dropUpstream();
    });
  }

  #takeUpstream(key: string, exempt: boolean): Upstream | undefined {
    const up = this.#upstream;
    this.#upstream = undefined;
    if (!up) return undefined;
    if (
      up.key !== key || (up.exempted && !exempt && !up.trusted) ||
      up.reader.buffered > 0 || up.reader.eof || up.broken
    ) {
      closeQuietly(up.conn);
      return undefined;
    }
    return up;
  }

  #dropUpstream(): void {
    closeQuietly(this.#upstream?.conn);
    this.#upstream = undefined;
  }

  async #connect(target: RequestTarget, exempt: boolean): Promise<Upstream> {
    const tt = this.tunnelTarget;
    const key = `${target.host}:${target.port}`;
    let d: Dialled | undefined = tt?.preconnected;
    if (d) {
      tt!.preconnected = undefined;
      if (d.exempted && !exempt && !d.trusted) {
        closeQuietly(d.conn);
        d = undefined;
      }
    }
    d ??= await this.ctx.dialer.dial(target.host, target.port, exempt);
    let conn: Duplex = d.conn;
    if (tt) {
      try {
        conn = await tt.connectUpstream(d.conn, target.host, target.port);
      } catch (e) {
        closeQuietly(d.conn);
        const msg = e instanceof Error ? e.message : String(e);
        throw new UpstreamError(`TLS to ${key} failed: ${msg}`);
      }
    }
    return {
      key,
      conn,
      reader: new BufferedReader(conn, { maxSize: this.ctx.limits.maxHeaderBytes + 65536 }),
      exempted: d.exempted,
      trusted: d.trusted,
    };
  }
}

/**
 * Checks that the Host header agrees with the request's target. Missing is
 * an error only for HTTP/1.1 requests when `required`.
 *
 * @throws {HttpParseError} 400 on a missing, repeated or malformed Host;
 *   {PolicyError} when it names another host or port.
 */
export function checkHostHeader(
  head: RequestHead,
  scheme: string,
  host: string,
  port: number,
  required: boolean,
  what: string,
): void {
  const values = head.headers.getAll("host");
  if (values.length > 1) throw new HttpParseError("more than one Host header");
  if (values.length === 0) {
    if (required && head.minor === 1) throw new HttpParseError("missing Host header");
    return;
  }
  let a: { host: string; port: number };
  try {
    // A CONNECT's Host without a port means the CONNECT port (clients differ).
    a = authorityOf(values[0], what === "CONNECT" ? port : defaultPort(scheme));
  } catch (e) {
    const why = e instanceof HostError ? e.message : "invalid";
    throw new HttpParseError(`invalid Host header ${quote(values[0])}: ${why}`);
  }
  if (a.host !== host || a.port !== port) {
    throw new PolicyError(
      `Host header ${quote(values[0])} does not match the ${what} host ${
        formatAuthority(host, port, what === "CONNECT" ? undefined : scheme)
      }`,
    );
  }
}

function upstreamRequestHead(
  head: RequestHead,
  target: RequestTarget & { path: string },
  framing: BodyFraming,
  upgrade: string | undefined,
): Uint8Array {
  let s = `${head.method} ${target.path} HTTP/1.1\r\nHost: ${
    formatAuthority(target.host, target.port, target.scheme)
  }\r\n`;
  s += fieldLines(head.headers, hopByHop(head.headers, true));
  if (framing.kind === "length") s += `Content-Length: ${framing.length}\r\n`;
  else if (framing.kind === "chunked") s += "Transfer-Encoding: chunked\r\n";
  if (upgrade !== undefined) s += `Connection: Upgrade\r\nUpgrade: ${upgrade}\r\n`;
  // A connection that carried a body is never reused, and the server must
  // not read anything after it either: one that ignores the body (a GET's,
  // a 405 or 417 answered without reading it) would read the body as a
  // request of its own, one nobody decided ("CL.0" smuggling).
  else if (carriesBody(framing)) s += "Connection: close\r\n";
  return latin1Encode(s + "\r\n");
}

/** The response head for the client, as text (Latin-1). */
function clientResponseHead(
  res: ResponseHead,
  framing: BodyFraming,
  minor: 0 | 1,
  close: boolean,
  method: string,
): string {
  let s = `HTTP/1.${minor} ${res.status} ${res.reason}\r\n`;
  s += fieldLines(res.headers, hopByHop(res.headers, false));
  if (framing.kind === "length") {
    s += `Content-Length: ${framing.length}\r\n`;
  } else if (framing.kind === "chunked") {
    if (minor === 1) s += "Transfer-Encoding: chunked\r\n";
  } else if (framing.kind === "none" && (method === "HEAD" || res.status === 304)) {
    // The length the body would have had: pass it on.
    try {
      const n = responseContentLength(res.headers);
      if (n !== undefined) s += `Content-Length: ${n}\r\n`;
    } catch {
      // a bad value is dropped
    }
  }
  if (close) s += "Connection: close\r\n";
  else if (minor === 0) s += "Connection: keep-alive\r\n";
  return s + "\r\n";
}

/**
 * The Upgrade value to forward: WebSocket only. Any other protocol (h2c
 * above all) would let the client speak a protocol we cannot see after the
 * 101, sending requests that were never decided ("h2c smuggling"); such a
 * request is forwarded as a plain request, its Upgrade dropped.
 */
function websocketUpgrade(head: RequestHead): string | undefined {
  const up = upgradeRequested(head);
  return up !== undefined && up.trim().toLowerCase() === "websocket" ? up.trim() : undefined;
}

/** RFC 6455 4.2.2: the value the server hashes with the client's key. */
const WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/**
 * Why a 101 answer to a WebSocket upgrade is not the server's side of a
 * WebSocket handshake (RFC 6455 4.1: `Upgrade: websocket` and the
 * `Sec-WebSocket-Accept` its key asks for), or undefined when it is.
 */
async function badWebSocketHandshake(
  head: RequestHead,
  res: ResponseHead,
): Promise<string | undefined> {
  const up = res.headers.getAll("upgrade");
  if (up.length !== 1 || up[0].trim().toLowerCase() !== "websocket") {
    return `Upgrade ${quote(up.join(", "))}`;
  }
  const keys = head.headers.getAll("sec-websocket-key");
  if (keys.length !== 1) return "the request had no single Sec-WebSocket-Key";
  const digest = await crypto.subtle.digest(
    "SHA-1",
    new TextEncoder().encode(keys[0].trim() + WEBSOCKET_GUID),
  );
  const expected = btoa(String.fromCharCode(...new Uint8Array(digest)));
  const accept = res.headers.getAll("sec-websocket-accept");
  if (accept.length !== 1 || accept[0].trim() !== expected) {
    return `Sec-WebSocket-Accept ${quote(accept.join(", "))}, expected ${expected}`;
  }
  return undefined;
}

function carriesBody(framing: BodyFraming): boolean {
  return framing.kind === "chunked" || (framing.kind === "length" && framing.length > 0);
}

/** Methods whose repetition has the effect of one request (RFC 9110 9.2.2). */
const IDEMPOTENT = new Set(["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"]);

/**
 * True when a request that got no answer on a reused connection may be sent
 * again on a new one: an idempotent method without a body (a body was
 * consumed from the client and cannot be replayed).
 */
function retryable(head: RequestHead, framing: BodyFraming): boolean {
  return framing.kind === "none" && IDEMPOTENT.has(head.method);
}

function clientErrorReason(status: number): string {
  switch (status) {
    case 408:
      return "request head timeout";
    case 414:
      return "request target too long";
    case 431:
      return "request head too large";
    case 501:
      return "unsupported request";
    default:
      return "malformed request";
  }
}

/**
 * The method and target at the start of a request head that may be cut short
 * or malformed; `cut` when the target runs to the end of what arrived.
 */
export function requestLineStart(
  bytes: Uint8Array,
): { method: string; target: string; cut: boolean } | undefined {
  const lf = bytes.indexOf(10);
  const line = latin1Decode(bytes, 0, lf < 0 ? bytes.length : lf);
  const m = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]{1,20}) (\S+)/.exec(line);
  if (!m) return undefined;
  // A target followed by more than its HTTP version was split by a raw space
  // (`http://user:pa ss@h/`): its own end is not known either.
  const rest = line.slice(m[0].length);
  const split = !/^(?: +HTTP\/\S*)?[ \r]*$/.test(rest);
  return { method: m[1], target: m[2], cut: split || (lf < 0 && m[0].length === line.length) };
}

/**
 * A request target made safe for a record (printable ASCII, bounded). Before
 * it is shortened its secrets are redacted, so that the cut cannot keep the
 * start of one (`http://user:pass` without its `@`); `cut` says the target's
 * own end never arrived (see {@linkcode redactCutTarget}).
 */
export function printable(s: string, cut = false): string {
  const safe = cut ? redactCutTarget(s) : s.length > 2000 ? redactUrl(s) : s;
  const short = safe.length > 2000 ? safe.slice(0, 2000) : safe;
  return short.replace(/[^\x21-\x7e]/g, (c) => "%" + c.charCodeAt(0).toString(16).padStart(2, "0"));
}
