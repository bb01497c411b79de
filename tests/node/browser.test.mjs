// The seed end to end in a real browser: the example web app, the example protected API and the
// token server run as release binaries; headless Chromium (Debian's, driven by playwright-core)
// opens the web app, clicks login, fills the server's login form, clicks Allow on the consent
// page and lands on the web app's callback, which shows the protected API's answer.
// Before the browser runs, the protected API's refusals are checked with plain fetch.

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import {
  ALICE, ARTIFACTS, NS, codeFlow, freePort, startProtectedApi, startServer, startWebapp, stopProcess, tempDir,
} from './lib/harness.mjs';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
// NOTES.md: without these Chromium tries outside hosts it cannot reach from these machines.
const CHROMIUM_ARGS = [
  '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync',
  ...(process.getuid?.() === 0 ? ['--no-sandbox'] : []),
];
const NAV_TIMEOUT_MS = 15_000;

/** RFC 6750 §3 refusals of the example API. */
async function checkApiRefusals(server, api) {
  const call = (auth) => fetch(api.url, { headers: auth ? { authorization: auth } : {} });
  const challenge = (res) => res.headers.get('www-authenticate') ?? '';

  let res = await call(null);
  assert.equal(res.status, 401, 'no credentials');
  assert.match(challenge(res), /^Bearer realm="[^"]+"$/, 'no error code when no credentials were sent');

  res = await call('Basic d2ViOnNlY3JldA==');
  assert.equal(res.status, 400, 'not a Bearer header');
  assert.match(challenge(res), /^Bearer .*error="invalid_request"/);

  res = await call('Bearer not-a-jwt');
  assert.equal(res.status, 401, 'garbage token');
  assert.match(challenge(res), /^Bearer .*error="invalid_token"/);

  // A real token from the server, but without the API's scope.
  const narrow = await codeFlow(server, { scope: 'openid profile' });
  res = await call(`Bearer ${narrow.tokens.access_token}`);
  assert.equal(res.status, 403, 'valid token without read:contacts');
  assert.match(challenge(res), /error="insufficient_scope"/);
  assert.match(challenge(res), /scope="read:contacts"/);

  // An ID token is not an access token for this API (its audience is the client).
  res = await call(`Bearer ${narrow.tokens.id_token}`);
  assert.equal(res.status, 401, 'ID token used as access token');
  assert.match(challenge(res), /error="invalid_token"/);

  // A tampered token.
  const wide = await codeFlow(server, { scope: 'openid read:contacts' });
  const [h, p, s] = wide.tokens.access_token.split('.');
  const forged = Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(p, 'base64url')), sub: 'auth0|mallory' })).toString('base64url');
  res = await call(`Bearer ${h}.${forged}.${s}`);
  assert.equal(res.status, 401, 'tampered token');

  res = await call(`Bearer ${wide.tokens.access_token}`);
  assert.equal(res.status, 200, 'valid token with the scope');
  const body = await res.json();
  assert.equal(body.sub, ALICE.sub);
  assert.deepEqual(body.custom_claims[`${NS}roles`], ['admin']);
}

export async function run({ log }) {
  const webPort = await freePort();
  const callback = `http://127.0.0.1:${webPort}/callback`;
  const server = await startServer({ alg: 'RS256', redirectUris: [callback], name: 'claimrules-browser' });
  const api = await startProtectedApi(server);
  const web = await startWebapp(server, api, webPort);
  let context;
  try {
    await checkApiRefusals(server, api);
    log('protected_api: 401/400/401/403/401/401 refusals with RFC 6750 challenges, 200 with the scope');

    mkdirSync(ARTIFACTS, { recursive: true });
    context = await chromium.launchPersistentContext(tempDir('chromium-profile'), {
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_ARGS,
    });
    context.setDefaultTimeout(NAV_TIMEOUT_MS);
    const page = context.pages()[0] ?? (await context.newPage());

    await page.goto(`${web.base}/`);
    await page.click('#login');
    await page.waitForURL((u) => u.origin === server.base && u.pathname === '/authorize');
    await page.waitForSelector('form[action="/login"]');
    assert.equal(await page.title(), 'Log in');
    await page.screenshot({ path: join(ARTIFACTS, 'login.png'), fullPage: true });

    // A wrong password first: the page says so without telling which field was wrong.
    await page.fill('#username', ALICE.email);
    await page.fill('#password', 'not-the-password');
    await page.click('form[action="/login"] button[type="submit"]');
    await page.waitForSelector('p.error');
    assert.equal((await page.textContent('p.error')).trim(), 'Wrong email or password.');

    await page.fill('#password', ALICE.password);
    await page.click('form[action="/login"] button[type="submit"]');
    await page.waitForSelector('form[action="/consent"]');
    const consentText = await page.textContent('main');
    assert.match(consentText, /read:contacts/, 'the consent page lists the requested scopes');
    await page.screenshot({ path: join(ARTIFACTS, 'consent.png'), fullPage: true });

    await page.click('button[name="decision"][value="allow"]');
    await page.waitForURL((u) => u.origin === web.base && u.pathname === '/callback');
    await page.waitForSelector('#api-response');
    await page.screenshot({ path: join(ARTIFACTS, 'callback.png'), fullPage: true });
    assert.equal((await page.textContent('#api-status')).trim(), '200', await page.textContent('body'));
    const apiAnswer = JSON.parse(await page.textContent('#api-response'));
    assert.equal(apiAnswer.sub, ALICE.sub);
    assert.ok(apiAnswer.scope.split(' ').includes('read:contacts'));
    assert.deepEqual(apiAnswer.custom_claims[`${NS}roles`], ['admin']);
    assert.equal((await page.textContent('#user')).trim(), ALICE.name);

    // The callback is single use: reloading it is refused by the web app's state check.
    const again = await page.reload();
    assert.equal(again.status(), 400);
    assert.equal((await page.textContent('#error')).trim(), 'invalid_state');
    log(`browser: login, consent, callback with the API's answer; screenshots in ${ARTIFACTS}`);
  } finally {
    if (context) await context.close();
    await stopProcess(web.proc);
    await stopProcess(api.proc);
    await stopProcess(server.proc);
  }
}
