/**
 * Destination protection: the addresses the proxy refuses to connect to
 * unless the operator named them explicitly.
 *
 * A container behind the proxy must not reach the host's own services
 * (loopback, and every address of every interface of this host: the docker0
 * gateway, eth0, other bridges), the cloud metadata service
 * (169.254.169.254, fe80::/10) or odd targets (unspecified, multicast,
 * reserved). The check runs on the address the proxy is about to dial, after
 * name resolution, so no spelling of a host (decimal, octal, hex, short IPv4,
 * IPv4-mapped or -compatible IPv6, NAT64, 6to4) and no DNS answer gets past it.
 *
 * Cloud metadata endpoints outside link-local space (AWS fd00:ec2::/32,
 * Alibaba 100.100.100.200, Azure 168.63.129.16) are protected too.
 *
 * So are the container networks of this host (the subnets of Docker's and
 * Podman's bridges): through the proxy, a container must not reach the other
 * containers that the network itself keeps it apart from.
 *
 * Other private addresses (10/8, 172.16/12, 192.168/16, fc00::/7) are not
 * protected: development containers legitimately reach LAN services.
 *
 * @module
 */

/** Why an address is protected. */
export type ProtectedClass =
  | "loopback"
  | "link-local"
  | "unspecified"
  | "multicast"
  | "reserved"
  | "metadata"
  /** The proxy's own listening address, or its port on this host (a loop). */
  | "proxy"
  /** Another address of one of this host's interfaces (docker0, eth0, ...). */
  | "host"
  /** An address in one of this host's container networks (another container). */
  | "container";

/**
 * Cloud metadata and platform endpoints outside link-local space: they hand
 * out instance credentials just like 169.254.169.254.
 */
const METADATA_V4 = new Set([
  "100.100.100.200", // Alibaba Cloud metadata
  "168.63.129.16", // Azure WireServer (guest agent, DNS, health)
]);
const METADATA_V6_PREFIX = "fd00:0ec2:"; // AWS IMDS, DNS and NTP (fd00:ec2::254, ::253, ::123)

/** The proxy refused to connect to a protected address. */
export class DestinationRefusedError extends Error {
  override name = "DestinationRefusedError";
  constructor(
    readonly host: string,
    readonly address: string,
    readonly addressClass: ProtectedClass,
  ) {
    super(`destination protection: ${describe(host, address)} ${what(addressClass)}`);
  }
}

function what(cls: ProtectedClass): string {
  if (cls === "proxy") return "is the proxy's own address";
  if (cls === "host") return "is an address of this host";
  if (cls === "container") return "is in a container network of this host";
  return `is a ${cls === "metadata" ? "cloud metadata" : cls} address`;
}

function describe(host: string, address: string): string {
  const bare = host.startsWith("[") ? host.slice(1, -1) : host;
  return bare === address ? address : `${host} (${address})`;
}

/**
 * Parses a dotted-decimal IPv4 address (the canonical form; other spellings
 * are canonicalised by `normaliseHost` first) into a 32-bit number.
 */
export function parseIPv4(s: string): number | undefined {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
  if (!m) return undefined;
  let n = 0;
  for (let i = 1; i <= 4; i++) {
    const o = Number(m[i]);
    if (o > 255) return undefined;
    n = n * 256 + o;
  }
  return n;
}

/**
 * Parses an IPv6 address (brackets and a zone id allowed, embedded IPv4
 * allowed) into 16 bytes.
 */
export function parseIPv6(input: string): Uint8Array | undefined {
  let s = input.startsWith("[") && input.endsWith("]") ? input.slice(1, -1) : input;
  const zone = s.indexOf("%");
  if (zone >= 0) s = s.slice(0, zone);
  if (!/^[0-9a-fA-F:.]+$/.test(s)) return undefined;
  const out = new Uint8Array(16);
  let tail = s;
  let v4: number | undefined;
  const lastColon = s.lastIndexOf(":");
  if (s.includes(".")) {
    v4 = parseIPv4(s.slice(lastColon + 1));
    if (v4 === undefined) return undefined;
    tail = s.slice(0, lastColon + 1) + "0:0";
  }
  const halves = tail.split("::");
  if (halves.length > 2) return undefined;
  const parse = (part: string): number[] | undefined => {
    if (part === "") return [];
    const groups = part.split(":");
    const words: number[] = [];
    for (const g of groups) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return undefined;
      words.push(parseInt(g, 16));
    }
    return words;
  };
  const head = parse(halves[0]);
  const rest = halves.length === 2 ? parse(halves[1]) : [];
  if (!head || !rest) return undefined;
  const total = head.length + rest.length;
  if (halves.length === 1 ? total !== 8 : total > 7) return undefined;
  const words = [...head, ...new Array(8 - total).fill(0), ...rest];
  for (let i = 0; i < 8; i++) {
    out[2 * i] = words[i] >> 8;
    out[2 * i + 1] = words[i] & 0xff;
  }
  if (v4 !== undefined) {
    out[12] = v4 >>> 24;
    out[13] = (v4 >>> 16) & 0xff;
    out[14] = (v4 >>> 8) & 0xff;
    out[15] = v4 & 0xff;
  }
  return out;
}

