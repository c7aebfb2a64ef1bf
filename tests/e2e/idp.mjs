// The development OpenID Provider of the end-to-end suite and of `make demo`: the certified
// `oidc-provider` package with its built-in (development) login and consent pages.
//
//   node tests/e2e/idp.mjs --port 3000 --client-secret S --app-origin http://app1.example.test:8080 \
//        [--app-origin http://admin.example.test:8080 ...]
//   node tests/e2e/idp.mjs --settings deploy/compose/idp.json     (docker-compose.yml, and the suite
//        with that file's names mapped to loopback; client secrets from DEMO_CLIENT_SECRET and
//        DEMO_API_CLIENT_SECRET)
//
// prints one JSON line {"ready":true,"issuer":…,"kid":…} on stdout once it listens, and stops on
// SIGTERM/SIGINT. A line `arm exit|freeze|dropreused` on stdin is a test hook (see startIdp).
// It logs one JSON line on stdout per refresh grant ({"refresh":{…}}), per back-channel
// logout delivery ({"backchannel":{…}}) and per answer to its own requests ({"outgoing":{…}}),
// for the suite to count.
//
// The app hosts (*.example.test) resolve to 127.0.0.1 for the browser only (Chromium's
// --host-resolver-rules); the IdP's own outgoing requests (back-channel logout) to an app
// origin's host are sent to 127.0.0.1 and that origin's port (Envoy) with the origin's Host, or
// to the settings' `gateway` (host:port; `envoy:8080` in docker-compose.yml).
// Every start generates a fresh RSA signing key with a fresh `kid`, so a restart is a key
// rotation (the in-memory adapter also forgets sessions and grants, as a real restart
// of a development IdP would).
//
// Clients:
//   - `gateway` (oidc-authz): confidential (client_secret_basic), authorization code with PKCE
//     required, refresh tokens, RP-initiated logout back to the app origin, and back-channel
//     logout to the first app origin's /oauth2/backchannel_logout (with `sid`);
//   - `gateway-refresh` (oidc-authz, the rule of the refresh scenarios): as `gateway` (same
//     secret), but its ID and access tokens live REFRESH_CLIENT_TOKEN_TTL seconds and its refresh
//     token is rotated on every use (a reused one is refused and ends the grant);
//   - `api-client`: client_credentials, gets JWT access tokens for the resource
//     https://api.example.test (audience of the same name), as a machine-to-machine API caller.
//
// Users: the development login page accepts any login and any password; the login becomes
// `sub` and `preferred_username`, `<login>@example.test` the email, and the groups are
// ["users"] (plus "admins" for the login `admin`, and 120 more for logins starting with
// `many-groups`).

import { createPrivateKey, generateKeyPairSync, randomUUID } from 'node:crypto';
import http from 'node:http';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';

export const API_RESOURCE = 'https://api.example.test';

/** The client of the refresh scenarios, and the lifetime of its ID and access tokens (s). */
export const REFRESH_CLIENT_ID = 'gateway-refresh';
export const REFRESH_CLIENT_TOKEN_TTL = 10;

