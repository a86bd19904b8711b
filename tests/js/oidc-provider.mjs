// A real OpenID Connect provider for pgbastion's tests and demo (the npm package oidc-provider).
//
//   node tests/js/oidc-provider.mjs CONFIG.json
//
// CONFIG: { "port": N, "issuer": "http://127.0.0.1:N",
//           "clients": [{ "client_id", "client_secret", "redirect_uris": [...] }],
//           "users": [{ "sub", "email", "name", "groups": [...] }] }
//
// Sign-in uses oidc-provider's development interactions: a login form whose typed login is the
// account id (the password is ignored), then a consent form. A login that is not a configured
// user is not an account: the provider shows the login form again. When someone else signs in
// on a browser that already has a session, the provider first ends that session with a page
// whose script submits a form at once.
//
// Prints exactly one line `ready ISSUER` on stdout once it listens; everything else goes to
// stderr. SIGTERM (or SIGINT) closes the server and exits 0.
//
// Hostile modes for tests: `POST /__test/tamper` with `{"mode": M}` (from loopback only; 204)
// changes the id_token in every later token endpoint response:
//   none            untouched (the default)
//   foreign-key     same header and claims, signed with a key that is not in the JWKS (other kid)
//   other-issuer    iss = "http://127.0.0.1:1/other", signed with the provider's real key
//   bad-nonce       nonce = "forged-nonce", signed with the real key
//   other-audience  aud = "someone-else", signed with the real key
// Everything else (exp, at_hash if any) is left as it was, so only the tampered claim (or the
// key) is wrong. (oidc-provider 9 puts no at_hash in the ID token of the token endpoint.)

import { readFileSync } from 'node:fs';

import Provider, { interactionPolicy } from 'oidc-provider';
import { CompactSign, calculateJwkThumbprint, exportJWK, generateKeyPair } from 'jose';

// oidc-provider prints its notices with console.info, i.e. on stdout; stdout is reserved for
// the one `ready` line the harness waits for.
console.info = (...args) => console.error(...args);

const TAMPER_MODES = new Set([
  'none', 'foreign-key', 'other-issuer', 'bad-nonce', 'other-audience',
]);
const OTHER_ISSUER = 'http://127.0.0.1:1/other';
const TAMPER_PATH = '/__test/tamper';
// The provider's default token route; the issuer has no path, so no prefix.
const TOKEN_PATH = '/token';

function fail(message) {
  console.error(`oidc-provider.mjs: ${message}`);
  process.exit(2);
}

function loadConfig(path) {
  if (!path) fail('usage: node oidc-provider.mjs CONFIG.json');
  let config;
  try {
    config = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    fail(`cannot read ${path}: ${e.message}`);
  }
  if (!Number.isInteger(config.port) || config.port <= 0) {
    fail('config: "port" must be a port number');
  }
  if (typeof config.issuer !== 'string') fail('config: "issuer" must be a URL');
  if (!Array.isArray(config.clients) || config.clients.length === 0) {
    fail('config: "clients" must be a non-empty list');
  }
  if (!Array.isArray(config.users)) fail('config: "users" must be a list');
  return config;
}

// An RS256 key pair as private and public JWKs, with its thumbprint as kid.
async function rsaSigningKey() {
  const { privateKey } = await generateKeyPair('RS256', { modulusLength: 2048, extractable: true });
  const jwk = await exportJWK(privateKey);
  jwk.kid = await calculateJwkThumbprint(jwk);
  jwk.alg = 'RS256';
  jwk.use = 'sig';
  return { jwk, key: privateKey };
}

function decodePart(part) {
  return JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
}

// Signs `payload` with `header` kept as it is except for the kid of the key that signs.
async function resign(header, payload, signer) {
  return new CompactSign(new TextEncoder().encode(JSON.stringify(payload)))
    .setProtectedHeader({ ...header, alg: 'RS256', kid: signer.jwk.kid })
    .sign(signer.key);
}

async function tamperIdToken(idToken, mode, realKey, foreignKey) {
  const [headerPart, payloadPart] = idToken.split('.');
  const header = decodePart(headerPart);
  const payload = decodePart(payloadPart);
  switch (mode) {
    case 'foreign-key':
      return resign(header, payload, foreignKey);
    case 'other-issuer':
      return resign(header, { ...payload, iss: OTHER_ISSUER }, realKey);
    case 'bad-nonce':
      return resign(header, { ...payload, nonce: 'forged-nonce' }, realKey);
    case 'other-audience':
      return resign(header, { ...payload, aud: 'someone-else' }, realKey);
    default:
      return idToken;
  }
}

function isLoopback(address) {
  return typeof address === 'string'
    && (address.startsWith('127.') || address === '::1' || address.startsWith('::ffff:127.'));
}

async function readBody(req, limit = 4096) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > limit) throw new Error('body too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function bodyAsObject(body) {
  if (body === null || body === undefined) return undefined;
  if (Buffer.isBuffer(body)) return JSON.parse(body.toString('utf8'));
  if (typeof body === 'string') return JSON.parse(body);
  if (typeof body === 'object' && typeof body.pipe !== 'function') return body;
  return undefined;
}

