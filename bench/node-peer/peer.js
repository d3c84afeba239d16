// The Node auth proxy authgate is benchmarked against (issue 8): what a team would write
// in an afternoon with the usual packages. express + express-openid-connect (Auth0's
// middleware: authorization code flow with PKCE, the session — tokens included — in an
// encrypted cookie) + http-proxy-middleware injecting `Authorization: Bearer <access token>`.
//
//   ISSUER=http://127.0.0.1:P/oidc UPSTREAM=http://127.0.0.1:U PORT=18083 \
//   CLIENT_ID=... CLIENT_SECRET=... RESOURCE=https://api.example.test node peer.js
//
// Prints `READY http://127.0.0.1:<port>` once listening. Login callback: /callback.
'use strict';

const http = require('node:http');
const crypto = require('node:crypto');
const express = require('express');
const { auth } = require('express-openid-connect');
const { createProxyMiddleware } = require('http-proxy-middleware');

const env = (name, dflt) => process.env[name] || dflt;
const PORT = Number(env('PORT', '18083'));
const BASE_URL = `http://127.0.0.1:${PORT}`;
const RESOURCE = env('RESOURCE', '');

const app = express();
app.disable('x-powered-by');
app.use(auth({
  issuerBaseURL: env('ISSUER', 'http://127.0.0.1:3000/oidc'),
  baseURL: BASE_URL,
  clientID: env('CLIENT_ID', 'authgate'),
  clientSecret: env('CLIENT_SECRET', 'authgate-secret'),
  clientAuthMethod: 'client_secret_basic',
  secret: env('SESSION_SECRET', crypto.randomBytes(32).toString('hex')),
  authRequired: true,
  idpLogout: false,
  session: { cookie: { secure: false } },
  authorizationParams: {
    response_type: 'code',
    scope: 'openid profile email offline_access',
    prompt: 'consent',
    ...(RESOURCE ? { resource: RESOURCE } : {}),
  },
  // Like authgate's `resource`: ask the token endpoint for the API's JWT access token.
  ...(RESOURCE ? { tokenEndpointParams: { resource: RESOURCE } } : {}),
}));

// Refresh ahead of expiry, as an auth proxy must (never taken during the benchmark: the
// provider's access tokens live an hour there).
app.use(async (req, res, next) => {
  try {
    const token = req.oidc.accessToken;
    if (token && token.expires_in < 60) {
      await token.refresh(RESOURCE ? { tokenEndpointParams: { resource: RESOURCE } } : undefined);
    }
    next();
  } catch (err) {
    next(err);
  }
});

app.use(createProxyMiddleware({
  target: env('UPSTREAM', 'http://127.0.0.1:8080'),
  agent: new http.Agent({ keepAlive: true, maxSockets: 64 }),
  on: {
    proxyReq: (proxyReq, req) => {
      proxyReq.setHeader('authorization', `Bearer ${req.oidc.accessToken.access_token}`);
      proxyReq.removeHeader('cookie'); // the session cookie never goes upstream
    },
  },
}));

const server = app.listen(PORT, '127.0.0.1', () => {
  process.stdout.write(`READY ${BASE_URL}\n`);
});
server.keepAliveTimeout = 65_000;
