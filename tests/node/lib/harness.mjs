// Starts and stops the binaries (token server, example API, example web app) on free loopback
// ports, writes their tenant config, and drives the login and consent forms with a
// cookie-keeping fetch. Nothing here builds anything: `cargo build --bin claimrules --examples`
// must have run for the profile chosen by CLAIMRULES_PROFILE (`release` by default; scripts/test
// sets `debug`, whose binaries `cargo test` has already built, sparing a release build).

import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
/** Cargo profile folder of the binaries under test (target/PROFILE/). */
const PROFILE = process.env.CLAIMRULES_PROFILE || 'release';
const TARGET = process.env.CARGO_TARGET_DIR ? resolve(process.env.CARGO_TARGET_DIR) : join(ROOT, 'target');
export const BIN = {
  claimrules: join(TARGET, PROFILE, 'claimrules'),
  protectedApi: join(TARGET, PROFILE, 'examples', 'protected_api'),
  webapp: join(TARGET, PROFILE, 'examples', 'webapp'),
};
export const ARTIFACTS = join(ROOT, 'test-artifacts');
const LOGS = join(ARTIFACTS, 'logs');

export const CLIENT_ID = 'web';
export const CLIENT_SECRET = randomBytes(24).toString('base64url');
export const AUDIENCE = 'https://api.example.com';
export const ALICE = { email: 'alice@example.com', password: 'alice-password', sub: 'auth0|alice', name: 'Alice Example' };
export const BOB = { email: 'bob@example.com', password: 'bob-password', sub: 'auth0|bob' };
export const NS = 'https://example.com/';

/** How long a process may take to announce that it listens. */
const START_TIMEOUT_MS = 15_000;
/** How long a process may take to exit after SIGTERM before it is killed. */
const STOP_TIMEOUT_MS = 5_000;

/** A free loopback TCP port (the OS picks it; closed again before use). */
export function freePort() {
  return new Promise((ok, fail) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', fail);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => ok(port));
    });
  });
}

/** Fails with a clear message when a binary is missing (the harness never builds). */
export function requireBinaries() {
  const missing = Object.values(BIN).filter((p) => !existsSync(p));
  if (missing.length) {
    throw new Error(
      `missing ${missing.join(', ')}: run \`cargo build ${PROFILE === 'release' ? '--release' : `--profile ${PROFILE === 'debug' ? 'dev' : PROFILE}`} --bin claimrules --examples\` first`,
    );
  }
}

