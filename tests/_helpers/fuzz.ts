/**
 * Deterministic, bounded property-based testing helpers.
 *
 * A mulberry32 PRNG, seeded, so every run draws the same inputs; a failing
 * iteration reports its seed so that it can be replayed on its own:
 *
 * ```ts
 * forAll("prefixes need more bytes", { seed: 1, runs: 500 }, (r) => {
 *   const n = r.int(10); // 0..9
 * });
 * ```
 *
 * `FUZZ_SEED=123` replays one iteration seed (as printed on failure) once;
 * `FUZZ_RUNS=N` overrides every property's iteration count (for a longer
 * soak run by hand: the default counts keep each test file to seconds).
 *
 * @module
 */

/** A seeded pseudo-random generator (mulberry32). */
export interface Rng {
  /** The seed it started from. */
  readonly seed: number;
  /** A float in [0, 1). */
  next(): number;
  /** An integer in [0, max) (max >= 1). */
  int(max: number): number;
  /** An integer in [min, max] (inclusive). */
  range(min: number, max: number): number;
  /** True with probability p (default 1/2). */
  bool(p?: number): boolean;
  /** One element of a non-empty array. */
  pick<T>(arr: readonly T[]): T;
  /** n random bytes. */
  bytes(n: number): Uint8Array;
  /** A copy of `arr` in random order. */
  shuffle<T>(arr: readonly T[]): T[];
  /** A string of `len` characters drawn from `alphabet` (a string or a list of strings). */
  string(len: number, alphabet: string | readonly string[]): string;
}

/** A mulberry32 generator seeded with `seed` (any number; its low 32 bits are used). */
export function rng(seed: number): Rng {
  let state = seed >>> 0;
  const next = (): number => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (max: number): number => Math.floor(next() * max);
  return {
    seed: seed >>> 0,
    next,
    int,
    range: (min, max) => min + int(max - min + 1),
    bool: (p = 0.5) => next() < p,
    pick: <T>(arr: readonly T[]): T => {
      if (arr.length === 0) throw new RangeError("pick from an empty array");
      return arr[int(arr.length)];
    },
    bytes: (n) => {
      const out = new Uint8Array(n);
      for (let i = 0; i < n; i++) out[i] = int(256);
      return out;
    },
    shuffle: <T>(arr: readonly T[]): T[] => {
      const out = [...arr];
      for (let i = out.length - 1; i > 0; i--) {
        const j = int(i + 1);
        [out[i], out[j]] = [out[j], out[i]];
      }
      return out;
    },
    string: (len, alphabet) => {
      let s = "";
      for (let i = 0; i < len; i++) s += alphabet[int(alphabet.length)];
      return s;
    },
  };
}

/** The seed of iteration `i` of a property whose base seed is `seed`. */
export function iterationSeed(seed: number, i: number): number {
  // splitmix-style mixing, so neighbouring iterations draw unrelated streams.
  let z = (seed ^ Math.imul(i + 1, 0x9e3779b9)) >>> 0;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
  return (z ^ (z >>> 16)) >>> 0;
}

function envNumber(name: string): number | undefined {
  let v: string | undefined;
  try {
    v = Deno.env.get(name);
  } catch {
    return undefined; // no env permission: defaults
  }
  if (v === undefined || v === "") return undefined;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`${name}=${v} is not a whole number`);
  return n;
}

/** Options for {@linkcode forAll}. */
export interface ForAllOptions {
  /** Base seed; each iteration gets its own seed derived from it. */
  seed: number;
  /** Iterations. */
  runs: number;
}

/** The seeds of a property's iterations: FUZZ_SEED replays one, FUZZ_RUNS overrides the count. */
function iterationSeeds(opts: ForAllOptions): number[] {
  const replay = envNumber("FUZZ_SEED");
  if (replay !== undefined) return [replay];
  const runs = envNumber("FUZZ_RUNS") ?? opts.runs;
  return Array.from({ length: runs }, (_, i) => iterationSeed(opts.seed, i));
}

/**
 * Runs `property` `runs` times, each with a fresh generator. On the first
 * failure it throws an error naming the property, the base seed, the
 * iteration and the iteration's seed (replay it with `FUZZ_SEED=<seed>`),
 * with the original error as its cause and in its message.
 */
export function forAll(
  name: string,
  opts: ForAllOptions,
  property: (r: Rng, iteration: number) => void,
): void {
  const seeds = iterationSeeds(opts);
  for (let i = 0; i < seeds.length; i++) {
    try {
      property(rng(seeds[i]), i);
    } catch (e) {
      throw failure(name, opts.seed, i, seeds[i], e);
    }
  }
}

/** {@linkcode forAll} for an async property. */
export async function forAllAsync(
  name: string,
  opts: ForAllOptions,
  property: (r: Rng, iteration: number) => Promise<void>,
): Promise<void> {
  const seeds = iterationSeeds(opts);
  for (let i = 0; i < seeds.length; i++) {
    try {
      await property(rng(seeds[i]), i);
    } catch (e) {
      throw failure(name, opts.seed, i, seeds[i], e);
    }
  }
}

function failure(name: string, seed: number, i: number, iterSeed: number, e: unknown): Error {
  const why = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
  const msg = `property "${name}" failed at iteration ${i} (base seed ${seed}); ` +
    `replay with FUZZ_SEED=${iterSeed}\n${why}`;
  console.error(msg);
  return new Error(msg, { cause: e });
}