async function main() {
  const config = loadConfig(process.argv[2]);
  const users = new Map(config.users.map((user) => [user.sub, user]));

  // The provider's signing key is made here, not by the provider, so that the hostile modes
  // can re-sign with it: only the tampered claim is then wrong, never the signature.
  const realKey = await rsaSigningKey();
  const foreignKey = await rsaSigningKey();
  let tamperMode = 'none';

  // A login that is no account: oidc-provider 9 would take the session's accountId as
  // authenticated and then fail the consent check with a server_error (500, "Cannot read
  // properties of undefined (reading 'getOIDCScopeEncountered')"). This check asks for the
  // login again instead, as a real sign-in page does after a wrong password.
  const policy = interactionPolicy.base();
  const noSession = policy.get('login').checks.findIndex((check) => check.reason === 'no_session');
  policy.get('login').checks.add(
    new interactionPolicy.Check(
      'unknown_account',
      'the login is not a known account',
      (ctx) => (ctx.oidc.session.accountId && !ctx.oidc.account
        ? interactionPolicy.Check.REQUEST_PROMPT
        : interactionPolicy.Check.NO_NEED_TO_PROMPT),
    ),
    noSession + 1,
  );

  const provider = new Provider(config.issuer, {
    clients: config.clients.map((client) => ({
      client_id: client.client_id,
      client_secret: client.client_secret,
      redirect_uris: client.redirect_uris,
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    })),
    jwks: { keys: [realKey.jwk] },
    // The typed login is the account id; an unknown one is no account (undefined), and the
    // provider then asks for the login again.
    async findAccount(_ctx, id) {
      const user = users.get(id);
      if (!user) return undefined;
      return {
        accountId: user.sub,
        async claims() {
          return {
            sub: user.sub,
            email: user.email,
            email_verified: true,
            name: user.name,
            preferred_username: user.sub,
            groups: user.groups ?? [],
          };
        },
      };
    },
    // A claim reaches the client only if a scope lists it: `groups` needs both its entry here
    // and its scope below, or userinfo silently leaves it out.
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username'],
      groups: ['groups'],
    },
    scopes: ['openid', 'email', 'profile', 'groups', 'offline_access'],
    // Only S256 exists in oidc-provider 9; this makes PKCE mandatory for confidential clients too.
    pkce: { required: () => true },
    clientBasedCORS: () => true,
    interactions: { policy },
    features: {
      devInteractions: { enabled: true },
      userinfo: { enabled: true },
    },
    cookies: {
      keys: ['pgbastion-test-cookie-key-1', 'pgbastion-test-cookie-key-2'],
    },
    ttl: {
      AccessToken: 10 * 60,
      AuthorizationCode: 60,
      IdToken: 10 * 60,
      Interaction: 10 * 60,
      Session: 60 * 60,
      Grant: 60 * 60,
      RefreshToken: 60 * 60,
      ClientCredentials: 10 * 60,
      DeviceCode: 10 * 60,
      BackchannelAuthenticationRequest: 10 * 60,
      PreAuthorizedCode: 10 * 60,
    },
    // Errors rendered as a small page, without the default's notice on every error.
    async renderError(ctx, out) {
      ctx.type = 'html';
      const escape = (v) => String(v).replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`);
      const text = Object.entries(out).map(([k, v]) => `${k}: ${escape(v)}`).join('<br>');
      ctx.body = '<!DOCTYPE html><html><head><title>oops</title></head><body>'
        + `<h1>oops! something went wrong</h1><p>${text}</p></body></html>`;
    },
  });

  provider.on('server_error', (_ctx, err) => console.error('server_error:', err));
  for (const event of ['grant.error', 'authorization.error', 'userinfo.error']) {
    provider.on(event, (_ctx, err) => {
      console.error(`${event}:`, err.message, err.error_description ?? '');
    });
  }

  // The control endpoint, answered before the provider's router sees the request.
  provider.use(async (ctx, next) => {
    if (ctx.path !== TAMPER_PATH) return next();
    if (!isLoopback(ctx.req.socket.remoteAddress)) {
      ctx.status = 403;
      return undefined;
    }
    if (ctx.method !== 'POST') {
      ctx.status = 405;
      return undefined;
    }
    let mode;
    try {
      ({ mode } = JSON.parse(await readBody(ctx.req)));
    } catch (e) {
      ctx.status = 400;
      ctx.body = { error: `expected {"mode": ...}: ${e.message}` };
      return undefined;
    }
    if (!TAMPER_MODES.has(mode)) {
      ctx.status = 400;
      const modes = [...TAMPER_MODES].join(', ');
      ctx.body = { error: `unknown mode ${JSON.stringify(mode)}; one of ${modes}` };
      return undefined;
    }
    tamperMode = mode;
    console.error(`tamper mode: ${mode}`);
    ctx.status = 204;
    return undefined;
  });

  // The hostile modes: rewrite the id_token of a successful token endpoint response.
  provider.use(async (ctx, next) => {
    await next();
    if (tamperMode === 'none' || ctx.path !== TOKEN_PATH || ctx.method !== 'POST') return;
    if (ctx.status !== 200) return;
    const body = bodyAsObject(ctx.body);
    if (!body || typeof body.id_token !== 'string') return;
    body.id_token = await tamperIdToken(body.id_token, tamperMode, realKey, foreignKey);
    // Koa serializes an object body as JSON with the content type it already set.
    ctx.body = body;
  });

  const server = provider.listen(config.port, '127.0.0.1');
  server.on('error', (e) => fail(`cannot listen on 127.0.0.1:${config.port}: ${e.message}`));
  server.on('listening', () => {
    process.stdout.write(`ready ${config.issuer}\n`);
  });

  let stopping = false;
  const stop = (signal) => {
    if (stopping) return;
    stopping = true;
    console.error(`${signal}: stopping`);
    server.close(() => process.exit(0));
    // Keep-alive connections (a test's HTTP client) would hold close() open.
    server.closeAllConnections();
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
