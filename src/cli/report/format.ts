/** Small formatting helpers shared by the text reports. */
import type { OutStream } from '../context.js';

/** 1234567 → "1,234,567". */
export function formatCount(n: number): string {
  return Math.round(n).toLocaleString('en-US');
}

/** Bytes in binary units: 512 B, 1.5 KiB, 3.25 GiB. */
export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = n;
  let u = -1;
  do {
    v /= 1024;
    u++;
  } while (v >= 1024 && u < units.length - 1);
  return `${v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)} ${units[u]}`;
}

/** Lays out rows of cells in left-aligned columns separated by two spaces. */
export function columns(rows: string[][], indent = ''): string[] {
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  return rows.map((r) => indent + r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ').trimEnd());
}

/**
 * Breaks `line` at spaces so that no piece is wider than `width`; continuation lines are
 * indented by the line's own indent plus `hang`. A word wider than the line (a long
 * tensor name) is kept whole rather than cut.
 */
export function wrapLine(line: string, width: number, hang = 4): string[] {
  if (line.length <= width) return [line];
  const indent = /^ */.exec(line)![0];
  const cont = indent + ' '.repeat(hang);
  const words = line.slice(indent.length).split(/ +/);
  const out: string[] = [];
  let cur = indent;
  let empty = true;
  for (const w of words) {
    if (!empty && cur.length + 1 + w.length > width) {
      out.push(cur);
      cur = cont + w;
    } else cur += (empty ? '' : ' ') + w;
    empty = false;
  }
  out.push(cur);
  return out;
}

/** On a terminal, wraps every line at its width; piped output keeps whole lines (for grep and scripts). */
export function wrapForTerminal(lines: readonly string[], stream: OutStream, hang = 4): string[] {
  if (!stream.isTTY) return [...lines];
  const width = Math.max(40, stream.columns ?? 100);
  return lines.flatMap((l) => wrapLine(l, width, hang));
}
