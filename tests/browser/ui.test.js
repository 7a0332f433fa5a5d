// Headless Chromium against the real UI served by a real `zfvis serve`.
// Run by scripts/test.sh: `node --test tests/browser/`. Needs ZFVIS_BIN (the server binary) and
// ZFVIS_WEIGHTS (a model); screenshots go to tests/artifacts/.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { ROOT, ARTIFACTS, startServer, waitForIndex, launch, assertAccessible } = require('./harness');

let server, url, browser;

before(async () => {
  ({ child: server, url } = await startServer());
  // the server answers at once and indexes the probe set in the background: wait for it
  await waitForIndex(url);
  browser = await launch();
});

after(async () => {
  if (browser) await browser.close();
  if (server) { server.removeAllListeners('exit'); server.kill(); }
});

async function openPage() {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  const errors = [];
  page.on('pageerror', e => errors.push(e.message));
  await page.goto(url);
  await page.locator('#file-input').waitFor({ timeout: 30000 });
  return { page, errors };
}

test('uploading an image shows it with its top-5 predictions', async () => {
  const { page, errors } = await openPage();
  await page.locator('.model').first().waitFor();
  await page.setInputFiles('#file-input', path.join(ROOT, 'web', 'assets', 'demo', 'dog.jpg'));
  const items = page.locator('#predictions li');
  await items.nth(4).waitFor({ timeout: 30000 });
  assert.equal(await items.count(), 5);
  // the page shows what the API computes for the same bytes
  const form = new FormData();
  form.append('image', new Blob([fs.readFileSync(path.join(ROOT, 'web', 'assets', 'demo', 'dog.jpg'))]), 'dog.jpg');
  const api = await (await fetch(`${url}api/predict`, { method: 'POST', body: form })).json();
  const labels = await page.locator('#predictions .label').allTextContents();
  assert.deepEqual(labels, api.predictions.map(p => p.label));
  const src = await page.locator('#preview').getAttribute('src');
  assert.match(src, /^blob:/);
  const model = await (await fetch(`${url}api/model`)).json();
  assert.equal(await page.locator('#untrained').isVisible(), !model.trained, 'the UNTRAINED warning shows exactly when the model is');
  // the preprocessing the page states is the model's own
  assert.match(await page.locator('#predictions + p.meta').textContent(),
    new RegExp(`resized to ${model.input.resize}, centre crop ${model.input.crop}$`));
  // the badge states the accuracy the manifest records, or nothing when there is none
  const accuracy = (await page.locator('#accuracy').textContent()).trim();
  if (model.accuracy) {
    const shown = Number(accuracy.match(/top-1 ([0-9.]+)%/)[1]);
    assert.ok(Math.abs(shown - model.accuracy.top1 * 100) < 0.051, `${accuracy} vs ${model.accuracy.top1}`);
    assert.match(accuracy, new RegExp(`on ${model.accuracy.images} `));
  } else {
    assert.equal(accuracy, '');
  }
  // a model that can only answer with its own classes says how many it knows, and which
  const known = page.locator('#known-classes');
  assert.match(await known.locator('summary').textContent(), new RegExp(`knows ${model.classes.length} classes`));
  await known.locator('summary').click();
  const listed = await known.locator('p').textContent();
  for (const c of model.classes) assert.ok(listed.includes(c.label), `${c.label} listed`);
  await page.screenshot({ path: path.join(ARTIFACTS, 'upload-predictions.png') });
  assert.deepEqual(errors, []);
  await page.close();
});

test('a demo photo is one click away', async () => {
  const { page, errors } = await openPage();
  await page.locator('button.demo[data-demo="chelsea.png"]').click();
  await page.locator('#predictions li').nth(4).waitFor({ timeout: 30000 });
  assert.match(await page.locator('.preview figcaption').textContent(), /chelsea\.png/);
  assert.deepEqual(errors, []);
  await page.close();
});

test('a photo dropped anywhere on the page is analysed', async () => {
  const { page, errors } = await openPage();
  // drop on the page header, far from the drop zone
  await page.evaluate(async () => {
    const blob = await (await fetch('/demo/giraffe.jpg')).blob();
    const dt = new DataTransfer();
    dt.items.add(new File([blob], 'giraffe.jpg', { type: 'image/jpeg' }));
    const target = document.querySelector('header.topbar');
    target.dispatchEvent(new DragEvent('dragover', { dataTransfer: dt, bubbles: true, cancelable: true }));
    window.__dropKept = !target.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
  });
  assert.ok(await page.evaluate(() => window.__dropKept), 'the drop was taken by the app (default prevented)');
  await page.locator('#predictions li').nth(4).waitFor({ timeout: 30000 });
  assert.match(await page.locator('.preview figcaption').textContent(), /giraffe\.jpg/);
  assert.deepEqual(errors, []);
  await page.close();
});

