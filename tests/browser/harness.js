// What every browser test file shares: a real `zfvis serve` on a free port (the demo photos as
// its probe set), headless Chromium, and the accessibility check.
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { chromium } = require('playwright-core');

const ROOT = path.resolve(__dirname, '..', '..');
const ARTIFACTS = path.join(ROOT, 'tests', 'artifacts');
const BIN = process.env.ZFVIS_BIN;
const WEIGHTS = process.env.ZFVIS_WEIGHTS || path.join(ROOT, 'model-weights', 'zfnet-imagenette.safetensors');

const DEMO = path.join(ROOT, 'web', 'assets', 'demo');

/// Starts the server on `WEIGHTS` with `probe` as its probe set, plus `extra` arguments;
/// resolves to { child, url } once it listens (url ends with '/').
function startServer(extra = [], probe = DEMO) {
  assert.ok(BIN, 'ZFVIS_BIN must point at the zfvis binary');
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  return new Promise((resolve, reject) => {
    const cache = fs.mkdtempSync(path.join(os.tmpdir(), 'zfvis-ui-'));
    const child = spawn(BIN, ['serve', '--addr', '127.0.0.1:0', '--weights', WEIGHTS,
      '--ui-dir', path.join(ROOT, 'dist'), '--probe', probe,
      '--cache-dir', cache, ...extra], { stdio: ['ignore', 'pipe', 'inherit'] });
    const timer = setTimeout(() => reject(new Error('zfvis did not start in 60 s')), 60000);
    child.on('exit', code => reject(new Error(`zfvis exited with ${code}`)));
    child.stdout.on('data', data => {
      const m = /zfvis listening on (\S+)/.exec(data.toString());
      if (m) { clearTimeout(timer); resolve({ child, url: m[1] }); }
    });
  });
}

/// Waits until the probe index of `model` (default: the default model) is ready.
async function waitForIndex(url, model) {
  const q = model ? `?model=${model}` : '';
  for (let i = 0; ; i++) {
    const health = await (await fetch(`${url}api/health${q}`)).json();
    if (health.probe_index && health.probe_index.state === 'ready') return;
    assert.notEqual(health.probe_index && health.probe_index.state, 'failed', JSON.stringify(health));
    assert.ok(i < 1200, `probe index of ${model || 'the default model'} not ready in 120 s`);
    await new Promise(r => setTimeout(r, 100));
  }
}

function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

const AXE = fs.readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');

/// axe-core on the page as it stands: no moderate, serious or critical accessibility violation
/// (e.g. `region`: all content inside landmarks).
async function assertAccessible(page, what) {
  await page.addScriptTag({ content: AXE });
  const bad = await page.evaluate(async () => (await axe.run()).violations
    .filter(v => v.impact === 'moderate' || v.impact === 'serious' || v.impact === 'critical')
    .map(v => `${v.id} (${v.impact}, ${v.nodes.length}×): ${v.nodes[0].html.slice(0, 100)}`));
  assert.deepEqual(bad, [], `${what}: accessibility violations`);
}

module.exports = { ROOT, ARTIFACTS, WEIGHTS, DEMO, startServer, waitForIndex, launch, assertAccessible };
