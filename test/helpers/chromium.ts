import { chromium, type Browser } from 'playwright-core';

/**
 * Debian's chromium (`apt-get install chromium`), or the browser at IDJAG_CHROMIUM, driven by playwright-core:
 * the tests never download a browser of their own.
 */
export const CHROMIUM = process.env.IDJAG_CHROMIUM || '/usr/bin/chromium';

export const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

export async function launchChromium(): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
}
