/**
 * Passes of the user's, loaded from an ES module for `titanize convert --pass FILE`: the
 * module's default export (or its export named `pass`) is a ConvertPass — `{ name, run(model,
 * context) }`, with `description` and `effects` optional. It runs in the conversion
 * pipeline like the built-in passes (model verification after it); a pass that throws is
 * named in a user error, and nothing is written.
 */
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { UserInputError } from '../ir/index.js';
import type { ConvertPass } from '../passes/convert/convert.js';

export async function loadUserPass(file: string): Promise<ConvertPass> {
  const where = path.resolve(file);
  let mod: Record<string, unknown>;
  try {
    mod = (await import(pathToFileURL(where).href)) as Record<string, unknown>;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new UserInputError(`--pass ${file}: ${code === 'ERR_MODULE_NOT_FOUND' ? 'no such module' : `cannot load it (${(e as Error).message.split('\n')[0]})`}`);
  }
  const p = (mod.default ?? mod.pass) as Partial<ConvertPass> | undefined;
  if (!p || typeof p !== 'object' || typeof p.name !== 'string' || !p.name || typeof p.run !== 'function') {
    throw new UserInputError(`--pass ${file}: the module must export (default, or as 'pass') an object { name: string, run(model, context) }`);
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
