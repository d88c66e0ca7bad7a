/**
 * Secret redaction for everything that reaches the access log.
 *
 * The log is meant to be grepped, shared in bug reports and kept for weeks, so
 * it must never hold a credential. We keep the URL's shape (scheme, host, path,
 * parameter names) so that `grep github.com` and per-host stats still work, and
 * replace only the secret parts with {@linkcode REDACTED}.
 *
 * The URL is never re-serialised through `new URL()`: that would normalise
 * spelling and make the log disagree with what the client sent.
 *
 * @module
 */

/** What a secret is replaced with. */
export const REDACTED = "REDACTED";

/** Query/fragment parameter names whose value is always a secret (compared lower-cased). */
const SECRET_PARAMS = new Set([
  "token",
  "access_token",
  "refresh_token",
  "id_token",
  "auth_token",
  "private_token",
  "api_key",
  "api-key",
  "apikey",
  "key",
  "secret",
  "client_secret",
  "password",
  "passwd",
  "pwd",
  "pass",
  "auth",
  "authorization",
  "bearer",
  "signature",
  "sig",
  "x-amz-signature",
  "x-amz-credential",
  "x-amz-security-token",
  "x-goog-signature",
  "x-goog-credential",
  "code",
  "session",
  "sessionid",
  "jsessionid",
  "phpsessid",
  "session_id",
  "sid",
  "jwt",
  "credential",
  "credentials",
]);

/** Names that contain a secret-sounding fragment but describe, not carry, a secret. */
const PUBLIC_PARAMS = new Set(["token_type", "token_type_hint", "signature_method", "sigalg"]);

/** Name fragments that mark a parameter as secret wherever they appear in its name. */
const SECRET_NAME_PARTS = [
  "token",
  "secret",
  "passw",
  "passphrase",
  "passcode",
  "privatekey",
  "private_key",
  "accesskey",
  "authkey",
  "auth_code",
  "authcode",
  "apikey",
  "api_key",
  "signature",
  "credential",
  "pass_word",
  "pass-word",
  "pwd",
  "sessid",
  "sessionid",
  "session_id",
  "session-id",
];

/** Well-known token prefixes (GitHub, GitLab, Slack, OpenAI/Stripe-style, AWS access key ids). */
const TOKEN_PREFIXES = [
  "ghp_",
  "gho_",
  "ghu_",
  "ghs_",
  "ghr_",
  "github_pat_",
  "glpat-",
  "xoxb-",
  "xoxp-",
  "xoxa-",
  "xoxs-",
  "sk-",
  "sk_live_",
  "rk_live_",
  "AKIA",
  "ASIA",
];

/**
 * True when a parameter name says its value is a secret. Frameworks read
 * more into a name than its letters: PHP and Rails take `key[]`,
 * `api[key]` and `user[password]` apart at the brackets, and PHP turns
 * spaces and dots into underscores (`api+key` arrives as `api_key`). Each
 * of those readings is checked, so the log keeps none of them.
 */
export function isSecretParamName(name: string): boolean {
  const spelled = decodeEscapes(name.replaceAll("+", " ")).trim();
  for (const reading of nameReadings(spelled)) if (secretName(reading)) return true;
  return false;
}

/** Most bracketed parts of a name that are read (a name is short; a hostile one is not). */
const MAX_NAME_PARTS = 8;

