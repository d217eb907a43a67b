#!/usr/bin/env node
/**
 * A static file server for the built page (loopback only).
 *
 *   node tools/serve-web.mjs [DIR] [--port N]     # default web/dist, port 8080
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const TYPES = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.mjs': 'text/javascript', '.wasm': 'application/wasm', '.json': 'application/json', '.onnx': 'application/octet-stream', '.map': 'application/json' };

/** Serves `dir` on 127.0.0.1:`port` (0: any free port); resolves to the server and its URL. */
export function serve(dir, port = 0) {
  const root = path.resolve(dir);
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const file = path.join(root, decodeURIComponent(url.pathname === '/' ? '/index.html' : url.pathname));
    if (!file.startsWith(root + path.sep) || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
      res.writeHead(404).end('not found');
      return;
    }
    res.writeHead(200, { 'content-type': TYPES[path.extname(file)] ?? 'application/octet-stream' });
    fs.createReadStream(file).pipe(res);
  });
  return new Promise((resolve) => server.listen(port, '127.0.0.1', () => resolve({ server, url: `http://127.0.0.1:${server.address().port}/` })));
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const p = args.indexOf('--port');
  const port = p >= 0 ? Number(args[p + 1]) : 8080;
  const dir = args.find((a, i) => !a.startsWith('--') && (p < 0 || i !== p + 1)) ?? path.join(path.dirname(fileURLToPath(import.meta.url)), '../web/dist');
  const { url } = await serve(dir, port);
  console.log(`serving ${dir} at ${url} (Ctrl-C to stop)`);
}