test('an invalid upload shows a readable error, not a blank page', async () => {
  const { page } = await openPage();
  // after a good image with a map open, a bad one clears every view of the good one
  await page.setInputFiles('#file-input', path.join(ROOT, 'web', 'assets', 'demo', 'kite.jpg'));
  await page.locator('#map-grid .map').first().click({ timeout: 30000 });
  await page.locator('#map-title').waitFor({ timeout: 30000 });
  await page.setInputFiles('#file-input', {
    name: 'notes.jpg', mimeType: 'image/jpeg', buffer: Buffer.from('definitely not a jpeg'),
  });
  const error = page.locator('#error');
  await error.waitFor({ timeout: 30000 });
  assert.match(await error.textContent(), /not an image/);
  assert.equal(await page.locator('#predictions').count(), 0);
  for (const sel of ['#map-view', '#map-grid', '#occlusion', '#invariance', '#correspondence']) {
    assert.equal(await page.locator(sel).count(), 0, `${sel} of the previous image still shown`);
  }
  await page.screenshot({ path: path.join(ARTIFACTS, 'invalid-upload.png') });
  await page.close();
});

async function imageLoaded(page, selector) {
  await page.waitForFunction(sel => {
    const img = document.querySelector(sel);
    return img && img.complete && img.naturalWidth > 0;
  }, selector, { timeout: 30000 });
}

test('pick a layer and a map: heatmap, projection, patch and receptive field; permalink and back', async () => {
  const { page, errors } = await openPage();
  await page.setInputFiles('#file-input', path.join(ROOT, 'web', 'assets', 'demo', 'giraffe.jpg'));
  await page.locator('#map-grid .map').first().waitFor({ timeout: 30000 });
  const model = await (await fetch(`${url}api/model`)).json();
  assert.equal(await page.locator('#map-grid .map').count(), model.layers[0].output_shape[0], 'every conv1 map shown');
  // layer 1 also shows its filters as an RGB grid, as wide as 12 filters
  await imageLoaded(page, '#conv1-filters');
  const filters = await page.evaluate(() => document.querySelector('#conv1-filters').naturalWidth);
  assert.equal(filters, 12 * (7 * 8 + 8) + 8);
  // with how learned they look, as the API measures it
  const stats = await page.locator('#conv1-stats').textContent();
  assert.ok(stats.includes(`anisotropy ${model.conv1.anisotropy.toFixed(2)}`), stats);
  assert.ok(stats.includes(`low-frequency share ${model.conv1.low_freq_share.toFixed(2)}`), stats);

  await page.locator('button.tab[data-layer="conv2"]').click();
  await page.waitForFunction(n => document.querySelectorAll('#map-grid .map').length === n,
    model.layers[1].output_shape[0], { timeout: 30000 });
  // strongest first: the first tile is the map with the largest activation
  const id = (await page.evaluate(() => location.hash)).split('/')[1];
  const acts = await (await fetch(`${url}api/images/${id}/layers/conv2`)).json();
  const strongest = acts.max.indexOf(Math.max(...acts.max));
  // thumbnails share the layer's scale by default (a dim tile is a weak map); the switch stretches each
  assert.match(await page.locator('#map-grid .map img').first().getAttribute('src'), /scale=layer/);
  await page.locator('#shared-scale').uncheck();
  await page.waitForFunction(() => !/scale=layer/.test(document.querySelector('#map-grid .map img').getAttribute('src')));
  assert.match(await page.locator('#grid-facts').textContent(), /own maximum/);
  await page.locator('#shared-scale').check();
  assert.equal(await page.locator('#map-grid .map').first().getAttribute('data-map'), String(strongest));

  await page.locator('#map-grid .map').first().click();
  await page.locator('#map-title').waitFor({ timeout: 30000 });
  assert.match(await page.locator('#map-title').textContent(), new RegExp(`conv2 · map ${strongest} of`));
  for (const sel of ['#projection-img', '#activation-img', '#patch-img']) await imageLoaded(page, sel);
  const box = await page.locator('#rf-box').boundingBox();
  assert.ok(box.width > 10 && box.height > 10, 'receptive field box drawn');
  assert.equal(await page.evaluate(() => location.hash), `#/${id}/conv2/${strongest}/unit`);
  // the same unit by the three backward methods, side by side, each with its sentence
  for (const m of ['deconvnet', 'gradient', 'guided']) await imageLoaded(page, `#method-${m}`);
  const view = await (await fetch(`${url}visualize/conv2/${strongest}?image=${id}`)).json();
  assert.deepEqual(await page.locator('#methods img').evaluateAll(els => els.map(e => e.getAttribute('src'))),
    view.methods.map(m => m.url));
  assert.match(await page.locator('#methods').textContent(), /only where the unit was on going up/);
  // the heatmap has its scale, and the explanation opens from the keyboard
  assert.match(await page.locator('#map-view .colourbar').first().getAttribute('aria-label'), /^colour scale from 0 \(dark\) to \d/);
  await page.locator('#map-explain summary').focus();
  await page.keyboard.press('Enter');
  assert.ok(await page.locator('#map-explain').evaluate(d => d.open), 'explanation opened by keyboard');
  assert.match(await page.locator('#map-explain').textContent(), /receptive field/);
  await page.screenshot({ path: path.join(ARTIFACTS, 'map-view-unit.png'), fullPage: true });

  await page.locator('#mode-map').click();
  await page.waitForFunction(() => location.hash.endsWith('/map'));
  await imageLoaded(page, '#projection-img');
  assert.match(await page.locator('#projection-img').getAttribute('src'), /mode=map/);

  // a permalink reload restores the view
  await page.reload();
  await page.locator('#map-title').waitFor({ timeout: 30000 });
  assert.match(await page.locator('#map-title').textContent(), new RegExp(`conv2 · map ${strongest} of`));
  assert.match(await page.locator('#projection-img').getAttribute('src'), /mode=map/);
  await page.screenshot({ path: path.join(ARTIFACTS, 'permalink-reload.png'), fullPage: true });

  // back returns to single-unit mode
  await page.goBack();
  await page.waitForFunction(() => location.hash.endsWith('/unit'), null, { timeout: 10000 });
  await page.waitForFunction(() => /mode=unit/.test(document.querySelector('#projection-img')?.getAttribute('src') || ''),
    null, { timeout: 30000 });
  assert.deepEqual(errors, []);
  await page.close();
});

