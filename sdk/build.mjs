// Builds dist/sdk.js: src/auto.js and web-vitals as one minified IIFE.
//   node build.mjs           write dist/sdk.js
//   node build.mjs --check   rebuild into a temp file; fail if it differs from
//                            the committed dist/sdk.js or is over the size budget
import { build } from 'esbuild';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

const root = dirname(fileURLToPath(import.meta.url));
const dist = join(root, 'dist/sdk.js');
const BUDGET_GZIP = 6144;

const pkg = (p) => JSON.parse(readFileSync(join(root, p), 'utf8'));
const sdk = pkg('package.json');
const wv = pkg('node_modules/web-vitals/package.json');

const bundle = async (outfile) => {
  await build({
    absWorkingDir: root,
    entryPoints: ['src/auto.js'],
    outfile,
    bundle: true,
    minify: true,
    format: 'iife',
    target: 'es2020',
    platform: 'browser',
    legalComments: 'none',
    banner: {
      js: `/*! overwatch ${sdk.version} | web-vitals ${wv.version} (c) Google LLC, Apache-2.0 */`,
    },
    logLevel: 'warning',
  });
  return readFileSync(outfile);
};

const sizes = (buf) => {
  const gz = gzipSync(buf, { level: 9 }).length;
  console.log(`dist/sdk.js: ${buf.length} bytes raw, ${gz} bytes gzip -9 (budget ${BUDGET_GZIP})`);
  return gz;
};

if (process.argv.includes('--check')) {
  const dir = mkdtempSync(join(tmpdir(), 'overwatch-sdk-'));
  let fresh;
  try {
    fresh = await bundle(join(dir, 'sdk.js'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  let committed = null;
  try {
    committed = readFileSync(dist);
  } catch {}
  const gz = sizes(fresh);
  let failed = false;
  if (!committed || !fresh.equals(committed)) {
    console.error(
      'FAIL: dist/sdk.js is not what the sources build to. Run `npm run build` in sdk/ and commit dist/sdk.js.',
    );
    failed = true;
  }
  if (gz > BUDGET_GZIP) {
    console.error(`FAIL: dist/sdk.js is ${gz} bytes gzipped, over the ${BUDGET_GZIP}-byte budget.`);
    failed = true;
  }
  if (failed) process.exit(1);
  console.log('ok: dist/sdk.js is up to date and within budget');
} else {
  sizes(await bundle(dist));
}