/** The class of a protected IPv4 address (as a 32-bit number). */
function classifyV4(n: number): ProtectedClass | undefined {
  const a = n >>> 24;
  if (METADATA_V4.has(`${a}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`)) return "metadata";
  if (a === 0) return "unspecified"; // 0.0.0.0/8, "this network": Linux dials the host
  if (a === 127) return "loopback";
  if (a === 169 && ((n >>> 16) & 0xff) === 254) return "link-local";
  if (a >= 224 && a <= 239) return "multicast";
  if (a >= 240) return "reserved"; // 240/4 and 255.255.255.255
  return undefined;
}

function v4At(b: Uint8Array, i: number): number {
  return ((b[i] << 24) >>> 0) + (b[i + 1] << 16) + (b[i + 2] << 8) + b[i + 3];
}

function zero(b: Uint8Array, from: number, to: number): boolean {
  for (let i = from; i < to; i++) if (b[i] !== 0) return false;
  return true;
}

/**
 * The IPv4 address an IPv6 address stands for, when it embeds one in a way
 * that reaches that IPv4 host: IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible
 * `::a.b.c.d`, SIIT `::ffff:0:a.b.c.d`, NAT64 `64:ff9b::/96` and
 * `64:ff9b:1::/48`, 6to4 `2002:AABB:CCDD::/48`.
 */
export function embeddedIPv4(b: Uint8Array): number | undefined {
  if (zero(b, 0, 10) && b[10] === 0xff && b[11] === 0xff) return v4At(b, 12);
  if (zero(b, 0, 12)) return v4At(b, 12);
  if (zero(b, 0, 8) && b[8] === 0xff && b[9] === 0xff && b[10] === 0 && b[11] === 0) {
    return v4At(b, 12);
  }
  if (b[0] === 0 && b[1] === 0x64 && b[2] === 0xff && b[3] === 0x9b) {
    if (zero(b, 4, 12)) return v4At(b, 12);
    if (b[4] === 0 && b[5] === 1) return v4At(b, 12);
  }
  if (b[0] === 0x20 && b[1] === 0x02) return v4At(b, 2);
  return undefined;
}

/**
 * The protection class of an IP address (IPv4 dotted decimal or IPv6 with or
 * without brackets), or undefined for an ordinary address. Not an IP literal
 * at all: "reserved" (fail closed).
 */
export function classifyAddress(address: string): ProtectedClass | undefined {
  const v4 = parseIPv4(address);
  if (v4 !== undefined) return classifyV4(v4);
  const b = parseIPv6(address);
  if (!b) return "reserved";
  if (zero(b, 0, 16)) return "unspecified";
  if (zero(b, 0, 15) && b[15] === 1) return "loopback";
  if (b[0] === 0xfe && (b[1] & 0xc0) === 0x80) return "link-local";
  if (b[0] === 0xfe && (b[1] & 0xc0) === 0xc0) return "link-local"; // fec0::/10 site-local
  if (b[0] === 0xff) return "multicast";
  if (hex16(b, 0) + ":" + hex16(b, 2) + ":" === METADATA_V6_PREFIX) return "metadata";
  const e = embeddedIPv4(b);
  return e === undefined ? undefined : classifyV4(e);
}

function hex16(b: Uint8Array, i: number): string {
  return ((b[i] << 8) | b[i + 1]).toString(16).padStart(4, "0");
}

