// End-to-end test of the tagwatch web console in Debian's headless Chromium, driven by
// playwright-core (no downloaded browser). Run by tests/console.rs, which starts the service,
// seeds the users and passes everything in the environment:
//
//   TAGWATCH_URL, OFFICER_TOKEN, ANALYST_TOKEN, AUDITOR_TOKEN, DEVICE_TOKEN, DEVICE_ID,
//   SUBJECT_ID, OFFICER_NAME, ANALYST_NAME, ZONE_LAT, ZONE_LON, HOME_LAT, HOME_LON,
//   SUBJECT_DISPLAY_NAME (contains markup: it must show as text);
//   TAGWATCH_SCREENSHOTS=1 with SCREENSHOT_DIR writes console-{officer,analyst,auditor}.png.
//
// Exit status 0 means every step passed; any failure prints the step and exits 1.

import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`missing environment variable ${name}`);
  return v;
};
const URL = env('TAGWATCH_URL');
const SUBJECT = env('SUBJECT_ID');
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const SHOTS = process.env.TAGWATCH_SCREENSHOTS === '1' ? env('SCREENSHOT_DIR') : null;
const TIMEOUT = 20_000;

let step = 'start';
const log = (msg) => console.log(`[console test] ${msg}`);
const check = (cond, msg) => { if (!cond) throw new Error(`assertion failed: ${msg}`); };

