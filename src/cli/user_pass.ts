/**
 * Passes of the user's, loaded from an ES module for `titanize convert --pass FILE`: the
 * module's default export (or its export named `pass`) is a ConvertPass — `{ name, run(model,
 * context) }`, with `description` and `effects` optional — or the module exports `rules`
 * (rules made with `defineRule` from 'titanize/passes', with an optional `name` and
 * `description`), which titanize's greedy driver applies. Either runs in the conversion
 * pipeline like the built-in passes (model verification after it); a pass that throws is
 * named in a user error, and nothing is written.
 */
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { UserInputError } from '../ir/index.js';
import type { ConvertPass } from '../passes/convert/convert.js';
import { type Rule, applyRules } from '../passes/pattern/index.js';

export async function loadUserPass(file: string): Promise<ConvertPass> {
  const where = path.resolve(file);
  let mod: Record<string, unknown>;
  try {
    mod = (await import(pathToFileURL(where).href)) as Record<string, unknown>;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new UserInputError(`--pass ${file}: ${code === 'ERR_MODULE_NOT_FOUND' ? 'no such module' : `cannot load it (${(e as Error).message.split('\n')[0]})`}`);
  }
  const rules = mod.rules ?? (mod.default as { rules?: unknown } | undefined)?.rules;
  if (rules !== undefined) return rulesPass(file, mod, rules);
  const p = (mod.default ?? mod.pass) as Partial<ConvertPass> | undefined;
  if (!p || typeof p !== 'object' || typeof p.name !== 'string' || !p.name || typeof p.run !== 'function') {
    throw new UserInputError(`--pass ${file}: the module must export (default, or as 'pass') an object { name: string, run(model, context) }, or an array 'rules'`);
  }
  const run = p.run.bind(p);
  return {
    name: p.name,
    description: typeof p.description === 'string' ? p.description : `user pass from ${file}`,
    effects: Array.isArray(p.effects) ? p.effects : ['graph'],
    condition: p.condition,
    when: p.when?.bind(p),
    run(model, ctx) {
      let r: unknown;
      try {
        r = run(model, ctx);
      } catch (e) {
        throw new UserInputError(`pass '${p.name}' (${file}) failed: ${(e as Error)?.message ?? String(e)}`);
      }
      if (r && typeof (r as Promise<unknown>).then === 'function') throw new UserInputError(`pass '${p.name}' (${file}): run() must be synchronous (it returned a Promise)`);
      // (a pass that returns nothing is taken to have changed the model: it is verified)
      return { modified: r === undefined ? true : Boolean((r as { modified?: boolean }).modified ?? r) };
    },
  };
}

/** A pass that applies the module's pattern-engine rules with the greedy driver. */
function rulesPass(file: string, mod: Record<string, unknown>, rules: unknown): ConvertPass {
  const meta = (mod.default ?? mod) as { name?: unknown; description?: unknown };
  const list = Array.isArray(rules) ? (rules as Partial<Rule>[]) : [];
  const bad = list.findIndex((r) => !r || typeof r.name !== 'string' || !r.pattern || typeof r.rewrite !== 'function');
  if (!list.length || bad >= 0) {
    throw new UserInputError(`--pass ${file}: 'rules' must be a non-empty array of rules made with defineRule (${list.length ? `entry ${bad} is not one` : 'it is empty or not an array'})`);
  }
  const name = typeof meta.name === 'string' && meta.name ? meta.name : path.basename(file).replace(/\.[cm]?js$/, '');
  return {
    name,
    description: typeof meta.description === 'string' ? meta.description : `rules ${list.map((r) => r.name).join(', ')} (from ${file})`,
    effects: ['graph'],
    run(model) {
      try {
        return { modified: applyRules(model, list as Rule[]).rewrites > 0 };
      } catch (e) {
        throw new UserInputError(`pass '${name}' (${file}) failed: ${(e as Error)?.message ?? String(e)}`);
      }
    },
  };
}
