/** Conversions between protobufjs Long and the IR's number | bigint. */
import Long from 'long';
import type { Int64 } from '../attribute.js';

type LongLike = { low: number; high: number; unsigned?: boolean; toString(): string } | number;

export function fromLong(v: LongLike | null | undefined): Int64 {
  if (v === null || v === undefined) return 0;
  if (typeof v === 'number') return v;
  const n = v.high * 4294967296 + (v.low >>> 0);
  if (Number.isSafeInteger(n) && !v.unsigned) return n;
  if (v.unsigned) {
    const u = (v.high >>> 0) * 4294967296 + (v.low >>> 0);
    if (Number.isSafeInteger(u)) return u;
  }
  return BigInt(v.toString());
}

export function fromLongNumber(v: LongLike | null | undefined, what: string): number {
  const x = fromLong(v);
  if (typeof x === 'bigint') throw new RangeError(`${what} ${x} is too large`);
  return x;
}

export function fromLongBig(v: LongLike): bigint {
  if (typeof v === 'number') return BigInt(v);
  return BigInt(v.toString());
}

export function toLong(v: Int64, unsigned = false): Long {
  if (typeof v === 'bigint') return Long.fromString(v.toString(), unsigned);
  return Long.fromNumber(v, unsigned);
}
