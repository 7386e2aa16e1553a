// A real OpenID Connect provider (panva/oidc-provider) for the test suite, on loopback only.
// Usage: node provider.mjs config.json — the JSON is written by tests/idp/oidc.py.
// Prints "READY <issuer>" on stdout once listening; errors go to stderr.
import { readFileSync } from 'node:fs';

import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const { accounts, resources } = config;
const resourceIds = Object.keys(resources);

// Accounts come from the config; unknown ids are refused at login (see interactionFinished below).
async function findAccount(ctx, id) {
  const account = accounts[id];
  if (!account) return undefined;
  return {
    accountId: id,
    async claims() {
      return { sub: id, ...account };
    },
  };
}

// Auto-consent: every requested OIDC scope, claim and resource scope is granted on the spot, so
// normally only the devInteractions login form remains. prompt=consent (which OIDC requires for
// offline_access) still shows the consent form; it then has nothing to add and is just submitted.
async function loadExistingGrant(ctx) {
  const { oidc } = ctx;
  const grantId = oidc.result?.consent?.grantId || oidc.session.grantIdFor(oidc.client.clientId);
  let grant = grantId ? await oidc.provider.Grant.find(grantId) : undefined;
  grant ??= new oidc.provider.Grant({ clientId: oidc.client.clientId, accountId: oidc.session.accountId });
  grant.addOIDCScope([...oidc.requestParamOIDCScopes].join(' '));
  grant.addOIDCClaims([...oidc.requestParamClaims]);
  for (const [indicator, server] of Object.entries(oidc.resourceServers)) {
    const scopes = [...oidc.requestParamScopes].filter((scope) => server.scopes.has(scope));
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  await grant.save();
  return grant;
}

const ttl = (seconds) => () => seconds;
// A resource's own accessTokenTTL wins over the global one (as in oidc-provider's defaults).
const accessTokenTTL = (ctx, token) => token.resourceServer?.accessTokenTTL ?? config.access_token_ttl;

const provider = new Provider(config.issuer, {
  clients: config.clients,
  jwks: config.jwks,
  findAccount,
  loadExistingGrant,
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name'],
    groups: ['groups'],
  },
  scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
  responseTypes: ['code'],
  // Code flow access tokens go to a resource server, so userinfo is no use to the client:
  // put the scope claims (email, name, groups) in the ID token instead.
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: true },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      // No resource asked for: the first configured one (oneOf: several granted, take the first).
      async defaultResource(ctx, client, oneOf) {
        if (oneOf) return Array.isArray(oneOf) ? oneOf[0] : oneOf;
        return resourceIds[0];
      },
      async useGrantedResource() {
        return true;
      },
      async getResourceServerInfo(ctx, indicator) {
        const server = resources[indicator];
        if (!server) throw new Provider.errors.InvalidTarget(`unknown resource ${indicator}`);
        return {
          scope: server.scope,
          audience: server.audience,
          accessTokenTTL: server.accessTokenTTL ?? config.access_token_ttl,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: server.alg ?? 'ES256' } },
        };
      },
    },
  },
  // JWT access tokens issued for an account carry its email and groups.
  async extraTokenClaims(ctx, token) {
    const account = token.accountId && accounts[token.accountId];
    if (!account) return undefined;
    return { email: account.email, groups: account.groups ?? [] };
  },
  rotateRefreshToken: true,
  cookies: { keys: config.cookie_keys },
  ttl: {
    AccessToken: accessTokenTTL,
    ClientCredentials: accessTokenTTL,
    IdToken: ttl(config.access_token_ttl),
    RefreshToken: ttl(config.refresh_token_ttl),
    Session: ttl(config.refresh_token_ttl),
    Grant: ttl(config.refresh_token_ttl),
    Interaction: ttl(600),
    AuthorizationCode: ttl(60),
  },
});
provider.proxy = false;

// devInteractions logs in whatever id is typed: refuse unknown accounts with access_denied,
// which reaches the client's redirect_uri like any other authorization error.
const interactionFinished = provider.interactionFinished.bind(provider);
provider.interactionFinished = (req, res, result, options) => {
  if (result?.login && !(result.login.accountId in accounts)) {
    return interactionFinished(req, res, {
      error: 'access_denied',
      error_description: 'unknown account',
    }, { mergeWithLastSubmission: false });
  }
  return interactionFinished(req, res, result, options);
};

// OAuth errors are expected in tests (one line each); anything else gets its stack trace.
const logError = (label) => (ctx, err) => {
  const detail = err?.error
    ? `${err.error}: ${err.error_description ?? err.message}${err.error_detail ? ` (${err.error_detail})` : ''}`
    : err?.stack ?? err;
  process.stderr.write(`${label} ${detail}\n`);
};
for (const event of ['server_error', 'grant.error', 'authorization.error', 'introspection.error',
  'revocation.error', 'userinfo.error', 'jwks.error', 'discovery.error']) {
  provider.on(event, logError(event));
}

// oidc-provider validates static clients lazily; do it now so a bad client fails start().
for (const client of config.clients) await provider.Client.find(client.client_id);

const server = provider.listen(config.port, '127.0.0.1', () => {
  process.stdout.write(`READY ${provider.issuer}\n`);
});
server.on('error', (err) => {
  process.stderr.write(`listen: ${err.stack}\n`);
  process.exit(1);
});
// The test process holds our stdin open: when it goes away, however it dies, so do we.
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
  });
}
