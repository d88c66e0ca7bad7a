/**
 * The access log's one canonical record per request (network-access.log).
 *
 * The file is JSON Lines: one `JSON.stringify(AccessRecord)` per line, keys in
 * the order below, so `grep github.com network-access.log` works and the stats
 * command reads every field back without loss.
 *
 * @module
 */

/** How a decision was reached. */
export type DecisionSource =
  | "rule" //       a rule in network-rules.json matched
  | "prompt" //     the operator answered a prompt (any of the six answers)
  | "timeout" //    nobody answered within --prompt-timeout: --default decided once
  | "default" //    --non-interactive: --default answered
  | "policy" //     built-in: destination protection, SNI/Host mismatch, non-TLS tunnel, limits
  | "error"; //     the request failed before a decision (bad framing, 400/408/414/431, client gone)

export interface AccessRecord {
  /** ISO 8601 with milliseconds, UTC: `2026-11-28T00:11:17.123Z`. */
  time: string;
  /** Client address as `ip:port`. */
  client: string;
  /** HTTP method, or "CONNECT" for a tunnel. */
  method: string;
  /** Full URL with secrets redacted, or `host:port` for a tunnel. */
  url: string;
  /** Normalised destination host (no port), for per-host stats. */
  host: string;
  /** Final outcome. "error" when no decision could be made (malformed request). */
  decision: "allow" | "deny" | "error";
  source: DecisionSource;
  /** The decision's reason, e.g. `rule "*.github.com": allow-domain`, `no rule`, `prompt: allow-once`. */
  reason: string;
  /** HTTP status sent to the client; 0 when none was sent (tunnel closed, client gone). */
  status: number;
  /** Bytes received from the client (request body or tunnel bytes up). */
  bytesUp: number;
  /** Bytes sent to the client (response body or tunnel bytes down). */
  bytesDown: number;
  /** Milliseconds from the request head to the end of the exchange. */
  durationMs: number;
  /** What failed, for 4xx/5xx produced by netmonitor itself. */
  error?: string;
}
