/**
 * `codegen(model, options)`: writes (or updates) the TypeScript module of a decoder model.
 * The same model and options always give the same bytes; an unchanged file is not touched.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { type Model, UserInputError } from '../ir/index.js';
import { type DeclaredDim, describeModel } from './describe.js';
import { generateModule } from './model_module.js';
import { MODULE_EXTENSIONS, checkPrefix, prefixFromOutput } from './names.js';
import { updateModule } from './update.js';

export interface CodegenOptions {
  /** Where the module goes (.ts, .mts or .cts). */
  output: string;
  /** The model's file, as the comments name it (its file name only); default 'model.onnx'. */
  modelFile?: string;
  /** The prefix of the declarations (default: the output's file name in PascalCase, src/titan.ts → Titan). */
  name?: string;
  /** titanize's version, named in the header. */
  version?: string;
}

export interface CodegenSummary {
  output: string;
  interfaces: string[];
  class: string;
  /** The carried pairs: past input, present output, layer, kind, element type, declared dims. */
  state: { input: string; output: string; layer: number; kind: string; type: string; dims: DeclaredDim[] | null }[];
  /** False when the file already had exactly these bytes (it is left alone). */
  written: boolean;
  /** Declarations (and 'header') that differ from the file before; all of them for a new file. */
  changed: string[];
  /** User-code regions carried over from the file before (those holding code). */
  userCode: string[];
}

export function checkOutputPath(output: string): void {
  if (!(MODULE_EXTENSIONS as readonly string[]).includes(path.extname(output))) {
    throw new UserInputError(`-o ${output}: the module must be a ${MODULE_EXTENSIONS.slice(0, -1).join(', ')} or ${MODULE_EXTENSIONS[MODULE_EXTENSIONS.length - 1]} file`);
  }
  if (fs.existsSync(output) && fs.statSync(output).isDirectory()) throw new UserInputError(`-o ${output} is a folder: give the path of a .ts file`);
}

/** The module text for `model` merged with the file at `options.output` (not written), and its summary. */
export function planModule(model: Model, options: CodegenOptions): { text: string; summary: Omit<CodegenSummary, 'written'>; existing: string | undefined } {
  checkOutputPath(options.output);
  const modelFile = path.basename(options.modelFile ?? 'model.onnx');
  const prefix = options.name !== undefined ? checkPrefix(options.name) : prefixFromOutput(options.output);
  const d = describeModel(model, modelFile);
  const command = `titanize codegen ${modelFile} -o ${path.basename(options.output)}${options.name !== undefined ? ` --name ${prefix}` : ''}`;
  const g = generateModule(d, { prefix, command, version: options.version ?? '0.0.0' });
  const existing = fs.existsSync(options.output) ? fs.readFileSync(options.output, 'utf8') : undefined;
  const u = updateModule(g.text, existing, options.output);
  return {
    text: u.text,
    existing,
    summary: {
      output: options.output,
      interfaces: g.interfaces,
      class: g.names.cls,
      state: d.pairs.map((p) => ({ input: p.input.name, output: p.output.name, layer: p.pair.layer, kind: p.pair.kind, type: p.input.type, dims: p.input.dims ?? null })),
      changed: u.changed,
      userCode: u.userCode,
    },
  };
}

/** Writes the module of `model` to `options.output` (atomically; not at all when the bytes are the same). */
export function codegen(model: Model, options: CodegenOptions): CodegenSummary {
  const { text, summary, existing } = planModule(model, options);
  const written = existing !== text;
  if (written) {
    fs.mkdirSync(path.dirname(path.resolve(options.output)), { recursive: true });
    const tmp = `${options.output}.${process.pid}.tmp`;
    try {
      fs.writeFileSync(tmp, text);
      fs.renameSync(tmp, options.output);
    } catch (e) {
      fs.rmSync(tmp, { force: true });
      const err = e as NodeJS.ErrnoException;
      if (err.code === 'EACCES' || err.code === 'EROFS' || err.code === 'ENOTDIR' || err.code === 'EPERM') throw new UserInputError(`cannot write ${options.output}: ${err.message}`);
      throw e;
    }
  }
  const { output, interfaces, class: cls, state, changed, userCode } = summary;
  return { output, interfaces, class: cls, state, written, changed: written ? changed : [], userCode };
}

/**
 * Whether the file at `options.output` is what `codegen` would write for `model` (nothing is
 * written): for CI, that a checked-in module still matches its model. `changed` names the
 * declarations (and 'header') that differ; `missing` when there is no file yet.
 */
export function checkModule(model: Model, options: CodegenOptions): { upToDate: boolean; missing: boolean; changed: string[]; summary: Omit<CodegenSummary, 'written'> } {
  const { text, summary, existing } = planModule(model, options);
  const upToDate = existing === text;
  return { upToDate, missing: existing === undefined, changed: upToDate ? [] : summary.changed, summary };
}
