/**
 * The control socket: a Unix domain socket in the data dir through which
 * `netmonitor prompt` (in another terminal) answers pending requests.
 *
 * Each connected client is a prompter attached to the broker: it is sent the
 * prompt being shown, and its answer competes with every other prompter's
 * (first answer wins). Access control is the file system's: the data dir is
 * 0700 and the socket 0600, so only the owner can connect. Protocol: see
 * `protocol.ts`.
 *
 * @module
 */

import { withFileLock } from "../file_lock.ts";
import type { BrokerEvent } from "./broker.ts";
import {
  type ClientMessage,
  encodeMessage,
  type HelloMessage,
  LineSplitter,
  LineTooLongError,
  MAX_CLIENT_LINE,
  MAX_SERVER_LINE,
  parseClientMessage,
  parseServerMessage,
  type PromptingState,
  PROTOCOL_VERSION,
  ProtocolError,
  type ServerMessage,
} from "./protocol.ts";
import {
  answerAvailable,
  type NamedPrompter,
  type PendingRequest,
  type PromptAnswer,
  type PromptOutcome,
} from "./types.ts";

/** The part of the broker the control server needs (satisfied by `DecisionBroker`). */
export interface ControlBroker {
  addPrompter(p: NamedPrompter): () => void;
  subscribe(listener: (e: BrokerEvent) => void): () => void;
}

/**
 * The control socket cannot be used (path too long, not a socket, Windows).
 * `userFacing`: the CLI prints the message without a stack trace.
 */
export class ControlSocketError extends Error {
  override name = "ControlSocketError";
  readonly userFacing = true;
}

/** Another live proxy owns the control socket. */
export class ControlSocketBusyError extends ControlSocketError {
  override name = "ControlSocketBusyError";
}

/** Options for {@linkcode startControlServer}. */
export interface ControlServerOptions {
  /** Longest client line in bytes; a longer one closes that client. Default 64 KiB. */
  maxLineBytes?: number;
  /** Most clients connected at once; more are refused with an error message. Default 32. */
  maxClients?: number;
  /**
   * What each client's hello says about the proxy (`netmonitor status` shows
   * it): where it listens, once it does, and whether it prompts at all.
   * Default: nothing.
   */
  describe?: () => ProxyDescription;
  /**
   * Whether clients are shown prompts (registered with the broker). False
   * for a socket that only says who the proxy is. Default true.
   */
  prompters?: boolean;
  /**
   * Claim the socket under `<socketPath>.lock`, so that proxies starting
   * together cannot both take it (one removing, as stale, the socket the other
   * has just bound). Default true; false for a socket named after this
   * process, which no other proxy claims.
   */
  lock?: boolean;
}

/** The proxy as the control socket's hello describes it. */
export interface ProxyDescription {
  /** `ADDR:PORT` the proxy listens on (IPv6 in brackets), once it does. */
  listen?: string;
  /** False when the proxy answers by itself (`--non-interactive`). */
  prompts?: boolean;
  /** Who answers its prompts right now (asked again for each client). */
  prompting?: PromptingState;
}

/** A running control socket. */
export interface ControlServer {
  readonly path: string;
  /** Number of connected clients. */
  readonly clients: number;
  /** Stops accepting, disconnects every client and removes the socket file. */
  close(): Promise<void>;
}

/** Most bytes queued for a client that does not read before it is dropped. */
const MAX_QUEUED_BYTES = 4 * 1024 * 1024;

/** Longest Unix socket path (sun_path is 108 bytes with its NUL on Linux, 104 on macOS). */
const MAX_SOCKET_PATH = Deno.build.os === "linux" ? 107 : 103;

/** Throws a clear error for a socket path the OS cannot use. */
function checkSocketPath(path: string): void {
  if (Deno.build.os === "windows") {
    throw new ControlSocketError(
      "The control socket (netmonitor prompt) is not supported on Windows",
    );
  }
  const bytes = new TextEncoder().encode(path).length;
  if (bytes > MAX_SOCKET_PATH) {
    throw new ControlSocketError(
      `Control socket path "${path}" is ${bytes} bytes, over the ${MAX_SOCKET_PATH}-byte ` +
        `limit of Unix sockets: use a shorter --data-dir`,
    );
  }
}

function dirname(path: string): string {
  const i = path.lastIndexOf("/");
  return i <= 0 ? (i === 0 ? "/" : ".") : path.slice(0, i);
}

/**
 * Starts the control socket at `socketPath` (normally `<data-dir>/netmonitor.sock`).
 * Creates the directory (mode 0700, tightened if looser), removes a stale
 * socket left by a proxy that died, and refuses to start when another live
 * proxy owns the path.
 *
 * @throws {ControlSocketBusyError} when another proxy answers on the socket.
 */
