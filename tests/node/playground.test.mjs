// `claimrules playground` in a real browser: the release binary serves a copy of the sample
// rules; headless Chromium (Debian's, driven by playwright-core) opens the printed URL, edits a
// rule with the keyboard to add a claim and sees it in the token, introduces a syntax error and
// sees its line highlighted, fixes it, saves, saves a test case (then `claimrules test` passes
// with it), and sees a change made on disk reloaded. Requests without the token get 403.
// Screenshots of each step go to test-artifacts/playground-*.png.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { ARTIFACTS, BIN, ROOT, freePort, startProcess, stopProcess, tempDir, waitFor } from './lib/harness.mjs';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
// The flags of browser.test.mjs: without them Chromium tries outside hosts it cannot reach here.
const CHROMIUM_ARGS = [
  '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync',
  ...(process.getuid?.() === 0 ? ['--no-sandbox'] : []),
];
const TIMEOUT_MS = 15_000;
const TEAM = 'https://example.com/team';
const CASE_NAME = 'playground adds the team claim';

const shot = (page, name) => page.screenshot({ path: join(ARTIFACTS, `playground-${name}.png`), fullPage: true });

async function startPlayground(dir) {
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    try {
      const proc = await startProcess('claimrules-playground', BIN.claimrules, ['playground', dir, '--addr', `127.0.0.1:${port}`], {
        ready: /claimrules playground on http:\/\/127\.0\.0\.1:\d+\/\?token=\S+/,
      });
      const url = proc.stdout.match(/claimrules playground on (\S+)/)[1];
      return { proc, url, base: `http://127.0.0.1:${port}`, token: new URL(url).searchParams.get('token') };
    } catch (e) {
      if (attempt >= 3) throw e;
    }
  }
}

/** Waits until the page's last run has the given status text. */
async function status(page, text) {
  await page.waitForFunction((t) => document.getElementById('status').textContent === t, text);
}