/** A comparable key for an address: IPv4 (also when embedded in IPv6) or the 16 IPv6 bytes. */
export function addressKey(address: string): string | undefined {
  const v4 = parseIPv4(address);
  if (v4 !== undefined) return `4:${v4}`;
  const b = parseIPv6(address);
  if (!b) return undefined;
  const e = embeddedIPv4(b);
  if (e !== undefined && !(b[0] === 0x20 && b[1] === 0x02)) return `4:${e}`;
  return "6:" + Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

/** For a 6to4 key (`6:2002AABBCCDD...`), the key of the IPv4 address it wraps; else "". */
function sixToFourKey(key: string): string {
  if (!key.startsWith("6:2002")) return "";
  return `4:${parseInt(key.slice(6, 14), 16)}`;
}

/** Options of {@linkcode DestinationGuard}. */
export interface DestinationGuardOptions {
  /** Whether protected classes are refused at all. @default {true} */
  enabled?: boolean;
  /**
   * The proxy's listening address: refused as "proxy". A wildcard (0.0.0.0,
   * ::) means every local interface address is the proxy's own.
   */
  listenAddress?: string;
  /** The proxy's listening port (dialling it would loop). */
  listenPort?: number;
  /**
   * This host's own addresses. A list is used as is (tests); a function is
   * called again at most every `refreshMs`, lazily on a check, so a bridge
   * created after start-up (`docker network create`) is covered within that
   * time. Loopback is always included.
   *
   * @default {Deno.networkInterfaces() addresses}
   */
  interfaceAddresses?: string[] | (() => string[]);
  /**
   * The container networks of this host, as CIDRs (`172.17.0.1/16`): every
   * address in them is protected as "container". Read with
   * `interfaceAddresses`, on the same schedule.
   *
   * @default {the subnets of Deno.networkInterfaces()'s container bridges
   *   (docker0, br-0123456789ab, podman0, cni-podman0), or none when
   *   interfaceAddresses is given}
   */
  containerNetworks?: string[] | (() => string[]);
  /** How long a reading of the interface addresses is used, ms. @default {15000} */
  refreshMs?: number;
  /** The clock, for tests. @default {Date.now} */
  now?: () => number;
}

/**
 * Decides whether an address may be dialled.
 *
 * Besides the protected classes, every address of this host is protected,
 * not only the one the proxy listens on: with `--listen 127.0.0.1`, the
 * docker0 gateway (172.17.0.1), eth0's address and every other bridge's
 * gateway still reach the host's services (a database bound to 0.0.0.0, the
 * Docker API on tcp/2375). They are read from `Deno.networkInterfaces()` and
 * re-read at most every `refreshMs` when a check runs.
 */
export class DestinationGuard {
  readonly enabled: boolean;
  readonly #port: number | undefined;
  /** The listen address's key (non-wildcard listen only). */
  readonly #listenKey: string | undefined;
  readonly #wildcard: boolean;
  readonly #source: () => LocalNetworks;
  readonly #refreshMs: number;
  readonly #now: () => number;
  #local = new Set<string>();
  #containerNets: Subnet[] = [];
  #readAt = -Infinity;
  #everRead = false;

  constructor(options: DestinationGuardOptions = {}) {
    this.enabled = options.enabled ?? true;
    this.#port = options.listenPort;
    const listen = options.listenAddress;
    this.#wildcard = listen !== undefined && classifyAddress(listen) === "unspecified";
    this.#listenKey = listen !== undefined && !this.#wildcard ? addressKey(listen) : undefined;
    const given = options.interfaceAddresses;
    const nets = options.containerNetworks;
    const list = <T>(v: T[] | (() => T[]) | undefined) =>
      typeof v === "function" ? v : () => v ?? [];
    this.#source = given === undefined && nets === undefined
      ? localNetworks
      : given === undefined
      ? () => ({ addresses: localNetworks().addresses, containerNets: list(nets)() })
      : () => ({ addresses: list(given)(), containerNets: list(nets)() });
    this.#refreshMs = options.refreshMs ?? 15_000;
    this.#now = options.now ?? Date.now;
  }

  /**
   * This host's own addresses (keys of {@linkcode addressKey}), re-read when
   * the last reading is older than `refreshMs`. A failed reading keeps the
   * previous set: addresses are only ever dropped by a successful one. Until
   * one succeeds, every private address may be another container's (Docker
   * and Podman take their subnets from those ranges): they are refused as
   * "container", so an unreadable interface list fails closed.
   */
  #localKeys(): Set<string> {
    const now = this.#now();
    if (now - this.#readAt < this.#refreshMs) return this.#local;
    this.#readAt = now;
    let read: LocalNetworks;
    try {
      read = this.#source();
    } catch {
      if (!this.#everRead) this.#containerNets = PRIVATE_NETS;
      return this.#local;
    }
    this.#everRead = true;
    const keys = new Set<string>([addressKey("127.0.0.1")!, addressKey("::1")!]);
    for (const a of read.addresses) {
      const k = addressKey(a);
      if (k) keys.add(k);
    }
    this.#local = keys;
    this.#containerNets = read.containerNets.flatMap((c) => parseSubnet(c) ?? []);
    return keys;
  }

  /**
   * Returns the protection class that forbids dialling `address:port` for
   * `host`, or undefined when it may be dialled.
   *
   * @param exempt the operator named this destination explicitly (an exact
   *   rule, or `--resolve`): protected classes are allowed, but dialling the
   *   proxy's own port on this host never is, since it would loop.
   */
  check(address: string, port: number, exempt: boolean): ProtectedClass | undefined {
    const key = addressKey(address);
    if (key === undefined) return "reserved";
    const listening = key === this.#listenKey;
    const keys = this.#localKeys();
    // A 6to4 address reaches the IPv4 host it wraps through a 6to4 relay or
    // route, so one wrapping an address of this host is this host too.
    const local = listening || keys.has(key) || keys.has(sixToFourKey(key));
    const cls = classifyAddress(address);
    // Loopback and unspecified destinations on our port may reach our own
    // listener (0.0.0.0 and 127.x dial the local host on Linux); so may any
    // of this host's addresses (fail closed: we do not track which ones the
    // listener is bound to).
    if (port === this.#port && (local || cls === "loopback" || cls === "unspecified")) {
      return "proxy";
    }
    if (!this.enabled || exempt) return undefined;
    if (cls !== undefined) return cls;
    if (listening || (local && this.#wildcard)) return "proxy";
    if (local) return "host";
    const four = sixToFourKey(key);
    const inNet = (n: Subnet) => inSubnet(key, n) || (four !== "" && inSubnet(four, n));
    return this.#containerNets.some(inNet) ? "container" : undefined;
  }

  /** Like {@linkcode check}, throwing {@linkcode DestinationRefusedError}. */
  assert(host: string, address: string, port: number, exempt: boolean): void {
    const cls = this.check(address, port, exempt);
    if (cls !== undefined) throw new DestinationRefusedError(host, address, cls);
  }
}

/** This host's addresses, and the subnets of its container networks. */
interface LocalNetworks {
  addresses: string[];
  /** CIDRs, `172.17.0.1/16`. */
  containerNets: string[];
}

/**
 * The bridges container engines make for their networks: Docker's default
 * (docker0) and user networks (br- and 12 hex digits of the network id), and
 * Podman's. A bridge named otherwise (`com.docker.network.bridge.name`) is not
 * recognised.
 */
const CONTAINER_BRIDGE = /^(docker\d+|br-[0-9a-f]{12}|podman\d+|cni-podman\d+)$/;

/** One local interface address, as `Deno.networkInterfaces()` lists it. */
export interface InterfaceAddress {
  name: string;
  address: string;
}

/**
 * The container bridge (docker0, br-0123456789ab, podman0, cni-podman0) whose
 * own address `address` is, or undefined. Also undefined when another
 * interface holds the same address too: that one may face other networks.
 */
export function containerBridgeOf(
  address: string,
  interfaces: readonly InterfaceAddress[],
): string | undefined {
  const key = addressKey(address);
  if (key === undefined) return undefined;
  const holders = new Set(
    interfaces.filter((i) => addressKey(i.address) === key).map((i) => i.name),
  );
  if (holders.size !== 1) return undefined;
  const [name] = holders;
  return CONTAINER_BRIDGE.test(name) ? name : undefined;
}

/** Every address of every local interface, and the container bridges' subnets; throws when they cannot be read. */
function localNetworks(): LocalNetworks {
  const list = Deno.networkInterfaces();
  return {
    addresses: list.map((i) => i.address),
    containerNets: list.filter((i) => CONTAINER_BRIDGE.test(i.name)).map((i) => i.cidr),
  };
}

/** A subnet as an address key prefix: the first `bits` bits of `bytes`. */
interface Subnet {
  v4: boolean;
  bytes: Uint8Array;
  bits: number;
}

/** The private ranges, which hold the container networks when those cannot be read. */
const PRIVATE_NETS: Subnet[] = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"]
  .map((c) => parseSubnet(c)!);

/** Parses `a.b.c.d/n` or `x::y/n`; undefined for anything else (skipped, never widened). */
export function parseSubnet(cidr: string): Subnet | undefined {
  const slash = cidr.lastIndexOf("/");
  if (slash < 0) return undefined;
  const bits = Number(cidr.slice(slash + 1));
  const key = addressKey(cidr.slice(0, slash));
  if (key === undefined || !Number.isInteger(bits)) return undefined;
  const v4 = key.startsWith("4:");
  // A /0 or a mask wider than the address would cover everything: not a container network.
  if (bits < 1 || bits > (v4 ? 32 : 128)) return undefined;
  return { v4, bytes: keyBytes(key), bits };
}

/** True when the address with `key` (see {@linkcode addressKey}) lies in `net`. */
function inSubnet(key: string, net: Subnet): boolean {
  if (key.startsWith("4:") !== net.v4) return false;
  const b = keyBytes(key);
  const whole = net.bits >> 3;
  for (let i = 0; i < whole; i++) if (b[i] !== net.bytes[i]) return false;
  const rest = net.bits & 7;
  if (rest === 0) return true;
  const mask = (0xff << (8 - rest)) & 0xff;
  return (b[whole] & mask) === (net.bytes[whole] & mask);
}

function keyBytes(key: string): Uint8Array {
  if (key.startsWith("4:")) {
    const n = Number(key.slice(2));
    return new Uint8Array([n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff]);
  }
  const hex = key.slice(2);
  return Uint8Array.from({ length: 16 }, (_, i) => parseInt(hex.slice(2 * i, 2 * i + 2), 16));
}