test('a map opened far down the grid scrolls into view; a click on its activation map picks a unit', async () => {
  const { page, errors } = await openPage();
  await page.setInputFiles('#file-input', path.join(ROOT, 'web', 'assets', 'demo', 'horses.jpg'));
  await page.locator('#map-grid .map').first().waitFor({ timeout: 30000 });
  await page.locator('button.tab[data-layer="conv2"]').click();
  await page.waitForFunction(() => document.querySelectorAll('#map-grid .map').length > 96, null, { timeout: 30000 });
  const last = page.locator('#map-grid .map').last();
  await last.scrollIntoViewIfNeeded();
  await last.click();
  await page.locator('#map-title').waitFor({ timeout: 30000 });
  await page.waitForFunction(() => {
    const r = document.querySelector('#map-view').getBoundingClientRect();
    return r.top >= -1 && r.top < window.innerHeight / 2;
  }, null, { timeout: 10000 });
  // pick a unit other than the strongest by clicking where it is drawn
  await imageLoaded(page, '#activation-img');
  const [, id, layer, map] = (await page.evaluate(() => location.hash)).split('/');
  const v = await (await fetch(`${url}visualize/${layer}/${map}?image=${id}`)).json();
  const [h, w] = v.map_shape;
  const want = { x: (v.position.x + 7) % w, y: (v.position.y + 5) % h };
  const box = await page.locator('#activation-img').boundingBox();
  await page.mouse.click(box.x + (want.x + 0.5) * box.width / w, box.y + (want.y + 0.5) * box.height / h);
  await page.waitForFunction(u => location.hash.endsWith(`/unit/${u}`), `${want.x},${want.y}`, { timeout: 10000 });
  await page.waitForFunction(q => (document.querySelector('#projection-img')?.getAttribute('src') || '').includes(q),
    `x=${want.x}&y=${want.y}`, { timeout: 30000 });
  assert.match(await page.locator('#map-facts').textContent(), new RegExp(`picked unit \\(x ${want.x}, y ${want.y}\\)`));
  await imageLoaded(page, '#projection-img');
  await page.screenshot({ path: path.join(ARTIFACTS, 'picked-unit.png') });
  // the pick survives a reload (it is in the link)
  await page.reload();
  await page.waitForFunction(q => (document.querySelector('#projection-img')?.getAttribute('src') || '').includes(q),
    `x=${want.x}&y=${want.y}`, { timeout: 30000 });
  assert.deepEqual(errors, []);
  await page.close();
});

