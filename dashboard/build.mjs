// Builds dist/: the analytics dashboard (index.html, app.js, app.css: served
// at /dashboard) and the on-call page (oncall.html, oncall.js, oncall.css:
// served at /debug/dashboard), each script with uPlot, minified, each
// stylesheet with uPlot's. The engine embeds them.
//   node build.mjs           write dist/
//   node build.mjs --check   rebuild into a temp folder; fail if it differs
//                            from the committed dist/ or is over the budget
import { build } from 'esbuild';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

const root = dirname(fileURLToPath(import.meta.url));
const FILES = ['index.html', 'app.js', 'app.css', 'oncall.html', 'oncall.js', 'oncall.css'];
// Both pages, gzipped (uPlot is ~20 KiB of each).
const BUDGET_GZIP = 80 * 1024;

const pkg = (p) => JSON.parse(readFileSync(join(root, p), 'utf8'));
const uplot = pkg('node_modules/uplot/package.json');

const bundle = async (out) => {
  mkdirSync(out, { recursive: true });
  await build({
    absWorkingDir: root,
    entryPoints: { app: 'src/app.js', oncall: 'src/oncall.js' },
    outdir: out,
    bundle: true,
    minify: true,
    format: 'iife',
    target: 'es2020',
    platform: 'browser',
    legalComments: 'none',
    banner: {
      js: `/*! overwatch dashboard ${pkg('package.json').version} | uPlot ${uplot.version} (c) Leon Sorokin, MIT */`,
      css: `/*! uPlot ${uplot.version} (c) Leon Sorokin, MIT */`,
    },
    logLevel: 'warning',
  });
  for (const html of ['index.html', 'oncall.html']) copyFileSync(join(root, 'src', html), join(out, html));
  return Object.fromEntries(FILES.map((f) => [f, readFileSync(join(out, f))]));
};

const report = (files) => {
  const gz = FILES.reduce((n, f) => n + gzipSync(files[f], { level: 9 }).length, 0);
  const raw = FILES.map((f) => `${f} ${files[f].length} B`).join(', ');
  console.log(`dist/: ${raw}; ${gz} B gzip -9 in all (budget ${BUDGET_GZIP})`);
  return gz;
};

if (process.argv.includes('--check')) {
  const dir = mkdtempSync(join(tmpdir(), 'overwatch-dashboard-'));
  let fresh;
  try {
    fresh = await bundle(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  let failed = report(fresh) > BUDGET_GZIP;
  if (failed) console.error('FAIL: the dashboard is over its size budget.');
  for (const f of FILES) {
    let committed = null;
    try {
      committed = readFileSync(join(root, 'dist', f));
    } catch {}
    if (!committed || !fresh[f].equals(committed)) {
      console.error(`FAIL: dist/${f} is not what the sources build to. Run \`npm run build\` in dashboard/ and commit dist/.`);
      failed = true;
    }
  }
  if (failed) process.exit(1);
  console.log('ok: dashboard/dist is up to date and within budget');
} else {
  report(await bundle(join(root, 'dist')));
}
