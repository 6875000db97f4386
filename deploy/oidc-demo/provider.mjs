// A real OpenID Connect provider for Tessera's tests and `make run AUTH=1`:
// node-oidc-provider (OpenID Certified), configured from a JSON file.
//
//   node provider.mjs CONFIG.json
//
// CONFIG: {
//   "port": 4011, "issuer": "http://127.0.0.1:4011",
//   "jwks": {"keys": [private JWKs]},              signing keys (rotate: restart with others)
//   "resource": "urn:tessera", "audience": "tessera",  the API tokens are issued for (RFC 8707)
//   "clients": [{client_id, client_secret?, grant_types, redirect_uris?, response_types?,
//                token_endpoint_auth_method?, scope?,
//                "extra": {claims added to its client-credentials tokens}, "ttl": seconds,
//                "alg": "RS256" | "PS256" | "ES256"}],
//   "accounts": {"alice": {"password": "...", "claims": {claims added to her tokens}}}
// }
//
// Access tokens are JWTs (RFC 9068) for `resource`, audience `audience`; a token for any
// other resource gets audience "other" (to test refusal). Logins go through the
// provider's own login page (devInteractions): a known account and its password.
import { readFileSync } from 'node:fs';
import Provider, { errors } from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const TESSERA_SCOPES = 'tessera:read tessera:write tessera:delete tessera:admin';
const clients = Object.fromEntries(config.clients.map((c) => [c.client_id, c]));
const accounts = config.accounts || {};

const provider = new Provider(config.issuer, {
  jwks: config.jwks,
  clients: config.clients.map(({ extra, ttl, alg, ...metadata }) => metadata),
  cookies: { keys: ['tessera-test-cookie-key'] },
  scopes: ['openid', 'profile', 'offline_access', ...TESSERA_SCOPES.split(' ')],
  clientBasedCORS: () => true,
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: true },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => config.resource,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resource, client) => {
        const settings = clients[client.clientId] || {};
        if (resource !== config.resource && resource !== 'urn:other') {
          throw new errors.InvalidTarget();
        }
        return {
          scope: TESSERA_SCOPES,
          audience: resource === config.resource ? config.audience : 'other',
          accessTokenFormat: 'jwt',
          accessTokenTTL: settings.ttl || 300,
          jwt: { sign: { alg: settings.alg || 'RS256' } },
        };
      },
    },
  },
  async extraTokenClaims(ctx, token) {
    if (token.accountId) {
      return (accounts[token.accountId] || {}).claims || {};
    }
    return (clients[token.clientId] || {}).extra || {};
  },
  async findAccount(ctx, id) {
    if (!(id in accounts)) return undefined;
    return { accountId: id, claims: async () => ({ sub: id, name: id }) };
  },
});
provider.proxy = false;
provider.on('server_error', (ctx, err) => console.error('server_error', err));
provider.on('grant.error', (ctx, err) => console.error('grant.error', err.message, err.error_description || ''));

// devInteractions accepts any password: check the configured one before it logs in.
provider.use(async (ctx, next) => {
  if (ctx.method === 'POST' && /^\/interaction\/[^/]+$/.test(ctx.path)) {
    const body = await new Promise((resolve) => {
      let data = '';
      ctx.req.on('data', (chunk) => { data += chunk; });
      ctx.req.on('end', () => resolve(data));
    });
    const form = new URLSearchParams(body);
    if (form.get('prompt') === 'login') {
      const account = accounts[form.get('login')];
      if (!account || account.password !== form.get('password')) {
        ctx.status = 401;
        ctx.type = 'text/html';
        ctx.body = '<!DOCTYPE html><p>Unknown user or wrong password.</p><a href="javascript:history.back()">Back</a>';
        return;
      }
    }
    // devInteractions' own parser takes an already-read body from req.body
    ctx.req.body = body;
  }
  await next();
});

const server = provider.listen(config.port, '127.0.0.1', () => {
  console.log(`oidc-provider ${config.issuer} listening`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
