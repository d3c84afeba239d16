// An OpenID provider for authgate's interop tests: the npm package `oidc-provider`
// (the OpenID-certified engine Logto is built on), configured the way Logto runs it.
//
//   PORT=0 CLIENT_ID=gw CLIENT_SECRET=s REDIRECT_URI=http://127.0.0.1:4180/oauth2/callback \
//   POST_LOGOUT_REDIRECT_URI=http://127.0.0.1:4180/ node provider.js [port]
//
// Prints `READY http://127.0.0.1:<port>/oidc` (the issuer) on stdout once listening.
//
// Environment:
//   PORT                      port (argv[2] wins); 0 = pick a free one
//   CLIENT_ID, CLIENT_SECRET  the one confidential client (client_secret_basic)
//   REDIRECT_URI              its redirect URI (comma-separated for several)
//   POST_LOGOUT_REDIRECT_URI  its post-logout redirect URI (comma-separated for several)
//   BACKCHANNEL_LOGOUT_URI    optional: the client's back-channel logout URI
//   RESOURCE                  API resource indicator (default https://api.example.test):
//                             access tokens asked for it are JWTs with aud = RESOURCE
//   ACCESS_TTL                access-token lifetime in seconds (default 5)
//   AUTO_LOGIN_USER           the account the headless interaction logs in (default alice)
//   ADAPTER_FILE              optional JSON file persisting grants, tokens and keys, so a
//                             restarted provider still honours the refresh tokens it issued
//   LOG_REQUESTS=1            log every request to stderr
//
// Test-only routes (outside /oidc):
//   GET  /__test/events                 JSON event counters
//   POST /__test/revoke_grants?sub=ID   revoke every grant of an account (an admin revoking access)
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';

import Provider, { errors, interactionPolicy } from 'oidc-provider';

const env = (name, dflt) => (process.env[name] === undefined || process.env[name] === '' ? dflt : process.env[name]);
const list = (value) => value.split(',').map((s) => s.trim()).filter(Boolean);

const PORT = Number(process.argv[2] ?? env('PORT', '0'));
const CLIENT_ID = env('CLIENT_ID', 'authgate');
const CLIENT_SECRET = env('CLIENT_SECRET', 'authgate-secret');
const REDIRECT_URIS = list(env('REDIRECT_URI', 'http://127.0.0.1:4180/oauth2/callback'));
const POST_LOGOUT_REDIRECT_URIS = list(env('POST_LOGOUT_REDIRECT_URI', 'http://127.0.0.1:4180/'));
const BACKCHANNEL_LOGOUT_URI = env('BACKCHANNEL_LOGOUT_URI', undefined);
const RESOURCE = env('RESOURCE', 'https://api.example.test');
const ACCESS_TTL = Number(env('ACCESS_TTL', '5'));
const AUTO_LOGIN_USER = env('AUTO_LOGIN_USER', 'alice');
const ADAPTER_FILE = env('ADAPTER_FILE', undefined);
const LOG_REQUESTS = env('LOG_REQUESTS', '') === '1';

// ---- the user store -------------------------------------------------------------------
const USERS = {
  alice: {
    email: 'alice@example.test', email_verified: true, name: 'Alice', preferred_username: 'alice', groups: ['staff'],
  },
  bob: {
    email: 'bob@example.test', email_verified: true, name: 'Bob', preferred_username: 'bob', groups: ['staff', 'admin'],
  },
};

// ---- storage: in memory, mirrored to ADAPTER_FILE when set ----------------------------
// oidc-provider's adapter interface; one flat map `Model:id` -> { payload, exp }.
const db = ADAPTER_FILE && fs.existsSync(ADAPTER_FILE)
  ? JSON.parse(fs.readFileSync(ADAPTER_FILE, 'utf8'))
  : { entries: {}, keys: null };
const persist = () => {
  if (ADAPTER_FILE) {
    fs.writeFileSync(`${ADAPTER_FILE}.tmp`, JSON.stringify(db));
    fs.renameSync(`${ADAPTER_FILE}.tmp`, ADAPTER_FILE);
  }
};
const now = () => Math.floor(Date.now() / 1000);
const live = (key) => {
  const e = db.entries[key];
  if (e && e.exp && e.exp <= now()) { delete db.entries[key]; return undefined; }
  return e && structuredClone(e.payload);
};
const where = (pred) => Object.keys(db.entries).filter((k) => live(k) && pred(k, db.entries[k].payload));

class Adapter {
  constructor(model) { this.model = model; }

  key(id) { return `${this.model}:${id}`; }

  async upsert(id, payload, expiresIn) {
    db.entries[this.key(id)] = { payload, exp: expiresIn ? now() + expiresIn : null };
    persist();
  }

  async find(id) { return live(this.key(id)); }

  async findByUid(uid) { return live(where((k, p) => k.startsWith(`${this.model}:`) && p.uid === uid)[0]); }

  async findByUserCode(code) { return live(where((k, p) => k.startsWith(`${this.model}:`) && p.userCode === code)[0]); }

  async consume(id) {
    const e = db.entries[this.key(id)];
    if (e) { e.payload.consumed = now(); persist(); }
  }

