/**
 * The decoder class of a generated module, as a ts-morph structure: it wraps an
 * onnxruntime session (node or web: the caller passes the session and `Tensor`), feeds
 * token ids, padding mask, positions and token types as src/runtime/decoder_state.ts does
 * for one row, and carries each present output to its past input between calls. A model
 * that carries nothing is recomputed over the whole sequence at every call, as
 * DecoderState does.
 */
import { type ClassDeclarationStructure, type MethodDeclarationStructure, type OptionalKind, Scope, StructureKind } from 'ts-morph';
import type { ModelDescription, TensorSpec } from './describe.js';
import { tensorKind } from './dtypes.js';
import { quote } from './names.js';

export interface ModuleNames {
  /** The class. */
  cls: string;
  inputs: string;
  outputs: string;
  state: string;
  /** The inputs given once to the constructor (only for models that have some). */
  given: string;
  /** The spec constant. */
  spec: string;
}

const IDENTIFIER = /^[A-Za-z_$][A-Za-z0-9_$]*$/;

/** `obj.name` or `obj['a.b']`. */
export function member(obj: string, name: string): string {
  return IDENTIFIER.test(name) ? `${obj}.${name}` : `${obj}[${quote(name)}]`;
}

function key(name: string): string {
  return IDENTIFIER.test(name) ? name : quote(name);
}

/** Expressions building the data of an integer input (int64 or int32). */
function ints(s: TensorSpec): { list: (e: string) => string; ones: (n: string) => string; range: (from: string, n: string) => string; zeros: (n: string) => string } {
  const k = tensorKind(s.elemType)!;
  if (k.ort === 'int64') {
    return {
      list: (e) => `BigInt64Array.from(${e}, (x) => BigInt(x))`,
      ones: (n) => `new BigInt64Array(${n}).fill(BigInt(1))`,
      range: (from, n) => `BigInt64Array.from({ length: ${n} }, (_, j) => BigInt(${from === '0' ? 'j' : `${from} + j`}))`,
      zeros: (n) => `new BigInt64Array(${n})`,
    };
  }
  return {
    list: (e) => `${k.array}.from(${e})`,
    ones: (n) => `new ${k.array}(${n}).fill(1)`,
    range: (from, n) => `${k.array}.from({ length: ${n} }, (_, j) => ${from === '0' ? 'j' : `${from} + j`})`,
    zeros: (n) => `new ${k.array}(${n})`,
  };
}

function tensor(s: TensorSpec, data: string, dims: string): string {
  return `new this.Tensor(${quote(tensorKind(s.elemType)!.ort)}, ${data}, ${dims})`;
}

