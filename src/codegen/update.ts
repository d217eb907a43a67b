/**
 * Regenerating over an existing module: the user-code regions of the file on disk go into
 * the new text by name, and the top-level declarations (read with ts-morph) tell what
 * changed. A file that codegen did not write is never overwritten.
 */
import { Node, Project } from 'ts-morph';
import { UserInputError } from '../ir/index.js';
import { GENERATED_MARK } from './model_module.js';
import { fillRegions, parseRegions } from './regions.js';

export interface Update {
  /** The new file: the generated text with the user's regions put back. */
  text: string;
  /** Regions carried over that hold code. */
  userCode: string[];
  /** Top-level declarations (and 'header') that differ from the existing file, in the new file's order, then the removed ones. */
  changed: string[];
}

/** The header (everything before the first user-code region) and each named top-level declaration's text, JSDoc included. */
function parts(text: string): Map<string, string> {
  const out = new Map<string, string>();
  const region = text.indexOf('\n// <user-code name=');
  out.set('header', region < 0 ? '' : text.slice(0, region));
  const sf = new Project({ useInMemoryFileSystem: true }).createSourceFile('/module.ts', text);
  for (const st of sf.getStatements()) {
    let name: string | undefined;
    if (Node.isInterfaceDeclaration(st) || Node.isTypeAliasDeclaration(st) || Node.isEnumDeclaration(st)) name = st.getName();
    else if (Node.isClassDeclaration(st) || Node.isFunctionDeclaration(st)) name = st.getName();
    else if (Node.isVariableStatement(st)) name = st.getDeclarations()[0]?.getName();
    if (name && !out.has(name)) out.set(name, st.getText(true));
  }
  return out;
}

/** `generated` merged with `existing` (the file at `file`, or undefined when there is none). */
export function updateModule(generated: string, existing: string | undefined, file: string): Update {
  if (existing === undefined) {
    return { text: generated, userCode: [], changed: [...parts(generated).keys()] };
  }
  if (!existing.startsWith(GENERATED_MARK)) {
    throw new UserInputError(`${file} exists and was not written by titanize codegen (its first line is not '${GENERATED_MARK} ...'): refusing to overwrite it; remove it or choose another -o`);
  }
  const kept = parseRegions(existing, file);
  const text = fillRegions(generated, kept, file);
  const before = parts(existing);
  const after = parts(text);
  const changed = [...after].filter(([k, v]) => before.get(k) !== v).map(([k]) => k);
  for (const k of before.keys()) if (!after.has(k)) changed.push(k);
  const userCode = [...kept.values()].filter((r) => r.lines.some((l) => l.trim() !== '')).map((r) => r.name);
  return { text, userCode, changed };
}
