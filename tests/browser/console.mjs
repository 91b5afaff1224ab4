// Drives the web console (/console) in a real browser for tests/browser.rs, as a user would: a
// bad token, sign in, keyboard order and labels, upload three files (one 20 MiB) watching
// progress, cancel and retry, the listing with a BlurHash placeholder, an image's details,
// public access (grant plus the instance switch) fetched anonymously with curl, a grant to an
// account revoked, a signed link, trash and untrash, delete. Argument: a JSON object with
// `browser` ("chromium" or "firefox"), `base` (depot's URL), `instance`, `token` (an admin's),
// `files` (paths of the three files to upload, the image first, the large one last),
// `retryFile` (a file to cancel and retry), `blurhashName` (a File made with a BlurHash),
// `screens` (a directory for screenshots).
// The browser reaches depot through a local proxy that can slow its uploads (the same way in
// both browsers), so progress is visible and a cancel lands mid-upload.
// Prints one JSON object of observations; the Rust test makes the assertions.
import { execFile } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import net from 'node:net';
import { basename } from 'node:path';
import { promisify } from 'node:util';
import { launch, pickFiles } from './driver.mjs';

const cfg = JSON.parse(process.argv[2]);
mkdirSync(cfg.screens, { recursive: true });
const out = { steps: [] };
let shot = 0;

