/**
 * The install stays offline-safe and quiet: everything comes from the npm registry, no
 * dependency install script runs (onnxruntime-node's would download CUDA binaries from
 * NuGet), and npm has nothing to warn about on every command.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

interface LockedPackage {
  version?: string;
  resolved?: string;
  hasInstallScript?: boolean;
  link?: boolean;
}

const lock = JSON.parse(fs.readFileSync(path.join(ROOT, 'package-lock.json'), 'utf8')) as { packages: Record<string, LockedPackage> };
const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { allowScripts?: Record<string, boolean> };

function packageName(lockPath: string): string {
  return lockPath.slice(lockPath.lastIndexOf('node_modules/') + 'node_modules/'.length);
}

function npmVersion(): number[] {
  return execFileSync('npm', ['--version'], { encoding: 'utf8' }).trim().split('.').map(Number);
}

describe('install', () => {
  it('every locked package comes from the npm registry (no git, file or URL dependencies)', () => {
    for (const [where, p] of Object.entries(lock.packages)) {
      if (where === '') continue;
      expect(p.link, where).toBeFalsy();
      if (p.resolved) expect(new URL(p.resolved).host, where).toBe('registry.npmjs.org');
    }
  });

  it('every dependency with an install script has an explicit decision, and onnxruntime-node\'s is denied', () => {
    const withScripts = Object.entries(lock.packages).filter(([where, p]) => where && p.hasInstallScript).map(([where]) => packageName(where));
    expect(withScripts).toContain('onnxruntime-node');
    for (const name of withScripts) expect(pkg.allowScripts?.[name], `allowScripts.${name}`).toBe(false);
  });

  it('there is no .npmrc for npm to warn about', () => {
    expect(fs.existsSync(path.join(ROOT, '.npmrc'))).toBe(false);
  });

  it('npm itself reports no unreviewed install script and prints no warning', () => {
    const [major = 0, minor = 0] = npmVersion();
    if (major < 11 || (major === 11 && minor < 19)) {
      console.warn(`npm ${major}.${minor} has no install-scripts command; checked the lockfile only`);
      return;
    }
    const r = spawnSync('npm', ['install-scripts', 'ls'], { cwd: ROOT, encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/No packages with unreviewed install scripts/);
    expect(r.stderr).not.toMatch(/warn/i);
  });
});
