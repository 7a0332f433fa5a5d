// Two models in one server (the default and the narrow AlexNet fixture): the picker reloads the
// page for the other model, every request then names it, and the comparison shows both models'
// conv1 filters and top-9 side by side, at a laptop and a phone. The same server shows the
// committed training snapshots of the paper-recipe run (Fig. 4).
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { ROOT, ARTIFACTS, startServer, waitForIndex, launch, assertAccessible } = require('./harness');

const ALEX = 'alexnet-narrow';
let server, url, browser;

before(async () => {
  ({ child: server, url } = await startServer(['--weights', path.join(ROOT, 'tests', 'fixtures', `${ALEX}.safetensors`),
    '--evolution', path.join(ROOT, 'model-weights', 'imagenette-paper')]));
  await waitForIndex(url);
  await waitForIndex(url, ALEX);
  browser = await launch();
});

after(async () => {
  if (browser) await browser.close();
  if (server) { server.removeAllListeners('exit'); server.kill(); }
});

async function allImagesLoaded(page, selector, n) {
  await page.waitForFunction(([sel, n]) => {
    const imgs = [...document.querySelectorAll(sel)];
    return imgs.length >= n && imgs.every(i => i.complete && i.naturalWidth > 0);
  }, [selector, n], { timeout: 60000 });
}

