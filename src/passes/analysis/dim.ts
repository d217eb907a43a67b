/**
 * Symbolic dimensions: polynomials with integer coefficients over named symbols
 * (`batch`, `sequence`, `past + sequence`, `batch·4`). Transformer exports compute their
 * shapes from Shape ops with +, −, ·, and exact division, so this is closed enough to
 * follow a Reshape target such as [B, T, 4, 8] or [T, B·4, 8] back to the graph inputs'
 * dimensions, and to compare two dims (B·T = T·B) exactly.
 */

/** A monomial: symbol names sorted, joined by '·' ('' for the constant term). */
type Monomial = string;

function monoSymbols(m: Monomial): string[] {
  return m === '' ? [] : m.split('·');
}

function monoMul(a: Monomial, b: Monomial): Monomial {
  if (a === '') return b;
  if (b === '') return a;
  return [...monoSymbols(a), ...monoSymbols(b)].sort().join('·');
}

/** a / b when b's symbols are a sub-multiset of a's, else undefined. */
function monoDiv(a: Monomial, b: Monomial): Monomial | undefined {
  if (b === '') return a;
  const rest = monoSymbols(a);
  for (const s of monoSymbols(b)) {
    const i = rest.indexOf(s);
    if (i < 0) return undefined;
    rest.splice(i, 1);
  }
  return rest.join('·');
}

/** Graded order: higher degree first, then lexicographic (for division). */
function monoCompare(a: Monomial, b: Monomial): number {
  const da = monoSymbols(a).length;
  const db = monoSymbols(b).length;
  if (da !== db) return db - da;
  // lexicographic over the symbols (not the joined string: 'a' and 'a_b' must order as symbols)
  const sa = monoSymbols(a);
  const sb = monoSymbols(b);
  for (let i = 0; i < sa.length; i++) if (sa[i] !== sb[i]) return sa[i]! < sb[i]! ? -1 : 1;
  return 0;
}

const EMPTY: ReadonlyMap<Monomial, number> = new Map();
/** Shared instances of small constants: shape inference makes millions of them. */
const SMALL = new Map<number, SymDim>();

export class SymDim {
  /** The integer value when the dim has no symbol (cached: it is read on every comparison). */
  private readonly constant: number | undefined;

  private constructor(private readonly terms: ReadonlyMap<Monomial, number>) {
    this.constant = terms.size === 0 ? 0 : terms.size === 1 && terms.has('') ? terms.get('')! : undefined;
  }

  static of(n: number): SymDim {
    const small = Number.isInteger(n) && n >= -1024 && n <= 1 << 20;
    if (small) {
      const hit = SMALL.get(n);
      if (hit) return hit;
    }
    const d = new SymDim(n === 0 ? EMPTY : new Map([['', n]]));
    if (small) SMALL.set(n, d);
    return d;
  }

  static sym(name: string): SymDim {
    // a symbol name must not contain the separator
    return new SymDim(new Map([[name.replace(/·/g, '.'), 1]]));
  }

  private static from(entries: Iterable<[Monomial, number]>): SymDim {
    const m = new Map<Monomial, number>();
    for (const [k, c] of entries) {
      const v = (m.get(k) ?? 0) + c;
      if (v === 0) m.delete(k);
      else m.set(k, v);
    }
    return new SymDim(m);
  }

  /** The integer value when the dim has no symbol. */
  get value(): number | undefined {
    return this.constant;
  }

  get isConstant(): boolean {
    return this.value !== undefined;
  }

  /** True when the dim is positive for every positive assignment of its symbols. */
  get isPositive(): boolean {
    if (this.terms.size === 0) return false;
    for (const c of this.terms.values()) if (c < 0) return false;
    return true;
  }

  /** Symbols the dim depends on. */
  symbols(): string[] {
    const s = new Set<string>();
    for (const m of this.terms.keys()) for (const x of monoSymbols(m)) s.add(x);
    return [...s].sort();
  }

  add(o: SymDim | number): SymDim {
    const b = typeof o === 'number' ? SymDim.of(o) : o;
    if (this.constant !== undefined && b.constant !== undefined) return SymDim.of(this.constant + b.constant);
    if (b.constant === 0) return this;
    if (this.constant === 0) return b;
    return SymDim.from([...this.terms, ...b.terms]);
  }

