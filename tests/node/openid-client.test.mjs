// A real OIDC client library completes the flow: `openid-client` v6, unmodified, discovers the
// issuer, builds the authorization URL with PKCE, state and nonce; a cookie-keeping fetch fills
// the login and consent forms; the library exchanges the code, validates the ID token (with the
// signature checked against the JWKS), calls userinfo and refreshes the tokens; the core flow
// also runs against ES256 and EdDSA servers.

import assert from 'node:assert/strict';
import * as client from 'openid-client';
import {
  ALICE, AUDIENCE, BOB, CLIENT_ID, CLIENT_SECRET, NS, cookieFetch, loginAndConsent, startServer, stopProcess,
} from './lib/harness.mjs';

async function authorize(config, server, { scope, f, user, decision = 'allow' }) {
  const verifier = client.randomPKCECodeVerifier();
  const state = client.randomState();
  const nonce = client.randomNonce();
  const url = client.buildAuthorizationUrl(config, {
    redirect_uri: server.redirectUri,
    scope,
    audience: AUDIENCE,
    code_challenge: await client.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
    state,
    nonce,
  });
  const callback = await loginAndConsent(url, user, { fetch: f, decision });
  return { callback, verifier, state, nonce };
}

/** Everything, against an RS256 server, with client_secret_basic. */
async function fullFlow(log) {
  const server = await startServer({ alg: 'RS256', name: 'claimrules-openid-client' });
  try {
    const config = await client.discovery(
      new URL(server.issuer), CLIENT_ID, undefined, client.ClientSecretBasic(CLIENT_SECRET),
      { execute: [client.allowInsecureRequests] }, // plain http on loopback only
    );
    client.enableNonRepudiationChecks(config); // also verify the ID token's signature
    const meta = config.serverMetadata();
    assert.equal(meta.issuer, server.issuer);
    assert.ok(meta.code_challenge_methods_supported.includes('S256'));
    assert.equal(meta.supportsPKCE(), true);

    // Login, consent, code exchange, ID token validation.
    const f = cookieFetch();
    const scope = 'openid profile email offline_access read:contacts';
    const a = await authorize(config, server, { scope, f, user: ALICE });
    assert.equal(a.callback.searchParams.get('iss'), server.issuer, 'RFC 9207 iss in the response');
    const tokens = await client.authorizationCodeGrant(config, a.callback, {
      pkceCodeVerifier: a.verifier, expectedState: a.state, expectedNonce: a.nonce, idTokenExpected: true,
    });
    assert.equal(tokens.token_type.toLowerCase(), 'bearer');
    assert.ok(tokens.expires_in > 0);
    assert.ok(tokens.refresh_token, 'offline_access with an API that allows it yields a refresh token');
    const claims = tokens.claims();
    assert.equal(claims.iss, server.issuer);
    assert.equal(claims.sub, ALICE.sub);
    assert.equal(claims.aud, CLIENT_ID);
    assert.equal(claims.nonce, a.nonce);
    assert.equal(claims.email, ALICE.email);
    assert.deepEqual(claims[`${NS}roles`], ['admin']);

    // Userinfo with the access token.
    const info = await client.fetchUserInfo(config, tokens.access_token, claims.sub);
    assert.equal(info.sub, ALICE.sub);
    assert.equal(info.email, ALICE.email);
    assert.equal(info.email_verified, true);
    assert.equal(info.name, ALICE.name);

    // Refresh: new tokens, the rules ran again as a refresh, the old refresh token is spent.
    const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token);
    assert.ok(refreshed.access_token && refreshed.access_token !== tokens.access_token);
    assert.ok(refreshed.refresh_token && refreshed.refresh_token !== tokens.refresh_token, 'rotated');
    const payload = JSON.parse(Buffer.from(refreshed.access_token.split('.')[1], 'base64url'));
    assert.equal(payload[`${NS}refreshed`], true, 'the 50-protocol rule saw oauth2-refresh-token');
    await assert.rejects(client.refreshTokenGrant(config, tokens.refresh_token), (e) => {
      assert.ok(e instanceof client.ResponseBodyError, `${e}`);
      assert.equal(e.error, 'invalid_grant');
      return true;
    });

    // The same browser again with the same scopes: session and consent are remembered, so the
    // server redirects straight back with a code.
    const again = await authorize(config, server, { scope, f, user: ALICE });
    const second = await client.authorizationCodeGrant(config, again.callback, {
      pkceCodeVerifier: again.verifier, expectedState: again.state, expectedNonce: again.nonce, idTokenExpected: true,
    });
    assert.equal(second.claims().sub, ALICE.sub);

    // A user who denies consent: the library reports the server's access_denied.
    const denied = await authorize(config, server, { scope, f: cookieFetch(), user: BOB, decision: 'deny' });
    await assert.rejects(
      client.authorizationCodeGrant(config, denied.callback, {
        pkceCodeVerifier: denied.verifier, expectedState: denied.state, expectedNonce: denied.nonce,
      }),
      (e) => {
        assert.ok(e instanceof client.AuthorizationResponseError, `${e}`);
        assert.equal(e.error, 'access_denied');
        return true;
      },
    );
    log('openid-client RS256: discovery, PKCE code flow, ID token, userinfo, refresh rotation, remembered consent, denial');
  } finally {
    await stopProcess(server.proc);
  }
}

/** Discovery, code flow with PKCE, ID token (signature included) and userinfo for `alg`. */
async function basicFlow(alg, log) {
  const server = await startServer({ alg, name: `claimrules-openid-client-${alg}` });
  try {
    const config = await client.discovery(
      new URL(server.issuer), CLIENT_ID, undefined, client.ClientSecretPost(CLIENT_SECRET),
      { execute: [client.allowInsecureRequests] },
    );
    client.enableNonRepudiationChecks(config);
    const a = await authorize(config, server, { scope: 'openid email', f: cookieFetch(), user: ALICE });
    const tokens = await client.authorizationCodeGrant(config, a.callback, {
      pkceCodeVerifier: a.verifier, expectedState: a.state, expectedNonce: a.nonce, idTokenExpected: true,
    });
    const claims = tokens.claims();
    assert.equal(claims.sub, ALICE.sub);
    assert.equal(claims.email, ALICE.email);
    const info = await client.fetchUserInfo(config, tokens.access_token, claims.sub);
    assert.equal(info.email, ALICE.email);
    assert.equal(info.name, undefined, 'no profile claims without the profile scope');
    log(`openid-client ${alg}: code flow, signed ID token, userinfo (client_secret_post)`);
  } finally {
    await stopProcess(server.proc);
  }
}

export async function run({ log }) {
  await fullFlow(log);
  for (const alg of ['ES256', 'EdDSA']) await basicFlow(alg, log);
}