test('the picker switches the page to another model, and every request follows', async () => {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  const errors = [];
  page.on('pageerror', e => errors.push(e.message));
  const asked = [];
  page.on('request', r => { if (/\/(api|visualize)\//.test(r.url())) asked.push(r.url()); });
  await page.goto(url);
  const picker = page.locator('#model-picker');
  await picker.waitFor({ timeout: 30000 });
  const list = await (await fetch(`${url}api/models`)).json();
  assert.equal(await picker.locator('option').count(), list.models.length);
  assert.equal(await picker.inputValue(), list.models[0].id, 'the default is picked');

  await Promise.all([page.waitForURL(/\?model=alexnet-narrow/), picker.selectOption(ALEX)]);
  await page.locator('#file-input').waitFor({ timeout: 30000 });
  await page.locator('.model').first().waitFor();
  assert.match(await page.locator('header .model').first().textContent(), /alexnet/);
  asked.length = 0;
  await page.setInputFiles('#file-input', path.join(ROOT, 'web', 'assets', 'demo', 'dog.jpg'));
  await page.locator('#predictions li').nth(4).waitFor({ timeout: 30000 });
  const form = new FormData();
  form.append('image', new Blob([fs.readFileSync(path.join(ROOT, 'web', 'assets', 'demo', 'dog.jpg'))]), 'dog.jpg');
  const api = await (await fetch(`${url}api/predict?model=${ALEX}`, { method: 'POST', body: form })).json();
  const labels = await page.locator('#predictions .label').allTextContents();
  const probs = await page.locator('#predictions .prob').allTextContents();
  assert.deepEqual(labels, api.predictions.map(p => p.label));
  assert.deepEqual(probs, api.predictions.map(p => `${(p.probability * 100).toFixed(1)}%`));
  // the map grid and a map view come from the picked model too
  await page.locator('#map-grid .map').first().waitFor({ timeout: 30000 });
  await page.locator('#map-grid .map').nth(3).click();
  await page.locator('#map-title').waitFor({ timeout: 30000 });
  // (the comparison panel below asks for both models by name: left out here)
  const api_requests = asked.filter(u => /\/api\/(images|model\b|predict)|[?&]image=/.test(u) && !u.includes('/api/models'));
  assert.ok(api_requests.length >= 4, api_requests.join('\n'));
  for (const u of api_requests) assert.match(u, /[?&]model=alexnet-narrow/, `${u} names no model`);
  await page.screenshot({ path: path.join(ARTIFACTS, 'models-picked.png') });

  // a model the server does not have: the badge says so, naming it
  await page.goto(`${url}?model=vgg16`);
  await page.locator('header .error').waitFor({ timeout: 30000 });
  assert.match(await page.locator('header .error').textContent(), /no model 'vgg16'/);
  assert.deepEqual(errors, []);
  await page.close();
});

test('two models side by side: conv1 filters and the top-9 of one map, at a laptop and a phone', async () => {
  for (const [width, height] of [[1366, 768], [390, 844]]) {
    const size = `${width}×${height}`;
    const page = await browser.newPage({ viewport: { width, height } });
    const errors = [];
    page.on('pageerror', e => errors.push(e.message));
    await page.goto(url);
    const compare = page.locator('#compare');
    await compare.waitFor({ timeout: 30000 });
    await compare.scrollIntoViewIfNeeded();
    const columns = page.locator('.compare-column');
    await columns.nth(1).waitFor();
    assert.equal(await columns.count(), 2);
    // conv1 grids of both models, each its own
    await allImagesLoaded(page, '.compare-filters', 2);
    const grids = await page.locator('.compare-filters').evaluateAll(els => els.map(e => e.getAttribute('src')));
    assert.equal(new Set(grids).size, 2, grids.join(' '));
    assert.ok(grids.some(g => g.includes(`model=${ALEX}`)), grids.join(' '));
    // conv2 top-9 of both (the paper's Fig. 6 d–e), the values the API gives
    await allImagesLoaded(page, '.compare-top9 img', 36);
    for (const [i, id] of [[0, null], [1, ALEX]]) {
      const q = id ? `?model=${id}` : '';
      const top = await (await fetch(`${url}visualize/conv2/0${q}`)).json();
      const titles = await columns.nth(i).locator('.top9-pair').evaluateAll(els => els.map(e => e.getAttribute('title')));
      assert.equal(titles.length, 9);
      titles.forEach((t, r) => assert.ok(t.startsWith(`#${r + 1} ${top.entries[r].value.toFixed(3)}`), `${t} vs ${top.entries[r].value}`));
      const stats = await columns.nth(i).locator('.compare-stats').textContent();
      assert.match(stats, /low-frequency share \d\.\d\d · anisotropy \d\.\d\d/);
    }
    // another layer and map: both columns follow
    await page.locator('#compare-layer').selectOption('conv3');
    await page.locator('#compare-map').fill('2');
    await page.locator('#compare-map').dispatchEvent('change');
    await page.waitForFunction(() => [...document.querySelectorAll('.compare-column .meta')]
      .filter(p => p.textContent.startsWith('conv3 map 2')).length === 2, null, { timeout: 60000 });
    await allImagesLoaded(page, '.compare-top9 img', 36);
    const overflow = await page.evaluate(() => document.scrollingElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `${size}: ${overflow}px of sideways scrolling`);
    await compare.screenshot({ path: path.join(ARTIFACTS, `models-compare-${width}.png`) });
    await assertAccessible(page, `compare at ${size}`);
    assert.deepEqual(errors, []);
    await page.close();
  }
});

test('Fig. 4: a row per map, a reconstruction per training snapshot, at a laptop and a phone', async () => {
  const info = await (await fetch(`${url}api/model`)).json();
  const epochs = info.evolution.epochs;
  assert.ok(epochs.length >= 2, JSON.stringify(info.evolution));
  for (const [width, height] of [[1366, 768], [390, 844]]) {
    const size = `${width}×${height}`;
    const page = await browser.newPage({ viewport: { width, height } });
    const errors = [];
    page.on('pageerror', e => errors.push(e.message));
    await page.goto(url);
    const panel = page.locator('#evolution');
    await panel.waitFor({ timeout: 30000 });
    await panel.scrollIntoViewIfNeeded();
    // the snapshots index in the background: cells say so, then fill in
    await allImagesLoaded(page, '#evolution .evolution-cell img', 6 * epochs.length);
    const rows = page.locator('.evolution-row');
    assert.equal(await rows.count(), 6);
    const captions = await rows.first().locator('figcaption').allTextContents();
    assert.deepEqual(captions, epochs.map(e => `epoch ${e}`));
    // each cell is what the API says for that epoch
    const row = await (await fetch(`${url}api/evolution/conv1/0`)).json();
    const srcs = await rows.first().locator('img').evaluateAll(els => els.map(e => e.getAttribute('src')));
    assert.deepEqual(srcs, row.columns.map(c => c.top.reconstruction_url));
    // another layer and maps
    await page.locator('#evolution-layer').selectOption('conv2');
    await page.locator('#evolution-maps').fill('3, 7');
    await page.locator('#evolution-maps').dispatchEvent('change');
    await page.waitForFunction(() => [...document.querySelectorAll('.evolution-map')].map(e => e.textContent).join('|') === 'conv2 map 3|conv2 map 7', null, { timeout: 30000 });
    await allImagesLoaded(page, '#evolution .evolution-cell img', 2 * epochs.length);
    const overflow = await page.evaluate(() => document.scrollingElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `${size}: ${overflow}px of sideways scrolling`);
    await panel.screenshot({ path: path.join(ARTIFACTS, `evolution-${width}.png`) });
    // a malformed list is named, and the rows stay
    await page.locator('#evolution-maps').fill('three');
    await page.locator('#evolution-maps').dispatchEvent('change');
    await page.locator('#evolution [role=alert]').waitFor();
    assert.equal(await rows.count(), 2);
    await assertAccessible(page, `evolution at ${size}`);
    assert.deepEqual(errors, []);
    await page.close();
  }
});

test('presenter mode at 1080p: Fig. 4 and the comparison in type of at least 24 px', async () => {
  const page = await browser.newPage({ viewport: { width: 1920, height: 1080 } });
  const errors = [];
  page.on('pageerror', e => errors.push(e.message));
  await page.goto(`${url}?present`);
  await page.locator('#evolution').waitFor({ timeout: 30000 });
  await page.locator('#compare').waitFor({ timeout: 30000 });
  const epochs = (await (await fetch(`${url}api/model`)).json()).evolution.epochs;
  await allImagesLoaded(page, '#evolution .evolution-cell img', 6 * epochs.length);
  await allImagesLoaded(page, '.compare-top9 img', 36);
  const small = await page.evaluate(() => [...document.querySelectorAll('#evolution *, #compare *')]
    .filter(e => e.offsetParent !== null && [...e.childNodes].some(n => n.nodeType === 3 && n.textContent.trim()))
    .map(e => [e.tagName + '.' + e.className, parseFloat(getComputedStyle(e).fontSize)])
    .filter(([, size]) => size < 24));
  assert.deepEqual(small, [], 'text under 24 px');
  // cells a room can see
  const cell = await page.locator('#evolution .evolution-cell img').first().boundingBox();
  assert.ok(cell.width >= 140, `evolution cells ${cell.width}px wide`);
  const overflow = await page.evaluate(() => document.scrollingElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `${overflow}px of sideways scrolling`);
  await page.locator('#evolution').screenshot({ path: path.join(ARTIFACTS, 'evolution-present-1920.png') });
  await page.locator('#compare').screenshot({ path: path.join(ARTIFACTS, 'compare-present-1920.png') });
  assert.deepEqual(errors, []);
  await page.close();
});