async function postPings(pings) {
  const r = await fetch(`${URL}/v1/pings`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${env('DEVICE_TOKEN')}`, 'Content-Type': 'application/json' },
    body: JSON.stringify(pings),
  });
  const body = await r.json();
  check(r.status === 200 && body.accepted === pings.length, `pings accepted: ${r.status} ${JSON.stringify(body)}`);
}

const ago = (s) => new Date(Date.now() - s * 1000).toISOString();
/** A datetime-local value in the browser's zone (the same process zone as this script). */
const local = (d) => {
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
};

let current = null; // the page in use, for a screenshot on failure

/** A new tab (its own sessionStorage, so its own sign-in) signed in with `token`. */
async function signIn(browser, token, problems) {
  const page = await browser.newPage();
  current = page;
  const context = { close: () => page.close() };
  page.setDefaultTimeout(TIMEOUT);
  page.on('console', (m) => {
    if (m.type() === 'error' || /Content Security Policy/i.test(m.text())) problems.push(m.text());
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('response', (r) => { if (r.status() >= 400) problems.push(`${r.status()} for ${r.url()}`); });
  const resp = await page.goto(`${URL}/`);
  const csp = resp.headers()['content-security-policy'] ?? '';
  check(/script-src 'self'/.test(csp) && !/unsafe-inline/.test(csp), `strict CSP on /: ${csp}`);
  await page.fill('#token', token);
  await page.click('#signin button[type=submit]');
  await page.waitForSelector('#who:not(:empty)');
  return { context, page };
}

async function officer(browser, problems) {
  step = 'officer signs in';
  const { context, page } = await signIn(browser, env('OFFICER_TOKEN'), problems);
  check((await page.textContent('#who')).includes(env('OFFICER_NAME')), 'officer name shown');
  await page.waitForSelector('#live[data-state="live"]');
  await page.waitForSelector('#queue tr.empty');

  step = 'an alert appears live';
  const [zlat, zlon, hlat, hlon] = ['ZONE_LAT', 'ZONE_LON', 'HOME_LAT', 'HOME_LON'].map((k) => Number(env(k)));
  const fix = (ts, lat, lon) => ({ device_id: env('DEVICE_ID'), ts, lat, lon, accuracy_m: 9 });
  await postPings([fix(ago(90), hlat, hlon), fix(ago(60), zlat, zlon), fix(ago(30), zlat + 0.0003, zlon)]);
  const row = page.locator('#queue tr[data-id]').first();
  await row.waitFor();
  check((await row.textContent()).includes('exclusion breach'), 'the live row is an exclusion breach');
  check((await row.textContent()).includes(SUBJECT), 'the live row names the subject');

  step = 'officer opens the alert and sees the map';
  await row.locator('a').first().click();
  await page.waitForSelector('#alert-map.leaflet-container');
  await page.waitForSelector('#alert-map path.tw-zone');
  await page.waitForFunction(() => document.querySelectorAll('#alert-map path.tw-evidence').length >= 2);
  check((await page.locator('#evidence tbody tr').count()) >= 2, 'evidence table lists the fixes');
  await page.waitForFunction(() => document.querySelector('#alert-map')?.parentElement?.querySelector('.hint') !== null);
  if (SHOTS) await page.screenshot({ path: join(SHOTS, 'console-officer.png'), fullPage: false });

  step = 'officer closes the alert with an outcome';
  await page.selectOption('#outcome', 'breach_confirmed');
  await page.fill('#close-note', 'Confirmed with the subject by phone; warning letter sent.');
  await page.click('#close-form button[type=submit]');
  await page.waitForFunction(() => document.querySelector('#alert-status')?.textContent === 'closed');
  check((await page.textContent('main')).includes('breach confirmed'), 'outcome shown');

  step = 'officer subject page: zones drawn, names escaped';
  await page.click('a[href^="#/subject/"]');
  await page.waitForSelector('#subject-map path.tw-zone');
  check((await page.locator('#zones tbody tr').count()) === 1, 'one zone listed');
  await page.click('a[href="#/subjects"]');
  await page.waitForSelector('main table');
  check((await page.textContent('main table')).includes(env('SUBJECT_DISPLAY_NAME')), 'display name shown as text');
  check((await page.locator('#pwned').count()) === 0, 'markup in a display name is not interpreted');

  step = 'officer adds a circle drawn on the map, a borough zone and a curfew, and an absence';
  await page.click(`a[href="#/subject/${encodeURIComponent(SUBJECT)}"]`);
  await page.waitForSelector('#zone-form');
  await page.waitForSelector('#subject-map path.tw-zone');
  await page.fill('#zone-name', 'Drawn circle');
  await page.fill('#radius', '150');
  await page.locator('#subject-map').click({ position: { x: 200, y: 200 } });
  await page.waitForFunction(() => /centre/.test(document.querySelector('#draw-hint')?.textContent ?? ''));
  await page.click('#zone-form button[type=submit]');
  await page.waitForFunction(() => document.querySelectorAll('#zones tbody tr').length === 2);
  await page.waitForSelector('#zone-form');
  await page.selectOption('#zone-kind', 'curfew');
  await page.fill('#zone-name', 'Home curfew (borough)');
  await page.selectOption('#shape', 'borough');
  await page.selectOption('#borough', 'Islington');
  await page.click('#zone-form button[type=submit]');
  await page.waitForFunction(() => document.querySelectorAll('#zones tbody tr').length === 3);
  check((await page.textContent('#zones')).includes('19:00–07:00'), 'curfew schedule shown');
  await page.fill('#abs-reason', 'Crown Court hearing');
  await page.click('#absence-form button[type=submit]');
  await page.waitForSelector('#absence-form .notice.ok');
  await context.close();
}

async function analyst(browser, problems) {
  step = 'analyst signs in';
  const { context, page } = await signIn(browser, env('ANALYST_TOKEN'), problems);
  await page.waitForSelector('#scene-form');

  step = 'analyst runs a crime-scene query with a justification';
  await page.fill('#crime_ref', 'CAD 4711/23');
  await page.fill('#legal_basis', 'DPA 2018 s.35 — prevention and detection of crime');
  await page.fill('#reason', 'Burglary near the station; checking tagged subjects nearby.');
  await page.fill('#scene-lat', env('ZONE_LAT'));
  await page.fill('#scene-lon', env('ZONE_LON'));
  await page.fill('#scene-radius', '150');
  await page.fill('#scene-from', local(new Date(Date.now() - 3600e3)));
  await page.fill('#scene-to', local(new Date(Date.now() + 300e3)));
  await page.click('#scene-form button[type=submit]');
  await page.waitForSelector('#scene-matches tbody tr');
  check((await page.textContent('#scene-matches')).includes(SUBJECT), 'the subject matches the scene');
  await page.waitForSelector('#query-map path.tw-scene');
  if (SHOTS) await page.screenshot({ path: join(SHOTS, 'console-analyst.png') });

  step = 'analyst asks where the subject was at a time';
  await page.click('#tab-at-time');
  await page.fill('#at-subject', SUBJECT);
  await page.fill('#at-time', local(new Date()));
  await page.click('#at-form button[type=submit]');
  await page.waitForSelector('#results dl.facts');
  check((await page.textContent('#results')).includes('Audit entry'), 'location-at-time answered with its audit entry');

  step = 'analyst uploads a crime CSV';
  await page.click('#tab-match');
  const now = Date.now();
  const csv = `ref,lat,lon,from,to\nCR-1,${env('ZONE_LAT')},${env('ZONE_LON')},${new Date(now - 3600e3).toISOString()},${new Date(now + 300e3).toISOString()}\n`;
  await page.setInputFiles('#match-file', { name: 'crimes.csv', mimeType: 'text/csv', buffer: Buffer.from(csv) });
  await page.fill('#match-radius', '150');
  await page.click('#match-form button[type=submit]');
  await page.waitForSelector('#results .crime h3');
  check((await page.textContent('#results')).includes('CR-1: 1 match'), 'the uploaded crime matches the subject');
  await page.waitForSelector('#query-map path.tw-crime');
  await context.close();
}

async function auditor(browser, problems, expect) {
  step = 'auditor signs in and reads the log';
  const { context, page } = await signIn(browser, env('AUDITOR_TOKEN'), problems);
  await page.waitForSelector('#audit-rows tr[data-action]');
  const text = await page.textContent('#audit-rows');
  check(text.includes(env('ANALYST_NAME')) && text.includes('CAD 4711/23'), "the analyst's query with its justification is in the log");
  if (expect.officerAudited) check(text.includes(env('OFFICER_NAME')), "the officer's trail view is in the log");

  step = 'auditor filters by subject';
  await page.fill('#audit-subject', SUBJECT);
  await page.click('#audit-filters button[type=submit]');
  await page.waitForFunction((s) => location.hash.includes(encodeURIComponent(s)), SUBJECT);
  await page.waitForSelector('#audit-rows tr[data-action]');

  step = 'auditor checks the chain';
  await page.click('#verify');
  await page.waitForSelector('#verdict-text');
  check((await page.textContent('#verdict-text')).startsWith('Chain intact'), 'chain intact');
  if (SHOTS) await page.screenshot({ path: join(SHOTS, 'console-auditor.png') });
  await context.close();
}

async function main() {
  const profile = mkdtempSync(join(tmpdir(), 'tagwatch-chromium-'));
  const problems = [];
  // a persistent context on a fresh profile directory: nothing carries over between runs
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1360, height: 900 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    await officer(browser, problems);
    log('officer: ok');
    await analyst(browser, problems);
    log('analyst: ok');
    await auditor(browser, problems, { officerAudited: true });
    log('auditor: ok');
    step = 'no console errors or CSP violations';
    check(problems.length === 0, `browser problems:\n${problems.join('\n')}`);
  } catch (e) {
    const shot = join(tmpdir(), 'tagwatch-console-failure.png');
    await current?.screenshot({ path: shot }).then(() => log(`screenshot of the failure: ${shot}`)).catch(() => {});
    throw e;
  } finally {
    await browser.close();
    rmSync(profile, { recursive: true, force: true });
  }
}

main().then(() => {
  log('all steps passed');
  process.exit(0);
}).catch((e) => {
  console.error(`[console test] FAILED at step "${step}": ${e.stack ?? e}`);
  process.exit(1);
});
