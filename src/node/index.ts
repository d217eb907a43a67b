/**
 * The Node layer: files. `loadModel` / `saveModel` and the external data source that
 * reads the files next to a model. Everything else (the IR, passes, ops) touches no file
 * system and is the browser-safe entry (`src/browser.ts`); importing this module installs the
 * file source as the default for `decodeModel(bytes, { baseDir })`.
 */
export { FileSource, checkInside, copyExternal, externalFile, externalFolder, externalPath, fileSource } from './file_source.js';
export { type LoadOptions, type SaveOptions, loadModel, saveModel } from './files.js';
