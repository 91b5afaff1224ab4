// Drives Debian's chromium (headless) for tests/browser.rs. Argument: a JSON object with
// `depot` (depot's base URL), `token`, `allowedPage` and `refusedPage` (pages served from two
// other origins, only the first in depot's cors.allowed_origins) and `names` (file names to
// upload). Each scenario below runs in a page and its result is printed as one JSON object; the
// Rust test makes the assertions. A new browser case (the presigned PUT to a Foir `uploadUrl`)
// is one more function in `scenarios`, run when the test names it in `run`.
import { chromium } from 'playwright-core';

const cfg = JSON.parse(process.argv[2]);

const scenarios = {
  // Hygraph's legacy upload, as in its docs: the page's own upload() (FormData with a
  // `fileUpload` field, Bearer token, fetch), once per file name, then a download of each file
  // reading the headers depot exposes.
  async legacyUpload(browser) {
    const page = await browser.newPage();
    await page.goto(cfg.allowedPage);
    const out = [];
    for (const name of cfg.names) {
      await page.setInputFiles('#fileUpload', {
        name,
        mimeType: 'text/plain',
        buffer: Buffer.from(`content of ${name}`),
      });
      out.push(await page.evaluate(async () => {
        try {
          const data = await upload();
          const file = Object.values(data)[0];
          const res = await fetch(`${HYGRAPH_URL}${file.url.path}`, {
            headers: { Authorization: `Bearer ${HYGRAPH_ASSET_TOKEN}` },
          });
          return {
            keys: Object.keys(data),
            name: file.name,
            download: {
              status: res.status,
              body: await res.text(),
              etag: res.headers.get('ETag'),
              disposition: res.headers.get('Content-Disposition'),
            },
          };
        } catch (e) {
          return { error: String(e) };
        }
      }));
    }
    await page.close();
    return out;
  },

  // The same upload from a page whose origin is not allowed: the browser refuses it.
  async refusedOrigin(browser) {
    const page = await browser.newPage();
    await page.goto(cfg.refusedPage);
    await page.setInputFiles('#fileUpload', {
      name: 'refused.txt',
      mimeType: 'text/plain',
      buffer: Buffer.from('must not arrive'),
    });
    const result = await page.evaluate(() =>
      upload().then((data) => ({ uploaded: data }), (e) => ({ error: String(e) })));
    await page.close();
    return result;
  },
};

const browser = await chromium.launch({ executablePath: cfg.chromium || '/usr/bin/chromium' });
try {
  const results = {};
  for (const name of cfg.run) {
    results[name] = await scenarios[name](browser);
  }
  process.stdout.write(JSON.stringify(results) + '\n');
} finally {
  await browser.close();
}