/** An Argon2 hash from `claimrules hash-password`. */
export function hashPassword(password) {
  const r = spawnSync(BIN.claimrules, ['hash-password'], { input: `${password}\n`, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`hash-password failed (${r.status}): ${r.stderr}`);
  const hash = r.stdout.trim();
  if (!hash.startsWith('$argon2')) throw new Error(`hash-password printed ${JSON.stringify(hash)}`);
  return hash;
}

let hashes;
function userHashes() {
  hashes ??= { alice: hashPassword(ALICE.password), bob: hashPassword(BOB.password) };
  return hashes;
}

const toml = (s) => JSON.stringify(s); // a JSON string is a valid TOML basic string

/** The tenant config: same shape as tests/common/mod.rs (sample rules, alice and bob). */
export function writeConfig(dir, { issuer, alg, redirectUris }) {
  const h = userHashes();
  const text = `
issuer = ${toml(issuer)}
rules = ${toml(join(ROOT, 'rules'))}
data = "data"
signing_alg = ${toml(alg)}

[[client]]
client_id = ${toml(CLIENT_ID)}
name = "Web App"
client_secret = ${toml(CLIENT_SECRET)}
redirect_uris = ${JSON.stringify(redirectUris)}

[[api]]
identifier = ${toml(AUDIENCE)}
name = "Contacts API"
scopes = ["read:contacts", "write:contacts"]
allow_offline_access = true
token_lifetime = 600

[[user]]
user_id = ${toml(ALICE.sub)}
email = ${toml(ALICE.email)}
username = "alice"
email_verified = true
name = ${toml(ALICE.name)}
nickname = "alice"
password_hash = ${toml(h.alice)}
app_metadata = { roles = ["admin"], plan = "pro" }
user_metadata = { theme = "dark" }

[[user]]
user_id = ${toml(BOB.sub)}
email = ${toml(BOB.email)}
username = "bob"
email_verified = false
name = "Bob Example"
password_hash = ${toml(h.bob)}
app_metadata = { roles = ["viewer"], plan = "free" }
`;
  const path = join(dir, 'claimrules.toml');
  writeFileSync(path, text);
  return path;
}

/** Resolves when `pred` returns a truthy value; polls every 50 ms, fails after `ms`. */
export async function waitFor(what, pred, ms = 5_000) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      const v = await pred();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${ms} ms waiting for ${what}${last ? `: ${last.message}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Every process started by this harness, so that `stopAll` can end them. */
const running = new Set();
/** Log files of the processes started since the last `takeStartedLogs()`. */
let startedLogs = [];
export function takeStartedLogs() {
  const l = startedLogs;
  startedLogs = [];
  return l;
}
/** Empties test-artifacts/logs/ (logs of an earlier run would mislead). */
export function resetLogs() {
  rmSync(LOGS, { recursive: true, force: true });
  mkdirSync(LOGS, { recursive: true });
}

/**
 * Spawns `bin` and resolves once a stdout line matches `ready`. Output goes to
 * test-artifacts/logs/<name>.log (the binaries never log secrets or tokens).
 */
export async function startProcess(name, bin, args, { env = {}, ready, cwd } = {}) {
  mkdirSync(LOGS, { recursive: true });
  const logPath = join(LOGS, `${name}.log`);
  startedLogs.push(logPath);
  const log = createWriteStream(logPath);
  const child = spawn(bin, args, {
    cwd: cwd ?? ROOT,
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const proc = { name, child, logPath, stdout: '', exited: null };
  running.add(proc);
  child.stdout.on('data', (d) => {
    proc.stdout += d;
    log.write(d);
  });
  child.stderr.on('data', (d) => log.write(d));
  const exited = new Promise((r) => child.on('exit', (code, signal) => r((proc.exited = { code, signal }))));
  proc.exitPromise = exited;
  try {
    await waitFor(`${name} to start`, () => {
      if (proc.exited) throw new Error(`${name} exited early (${JSON.stringify(proc.exited)}); see ${logPath}`);
      return ready.test(proc.stdout);
    }, START_TIMEOUT_MS);
  } catch (e) {
    await stopProcess(proc);
    throw e;
  }
  return proc;
}

/** SIGTERM, then SIGKILL if it does not exit in time. */
export async function stopProcess(proc) {
  if (!running.has(proc)) return;
  running.delete(proc);
  if (!proc.exited) {
    proc.child.kill('SIGTERM');
    const done = await Promise.race([
      proc.exitPromise,
      new Promise((r) => setTimeout(() => r(null), STOP_TIMEOUT_MS)),
    ]);
    if (!done) {
      proc.child.kill('SIGKILL');
      await proc.exitPromise;
    }
  }
}

export async function stopAll() {
  for (const p of [...running].reverse()) await stopProcess(p);
}

/** Synchronous last resort (process 'exit' handler): kill whatever still runs. */
export function killAllNow() {
  for (const p of running) {
    if (!p.exited) p.child.kill('SIGKILL');
  }
  running.clear();
}

const tempDirs = [];
export function tempDir(prefix) {
  const d = mkdtempSync(join(tmpdir(), `claimrules-${prefix}-`));
  tempDirs.push(d);
  return d;
}
export function removeTempDirs() {
  for (const d of tempDirs.splice(0)) rmSync(d, { recursive: true, force: true });
}

/**
 * Starts `claimrules serve` with a fresh config and data folder on a free port.
 * `redirectUris` defaults to one callback on a port nobody listens on (tests read the code
 * from the redirect's Location and never follow it).
 */
export async function startServer({ alg = 'RS256', redirectUris, name } = {}) {
  // The port is chosen before the config is written (the issuer URL names it); another
  // process could take it in between, so a failed start is retried on a new port.
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const issuer = `http://127.0.0.1:${port}/`;
    const dir = tempDir(`server-${alg}`);
    const uris = redirectUris ?? [`http://127.0.0.1:${await freePort()}/callback`];
    const config = writeConfig(dir, { issuer, alg, redirectUris: uris });
    try {
      const proc = await startProcess(
        name ?? `claimrules-${alg}`,
        BIN.claimrules,
        ['serve', '--config', config, '--addr', `127.0.0.1:${port}`, '--data', join(dir, 'data'), '--no-watch'],
        { ready: /claimrules listening on http:\/\/127\.0\.0\.1:\d+/ },
      );
      const base = issuer.replace(/\/$/, '');
      await waitFor('discovery', async () => (await fetch(`${base}/.well-known/openid-configuration`)).ok);
      return { proc, issuer, base, port, alg, redirectUri: uris[0], redirectUris: uris, dir };
    } catch (e) {
      if (attempt >= 3) throw e;
    }
  }
}

/** The protected API example for `server`, requiring `scope`. */
export async function startProtectedApi(server, { scope = 'read:contacts' } = {}) {
  const port = await freePort();
  const proc = await startProcess('protected_api', BIN.protectedApi, [
    '--issuer', server.issuer, '--audience', AUDIENCE, '--scope', scope, '--addr', `127.0.0.1:${port}`,
  ], { ready: /protected API listening on/ });
  return { proc, url: `http://127.0.0.1:${port}/api` };
}

/** The web app example on `port` (its callback must be registered in the server's config). */
export async function startWebapp(server, api, port) {
  const proc = await startProcess('webapp', BIN.webapp, [
    '--issuer', server.issuer, '--client-id', CLIENT_ID, '--api-url', api.url,
    '--addr', `127.0.0.1:${port}`, '--redirect-uri', `http://127.0.0.1:${port}/callback`,
  ], { env: { CLIENT_SECRET }, ready: /web app listening on/ });
  return { proc, base: `http://127.0.0.1:${port}` };
}

