/** TypeScript names for a generated module: the prefix of its declarations, property keys, string literals. */
import * as path from 'node:path';
import { UserInputError } from '../ir/index.js';

const IDENTIFIER = /^[A-Za-z_$][A-Za-z0-9_$]*$/;
const RESERVED = new Set([
  'break', 'case', 'catch', 'class', 'const', 'continue', 'debugger', 'default', 'delete', 'do', 'else', 'enum', 'export', 'extends', 'false',
  'finally', 'for', 'function', 'if', 'import', 'in', 'instanceof', 'new', 'null', 'return', 'super', 'switch', 'this', 'throw', 'true', 'try',
  'typeof', 'var', 'void', 'while', 'with', 'implements', 'interface', 'let', 'package', 'private', 'protected', 'public', 'static', 'yield',
  'await', 'any', 'unknown', 'never', 'object', 'string', 'number', 'boolean', 'symbol', 'bigint',
]);

/** The extensions a generated module may have. */
export const MODULE_EXTENSIONS = ['.ts', '.mts', '.cts'] as const;

/** A single-quoted TypeScript string literal of `s`. */
export function quote(s: string): string {
  let out = "'";
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    if (ch === "'" || ch === '\\') out += `\\${ch}`;
    else if (ch === '\n') out += '\\n';
    else if (ch === '\r') out += '\\r';
    else if (ch === '\t') out += '\\t';
    else if (c < 0x20 || c === 0x7f || c === 0x2028 || c === 0x2029) out += `\\u${c.toString(16).padStart(4, '0')}`;
    else out += ch;
  }
  return `${out}'`;
}

/** A property key: the name itself when it is an identifier, else a string literal ('past_key_values.0.key'). */
export function propertyKey(name: string): string {
  return IDENTIFIER.test(name) ? name : quote(name);
}

/** `PascalCase` of the words in `s` ("llama_past-v2" → "LlamaPastV2"). */
export function pascalCase(s: string): string {
  return s
    .replace(/([a-z0-9])([A-Z])/g, '$1 $2')
    .split(/[^A-Za-z0-9]+/)
    .filter(Boolean)
    .map((w) => w[0]!.toUpperCase() + w.slice(1))
    .join('');
}

export function camelCase(s: string): string {
  return s ? s[0]!.toLowerCase() + s.slice(1) : s;
}

/** Checks a `--name` prefix: a PascalCase identifier that its derived names (Prefix, PrefixInputs, prefixSpec) can use. */
export function checkPrefix(name: string): string {
  if (!IDENTIFIER.test(name) || !/^[A-Z]/.test(name) || name.includes('$')) {
    throw new UserInputError(`--name '${name}' is not a PascalCase identifier (letters, digits and _, starting with a capital letter), e.g. Titan`);
  }
  if (RESERVED.has(camelCase(name))) throw new UserInputError(`--name '${name}' would give the reserved word '${camelCase(name)}' as a variable name: choose another`);
  return name;
}

/** The prefix of the declarations of a module written to `output`: its file name in PascalCase ("src/titan.ts" → "Titan"). */
export function prefixFromOutput(output: string): string {
  const base = pascalCase(path.basename(output).replace(/\.[cm]?ts$/, ''));
  const prefix = !base ? 'Model' : /^[0-9]/.test(base) ? `Model${base}` : base;
  return RESERVED.has(camelCase(prefix)) ? `${prefix}Model` : prefix;
}
