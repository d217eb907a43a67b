/**
 * Every ```js example in docs/api.md runs against the built package (imports such as
 * 'titanize/passes' resolve through package.json `exports` to dist/), from the repository
 * root, and prints what its `// prints:` comments say.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const DOC = fs.readFileSync(path.join(ROOT, 'docs/api.md'), 'utf8');
const built = fs.existsSync(path.join(ROOT, 'dist/src/index.js'));

/** The ```js blocks, each with the heading above it. */
function examples(): { title: string; code: string }[] {
  const out: { title: string; code: string }[] = [];
  let title = '';
  const re = /^## (.+)$|^```js\n([\s\S]*?)^```$/gm;
  for (const m of DOC.matchAll(re)) {
    if (m[1]) title = m[1];
    else out.push({ title, code: m[2]! });
  }
  return out;
}

describe.skipIf(!built)('docs/api.md examples', () => {
  const all = examples();
  it('has one example per entry', () => {
    expect(all.map((e) => e.title)).toEqual(['titanize/ir', 'titanize/node', 'titanize/passes', 'titanize/passes', 'titanize/ops', 'titanize/runtime', 'titanize/codegen', 'titanize/browser']);
    // every entry of package.json exports is documented
    const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { exports: Record<string, unknown> };
    for (const key of Object.keys(pkg.exports)) expect(DOC, key).toContain(`\`${key === '.' ? 'titanize' : `titanize/${key.slice(2)}`}\``);
  });
  for (const [index, { title, code }] of all.entries()) {
    it(`${title} (example ${index + 1}) runs and prints what it says`, () => {
      // (inside the package folder, so that 'titanize/...' resolves to this package)
      const file = path.join(ROOT, 'dist', `api-example-${title.replace(/\W+/g, '-')}-${index}.mjs`);
      fs.writeFileSync(file, code);
      try {
        const r = spawnSync(process.execPath, [file], { cwd: ROOT, encoding: 'utf8', timeout: 120_000 });
        expect(r.status, r.stderr).toBe(0);
        const expected = [...code.matchAll(/^\/\/ prints: (.*)$/gm)].map((m) => m[1]);
        expect(expected.length).toBeGreaterThan(0);
        expect(r.stdout.trim().split('\n')).toEqual(expected);
      } finally {
        fs.rmSync(file, { force: true });
      }
    });
  }
});