export async function startControlServer(
  broker: ControlBroker,
  socketPath: string,
  opts: ControlServerOptions = {},
): Promise<ControlServer> {
  checkSocketPath(socketPath);
  const dir = dirname(socketPath);
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  const dirInfo = await Deno.stat(dir);
  if (dirInfo.mode !== null && (dirInfo.mode & 0o077) !== 0) await Deno.chmod(dir, 0o700);
  // Proxies starting together take turns: one must not remove, as stale, the
  // socket another has just bound in its place.
  const claim = async () => {
    await removeStaleSocket(socketPath);
    let listener: Deno.UnixListener;
    try {
      listener = Deno.listen({ transport: "unix", path: socketPath });
    } catch (err) {
      if (err instanceof Deno.errors.AddrInUse) {
        throw new ControlSocketBusyError(
          `Another netmonitor proxy is running (control socket "${socketPath}" is in use)`,
        );
      }
      throw new ControlSocketError(
        `Cannot create control socket "${socketPath}": ${(err as Error).message}`,
      );
    }
    try {
      // The directory is already private; 0600 makes the socket private on its own too.
      await Deno.chmod(socketPath, 0o600);
      return { listener, ino: (await Deno.lstat(socketPath)).ino };
    } catch (err) {
      listener.close();
      throw err;
    }
  };
  const { listener, ino } = opts.lock === false
    ? await claim()
    : await withFileLock(`${socketPath}.lock`, claim);

  const server = new Server(broker, listener, socketPath, ino, opts);
  server.start();
  return server;
}

async function removeStaleSocket(path: string): Promise<void> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.lstat(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return;
    throw err;
  }
  if (!info.isSocket) {
    throw new ControlSocketError(
      `Cannot create control socket "${path}": the path exists and is not a socket`,
    );
  }
  let conn: Deno.UnixConn | undefined;
  try {
    conn = await Deno.connect({ transport: "unix", path });
  } catch {
    // Nobody listens: a proxy died without cleaning up.
    await Deno.remove(path).catch((err) => {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    });
    return;
  }
  conn.close();
  throw new ControlSocketBusyError(
    `Another netmonitor proxy is running (control socket "${path}" is live)`,
  );
}

class Server implements ControlServer {
  readonly #sessions = new Set<Session>();
  readonly #tasks = new Set<Promise<void>>();
  readonly #maxLine: number;
  readonly #maxClients: number;
  readonly #describe: () => ProxyDescription;
  readonly #prompters: boolean;
  readonly lock: boolean;
  #unsubscribe?: () => void;
  #closed = false;
  #seq = 0;

  constructor(
    readonly broker: ControlBroker,
    readonly listener: Deno.UnixListener,
    readonly path: string,
    readonly ino: number | null,
    opts: ControlServerOptions,
  ) {
    this.#maxLine = opts.maxLineBytes ?? MAX_CLIENT_LINE;
    this.#maxClients = opts.maxClients ?? 32;
    this.#describe = opts.describe ?? (() => ({}));
    this.#prompters = opts.prompters ?? true;
    this.lock = opts.lock ?? true;
  }

  get clients(): number {
    return this.#sessions.size;
  }

  start(): void {
    this.#unsubscribe = this.broker.subscribe((e) => {
      if (e.type === "prompt-closed") {
        for (const s of this.#sessions) s.resolved(e.request.id, e.outcome);
      } else if (e.type === "rule-saved" || e.type === "rule-save-failed") {
        // Every prompter learns whether an "always" answer became a rule.
        const m: ServerMessage = e.type === "rule-saved"
          ? { type: "rule", pattern: e.pattern, action: e.action, saved: true }
          : {
            type: "rule",
            pattern: e.pattern,
            action: e.action,
            saved: false,
            error: e.error,
            ...(e.kept ? { kept: e.kept } : {}),
          };
        for (const s of this.#sessions) s.notify(m);
      }
    });
    this.#track(this.#acceptLoop());
  }

  #track(p: Promise<void>): void {
    this.#tasks.add(p);
    p.finally(() => this.#tasks.delete(p));
  }

