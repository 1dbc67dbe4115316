// A picture of the page as a visitor sees it: opens URL in Debian's headless Chromium (CPU
// path), clicks the example button whose label is EXAMPLE (or the first one), segments it with
// the page's words and saves a screenshot. Used for the README's picture of the main job:
//   node tests/browser/screenshot.mjs http://127.0.0.1:8080/ docs/main-job-page.png ["ball + car"]
import { chromium } from 'playwright-core';

const [url, out, example] = process.argv.slice(2);
if (!url || !out) {
  console.error('usage: node tests/browser/screenshot.mjs URL OUT.png [EXAMPLE]');
  process.exit(2);
}
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--no-first-run', '--disable-background-networking',
    '--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1'],
});
try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 820 } });
  await page.goto(url);
  await page.evaluate(() => window.ovseg.ready);
  const buttons = page.locator('#examples button');
  const names = await buttons.allTextContents();
  const index = example ? names.indexOf(example) : 0;
  if (index < 0) throw new Error(`no example "${example}" (the page has: ${names.join('; ')})`);
  await buttons.nth(index).click();
  await page.waitForFunction(() => !document.getElementById('segment').disabled);
  await page.click('#segment');
  await page.waitForFunction(() => window.ovseg.current() !== null && !document.getElementById('segment').disabled);
  await page.waitForTimeout(500);
  const shown = await page.evaluate(() => window.ovseg.current());
  const counts = {};
  for (const v of shown.mask) counts[v] = (counts[v] || 0) + 1;
  const share = Object.entries(counts)
    .map(([k, n]) => `${shown.labels[k] ?? k} ${(100 * n / shown.mask.length).toFixed(1)}%`);
  console.log(`${names[index]}: ${share.join(', ')}`);
  await page.screenshot({ path: out, fullPage: true });
} finally {
  await browser.close();
}
