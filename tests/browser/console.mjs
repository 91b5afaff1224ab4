// Drives the web console (/console) in Debian's chromium for tests/browser.rs, as a user would:
// a bad token, sign in, keyboard order and labels, upload three files (one 20 MiB) watching
// progress, cancel and retry, the listing with a BlurHash placeholder, an image's details,
// public access (grant plus the instance switch) fetched anonymously with curl, a grant to an
// account revoked, a signed link, trash and untrash, delete. Argument: a JSON object with
// `chromium`, `base` (depot's URL), `instance`, `token` (an admin's), `files` (paths of the three
// files to upload, the image first, the large one last), `retryFile` (a file to cancel and
// retry), `blurhashName` (a File made with a BlurHash), `screens` (a directory for screenshots).
// Prints one JSON object of observations; the Rust test makes the assertions.
import { chromium } from 'playwright-core';
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { basename } from 'node:path';

const cfg = JSON.parse(process.argv[2]);
mkdirSync(cfg.screens, { recursive: true });
const out = { steps: [] };
let shot = 0;

async function step(page, name) {
  shot += 1;
  const file = `${cfg.screens}/${String(shot).padStart(2, '0')}-${name}.png`;
  await page.screenshot({ path: file, fullPage: true });
  out.steps.push(name);
}

// curl's status code for a URL, with optional headers.
function curl(url, headers = []) {
  const args = ['-s', '-o', '/dev/null', '-w', '%{http_code}'];
  for (const h of headers) args.push('-H', h);
  args.push(url);
  return Number(execFileSync('curl', args, { encoding: 'utf8' }));
}

const rowByName = (page, name) => page.locator('#rows tr', { has: page.locator('td.name', { hasText: name }) });

