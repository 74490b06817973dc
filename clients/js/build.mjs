// Builds dist/: switchboard.js (ESM, readable), switchboard.min.js (ESM, minified, for
// <script type="module">) and types/*.d.ts. `node build.mjs --check` rebuilds into a temporary
// folder and fails when the committed dist/ differs (the server embeds dist/ in its binary).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = fileURLToPath(new URL('.', import.meta.url));
const check = process.argv.includes('--check');
const out = check ? mkdtempSync(join(tmpdir(), 'sb-dist-')) : join(root, 'dist');
if (!check) rmSync(out, { recursive: true, force: true });

const common = {
  entryPoints: [join(root, 'src/index.ts')],
  bundle: true,
  format: 'esm',
  target: 'es2020',
  platform: 'neutral',
  legalComments: 'none',
  logLevel: 'warning',
  // Fixed, so that the path comments in switchboard.js do not depend on where the build runs from.
  absWorkingDir: root,
};
await build({ ...common, outfile: join(out, 'switchboard.js') });
await build({ ...common, outfile: join(out, 'switchboard.min.js'), minify: true });
execFileSync(join(root, 'node_modules/.bin/tsc'), ['-p', join(root, 'tsconfig.json'), '--outDir', join(out, 'types')], {
  stdio: 'inherit',
});

if (check) {
  const files = (dir) =>
    readdirSync(dir).flatMap((f) => (statSync(join(dir, f)).isDirectory() ? files(join(dir, f)) : [join(dir, f)]));
  const fresh = files(out).map((f) => relative(out, f)).sort();
  const committed = files(join(root, 'dist')).map((f) => relative(join(root, 'dist'), f)).sort();
  const stale = fresh.filter((f) => !committed.includes(f) || !readFileSync(join(out, f)).equals(readFileSync(join(root, 'dist', f))));
  const extra = committed.filter((f) => !fresh.includes(f));
  rmSync(out, { recursive: true, force: true });
  if (stale.length + extra.length > 0) {
    console.error(`clients/js/dist is stale (${[...stale, ...extra].join(', ')}): run \`npm run build\` in clients/js and commit dist/`);
    process.exit(1);
  }
  console.log('clients/js/dist is up to date');
}
