import { existsSync } from 'node:fs';
import type { Test } from 'tap';
import { chromium, type Browser, type Page } from 'playwright-core';

export const CHROMIUM = '/usr/bin/chromium';
// Debian's chromium, driven by playwright-core (Playwright's own browser download cannot work here).
export const CHROMIUM_FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];

/** True when the test can run; without chromium it is skipped locally and fails under CI. */
export function haveChromium(t: Test): boolean {
  if (existsSync(CHROMIUM)) return true;
  if (process.env.CI) t.fail(`${CHROMIUM} is missing: .ci/run installs the chromium package`);
  else t.comment(`skipped: ${CHROMIUM} is missing (apt-get install -y chromium)`);
  return false;
}

export async function launch(t: Test): Promise<Browser> {
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_FLAGS, timeout: 60_000 });
  t.teardown(() => browser.close());
  return browser;
}

/** A page that records everything that would show up as an error in the browser's console. */
export async function openPage(browser: Browser, url: string) {
  const context = await browser.newContext({ viewport: { width: 1440, height: 900 } });
  // tsx (esbuild, keepNames) wraps the tests' named functions in __name(); page.evaluate sends
  // their source to the page, where that helper must exist too.
  await context.addInitScript('globalThis.__name = (f) => f;');
  const page: Page = await context.newPage();
  const errors: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(`console: ${m.text()}`);
  });
  page.on('pageerror', (e) => errors.push(`page error: ${e.message}`));
  page.setDefaultTimeout(60_000);
  await page.goto(url);
  return { page, errors, context };
}