/** A fresh RS256 signing key as a private JWK, with a fresh kid. */
export function freshSigningKey() {
  // Generated as PEM and imported: exporting the KeyObject of a freshly generated pair straight
  // to JWK deadlocks in a few % of starts on some Node 20 builds.
  const { privateKey: pem } = generateKeyPairSync('rsa', {
    modulusLength: 2048,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
  const jwk = createPrivateKey(pem).export({ format: 'jwk' });
  return { ...jwk, kid: `e2e-${randomUUID()}`, alg: 'RS256', use: 'sig' };
}

/**
 * oidc-provider's `fetch` (its outgoing requests: here the back-channel logout deliveries).
 * A request to the host of an app origin goes to 127.0.0.1 on the URL's port, with the URL's
 * Host, over plain node:http (the default fetch would resolve the name, and oidc-provider's
 * SSRF guard refuses loopback addresses). Anything else is refused: nothing leaves loopback.
 */
export function loopbackFetch(appHosts, gateway) {
  const [gatewayHost, gatewayPort] = gateway ? [gateway.slice(0, gateway.lastIndexOf(':')), Number(gateway.slice(gateway.lastIndexOf(':') + 1))] : [];
  const hosts = new Set(appHosts.map((h) => h.toLowerCase()));
  return (input, options = {}) => {
    const url = new URL(String(input));
    if (url.protocol !== 'http:' || !hosts.has(url.hostname.toLowerCase())) {
      return Promise.reject(new Error(`idp.mjs: no outgoing request to ${url.origin} (not an app origin)`));
    }
    const headers = Object.fromEntries(new Headers(options.headers ?? {}));
    const body = options.body === undefined ? undefined : Buffer.from(String(options.body));
    if (body) headers['content-length'] = String(body.length);
    headers.host = url.host;
    return new Promise((resolve, reject) => {
      const req = http.request(
        {
          host: gatewayHost ?? '127.0.0.1',
          port: gatewayPort ?? Number(url.port || 80),
          method: options.method ?? 'GET',
          path: `${url.pathname}${url.search}`,
          headers,
          signal: options.signal,
          agent: false,
        },
        (res) => {
          const chunks = [];
          res.on('data', (c) => chunks.push(c));
          res.on('error', reject);
          res.on('end', () => {
            const h = new Headers();
            for (const [k, v] of Object.entries(res.headers)) for (const one of [].concat(v)) h.append(k, one);
            // One line per answer, for the suite: {"outgoing":{url,status,cache_control}}.
            console.log(JSON.stringify({ outgoing: { url: url.href, status: res.statusCode, cache_control: res.headers['cache-control'] ?? null } }));
            const empty = [204, 304].includes(res.statusCode);
            resolve(new Response(empty ? null : Buffer.concat(chunks), { status: res.statusCode, headers: h }));
          });
        },
      );
      req.on('error', reject);
      req.end(body);
    });
  };
}

/**
 * The claims of a development user. A login that starts with `many-groups` belongs to 120
 * long-named groups: its tokens, and so its gateway session, are far above one cookie's 4 KB.
 */
export function userClaims(login) {
  let groups = login === 'admin' ? ['users', 'admins'] : ['users'];
  if (login.startsWith('many-groups')) {
    groups = [...groups, ...Array.from({ length: 120 }, (_, i) => `team-${String(i).padStart(3, '0')}-with-a-rather-long-group-name`)];
  }
  return {
    sub: login,
    email: `${login}@example.test`,
    email_verified: true,
    preferred_username: login,
    name: login.charAt(0).toUpperCase() + login.slice(1),
    groups,
  };
}

/**
 * Builds the provider. `appOrigins`: the origins (scheme://host:port) whose
 * /oauth2/callback is a registered redirect URI; the first is also the post-logout target.
 */
export function createProvider({ issuer, clientSecret, appOrigins, apiClientSecret, key, gateway }) {
  const signingKey = key ?? freshSigningKey();
  const shortLived = (client) => client?.clientId === REFRESH_CLIENT_ID;
  const configuration = {
    clients: [
      {
        client_id: 'gateway',
        client_secret: clientSecret,
        client_name: 'oidc-authz e2e gateway',
        token_endpoint_auth_method: 'client_secret_basic',
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        redirect_uris: appOrigins.map((o) => `${o}/oauth2/callback`),
        post_logout_redirect_uris: appOrigins.map((o) => `${o}/`),
        // OIDC Back-Channel Logout: the IdP POSTs a logout token (with the session's sid) to
        // oidc-authz, through Envoy, when the user signs out at the IdP.
        backchannel_logout_uri: `${appOrigins[0]}/oauth2/backchannel_logout`,
        backchannel_logout_session_required: true,
      },
      {
        client_id: REFRESH_CLIENT_ID,
        client_secret: clientSecret,
        client_name: 'oidc-authz e2e gateway (short-lived tokens)',
        token_endpoint_auth_method: 'client_secret_basic',
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        redirect_uris: appOrigins.map((o) => `${o}/oauth2/callback`),
        post_logout_redirect_uris: appOrigins.map((o) => `${o}/`),
      },
      {
        client_id: 'api-client',
        client_secret: apiClientSecret ?? `${clientSecret}-api`,
        token_endpoint_auth_method: 'client_secret_basic',
        grant_types: ['client_credentials'],
        response_types: [],
        redirect_uris: [],
      },
    ],
    jwks: { keys: [signingKey] },
    scopes: ['openid', 'offline_access', 'email', 'profile', 'groups', 'api:read'],
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['preferred_username', 'name'],
      groups: ['groups'],
    },
    // The gateway reads the identity from the ID token: put the scope's claims there too,
    // not only at the userinfo endpoint.
    conformIdTokenClaims: false,
    pkce: { required: () => true },
    // Refresh tokens for the gateway whenever it may use them (not only with offline_access).
    issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
    // The short-lived client's refresh token is rotated on every use, as many IdPs do: the
    // gateway must keep the new one (the old one is refused, and its reuse revokes the grant).
    // Others: oidc-provider's default for a confidential client (after 70 % of its lifetime).
    rotateRefreshToken: (ctx) => {
      const { RefreshToken: rt, Client: client } = ctx.oidc.entities;
      return shortLived(client) || rt.ttlPercentagePassed() >= 70;
    },
    fetch: loopbackFetch(appOrigins.map((o) => new URL(o).hostname), gateway),
    async findAccount(_ctx, sub) {
      return {
        accountId: sub,
        async claims() {
          return userClaims(sub);
        },
      };
    },
    features: {
      devInteractions: { enabled: true },
      rpInitiatedLogout: { enabled: true },
      backchannelLogout: { enabled: true },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async (_ctx, client, oneOf) =>
          oneOf ?? (client.clientId === 'api-client' ? API_RESOURCE : undefined),
        useGrantedResource: async () => false,
        getResourceServerInfo: async (_ctx, resource) => {
          if (resource !== API_RESOURCE) throw new Provider.errors.InvalidTarget();
          return {
            scope: 'api:read',
            audience: API_RESOURCE,
            accessTokenFormat: 'jwt',
            accessTokenTTL: 600,
            jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
    },
    ttl: {
      // Short enough for tests, long enough for a demo session.
      IdToken: (_ctx, _token, client) => (shortLived(client) ? REFRESH_CLIENT_TOKEN_TTL : 3600),
      AccessToken: (_ctx, _token, client) => (shortLived(client) ? REFRESH_CLIENT_TOKEN_TTL : 3600),
      Session: 3600,
      Interaction: 600,
      Grant: 3600,
      RefreshToken: 24 * 3600,
    },
    cookies: { keys: [randomUUID()] },
  };
  const provider = new Provider(issuer, configuration);
  // oidc-authz and the browser reach the IdP directly over plain http on loopback.
  provider.proxy = false;
  return { provider, kid: signingKey.kid };
}

/**
 * Starts the IdP; resolves to { issuer, kid, close(), arm(action) }. `arm(action)` is a test
 * hook. Right after the IdP has sent its next redirect to an /oauth2/callback (the end of a
 * sign-in at the IdP), that is just before the gateway exchanges the code,
 *   - `exit`: the process exits;
 *   - `freeze`: it stops itself (SIGSTOP): connections are accepted but never answered, until
 *     SIGCONT.
 * And for the next token request:
 *   - `dropreused`: if it arrives on a kept-alive connection (one that served a request before),
 *     the connection is closed without an answer, as when the server's keep-alive timer fires
 *     just as the request arrives (every HTTP server closes idle connections: Node.js after 5 s).
 *     On a new connection it is answered normally.
 */
export async function startIdp({ host = '127.0.0.1', port, issuer = `http://${host}:${port}`, clientSecret, appOrigins, apiClientSecret, gateway }) {
  const { provider, kid } = createProvider({ issuer, clientSecret, appOrigins, apiClientSecret, gateway });
  let armed = null;
  const served = new WeakMap(); // socket -> requests served on it (keep-alive reuse)
  // One line per refresh grant and per back-channel logout delivery, for the suite to count.
  const log = (o) => console.log(JSON.stringify(o));
  const isRefresh = (ctx) => ctx.oidc?.params?.grant_type === 'refresh_token';
  const refreshed = (ctx) => ({ client: ctx.oidc.client?.clientId, sub: ctx.oidc.entities?.RefreshToken?.accountId });
  provider.on('grant.success', (ctx) => {
    if (isRefresh(ctx)) log({ refresh: { ...refreshed(ctx), ok: true } });
  });
  provider.on('grant.error', (ctx, err) => {
    if (isRefresh(ctx)) log({ refresh: { ...refreshed(ctx), ok: false, error: err.error ?? err.message } });
  });
  provider.on('backchannel.success', (_ctx, client, accountId, sid) => {
    log({ backchannel: { client: client.clientId, sub: accountId, sid, ok: true } });
  });
  provider.on('backchannel.error', (_ctx, err, client, accountId, sid) => {
    log({ backchannel: { client: client.clientId, sub: accountId, sid, ok: false, error: err.message } });
  });
  provider.use(async (ctx, next) => {
    const socket = ctx.req.socket;
    const before = served.get(socket) ?? 0;
    served.set(socket, before + 1);
    if (armed === 'dropreused' && ctx.method === 'POST' && ctx.path === '/token') {
      armed = null;
      if (before > 0) {
        // The keep-alive timer fired as the request arrived: the connection closes unanswered.
        console.log(JSON.stringify({ dropped: 'token request on a reused connection' }));
        socket.destroy();
        return;
      }
      console.log(JSON.stringify({ fresh: 'token request on a new connection' }));
    }
    await next();
    const location = ctx.response.get('location');
    if ((armed === 'exit' || armed === 'freeze') && ctx.status >= 300 && ctx.status < 400 && location.includes('/oauth2/callback?')) {
      const action = armed;
      armed = null;
      ctx.res.once('finish', () => {
        if (action === 'exit') {
          console.log(JSON.stringify({ exiting: true }));
          server.close();
          server.closeAllConnections?.();
          setImmediate(() => process.exit(0));
        } else {
          // Connections, idle or not, stay open: whatever the gateway sends is never answered.
          console.log(JSON.stringify({ frozen: true }));
          process.kill(process.pid, 'SIGSTOP');
        }
      });
    }
  });
  const server = await new Promise((resolve, reject) => {
    const s = provider.listen(port, host, () => resolve(s));
    s.on('error', reject);
  });
  return {
    issuer,
    kid,
    arm: (action) => {
      if (!['exit', 'freeze', 'dropreused'].includes(action)) throw new Error(`unknown action ${action}`);
      armed = action;
    },
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections?.();
      }),
  };
}

// Run as a program.
if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({
    options: {
      settings: { type: 'string' },
      host: { type: 'string' },
      port: { type: 'string' },
      'client-secret': { type: 'string' },
      'api-client-secret': { type: 'string' },
      'app-origin': { type: 'string', multiple: true },
    },
  });
  // A settings file (deploy/compose/idp.json); command-line options take precedence.
  const settings = values.settings ? JSON.parse((await import('node:fs')).readFileSync(values.settings, 'utf8')) : {};
  const opts = {
    host: values.host ?? settings.listen?.host ?? '127.0.0.1',
    port: Number(values.port ?? settings.listen?.port),
    issuer: settings.issuer,
    clientSecret: values['client-secret'] ?? process.env.DEMO_CLIENT_SECRET,
    apiClientSecret: values['api-client-secret'] ?? process.env.DEMO_API_CLIENT_SECRET,
    appOrigins: values['app-origin'] ?? settings.app_origins,
    gateway: settings.gateway,
  };
  if (!opts.port || !opts.clientSecret || !opts.appOrigins?.length) {
    console.error('usage: idp.mjs --port N --client-secret S --app-origin http://app.example.test:8080 [--app-origin …]');
    console.error('   or: idp.mjs --settings FILE   (client secret in DEMO_CLIENT_SECRET)');
    process.exit(2);
  }
  const idp = await startIdp(opts);
  console.log(JSON.stringify({ ready: true, issuer: idp.issuer, kid: idp.kid }));
  // Test hook (see startIdp): a line `arm exit`, `arm freeze` or `arm dropreused` on stdin.
  process.stdin.setEncoding('utf8');
  let pending = '';
  process.stdin.on('data', (chunk) => {
    pending += chunk;
    let nl;
    while ((nl = pending.indexOf('\n')) >= 0) {
      const line = pending.slice(0, nl).trim();
      pending = pending.slice(nl + 1);
      const m = /^arm (exit|freeze|dropreused)$/.exec(line);
      if (m) {
        idp.arm(m[1]);
        console.log(JSON.stringify({ armed: m[1] }));
      }
    }
  });
  process.stdin.on('error', () => {});
  const stop = async () => {
    await idp.close();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}