test('a map shows its top-9 over the probe set, patch beside reconstruction; a click opens that image', async () => {
  const { page, errors } = await openPage();
  await page.setInputFiles('#file-input', path.join(ROOT, 'web', 'assets', 'demo', 'kite.jpg'));
  await page.locator('#map-grid .map').first().waitFor({ timeout: 30000 });
  await page.locator('button.tab[data-layer="conv5"]').click();
  await page.waitForFunction(() => document.querySelectorAll('#map-grid .map').length > 96, null, { timeout: 30000 });
  await page.locator('#map-grid .map').first().click();
  await page.locator('#top9-grid .top9-pair').nth(8).waitFor({ timeout: 60000 });
  assert.equal(await page.locator('#top9-grid .top9-pair').count(), 9);
  for (let i = 0; i < 9; i++) {
    for (const cls of ['patch', 'recon']) {
      await page.waitForFunction(([i, cls]) => {
        const img = document.querySelectorAll('#top9-grid .top9-pair')[i].querySelector('img.' + cls);
        return img && img.complete && img.naturalWidth > 0;
      }, [i, cls], { timeout: 30000 });
    }
  }
  // the grid shows what the API lists, strongest first
  const [, id, layer, map] = (await page.evaluate(() => location.hash)).split('/');
  const top = await (await fetch(`${url}visualize/${layer}/${map}`)).json();
  const titles = await page.locator('#top9-grid .top9-pair').evaluateAll(els => els.map(e => e.title));
  assert.deepEqual(titles.map(t => t.split(' · ')[1]), top.entries.map(e => e.image));
  await page.screenshot({ path: path.join(ARTIFACTS, 'top9.png'), fullPage: true });

  // the strongest probe image that is not the uploaded photo itself (the kite is in the probe set
  // too, and may well be its own map's strongest: opening it would change nothing)
  const other = top.entries.findIndex(e => e.image !== 'kite.jpg');
  assert.ok(other >= 0, 'a probe image other than the kite');
  await page.locator('#top9-grid .top9-pair').nth(other).click();
  await page.waitForFunction(old => location.hash.split('/')[1] !== old, id, { timeout: 30000 });
  await page.locator('#map-title').waitFor({ timeout: 30000 });
  assert.match(await page.locator('#map-title').textContent(), new RegExp(`${layer} · map ${map} of`));
  const opened = await page.locator('#preview').getAttribute('src');
  assert.ok(opened, 'the probe image is now the current image');
  // captioned with its file and class, not as a link
  await page.waitForFunction(() => /^probe image /.test(document.querySelector('.preview figcaption')?.textContent || ''), null, { timeout: 10000 });
  assert.deepEqual(errors, []);
  await page.close();
});

test('an occlusion sweep shows live progress, then its three maps with a class legend', async () => {
  const { page, errors } = await openPage();
  await page.setInputFiles('#file-input', path.join(ROOT, 'web', 'assets', 'demo', 'dog.jpg'));
  await page.locator('#occ-start').waitFor({ timeout: 30000 });
  // the panel is far below the map grid: one click on the sticky section bar brings it up
  await page.locator('#map-grid .map').first().waitFor({ timeout: 30000 });
  await page.locator('#jump button[data-jump="occlusion"]').click();
  await page.waitForFunction(() => {
    const top = document.querySelector('#occlusion').getBoundingClientRect().top;
    return top >= 0 && top < 200;
  }, null, { timeout: 5000 });
  await page.selectOption('#occ-stride', '16');
  await page.selectOption('#occ-size', '32');
  // record every progress value the page shows while the sweep runs
  await page.evaluate(() => {
    window.__progress = [];
    new MutationObserver(() => {
      const p = document.querySelector('#occ-progress');
      if (p) window.__progress.push(Number(p.value));
    }).observe(document.body, { subtree: true, childList: true, attributes: true });
  });
  await page.locator('#occ-start').click();
  await page.locator('#occ-legend li').first().waitFor({ timeout: 60000 });
  for (const sel of ['#occ-activation', '#occ-probability', '#occ-classes', '#occ-projection']) await imageLoaded(page, sel);
  const seen = await page.evaluate(() => window.__progress);
  assert.ok(seen.length > 0, 'a progress bar was shown');
  const cells = (await page.locator('#occ-legend li').allTextContents())
    .map(t => Number(/\((\d+) cells\)/.exec(t)[1])).reduce((a, b) => a + b, 0);
  assert.equal(cells, 14 * 14, 'the legend accounts for every cell');
  assert.match(await page.locator('#occ-facts').textContent(), /14×14 positions, 32-px square every 16 px/);
  // probability on the absolute 0–100% scale, with its colour bar
  assert.match(await page.locator('#occ-probability-caption').textContent(), /absolute scale/);
  assert.equal(await page.locator('.occ-maps .colourbar').nth(1).getAttribute('aria-label'), 'colour scale from 0% (dark) to 100% (yellow)');
  // the stretched view is an option, and says so
  await page.locator('#occ-stretch').check();
  await page.waitForFunction(() => /probability-stretched\.png$/.test(document.querySelector('#occ-probability').getAttribute('src')));
  await imageLoaded(page, '#occ-probability');
  assert.match(await page.locator('#occ-probability-caption').textContent(), /STRETCHED/);
  await page.locator('#occ-stretch').uncheck();
  await page.screenshot({ path: path.join(ARTIFACTS, 'occlusion.png'), fullPage: true });
  assert.deepEqual(errors, []);
  await page.close();
});