export function decoderClass(d: ModelDescription, n: ModuleNames): OptionalKind<ClassDeclarationStructure> {
  const T = '<T>';
  const recompute = d.pairs.length === 0;
  const keyPair = d.pairs.find((p) => p.pair.kind === 'key');
  const V = d.vocab;
  const logitsKind = tensorKind(d.logits.elemType)!;
  const logitsShape = `${d.logits.type} [1, ${recompute ? 'the sequence so far' : 'ids.length'}, ${V ?? 'vocabulary'}]`;

  // the feeds of one call
  const feedLines: string[] = [];
  if (!recompute) feedLines.push('...this.carried,');
  if (d.given.length) feedLines.push('...this.inputs,');
  const seq = recompute ? 'seq' : 'ids';
  const len = recompute ? 'seq.length' : 't';
  feedLines.push(`${key(d.tokens.name)}: ${tensor(d.tokens, ints(d.tokens).list(seq), `[1, ${len}]`)},`);
  if (d.mask) feedLines.push(`${key(d.mask.name)}: ${tensor(d.mask, ints(d.mask).ones(recompute ? 'seq.length' : 'cached + t'), recompute ? '[1, seq.length]' : '[1, cached + t]')},`);
  if (d.positions) feedLines.push(`${key(d.positions.name)}: ${tensor(d.positions, ints(d.positions).range(recompute ? '0' : 'start', len), `[1, ${len}]`)},`);
  if (d.tokenTypes) feedLines.push(`${key(d.tokenTypes.name)}: ${tensor(d.tokenTypes, ints(d.tokenTypes).zeros(len), `[1, ${len}]`)},`);

  const runBody = [
    'const t = ids.length;',
    "if (t === 0) throw new RangeError('no token ids to feed');",
    ...(V !== undefined
      ? ['for (const id of ids) {', `  if (!Number.isInteger(id) || id < 0 || id >= ${V}) throw new RangeError(\`token id \${id} is outside the vocabulary (0 to ${V - 1})\`);`, '}']
      : []),
    ...(recompute
      ? ['// nothing is carried between calls: the whole sequence is fed again', 'const seq = [...this.history, ...ids];']
      : [
          ...(d.positions || d.mask ? ['const start = this.fed;'] : []),
          ...(!d.mask
            ? []
            : keyPair
              ? [
                  '// the mask covers the cached positions and the new tokens (one row, no padding: all 1);',
                  '// a KV cache cut to a window (convert --window) holds fewer positions than were fed',
                  `const cached = ${member('this.carried', keyPair.input.name)}.dims[2] ?? start;`,
                ]
              : ['const cached = start;']),
        ]),
    `const feeds: ${n.inputs}${T} = {`,
    ...feedLines.map((l) => `  ${l}`),
    '};',
    '// (the session has every output: the constructor checked)',
    `const outputs = (await this.session.run({ ...feeds })) as unknown as ${n.outputs}${T};`,
    ...(recompute
      ? ['for (const id of ids) this.history.push(id);']
      : ['this.carried = {', ...d.pairs.map((p) => `  ${key(p.input.name)}: ${member('outputs', p.output.name)},`), '};']),
    'this.fed += t;',
    'return outputs;',
  ];

  const logitsOf = (call: string, t: string): string => (recompute ? `this.newest((await ${call}).logits, ${t})` : `(await ${call}).logits`);
  const methods: OptionalKind<MethodDeclarationStructure>[] = [];
  if (!recompute) {
    methods.push({
      name: 'initialState',
      docs: ['The state before the first token: zeros, with no positions on the axes that grow with the context (a KV cache).'],
      returnType: `${n.state}${T}`,
      statements: [
        'return {',
        ...d.pairs.map((p) => {
          const size = p.initialDims.reduce((a, b) => a * b, 1);
          const k = tensorKind(p.input.elemType)!;
          return `  ${key(p.input.name)}: new this.Tensor(${quote(k.ort)}, new ${k.array}(${size}), [${p.initialDims.join(', ')}]),`;
        }),
        '};',
      ].join('\n'),
    });
  }
  methods.push(
    {
      name: 'prefill',
      isAsync: true,
      docs: [
        {
          description: 'Feeds `ids` after what was fed before (call `reset()` first to start a new sequence).',
          tags: [{ tagName: 'returns', text: `their logits, ${d.logits.type} [1, ids.length, ${V ?? 'vocabulary'}]` }],
        },
      ],
      parameters: [{ name: 'ids', type: 'readonly number[]' }],
      returnType: 'Promise<T>',
      statements: `return ${logitsOf('this.run(ids)', 'ids.length')};`,
    },
    {
      name: 'step',
      isAsync: true,
      docs: [{ description: 'Feeds one token after what was fed before.', tags: [{ tagName: 'returns', text: `its logits, ${d.logits.type} [1, 1, ${V ?? 'vocabulary'}]` }] }],
      parameters: [{ name: 'id', type: 'number' }],
      returnType: 'Promise<T>',
      statements: `return ${logitsOf('this.run([id])', '1')};`,
    },
    {
      name: 'generate',
      isAsync: true,
      docs: [
        {
          description:
            'Decodes a new sequence: `reset()`, feed the prompt, then each chosen token, until `maxNewTokens`\n' +
            'tokens or one of `options.stopTokens` (included). The last token returned is not fed.\n' +
            '`options.choose(logits)` picks each token from the logits of the call before (its last position;\n' +
            'default `greedyToken`: bring your own sampling); `options.onToken(id)` hears each one as it comes.',
          tags: [{ tagName: 'returns', text: 'the new tokens (the prompt excluded)' }],
        },
      ],
      parameters: [
        { name: 'ids', type: 'readonly number[]' },
        { name: 'maxNewTokens', type: 'number' },
        { name: 'options', type: '{ stopTokens?: readonly number[]; choose?: (logits: T) => number; onToken?: (id: number) => void }', initializer: '{}' },
      ],
      returnType: 'Promise<number[]>',
      statements: [
        'const { stopTokens = [], choose = greedyToken, onToken } = options;',
        'this.reset();',
        'const tokens: number[] = [];',
        'if (maxNewTokens < 1) return tokens;',
        'let logits = await this.prefill(ids);',
        'for (;;) {',
        '  const next = choose(logits);',
        '  tokens.push(next);',
        '  onToken?.(next);',
        '  if (tokens.length >= maxNewTokens || stopTokens.includes(next)) return tokens;',
        '  logits = await this.step(next);',
        '}',
      ].join('\n'),
    },
    {
      name: 'run',
      isAsync: true,
      docs: [
        {
          description: recompute
            ? 'One call of the model on the whole sequence: what was fed before, then `ids`.'
            : 'One call of the model on `ids`, after what was fed before: builds the feeds, runs the session\nand carries each present output to its past input.',
          tags: [{ tagName: 'returns', text: `every output of the call (logits ${logitsShape}${recompute ? '' : ', the presents'})` }],
        },
      ],
      parameters: [{ name: 'ids', type: 'readonly number[]' }],
      returnType: `Promise<${n.outputs}${T}>`,
      statements: runBody.join('\n'),
    },
  );
  if (recompute) {
    methods.push({
      name: 'newest',
      scope: Scope.Private,
      docs: ['The logits of the last `t` positions.'],
      parameters: [
        { name: 'logits', type: 'T' },
        { name: 't', type: 'number' },
      ],
      returnType: 'T',
      statements: [
        'const [, L = 0, V = 0] = logits.dims;',
        `return new this.Tensor(${quote(logitsKind.ort)}, (logits.data as ${logitsKind.array}).slice((L - t) * V, L * V), [1, t, V]);`,
      ].join('\n'),
    });
  }

  const ctorParams = [
    { name: 'session', isReadonly: true, type: `SessionLike${T}` },
    { name: 'Tensor', scope: Scope.Private, isReadonly: true, type: `TensorConstructorLike${T}` },
    ...(d.given.length ? [{ name: 'inputs', isReadonly: true, type: `${n.given}${T}` }] : []),
  ];
  const check = (list: string, names: string, what: string): string[] => [
    `for (const name of ${n.spec}.${list}) {`,
    `  if (!session.${names}.includes(name)) throw new Error(\`the session has no ${what} '\${name}': it is not a session of ${d.file.replace(/[`\\$]/g, '_')}, which this module was generated from (re-run titanize codegen)\`);`,
    '}',
  ];
  return {
    kind: StructureKind.Class,
    name: n.cls,
    isExported: true,
    typeParameters: [{ name: 'T', constraint: 'TensorLike', default: 'TensorLike' }],
    docs: [
      {
        description:
          `Decoding with ${d.file}${recompute ? '' : ', carrying its state between calls'}: \`prefill(ids)\` feeds a chunk of tokens,\n` +
          '`step(id)` one token, `generate(ids, maxNewTokens, options?)` a whole continuation (greedy, or your choice). One sequence (batch 1).\n' +
          'Works with onnxruntime-node and onnxruntime-web alike: pass a session of the model and the same package\'s `Tensor`.',
        tags: [
          {
            tagName: 'example',
            text:
              "\nimport * as ort from 'onnxruntime-node'; // or 'onnxruntime-web'\n" +
              `const session = await ort.InferenceSession.create(${quote(d.file)});\n` +
              `const model = new ${n.cls}(session, ort.Tensor${d.given.length ? ', inputs' : ''});\n` +
              'const tokens = await model.generate([1, 17, 42], 20);',
          },
        ],
      },
    ],
    properties: [
      ...(recompute
        ? [{ name: 'history', scope: Scope.Private, isReadonly: true, type: 'number[]', initializer: '[]', docs: ['The tokens fed so far (the model carries nothing: each call sees them all).'] }]
        : [{ name: 'carried', scope: Scope.Private, type: `${n.state}${T}`, docs: ["The state for the next call: each past input, as the last call's present output left it."] }]),
      { name: 'fed', scope: Scope.Private, initializer: '0', docs: ['Tokens fed since the start or the last `reset()`.'] },
    ],
    ctors: [
      {
        docs: [
          {
            description: `Checks that \`session\` has the inputs and outputs of ${d.file}${recompute ? '' : ' and starts from the zero state'}.`,
            tags: [
              { tagName: 'param', text: 'session an onnxruntime `InferenceSession` of the model (onnxruntime-node or onnxruntime-web)' },
              { tagName: 'param', text: "Tensor onnxruntime's `Tensor` constructor, from the same package (`ort.Tensor`)" },
              ...(d.given.length ? [{ tagName: 'param', text: 'inputs the inputs that belong to the whole sequence, fed unchanged at every call' }] : []),
            ],
          },
        ],
        parameters: ctorParams,
        statements: [...check('inputs', 'inputNames', 'input'), ...check('outputs', 'outputNames', 'output'), ...(recompute ? [] : ['this.carried = this.initialState();'])].join('\n'),
      },
    ],
    getAccessors: [
      { name: 'length', docs: ['Tokens fed since the start or the last `reset()`.'], returnType: 'number', statements: 'return this.fed;' },
      ...(recompute
        ? []
        : [{ name: 'state', docs: ['The state the next call will be fed (each past input).'], returnType: `Readonly<${n.state}${T}>`, statements: 'return this.carried;' }]),
    ],
    methods: [
      {
        name: 'reset',
        docs: ['Starts a new sequence: nothing fed, the zero state.'],
        returnType: 'void',
        statements: [recompute ? 'this.history.length = 0;' : 'this.carried = this.initialState();', 'this.fed = 0;'].join('\n'),
      },
      ...methods,
    ],
  };
}
