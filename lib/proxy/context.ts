/**
 * State shared by every connection of one proxy server.
 * @module
 */

import type { AccessRecord } from "../log/record.ts";
import type { DecisionSource } from "../log/record.ts";
import type { Dialer } from "./upstream.ts";
import type { DecideInput, FinalDecision, TunnelInterceptor } from "./types.ts";

/** Resolved timeouts and limits. */
export interface Limits {
  connectTimeoutMs: number;
  headerTimeoutMs: number;
  idleTimeoutMs: number;
  responseTimeoutMs: number;
  bodyIdleTimeoutMs: number;
  tunnelIdleTimeoutMs: number;
  helloTimeoutMs: number;
  maxHeaderBytes: number;
}

/** Something the server must be able to stop at shutdown. */
export interface Live {
  /** Waiting for a new request with nothing buffered: may be closed at once. */
  idle: boolean;
  /** A relayed tunnel or upgrade: closed at once on shutdown. */
  tunnel: boolean;
  /** Closes the connection(s) now. */
  cut(): void;
}

/** What sessions need from the server. */
export interface ServerContext {
  limits: Limits;
  decide(input: DecideInput, signal: AbortSignal): Promise<FinalDecision>;
  decideTunnel?(input: DecideInput, signal: AbortSignal): Promise<FinalDecision>;
  record(rec: AccessRecord): void;
  dialer: Dialer;
  intercept?: TunnelInterceptor;
  /** Aborted when shutdown starts. */
  shutdown: AbortSignal;
  /** True once shutdown started: finish the current exchange, then close. */
  readonly closing: boolean;
  /** Registers a connection for shutdown; returns the function that unregisters it. */
  track(live: Live): () => void;
}

let isoMs = NaN;
let isoText = "";

/**
 * `new Date().toISOString()`, made once per millisecond: the requests of a
 * burst start within a few milliseconds of each other, and formatting a date
 * is one of the larger items of a request's own work.
 */
export function isoNow(): string {
  const ms = Date.now();
  if (ms !== isoMs) {
    isoMs = ms;
    isoText = new Date(ms).toISOString();
  }
  return isoText;
}

/** Builds the one canonical record of an exchange, field by field. */
export class Exchange {
  readonly time: string;
  readonly t0: number;
  method = "";
  url = "";
  host = "";
  decision: "allow" | "deny" | "error" = "error";
  source: DecisionSource = "error";
  reason = "";
  status = 0;
  bytesUp = 0;
  bytesDown = 0;
  error: string | undefined;
  #done = false;

  constructor(readonly client: string) {
    this.t0 = performance.now();
    this.time = isoNow();
  }

  /** Applies a decision. */
  decided(d: FinalDecision): void {
    this.decision = d.action;
    this.source = d.source;
    this.reason = d.reason;
  }

  /** Emits the record once; later calls do nothing. */
  finish(ctx: ServerContext): void {
    if (this.#done) return;
    this.#done = true;
    const rec: AccessRecord = {
      time: this.time,
      client: this.client,
      method: this.method,
      url: this.url,
      host: this.host,
      decision: this.decision,
      source: this.source,
      reason: this.reason,
      status: this.status,
      bytesUp: this.bytesUp,
      bytesDown: this.bytesDown,
      durationMs: Math.round((performance.now() - this.t0) * 10) / 10,
    };
    if (this.error !== undefined) rec.error = this.error;
    try {
      ctx.record(rec);
    } catch {
      // record() must not throw; a broken sink must not break the proxy.
    }
  }
}