// A TCP proxy in front of depot whose browser-to-depot direction runs at `rate` bytes/s.
function throttlingProxy(target) {
  const proxy = { rate: Infinity };
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(target.port), target.hostname);
    const close = () => { client.destroy(); upstream.destroy(); };
    client.on('error', close);
    upstream.on('error', close);
    client.on('close', close);
    upstream.on('close', close);
    upstream.pipe(client);
    client.on('data', (chunk) => {
      upstream.write(chunk);
      if (Number.isFinite(proxy.rate)) {
        client.pause();
        setTimeout(() => client.resume(), (chunk.length / proxy.rate) * 1000);
      }
    });
  });
  proxy.listen = () => new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${server.address().port}`));
  });
  proxy.close = () => server.close();
  return proxy;
}

async function step(page, name) {
  shot += 1;
  const file = `${cfg.screens}/${String(shot).padStart(2, '0')}-${name}.png`;
  await page.screenshot({ path: file, fullPage: true });
  out.steps.push(name);
}

// curl's status code for a URL, with optional headers. (Not a synchronous child: the proxy in
// this process must keep serving while curl runs.)
async function curl(url, headers = []) {
  const args = ['-s', '-o', '/dev/null', '-w', '%{http_code}'];
  for (const h of headers) args.push('-H', h);
  args.push(url);
  const { stdout } = await promisify(execFile)('curl', args, { encoding: 'utf8' });
  return Number(stdout);
}

const text = (page, sel) => page.$eval(sel, (e) => e.innerText);
const texts = (page, sel) => page.$$eval(sel, (es) => es.map((e) => e.innerText));
const visible = (page, sel) => page.$eval(sel, (e) => e.checkVisibility()).catch(() => false);
const shown = (page, sel, timeout) => page.waitForSelector(sel, { visible: true, timeout });
const gone = (page, sel) => page.waitForSelector(sel, { hidden: true });

// Typing into a field replaces what it held.
async function fill(page, sel, value) {
  await page.$eval(sel, (e) => { e.value = ''; e.focus(); });
  if (value) await page.locator(sel).fill(value);
}

// The listing has settled: no request in flight for a moment (a listing may be rendered again
// by a second load, and a handle to a replaced row would act on nothing).
const settled = (page) => page.waitForNetworkIdle({ idleTime: 300 });

async function pressIn(page, sel, key) {
  await page.focus(sel);
  await page.keyboard.press(key);
}

// The listing's row of a file (by the text of its name cell), once it is there.
async function row(page, name) {
  const h = await page.waitForFunction((n) => [...document.querySelectorAll('#rows tr')]
    .find((tr) => tr.querySelector('td.name')?.textContent.includes(n)), {}, name);
  return h.asElement();
}

async function rowGone(page, name) {
  await page.waitForFunction((n) => ![...document.querySelectorAll('#rows td.name')]
    .some((td) => td.textContent.includes(n)), {}, name);
}

// A button by its accessible name (aria-label, else its text), once it is shown; `within`
// narrows the search to an element.
async function button(page, name, within = null) {
  const h = await page.waitForFunction((n, root) => [...(root || document).querySelectorAll('button')]
    .find((b) => (b.getAttribute('aria-label') || b.textContent.trim()) === n && b.checkVisibility()),
  {}, name, within);
  return h.asElement();
}

async function buttonGone(page, name) {
  await page.waitForFunction((n) => ![...document.querySelectorAll('button')]
    .some((b) => (b.getAttribute('aria-label') || b.textContent.trim()) === n), {}, name);
}

const proxy = throttlingProxy(new URL(cfg.base));
const base = await proxy.listen();
const browser = await launch(cfg);
let page;
try {
  page = await browser.newPage();
  await page.setViewport({ width: 1280, height: 860 });
  const consoleErrors = [];
  page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
  page.on('pageerror', (e) => consoleErrors.push(String(e)));
  // Requests to anything but depot would break the no-third-party rule.
  const foreign = [];
  page.on('request', (r) => {
    const u = r.url();
    if (!u.startsWith(base) && !u.startsWith('blob:') && !u.startsWith('data:')) foreign.push(u);
  });
  page.on('dialog', (d) => d.accept());

  const res = await page.goto(`${base}/console`);
  out.pageStatus = res.status();
  out.csp = res.headers()['content-security-policy'];
  await shown(page, '#signin');
  await step(page, 'signin');
  out.filesShownSignedOut = await visible(page, '#main');

  // Keyboard: the first stops of the Tab order (the form's four: a fifth Tab would leave the
  // page for Firefox's own toolbar), and every form control has a name.
  const stops = [];
  for (let i = 0; i < 4; i += 1) {
    await page.keyboard.press('Tab');
    stops.push(await page.evaluate(() => {
      const e = document.activeElement;
      return e ? `${e.tagName.toLowerCase()}#${e.id || ''}` : '';
    }));
  }
  out.signinTabOrder = stops;

  // A token depot refuses: a readable message, the form still there.
  await fill(page, '#token', 'not-a-token');
  await fill(page, '#instance', cfg.instance);
  await page.click('#signin button[type=submit]');
  await shown(page, '#alerts .error');
  out.badTokenMessage = await text(page, '#alerts .error');
  out.signinStillShown = await visible(page, '#signin');
  out.filesShownAfterBadToken = await visible(page, '#main');
  await step(page, 'bad-token');

  // Sign in with the instance left empty: it comes from the token.
  await fill(page, '#token', cfg.token);
  await fill(page, '#instance', '');
  await page.click('#signin button[type=submit]');
  await shown(page, '#who');
  out.who = await text(page, '#who');
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
  const swatch = await row(page, cfg.blurhashName);
  await swatch.waitForSelector('td.preview[data-placeholder="blurhash"]');
  out.blurhashPlaceholder = true;
  const thumb = await swatch.waitForSelector('td.preview[data-loaded="true"] img');
  out.thumbnailLoaded = true;
  // The thumbnail is depot's 160 x 160 variant (image transforms), not the whole image.
  out.thumbnailSize = await thumb.evaluate((img) => [img.naturalWidth, img.naturalHeight]);
  out.blurhashPixel = await page.evaluate(async (name) => {
    const href = document.querySelector('script[type=module]').src;
    const m = await import(href.replace('app.js', 'blurhash.js'));
    const id = [...document.querySelectorAll('#rows tr')].find((tr) => tr.textContent.includes(name)).dataset.id;
    const token = JSON.parse(sessionStorage.getItem('depot.console.session')).token;
    const f = await (await fetch(`/files/${id}`, { headers: { Authorization: token } })).json();
    return Array.from(m.decode(f.blurhash, 4, 4).slice(20, 24));
  }, cfg.blurhashName);
  await step(page, 'signed-in');

  // Uploads, slowed so progress is visible and cancel has time to act.
  proxy.rate = 8 * 1024 * 1024;
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
  await pickFiles(page, '#picker', cfg.files);
  const big = basename(cfg.files[cfg.files.length - 1]);
  await page.waitForSelector(`#queue li[data-name="${big}"][data-state="sending"]`);
  await step(page, 'uploading');
  for (const f of cfg.files) {
    await page.waitForSelector(`#queue li[data-name="${basename(f)}"][data-state="done"]`, { timeout: 120000 })
      .catch(async (e) => {
        // Say what the queue shows (a failed upload's message), not only that it timed out.
        throw new Error(`${e.message}\nqueue: ${await text(page, '#queue')}`);
      });
  }
  out.progress = await page.evaluate(() => window.progressSeen);
  out.overall = await page.evaluate(() => window.overallSeen);
  out.overallText = await text(page, '#overall-text');
  // How each file travelled: tus for the large one, Hypi's multipart for the rest.
  out.via = Object.fromEntries(await page.$$eval('#queue li',
    (lis) => lis.map((li) => [li.dataset.name, li.dataset.via || null])));

  // Cancel one upload while it is sending (slower still, so the click lands mid-way), then
  // retry it at full speed.
  proxy.rate = 1024 * 1024;
  const retryName = basename(cfg.retryFile);
  const retryRow = (st) => page.waitForSelector(`#queue li[data-name="${retryName}"][data-state="${st}"]`, { timeout: 120000 });
  await pickFiles(page, '#picker', [cfg.retryFile]);
  await retryRow('sending');
  await (await button(page, `Cancel ${retryName}`)).click();
  await retryRow('cancelled');
  out.cancelled = true;
  proxy.rate = Infinity;
  await (await button(page, `Retry ${retryName}`)).click();
  await retryRow('done');

  // Listed (the refresh follows the last upload).
  for (const f of [...cfg.files, cfg.retryFile]) await row(page, basename(f));
  out.listed = await texts(page, '#rows td.name');
  await step(page, 'uploaded');

  // Sort by size (largest first) and search by name.
  await page.select('#sort', 'size DESC');
  await page.waitForFunction((n) => document.querySelector('#rows td.name')?.textContent.includes(n), {}, big);
  out.firstBySize = await text(page, '#rows td.name');
  await fill(page, '#search', 'phot');
  await pressIn(page, '#search', 'Enter');
  await page.waitForFunction(() => document.querySelectorAll('#rows tr').length === 1);
  out.searched = await texts(page, '#rows td.name');
  await fill(page, '#search', '');
  await pressIn(page, '#search', 'Enter');
  await row(page, big);
  await page.waitForFunction(() => document.querySelectorAll('#rows tr').length > 1);
  await settled(page);

  // The image's details, opened from the keyboard.
  const image = basename(cfg.files[0]);
  await (await (await row(page, image)).$('button')).focus();
  await page.keyboard.press('Enter');
  await page.waitForSelector('#details .record');
  out.detailsFocused = await page.evaluate(() => document.activeElement.id);
  // Escape closes them and gives focus back to the file's name; Enter opens them again.
  await page.keyboard.press('Escape');
  await gone(page, '#details');
  out.focusAfterEscape = await page.evaluate(() => document.activeElement.textContent);
  await page.keyboard.press('Enter');
  await shown(page, '#details .record');
  out.details = await text(page, '#details .record');
  await page.waitForSelector('#details img.preview-large');
  await page.waitForSelector('#public');
  await step(page, 'details');

  // Public: the grant, then (the instance switch being off) the admin's switch.
  out.fileId = await page.evaluate(() => [...document.querySelectorAll('#details dt')].find((d) => d.textContent === 'ID').nextElementSibling.textContent);
  const record = await page.evaluate(async (id) => {
    const { token } = JSON.parse(sessionStorage.getItem('depot.console.session'));
    return (await fetch(`/files/${id}`, { headers: { Authorization: token } })).json();
  }, out.fileId);
  out.anonBefore = await curl(`${base}${record.url.path}`);
  await page.click('#public');
  await page.waitForFunction(() => document.querySelector('#public-note')?.textContent.includes('this public grant has no effect'));
  out.switchOffNote = await text(page, '#public-note');
  out.anonGrantSwitchOff = await curl(`${base}${record.url.path}`);
  await step(page, 'public-switch-off');
  await page.click('#instance-switch');
  await page.waitForFunction(() => document.querySelector('#public-note')?.textContent.includes('Anyone can download'));
  out.publicNote = await text(page, '#public-note');
  out.publicUrl = await text(page, '#public-note code');
  out.anonPublic = await curl(out.publicUrl);
  await step(page, 'public');
  // A smaller view of the same state for the README (tests/browser/console.png is a copy).
  await page.setViewport({ width: 1100, height: 780 });
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: `${cfg.screens}/readme.png` });
  await page.setViewport({ width: 1280, height: 860 });

  // Revoke public access: anonymous downloads stop.
  await page.click('#public');
  await page.waitForFunction(() => !document.querySelector('#public-note')?.textContent.includes('Anyone can download'));
  out.publicChecked = await page.$eval('#public', (e) => e.checked);
  out.anonRevoked = await curl(out.publicUrl);

  // A grant to an account, listed, then revoked from the list.
  await fill(page, '#grant-account', 'bob');
  await (await button(page, 'Grant read access')).click();
  await button(page, 'Revoke the grant to bob');
  out.grantsWithBob = await text(page, '#grants');
  await step(page, 'granted');
  await (await button(page, 'Revoke the grant to bob')).click();
  await buttonGone(page, 'Revoke the grant to bob');
  out.bobRevoked = true;

  // A signed link works without a token.
  await page.select('#link-expiry', '15m');
  await (await button(page, 'Create link')).click();
  await page.waitForSelector('#links input');
  out.signedLink = await page.$eval('#links input', (e) => e.value);
  out.signedLinkStatus = await curl(out.signedLink);
  await step(page, 'signed-link');

  // Trash: gone from the listing, in the trash view, back after untrash.
  await (await button(page, 'Move to trash')).click();
  await rowGone(page, image);
  await page.click('#trash-view');
  await row(page, image);
  out.trashListed = await texts(page, '#rows td.name');
  await step(page, 'trash');
  await (await button(page, 'Untrash', await row(page, image))).click();
  await rowGone(page, image);
  await page.click('#trash-view');
  await row(page, image);
  await settled(page);
  out.untrashed = true;

  // Delete (the confirmation dialog is accepted).
  await (await (await row(page, image)).$('button')).click();
  await page.waitForSelector('#details .record');
  await (await button(page, 'Delete')).click();
  await rowGone(page, image);
  out.afterDelete = await texts(page, '#rows td.name');
  out.deletedStatus = await curl(`${base}/files/${out.fileId}`, [`Authorization: ${cfg.token}`]);
  await step(page, 'deleted');

  // Directories: a folder from the files' directory paths, breadcrumbs back home.
  await page.goto(`${base}/console#/albums/2026`);
  await page.waitForSelector('#crumbs [aria-current="page"]');
  await row(page, 'cover.txt');
  out.crumbs = await text(page, '#crumbs');
  out.nestedListed = await texts(page, '#rows td.name');
  // A file dropped on the page goes into the folder shown.
  await page.evaluate(() => {
    const dt = new DataTransfer();
    dt.items.add(new File(['dropped bytes'], 'dropped.txt', { type: 'text/plain' }));
    document.querySelector('#drop').dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
  });
  await page.waitForSelector('#queue li[data-name="dropped.txt"][data-state="done"]');
  await row(page, 'dropped.txt');
  out.droppedInto = await page.evaluate(() => document.querySelector('#listing-caption').textContent);
  const home = await page.waitForFunction(() => [...document.querySelectorAll('#crumbs a')]
    .find((a) => a.textContent.trim() === 'Home'));
  await home.asElement().click();
  await row(page, 'albums/');
  out.homeHasFolder = true;

  // After a reload the tab is still signed in (sessionStorage); signing out shows the form.
  await page.reload();
  await shown(page, '#who');
  await page.click('#signout');
  await shown(page, '#signin');
  out.signedOut = await page.evaluate(() => sessionStorage.length);

  out.consoleErrors = consoleErrors;
  out.foreignRequests = foreign;
} catch (e) {
  out.error = String(e && e.stack ? e.stack : e);
  // What the page showed when it went wrong.
  if (page) {
    await page.screenshot({ path: `${cfg.screens}/error.png`, fullPage: true }).catch(() => {});
    out.atError = await page.evaluate(() => ({
      focused: document.activeElement?.outerHTML.slice(0, 200),
      alerts: document.querySelector('#alerts')?.innerText,
    })).catch((x) => String(x));
  }
} finally {
  await browser.close();
  proxy.close();
}
process.stdout.write(`${JSON.stringify(out)}\n`);