  sub(o: SymDim | number): SymDim {
    const b = typeof o === 'number' ? SymDim.of(o) : o;
    if (this.constant !== undefined && b.constant !== undefined) return SymDim.of(this.constant - b.constant);
    if (b.constant === 0) return this;
    return SymDim.from([...this.terms, ...[...b.terms].map(([k, c]): [Monomial, number] => [k, -c])]);
  }

  mul(o: SymDim | number): SymDim {
    const b = typeof o === 'number' ? SymDim.of(o) : o;
    if (this.constant !== undefined && b.constant !== undefined) return SymDim.of(this.constant * b.constant);
    if (b.constant === 1) return this;
    if (this.constant === 1) return b;
    const out: [Monomial, number][] = [];
    for (const [ka, ca] of this.terms) for (const [kb, cb] of b.terms) out.push([monoMul(ka, kb), ca * cb]);
    return SymDim.from(out);
  }

  /** this / o when the division is exact (multivariate division with no remainder), else undefined. */
  div(o: SymDim | number): SymDim | undefined {
    const d = typeof o === 'number' ? SymDim.of(o) : o;
    if (d.terms.size === 0) return undefined;
    if (d.constant === 1) return this;
    if (this.constant !== undefined && d.constant !== undefined) return this.constant % d.constant === 0 ? SymDim.of(this.constant / d.constant) : undefined;
    if (this.equals(d)) return SymDim.of(1);
    const dLead = [...d.terms.keys()].sort(monoCompare)[0]!;
    const dCoef = d.terms.get(dLead)!;
    let rem: SymDim = this;
    const quotient: [Monomial, number][] = [];
    for (let guard = 0; rem.terms.size > 0; guard++) {
      if (guard > 64) return undefined;
      const lead = [...rem.terms.keys()].sort(monoCompare)[0]!;
      const c = rem.terms.get(lead)!;
      const m = monoDiv(lead, dLead);
      if (m === undefined || c % dCoef !== 0) return undefined;
      const q = SymDim.from([[m, c / dCoef]]);
      quotient.push([m, c / dCoef]);
      rem = rem.sub(q.mul(d));
    }
    return SymDim.from(quotient);
  }

  equals(o: SymDim | number): boolean {
    if (typeof o === 'number') return this.constant === o;
    const b = o;
    if (b === this) return true;
    if (this.constant !== undefined || b.constant !== undefined) return this.constant === b.constant;
    if (b.terms.size !== this.terms.size) return false;
    for (const [k, c] of this.terms) if (b.terms.get(k) !== c) return false;
    return true;
  }

  /**
   * Whether this equals `o` for every assignment (true / false), or undefined when it
   * depends on the symbols. A positive symbolic dim never equals a constant ≤ 0.
   */
  compare(o: SymDim): boolean | undefined {
    if (this.equals(o)) return true;
    const a = this.value;
    const b = o.value;
    if (a !== undefined && b !== undefined) return a === b;
    if ((this.isPositive && b !== undefined && b <= 0) || (o.isPositive && a !== undefined && a <= 0)) return false;
    return undefined;
  }

  /** The value under an assignment of the symbols, or undefined when a symbol is unassigned. */
  evaluate(assign: ReadonlyMap<string, number>): number | undefined {
    let total = 0;
    for (const [m, k] of this.terms) {
      let t = k;
      for (const s of monoSymbols(m)) {
        const v = assign.get(s);
        if (v === undefined) return undefined;
        t *= v;
      }
      total += t;
    }
    return total;
  }

  toString(): string {
    if (this.terms.size === 0) return '0';
    const parts = [...this.terms.keys()].sort(monoCompare).map((m) => {
      const c = this.terms.get(m)!;
      if (m === '') return String(c);
      const body = monoSymbols(m).join('·');
      return c === 1 ? body : c === -1 ? `-${body}` : `${c}·${body}`;
    });
    return parts.join(' + ').replace(/\+ -/g, '- ');
  }
}

/** Product of dims (1 for none). */
export function product(dims: readonly SymDim[]): SymDim {
  let p = SymDim.of(1);
  for (const d of dims) p = p.mul(d);
  return p;
}