  async destroy(id) { delete db.entries[this.key(id)]; persist(); }

  async revokeByGrantId(grantId) {
    where((k, p) => k.startsWith(`${this.model}:`) && p.grantId === grantId).forEach((k) => delete db.entries[k]);
    persist();
  }
}

// Signing keys and cookie keys are kept in the same file, so a restart keeps them too.
if (!db.keys) {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = { ...privateKey.export({ format: 'jwk' }), kid: crypto.randomUUID(), use: 'sig', alg: 'RS256' };
  db.keys = { jwks: { keys: [jwk] }, cookies: [crypto.randomBytes(32).toString('base64url')] };
  persist();
}

// ---- event counters for the tests -----------------------------------------------------
const events = {
  authorization_code: 0, // successful authorization_code grants
  refresh_token: 0, // successful refresh_token grants
  grant_errors: [], // error codes of failed token requests, in order
  revocations: 0, // successful calls to the revocation endpoint
  refresh_token_revocations: 0, // ... of them revoking a refresh token
  grants_revoked: 0, // grants revoked (revocation, refresh-token reuse, logout, admin)
  end_session: 0, // completed RP-initiated logouts
  refresh_token_consumed: 0, // refresh tokens rotated out
  backchannel_success: 0,
  backchannel_errors: 0,
  userinfo: 0, // successful userinfo calls
};