function nameReadings(spelled: string): string[] {
  const out = [spelled];
  // PHP also reads an unclosed `[` as `_` (`api[key` is `api_key`).
  if (/[ .[]/.test(spelled)) out.push(spelled.replace(/[ .[]/g, "_"));
  // What follows the last `?`, escaped or not (`#/cb%3Fcode=...`), as for
  // a query inside a fragment route (see redactParams).
  const asked = spelled.lastIndexOf("?");
  if (asked >= 0) out.push(...nameReadings(spelled.slice(asked + 1).trim()));
  const open = spelled.indexOf("[");
  if (open >= 0) {
    const base = spelled.slice(0, open);
    const parts: string[] = [];
    // Each `[...]`, from a `[` to the first `]` after it, found with indexOf:
    // a regex retried at every `[` of a long unclosed run is quadratic, and
    // this runs for every parameter of every logged request.
    let at = open;
    for (let seen = 0; at >= 0 && seen < MAX_NAME_PARTS; seen++) {
      const close = spelled.indexOf("]", at + 1);
      if (close < 0) break;
      if (close > at + 1) parts.push(spelled.slice(at + 1, close));
      at = spelled.indexOf("[", close + 1);
    }
    out.push(base, ...parts);
    if (parts.length > 0) out.push([base, ...parts].join("_"));
  }
  return out;
}

function secretName(spelled: string): boolean {
  const n = spelled.toLowerCase();
  if (SECRET_PARAMS.has(n)) return true;
  if (PUBLIC_PARAMS.has(n)) return false;
  for (const part of SECRET_NAME_PARTS) if (n.includes(part)) return true;
  // `access_key`, `subscription-key`, `accessKey`, but not `monkey`, `keyword` or `sortKey`.
  // `db_pass`, `user-pass` (not `bypass`, `compass`), `user_session`, `_app_session`.
  if (/[_.-](?:pass|session)$/.test(n)) return true;
  return n.endsWith("_key") || n.endsWith("-key") || n.endsWith(".key") ||
    /(?:access|private|secret|api|auth|signing|encryption|master|session|client|license|account|subscription|app)Key$/i
      .test(spelled);
}

const utf8 = new TextDecoder();
const ESCAPE_RUN = /(?:%[0-9a-f]{2})+/gi;

/**
 * Decodes percent-escapes as UTF-8, like `decodeURIComponent`, but never
 * throws: a stray `%` stays, and bytes that are not UTF-8 become U+FFFD.
 * The exception `decodeURIComponent` throws for `%FF` costs microseconds,
 * and a 64 KB query of `%FF&%FF&...` paid it per parameter, twice per
 * record, on the proxy's only thread.
 */
function decodeEscapes(s: string): string {
  if (!s.includes("%")) return s;
  return s.replace(ESCAPE_RUN, (run) => {
    const bytes = new Uint8Array(run.length / 3);
    for (let i = 0; i < bytes.length; i++) bytes[i] = parseInt(run.slice(i * 3 + 1, i * 3 + 3), 16);
    return utf8.decode(bytes);
  });
}

function isBase64UrlChar(c: number): boolean {
  return (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c === 45 ||
    c === 95;
}

/** A JSON Web Token: three base64url segments, the first starting with `eyJ` (`{"`). */
function looksLikeJwt(v: string): boolean {
  if (!v.startsWith("eyJ") || v.length < 20) return false;
  let dots = 0;
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i);
    if (c === 46) dots++;
    else if (!isBase64UrlChar(c) && c !== 61) return false;
  }
  return dots === 2;
}

function hasTokenPrefix(v: string): boolean {
  for (const p of TOKEN_PREFIXES) {
    if (v.startsWith(p) && v.length >= p.length + 16) return true;
  }
  return false;
}

/**
 * True when a value looks like a credential on its own: a JWT, a well-known
 * token prefix, 32+ hex digits, or 32+ base64 characters mixing upper case,
 * lower case and digits (ordinary words and slugs do not).
 */
export function looksLikeSecret(value: string): boolean {
  // Decoding only shortens a value.
  if (value.length < 16) return false;
  const v = decodeEscapes(value);
  if (v.length < 16) return false;
  if (secretOnItsOwn(v)) return true;
  // A token inside a longer value: `Bearer TOKEN`, `Basic ...`, a list
  // (`a,TOKEN`), `user:TOKEN`. `+` is a space in a query, and a base64
  // character too: both readings.
  if (!VALUE_SEPARATOR.test(v)) return false;
  for (const parts of [v.split(VALUE_SEPARATORS), v.split(VALUE_SEPARATORS_PLUS)]) {
    if (parts.length < 2) continue;
    for (const p of parts) if (p.length >= 16 && secretOnItsOwn(p)) return true;
  }
  return false;
}

const VALUE_SEPARATOR = /[\s,:|+]/;
const VALUE_SEPARATORS = /[\s,:|]+/;
const VALUE_SEPARATORS_PLUS = /[\s,:|+]+/;

/** {@linkcode looksLikeSecret} for one decoded value, taken whole. */
function secretOnItsOwn(v: string): boolean {
  if (looksLikeJwt(v) || hasTokenPrefix(v)) return true;
  if (v.length < 32) return false;
  let hex = true, upper = false, lower = false, digit = false;
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i);
    const isDigit = c >= 48 && c <= 57;
    const isUpper = c >= 65 && c <= 90;
    const isLower = c >= 97 && c <= 122;
    if (!(isDigit || (c >= 97 && c <= 102) || (c >= 65 && c <= 70))) hex = false;
    if (isDigit) digit = true;
    else if (isUpper) upper = true;
    else if (isLower) lower = true;
    else if (c !== 43 && c !== 47 && c !== 61 && c !== 45 && c !== 95) return false;
  }
  return hex || (upper && lower && digit);
}