test('invariance (Fig. 5): live progress, then 3×3 charts with a curve per image, a legend and CSV', async () => {
  const { page, errors } = await openPage();
  await page.setInputFiles('#file-input', path.join(ROOT, 'web', 'assets', 'demo', 'horses.jpg'));
  await page.locator('#invariance-run').waitFor({ timeout: 30000 });
  await page.locator('#invariance input[data-other="kite.jpg"]').check();
  await page.selectOption('#invariance-steps', '9');
  await page.locator('#invariance-run').click();
  await page.locator('#invariance-progress').waitFor({ timeout: 10000 });
  // live progress from the server's event stream: the bar moves before the charts arrive
  // (2 images × 3 transforms × 9 steps = 54 transformed images, reported per transform)
  await page.waitForFunction(() => {
    const bar = document.querySelector('#invariance-progress progress');
    return bar && Number(bar.getAttribute('value')) > 0 && bar.getAttribute('max') === '54';
  }, null, { timeout: 60000, polling: 20 });
  assert.match(await page.locator('#invariance-progress').textContent(), /\d+ of 54 transformed images/);
  await page.locator('#invariance-charts .chart-row').nth(2).waitFor({ timeout: 120000 });
  assert.equal(await page.locator('#invariance-charts svg').count(), 9);
  // two images: two curves in every chart, of 9 points each
  const points = await page.locator('#invariance-charts polyline').evaluateAll(
    els => els.map(e => e.getAttribute('points').trim().split(' ').length));
  assert.deepEqual(points, Array(18).fill(9));
  assert.equal(await page.locator('#invariance-legend li').count(), 2);
  const rows = await page.locator('#invariance-charts .chart-row').evaluateAll(els => els.map(e => e.dataset.transform));
  assert.deepEqual(rows, ['translate', 'scale', 'rotate']);
  assert.match(await page.locator('#invariance-charts').textContent(), /rotation \(degrees\)/);
  const csv = decodeURIComponent((await page.locator('#invariance-csv').getAttribute('href')).split(',').slice(1).join(','));
  assert.equal(csv.trim().split('\n').length, 1 + 2 * 3 * 9);
  await page.locator('#invariance').screenshot({ path: path.join(ARTIFACTS, 'invariance.png') });
  assert.deepEqual(errors, []);
  await page.close();
});

test('correspondence (Table 1): add an image, drag a box, measure Δ beside the paper', async () => {
  const { page, errors } = await openPage();
  await page.setInputFiles('#file-input', path.join(ROOT, 'web', 'assets', 'demo', 'dog.jpg'));
  await page.locator('#corr-run').waitFor({ timeout: 30000 });
  assert.ok(await page.locator('#corr-run').isDisabled(), 'one image is not enough');
  // the paper's set-up needs Imagenette as the probe set; this server probes the demo photos
  await page.locator('#corr-preset').click();
  await page.locator('#corr-error').waitFor({ timeout: 30000 });
  assert.match(await page.locator('#corr-error').textContent(), /--probe \.\.\/shared\/datasets\/imagenette\/val/);
  await page.locator('#correspondence button[data-corr-demo="kite.jpg"]').click();
  await page.locator('#corr-images .corr-stage').nth(1).waitFor({ timeout: 30000 });
  // draw the right eye's box on the second picture
  await page.locator('#correspondence button[data-part="1"]').click();
  const stage = await page.locator('#corr-images .corr-stage').nth(1).boundingBox();
  await page.mouse.move(stage.x + 50, stage.y + 50);
  await page.mouse.down();
  await page.mouse.move(stage.x + 90, stage.y + 80, { steps: 4 });
  await page.mouse.up();
  const sent = page.waitForRequest(r => r.url().endsWith('/api/correspondence') && r.method() === 'POST');
  await page.locator('#corr-run').click();
  const body = JSON.parse((await sent).postData());
  assert.equal(body.images.length, 2);
  assert.deepEqual(body.parts[1].boxes[1], { x0: 50, y0: 50, x1: 90, y1: 80 });
  await page.locator('#corr-table tbody tr').nth(3).waitFor({ timeout: 60000 });
  const rows = await page.locator('#corr-table tbody tr').evaluateAll(trs => trs.map(tr => [...tr.children].map(td => td.textContent)));
  assert.deepEqual(rows.map(r => r[0]), ['left eye', 'right eye', 'nose', 'random']);
  assert.equal(rows[3][3], '0.107 ± 0.017', 'the paper\'s random row');
  assert.ok(rows.every(r => /^0\.\d{3} ± 0\.\d{3}$/.test(r[1])), JSON.stringify(rows));
  await page.locator('#correspondence').screenshot({ path: path.join(ARTIFACTS, 'correspondence.png') });
  assert.deepEqual(errors, []);
  await page.close();
});

