// Drives a real browser (headless; `browser`: "chromium" by default or "firefox", see
// driver.mjs) for tests/browser.rs. Argument: a JSON object with
// `depot` (depot's base URL), `token`, `allowedPage` and `refusedPage` (pages served from two
// other origins, only the first in depot's cors.allowed_origins) and `names` (file names to
// upload). Each scenario below runs in a page and its result is printed as one JSON object; the
// Rust test makes the assertions. Each case is one function in `scenarios`, run when the test
// names it in `run`.
import { launch } from './driver.mjs';

// The page's file input holds one file made of these bytes, as if the user had picked it
// (a File built in the page, so any name a browser can hold works, backslashes included).
async function setInputFile(page, selector, { name, mimeType, content }) {
  await page.$eval(selector, (input, n, t, c) => {
    const dt = new DataTransfer();
    dt.items.add(new File([c], n, { type: t }));
    input.files = dt.files;
    input.dispatchEvent(new Event('change', { bubbles: true }));
  }, name, mimeType, content);
}

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
      await setInputFile(page, '#fileUpload', {
        name,
        mimeType: 'text/plain',
        content: `content of ${name}`,
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
    await setInputFile(page, '#fileUpload', {
      name: 'refused.txt',
      mimeType: 'text/plain',
      content: 'must not arrive',
    });
    const result = await page.evaluate(() =>
      upload().then((data) => ({ uploaded: data }), (e) => ({ error: String(e) })));
    await page.close();
    return result;
  },

  // Foir's presigned flow from the allowed page: createFileUpload (GraphQL), a fetch PUT of a
  // JPEG the page draws to the uploadUrl with its Content-Type, confirmFileUpload (REST), then
  // a download of the File's url compared byte for byte with what was sent.
  async presignedPut(browser) {
    const page = await browser.newPage();
    await page.goto(cfg.allowedPage);
    const result = await page.evaluate(async ({ depot, token }) => {
      try {
        const canvas = document.createElement('canvas');
        canvas.width = 64;
        canvas.height = 48;
        const g = canvas.getContext('2d');
        const grad = g.createLinearGradient(0, 0, 64, 48);
        grad.addColorStop(0, '#c33');
        grad.addColorStop(1, '#33c');
        g.fillStyle = grad;
        g.fillRect(0, 0, 64, 48);
        const blob = await new Promise((ok) => canvas.toBlob(ok, 'image/jpeg', 0.9));
        const sent = new Uint8Array(await blob.arrayBuffer());
        const auth = { Authorization: `Bearer ${token}` };
        const created = await fetch(`${depot}/graphql`, {
          method: 'POST',
          headers: { ...auth, 'Content-Type': 'application/json' },
          body: JSON.stringify({
            query: `mutation { createFileUpload(filename: "canvas.jpg", mimeType: "image/jpeg", size: ${sent.length}) { uploadId uploadUrl } }`,
          }),
        }).then((r) => r.json());
        const { uploadId, uploadUrl } = created.data.createFileUpload;
        const put = await fetch(uploadUrl, {
          method: 'PUT',
          headers: { 'Content-Type': 'image/jpeg' },
          body: blob,
        });
        const confirm = await fetch(`${depot}/uploads/${uploadId}/confirm`, {
          method: 'POST',
          headers: auth,
        });
        const file = await confirm.json();
        const dl = await fetch(file.url, { headers: auth });
        const got = new Uint8Array(await dl.arrayBuffer());
        return {
          putStatus: put.status,
          putEtag: put.headers.get('ETag'),
          confirmStatus: confirm.status,
          file,
          downloadStatus: dl.status,
          sentBytes: sent.length,
          same: got.length === sent.length && got.every((b, i) => b === sent[i]),
        };
      } catch (e) {
        return { error: String(e) };
      }
    }, { depot: cfg.depot, token: cfg.token });
    await page.close();
    return result;
  },

  // A PUT to an uploadUrl from the page whose origin is not allowed: refused at the preflight.
  async refusedPut(browser) {
    const page = await browser.newPage();
    await page.goto(cfg.refusedPage);
    const result = await page.evaluate((url) =>
      fetch(url, { method: 'PUT', headers: { 'Content-Type': 'image/jpeg' }, body: 'xx' })
        .then((r) => ({ status: r.status }), (e) => ({ error: String(e) })), cfg.refusedPutUrl);
    await page.close();
    return result;
  },
};

const browser = await launch(cfg);
try {
  const results = {};
  for (const name of cfg.run) {
    results[name] = await scenarios[name](browser);
  }
  process.stdout.write(JSON.stringify(results) + '\n');
} finally {
  await browser.close();
}
