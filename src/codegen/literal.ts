/** TypeScript literals for plain data (the spec constant of a generated module), written with ts-morph's writer. */
import type { CodeBlockWriter } from 'ts-morph';
import { propertyKey, quote } from './names.js';

function isPrimitive(v: unknown): boolean {
  return v === null || ['boolean', 'number', 'string'].includes(typeof v);
}

function primitive(v: unknown): string {
  if (typeof v === 'string') return quote(v);
  if (typeof v === 'number') return Number.isFinite(v) ? String(v) : 'null';
  return String(v);
}

/** Inline when it holds primitives only (and arrays of them), one line per entry otherwise. */
function inline(v: unknown): boolean {
  if (isPrimitive(v)) return true;
  if (Array.isArray(v)) return v.every(isPrimitive);
  return typeof v === 'object' && Object.values(v as object).every((x) => isPrimitive(x) || (Array.isArray(x) && x.every(isPrimitive)));
}

function inlineText(v: unknown): string {
  if (isPrimitive(v)) return primitive(v);
  if (Array.isArray(v)) return `[${v.map(inlineText).join(', ')}]`;
  const entries = Object.entries(v as Record<string, unknown>).filter(([, x]) => x !== undefined);
  return entries.length ? `{ ${entries.map(([k, x]) => `${propertyKey(k)}: ${inlineText(x)}`).join(', ')} }` : '{}';
}

/** Writes `v` (JSON-like data; undefined entries are left out) as a literal at the writer's position. */
export function writeLiteral(w: CodeBlockWriter, v: unknown): void {
  if (inline(v) && (isPrimitive(v) || Array.isArray(v))) {
    w.write(inlineText(v));
    return;
  }
  if (Array.isArray(v)) {
    w.write('[').newLine();
    w.indent(() => {
      for (const x of v) {
        if (inline(x)) w.write(inlineText(x));
        else writeLiteral(w, x);
        w.write(',').newLine();
      }
    });
    w.write(']');
    return;
  }
  if (typeof v === 'object' && v !== null) {
    const entries = Object.entries(v as Record<string, unknown>).filter(([, x]) => x !== undefined);
    if (!entries.length) {
      w.write('{}');
      return;
    }
    w.write('{').newLine();
    w.indent(() => {
      for (const [k, x] of entries) {
        w.write(`${propertyKey(k)}: `);
        if (inline(x)) w.write(inlineText(x));
        else writeLiteral(w, x);
        w.write(',').newLine();
      }
    });
    w.write('}');
    return;
  }
  w.write(primitive(v));
}