/**
 * Redacts the values of secret parameters in `a=1&b=2` (a query or a
 * fragment). `;` separates parameters too, as some servers take it.
 */
function redactParams(params: string): string {
  if (params === "") return params;
  // Separators are kept at the odd indexes, so the text is rebuilt as it was.
  const parts = params.split(/([&;])/);
  let changed = false;
  for (let i = 0; i < parts.length; i += 2) {
    const part = parts[i];
    const eq = part.indexOf("=");
    if (eq < 0) {
      // A bare value (`?eyJ...`) can be a secret too.
      if (looksLikeSecret(part)) {
        parts[i] = REDACTED;
        changed = true;
      }
      continue;
    }
    const value = part.slice(eq + 1);
    if (value === "" || value === REDACTED) continue;
    // A name such as `/cb?code` (a query inside a fragment route) is also
    // read from its last `?` on: see nameReadings.
    if (isSecretParamName(part.slice(0, eq)) || looksLikeSecret(value)) {
      parts[i] = `${part.slice(0, eq + 1)}${REDACTED}`;
      changed = true;
      continue;
    }
    // A URL in a parameter (`?next=https%3A%2F%2F...%3Ftoken%3D...`, a
    // redirect target) carries its own credentials and query.
    const nested = nestedUrlRedacted(value);
    if (nested !== undefined) {
      parts[i] = `${part.slice(0, eq + 1)}${nested}`;
      changed = true;
    }
  }
  return changed ? parts.join("") : params;
}

/** How deep URLs inside parameters are followed; a deeper one is redacted whole. */
const MAX_NESTING = 4;
let nesting = 0;

/**
 * A parameter value that is a URL, absolute or relative (as is, or
 * percent-encoded once or more, as a redirect target is), with its secrets
 * redacted; undefined when it is no URL or had none. An encoded one with a
 * secret is redacted whole: its spelling cannot be kept around the cut.
 */
function nestedUrlRedacted(value: string): string | undefined {
  let decoded = value;
  for (let i = 0; i < 3 && /%[0-9a-f]{2}/i.test(decoded); i++) decoded = lenientDecode(decoded);
  if (!hasNestedScheme(decoded) && !looksLikeRelativeUrl(decoded)) return undefined;
  if (nesting >= MAX_NESTING) return REDACTED;
  nesting++;
  let r: string;
  try {
    r = redactUrl(decoded);
  } finally {
    nesting--;
  }
  if (r === decoded) return undefined;
  return decoded === value ? r : REDACTED;
}

/**
 * A redirect target without `scheme://` that can still carry secrets: a
 * query (`/cb?code=...`, `cb?token=...`), or userinfo after `//` or after a
 * scheme and one slash (`//user:pw@h`, `https:/user:pw@h`, which URL parsers
 * read as `https://user:pw@h`).
 */
function looksLikeRelativeUrl(s: string): boolean {
  return s.includes("?") || (s.includes("@") && /^(?:[/\\]|[a-z][a-z0-9+.-]*:[/\\])/i.test(s));
}

