/**
 * The benchmark's origin: a temporary CA and server certificate made with
 * openssl, and an nginx on a loopback address serving a small body and a large
 * sparse file over HTTP and HTTPS, keep-alive on.
 *
 * The origin takes a random address in 127.77.0.0/16 so it never collides with
 * anything else on 127.0.0.1. When this process may bind ports below 1024 (root
 * or CAP_NET_BIND_SERVICE), it listens on 80 and 443, so that URLs carry no port:
 * hey puts the URL's host *with its port* into TLS SNI, which an SNI-checking
 * proxy rightly refuses; on 443 there is no port to add. Otherwise it falls back
 * to free high ports and notes the caveat.
 *
 * @module
 */

import { runTool, type Service, startService, waitForPort } from "./_proc.ts";

/** A running origin. */
export interface Origin {
  /** Main loopback address, e.g. "127.77.12.1". */
  addr: string;
  /** Extra addresses with the same TLS server, for never-seen-host tests by IP. */
  extraAddrs: string[];
  httpPort: number;
  tlsPort: number;
  /** DNS name the certificate covers (plus `*.` of it). Map it with --resolve. */
  name: string;
  /** PEM file of the CA that signed the origin certificate. */
  caPath: string;
  /** Path of the small body, e.g. "/small". */
  smallPath: string;
  /** Path of the large file, e.g. "/large". */
  largePath: string;
  smallBytes: number;
  largeBytes: number;
  /** True when ports are 80/443 (URLs need no port). */
  standardPorts: boolean;
  nginx: Service;
}

/** Options for {@linkcode startOrigin}. */
export interface OriginOptions {
  /** Temporary directory to put config, certs and files in. */
  dir: string;
  /** Size of the large file in bytes. */
  largeBytes: number;
  /** Size of the small body in bytes. Default 1024. */
  smallBytes?: number;
  /** How many extra TLS addresses to listen on. Default 0. */
  extraAddrs?: number;
}

/** Name the origin certificate covers. */
export const ORIGIN_NAME = "origin.test";

/** `host` or `host:port` when the port is not the scheme's default. */
export function authority(host: string, port: number, tls: boolean): string {
  return port === (tls ? 443 : 80) ? host : `${host}:${port}`;
}

/** Create certs and files, write nginx.conf, start nginx and wait until it serves. */
export async function startOrigin(opts: OriginOptions): Promise<Origin> {
  const dir = opts.dir;
  const smallBytes = opts.smallBytes ?? 1024;
  const base = `127.77.${1 + Math.floor(Math.random() * 250)}`;
  const addr = `${base}.1`;
  const extraAddrs = Array.from({ length: opts.extraAddrs ?? 0 }, (_, i) => `${base}.${i + 2}`);

  let httpPort = 80, tlsPort = 443;
  const standardPorts = canBind(addr, 80) && canBind(addr, 443) &&
    extraAddrs.every((a) => canBind(a, 443));
  if (!standardPorts) {
    httpPort = pickPort(addr);
    tlsPort = pickPort(addr);
  }

  const www = `${dir}/www`;
  await Deno.mkdir(www, { recursive: true });
  // nginx workers may run as another user when we are root: let them read.
  await Deno.chmod(dir, 0o755);
  await Deno.chmod(www, 0o755);
  const small = new Uint8Array(smallBytes);
  crypto.getRandomValues(small.subarray(0, Math.min(smallBytes, 65536)));
  await Deno.writeFile(`${www}/small`, small, { mode: 0o644 });
  const large = await Deno.open(`${www}/large`, { create: true, write: true, mode: 0o644 });
  await large.truncate(opts.largeBytes); // sparse: costs no disk
  large.close();

  const caPath = await makeCerts(dir, [ORIGIN_NAME, `*.${ORIGIN_NAME}`], [addr, ...extraAddrs]);

  const temp = (n: string) => `${n}_temp_path ${dir}/${n};`;
  const tlsListens = [addr, ...extraAddrs].map((a) => `listen ${a}:${tlsPort} ssl;`).join(" ");
  const conf = `daemon off;
master_process on;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/nginx-error.log warn;
worker_rlimit_nofile 16384;
events { worker_connections 8192; }
http {
  access_log off;
  sendfile on; tcp_nopush on; tcp_nodelay on;
  keepalive_timeout 300s; keepalive_requests 100000000;
  client_header_timeout 300s;
  ${temp("client_body")} ${temp("proxy")} ${temp("fastcgi")} ${temp("uwsgi")} ${temp("scgi")}
  default_type application/octet-stream;
  server { listen ${addr}:${httpPort}; root ${www}; }
  server {
    ${tlsListens}
    root ${www};
    ssl_certificate ${dir}/origin.pem; ssl_certificate_key ${dir}/origin.key;
    ssl_session_cache off; ssl_session_tickets off;
  }
}
`;
  await Deno.writeTextFile(`${dir}/nginx.conf`, conf);
  const nginx = await startService(
    "nginx",
    "nginx",
    ["-p", dir, "-c", `${dir}/nginx.conf`, "-e", `${dir}/nginx-error.log`],
    { logPath: `${dir}/nginx.out` },
  );
  let exited = false;
  void nginx.status.then(() => exited = true);
  await waitForPort(addr, httpPort, 10_000, () => !exited);
  await waitForPort(addr, tlsPort, 10_000, () => !exited);
  return {
    addr,
    extraAddrs,
    httpPort,
    tlsPort,
    name: ORIGIN_NAME,
    caPath,
    smallPath: "/small",
    largePath: "/large",
    smallBytes,
    largeBytes: opts.largeBytes,
    standardPorts,
    nginx,
  };
}

function canBind(hostname: string, port: number): boolean {
  try {
    Deno.listen({ hostname, port }).close();
    return true;
  } catch {
    return false;
  }
}

function pickPort(hostname: string): number {
  const l = Deno.listen({ hostname, port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** Make a CA and an ECDSA P-256 server cert for `dns` and `ips`; return the CA path. */
async function makeCerts(dir: string, dns: string[], ips: string[]): Promise<string> {
  const ossl = async (args: string[]) => {
    const r = await runTool("openssl", args, { cwd: dir, timeoutMs: 30_000 });
    if (r.code !== 0) throw new Error(`openssl ${args[0]} failed: ${r.stderr.trim()}`);
  };
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  await ossl([
    "req",
    "-x509",
    ...ec,
    "-keyout",
    "ca.key",
    "-out",
    "ca.pem",
    "-days",
    "2",
    "-subj",
    "/CN=netmonitor bench CA",
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
  ]);
  await ossl([
    "req",
    ...ec,
    "-keyout",
    "origin.key",
    "-out",
    "origin.csr",
    "-subj",
    `/CN=${dns[0]}`,
  ]);
  const san = [...dns.map((d) => `DNS:${d}`), ...ips.map((i) => `IP:${i}`)].join(",");
  await Deno.writeTextFile(
    `${dir}/origin.ext`,
    `subjectAltName=${san}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n` +
      `keyUsage=critical,digitalSignature\n`,
  );
  await ossl([
    "x509",
    "-req",
    "-in",
    "origin.csr",
    "-CA",
    "ca.pem",
    "-CAkey",
    "ca.key",
    "-CAcreateserial",
    "-out",
    "origin.pem",
    "-days",
    "2",
    "-sha256",
    "-extfile",
    "origin.ext",
  ]);
  return `${dir}/ca.pem`;
}