  async #acceptLoop(): Promise<void> {
    for (;;) {
      let conn: Deno.UnixConn;
      try {
        conn = await this.listener.accept();
      } catch {
        return; // listener closed
      }
      if (this.#closed) {
        conn.close();
        return;
      }
      const s = new Session(
        conn,
        `prompt#${++this.#seq}`,
        this.#maxLine,
        this.#describe(),
        this.#prompters,
      );
      if (this.#sessions.size >= this.#maxClients) {
        this.#track(s.refuse(`too many prompt clients (limit ${this.#maxClients})`));
        continue;
      }
      this.#sessions.add(s);
      this.#track(
        s.run(this.broker).finally(() => this.#sessions.delete(s)),
      );
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#unsubscribe?.();
    try {
      this.listener.close();
    } catch {
      // already closed
    }
    for (const s of this.#sessions) s.close(true);
    while (this.#tasks.size > 0) await Promise.allSettled([...this.#tasks]);
    // Remove the socket only if it is still ours (under the lock: a proxy
    // starting now may be putting its own in its place).
    const release = async () => {
      const info = await Deno.lstat(this.path);
      if (info.ino === this.ino) await Deno.remove(this.path);
    };
    try {
      if (this.lock) await withFileLock(`${this.path}.lock`, release);
      else await release();
    } catch {
      // already gone
    }
  }
}

interface OpenAsk {
  request: PendingRequest;
  resolve(a: PromptAnswer): void;
}

/** One connected client: a prompter for the broker. */
class Session implements NamedPrompter {
  readonly #open = new Map<string, OpenAsk>();
  /** Ids this client was shown and not yet told were resolved. */
  readonly #shown = new Set<string>();
  readonly #enc = new TextEncoder();
  #writing: Promise<void> = Promise.resolve();
  #queued = 0;
  #closed = false;
  #connClosed = false;
  #detach?: () => void;

  constructor(
    readonly conn: Deno.UnixConn,
    readonly name: string,
    readonly maxLine: number,
    readonly proxy: ProxyDescription,
    readonly prompter: boolean,
  ) {}

  ask(request: PendingRequest, signal: AbortSignal): Promise<PromptAnswer> {
    if (this.#closed) return Promise.reject(new Error(`${this.name} disconnected`));
    // A closed prompt is not sent: the client would never be told it closed.
    if (signal.aborted) return Promise.reject(signal.reason);
    return new Promise((resolve, reject) => {
      this.#open.set(request.id, { request, resolve });
      this.#shown.add(request.id);
      signal.addEventListener("abort", () => {
        this.#open.delete(request.id);
        reject(signal.reason);
      }, { once: true });
      this.#send({ type: "pending", request });
    });
  }

  /** A prompt closed (answered by anyone, timed out, withdrawn...). */
  resolved(id: string, outcome: PromptOutcome): void {
    if (!this.#shown.delete(id)) return;
    this.#open.delete(id);
    this.#send({
      type: "resolved",
      id,
      outcome: outcome.kind,
      ...(outcome.by !== undefined ? { by: outcome.by } : {}),
      ...(outcome.answer !== undefined ? { answer: outcome.answer } : {}),
    });
  }

  /** A message for every client, whatever it was shown. */
  notify(m: ServerMessage): void {
    this.#send(m);
  }

  async refuse(message: string): Promise<void> {
    this.#send({ type: "error", message });
    await this.#writing;
    this.close();
  }

  async run(broker: ControlBroker): Promise<void> {
    this.#send({
      type: "hello",
      version: PROTOCOL_VERSION,
      name: this.name,
      pid: Deno.pid,
      ...this.proxy,
    });
    // A socket that only says who the proxy is shows no prompts.
    if (this.prompter) this.#detach = broker.addPrompter(this);
    const splitter = new LineSplitter(this.maxLine);
    const buf = new Uint8Array(16 * 1024);
    try {
      while (!this.#closed) {
        const n = await this.conn.read(buf);
        if (n === null) break;
        let lines: string[];
        try {
          lines = splitter.push(buf.subarray(0, n));
        } catch (err) {
          if (!(err instanceof LineTooLongError)) throw err;
          this.#send({ type: "error", message: `message too long (limit ${this.maxLine} bytes)` });
          break;
        }
        for (const line of lines) this.#onLine(line);
      }
    } catch {
      // Connection reset: same as a clean disconnect.
    }
    this.close();
    await this.#writing;
    this.close(true);
  }