export async function run({ log }) {
  const dir = join(tempDir('playground'), 'rules');
  cpSync(join(ROOT, 'rules'), dir, { recursive: true });
  const pg = await startPlayground(dir);
  let context;
  try {
    // No token, a wrong token, a token prefix: 403 for the page and the API alike.
    for (const path of ['/', '/api/rules', '/assets/app.js', `/?token=${pg.token}x`, `/api/rules?token=${pg.token.slice(0, 20)}`]) {
      const res = await fetch(`${pg.base}${path}`);
      assert.equal(res.status, 403, path);
    }
    const res = await fetch(`${pg.base}/api/rule`, { method: 'PUT', body: JSON.stringify({ file: '10-add-roles.rhai', source: '' }) });
    assert.equal(res.status, 403, 'a write without the token');
    assert.equal((await fetch(pg.url)).status, 200);
    log('403 without the token (page, API, assets, writes), 200 with it');

    mkdirSync(ARTIFACTS, { recursive: true });
    context = await chromium.launchPersistentContext(tempDir('chromium-playground'), {
      executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, viewport: { width: 1400, height: 1000 },
    });
    context.setDefaultTimeout(TIMEOUT_MS);
    const page = context.pages()[0] ?? (await context.newPage());
    const errors = [];
    page.on('pageerror', (e) => errors.push(e));

    // The browser gets 403 without the token too.
    const denied = await page.goto(`${pg.base}/`);
    assert.equal(denied.status(), 403);

    await page.goto(pg.url);
    await page.waitForSelector('body[data-ready="true"]');
    await status(page, 'ok');
    assert.equal(await page.textContent('#rule-name'), '10-add-roles');
    assert.deepEqual(
      await page.$$eval('#rule-list .rule-button', (bs) => bs.map((b) => b.dataset.file)),
      ['10-add-roles.rhai', '20-scope-by-role.rhai', '30-require-verified-email.rhai', '40-user-preferences.rhai', '50-protocol.rhai'],
    );
    await shot(page, '1-open');

    // Keyboard only: Tab from the top reaches the rule editor (the skip link is the first stop).
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate(() => document.activeElement.className), 'skip');
    for (let i = 0; i < 40 && (await page.evaluate(() => document.activeElement.id)) !== 'rule-editor'; i++) {
      await page.keyboard.press('Tab');
    }
    assert.equal(await page.evaluate(() => document.activeElement.id), 'rule-editor', 'the editor is reachable with Tab');

    // 1. Add a claim: it appears in the access token's claims and in the signed JWT.
    await page.keyboard.press('Control+End');
    // Only for the playground's default user, so the sample suite's exact cases keep passing.
    await page.keyboard.type(`\nif user.user_id == "auth0|playground" { context.accessToken["${TEAM}"] = "blue"; }`);
    const claimRow = `#access-claims tr[data-claim="${TEAM}"]`;
    await page.waitForSelector(claimRow);
    assert.match(await page.textContent(claimRow), /"blue"/);
    assert.match(await page.textContent('#access-jwt'), /https:\/\/example\.com\/team/);
    assert.equal(await page.isVisible('#dirty'), true, 'the rule shows as unsaved');
    const times = await page.$$eval('#rule-table td.time', (tds) => tds.map((t) => t.textContent));
    assert.equal(times.length, 5);
    for (const t of times) assert.match(t, /^\d+(\.\d+)? (µs|ms)$/, `each rule's run time: ${times}`);
    await shot(page, '2-claim-added');

    // 2. A syntax error: the status says so and the line is highlighted, with its number.
    await page.keyboard.type('\nlet oops = ;');
    await status(page, 'does not compile');
    const lines = (await page.inputValue('#rule-editor')).split('\n').length;
    await page.waitForSelector(`#rule-editor-box pre .line.error-line[data-line="${lines}"]`);
    assert.match(await page.textContent('#compile-error'), new RegExp(`^Line ${lines}, column \\d+`));
    assert.match(await page.textContent('#error-box'), new RegExp(`line ${lines}`));
    assert.equal(await page.$$eval('#rule-editor-box .gutter .error-line', (d) => d.map((x) => x.textContent).join()), String(lines));
    await shot(page, '3-syntax-error');

    // The broken rule cannot be saved: the error stays, the file is unchanged.
    const original = readFileSync(join(dir, '10-add-roles.rhai'), 'utf8');
    await page.keyboard.press('Control+s');
    await page.waitForSelector('.notice-error');
    assert.match(await page.textContent('.notice-error'), /Not saved: .*10-add-roles\.rhai:\d+:\d+/);
    assert.equal(readFileSync(join(dir, '10-add-roles.rhai'), 'utf8'), original);

    // 3. Fix it (delete the last line), and the claim is back.
    await page.focus('#rule-editor');
    await page.keyboard.press('Control+End');
    await page.keyboard.press('Shift+Home');
    await page.keyboard.press('Backspace');
    await page.keyboard.press('Backspace');
    await status(page, 'ok');
    await page.waitForSelector(claimRow);
    assert.equal(await page.$$('#rule-editor-box pre .line.error-line').then((l) => l.length), 0);

    // 4. Save (Ctrl+S): the file on disk has the new claim.
    await page.keyboard.press('Control+s');
    await page.waitForSelector('text=Saved 10-add-roles.rhai.');
    await waitFor('the saved file', () => readFileSync(join(dir, '10-add-roles.rhai'), 'utf8').includes(TEAM));
    assert.equal(await page.isVisible('#dirty'), false);
    await shot(page, '4-saved');

    // 5. Save as test case, then `claimrules test` passes with it.
    await page.fill('#case-name', CASE_NAME);
    await page.focus('#save-case');
    await page.keyboard.press('Enter');
    await page.waitForSelector('.notice-success');
    assert.match(await page.textContent('.notice-success'), /appended to tests\/playground\.toml/);
    await shot(page, '5-case-saved');
    const caseFile = readFileSync(join(dir, 'tests', 'playground.toml'), 'utf8');
    assert.match(caseFile, new RegExp(`name = "${CASE_NAME}"`));
    assert.ok(caseFile.includes(`"${TEAM}" = "blue"`), caseFile);
    const test = spawnSync(BIN.claimrules, ['test', dir], { encoding: 'utf8' });
    assert.equal(test.status, 0, test.stdout + test.stderr);
    assert.match(test.stdout, new RegExp(`PASS  playground\\.toml: ${CASE_NAME}`));
    log(`claimrules test: ${test.stdout.trim().split('\n').pop()}`);

    // 6. A change made on disk while the rule is open: reloaded, and the page says so.
    const edited = `${readFileSync(join(dir, '10-add-roles.rhai'), 'utf8').trimEnd()}\ncontext.idToken["https://example.com/desk"] = 7;\n`;
    writeFileSync(join(dir, '10-add-roles.rhai'), edited);
    await page.waitForSelector('text=10-add-roles.rhai changed on disk: reloaded.');
    await page.waitForFunction((t) => document.getElementById('rule-editor').value === t, edited);
    await page.waitForSelector('#id-claims tr[data-claim="https://example.com/desk"]');
    await shot(page, '6-reloaded-from-disk');

    // The final screenshot (README): the admin fixture picked from tests/fixtures.
    const runs = Number(await page.getAttribute('body', 'data-runs'));
    await page.selectOption('#user-from', { label: 'fixtures/admin.json' });
    await page.waitForFunction(() => document.getElementById('user-editor').value.includes('"admin"'));
    await page.waitForFunction((n) => Number(document.body.dataset.runs) > n, runs);
    await status(page, 'ok');
    assert.equal(await page.$(claimRow), null, 'the team claim is for the default user only');
    assert.match(await page.textContent(`#access-claims tr[data-claim="https://example.com/permissions"]`), /write:contacts/);
    await page.click('#access-jwt-box summary');
    for (const b of await page.$$('#notices button.dismiss')) await b.click();
    assert.equal(await page.$$eval('#notices .notice', (n) => n.length), 0, 'every notice can be dismissed');
    await page.focus('#rule-editor');
    await page.keyboard.press('Control+Home');
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.screenshot({ path: join(ARTIFACTS, 'playground-final.png') });

    // Dark scheme at 200 % zoom (a 1400 px window at 200 % is 700 CSS px): one column, no
    // sideways scrolling.
    await page.emulateMedia({ colorScheme: 'dark' });
    await page.setViewportSize({ width: 700, height: 1000 });
    const bg = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    assert.equal(bg, 'rgb(13, 17, 23)', 'dark background');
    assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth + 1), 'no horizontal scroll at 200 %');
    await shot(page, '7-dark-200-percent');

    assert.deepEqual(errors, [], 'no script errors');
    log(`playground: claim added, syntax error line highlighted, fixed, saved, case saved and passing, disk change reloaded; screenshots in ${ARTIFACTS}`);
  } finally {
    if (context) await context.close();
    await stopProcess(pg.proc);
  }
}
