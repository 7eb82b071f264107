// A real OpenID Provider (node oidc-provider, OpenID-certified) for tenantry's sign-in tests.
//   node server.mjs PORT REDIRECT_URI
// Prints "ready <issuer>" when listening. Interactions complete automatically: the account is the
// `login_hint` of the authorization request (default "alice"), consent is granted. A test-only
// endpoint, POST /__test/next-id-token, overrides claims of the next id_token (to test that the
// relying party refuses a wrong `aud` or `nonce`); it re-signs with the provider's own key.
import Provider from 'oidc-provider';
import * as jose from 'jose';

const port = Number(process.argv[2]);
const redirectUri = process.argv[3];
const issuer = `http://127.0.0.1:${port}`;

const { privateKey } = await jose.generateKeyPair('RS256', { extractable: true });
const jwk = { ...(await jose.exportJWK(privateKey)), kid: 'op-key-1', alg: 'RS256', use: 'sig' };

const accounts = {
  alice: { email: 'alice@example.test', email_verified: true, name: 'Alice', groups: ['acme-admins'] },
  bob: { email: 'bob@example.test', email_verified: true, name: 'Bob', groups: [] },
  mallory: { email: 'alice@example.test', email_verified: false, name: 'Mallory', groups: [] },
};

const provider = new Provider(issuer, {
  clients: [
    { client_id: 'tenantry', client_secret: 'tenantry-test-secret', redirect_uris: [redirectUri],
      grant_types: ['authorization_code'], response_types: ['code'] },
    { client_id: 'other-app', client_secret: 'other-test-secret', redirect_uris: [redirectUri],
      grant_types: ['authorization_code'], response_types: ['code'] },
  ],
  jwks: { keys: [jwk] },
  pkce: { required: () => true },
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'], groups: ['groups'] },
  scopes: ['openid', 'email', 'profile', 'groups', 'offline_access'],
  features: { devInteractions: { enabled: false } },
  conformIdTokenClaims: false,
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(ctx, id) {
    const account = accounts[id];
    if (!account) return undefined;
    return { accountId: id, claims: () => ({ sub: id, ...account }) };
  },
});
provider.proxy = false;

let nextIdToken = null;
provider.use(async (ctx, next) => {
  if (ctx.path === '/__test/next-id-token' && ctx.method === 'POST') {
    const chunks = [];
    for await (const chunk of ctx.req) chunks.push(chunk);
    nextIdToken = JSON.parse(Buffer.concat(chunks).toString() || 'null');
    ctx.status = 204;
    return;
  }
  if (ctx.path.startsWith('/interaction/')) {
    const details = await provider.interactionDetails(ctx.req, ctx.res);
    const { prompt, params, session } = details;
    let result;
    if (prompt.name === 'login') {
      result = { login: { accountId: params.login_hint || 'alice' } };
    } else {
      const grant = new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
      grant.addOIDCScope(params.scope);
      result = { consent: { grantId: await grant.save() } };
    }
    await provider.interactionFinished(ctx.req, ctx.res, result, { mergeWithLastSubmission: true });
    ctx.respond = false;
    return;
  }
  await next();
  if (ctx.path === '/token' && nextIdToken && ctx.body && ctx.body.id_token) {
    const claims = { ...jose.decodeJwt(ctx.body.id_token), ...nextIdToken };
    nextIdToken = null;
    ctx.body.id_token = await new jose.SignJWT(claims)
      .setProtectedHeader({ alg: 'RS256', kid: jwk.kid, typ: 'JWT' })
      .sign(privateKey);
  }
});

provider.listen(port, '127.0.0.1', () => console.log(`ready ${issuer}`));
