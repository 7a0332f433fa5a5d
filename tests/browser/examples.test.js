// Photos of the model's classes from a probe set whose folders are named by WordNet id: the
// panel offers one per class, and a click opens it with the model's answer and its class named.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { ARTIFACTS, DEMO, startServer, waitForIndex, launch, assertAccessible } = require('./harness');

let server, url, browser;

before(async () => {
  // three classes of the default model (English springer, church, French horn), one photo each
  const probe = fs.mkdtempSync(path.join(os.tmpdir(), 'zfvis-classes-'));
  for (const [wnid, name] of [['n02102040', 'dog.jpg'], ['n03028079', 'china.jpg'], ['n03394916', 'coffee.png']]) {
    fs.mkdirSync(path.join(probe, wnid));
    fs.copyFileSync(path.join(DEMO, name), path.join(probe, wnid, name));
  }
  ({ child: server, url } = await startServer([], probe));
  await waitForIndex(url);
  browser = await launch();
});

after(async () => {
  if (browser) await browser.close();
  if (server) { server.removeAllListeners('exit'); server.kill(); }
});

test('a photo of each class the model knows, one click from its answer', async () => {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  const errors = [];
  page.on('pageerror', e => errors.push(e.message));
  await page.goto(url);
  const photos = page.locator('#class-photos .class-photo');
  await photos.nth(2).waitFor({ timeout: 30000 });
  const api = await (await fetch(`${url}api/probe/examples`)).json();
  assert.equal(await photos.count(), api.examples.length);
  assert.deepEqual(await page.locator('.class-photo-label').allTextContents(), api.examples.map(e => e.label));
  const model = await (await fetch(`${url}api/model`)).json();
  assert.match(await page.locator('#class-photos-title').textContent(),
    new RegExp(`${model.classes.length} classes this model knows \\(3 of them`));
  await page.waitForFunction(() => [...document.querySelectorAll('#class-photos img')].every(i => i.complete && i.naturalWidth > 0));
  await page.screenshot({ path: path.join(ARTIFACTS, 'class-photos.png') });

  // open the church: its predictions and where it came from
  const church = api.examples.find(e => e.label === 'church');
  await page.locator(`.class-photo[data-class="${church.class}"]`).click();
  await page.locator('#predictions li').nth(4).waitFor({ timeout: 30000 });
  assert.match(await page.locator('.preview figcaption').textContent(), /class: church/);
  const opened = await (await fetch(`${url}${church.open_url.slice(1)}`, { method: 'POST' })).json();
  assert.deepEqual(await page.locator('#predictions .label').allTextContents(), opened.predictions.map(p => p.label));
  assert.ok((await page.evaluate(() => location.hash)).startsWith(`#/${opened.id}/`));
  await assertAccessible(page, 'class photos');
  assert.deepEqual(errors, []);
  await page.close();
});
