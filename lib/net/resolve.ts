/**
 * Name resolution for the proxy, with curl-style `--resolve` overrides.
 *
 * The proxy resolves names itself, checks every address with the
 * destination guard, and then dials exactly the address it checked: letting
 * the connect call resolve again would let a DNS answer change in between.
 *
 * @module
 */

import { lookup } from "node:dns/promises";
import { HostError, isIpLiteral, isLocalhostName, normaliseHost } from "./host.ts";

/** One address to dial. */
export interface ResolvedAddress {
  /** IPv4 dotted decimal or IPv6 without brackets, ready for `Deno.connect`. */
  address: string;
  /** True when it came from the `--resolve` map: the operator vouched for it. */
  trusted: boolean;
}

/** A name could not be resolved. */
export class DnsError extends Error {
  override name = "DnsError";
  constructor(readonly host: string, readonly detail: string) {
    super(`DNS lookup for ${host} failed: ${detail}`);
  }
}

/** Options of {@linkcode Resolver}. */
export interface ResolverOptions {
  /** `"host:port"` -> IP literal (like curl `--resolve`). Keys are normalised here. */
  map?: Map<string, string>;
  /** Ask this DNS server (A and AAAA) instead of the system resolver. */
  nameServer?: { ipAddr: string; port?: number };
  /** The hosts file consulted before the system resolver. Default `/etc/hosts`. */
  hostsFile?: string;
}

/** Resolves normalised hosts to the addresses the proxy will dial. */
export class Resolver {
  readonly #map = new Map<string, string>();
  readonly #nameServer?: { ipAddr: string; port: number };
  readonly #hostsFile: string;

  constructor(options: ResolverOptions = {}) {
    this.#hostsFile = options.hostsFile ?? "/etc/hosts";
    for (const [key, value] of options.map ?? []) {
      const { host, port } = splitKey(key);
      this.#map.set(`${host}:${port}`, addressForDial(value));
    }
    if (options.nameServer) {
      this.#nameServer = { ipAddr: options.nameServer.ipAddr, port: options.nameServer.port ?? 53 };
    }
  }

  /** The mapped address for `host:port`, if `--resolve` names it. */
  mapped(host: string, port: number): string | undefined {
    return this.#map.get(`${host}:${port}`);
  }