/**
 * Whether `s` has a scheme and `//` (or either slash spelled as a backslash)
 * anywhere: `[a-z][a-z0-9+.-]*:[/\\]{2}`, found in linear time. The regex
 * itself retries the run from every letter of it, which is quadratic: a
 * 64 KB value like `a.a.a.` took a second, and the proxy has one thread.
 */
export function hasNestedScheme(s: string): boolean {
  for (let colon = s.indexOf(":"); colon >= 0; colon = s.indexOf(":", colon + 1)) {
    if (!isSlash(s.charCodeAt(colon + 1)) || !isSlash(s.charCodeAt(colon + 2))) continue;
    // The scheme may start at any letter of the run of scheme characters
    // before the colon; runs end at a colon, so each is scanned once.
    for (let i = colon - 1; i >= 0 && isSchemeChar(s.charCodeAt(i)); i--) {
      if (isLetter(s.charCodeAt(i))) return true;
    }
  }
  return false;
}

function isSlash(c: number): boolean {
  return c === 47 || c === 92;
}

function isLetter(c: number): boolean {
  return (c >= 97 && c <= 122) || (c >= 65 && c <= 90);
}

function isSchemeChar(c: number): boolean {
  return isLetter(c) || (c >= 48 && c <= 57) || c === 43 || c === 45 || c === 46;
}

/** Decodes each `%XX` on its own (bytes as Latin-1), keeping malformed ones; `+` is a space. */
function lenientDecode(s: string): string {
  return s.replaceAll("+", " ").replace(
    /%([0-9a-f]{2})/gi,
    (_m, h: string) => String.fromCharCode(parseInt(h, 16)),
  );
}

/**
 * Redacts path segments that are secrets on their own (JWTs, prefixed
 * tokens), and secret path parameters (`/x;jsessionid=...`).
 */
function redactPath(path: string): string {
  if (path.length < 17 && !path.includes(";")) return path;
  const segments = path.split("/");
  let changed = false;
  for (let i = 0; i < segments.length; i++) {
    const s = segments[i];
    if (s.length >= 16 && (looksLikeJwt(s) || hasTokenPrefix(s))) {
      segments[i] = REDACTED;
      changed = true;
      continue;
    }
    const semi = s.indexOf(";");
    if (semi < 0) continue;
    const params = redactParams(s.slice(semi + 1));
    if (params !== s.slice(semi + 1)) {
      segments[i] = `${s.slice(0, semi + 1)}${params}`;
      changed = true;
    }
  }
  return changed ? segments.join("/") : path;
}

/**
 * Returns `url` with its secrets replaced by `REDACTED`:
 * - credentials in the authority (`https://user:pass@host/` -> `https://REDACTED@host/`);
 * - values of query and fragment parameters whose name marks a secret
 *   (`token`, `access_token`, `api_key`, `password`, `signature`,
 *   `X-Amz-Signature`, `client_secret`, `code`, `session`, `jwt`, anything
 *   containing `token`/`secret`/`passw`/`passphrase`/`credential`, or ending in
 *   `_key` or `Key`), and the secrets of a URL inside a parameter;
 * - values that look like secrets whatever their name (JWTs, `ghp_...`-style
 *   tokens, 32+ hex digits, long mixed-case base64);
 * - path segments that are JWTs or prefixed tokens.
 *
 * Anything else (tunnel targets `host:port`, ordinary paths) is returned unchanged.
 */