// ---- the provider ---------------------------------------------------------------------
function makeProvider(issuer) {
  const provider = new Provider(issuer, {
    adapter: Adapter,
    jwks: db.keys.jwks,
    cookies: { keys: db.keys.cookies },
    clients: [{
      client_id: CLIENT_ID,
      client_secret: CLIENT_SECRET,
      redirect_uris: REDIRECT_URIS,
      post_logout_redirect_uris: POST_LOGOUT_REDIRECT_URIS,
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
      ...(BACKCHANNEL_LOGOUT_URI ? { backchannel_logout_uri: BACKCHANNEL_LOGOUT_URI, backchannel_logout_session_required: true } : {}),
    }],
    // PKCE is mandatory, S256 only.
    pkce: { methods: ['S256'], required: () => true },
    scopes: ['openid', 'offline_access', 'profile', 'email'],
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username', 'groups'],
    },
    // Like Logto: the ID token carries the scopes' claims (not only the userinfo endpoint).
    conformIdTokenClaims: false,
    // A refresh token only with offline_access (the library default, spelled out) ...
    issueRefreshToken: async (ctx, client, code) => client.grantTypeAllowed('refresh_token') && code.scopes.has('offline_access'),
    // ... and every refresh rotates it; reusing a consumed one revokes the grant (invalid_grant).
    rotateRefreshToken: true,
    ttl: {
      AccessToken: ACCESS_TTL,
      AuthorizationCode: 60,
      IdToken: 3600,
      RefreshToken: 14 * 24 * 3600,
      Grant: 14 * 24 * 3600,
      Session: 14 * 24 * 3600,
      Interaction: 3600,
    },
    findAccount: async (ctx, id) => (USERS[id] ? {
      accountId: id,
      claims: async () => ({ sub: id, ...USERS[id] }),
    } : undefined),
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}`, policy: stepUpPolicy() },
    // Step-up (RFC 9470): a login records the first requested acr (else pwd) as the session's.
    acrValues: ['urn:interop:pwd', 'urn:interop:mfa'],
    clientBasedCORS: () => true,
    features: {
      devInteractions: { enabled: false },
      userinfo: { enabled: true },
      revocation: { enabled: true },
      introspection: { enabled: true },
      backchannelLogout: { enabled: true },
      rpInitiatedLogout: {
        enabled: true,
        // Logto auto-submits the logout confirmation; so do we. A script-less client
        // (curl, the cargo test) POSTs the form's fields to /oidc/session/end/confirm.
        logoutSource: async (ctx, form) => {
          ctx.body = `<!DOCTYPE html><html><body>${form}<button form="op.logoutForm" name="logout" value="yes">Sign out</button>`
            + '<script>var f=document.getElementById("op.logoutForm");var i=document.createElement("input");'
            + 'i.type="hidden";i.name="logout";i.value="yes";f.appendChild(i);f.submit()</script></body></html>';
        },
      },
      resourceIndicators: {
        enabled: true,
        // Like Logto: a token request without `resource` gets an opaque (userinfo) token,
        // even when the authorization asked for a resource.
        useGrantedResource: () => false,
        defaultResource: (ctx, client, oneOf) => (oneOf ? oneOf[0] : undefined),
        getResourceServerInfo: (ctx, indicator) => {
          if (indicator !== RESOURCE) throw new errors.InvalidTarget();
          return {
            scope: 'api:read api:write', audience: RESOURCE, accessTokenTTL: ACCESS_TTL, accessTokenFormat: 'jwt',
          };
        },
      },
    },
  });

  provider.on('grant.success', (ctx) => {
    const gt = ctx.oidc.params.grant_type;
    events[gt] = (events[gt] ?? 0) + 1;
  });
  provider.on('grant.error', (ctx, err) => events.grant_errors.push(err.error ?? String(err)));
  provider.on('grant.revoked', () => { events.grants_revoked += 1; });
  provider.on('end_session.success', () => { events.end_session += 1; });
  provider.on('refresh_token.consumed', () => { events.refresh_token_consumed += 1; });
  provider.on('backchannel.success', () => { events.backchannel_success += 1; });
  provider.on('backchannel.error', (ctx, err) => {
    events.backchannel_errors += 1;
    process.stderr.write(`backchannel logout error: ${err}\n`);
  });
  provider.on('server_error', (ctx, err) => process.stderr.write(`server_error: ${err.stack}\n`));
  // oidc-provider has no revocation.success event: count answered revocation requests.
  provider.use(async (ctx, next) => {
    await next();
    if (ctx.oidc?.route === 'revocation' && ctx.status === 200) {
      events.revocations += 1;
      if (ctx.oidc.entities.RefreshToken) events.refresh_token_revocations += 1;
    }
    if (ctx.oidc?.route === 'userinfo' && ctx.status === 200) events.userinfo += 1;
  });
  return provider;
}

// Like Logto: a request whose `acr_values` the session's acr is not among prompts for a login
// again (oidc-provider itself treats voluntary acr_values as a hint only).
function stepUpPolicy() {
  const policy = interactionPolicy.base();
  policy.get('login').checks.add(new interactionPolicy.Check('acr_values', 'step-up required', (ctx) => {
    const requested = ctx.oidc.params.acr_values;
    if (!requested || requested.split(' ').includes(ctx.oidc.session.acr)) {
      return interactionPolicy.Check.NO_NEED_TO_PROMPT;
    }
    return interactionPolicy.Check.REQUEST_PROMPT;
  }));
  return policy;
}

// ---- the headless interaction ---------------------------------------------------------
// GET /interaction/:uid, first for the `login` prompt (log AUTO_LOGIN_USER in), then for
// `consent` (grant every requested scope, claim and resource scope), like a user clicking
// through Logto's sign-in and consent pages.
async function interaction(provider, req, res) {
  const { prompt, params, session, grantId } = await provider.interactionDetails(req, res);
  if (prompt.name === 'login') {
    const acr = params.acr_values ? params.acr_values.split(' ')[0] : 'urn:interop:pwd';
    await provider.interactionFinished(req, res, { login: { accountId: AUTO_LOGIN_USER, acr } }, { mergeWithLastSubmission: false });
    return;
  }
  const grant = grantId
    ? await provider.Grant.find(grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  const { details } = prompt;
  if (details.missingOIDCScope) grant.addOIDCScope(details.missingOIDCScope.join(' '));
  if (details.missingOIDCClaims) grant.addOIDCClaims(details.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(details.missingResourceScopes ?? {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  const consent = { grantId: await grant.save() };
  await provider.interactionFinished(req, res, { consent }, { mergeWithLastSubmission: true });
}

// ---- test-only routes -----------------------------------------------------------------
function revokeGrants(sub) {
  const grants = where((k, p) => k.startsWith('Grant:') && p.accountId === sub).map((k) => k.slice('Grant:'.length));
  const ids = new Set(grants);
  where((k, p) => ids.has(p.grantId)).forEach((k) => delete db.entries[k]);
  grants.forEach((g) => delete db.entries[`Grant:${g}`]);
  persist();
  events.grants_revoked += grants.length;
  return grants.length;
}

const json = (res, status, body) => {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
};

// ---- the HTTP server: /oidc -> provider, /interaction -> headless login, /__test -> tests
let provider;
let handle;
const server = http.createServer(async (req, res) => {
  if (LOG_REQUESTS) res.on('finish', () => process.stderr.write(`${req.method} ${req.originalUrl ?? req.url} -> ${res.statusCode}\n`));
  try {
    const url = new URL(req.url, 'http://localhost');
    if (!provider) return json(res, 503, { error: 'starting' });
    if (url.pathname === '/oidc' || url.pathname.startsWith('/oidc/')) {
      // Mounted under /oidc: oidc-provider derives its mount path from originalUrl vs url.
      req.originalUrl = req.url;
      req.url = req.url.slice('/oidc'.length) || '/';
      return handle(req, res);
    }
    if (req.method === 'GET' && url.pathname.startsWith('/interaction/')) return await interaction(provider, req, res);
    if (req.method === 'GET' && url.pathname === '/__test/events') return json(res, 200, events);
    if (req.method === 'POST' && url.pathname === '/__test/revoke_grants') {
      const sub = url.searchParams.get('sub') ?? AUTO_LOGIN_USER;
      return json(res, 200, { revoked: revokeGrants(sub) });
    }
    return json(res, 404, { error: 'not_found' });
  } catch (err) {
    process.stderr.write(`error: ${err.stack}\n`);
    if (!res.headersSent) json(res, 500, { error: 'server_error', error_description: String(err.message) });
    else res.end();
    return undefined;
  }
});

server.listen(PORT, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}/oidc`;
  provider = makeProvider(issuer);
  handle = provider.callback();
  process.stdout.write(`READY ${issuer}\n`);
});

const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
