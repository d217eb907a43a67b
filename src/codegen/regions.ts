/**
 * User regions of a generated module: the lines between `// <user-code name="NAME">` and
 * `// </user-code>` belong to the user. Regenerating reads them from the existing file and
 * puts them back, verbatim, into the regions of the same name in the new text.
 */
import { UserInputError } from '../ir/index.js';

const OPEN = /^\s*\/\/ <user-code name="([^"]*)">\s*$/;
const CLOSE = /^\s*\/\/ <\/user-code>\s*$/;

export interface UserRegion {
  name: string;
  /** The lines between the markers, as they are (line ends excluded). */
  lines: string[];
  /** 1-based line of the opening marker. */
  line: number;
}

export function openMarker(name: string): string {
  return `// <user-code name="${name}">`;
}

export const CLOSE_MARKER = '// </user-code>';

/** The regions of `text`, by name; a malformed region (unclosed, nested, repeated, stray end) is a UserInputError naming `file` and the line. */
export function parseRegions(text: string, file: string): Map<string, UserRegion> {
  const regions = new Map<string, UserRegion>();
  let open: UserRegion | undefined;
  text.split('\n').forEach((raw, i) => {
    const l = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    const m = OPEN.exec(l);
    if (m) {
      if (open) throw new UserInputError(`${file}:${i + 1}: user-code region '${m[1]}' starts inside region '${open.name}' (line ${open.line}), which is not closed: add '${CLOSE_MARKER}'`);
      const name = m[1]!;
      if (!name) throw new UserInputError(`${file}:${i + 1}: a user-code region needs a name`);
      const prev = regions.get(name);
      if (prev) throw new UserInputError(`${file}:${i + 1}: user-code region '${name}' appears twice (also line ${prev.line})`);
      open = { name, lines: [], line: i + 1 };
      return;
    }
    if (CLOSE.test(l)) {
      if (!open) throw new UserInputError(`${file}:${i + 1}: '${CLOSE_MARKER}' without a region opened before it`);
      regions.set(open.name, open);
      open = undefined;
      return;
    }
    open?.lines.push(raw);
  });
  if (open) throw new UserInputError(`${file}:${open.line}: user-code region '${open.name}' is not closed: add '${CLOSE_MARKER}'`);
  return regions;
}

/**
 * `generated` (whose regions are empty) with the lines of `kept` put into the regions of
 * the same name. A kept region with lines but no place in the new text is a UserInputError:
 * its code would be lost.
 */
export function fillRegions(generated: string, kept: Map<string, UserRegion>, file: string): string {
  const places = parseRegions(generated, '(generated)');
  const lost = [...kept.values()].filter((r) => !places.has(r.name) && r.lines.some((l) => l.trim() !== ''));
  if (lost.length) {
    throw new UserInputError(
      `${file}: user-code region${lost.length > 1 ? 's' : ''} ${lost.map((r) => `'${r.name}' (line ${r.line})`).join(', ')} ` +
        `${lost.length > 1 ? 'are' : 'is'} not one codegen writes (${[...places.keys()].join(', ')}): move the code into one of those, then re-run`,
    );
  }
  const out: string[] = [];
  for (const l of generated.split('\n')) {
    out.push(l);
    const m = OPEN.exec(l);
    if (m) out.push(...(kept.get(m[1]!)?.lines ?? []));
  }
  return out.join('\n');
}
