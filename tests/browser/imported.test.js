// A model imported from an ONNX graph (the narrowed zfnet512-structured fixture: floor pools, a
// 2×2 pool5, BGR 0–255 input) beside the default one: the page for it lists the layers as the
// graph has them, predicts what the API predicts, and shows its conv1 filters and a projection.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { ROOT, ARTIFACTS, startServer, waitForIndex, launch } = require('./harness');

const ID = 'zfnet512-narrow';
let server, url, browser;

before(async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'zfvis-onnx-ui-'));
  // the fixture's ten classes, as `zfvis import --classes` takes them
  const fixture = JSON.parse(fs.readFileSync(path.join(ROOT, 'tests', 'fixtures', 'zfnet-narrow.json')));
  const classes = path.join(dir, 'classes.tsv');
  fs.writeFileSync(classes, fixture.classes.map(c => `${c.wnid}\t${c.label}`).join('\n') + '\n');
  const out = path.join(dir, `${ID}.safetensors`);
  execFileSync(process.env.ZFVIS_BIN, ['import', path.join(ROOT, 'tests', 'fixtures', 'import', `${ID}.onnx`),
    '--classes', classes, '--out', out], { stdio: ['ignore', 'ignore', 'inherit'] });
  ({ child: server, url } = await startServer(['--weights', out]));
  await waitForIndex(url, ID);
  browser = await launch();
});

after(async () => {
  if (browser) await browser.close();
  if (server) { server.removeAllListeners('exit'); server.kill(); }
});

test('an imported ONNX model shows its own layers, predictions, filters and projections', async () => {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const errors = [];
  page.on('pageerror', e => errors.push(e.message));
  await page.goto(`${url}?model=${ID}`);
  const layers = page.locator('#architecture');
  await layers.waitFor({ timeout: 30000 });
  await layers.locator('summary').click();
  const lines = await layers.locator('li').allTextContents();
  assert.equal(lines.length, 1 + 8, lines.join('\n'));
  assert.match(lines[0], /BGR 0–255/, 'the input convention');
  assert.match(lines[1], /^conv1: 7×7\/2 pad 1 → 16×110×110 → LRN → max pool 3×3\/2 floor → 16×54×54$/);
  assert.match(lines[2], /^conv2: 5×5\/2 pad 0 → 24×25×25 → LRN → max pool 3×3\/2 floor → 24×12×12$/);
  assert.match(lines[5], /^conv5: 3×3\/1 pad 1 → 32×12×12 → max pool 2×2\/2 floor → 32×6×6$/);

  await page.setInputFiles('#file-input', path.join(ROOT, 'web', 'assets', 'demo', 'dog.jpg'));
  await page.locator('#predictions li').nth(4).waitFor({ timeout: 30000 });
  const form = new FormData();
  form.append('image', new Blob([fs.readFileSync(path.join(ROOT, 'web', 'assets', 'demo', 'dog.jpg'))]), 'dog.jpg');
  const api = await (await fetch(`${url}api/predict?model=${ID}`, { method: 'POST', body: form })).json();
  assert.deepEqual(await page.locator('#predictions .label').allTextContents(), api.predictions.map(p => p.label));

  // its conv1 filters and a map's projection render (from this model)
  const filters = page.locator('#conv1-filters');
  await filters.waitFor({ timeout: 30000 });
  assert.match(await filters.getAttribute('src'), new RegExp(`model=${ID}`));
  await page.waitForFunction(() => {
    const img = document.querySelector('#conv1-filters');
    return img && img.complete && img.naturalWidth > 0;
  }, null, { timeout: 30000 });
  await page.locator('#map-grid .map').first().waitFor({ timeout: 30000 });
  await page.locator('#map-grid .map').nth(2).click();
  await page.locator('#map-title').waitFor({ timeout: 30000 });
  await page.screenshot({ path: path.join(ARTIFACTS, 'imported-onnx.png'), fullPage: true });
  assert.deepEqual(errors, []);
  await page.close();
});