test('the classroom tour steps through the paper with the keyboard, on a 1080p projector', async () => {
  const page = await browser.newPage({ viewport: { width: 1920, height: 1080 } });
  const errors = [];
  page.on('pageerror', e => errors.push(e.message));
  // offline: nothing may be fetched from anywhere but zfvis itself (no CDN, no web fonts)
  const foreign = [];
  page.on('request', r => { if (!r.url().startsWith(url) && !r.url().startsWith('blob:') && !r.url().startsWith('data:')) foreign.push(r.url()); });
  await page.goto(url);
  await page.locator('#tour-start').click();
  const expectations = [
    ['1 · Layer 1 filters', async () => {
      await imageLoaded(page, '#tour-filters');
      // the words about the filters come from measuring them, not from a script
      const model = await (await fetch(`${url}api/model`)).json();
      const verdict = await page.locator('#tour-filters-verdict').textContent();
      assert.ok(verdict.includes(`orientation ${model.conv1.anisotropy.toFixed(2)}`), verdict);
    }],
    ['2 · Layer 1 feature maps', async () => {
      await page.locator('#tour-maps img').nth(7).waitFor({ timeout: 30000 });
      await page.waitForFunction(() => [...document.querySelectorAll('#tour-maps img')].every(i => i.complete && i.naturalWidth > 0), null, { timeout: 30000 });
    }],
    ...[2, 3, 4, 5].map(l => [`${l + 1} · Layer ${l}`, async () => {
      await page.locator('#tour-top9 .top9-pair').nth(8).waitFor({ timeout: 60000 });
      await page.waitForFunction(() => [...document.querySelectorAll('#tour-top9 img')].every(i => i.complete && i.naturalWidth > 0), null, { timeout: 60000 });
      assert.equal(await page.locator('#tour-top9 .top9-pair').count(), 9);
    }]),
    ['7 · The deconvnet', async () => imageLoaded(page, '#tour-projection')],
    ['8 · Occlusion', async () => {
      await page.locator('#tour-occlusion img.overlay').nth(2).waitFor({ timeout: 60000 });
      await page.waitForFunction(() => [...document.querySelectorAll('#tour-occlusion img')].every(i => i.complete && i.naturalWidth > 0), null, { timeout: 60000 });
    }],
    ['9 · Three ways back', async () => {
      await page.locator('#tour-methods img').nth(3).waitFor({ timeout: 60000 });
      await page.waitForFunction(() => [...document.querySelectorAll('#tour-methods img')].every(i => i.complete && i.naturalWidth > 0), null, { timeout: 60000 });
    }],
    ['10 · Invariance', async () => {
      await page.locator('#tour-invariance svg').nth(2).waitFor({ timeout: 60000 });
      // the caption's numbers are the curves' own (the tour's photo is dog.jpg; ids are SHA-256)
      const id = require('node:crypto').createHash('sha256')
        .update(fs.readFileSync(path.join(ROOT, 'web', 'assets', 'demo', 'dog.jpg'))).digest('hex');
      const r = await (await fetch(`${url}api/images/${id}/invariance`, {
        method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"steps": 15}' })).json();
      const pct = v => Math.round(v * 100);
      const [shift, , turn] = r.images[0].curves;
      const caption = await page.locator('#tour-invariance-caption').textContent();
      assert.equal(caption, `P(${r.images[0].class_label}) is ${pct(r.images[0].base_probability)}% on the photo; ` +
        `shifted up to 60 px it stays between ${pct(Math.min(...shift.probability))}% and ${pct(Math.max(...shift.probability))}%; ` +
        `turned, it falls as low as ${pct(Math.min(...turn.probability))}%.`);
    }],
    ['11 · Correspondence', async () => {
      // this server probes the demo photos, not Imagenette: the paper's table, labelled as such
      await page.locator('#tour-corr-paper tbody tr').nth(3).waitFor({ timeout: 60000 });
      assert.match(await page.locator('#tour-corr-missing').textContent(), /The paper's Table 1/);
    }],
  ];
  for (let i = 0; i < expectations.length; i++) {
    const [title, check] = expectations[i];
    await page.waitForFunction(t => document.querySelector('#tour-title')?.textContent.startsWith(t), title, { timeout: 10000 });
    assert.equal(await page.evaluate(() => location.hash), `#/tour/${i + 1}`);
    assert.ok((await page.locator('#tour-text').textContent()).length > 40, 'one explanatory sentence');
    await check();
    await page.screenshot({ path: path.join(ARTIFACTS, `tour-${i + 1}.png`) });
    // alternate the keys a presenter uses
    await page.keyboard.press(i % 2 === 0 ? 'ArrowRight' : 'Space');
  }
  await assertAccessible(page, 'the tour');
  // at the end, the arrow stays on the last step; left goes back; Esc leaves
  assert.equal(await page.evaluate(() => location.hash), '#/tour/11');
  await page.keyboard.press('ArrowLeft');
  await page.waitForFunction(() => location.hash === '#/tour/10');
  // the title font is large enough for the back of a room
  const size = await page.evaluate(() => parseFloat(getComputedStyle(document.querySelector('#tour-title')).fontSize));
  assert.ok(size >= 48, `title ${size}px`);
  await page.keyboard.press('Escape');
  await page.waitForFunction(() => !document.querySelector('#tour'));
  assert.deepEqual(foreign, [], 'requests outside zfvis');
  assert.deepEqual(errors, []);
  await page.close();
});

test('presenter mode: type of at least 24 px and a full-width top-9 on a 1080p projector', async () => {
  const page = await browser.newPage({ viewport: { width: 1920, height: 1080 } });
  const errors = [];
  page.on('pageerror', e => errors.push(e.message));
  await page.goto(`${url}?present`);
  await page.locator('#file-input').waitFor({ timeout: 30000 });
  await page.setInputFiles('#file-input', path.join(ROOT, 'web', 'assets', 'demo', 'horses.jpg'));
  await page.locator('#map-grid .map').first().click({ timeout: 30000 });
  await page.locator('#top9-grid .top9-pair').nth(8).waitFor({ timeout: 60000 });
  assert.ok(await page.evaluate(() => document.documentElement.classList.contains('present')));
  assert.equal(await page.locator('#present-toggle').getAttribute('aria-pressed'), 'true');
  // every visible text of the explorer is at least 24 px
  const small = await page.evaluate(() => [...document.querySelectorAll('main *, .explorer *, header *')]
    .filter(e => e.offsetParent !== null && [...e.childNodes].some(n => n.nodeType === 3 && n.textContent.trim()))
    .map(e => [e.tagName + '.' + e.className, parseFloat(getComputedStyle(e).fontSize)])
    .filter(([, size]) => size < 24));
  assert.deepEqual(small, [], 'text under 24 px');
  const grid = await page.locator('#top9-grid').boundingBox();
  assert.ok(grid.width >= 1500, `top-9 ${grid.width}px wide`);
  assert.equal(await page.locator('a.download:visible').count(), 0, 'download links hidden');
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  assert.ok(overflow <= 0, `${overflow}px of sideways scrolling`);
  await page.screenshot({ path: path.join(ARTIFACTS, 'presenter-1920x1080.png') });
  // the toggle turns it off, and the link follows
  await page.locator('#present-toggle').click();
  await page.waitForFunction(() => !document.documentElement.classList.contains('present') && !location.search.includes('present'));
  assert.deepEqual(errors, []);
  await page.close();
});

test('every explorer item at a phone, a tablet, a laptop and a 1080p projector', async () => {
  for (const [width, height] of [[390, 844], [768, 1024], [1366, 768], [1920, 1080]]) {
    const size = `${width}×${height}`;
    const page = await browser.newPage({ viewport: { width, height } });
    const errors = [];
    page.on('pageerror', e => errors.push(e.message));
    const fits = async what => {
      const overflow = await page.evaluate(() => document.scrollingElement.scrollWidth - window.innerWidth);
      assert.ok(overflow <= 0, `${size}, ${what}: ${overflow}px of sideways scrolling`);
    };
    // its top in the upper half of the screen (or, for the last panel, where the page can scroll
    // no further, its heading on screen)
    const inView = (sel, what) => page.waitForFunction(sel => {
      const r = document.querySelector(sel).getBoundingClientRect();
      const atBottom = window.scrollY + window.innerHeight >= document.scrollingElement.scrollHeight - 1;
      return r.top >= -1 && r.top < (atBottom ? window.innerHeight - 60 : window.innerHeight / 2);
    }, sel, { timeout: 10000 }).catch(() => assert.fail(`${size}: ${what} did not come into view`));
    await page.goto(url);
    await page.locator('#file-input').waitFor({ timeout: 30000 });
    await page.setInputFiles('#file-input', path.join(ROOT, 'web', 'assets', 'demo', 'horses.jpg'));
    await page.locator('#map-grid .map').first().waitFor({ timeout: 30000 });
    await fits('the map grid');

    // layout: a tile far down the grid opens the map view where the user is looking
    const last = page.locator('#map-grid .map').last();
    await last.scrollIntoViewIfNeeded();
    await last.click();
    await page.locator('#map-title').waitFor({ timeout: 30000 });
    await inView('#map-view', 'the map view');
    for (const sel of ['#activation-img', '#projection-img', '#patch-img']) await imageLoaded(page, sel);
    await fits('the map view');

    // scales: every colour bar names its range and lies inside the viewport
    const bars = await page.locator('.colourbar').evaluateAll(els => els.map(e => {
      const r = e.getBoundingClientRect();
      return { left: r.left, right: r.right, lo: e.querySelector('.lo').textContent, hi: e.querySelector('.hi').textContent };
    }));
    assert.ok(bars.length >= 1, `${size}: no colour bar`);
    for (const b of bars) {
      assert.match(`${b.lo} ${b.hi}`, /\d.* \d/, `${size}: colour bar without numbers`);
      assert.ok(b.left >= 0 && b.right <= width + 0.5, `${size}: colour bar at ${b.left}–${b.right}`);
    }
    // projections: the picture fits and its contrast rule is stated beside it
    const proj = await page.locator('#projection-img').boundingBox();
    assert.ok(proj.x >= 0 && proj.x + proj.width <= width + 0.5 && proj.width >= 100, `${size}: projection ${JSON.stringify(proj)}`);
    // explain: "what am I looking at" opens from the keyboard
    await page.locator('#map-explain summary').focus();
    await page.keyboard.press('Enter');
    assert.ok(await page.locator('#map-explain').evaluate(d => d.open), `${size}: explanation not opened by keyboard`);
    // pick a unit: tap a position on the activation map
    const [, id, layer, map] = (await page.evaluate(() => location.hash)).split('/');
    const v = await (await fetch(`${url}visualize/${layer}/${map}?image=${id}`)).json();
    const [h, w] = v.map_shape;
    const want = { x: (v.position.x + 3) % w, y: (v.position.y + 2) % h };
    await page.locator('#activation-img').scrollIntoViewIfNeeded();
    const act = await page.locator('#activation-img').boundingBox();
    assert.ok(act.x >= 0 && act.x + act.width <= width + 0.5, `${size}: activation map cut off`);
    await page.mouse.click(act.x + (want.x + 0.5) * act.width / w, act.y + (want.y + 0.5) * act.height / h);
    await page.waitForFunction(u => location.hash.endsWith(`/unit/${u}`), `${want.x},${want.y}`, { timeout: 10000 });
    // the receptive-field box stays on the input picture
    const stage = await page.locator('#rf-box').evaluate(e => {
      const b = e.getBoundingClientRect(), p = e.parentElement.getBoundingClientRect();
      return { inside: b.left >= p.left - 1 && b.right <= p.right + 1, right: p.right };
    });
    assert.ok(stage.inside && stage.right <= width + 0.5, `${size}: receptive field box ${JSON.stringify(stage)}`);
    await page.locator('#top9-grid .top9-pair').nth(8).waitFor({ timeout: 60000 });
    await fits('top-9');
    // every picture has a text alternative
    const noAlt = await page.locator('img').evaluateAll(els => els.filter(e => !(e.getAttribute('alt') || '').trim()).length);
    assert.equal(noAlt, 0, `${size}: pictures without alt text`);
    await assertAccessible(page, `explorer at ${size}`);
    await page.screenshot({ path: path.join(ARTIFACTS, `layout-${width}x${height}.png`) });

    // the panels below the grid are one tap away on the jump bar
    for (const panel of ['occlusion', 'invariance', 'correspondence']) {
      await page.locator(`#jump [data-jump="${panel}"]`).click();
      await inView(`#${panel}`, `the ${panel} panel`);
    }
    await fits('the analyses');
    await page.screenshot({ path: path.join(ARTIFACTS, `panels-${width}x${height}.png`) });

    // presenter mode: still no sideways scrolling; at 1080p its type is at least 24 px
    await page.locator('#present-toggle').click();
    await page.waitForFunction(() => document.documentElement.classList.contains('present'), null, { timeout: 5000 });
    await page.locator('#jump [data-jump="explorer"]').click();
    await fits('presenter mode');
    if (width === 1920) {
      const caption = await page.locator('#map-facts').evaluate(e => parseFloat(getComputedStyle(e).fontSize));
      assert.ok(caption >= 24, `presenter caption ${caption}px`);
    }
    await page.screenshot({ path: path.join(ARTIFACTS, `present-${width}x${height}.png`) });
    assert.deepEqual(errors, [], size);
    await page.close();
  }
});
