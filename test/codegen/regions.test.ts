/** User-code regions and names of generated modules. */
import { describe, expect, it } from 'vitest';
import { fillRegions, parseRegions } from '../../src/codegen/regions.js';
import { checkPrefix, prefixFromOutput, propertyKey, quote } from '../../src/codegen/names.js';
import { commentText } from '../../src/codegen/docs.js';

describe('user-code regions', () => {
  it('are read by name, verbatim (indentation, blank lines, CRLF), and put back into the regions of the same name', () => {
    const old = 'a\r\n// <user-code name="one">\r\n  x();\r\n\r\n// </user-code>\r\nb\n  // <user-code name="two">\n  y();\n  // </user-code>\n';
    const r = parseRegions(old, 'f.ts');
    expect([...r.keys()]).toEqual(['one', 'two']);
    expect(r.get('one')).toEqual({ name: 'one', lines: ['  x();\r', '\r'], line: 2 });
    const generated = 'A\n  // <user-code name="two">\n  // </user-code>\n// <user-code name="one">\n// </user-code>\n// <user-code name="three">\n// </user-code>\n';
    expect(fillRegions(generated, r, 'f.ts')).toBe('A\n  // <user-code name="two">\n  y();\n  // </user-code>\n// <user-code name="one">\n  x();\r\n\r\n// </user-code>\n// <user-code name="three">\n// </user-code>\n');
  });

  it('refuses malformed regions, naming the file and line', () => {
    expect(() => parseRegions('// <user-code name="a">\n// <user-code name="b">\n', 'f.ts')).toThrow(/^f\.ts:2: user-code region 'b' starts inside region 'a' \(line 1\)/);
    expect(() => parseRegions('// </user-code>\n', 'f.ts')).toThrow(/^f\.ts:1: '\/\/ <\/user-code>' without a region opened before it/);
    expect(() => parseRegions('// <user-code name="a">\n// </user-code>\n// <user-code name="a">\n// </user-code>\n', 'f.ts')).toThrow(/f\.ts:3: user-code region 'a' appears twice \(also line 1\)/);
    // an empty region with no place in the new text is dropped silently; one holding code is not
    const gen = '// <user-code name="a">\n// </user-code>\n';
    expect(fillRegions(gen, parseRegions('// <user-code name="z">\n\n// </user-code>\n', 'f.ts'), 'f.ts')).toBe(gen);
    expect(() => fillRegions(gen, parseRegions('// <user-code name="z">\nq\n// </user-code>\n', 'f.ts'), 'f.ts')).toThrow(/'z' \(line 1\) is not one codegen writes \(a\)/);
  });
});

describe('names', () => {
  it('derive the prefix from the output file, quote keys that are not identifiers, and make model text comment-safe', () => {
    expect(prefixFromOutput('src/titan.ts')).toBe('Titan');
    expect(prefixFromOutput('out/llama_past-v2.mts')).toBe('LlamaPastV2');
    expect(prefixFromOutput('gen/2b.ts')).toBe('Model2b');
    expect(prefixFromOutput('x/.ts')).toBe('Model');
    expect(propertyKey('input_ids')).toBe('input_ids');
    expect(propertyKey('past_key_values.0.key')).toBe("'past_key_values.0.key'");
    expect(quote("it's\n\\")).toBe("'it\\'s\\n\\\\'");
    expect(checkPrefix('Titan')).toBe('Titan');
    expect(() => checkPrefix('titan')).toThrow(/not a PascalCase identifier/);
    expect(commentText('a */ b\n\tc\u2028d')).toBe('a *\\/ b c d');
    expect(commentText('x'.repeat(300)).length).toBe(240);
  });
});
