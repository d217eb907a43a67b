/**
 * Field presence. ONNX is proto2: a field written with its default value ("" or 0) is
 * different on the wire from an absent one. The IR stores plain values, so decode
 * records, per IR object, which fields were present with a default value, and encode
 * writes a field when its value is non-default or it was recorded here. IR objects
 * created by passes have no record and get the canonical encoding.
 */
const present = new WeakMap<object, Set<string>>();

/** Records fields of `msg` that are present on the wire but hold the default value. */
export function recordDefaults(irObject: object, msg: object, fields: readonly string[]): void {
  let set: Set<string> | undefined;
  for (const f of fields) {
    if (!Object.prototype.hasOwnProperty.call(msg, f)) continue;
    const v = (msg as Record<string, unknown>)[f];
    if (isDefault(v)) (set ??= new Set()).add(f);
  }
  if (set) present.set(irObject, set);
}

export function wasPresent(irObject: object, field: string): boolean {
  return present.get(irObject)?.has(field) ?? false;
}

export function markPresent(irObject: object, field: string): void {
  let set = present.get(irObject);
  if (!set) present.set(irObject, (set = new Set()));
  set.add(field);
}

function isDefault(v: unknown): boolean {
  if (v === '' || v === 0 || v === false || v === null || v === undefined) return true;
  if (typeof v === 'object' && v !== null && 'low' in v && 'high' in v) {
    const l = v as { low: number; high: number };
    return l.low === 0 && l.high === 0;
  }
  if (v instanceof Uint8Array) return v.byteLength === 0;
  return false;
}
