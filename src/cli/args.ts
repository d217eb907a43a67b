/** Option parsers shared by the commands (commander calls them; a bad value is a usage error, exit 2). */
import { type Command, InvalidArgumentError } from 'commander';
import { UserInputError } from '../ir/index.js';

export function int(name: string, check: (n: number) => boolean = () => true, rule = 'an integer') {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || !check(n)) throw new InvalidArgumentError(`${name} must be ${rule}`);
    return n;
  };
}

export function positiveInt(name: string) {
  return int(name, (n) => n >= 1, 'a positive integer');
}

export function num(name: string, check: (n: number) => boolean = () => true, rule = 'a number') {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isFinite(n) || !check(n)) throw new InvalidArgumentError(`${name} must be ${rule}`);
    return n;
  };
}

export function oneOf<T extends string>(values: readonly T[]) {
  return (v: string): T => {
    if (!values.includes(v as T)) throw new InvalidArgumentError(`expected one of ${values.join(', ')}`);
    return v as T;
  };
}

/** A comma-separated subset of `values`, e.g. lora,mu. */
export function subsetOf<T extends string>(values: readonly T[]) {
  return (v: string): T[] => {
    const parts = v.split(',').map((s) => s.trim()).filter(Boolean);
    const bad = parts.filter((p) => !values.includes(p as T));
    if (!parts.length || bad.length) throw new InvalidArgumentError(`expected a comma-separated list of ${values.join(', ')}${bad.length ? ` (not: ${bad.join(', ')})` : ''}`);
    return [...new Set(parts)] as T[];
  };
}

/** An option that the user gave but that the other options make pointless. */
export interface IneffectiveOption {
  /** The option's attribute name (camelCase, as in `opts`). */
  option: string;
  /** True when the option would do nothing. */
  when: boolean;
  /** Why, and what to do: "without --lora-rank there is no LoRA to seed". */
  why: string;
}

/**
 * Refuses options given on the command line that would have no effect, so a user never
 * believes a setting was applied when it was not (defaults are not checked: only what the
 * user typed).
 */
export function refuseIneffective(cmd: Command, rules: readonly IneffectiveOption[]): void {
  for (const r of rules) {
    if (!r.when || cmd.getOptionValueSource(r.option) !== 'cli') continue;
    const flag = cmd.options.find((o) => o.attributeName() === r.option)?.long ?? r.option;
    throw new UserInputError(`${flag} has no effect here: ${r.why}`);
  }
}
