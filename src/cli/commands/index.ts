/**
 * The commands of `titanize`, in help order. Each entry adds one command to the program
 * (create it with `program.command(name)` so it inherits the output and error settings).
 * To add a command: write src/cli/commands/<name>.ts exporting `add<Name>Command(program, ctx)`
 * and list it here.
 */
import type { Command } from 'commander';
import type { CliContext } from '../context.js';
import { addCodegenCommand } from './codegen.js';
import { addConvertCommand } from './convert.js';
import { addEvalCommand } from './eval.js';
import { addGenerateCommand } from './generate.js';
import { addInspectCommand } from './inspect.js';
import { addMergeCommand } from './merge.js';
import { addPassesCommand } from './passes.js';
import { addTrainCommand } from './train.js';

export type CommandRegistrar = (program: Command, ctx: CliContext) => void;

export const COMMANDS: readonly CommandRegistrar[] = [
  (program, ctx) => addInspectCommand(program, ctx),
  (program, ctx) => addConvertCommand(program, ctx),
  (program, ctx) => addTrainCommand(program, ctx),
  (program, ctx) => addEvalCommand(program, ctx),
  (program, ctx) => addMergeCommand(program, ctx),
  (program, ctx) => addGenerateCommand(program, ctx),
  (program, ctx) => addPassesCommand(program, ctx),
  (program, ctx) => addCodegenCommand(program, ctx),
];
