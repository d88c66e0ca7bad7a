/**
 * A header list as received: order, spelling and duplicates kept.
 * @module
 */

/**
 * Header fields in wire order. `names` keeps the sender's spelling (some
 * servers care), `lower` is the lower-cased name used for lookups.
 */
export class HeaderList {
  readonly names: string[] = [];
  readonly lower: string[] = [];
  readonly values: string[] = [];

  get length(): number {
    return this.names.length;
  }

  add(name: string, value: string): void {
    this.names.push(name);
    this.lower.push(name.toLowerCase());
    this.values.push(value);
  }

  /** First value of a field (`name` lower-case), or undefined. */
  get(name: string): string | undefined {
    const i = this.lower.indexOf(name);
    return i < 0 ? undefined : this.values[i];
  }

  /** All values of a field (`name` lower-case), in order. */
  getAll(name: string): string[] {
    const out: string[] = [];
    for (let i = 0; i < this.lower.length; i++) {
      if (this.lower[i] === name) out.push(this.values[i]);
    }
    return out;
  }

  /** How many times a field occurs (`name` lower-case). */
  count(name: string): number {
    let n = 0;
    for (let i = 0; i < this.lower.length; i++) if (this.lower[i] === name) n++;
    return n;
  }

  has(name: string): boolean {
    return this.lower.includes(name);
  }
}

/**
 * The comma-separated tokens of list-valued fields such as Connection,
 * lower-cased, empty elements dropped.
 */
export function listTokens(values: string[]): string[] {
  const out: string[] = [];
  for (const v of values) {
    for (const part of v.split(",")) {
      const t = part.trim().toLowerCase();
      if (t !== "") out.push(t);
    }
  }
  return out;
}
