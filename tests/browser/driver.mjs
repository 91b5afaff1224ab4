// Launches the browser a test names, through puppeteer-core (no browser download): Debian's
// chromium over CDP or Debian's firefox-esr over WebDriver BiDi, headless. `cfg.browser` is
// "chromium" (default) or "firefox"; `cfg.executable` the binary (default: Debian's path).
// Also a few helpers both scripts use, so a scenario reads the same in either browser.
import puppeteer from 'puppeteer-core';

const EXECUTABLES = { chromium: '/usr/bin/chromium', firefox: '/usr/bin/firefox-esr' };

export async function launch(cfg) {
  const browser = cfg.browser || 'chromium';
  const opts = {
    browser: browser === 'chromium' ? 'chrome' : browser,
    executablePath: cfg.executable || EXECUTABLES[browser],
    headless: true,
  };
  // Chromium's sandbox needs user namespaces, which CI's root containers do not give.
  if (browser === 'chromium') opts.args = ['--no-sandbox'];
  return puppeteer.launch(opts);
}

// A file input gets these local files, as a user's file picker would give them.
export async function pickFiles(page, selector, paths) {
  const input = await page.waitForSelector(selector);
  await input.uploadFile(...paths);
}
