/**
 * The prose of a generated module: its header (source model, producer, the conversion
 * and training options from the metadata) and the doc comment of each tensor. Everything
 * taken from the model is made safe for a comment (no comment end, no control characters)
 * and kept short.
 */
import type { DeclaredDim, ModelDescription, StatePair, TensorSpec } from './describe.js';

const MAX_TEXT = 240;

/** One line of model-provided text, safe inside a block comment. */
export function commentText(s: string, max = MAX_TEXT): string {
  // eslint-disable-next-line no-control-regex
  const flat = s.replace(/[\u0000-\u001f\u007f\u2028\u2029]+/g, ' ').replace(/\*\//g, '*\\/').replace(/\s+/g, ' ').trim();
  return flat.length > max ? `${flat.slice(0, max - 1)}…` : flat;
}

export function dimsText(dims: DeclaredDim[] | undefined): string {
  return dims ? `[${dims.map((d) => (d === null ? '?' : commentText(String(d), 60))).join(', ')}]` : '[...]';
}

/** "int64 [batch_size, sequence_length]" */
export function typeText(s: TensorSpec): string {
  return `${s.type} ${dimsText(s.dims)}`;
}

const KIND_TEXT: Record<string, string> = {
  key: 'KV-cache keys',
  value: 'KV-cache values',
  state: 'LiZA memory state (key × value)',
  window: 'LiZA token window (raw key and value rows of the last tokens)',
  length: 'tokens-seen counter',
};

export function pairText(p: StatePair): string {
  const kind = KIND_TEXT[p.pair.kind] ?? commentText(p.pair.kind, 40);
  const grows = p.input.dims?.some((d, i) => i > 0 && typeof d !== 'number') ? ', grows with the context' : ', fixed size';
  return `${kind} of attention layer ${p.pair.layer}${grows}`;
}

/** The doc comment of one input or output. */
export function tensorDoc(s: TensorSpec, d: ModelDescription): string {
  const t = typeText(s);
  switch (s.role) {
    case 'tokens':
      return `Token ids${d.vocab !== undefined ? ` (0 to ${d.vocab - 1})` : ''}: ${t}.`;
    case 'mask':
      return `Padding mask (1 for a real token, 0 for padding) over the cached positions and the new tokens: ${t}.`;
    case 'positions':
      return `Position of each new token in the sequence (0 for the first): ${t}.`;
    case 'tokenTypes':
      return `Token types (segment ids; the class feeds 0): ${t}.`;
    case 'past': {
      const p = d.pairs.find((x) => x.input.name === s.name);
      return p ? `Carried state: ${pairText(p)}, the previous call's '${commentText(p.output.name, 120)}': ${t}.` : `Carried state: ${t}.`;
    }
    case 'given':
      return `Given once (the constructor's \`inputs\`) and fed at every call: ${t}.`;
    case 'logits':
      return `Logits over the vocabulary, one row per position of the call: ${t}.`;
    case 'present': {
      const p = d.pairs.find((x) => x.output.name === s.name);
      return p ? `Carried to the next call as '${commentText(p.input.name, 120)}': ${pairText(p)}: ${t}.` : `${t}.`;
    }
    default:
      return `${t}.`;
  }
}

function fmt(v: unknown): string {
  if (Array.isArray(v)) return v.map(fmt).join(',');
  return typeof v === 'string' ? commentText(v, 60) : commentText(JSON.stringify(v), 60);
}

/** "rule delta_product, order 2, μ 0.5, target ort, LoRA none" from metadata 'titanize.converted'. */
export function conversionText(c: Record<string, unknown>): string {
  const parts: string[] = [];
  if (c.rule !== undefined) parts.push(`rule ${fmt(c.rule)}`);
  if (c.order !== undefined) parts.push(`order ${fmt(c.order)}`);
  if (c.mu !== undefined) parts.push(`μ ${fmt(c.mu)}`);
  if (c.window !== undefined) parts.push(`window ${fmt(c.window)}`);
  if (c.target !== undefined) parts.push(`target ${fmt(c.target)}`);
  if (c.loraRank !== undefined) {
    parts.push(`LoRA rank ${fmt(c.loraRank)}, α ${fmt(c.loraAlpha ?? c.loraRank)}, on ${fmt(c.loraTargets ?? 'attention')}`);
  } else parts.push('LoRA none');
  if (c.layers !== undefined) parts.push(`layers ${fmt(c.layers)}`);
  if (c.cross === true) parts.push(`cross-attention memory${c.crossState === true ? ' (states once per encoder output)' : ''}`);
  if (c.state === false) parts.push('no recurrent state');
  return parts.join(', ');
}

export function trainingText(t: Record<string, unknown>): string {
  const parts: string[] = [];
  if (t.steps !== undefined) parts.push(`${fmt(t.steps)} steps`);
  if (t.objective !== undefined) parts.push(`objective ${fmt(t.objective)}`);
  if (t.train !== undefined) parts.push(`trained ${fmt(t.train)}`);
  if (t.mu && typeof t.mu === 'object') parts.push(`μ ${Object.values(t.mu as Record<string, unknown>).map((m) => (typeof m === 'number' ? Number(m.toPrecision(4)) : m)).map(fmt).join(', ')}`);
  return parts.join(', ');
}

/** The paragraphs of the module's header comment (each an array of lines). */
export function headerParagraphs(d: ModelDescription, command: string): string[][] {
  const s = d.source;
  const source: string[] = [];
  const producer = [s.producerName, s.producerVersion].filter(Boolean).map((x) => commentText(x, 80)).join(' ');
  const opsets = s.opsets.map(([dom, v]) => `${dom || 'ai.onnx'} ${v}`).join(', ');
  source.push(`Source model: ${commentText(d.file, 120)}${producer ? `, produced by ${producer}` : ''}; graph '${commentText(s.graphName, 80)}', IR version ${s.irVersion}, opsets ${commentText(opsets, 160)}${s.domain ? `, domain ${commentText(s.domain, 80)}` : ''}${s.modelVersion !== '0' ? `, model version ${s.modelVersion}` : ''}.`);
  if (s.docString) source.push(`Its doc string: ${commentText(s.docString)}`);
  if (d.converted) source.push(`Converted by titanize (metadata 'titanize.converted'): ${conversionText(d.converted)}.`);
  else source.push('Not converted by titanize: an original decoder export (no metadata \'titanize.converted\').');
  if (d.trained) source.push(`Trained by titanize (metadata 'titanize.trained'): ${trainingText(d.trained)}.`);
  for (const m of d.metadata) source.push(`Metadata '${commentText(m.key, 80)}': ${commentText(m.value)}`);

  const kinds = [...new Set(d.pairs.map((p) => p.pair.kind))];
  const layers = [...new Set(d.pairs.map((p) => p.pair.layer))];
  const state = d.pairs.length
    ? `The decoder interface (${d.ioFromMetadata ? "metadata 'titanize.io'" : 'found from the graph\'s structure'}) carries ${d.pairs.length} tensors between calls (${kinds.join(', ')}; ${layers.length} attention layer${layers.length === 1 ? '' : 's'}), each present output fed back as its past input.`
    : `The model carries nothing between calls (no KV cache, no recurrent state): each call recomputes the whole sequence.`;
  return [
    source,
    [state, 'The class imports no onnxruntime: give it a session and the `Tensor` constructor of onnxruntime-node or onnxruntime-web.'],
    [
      `Re-run \`${command}\` after the model changes: the generated code is rewritten and the code between`,
      '`// <user-code name="...">` and `// </user-code>` is kept, by name. Edit only there.',
    ],
  ];
}
