// Tokens verify with an independent implementation: the `jose` package fetches our JWKS (found
// through discovery) and verifies an access token and an ID token obtained through the real
// flow (authorize, login, consent, code exchange), for each signing algorithm.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as jose from 'jose';
import { ALICE, AUDIENCE, CLIENT_ID, NS, codeFlow, startServer, stopProcess } from './lib/harness.mjs';

const ALGS = ['RS256', 'ES256', 'EdDSA'];

/** OIDC Core §3.1.3.6: left half of the hash of the ASCII token; Ed25519 uses SHA-512. */
function atHash(alg, token) {
  const digest = createHash(alg === 'EdDSA' ? 'sha512' : 'sha256').update(token, 'ascii').digest();
  return digest.subarray(0, digest.length / 2).toString('base64url');
}

const PRIVATE_JWK_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'];

async function checkAlgorithm(alg, log) {
  const server = await startServer({ alg });
  try {
    const discovery = await (await fetch(`${server.base}/.well-known/openid-configuration`)).json();
    assert.equal(discovery.issuer, server.issuer);
    assert.deepEqual(discovery.id_token_signing_alg_values_supported, [alg]);

    // The published key set: public keys only, each with a kid.
    const jwksDoc = await (await fetch(discovery.jwks_uri)).json();
    assert.ok(jwksDoc.keys.length >= 1, 'the JWKS publishes a key');
    for (const k of jwksDoc.keys) {
      assert.ok(k.kid, 'every JWK has a kid');
      for (const m of PRIVATE_JWK_MEMBERS) assert.equal(k[m], undefined, `JWK must not publish "${m}"`);
    }

    const { tokens, nonce } = await codeFlow(server, { scope: 'openid profile email read:contacts' });
    assert.equal(tokens.token_type, 'Bearer');
    const JWKS = jose.createRemoteJWKSet(new URL(discovery.jwks_uri));

    // Access token (RFC 9068).
    const at = await jose.jwtVerify(tokens.access_token, JWKS, {
      issuer: server.issuer, audience: AUDIENCE, algorithms: [alg], typ: 'at+jwt', requiredClaims: ['exp', 'iat', 'jti'],
    });
    assert.equal(at.protectedHeader.alg, alg);
    assert.ok(jwksDoc.keys.some((k) => k.kid === at.protectedHeader.kid), 'signed by a published key');
    assert.equal(at.payload.sub, ALICE.sub);
    assert.equal(at.payload.azp, CLIENT_ID);
    assert.ok(at.payload.scope.split(' ').includes('read:contacts'), `scope ${at.payload.scope}`);
    assert.ok([].concat(at.payload.aud).includes(discovery.userinfo_endpoint), 'openid grants the userinfo audience');
    assert.ok(at.payload.exp > at.payload.iat);
    // The sample rules' claims, namespaced.
    assert.deepEqual(at.payload[`${NS}roles`], ['admin']);
    assert.equal(at.payload[`${NS}plan`], 'pro');

    // ID token (OIDC Core §2, §3.1.3.7).
    const id = await jose.jwtVerify(tokens.id_token, JWKS, {
      issuer: server.issuer, audience: CLIENT_ID, algorithms: [alg], requiredClaims: ['exp', 'iat', 'sub'],
    });
    assert.equal(id.protectedHeader.alg, alg);
    assert.ok(id.protectedHeader.kid);
    assert.equal(id.payload.sub, ALICE.sub);
    assert.equal(id.payload.nonce, nonce);
    assert.equal(typeof id.payload.auth_time, 'number');
    assert.equal(id.payload.at_hash, atHash(alg, tokens.access_token));
    assert.equal(id.payload.email, ALICE.email);
    assert.equal(id.payload.name, ALICE.name);
    assert.equal(id.payload[`${NS}theme`], 'dark');

    // jose refuses what must be refused: another audience, a changed payload, another alg.
    await assert.rejects(
      jose.jwtVerify(tokens.access_token, JWKS, { issuer: server.issuer, audience: 'https://other.example.com' }),
      (e) => e.code === 'ERR_JWT_CLAIM_VALIDATION_FAILED',
    );
    const [h, , s] = tokens.access_token.split('.');
    const forged = jose.base64url.encode(JSON.stringify({ ...jose.decodeJwt(tokens.access_token), sub: 'auth0|mallory' }));
    await assert.rejects(
      jose.jwtVerify(`${h}.${forged}.${s}`, JWKS, { issuer: server.issuer, audience: AUDIENCE }),
      (e) => e.code === 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED',
    );
    const other = ALGS.find((a) => a !== alg);
    await assert.rejects(
      jose.jwtVerify(tokens.access_token, JWKS, { issuer: server.issuer, audience: AUDIENCE, algorithms: [other] }),
      (e) => e.code === 'ERR_JOSE_ALG_NOT_ALLOWED',
    );
    log(`${alg}: access token and ID token verified by jose (kid ${at.protectedHeader.kid})`);
  } finally {
    await stopProcess(server.proc);
  }
}

export async function run({ log }) {
  for (const alg of ALGS) await checkAlgorithm(alg, log);
}