export function redactUrl(url: string): string {
  let rest = url;
  let head = "";
  const scheme = SCHEME.exec(url);
  if (scheme) {
    let authStart = scheme[0].length;
    // `http:///user:pw@h/` is `http://user:pw@h/` to URL parsers (browsers,
    // WHATWG): extra slashes before the authority are skipped, and so are
    // backslashes, which they read as slashes (`http:\/user:pw@h/`).
    while (isSlash(url.charCodeAt(authStart))) authStart++;
    const authEnd = authorityEnd(url, authStart);
    let authority = url.slice(authStart, authEnd);
    const at = authority.lastIndexOf("@");
    if (at >= 0) authority = `${REDACTED}@${authority.slice(at + 1)}`;
    head = url.slice(0, authStart) + authority;
    rest = url.slice(authEnd);
  } else if (url.includes("@")) {
    // No `scheme://`: a tunnel target (`user:pass@host:port`) or a malformed
    // request target (`//user:pass@h/x`, `http:/user:pass@h/x`). Whatever
    // comes before the last `@` of its authority-like first part goes.
    const start = AUTHORITY_PREFIX.exec(url)![0].length;
    const end = authorityEnd(url, start);
    const at = url.lastIndexOf("@", end - 1);
    if (at >= start) {
      head = `${url.slice(0, start)}${REDACTED}${url.slice(at, end)}`;
      rest = url.slice(end);
    }
  }

  const hashAt = rest.indexOf("#");
  let fragment = "";
  if (hashAt >= 0) {
    fragment = rest.slice(hashAt + 1);
    rest = rest.slice(0, hashAt);
  }
  const queryAt = rest.indexOf("?");
  let query: string | undefined;
  if (queryAt >= 0) {
    query = rest.slice(queryAt + 1);
    rest = rest.slice(0, queryAt);
  }
  let out = head + redactPath(rest);
  if (query !== undefined) out += `?${redactParams(query)}`;
  if (hashAt >= 0) out += `#${redactParams(fragment)}`;
  return out;
}

/**
 * A request target whose end never arrived (the client closed, or the head
 * outgrew its limit, in the middle of it). An authority that runs to the cut
 * may be userinfo whose `@` was cut off (`http://user:pass`), so it is
 * redacted whole; otherwise as {@linkcode redactUrl}.
 */
export function redactCutTarget(target: string): string {
  let start: number;
  const scheme = SCHEME.exec(target);
  if (scheme) {
    start = scheme[0].length;
    while (isSlash(target.charCodeAt(start))) start++;
  } else {
    start = AUTHORITY_PREFIX.exec(target)![0].length;
  }
  if (authorityEnd(target, start) === target.length) return `${target.slice(0, start)}${REDACTED}`;
  return redactUrl(target);
}

/** Where the authority starting at `from` ends: at the first `/`, `?` or `#`. */
function authorityEnd(url: string, from: number): number {
  for (let i = from; i < url.length; i++) {
    const c = url.charCodeAt(i);
    if (c === 47 || c === 63 || c === 35) return i; // / ? #
  }
  return url.length;
}

/**
 * `scheme://` at the start, either slash possibly a backslash: URL parsers
 * read `http:\/user:pw@h` as `http://user:pw@h`.
 */
const SCHEME = /^[a-z][a-z0-9+.-]*:[/\\]{2}/i;
/** What may precede an authority when there is no `scheme://`: `scheme:/`, slashes, backslashes. */
const AUTHORITY_PREFIX = /^(?:[a-z][a-z0-9+.-]*:(?=[/\\]))?[/\\]*/i;

