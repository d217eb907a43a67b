/**
 * The per-token Scan oracle of ai.tptt.LiZA (test / bench only) against the float64
 * reference, and against the chunked function body on the same inputs. Tolerances as in
 * liza_function.test.ts.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { LIZA_RULES } from '../../src/ops/index.js';
import { ErrorTable, buildLizaModel, checkCases, createSession, errorsOf, prng, randomInputs, runLiza, sampleCases } from './helpers.js';

const TOL = { y: 5e-5, state: 1e-5, window: 0 };
const table = new ErrorTable();
afterAll(() => table.print('LiZA Scan oracle vs float64 reference, worst errors:'));

describe('LiZA Scan oracle', () => {
  it.each(LIZA_RULES)('matches the reference on random shapes (%s)', async (rule) => {
    const rng = prng(2000 + LIZA_RULES.indexOf(rule));
    await checkCases('scan', sampleCases(rng, rule, 4, 2), rng, TOL, table);
  });

  it('contains a Scan, and agrees with the chunked body on a longer sequence', async () => {
    const attrs = { q_num_heads: 4, kv_num_heads: 2, head_dim: 8, rule: 'gated_delta_product', order: 2, chunk_size: 16 } as const;
    const presence = { pastState: true, pastWindow: true, mask: true };
    const scan = buildLizaModel('scan', attrs, presence);
    expect([...scan.model.graph].some((n) => n.opType === 'Scan')).toBe(true);
    const rng = prng(3);
    const inputs = randomInputs(rng, attrs, { B: 2, T: 150, presence });
    const a = await runLiza(await createSession(scan), inputs);
    const b = await runLiza(await createSession(buildLizaModel('function', attrs, presence)), inputs);
    const e = errorsOf(a, b);
    table.add('gated_delta_product scan vs function T=150', e);
    expect(e.y).toBeLessThan(TOL.y);
    expect(e.state).toBeLessThan(TOL.state);
    expect(e.window).toBe(0);
  });
});
