// Runs the interoperability tests one after the other against the built binaries (release by
// default; CLAIMRULES_PROFILE=debug for target/debug, as scripts/test does; see lib/harness.mjs;
// this script builds nothing),
// stops every process it started, and exits non-zero on any failure.
//
//   node run-all.mjs [NAME...]      # NAME: jose, openid-client, browser, playground (default: all)
//
// Process logs go to test-artifacts/logs/, screenshots to test-artifacts/.

import { readFileSync } from 'node:fs';
import {
  killAllNow, removeTempDirs, requireBinaries, resetLogs, stopAll, takeStartedLogs,
} from './lib/harness.mjs';

const TESTS = [
  ['jose', './jose.test.mjs'],
  ['openid-client', './openid-client.test.mjs'],
  ['browser', './browser.test.mjs'],
  ['playground', './playground.test.mjs'],
];
/** Bound on one test, processes' start-up included. */
const TEST_TIMEOUT_MS = 180_000;

process.on('exit', killAllNow);
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    killAllNow();
    removeTempDirs();
    process.exit(130);
  });
}

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, fail) => {
      timer = setTimeout(() => fail(new Error(`${what} did not finish within ${ms / 1000} s`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

function tail(path, lines = 20) {
  try {
    return readFileSync(path, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

const only = process.argv.slice(2);
const unknown = only.filter((n) => !TESTS.some(([t]) => t === n));
if (unknown.length) {
  console.error(`unknown test(s): ${unknown.join(', ')}; known: ${TESTS.map(([t]) => t).join(', ')}`);
  process.exit(2);
}
requireBinaries();
resetLogs();

const failures = [];
for (const [name, file] of TESTS.filter(([t]) => !only.length || only.includes(t))) {
  const started = Date.now();
  console.log(`--- ${name}`);
  const log = (msg) => console.log(`    ${msg}`);
  try {
    const mod = await import(file);
    await withTimeout(mod.run({ log }), TEST_TIMEOUT_MS, name);
    console.log(`ok   ${name} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
  } catch (e) {
    failures.push(name);
    console.log(`FAIL ${name}: ${e?.stack ?? e}`);
    if (e?.cause) console.log(`     cause: ${e.cause?.stack ?? JSON.stringify(e.cause)}`);
    for (const path of takeStartedLogs()) {
      console.log(`     --- last lines of ${path}\n${tail(path).replace(/^/gm, '     ')}`);
    }
  } finally {
    await stopAll();
    takeStartedLogs();
  }
}
removeTempDirs();

if (failures.length) {
  console.log(`\n${failures.length} interoperability test(s) failed: ${failures.join(', ')}`);
  process.exit(1);
}
console.log('\nall interoperability tests passed');