const URL_IN_TEXT = /[a-z][a-z0-9+.-]{0,15}:[/\\]{2}[^\s"'<>]+/gi;
/** The cheap test before {@linkcode URL_IN_TEXT}. */
const SCHEME_SLASHES = /:[/\\]{2}/;

/**
 * Redacts every URL embedded in free text (a decision reason such as
 * `rule "https://x/?token=..": allow-url`, or an error message).
 */
export function redactText(text: string): string {
  let out = SCHEME_SLASHES.test(text) ? text.replace(URL_IN_TEXT, (u) => redactUrl(u)) : text;
  // An authority quoted without a scheme (a bad Host header or CONNECT target
  // echoed in an error) can still carry `user:password@`.
  if (out.includes("@")) out = out.replace(USERINFO_IN_TEXT, `$1$2${REDACTED}@`);
  // A quoted request target without a scheme (`"/x?token=.."`, a CONNECT
  // target or Host value with a query, a whole request line) has its
  // parameters redacted too; a quote that never closes runs to the end of
  // the text (fail closed).
  if (out.includes('"')) {
    out = out.replace(QUOTED, (q, body: string, close: string) => {
      const r = redactTargets(body);
      return r === body ? q : `"${r}${close}`;
    });
  }
  return out;
}

// The body's parts (a character, or an escape) cannot overlap, and every
// body ends at a closing quote or at the end (past a lone backslash), so a
// match never fails: a quote that never closes is not retried from each `"`
// after it, which was quadratic.
const QUOTED = /"((?:[^"\\]|\\[^])*)("|\\?$)/g;
const TARGET_CHAR = /[@?#;/]/;

/**
 * Redacts every whitespace-separated word of `text` that could be a URL or
 * request target (it has `@`, `?`, `#`, `;` or `/`) as {@linkcode redactUrl}
 * does: a request line, a CONNECT target, a Host value. Error messages quote
 * these; redacting before they are cut short keeps a cut from hiding the end
 * of a secret (`http://user:pass` without its `@`).
 */
export function redactTargets(text: string): string {
  if (!TARGET_CHAR.test(text)) return text;
  // Words at the even indexes, the white space between them at the odd ones.
  const parts = text.split(SPACES);
  let out = "";
  for (let i = 0; i < parts.length; i += 2) {
    const w = parts[i];
    if (i > 0) out += parts[i - 1];
    if (!TARGET_CHAR.test(w)) {
      out += w;
      continue;
    }
    // A client that does not escape spaces (a URL built from strings) sends
    // a target of several words: `/?q=a b&token=...`, `http://u:p w@h/`. A
    // target still in its query, fragment or authority runs on to the
    // request line's HTTP version (or the end), and is redacted as one.
    let j = i;
    if (opensRun(w)) {
      while (j + 2 < parts.length && parts[j + 2] !== "" && !HTTP_VERSION.test(parts[j + 2])) {
        j += 2;
      }
    }
    if (j === i) {
      out += redactUrl(w);
    } else {
      // And each later word that holds parameters, read as parameters of
      // their own (`/?a=1 api_key=...`: a space may have stood for a `&`).
      const run = redactUrl(parts.slice(i, j + 1).join("")).split(SPACES);
      for (let k = 2; k < run.length; k += 2) {
        if (run[k].includes("=")) run[k] = redactParams(run[k]);
      }
      out += run.join("");
    }
    i = j;
  }
  return out;
}

const SPACES = /(\s+)/;
const HTTP_VERSION = /^HTTP\/\d/i;

/** A word that a raw space may have cut: in its query or fragment, or in its authority. */
function opensRun(w: string): boolean {
  if (w.includes("?") || w.includes("#")) return true;
  const scheme = SCHEME.exec(w);
  if (!scheme) return false;
  let start = scheme[0].length;
  while (isSlash(w.charCodeAt(start))) start++;
  return authorityEnd(w, start) === w.length;
}

// Also after `scheme:/` or slashes (or backslashes): `"//user:pass@h/x"`, `"http:/user:pass@h"`.
// The run of slashes is taken whole (`(?=(...))\3`, an atomic group): the
// userinfo may contain backslashes too, and retrying every split of a long
// run between the two would be quadratic.
const USERINFO_IN_TEXT =
  /(^|[\s"'(])((?:[a-z][a-z0-9+.-]*:(?=[/\\]))?(?=([/\\]*))\3)[^\s"'()<>/@]+@/gi;

/** Longest error text a record keeps, in UTF-16 units. */
export const MAX_ERROR_CHARS = 2000;

/**
 * An error text cut to {@linkcode MAX_ERROR_CHARS}, after redaction (a cut
 * first could keep the start of a secret that redaction no longer sees).
 * Errors quote what a client sent (a bad Host header of up to 64 KiB): one
 * such request must not add 64 KiB to the log, nor to the line the proxy
 * prints for it.
 */
export function capText(s: string): string {
  if (s.length <= MAX_ERROR_CHARS) return s;
  return `${s.slice(0, MAX_ERROR_CHARS)}... (${s.length - MAX_ERROR_CHARS} more characters)`;
}