  #onLine(line: string): void {
    if (line.trim() === "") return;
    let msg: ClientMessage;
    try {
      msg = parseClientMessage(line);
    } catch (err) {
      const e = err instanceof ProtocolError ? err : new ProtocolError(String(err));
      this.#send({ type: "error", message: e.message, ...(e.id ? { id: e.id } : {}) });
      return;
    }
    const open = this.#open.get(msg.id);
    if (!open) {
      this.#send({
        type: "error",
        id: msg.id,
        message: `request "${msg.id}" is not pending (unknown, or already resolved)`,
      });
      return;
    }
    if (!answerAvailable(open.request, msg.answer)) {
      this.#send({
        type: "error",
        id: msg.id,
        message: `${msg.answer} is not available for request "${msg.id}": a tunnel has no URL`,
      });
      return;
    }
    this.#open.delete(msg.id);
    open.resolve(msg.answer);
  }

  #send(m: ServerMessage): void {
    if (this.#closed) return;
    const bytes = this.#enc.encode(encodeMessage(m));
    this.#queued += bytes.length;
    if (this.#queued > MAX_QUEUED_BYTES) {
      // A client that never reads must not make the proxy buffer without bound.
      this.close(true);
      return;
    }
    this.#writing = this.#writing.then(async () => {
      try {
        let off = 0;
        while (off < bytes.length) off += await this.conn.write(bytes.subarray(off));
      } catch {
        this.close();
      } finally {
        this.#queued -= bytes.length;
      }
    });
  }

  /**
   * Detaches from the broker and closes the connection: after the queued
   * writes (an error message) went out, or at once when `force`d.
   */
  close(force = false): void {
    if (!this.#closed) {
      this.#closed = true;
      this.#detach?.();
      this.#open.clear();
      this.#shown.clear();
    }
    const closeConn = () => {
      if (this.#connClosed) return;
      this.#connClosed = true;
      try {
        this.conn.close();
      } catch {
        // already closed
      }
    };
    if (force) closeConn();
    else this.#writing = this.#writing.then(closeConn);
  }
}

// --- client side (used by `netmonitor prompt`) ------------------------------

/** No proxy answers on the control socket. */
export class NoProxyError extends ControlSocketError {
  override name = "NoProxyError";
  /**
   * @param gone nothing listens on the socket at all (it is missing, or
   *   connecting was refused): its proxy is dead, and the file is stale.
   */
  constructor(message: string, readonly gone = false) {
    super(message);
  }
}

/** A live proxy answered, but refused this client (too many clients). */
export class ProxyBusyError extends ControlSocketError {
  override name = "ProxyBusyError";
}

/** A connection to a running proxy's control socket. */
export interface ControlClient {
  /** The server's greeting (this client's name, the proxy's pid, where it listens). */
  readonly hello: Omit<HelloMessage, "type">;
  /** Messages after `hello`, until the proxy goes away (the iterator ends). */
  messages(): AsyncIterableIterator<ServerMessage>;
  /** Sends an answer for a pending request. */
  answer(id: string, answer: PromptAnswer): Promise<void>;
  close(): void;
}

/**
 * Connects to the control socket at `socketPath` and waits for its hello.
 * @throws {NoProxyError} when no proxy listens there.
 * @throws {ProxyBusyError} when the proxy refuses this client.
 */
export async function connectControl(socketPath: string): Promise<ControlClient> {
  checkSocketPath(socketPath);
  let conn: Deno.UnixConn;
  try {
    conn = await Deno.connect({ transport: "unix", path: socketPath });
  } catch (err) {
    if (
      err instanceof Deno.errors.NotFound || err instanceof Deno.errors.ConnectionRefused
    ) {
      throw new NoProxyError(
        `No netmonitor proxy is running (no control socket at ${socketPath})`,
        true,
      );
    }
    throw err;
  }
  const iter = readMessages(conn);
  const first = await iter.next();
  if (!first.done && first.value.type === "error") {
    conn.close();
    throw new ProxyBusyError(
      `The netmonitor proxy at ${socketPath} refused this client: ${first.value.message}`,
    );
  }
  if (first.done || first.value.type !== "hello") {
    conn.close();
    throw new NoProxyError(
      first.done
        ? `The netmonitor proxy closed the control socket at ${socketPath}`
        : `Unexpected first message from the control socket at ${socketPath}`,
    );
  }
  const hello = first.value;
  const enc = new TextEncoder();
  let closed = false;
  return {
    hello,
    messages: () => iter,
    async answer(id, answer) {
      const bytes = enc.encode(encodeMessage({ type: "answer", id, answer }));
      let off = 0;
      while (off < bytes.length) off += await conn.write(bytes.subarray(off));
    },
    close() {
      if (closed) return;
      closed = true;
      try {
        conn.close();
      } catch {
        // already closed
      }
    },
  };
}

async function* readMessages(conn: Deno.UnixConn): AsyncIterableIterator<ServerMessage> {
  const splitter = new LineSplitter(MAX_SERVER_LINE);
  const buf = new Uint8Array(64 * 1024);
  for (;;) {
    let n: number | null;
    try {
      n = await conn.read(buf);
    } catch {
      return; // closed locally or reset
    }
    if (n === null) return;
    for (const line of splitter.push(buf.subarray(0, n))) {
      if (line.trim() !== "") yield parseServerMessage(line);
    }
  }
}