const browser = await chromium.launch({ executablePath: cfg.chromium });
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
  const consoleErrors = [];
  page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
  page.on('pageerror', (e) => consoleErrors.push(String(e)));
  // Requests to anything but depot would break the no-third-party rule.
  const foreign = [];
  page.on('request', (r) => {
    const u = r.url();
    if (!u.startsWith(cfg.base) && !u.startsWith('blob:') && !u.startsWith('data:')) foreign.push(u);
  });
  page.on('dialog', (d) => d.accept());

  const res = await page.goto(`${cfg.base}/console`);
  out.pageStatus = res.status();
  out.csp = res.headers()['content-security-policy'];
  await page.locator('#signin').waitFor({ state: 'visible' });
  await step(page, 'signin');
  out.filesShownSignedOut = await page.locator('#main').isVisible();

  // Keyboard: the first stops of the Tab order, and every form control has a name.
  const stops = [];
  for (let i = 0; i < 5; i += 1) {
    await page.keyboard.press('Tab');
    stops.push(await page.evaluate(() => {
      const e = document.activeElement;
      return e ? `${e.tagName.toLowerCase()}#${e.id || ''}` : '';
    }));
  }
  out.signinTabOrder = stops;

  // A token depot refuses: a readable message, the form still there.
  await page.fill('#token', 'not-a-token');
  await page.fill('#instance', cfg.instance);
  await page.click('#signin button[type=submit]');
  await page.locator('#alerts .error').waitFor();
  out.badTokenMessage = await page.locator('#alerts .error').innerText();
  out.signinStillShown = await page.locator('#signin').isVisible();
  out.filesShownAfterBadToken = await page.locator('#main').isVisible();
  await step(page, 'bad-token');

  // Sign in with the instance left empty: it comes from the token.
  await page.fill('#token', cfg.token);
  await page.fill('#instance', '');
  await page.click('#signin button[type=submit]');
  await page.locator('#who').waitFor({ state: 'visible' });
  out.who = await page.locator('#who').innerText();
  out.stored = await page.evaluate(() => Object.keys(sessionStorage));
  out.unlabelled = await page.evaluate(() => [...document.querySelectorAll('input, select, textarea, button')]
    .filter((e) => !e.closest('[hidden]') && e.type !== 'file')
    .filter((e) => !((e.labels && e.labels.length) || e.getAttribute('aria-label') || (e.tagName === 'BUTTON' && e.textContent.trim())))
    .map((e) => e.outerHTML));
  out.focusOutline = await page.evaluate(() => {
    document.querySelector('#search').focus({ focusVisible: true });
    return getComputedStyle(document.activeElement).outlineStyle;
  });

  // The File made with a BlurHash shows its placeholder; the decoder matches the image's colour.
  const swatch = rowByName(page, cfg.blurhashName);
  await swatch.locator('td.preview[data-placeholder="blurhash"]').waitFor();
  out.blurhashPlaceholder = true;
  await swatch.locator('td.preview[data-loaded="true"] img').waitFor();
  out.thumbnailLoaded = true;
  // The thumbnail is depot's 160 x 160 variant (image transforms), not the whole image.
  out.thumbnailSize = await swatch.locator('td.preview[data-loaded="true"] img')
    .evaluate((img) => [img.naturalWidth, img.naturalHeight]);
  out.blurhashPixel = await page.evaluate(async (name) => {
    const href = document.querySelector('script[type=module]').src;
    const m = await import(href.replace('app.js', 'blurhash.js'));
    const id = [...document.querySelectorAll('#rows tr')].find((tr) => tr.textContent.includes(name)).dataset.id;
    const token = JSON.parse(sessionStorage.getItem('depot.console.session')).token;
    const f = await (await fetch(`/files/${id}`, { headers: { Authorization: token } })).json();
    return Array.from(m.decode(f.blurhash, 4, 4).slice(20, 24));
  }, cfg.blurhashName);
  await step(page, 'signed-in');

  // Uploads, with upload bandwidth throttled so progress is visible and cancel has time to act.
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Network.enable');
  await cdp.send('Network.emulateNetworkConditions', {
    offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: 8 * 1024 * 1024,
  });
  await page.evaluate(() => {
    window.progressSeen = {};
    window.overallSeen = [];
    new MutationObserver((records) => {
      for (const r of records) {
        const li = r.target.closest('li');
        if (li && r.target.tagName === 'PROGRESS') {
          (window.progressSeen[li.dataset.name] ||= []).push([Number(r.target.value), Number(r.target.max)]);
        }
      }
      const o = document.querySelector('#overall');
      window.overallSeen.push([Number(o.value), Number(o.max)]);
    }).observe(document.querySelector('#uploads'), { attributes: true, subtree: true, attributeFilter: ['value'] });
  });
  await page.setInputFiles('#picker', cfg.files);
  const big = basename(cfg.files[cfg.files.length - 1]);
  await page.locator(`#queue li[data-name="${big}"][data-state="sending"]`).waitFor();
  await step(page, 'uploading');
  for (const f of cfg.files) {
    await page.locator(`#queue li[data-name="${basename(f)}"][data-state="done"]`).waitFor({ timeout: 120000 })
      .catch(async (e) => {
        // Say what the queue shows (a failed upload's message), not only that it timed out.
        throw new Error(`${e.message}\nqueue: ${await page.locator('#queue').innerText()}`);
      });
  }
  out.progress = await page.evaluate(() => window.progressSeen);
  out.overall = await page.evaluate(() => window.overallSeen);
  out.overallText = await page.locator('#overall-text').innerText();
  // How each file travelled: tus for the large one, Hypi's multipart for the rest.
  out.via = Object.fromEntries(await page.locator('#queue li').evaluateAll(
    (lis) => lis.map((li) => [li.dataset.name, li.dataset.via || null])));

  // Cancel one upload while it is sending (slower still, so the click lands mid-way), then
  // retry it at full speed.
  await cdp.send('Network.emulateNetworkConditions', {
    offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: 1024 * 1024,
  });
  const retryName = basename(cfg.retryFile);
  const retryRow = (st) => page.locator(`#queue li[data-name="${retryName}"][data-state="${st}"]`);
  await page.setInputFiles('#picker', [cfg.retryFile]);
  await retryRow('sending').waitFor();
  await page.getByRole('button', { name: `Cancel ${retryName}` }).click();
  await retryRow('cancelled').waitFor();
  out.cancelled = true;
  await cdp.send('Network.emulateNetworkConditions', {
    offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1,
  });
  await page.getByRole('button', { name: `Retry ${retryName}` }).click();
  await retryRow('done').waitFor({ timeout: 120000 });

  // Listed (the refresh follows the last upload).
  for (const f of [...cfg.files, cfg.retryFile]) await rowByName(page, basename(f)).waitFor();
  out.listed = await page.locator('#rows td.name').allInnerTexts();
  await step(page, 'uploaded');

  // Sort by size (largest first) and search by name.
  await page.selectOption('#sort', 'size DESC');
  await page.waitForFunction((n) => document.querySelector('#rows td.name')?.textContent.includes(n), big);
  out.firstBySize = await page.locator('#rows td.name').first().innerText();
  await page.fill('#search', 'phot');
  await page.press('#search', 'Enter');
  await page.waitForFunction(() => document.querySelectorAll('#rows tr').length === 1);
  out.searched = await page.locator('#rows td.name').allInnerTexts();
  await page.fill('#search', '');
  await page.press('#search', 'Enter');
  await rowByName(page, big).waitFor();
  await page.waitForFunction(() => document.querySelectorAll('#rows tr').length > 1);

  // The image's details, opened from the keyboard.
  const image = basename(cfg.files[0]);
  await rowByName(page, image).locator('button').focus();
  await page.keyboard.press('Enter');
  await page.locator('#details .record').waitFor();
  out.detailsFocused = await page.evaluate(() => document.activeElement.id);
  // Escape closes them and gives focus back to the file's name; Enter opens them again.
  await page.keyboard.press('Escape');
  await page.locator('#details').waitFor({ state: 'hidden' });
  out.focusAfterEscape = await page.evaluate(() => document.activeElement.textContent);
  await page.keyboard.press('Enter');
  await page.locator('#details .record').waitFor();
  out.details = await page.locator('#details .record').innerText();
  await page.locator('#details img.preview-large').waitFor();
  await page.locator('#public').waitFor();
  await step(page, 'details');

  // Public: the grant, then (the instance switch being off) the admin's switch.
  out.fileId = await page.evaluate(() => [...document.querySelectorAll('#details dt')].find((d) => d.textContent === 'ID').nextElementSibling.textContent);
  const record = await page.evaluate(async (id) => {
    const { token } = JSON.parse(sessionStorage.getItem('depot.console.session'));
    return (await fetch(`/files/${id}`, { headers: { Authorization: token } })).json();
  }, out.fileId);
  out.anonBefore = curl(`${cfg.base}${record.url.path}`);
  await page.check('#public');
  await page.waitForFunction(() => document.querySelector('#public-note')?.textContent.includes('this public grant has no effect'));
  out.switchOffNote = await page.locator('#public-note').innerText();
  out.anonGrantSwitchOff = curl(`${cfg.base}${record.url.path}`);
  await step(page, 'public-switch-off');
  await page.click('#instance-switch');
  await page.waitForFunction(() => document.querySelector('#public-note')?.textContent.includes('Anyone can download'));
  out.publicNote = await page.locator('#public-note').innerText();
  out.publicUrl = await page.locator('#public-note code').innerText();
  out.anonPublic = curl(out.publicUrl);
  await step(page, 'public');
  // A smaller view of the same state for the README (tests/browser/console.png is a copy).
  await page.setViewportSize({ width: 1100, height: 780 });
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: `${cfg.screens}/readme.png` });
  await page.setViewportSize({ width: 1280, height: 860 });

  // Revoke public access: anonymous downloads stop.
  await page.uncheck('#public');
  await page.waitForFunction(() => !document.querySelector('#public-note')?.textContent.includes('Anyone can download'));
  out.publicChecked = await page.isChecked('#public');
  out.anonRevoked = curl(out.publicUrl);

  // A grant to an account, listed, then revoked from the list.
  await page.fill('#grant-account', 'bob');
  await page.getByRole('button', { name: 'Grant read access' }).click();
  await page.getByRole('button', { name: 'Revoke the grant to bob' }).waitFor();
  out.grantsWithBob = await page.locator('#grants').innerText();
  await step(page, 'granted');
  await page.getByRole('button', { name: 'Revoke the grant to bob' }).click();
  await page.getByRole('button', { name: 'Revoke the grant to bob' }).waitFor({ state: 'detached' });
  out.bobRevoked = true;

  // A signed link works without a token.
  await page.selectOption('#link-expiry', '15m');
  await page.getByRole('button', { name: 'Create link' }).click();
  await page.locator('#links input').waitFor();
  out.signedLink = await page.locator('#links input').inputValue();
  out.signedLinkStatus = curl(out.signedLink);
  await step(page, 'signed-link');

  // Trash: gone from the listing, in the trash view, back after untrash.
  await page.getByRole('button', { name: 'Move to trash' }).click();
  await rowByName(page, image).waitFor({ state: 'detached' });
  await page.click('#trash-view');
  await rowByName(page, image).waitFor();
  out.trashListed = await page.locator('#rows td.name').allInnerTexts();
  await step(page, 'trash');
  await rowByName(page, image).getByRole('button', { name: 'Untrash' }).click();
  await rowByName(page, image).waitFor({ state: 'detached' });
  await page.click('#trash-view');
  await rowByName(page, image).waitFor();
  out.untrashed = true;

  // Delete (the confirmation dialog is accepted).
  await rowByName(page, image).locator('button').click();
  await page.locator('#details .record').waitFor();
  await page.getByRole('button', { name: 'Delete', exact: true }).click();
  await rowByName(page, image).waitFor({ state: 'detached' });
  out.afterDelete = await page.locator('#rows td.name').allInnerTexts();
  out.deletedStatus = curl(`${cfg.base}/files/${out.fileId}`, [`Authorization: ${cfg.token}`]);
  await step(page, 'deleted');

  // Directories: a folder from the files' directory paths, breadcrumbs back home.
  await page.goto(`${cfg.base}/console#/albums/2026`);
  await page.locator('#crumbs [aria-current="page"]').waitFor();
  await rowByName(page, 'cover.txt').waitFor();
  out.crumbs = await page.locator('#crumbs').innerText();
  out.nestedListed = await page.locator('#rows td.name').allInnerTexts();
  // A file dropped on the page goes into the folder shown.
  const dataTransfer = await page.evaluateHandle(() => {
    const dt = new DataTransfer();
    dt.items.add(new File(['dropped bytes'], 'dropped.txt', { type: 'text/plain' }));
    return dt;
  });
  await page.dispatchEvent('#drop', 'drop', { dataTransfer });
  await page.locator('#queue li[data-name="dropped.txt"][data-state="done"]').waitFor();
  await rowByName(page, 'dropped.txt').waitFor();
  out.droppedInto = await page.evaluate(() => document.querySelector('#listing-caption').textContent);
  await page.click('#crumbs a >> text=Home');
  await page.locator('#rows td.name', { hasText: 'albums/' }).waitFor();
  out.homeHasFolder = true;

  // After a reload the tab is still signed in (sessionStorage); signing out shows the form.
  await page.reload();
  await page.locator('#who').waitFor({ state: 'visible' });
  await page.click('#signout');
  await page.locator('#signin').waitFor({ state: 'visible' });
  out.signedOut = await page.evaluate(() => sessionStorage.length);

  out.consoleErrors = consoleErrors;
  out.foreignRequests = foreign;
} catch (e) {
  out.error = String(e && e.stack ? e.stack : e);
} finally {
  await browser.close();
}
process.stdout.write(`${JSON.stringify(out)}\n`);