/** A fetch that keeps cookies (one jar, like one browser) and never follows redirects. */
export function cookieFetch() {
  const jar = new Map();
  const f = async (url, init = {}) => {
    const headers = new Headers(init.headers);
    if (jar.size) headers.set('cookie', [...jar].map(([k, v]) => `${k}=${v}`).join('; '));
    const res = await fetch(url, { ...init, headers, redirect: 'manual' });
    for (const line of res.headers.getSetCookie()) {
      const [pair, ...attrs] = line.split(';');
      const i = pair.indexOf('=');
      const name = pair.slice(0, i).trim();
      const value = pair.slice(i + 1).trim();
      const maxAge = attrs.map((a) => a.trim().toLowerCase()).find((a) => a.startsWith('max-age='));
      if (value === '' || (maxAge && Number(maxAge.slice(8)) <= 0)) jar.delete(name);
      else jar.set(name, value);
    }
    return res;
  };
  f.jar = jar;
  return f;
}

function decodeEntities(s) {
  return s.replace(/&quot;/g, '"').replace(/&#39;/g, "'").replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&');
}

/** A hidden input's value in a page. */
export function hidden(html, name) {
  const m = html.match(new RegExp(`name="${name}" value="([^"]*)"`));
  return m ? decodeEntities(m[1]) : null;
}

/**
 * Follows the server's login and consent forms like a browser without JavaScript would:
 * GET the authorization URL, POST /login, POST /consent (when shown) with `decision`.
 * Returns the final redirect's Location as a URL (the app's callback with code or error).
 */
export async function loginAndConsent(authorizationUrl, user, { fetch: f = cookieFetch(), decision = 'allow' } = {}) {
  const authz = new URL(authorizationUrl);
  let res = await f(authz);
  if (res.status >= 300 && res.status < 400) return new URL(res.headers.get('location'), authz);
  let html = await res.text();
  if (res.status !== 200 || !html.includes('action="/login"')) {
    throw new Error(`expected the login page, got HTTP ${res.status}: ${html.slice(0, 300)}`);
  }
  res = await f(new URL('/login', authz), {
    method: 'POST',
    body: new URLSearchParams({
      authz: hidden(html, 'authz'), csrf: hidden(html, 'csrf'), username: user.email, password: user.password,
    }),
  });
  if (res.status === 200) {
    html = await res.text();
    if (!html.includes('action="/consent"')) throw new Error(`expected the consent page: ${html.slice(0, 300)}`);
    res = await f(new URL('/consent', authz), {
      method: 'POST',
      body: new URLSearchParams({ authz: hidden(html, 'authz'), csrf: hidden(html, 'csrf'), decision }),
    });
  }
  if (res.status < 300 || res.status >= 400) {
    throw new Error(`expected a redirect to the app, got HTTP ${res.status}: ${(await res.text()).slice(0, 300)}`);
  }
  return new URL(res.headers.get('location'), authz);
}

/** PKCE pair (RFC 7636 S256). */
export function pkce() {
  const verifier = randomBytes(32).toString('base64url');
  const challenge = createHash('sha256').update(verifier).digest('base64url');
  return { verifier, challenge };
}

/**
 * The whole code flow with plain fetch: authorize (state, nonce, PKCE), login, consent, then
 * the code exchange with client_secret_post. Returns the token response and what was sent.
 */
export async function codeFlow(server, { scope = 'openid profile email read:contacts', user = ALICE } = {}) {
  const { verifier, challenge } = pkce();
  const state = randomBytes(16).toString('base64url');
  const nonce = randomBytes(16).toString('base64url');
  const url = new URL(`${server.base}/authorize`);
  url.search = new URLSearchParams({
    response_type: 'code', client_id: CLIENT_ID, redirect_uri: server.redirectUri, scope,
    audience: AUDIENCE, state, nonce, code_challenge: challenge, code_challenge_method: 'S256',
  });
  const back = await loginAndConsent(url, user);
  if (back.searchParams.get('state') !== state) throw new Error(`state mismatch in ${back}`);
  const code = back.searchParams.get('code');
  if (!code) throw new Error(`no code in the redirect: error=${back.searchParams.get('error')} ${back.searchParams.get('error_description')}`);
  const res = await fetch(`${server.base}/oauth/token`, {
    method: 'POST',
    body: new URLSearchParams({
      grant_type: 'authorization_code', code, redirect_uri: server.redirectUri, code_verifier: verifier,
      client_id: CLIENT_ID, client_secret: CLIENT_SECRET,
    }),
  });
  const body = await res.json();
  if (res.status !== 200) throw new Error(`code exchange failed: HTTP ${res.status} ${JSON.stringify(body)}`);
  return { tokens: body, nonce, state };
}