  /**
   * Addresses for `host` (normalised with `normaliseHost`), in the order to
   * try them. IP literals resolve to themselves.
   *
   * @throws {DnsError} when the name does not resolve.
   */
  async resolve(host: string, port: number): Promise<ResolvedAddress[]> {
    const mapped = this.#map.get(`${host}:${port}`);
    if (mapped !== undefined) return [{ address: mapped, trusted: true }];
    if (isIpLiteral(host)) return [{ address: addressForDial(host), trusted: false }];
    // RFC 6761: localhost names are loopback, never sent to a DNS server.
    if (isLocalhostName(host)) {
      return [{ address: "127.0.0.1", trusted: false }, { address: "::1", trusted: false }];
    }
    const addresses = this.#nameServer
      ? await this.#viaNameServer(host)
      : await hostsFileAddresses(this.#hostsFile, host) ?? await viaSystem(host);
    if (addresses.length === 0) throw new DnsError(host, "no addresses");
    const usable = addresses.flatMap((a) => {
      const address = dialableAnswer(a);
      return address === undefined ? [] : [{ address, trusted: false }];
    });
    if (usable.length === 0) {
      throw new DnsError(host, `no usable addresses (${addresses.slice(0, 3).join(", ")})`);
    }
    return usable;
  }

  async #viaNameServer(host: string): Promise<string[]> {
    const opts = { nameServer: this.#nameServer! };
    const [a, aaaa] = await Promise.allSettled([
      Deno.resolveDns(`${host}.`, "A", opts),
      Deno.resolveDns(`${host}.`, "AAAA", opts),
    ]);
    const out = [
      ...(a.status === "fulfilled" ? a.value : []),
      ...(aaaa.status === "fulfilled" ? aaaa.value : []),
    ];
    if (out.length === 0 && a.status === "rejected") {
      throw new DnsError(host, errorText(a.reason));
    }
    return out;
  }
}

/**
 * The system resolver, asked for the name as written: the trailing dot makes
 * it absolute, so the search domains of /etc/resolv.conf never turn `secret`
 * (decided as `secret`) into `secret.corp.example` (which a rule may deny).
 * The dot also hides /etc/hosts from glibc, which `hostsFileAddresses` reads
 * first instead (as Squid does, with its `dns_defnames off` default).
 */
async function viaSystem(host: string): Promise<string[]> {
  try {
    const list = await lookup(`${host}.`, { all: true, verbatim: true });
    return list.map((e) => e.address);
  } catch (e) {
    const code = (e as { code?: string }).code;
    const detail = code === "ENOTFOUND"
      ? "no such host" +
        (host.includes(".") ? "" : " (netmonitor looks names up as written, without the " +
          "search domains of /etc/resolv.conf: use the full name)")
      : code
      ? code
      : errorText(e);
    throw new DnsError(host, detail);
  }
}

/**
 * The addresses a hosts file gives `host` (exact name, any case), or
 * undefined when it names none or cannot be read.
 */
export async function hostsFileAddresses(
  path: string,
  host: string,
): Promise<string[] | undefined> {
  const names = await hostsFileNames(path);
  const out = names?.get(host);
  return out === undefined ? undefined : [...out];
}

/** A parsed hosts file, and what its file looked like when it was read. */
interface HostsReading {
  stamp: string;
  /** When the stamp may be trusted: a file changed just before its reading may change again unseen. */
  trusted: boolean;
  names: Map<string, string[]>;
}

const hostsReadings = new Map<string, HostsReading>();

/** How many times a hosts file was parsed: for tests of the cache. */
export const hostsFileParses = { count: 0 };

/**
 * The names of a hosts file and their addresses, parsed again only when the
 * file changed: a blocklist hosts file has 100,000 lines, and parsing it for
 * every lookup held up every connection (70 ms a lookup).
 */
async function hostsFileNames(path: string): Promise<Map<string, string[]> | undefined> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch {
    hostsReadings.delete(path);
    return undefined;
  }
  const stamp = `${info.ino}:${info.size}:${info.mtime?.getTime()}:${info.ctime?.getTime()}`;
  const cached = hostsReadings.get(path);
  if (cached?.trusted && cached.stamp === stamp) return cached.names;
  const readAt = Date.now();
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch {
    hostsReadings.delete(path);
    return undefined;
  }
  hostsFileParses.count++;
  const names = new Map<string, string[]>();
  for (const line of text.split("\n")) {
    const fields = line.replace(/#.*/, "").trim().split(/\s+/);
    if (fields.length < 2) continue;
    const seen = new Set<string>();
    for (const field of fields.slice(1)) {
      const name = field.toLowerCase().replace(/\.$/, "");
      if (seen.has(name)) continue;
      seen.add(name);
      const list = names.get(name);
      if (list) list.push(fields[0]);
      else names.set(name, [fields[0]]);
    }
  }
  // Time stamps are coarse: one within 2 s of the reading is not trusted.
  const mtime = info.mtime?.getTime();
  const trusted = mtime !== undefined && mtime < readAt - 2000;
  hostsReadings.set(path, { stamp, trusted, names });
  return names;
}

function errorText(e: unknown): string {
  if (e instanceof Deno.errors.NotFound) return "no such host";
  return e instanceof Error ? e.message : String(e);
}

function splitKey(key: string): { host: string; port: number } {
  const m = /^(\[[^\]]+\]|[^:]+):(\d{1,5})$/.exec(key);
  if (!m) throw new HostError(`invalid --resolve key "${key}": expected host:port`);
  const port = Number(m[2]);
  if (port < 1 || port > 65535) throw new HostError(`invalid port in --resolve key "${key}"`);
  return { host: normaliseHost(m[1]), port };
}

/**
 * A DNS answer in the form `Deno.connect` takes, or undefined when it cannot
 * be dialled as checked: an IPv6 address with a zone id (`fe80::1%eth0`, as
 * /etc/hosts may say) names an interface, which the guard's check and the
 * dial could disagree on, so it is skipped (the other answers are tried; none
 * left is a DNS error, a 502).
 */
export function dialableAnswer(answer: string): string | undefined {
  if (answer.includes("%")) return undefined;
  try {
    return addressForDial(answer);
  } catch {
    return undefined;
  }
}

/** An IP literal (bracketed or not, any IPv4 spelling) in the form `Deno.connect` takes. */
export function addressForDial(ip: string): string {
  const host = normaliseHost(ip);
  if (!isIpLiteral(host)) throw new HostError(`"${ip}" is not an IP address`);
  return host.startsWith("[") ? host.slice(1, -1) : host;
}

/**
 * Parses one `--resolve host:port:addr` value (curl's syntax; IPv6 in
 * brackets on either side).
 * @returns the map key `host:port` (normalised) and the address.
 * @throws {HostError} with a message naming the bad part.
 */
export function parseResolveEntry(value: string): { key: string; address: string } {
  const m = /^(\[[^\]]+\]|[^:\[\]]+):(\d{1,5}):(.+)$/.exec(value.trim());
  if (!m) {
    throw new HostError(`invalid --resolve "${value}": expected HOST:PORT:ADDRESS`);
  }
  const { host, port } = splitKey(`${m[1]}:${m[2]}`);
  let address: string;
  try {
    address = addressForDial(m[3]);
  } catch {
    throw new HostError(`invalid --resolve "${value}": "${m[3]}" is not an IP address`);
  }
  return { key: `${host}:${port}`, address };
}
