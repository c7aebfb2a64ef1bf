// End-to-end suite of oidc-authz: real Envoy (the committed envoy/envoy.yaml), the certified
// `oidc-provider` as the IdP, the release binary of oidc-authz, a sample backend and headless
// Chromium driven by playwright-core. Run it with tests/e2e/run.sh (which installs what it needs).
// Envoy, oidc-authz and the IdP run the files docker-compose.yml mounts (envoy/envoy.yaml,
// deploy/compose/), with the compose service names mapped to loopback (stack.mjs).
//
// Each scenario asserts what a user (or an API client) would see: page text, URL, status,
// headers that reached the backend. A screenshot of each browser step goes to target/e2e/.
// The last line printed is `N passed, M failed`; the exit code is non-zero when M > 0.
//
// Environment: ENVOY_BIN (default `envoy` on PATH), OIDC_AUTHZ_BIN (default
// target/release/oidc-authz), CHROMIUM (default /usr/bin/chromium), E2E_ONLY (a substring:
// run only the scenarios whose name contains it, plus what they need).

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http2 from 'node:http2';
import path from 'node:path';

import { chromium } from 'playwright-core';

import { E2E_DIR, HOSTS, OUT_DIR, Stack, envoyRequest, freePort, waitFor } from './stack.mjs';
import { runReplicaScenarios } from './replicas.mjs';
import { runTracingScenarios } from './tracing.mjs';

// The API audience of the IdP's machine client (idp.mjs; importing it would load oidc-provider).
const API_RESOURCE = 'https://api.example.test';

const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const SCENARIO_TIMEOUT_MS = 90_000;
const STEP_TIMEOUT_MS = 15_000;

// ------------------------------------------------------------------------------------------
// Small helpers
// ------------------------------------------------------------------------------------------

const stack = new Stack();
const app = (host, p = '/') => `${stack.origin(host)}${p}`;

let shotCounter = 0;
let currentScenario = 'setup';
const slug = (s) => s.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '').slice(0, 60);

/** Saves a screenshot of `page` as target/e2e/NN-<scenario>-<label>.png. */
async function shot(page, label) {
  shotCounter += 1;
  const short = slug(currentScenario.split(':')[0]).slice(0, 32);
  const file = path.join(OUT_DIR, `${String(shotCounter).padStart(2, '0')}-${short}-${slug(label)}.png`);
  try {
    await page.screenshot({ path: file, fullPage: true, timeout: 5000 });
  } catch (e) {
    console.log(`      (screenshot ${path.basename(file)} failed: ${e.message.split('\n')[0]})`);
  }
  return file;
}

/** One raw HTTP/1.1 request to the suite's Envoy (see `envoyRequest` in stack.mjs). */
function request(options) {
  return envoyRequest(stack.ports.envoy, options);
}

/** One HTTP/2 (h2c, prior knowledge) request to Envoy. `headers` values may be arrays: each
 * element is sent as its own header field, as browsers send HTTP/2 cookie "crumbs". */
function h2request({ host, path: p = '/', headers = {}, timeoutMs = 10_000 }) {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`http://127.0.0.1:${stack.ports.envoy}`);
    const timer = setTimeout(() => {
      session.destroy();
      reject(new Error(`h2 ${host}${p}: no answer within ${timeoutMs} ms`));
    }, timeoutMs);
    session.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    const req = session.request({ ':method': 'GET', ':path': p, ':authority': `${host}:${stack.ports.envoy}`, ':scheme': 'http', ...headers });
    let responseHeaders;
    let data = '';
    req.setEncoding('utf8');
    req.on('response', (h) => (responseHeaders = h));
    req.on('data', (c) => (data += c));
    req.on('end', () => {
      clearTimeout(timer);
      session.close();
      let json;
      try {
        json = JSON.parse(data);
      } catch {
        json = undefined;
      }
      resolve({ status: responseHeaders?.[':status'], headers: responseHeaders, body: data, json });
    });
    req.on('error', (e) => {
      clearTimeout(timer);
      session.destroy();
      reject(e);
    });
    req.end();
  });
}

const BROWSER_ACCEPT = 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8';

/** A fresh browser profile (cookie jar). Requests leaving the machine are aborted. */
async function newContext(browser) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 800 } });
  context.setDefaultTimeout(STEP_TIMEOUT_MS);
  context.setDefaultNavigationTimeout(STEP_TIMEOUT_MS);
  // The IdP's pages @import a web font from the internet; nothing may leave loopback.
  await context.route(
    (url) => !(url.hostname === '127.0.0.1' || url.hostname.endsWith('.example.test')),
    (route) => route.abort('blockedbyclient'),
  );
  return context;
}

/** Records every request and response of a context, to assert which hosts a flow visited. */
function recorder(context) {
  const requests = [];
  const responses = [];
  const onReq = (r) => requests.push(r.url());
  const onRes = (r) => responses.push({ url: r.url(), status: r.status(), response: r });
  context.on('request', onReq);
  context.on('response', onRes);
  return {
    requests,
    responses,
    toIdp: () => requests.filter((u) => u.startsWith(stack.issuer)),
    stop: () => {
      context.off('request', onReq);
      context.off('response', onRes);
    },
  };
}

const isIdp = (u) => String(u).startsWith(`${stack.issuer}/`);
const onIdpLoginPage = async (page) =>
  isIdp(page.url()) && new URL(page.url()).pathname.startsWith('/interaction/') && (await page.locator('input[name=login]').count()) > 0;

/**
 * The user is on the IdP's login page: signs in as `user` (the development IdP accepts any
 * password) and consents when asked. Resolves once the browser has left the IdP (`issuer`).
 */
async function signInAtIdp(page, user, { screenshots = true, issuer = stack.issuer } = {}) {
  const isIdp = (u) => String(u).startsWith(`${issuer}/`);
  await page.waitForURL((u) => isIdp(u) && u.pathname.startsWith('/interaction/'));
  await page.locator('input[name=login]').waitFor();
  assert.equal(await page.locator('h1').first().textContent(), 'Sign-in', 'the IdP shows its sign-in page');
  await page.fill('input[name=login]', user);
  await page.fill('input[name=password]', `${user}-password`);
  if (screenshots) await shot(page, `idp-login-${user}`);
  await page.click('button[type=submit]');
  // Either the consent page (first login of this user at the IdP) or straight back to the app.
  await page.waitForURL((u) => !isIdp(u) || (u.pathname.startsWith('/interaction/') && !u.pathname.endsWith('/login')), {
    waitUntil: 'domcontentloaded',
  });
  for (let i = 0; i < 2 && isIdp(page.url()); i += 1) {
    const consent = page.locator('button:has-text("Continue")');
    await consent.waitFor();
    if (screenshots) await shot(page, `idp-consent-${user}`);
    await consent.click();
    await page.waitForURL((u) => !isIdp(u) || !u.pathname.startsWith('/interaction/'), { waitUntil: 'domcontentloaded' });
  }
  await page.waitForURL((u) => !isIdp(u), { waitUntil: 'domcontentloaded' });
}

/** The backend page's identity, as the user sees it. */
async function shownUser(page) {
  const user = page.locator('#user');
  if ((await user.count()) === 0) return null;
  return (await user.textContent()).trim();
}

/** The request headers the backend received for `fetch(p)` from the page (same origin). */
async function backendHeadersFromPage(page, p = '/headers', init = {}) {
  return page.evaluate(
    async ([url, init]) => {
      const r = await fetch(url, init);
      return { status: r.status, body: await r.json().catch(() => null) };
    },
    [p, init],
  );
}

/** Signs `user` in with a fresh context, starting from `startPath` on app1. */
async function freshLogin(browser, user, startPath = `/home/${user}`) {
  const context = await newContext(browser);
  const page = await context.newPage();
  await page.goto(app(HOSTS.app1, startPath), { waitUntil: 'domcontentloaded' });
  await signInAtIdp(page, user, { screenshots: false });
  await page.waitForLoadState('domcontentloaded');
  assert.equal(page.url(), app(HOSTS.app1, startPath), `${user} lands back on ${startPath}`);
  assert.equal(await shownUser(page), user, `the backend page shows ${user}`);
  return { context, page };
}

/** The claims of a JWT (or of `Bearer <JWT>`), unverified. */
function jwtClaims(token) {
  const jwt = String(token).replace(/^Bearer /, '');
  return JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString('utf8'));
}

/** The gateway's session cookie(s) of a browser context as one `cookie` header value ('' if none). */
async function sessionCookieHeader(context) {
  return (await context.cookies())
    .filter((c) => c.name === '_oidc_authz' || /^_oidc_authz_\d+$/.test(c.name))
    .sort((a, b) => a.name.localeCompare(b.name))
    .map((c) => `${c.name}=${c.value}`)
    .join('; ');
}

/** The JSON lines the (current) IdP process logged under `key` ({"refresh":…}, {"backchannel":…}). */
function idpEvents(key) {
  return stack.idpProc.stdoutText
    .split('\n')
    .filter((l) => l.startsWith(`{"${key}":`))
    .map((l) => JSON.parse(l)[key]);
}

/** Sum of oidc-authz's metric `name` over the series whose labels include `labelText` ('' = all). */
async function metricSum(name, labelText = '') {
  const m = await stack.metrics();
  return Object.entries(m)
    .filter(([k]) => (k === name || k.startsWith(`${name}{`)) && k.includes(labelText))
    .reduce((sum, [, v]) => sum + v, 0);
}

/** Sleeps until the clock is past the JWT time `exp` (seconds) by `marginMs`. */
async function waitPast(exp, marginMs = 1500) {
  const ms = exp * 1000 + marginMs - Date.now();
  if (ms > 0) await new Promise((r) => setTimeout(r, ms));
}

/** XHRs (fetch with X-Requested-With) from the page, same origin, all at once: [{ status, redirected, url, body }]. */
async function xhrs(page, paths) {
  return page.evaluate(
    async (ps) =>
      Promise.all(
        ps.map(async (p) => {
          const r = await fetch(p, { headers: { 'X-Requested-With': 'XMLHttpRequest', accept: 'application/json' } });
          return { status: r.status, redirected: r.redirected, url: r.url, body: await r.json().catch(() => null) };
        }),
      ),
    paths,
  );
}

/** oidc-authz's counter of JWKS fetches for the IdP. */
async function jwksFetches() {
  const m = await stack.metrics();
  const key = Object.keys(m).find((k) => k.startsWith('oidc_authz_jwks_fetches_total') && k.includes(stack.issuer));
  return key ? m[key] : 0;
}

// ------------------------------------------------------------------------------------------
// Scenario runner
// ------------------------------------------------------------------------------------------

const results = [];
const only = process.env.E2E_ONLY;

/** Runs one scenario (unless E2E_ONLY leaves it out; `always`: what the selected ones need). */
async function scenario(name, fn, { always = false } = {}) {
  if (only && !always && !name.toLowerCase().includes(only.toLowerCase())) return;
  currentScenario = name;
  const started = Date.now();
  let timer;
  try {
    await Promise.race([
      fn(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`scenario timed out after ${SCENARIO_TIMEOUT_MS} ms`)), SCENARIO_TIMEOUT_MS);
      }),
    ]);
    results.push({ name, ok: true });
    console.log(`ok    ${name}  (${((Date.now() - started) / 1000).toFixed(1)} s)`);
  } catch (e) {
    results.push({ name, ok: false, error: e });
    console.log(`FAIL  ${name}  (${((Date.now() - started) / 1000).toFixed(1)} s)`);
    for (const line of String(e?.stack ?? e).split('\n').slice(0, 12)) console.log(`      | ${line}`);
  } finally {
    clearTimeout(timer);
  }
}

// ------------------------------------------------------------------------------------------
// The scenarios
// ------------------------------------------------------------------------------------------

async function run(browser) {
  // State shared by scenarios that follow one another, as one user's day would.
  const alice = {}; // signed in by the first scenario
  const bob = {}; // signed in by the two-tab scenario
  const tokens = {};

  const ensureAlice = async () => {
    if (!alice.context) Object.assign(alice, await freshLogin(browser, 'alice'));
    return alice;
  };

  await scenario('login: app1 sends the browser to the IdP and back to the original URL with the user shown', async () => {
    const context = await newContext(browser);
    const page = await context.newPage();
    const rec = recorder(context);
    const start = app(HOSTS.app1, '/dashboard/reports?x=1&y=a%20b&z=%2Fq');
    await page.goto(start, { waitUntil: 'domcontentloaded' });

    // The gateway answered the first request with a 302 to the IdP's authorization endpoint.
    const first = rec.responses.find((r) => r.url === start);
    assert.ok(first, 'the browser requested the original URL');
    assert.equal(first.status, 302, 'the gateway redirects an unauthenticated browser');
    const h = await first.response.allHeaders();
    const loc = new URL(h.location);
    assert.equal(`${loc.origin}${loc.pathname}`, `${stack.issuer}/auth`, 'to the IdP authorization endpoint');
    const q = Object.fromEntries(loc.searchParams);
    assert.equal(q.response_type, 'code');
    assert.equal(q.client_id, 'gateway');
    assert.equal(q.redirect_uri, app(HOSTS.app1, '/oauth2/callback'));
    assert.deepEqual(q.scope.split(' ').sort(), ['email', 'groups', 'openid', 'profile']);
    assert.equal(q.code_challenge_method, 'S256');
    for (const p of ['state', 'nonce', 'code_challenge']) assert.ok(q[p]?.length >= 32, `${p} is present and long`);
    assert.match(h['cache-control'] ?? '', /no-store/, 'the redirect is not cacheable');
    const loginCookies = (await first.response.headerValues('set-cookie')).filter((c) => c.startsWith('_oidc_authz_login_'));
    assert.equal(loginCookies.length, 1, 'one login-state cookie is set');
    assert.match(loginCookies[0], /Domain=example\.test/i, 'on the cookie domain');
    assert.match(loginCookies[0], /HttpOnly/i);
    assert.match(loginCookies[0], /SameSite=Lax/i);

    await signInAtIdp(page, 'alice');
    await page.waitForLoadState('domcontentloaded');
    await shot(page, 'back-on-app1');

    assert.equal(page.url(), start, 'back on the original URL with its query string intact');
    assert.equal(await shownUser(page), 'alice', 'the page shows the user the backend received in x-auth-request-user');
    assert.equal(await page.locator('#path').textContent(), '/dashboard/reports?x=1&y=a%20b&z=%2Fq', 'the backend got the original path and query');
    assert.equal(await page.locator('#email').textContent(), 'alice@example.test');
    assert.equal(await page.locator('#username').textContent(), 'alice');
    assert.equal(await page.locator('#groups').textContent(), 'users');
    assert.equal(await page.locator('#rule').textContent(), 'apps');
    const callback = rec.responses.find((r) => r.url.startsWith(app(HOSTS.app1, '/oauth2/callback?')));
    assert.ok(callback, 'the IdP sent the browser to the callback');
    assert.equal(callback.status, 302, 'the callback redirects to the original URL');

    // The browser holds the session cookie, with the attributes DESIGN.md promises, and no
    // leftover login cookie.
    const cookies = await context.cookies();
    const session = cookies.find((c) => c.name === '_oidc_authz');
    assert.ok(session, `a session cookie is stored (cookies: ${cookies.map((c) => c.name).join(', ')})`);
    assert.equal(session.domain, '.example.test', 'the session cookie is on cookie_domain');
    assert.equal(session.path, '/');
    assert.equal(session.httpOnly, true);
    assert.equal(session.sameSite, 'Lax');
    assert.deepEqual(cookies.filter((c) => c.name.startsWith('_oidc_authz_login_')).map((c) => c.name), [], 'the login cookie was deleted');

    // The backend got the ID token, and never our cookie.
    const echo = await backendHeadersFromPage(page);
    assert.equal(echo.status, 200);
    assert.match(echo.body.headers.authorization ?? '', /^Bearer ey[\w-]+\.[\w-]+\.[\w-]+$/, 'the backend receives the ID token as a bearer token');
    assert.ok(!(echo.body.headers.cookie ?? '').includes('_oidc_authz'), 'the session cookie is removed from what the backend sees');
    tokens.aliceIdToken = echo.body.headers.authorization.slice('Bearer '.length);
    // The session's identity, from oidc-authz's own endpoint behind Envoy.
    const me = await backendHeadersFromPage(page, '/oauth2/userinfo');
    assert.equal(me.status, 200);
    assert.equal(me.body.sub, 'alice');
    assert.equal(me.body.email, 'alice@example.test');
    assert.equal(me.body.rule, 'apps');
    rec.stop();
    Object.assign(alice, { context, page });
  });

  await scenario('SSO: app2 is served without another login (cookie_domain)', async () => {
    const { context } = await ensureAlice();
    // A cookie of the application's own, on the shared domain: it must reach the backend.
    await context.addCookies([{ name: 'theme', value: 'dark', domain: '.example.test', path: '/' }]);
    const rec = recorder(context);
    const page = await context.newPage();
    const resp = await page.goto(app(HOSTS.app2, '/welcome'), { waitUntil: 'domcontentloaded' });
    await shot(page, 'app2-signed-in');
    assert.equal(resp.status(), 200);
    assert.equal(page.url(), app(HOSTS.app2, '/welcome'), 'no redirect');
    assert.deepEqual(rec.toIdp(), [], 'the IdP was not visited');
    assert.equal(await shownUser(page), 'alice');
    const echo = await backendHeadersFromPage(page);
    assert.equal(echo.body.headers['x-auth-request-user'], 'alice');
    assert.equal(echo.body.headers.cookie, 'theme=dark', 'the application keeps its own cookies, without ours');
    await context.clearCookies({ name: 'theme' });
    rec.stop();
    await page.close();
  });

  await scenario('public: a whitelisted /public/ path is served with no login', async () => {
    const context = await newContext(browser);
    const rec = recorder(context);
    const page = await context.newPage();
    const resp = await page.goto(app(HOSTS.app1, '/public/info.html?lang=en'), { waitUntil: 'domcontentloaded' });
    await shot(page, 'public-page');
    assert.equal(resp.status(), 200);
    assert.equal(page.url(), app(HOSTS.app1, '/public/info.html?lang=en'));
    assert.deepEqual(rec.toIdp(), [], 'the IdP was not visited');
    assert.equal(await page.locator('#anonymous').count(), 1, 'the backend saw no user');
    // Same host, outside /public/: a login.
    await page.goto(app(HOSTS.app1, '/publicity'), { waitUntil: 'domcontentloaded' });
    assert.ok(await onIdpLoginPage(page), `/publicity is not under /public/: the IdP login page is shown (at ${page.url()})`);
    await shot(page, 'outside-public-login');
    // Paths that try to look public but are not: never served without a login.
    for (const p of ['/public/..%2Fsecret', '/public%2Fsecret', '/public/%2e%2e/secret', '/public/../secret']) {
      const r = await request({ host: HOSTS.app1, path: p, headers: { accept: BROWSER_ACCEPT } });
      assert.ok(
        r.status === 302 ? r.headers.location.startsWith(`${stack.issuer}/auth?`) : r.status >= 400 && r.status < 500,
        `${p}: expected a login redirect or a 4xx, got ${r.status} ${r.headers.location ?? ''}`,
      );
    }
    rec.stop();
    await context.close();
  });

  await scenario('blacklist: a blacklist rule protects only /admin on admin.example.test', async () => {
    const context = await newContext(browser);
    const page = await context.newPage();
    const rec = recorder(context);
    const home = await page.goto(app(HOSTS.admin, '/'), { waitUntil: 'domcontentloaded' });
    await shot(page, 'admin-host-home-open');
    assert.equal(home.status(), 200);
    assert.equal(await page.locator('#anonymous').count(), 1, 'the rest of the host is open');
    assert.deepEqual(rec.toIdp(), []);
    await page.goto(app(HOSTS.admin, '/admin/users'), { waitUntil: 'domcontentloaded' });
    await shot(page, 'admin-area-needs-login');
    assert.ok(await onIdpLoginPage(page), `/admin/users needs a login (at ${page.url()})`);
    const loc = new URL(rec.responses.find((r) => r.url === app(HOSTS.admin, '/admin/users')).response.headers().location);
    assert.equal(loc.searchParams.get('redirect_uri'), app(HOSTS.admin, '/oauth2/callback'), "with the admin rule's redirect URL");
    // Spellings of /admin that must not get around the rule.
    for (const [host, p] of [
      [HOSTS.admin, '/%61dmin'],
      [HOSTS.admin, '//admin'],
      [HOSTS.admin, '/x/../admin'],
      [HOSTS.admin, '/admin/'],
      ['ADMIN.example.test', '/admin'],
      ['admin.example.test.', '/admin'],
    ]) {
      const r = await request({ host, path: p, headers: { accept: BROWSER_ACCEPT } });
      assert.equal(r.status, 302, `${host}${p}: expected a login redirect, got ${r.status}`);
      assert.ok(r.headers.location.startsWith(`${stack.issuer}/auth?`), `${host}${p}: redirected to the IdP`);
    }
    const api = await request({ host: HOSTS.admin, path: '/admin/stats', headers: { accept: 'application/json' } });
    assert.equal(api.status, 401, 'an API call to /admin gets 401');
    assert.equal(api.headers['www-authenticate'], 'Bearer realm="admin"');
    rec.stop();
    await context.close();

  });

  await scenario('bypasses: segment parameters, double encoding and malformed hosts never reach a backend without a login', async () => {
    const isLogin = (r) => r.status === 302 && String(r.headers.location).startsWith(`${stack.issuer}/auth?`);
    // Whitelist (apps rule, public prefix /public/): paths Tomcat, Spring or a second
    // normalising proxy read as a path outside /public/.
    for (const p of [
      '/public/%2e%2e;/secret',
      '/public/..;/secret',
      '/public/..;x/secret',
      '/public/..%3B/secret',
      '/public/..%252fsecret',
      '/public/%252e%252e/secret',
      '/public/x;y',
    ]) {
      const r = await request({ host: HOSTS.app1, path: p, headers: { accept: BROWSER_ACCEPT } });
      assert.ok(isLogin(r), `${HOSTS.app1}${p}: expected a login redirect, got ${r.status} ${r.headers.location ?? ''}`);
    }
    // Blacklist (admin rule, /admin): spellings a backend reads as /admin.
    for (const p of ['/x/%2e%2e;/admin', '/x/..;/admin', '/admin;x', '/;x/admin', '/x/..%252fadmin', '/x/%252e%252e/admin']) {
      const r = await request({ host: HOSTS.admin, path: p, headers: { accept: BROWSER_ACCEPT } });
      assert.ok(isLogin(r), `${HOSTS.admin}${p}: expected a login redirect, got ${r.status} ${r.headers.location ?? ''}`);
    }
    // Hosts that are not host names: 400 (JSON), never the backend (default_action: allow
    // would otherwise let a host no rule governs through).
    for (const host of [`x@${HOSTS.admin}`, `${HOSTS.admin}..`, `${HOSTS.admin}:443:1`, HOSTS.admin.replace('.', '%2e')]) {
      const r = await request({ host, path: '/admin/users', headers: { accept: 'application/json' } });
      assert.equal(r.status, 400, `Host: ${host}: expected 400, got ${r.status} ${r.body.slice(0, 200)}`);
      assert.equal(r.json?.headers, undefined, `Host: ${host}: the backend answered`);
      assert.equal(r.headers['content-type'], 'application/json', `Host: ${host}: one JSON content-type`);
    }
    // A browser following such a link lands on the IdP's login page, not on the backend.
    const context = await newContext(browser);
    const page = await context.newPage();
    await page.goto(app(HOSTS.app1, '/public/%2e%2e;/secret'), { waitUntil: 'domcontentloaded' });
    await shot(page, 'segment-parameters-need-login');
    assert.ok(await onIdpLoginPage(page), `/public/%2e%2e;/secret needs a login (at ${page.url()})`);
    await context.close();
  });

  await scenario('403: a signed-in user outside the allowed group is refused /admin; an admin gets in', async () => {
    // alice is signed in (SSO on .example.test) but is not in the group admins.
    const { context: ac } = await ensureAlice();
    const p2 = await ac.newPage();
    const resp = await p2.goto(app(HOSTS.admin, '/admin/users'), { waitUntil: 'domcontentloaded' });
    await shot(p2, 'admin-area-403-for-alice');
    assert.equal(resp.status(), 403);
    assert.equal(p2.url(), app(HOSTS.admin, '/admin/users'), 'no redirect to the IdP: she is signed in');
    // A browser gets a small page: what happened, who is signed in, and a way to sign out.
    assert.match(resp.headers()['content-type'], /^text\/html/);
    const text = await p2.locator('body').innerText();
    assert.match(text, /do not have access/, text);
    assert.match(text, /signed in as alice/, text);
    assert.match(text, /allowed\.groups/, `the 403 names the failed requirement: ${text}`);
    assert.equal(await p2.locator('a[href="/oauth2/sign_out"]').count(), 1, 'a sign-out link');
    // An API call with the same session gets the JSON answer.
    const api = await backendHeadersFromPage(p2, '/admin/users', { headers: { accept: 'application/json' } });
    assert.equal(api.status, 403);
    assert.equal(api.body.rule, 'admin');
    assert.equal(api.body.requirement, 'allowed.groups', `the JSON 403 names the failed requirement: ${JSON.stringify(api.body)}`);
    // Her session still works where she is allowed.
    const open = await p2.goto(app(HOSTS.admin, '/'), { waitUntil: 'domcontentloaded' });
    assert.equal(open.status(), 200);
    await p2.close();

    // A member of admins signs in, starting on the admin host.
    const context = await newContext(browser);
    const page = await context.newPage();
    await page.goto(app(HOSTS.admin, '/admin/users?page=2'), { waitUntil: 'domcontentloaded' });
    await signInAtIdp(page, 'admin', { screenshots: false });
    await page.waitForURL(app(HOSTS.admin, '/admin/users?page=2'));
    await shot(page, 'admin-area-for-admin');
    assert.equal(await shownUser(page), 'admin');
    assert.equal(await page.locator('#rule').textContent(), 'admin');
    assert.equal(await page.locator('#groups').textContent(), 'users,admins');
    await context.close();
  });

  await scenario('XHR: fetch() with X-Requested-With to a protected path, without a session, gets 401 (not a redirect)', async () => {
    const context = await newContext(browser);
    const page = await context.newPage();
    await page.goto(app(HOSTS.app1, '/public/spa.html'), { waitUntil: 'domcontentloaded' });
    const out = await page.evaluate(async () => {
      const r = await fetch('/api/orders', {
        headers: { 'X-Requested-With': 'XMLHttpRequest', accept: 'text/html,application/json' },
      });
      return {
        status: r.status,
        redirected: r.redirected,
        url: r.url,
        wwwAuthenticate: r.headers.get('www-authenticate'),
        contentType: r.headers.get('content-type'),
        body: await r.text(),
      };
    });
    await page.evaluate((o) => {
      document.body.insertAdjacentHTML('afterbegin', `<pre id="xhr" style="background:#fee;padding:1rem">fetch('/api/orders') -> ${o.status}\n${o.body}</pre>`);
    }, out);
    await shot(page, 'xhr-401');
    assert.equal(out.status, 401, `fetch got ${out.status}`);
    assert.equal(out.redirected, false, 'not redirected to the IdP');
    assert.equal(out.url, app(HOSTS.app1, '/api/orders'));
    assert.equal(out.wwwAuthenticate, 'Bearer realm="apps"');
    assert.match(out.contentType ?? '', /application\/json/);
    assert.equal(JSON.parse(out.body).error, 'unauthorized');
    await context.close();
  });

  await scenario('API: a client with a bearer token from the IdP is allowed', async () => {
    // A machine client: client_credentials at the IdP, a JWT access token for the API audience.
    const tr = await fetch(`${stack.issuer}/token`, {
      method: 'POST',
      headers: {
        authorization: `Basic ${Buffer.from(`api-client:${stack.apiClientSecret}`).toString('base64')}`,
        'content-type': 'application/x-www-form-urlencoded',
      },
      body: new URLSearchParams({ grant_type: 'client_credentials', scope: 'api:read', resource: API_RESOURCE }),
      signal: AbortSignal.timeout(5000),
    });
    assert.equal(tr.status, 200, 'the IdP issues a client_credentials token');
    const { access_token: at } = await tr.json();
    tokens.apiAccessToken = at;
    const r = await request({ host: HOSTS.api, path: '/v1/items/headers', headers: { authorization: `Bearer ${at}`, accept: 'application/json' } });
    assert.equal(r.status, 200, `allowed (got ${r.status}: ${r.body.slice(0, 200)})`);
    assert.equal(r.json.headers['x-auth-request-user'], 'api-client', 'the backend sees the token subject');
    assert.equal(r.json.headers['x-auth-request-rule'], 'apps');
    assert.equal(r.json.headers.authorization, `Bearer ${at}`, "the client's own token is passed through");

    // A user's ID token (here alice's, from her browser login) is accepted too.
    if (!tokens.aliceIdToken) {
      const { page } = await ensureAlice();
      tokens.aliceIdToken = (await backendHeadersFromPage(page)).body.headers.authorization.slice(7);
    }
    const r2 = await request({ host: HOSTS.api, path: '/headers', headers: { authorization: `Bearer ${tokens.aliceIdToken}` } });
    assert.equal(r2.status, 200, `ID token allowed (got ${r2.status}: ${r2.body.slice(0, 200)})`);
    assert.equal(r2.json.headers['x-auth-request-user'], 'alice');
    assert.equal(r2.json.headers['x-auth-request-email'], 'alice@example.test');
  });

  await scenario('API: without a token a client gets 401 with www-authenticate; a bad token says invalid_token', async () => {
    const r = await request({ host: HOSTS.api, path: '/v1/items', headers: { accept: 'application/json' } });
    assert.equal(r.status, 401);
    assert.equal(r.headers['www-authenticate'], 'Bearer realm="apps"');
    assert.match(r.headers['content-type'] ?? '', /application\/json/);
    assert.equal(r.json?.error, 'unauthorized');
    // curl's default accept (*/*) is not a browser navigation either.
    const r2 = await request({ host: HOSTS.api, path: '/v1/items', headers: { accept: '*/*' } });
    assert.equal(r2.status, 401);
    // A token the IdP never issued (a valid one with a changed signature).
    const good = tokens.apiAccessToken ?? 'eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln';
    const forged = `${good.slice(0, good.lastIndexOf('.') + 1)}${'A'.repeat(good.length - good.lastIndexOf('.') - 1)}`;
    for (const t of [forged, 'not-a-jwt']) {
      const r3 = await request({ host: HOSTS.api, path: '/v1/items', headers: { authorization: `Bearer ${t}` } });
      assert.equal(r3.status, 401, `bad token: ${r3.status}`);
      assert.equal(r3.headers['www-authenticate'], 'Bearer realm="apps", error="invalid_token"');
    }
  });

  await scenario('spoofing: a client-sent x-auth-request-user never reaches the backend', async () => {
    const spoofed = {
      'x-auth-request-user': 'mallory',
      'x-auth-request-email': 'mallory@evil.test',
      'X-Auth-Request-Groups': 'admins',
      'x-auth-request-rule': 'none',
      'x-auth-request-extra': 'x',
    };
    const identity = (h) => Object.keys(h).filter((k) => k.startsWith('x-auth-request-')).sort();
    // A public path (whitelist), and a host left open by default_action: allow.
    for (const [host, p] of [
      [HOSTS.app1, '/public/headers'],
      [HOSTS.admin, '/headers'],
      [HOSTS.other, '/headers'],
    ]) {
      const r = await request({ host, path: p, headers: spoofed });
      assert.equal(r.status, 200, `${host}${p}: ${r.status}`);
      assert.deepEqual(identity(r.json.headers), [], `${host}${p}: identity headers reached the backend: ${JSON.stringify(r.json.headers)}`);
    }
    // An API client with a valid token: only the token's identity.
    if (tokens.apiAccessToken) {
      const r = await request({ host: HOSTS.api, path: '/headers', headers: { ...spoofed, authorization: `Bearer ${tokens.apiAccessToken}` } });
      assert.equal(r.status, 200);
      assert.equal(r.json.headers['x-auth-request-user'], 'api-client');
      assert.deepEqual(identity(r.json.headers), ['x-auth-request-rule', 'x-auth-request-user'], 'no spoofed email/groups/extra survive');
      assert.equal(r.json.headers['x-auth-request-rule'], 'apps');
    }
    // A signed-in browser whose page sends its own identity headers.
    const { page } = await ensureAlice();
    const echo = await backendHeadersFromPage(page, '/headers', { headers: spoofed });
    assert.equal(echo.status, 200);
    assert.equal(echo.body.headers['x-auth-request-user'], 'alice');
    assert.equal(echo.body.headers['x-auth-request-email'], 'alice@example.test');
    assert.equal(echo.body.headers['x-auth-request-groups'], 'users');
    assert.equal(echo.body.headers['x-auth-request-rule'], 'apps');
    assert.equal(echo.body.headers['x-auth-request-extra'], undefined);
  });

  await scenario('spoofing: underscore spellings (x_auth_request_user) never reach the backend either', async () => {
    // Many backends (CGI, WSGI/Django/Flask, PHP, some proxies) read `x_auth_request_user`
    // exactly like `x-auth-request-user` (both become HTTP_X_AUTH_REQUEST_USER).
    const spoofed = { x_auth_request_user: 'mallory', X_Auth_Request_Email: 'mallory@evil.test', 'x-auth_request-groups': 'admins' };
    const smuggled = (h) => Object.keys(h).filter((k) => k.replace(/_/g, '-').startsWith('x-auth-request-'));
    const cases = [
      [HOSTS.app1, '/public/headers', {}],
      [HOSTS.other, '/headers', {}],
    ];
    if (tokens.apiAccessToken) cases.push([HOSTS.api, '/headers', { authorization: `Bearer ${tokens.apiAccessToken}` }]);
    const leaks = [];
    for (const [host, p, extra] of cases) {
      const r = await request({ host, path: p, headers: { ...spoofed, ...extra } });
      if (r.status === 200) {
        const got = smuggled(r.json.headers).filter((k) => k.includes('_'));
        if (got.length) leaks.push(`${host}${p} -> backend received ${got.map((k) => `${k}: ${r.json.headers[k]}`).join(', ')}`);
      } else if (r.status !== 400) {
        // Refusing such a request outright (400) is fine too.
        leaks.push(`${host}${p} -> ${r.status}`);
      }
    }
    assert.ok(leaks.length === 0, `underscore spellings of the identity headers got through:\n${leaks.join('\n')}`);
  });

  await scenario('HTTP/2: cookies sent as separate HTTP/2 cookie fields are recognised and stripped', async () => {
    const { context } = await ensureAlice();
    const ours = (await context.cookies()).filter((c) => c.name === '_oidc_authz' || /^_oidc_authz_\d+$/.test(c.name));
    assert.ok(ours.length > 0, 'alice has a session');
    const r = await h2request({
      host: HOSTS.app2,
      path: '/headers',
      headers: { accept: 'application/json', cookie: ['theme=dark', ...ours.map((c) => `${c.name}=${c.value}`), 'lang=en'] },
    });
    assert.equal(r.status, 200, `h2 request with a session: ${r.status} ${r.body.slice(0, 200)}`);
    assert.equal(r.json.headers['x-auth-request-user'], 'alice');
    assert.equal(r.json.headers.cookie, 'theme=dark; lang=en', 'the backend gets the other cookies, without ours');
    // Without the session, an h2 API call is refused as over HTTP/1.1.
    const r2 = await h2request({ host: HOSTS.app2, path: '/headers', headers: { accept: 'application/json', cookie: ['theme=dark'] } });
    assert.equal(r2.status, 401);
  });

  await scenario('oidc-authz down: Envoy answers 503 and lets nothing through; after a restart sessions still work', async () => {
    const { context } = await ensureAlice();
    const cookieHeader = (await context.cookies()).map((c) => `${c.name}=${c.value}`).join('; ');
    const code = await stack.stopOidcAuthz();
    try {
      await whileAuthzDown();
    } finally {
      await stack.startOidcAuthz();
    }
    assert.equal(code, 0, 'SIGTERM: oidc-authz drained and exited 0');
    const page = await context.newPage();
    const up = await page.goto(app(HOSTS.app1, '/after-authz-restart'), { waitUntil: 'domcontentloaded' });
    await shot(page, 'after-oidc-authz-restart');
    assert.equal(up.status(), 200);
    assert.equal(await shownUser(page), 'alice', 'the (stateless) session survives the restart');
    await page.close();

    async function whileAuthzDown() {
    for (const [host, p, headers] of [
      [HOSTS.app1, '/headers', { cookie: cookieHeader }],
      [HOSTS.app1, '/public/headers', {}],
      [HOSTS.other, '/headers', {}],
      [HOSTS.api, '/headers', { authorization: `Bearer ${tokens.apiAccessToken ?? 'x'}` }],
    ]) {
      const r = await request({ host, path: p, headers });
      assert.equal(r.status, 503, `${host}${p} while oidc-authz is down: ${r.status}`);
      assert.ok(!r.json?.headers, `${host}${p}: the backend was not reached`);
    }
    // The browser: Envoy's 503 has no body, so Chromium shows its own "HTTP ERROR 503" page.
    const page = await context.newPage();
    const rec = recorder(context);
    const err = await page.goto(app(HOSTS.app1, '/while-authz-down'), { waitUntil: 'domcontentloaded' }).then(() => null, (e) => e);
    rec.stop();
    await shot(page, 'oidc-authz-down-503');
    const first = rec.responses.find((r) => r.url === app(HOSTS.app1, '/while-authz-down'));
    assert.equal(first?.status, 503, `the browser got ${first?.status} (${err?.message?.split('\n')[0] ?? 'page shown'})`);
    assert.equal(await shownUser(page), null, 'no backend page');
    await page.close();
    }
  });

  await scenario('SameSite=Strict sessions: the login lands on the original page (no redirect loop)', async () => {
    // session.same_site: strict is a documented option. The callback is reached through a
    // cross-site redirect chain (IdP -> callback -> original URL): a browser withholds a Strict
    // cookie on every hop of such a chain, so a plain 302 from the callback can never deliver it.
    await stack.reconfigureOidcAuthz((yaml) => yaml.replace(/^(\s*same_site:) lax$/m, '$1 strict'));
    try {
      const context = await newContext(browser);
      const page = await context.newPage();
      const rec = recorder(context);
      const target = app(HOSTS.app1, '/strict?x=1');
      // What the browser sends on its way back to the page after the callback.
      const landingCookies = [];
      const onRequest = async (r) => {
        if (r.url() === target && rec.requests.some((u) => u.includes('/oauth2/callback?'))) {
          landingCookies.push((await r.allHeaders()).cookie ?? '(none)');
        }
      };
      context.on('request', onRequest);
      await page.goto(target, { waitUntil: 'domcontentloaded' });
      await signInAtIdp(page, 'sam', { screenshots: false });
      // Let it settle: a loop ends on Chromium's ERR_TOO_MANY_REDIRECTS page.
      await page.waitForLoadState('domcontentloaded');
      await page.waitForTimeout(1000);
      rec.stop();
      context.off('request', onRequest);
      await shot(page, 'strict-after-login');
      const session = (await context.cookies()).find((c) => c.name === '_oidc_authz');
      assert.equal(session?.sameSite, 'Strict', 'the session cookie is SameSite=Strict as configured');
      const callbacks = rec.requests.filter((u) => u.startsWith(app(HOSTS.app1, '/oauth2/callback?')));
      assert.equal(
        callbacks.length,
        1,
        `one callback, no login loop (${callbacks.length} callbacks, ${rec.toIdp().filter((u) => u.includes('/auth?')).length} ` +
          `authorization requests; now at ${page.url()}; ` +
          `cookies sent on the first return to the page: ${(landingCookies[0] ?? '').replace(/=[^;]+/g, '=…')})`,
      );
      assert.equal(page.url(), target, 'back on the original URL');
      assert.equal(await shownUser(page), 'sam');
      await context.close();
    } finally {
      await stack.reconfigureOidcAuthz(null);
    }
  });

  await scenario('large identity: a user with many groups gets a chunked session the browser keeps and Envoy passes', async () => {
    const user = 'many-groups-gina';
    const { context, page } = await freshLogin(browser, user, '/big?x=1');
    await shot(page, 'many-groups-signed-in');
    const cookies = await context.cookies();
    const chunks = cookies.filter((c) => /^_oidc_authz_\d+$/.test(c.name)).sort((a, b) => a.name.localeCompare(b.name));
    assert.ok(chunks.length >= 2, `the session is chunked (cookies: ${cookies.map((c) => `${c.name}(${c.value.length})`).join(', ')})`);
    assert.equal(cookies.find((c) => c.name === '_oidc_authz'), undefined, 'no unchunked cookie beside the chunks');
    for (const c of chunks) {
      assert.ok(c.name.length + c.value.length <= 4096, `${c.name} fits a browser's cookie limit`);
      assert.equal(c.domain, '.example.test');
      assert.equal(c.httpOnly, true);
    }
    const echo = await backendHeadersFromPage(page);
    assert.equal(echo.status, 200);
    assert.equal(echo.body.headers['x-auth-request-user'], user);
    assert.equal(echo.body.headers['x-auth-request-groups'].split(',').length, 121, 'every group reaches the backend');
    assert.equal(echo.body.headers.cookie, undefined, 'no chunk reaches the backend');
    // SSO with the chunked cookie, over HTTP/1.1 (browser) and HTTP/2 (chunks as separate fields).
    const p2 = await context.newPage();
    await p2.goto(app(HOSTS.app2, '/big-too'), { waitUntil: 'domcontentloaded' });
    assert.equal(await shownUser(p2), user);
    const r = await h2request({ host: HOSTS.app2, path: '/headers', headers: { accept: 'application/json', cookie: chunks.map((c) => `${c.name}=${c.value}`) } });
    assert.equal(r.status, 200, `h2 with chunks: ${r.status}`);
    assert.equal(r.json.headers['x-auth-request-user'], user);
    // Another user signs in in the same browser with a small session: the chunks are deleted,
    // not left beside the new plain cookie (the deletions must match Domain and Path to work).
    await context.clearCookies({ domain: '127.0.0.1' }); // forget the IdP session only
    await p2.goto(app(HOSTS.app2, `/oauth2/start?rd=${encodeURIComponent('/switched')}`), { waitUntil: 'domcontentloaded' });
    await signInAtIdp(p2, 'hank', { screenshots: false });
    await p2.waitForURL(app(HOSTS.app2, '/switched'));
    assert.equal(await shownUser(p2), 'hank');
    const afterSwitch = (await context.cookies()).filter((c) => c.name.startsWith('_oidc_authz'));
    assert.deepEqual(afterSwitch.map((c) => c.name), ['_oidc_authz'], 'one plain session cookie, no stale chunk');
    // And back to a large session: the plain cookie goes, chunks come.
    await context.clearCookies({ domain: '127.0.0.1' });
    await p2.goto(app(HOSTS.app2, `/oauth2/start?rd=${encodeURIComponent('/big-again')}`), { waitUntil: 'domcontentloaded' });
    await signInAtIdp(p2, `${user}-2`, { screenshots: false });
    await p2.waitForURL(app(HOSTS.app2, '/big-again'));
    assert.equal(await shownUser(p2), `${user}-2`);
    const afterBig = (await context.cookies()).filter((c) => c.name.startsWith('_oidc_authz'));
    assert.ok(afterBig.length >= 2 && afterBig.every((c) => /^_oidc_authz_\d+$/.test(c.name)), `only chunks: ${afterBig.map((c) => c.name)}`);
    // Signing out deletes every chunk.
    await p2.goto(app(HOSTS.app2, '/oauth2/sign_out'), { waitUntil: 'domcontentloaded' });
    assert.ok(isIdp(p2.url()), 'sent to the IdP to end its session');
    const left = (await context.cookies()).filter((c) => c.name.startsWith('_oidc_authz'));
    assert.deepEqual(left.map((c) => c.name), [], 'no session chunk is left after sign-out');
    await context.close();
  });

  await scenario('pending logins: unfinished logins in one browser stay bounded; a dropped one says "sign in again"', async () => {
    const context = await newContext(browser);
    const tabs = [];
    for (let i = 0; i < 7; i += 1) {
      const page = await context.newPage();
      const rec = recorder(context);
      const url = app(HOSTS.app1, `/pending/${i}`);
      await page.goto(url, { waitUntil: 'domcontentloaded' });
      rec.stop();
      const first = rec.responses.find((r) => r.url === url);
      assert.equal(first?.status, 302, `tab ${i}: a login redirect`);
      const setCookies = await first.response.headerValues('set-cookie');
      const created = setCookies.filter((c) => c.startsWith('_oidc_authz_login_') && !/Max-Age=0/i.test(c));
      const deleted = setCookies.filter((c) => c.startsWith('_oidc_authz_login_') && /Max-Age=0/i.test(c));
      assert.equal(created.length, 1, `tab ${i}: one new login cookie (${setCookies.length} Set-Cookie lines)`);
      if (i >= 5) assert.ok(deleted.length >= 1, `tab ${i}: beyond 5 pending logins, one is dropped in the same response (Envoy kept ${setCookies.length} Set-Cookie lines)`);
      const pending = (await context.cookies()).filter((c) => c.name.startsWith('_oidc_authz_login_'));
      assert.ok(pending.length <= 5, `tab ${i}: ${pending.length} pending login cookies`);
      tabs.push({ page, url, cookie: created[0].split('=')[0] });
    }
    const pendingNames = new Set((await context.cookies()).map((c) => c.name));
    const live = tabs.filter((t) => pendingNames.has(t.cookie));
    const dropped = tabs.filter((t) => !pendingNames.has(t.cookie));
    assert.equal(live.length, 5);
    assert.equal(dropped.length, 2);
    // A live one completes.
    const done = live[live.length - 1];
    await signInAtIdp(done.page, 'frank', { screenshots: false });
    await done.page.waitForURL(done.url);
    assert.equal(await shownUser(done.page), 'frank');
    // A dropped one cannot complete: a clear page with a way forward, not a 500.
    const gone = dropped[0];
    await signInAtIdp(gone.page, 'frank', { screenshots: false });
    await gone.page.waitForURL((u) => u.pathname === '/oauth2/callback');
    await shot(gone.page, 'dropped-login-sign-in-again');
    assert.equal(await gone.page.locator('h1').textContent(), 'Sign-in could not be completed');
    await gone.page.click('a:has-text("Sign in again")');
    await gone.page.waitForURL((u) => !isIdp(u) && u.pathname !== '/oauth2/start' && u.pathname !== '/oauth2/callback', { waitUntil: 'domcontentloaded' });
    assert.equal(await shownUser(gone.page), 'frank', 'signed in after "Sign in again"');
    await context.close();
  });

  await scenario('sign-in link: /oauth2/start?rd= returns to the page asked for; other sites are refused', async () => {
    const port = stack.ports.envoy;
    for (const rd of [
      'https://evil.test/',
      `http://evil.test:${port}/`,
      '//evil.test/x',
      '/\\evil.test/x',
      'javascript:alert(1)',
      `http://app1.example.test.evil.test:${port}/`,
    ]) {
      const r = await request({ host: HOSTS.app1, path: `/oauth2/start?rd=${encodeURIComponent(rd)}`, headers: { accept: BROWSER_ACCEPT } });
      assert.equal(r.status, 400, `rd=${rd}: ${r.status} ${r.headers.location ?? ''}`);
      assert.equal(r.headers.location, undefined);
    }
    const context = await newContext(browser);
    const page = await context.newPage();
    const target = app(HOSTS.app2, '/landing?a=1&b=%2F');
    await page.goto(app(HOSTS.app1, `/oauth2/start?rd=${encodeURIComponent(target)}`), { waitUntil: 'domcontentloaded' });
    await signInAtIdp(page, 'grace', { screenshots: false });
    await page.waitForURL(target);
    await shot(page, 'start-link-landed-on-app2');
    assert.equal(await shownUser(page), 'grace');
    // A relative rd stays on the host the link was on.
    await page.goto(app(HOSTS.app2, `/oauth2/start?rd=${encodeURIComponent('/relative/x?y=1')}`), { waitUntil: 'domcontentloaded' });
    await page.waitForURL(app(HOSTS.app2, '/relative/x?y=1'));
    assert.equal(await shownUser(page), 'grace');
    // Sign-out also answers POST (a form button), through Envoy.
    const cookie = (await context.cookies()).filter((c) => c.domain === '.example.test').map((c) => `${c.name}=${c.value}`).join('; ');
    const out = await request({ host: HOSTS.app2, path: '/oauth2/sign_out', method: 'POST', headers: { cookie, 'content-length': '0' } });
    assert.equal(out.status, 302, `POST sign_out: ${out.status}`);
    assert.ok(out.headers.location.startsWith(`${stack.issuer}/session/end?`), `to the IdP's end-session endpoint: ${out.headers.location}`);
    assert.ok((out.headers['set-cookie'] ?? []).some((c) => c.startsWith('_oidc_authz=;') && /Max-Age=0/i.test(c)), 'the session cookie is deleted');
    await context.close();
  });

  await scenario('cancel at the IdP: a clear "sign-in was refused" page with a way to try again', async () => {
    const context = await newContext(browser);
    const page = await context.newPage();
    const target = app(HOSTS.app1, '/cancelled?x=1');
    await page.goto(target, { waitUntil: 'domcontentloaded' });
    assert.ok(await onIdpLoginPage(page));
    const rec = recorder(context);
    await page.click('a:has-text("Cancel")');
    await page.waitForURL((u) => u.pathname === '/oauth2/callback', { waitUntil: 'domcontentloaded' });
    rec.stop();
    await shot(page, 'cancelled-at-idp');
    const cb = rec.responses.find((r) => r.url.startsWith(app(HOSTS.app1, '/oauth2/callback?')));
    assert.equal(new URL(cb.url).searchParams.get('error'), 'access_denied', 'the IdP reported access_denied');
    assert.equal(cb.status, 403);
    assert.equal(await page.locator('h1').textContent(), 'Sign-in was refused');
    assert.match(await page.locator('body').textContent(), /access_denied/);
    assert.equal(await page.locator('a:has-text("Try again")').getAttribute('href'), target);
    assert.deepEqual((await context.cookies()).filter((c) => c.name.startsWith('_oidc_authz')).map((c) => c.name), [], 'no session, no login cookie left');
    await page.click('a:has-text("Try again")');
    await signInAtIdp(page, 'ivy', { screenshots: false });
    await page.waitForURL(target);
    assert.equal(await shownUser(page), 'ivy');
    await context.close();
  });

  await scenario('tampered session cookie: a fresh login, not an error page', async () => {
    const { context } = await ensureAlice();
    const cookies = await context.cookies();
    const session = cookies.find((c) => c.name === '_oidc_authz');
    assert.ok(session, 'alice has a session cookie');
    const v = session.value;
    const i = Math.floor(v.length / 2);
    const tampered = `${v.slice(0, i)}${v[i] === 'A' ? 'B' : 'A'}${v.slice(i + 1)}`;
    for (const [label, value] of [
      ['one-byte-flipped', tampered],
      ['garbage', 'definitely-not-a-session'],
    ]) {
      await context.addCookies([{ ...session, value }]);
      const rec = recorder(context);
      const page = await context.newPage();
      const target = app(HOSTS.app1, `/after-tamper/${label}?k=v`);
      const resp = await page.goto(target, { waitUntil: 'domcontentloaded' });
      // The IdP still has its own session: it sends the browser straight back. If it asks
      // again, sign in again.
      if (isIdp(page.url())) await signInAtIdp(page, 'alice', { screenshots: false });
      await page.waitForURL(target);
      await shot(page, `after-${label}-cookie`);
      const seen = rec.responses.map((r) => r.status);
      rec.stop();
      assert.ok(rec.toIdp().some((u) => u.startsWith(`${stack.issuer}/auth?`)), 'the browser went through a fresh login at the IdP');
      assert.ok(seen.every((s) => s < 400), `no error page on the way (statuses: ${seen.join(',')})`);
      assert.ok(resp === null || resp.status() < 400);
      assert.equal(await shownUser(page), 'alice', 'signed in again');
      const now = (await context.cookies()).find((c) => c.name === '_oidc_authz');
      assert.ok(now && now.value !== value, 'a new session cookie replaced the bad one');
      await page.close();
    }
  });

  await scenario('two tabs: two browser tabs that log in at the same time both succeed', async () => {
    const context = await newContext(browser);
    const [tabA, tabB] = [await context.newPage(), await context.newPage()];
    const urlA = app(HOSTS.app1, '/tab-a?n=1');
    const urlB = app(HOSTS.app2, '/tab-b?n=2');
    await Promise.all([tabA.goto(urlA, { waitUntil: 'domcontentloaded' }), tabB.goto(urlB, { waitUntil: 'domcontentloaded' })]);
    assert.ok(await onIdpLoginPage(tabA), 'tab A is on the IdP login page');
    assert.ok(await onIdpLoginPage(tabB), 'tab B is on the IdP login page');
    const pending = (await context.cookies()).filter((c) => c.name.startsWith('_oidc_authz_login_'));
    assert.equal(pending.length, 2, 'one pending login per tab');
    // Both logins are pending at once (above). At the IdP the tabs sign in one after the other:
    // two interactions of one browser racing at oidc-provider fail there by design (resuming an
    // interaction renews the IdP session's id, and the other tab's interaction then answers
    // "interaction session and authentication session mismatch"), which is not what is tested.
    await signInAtIdp(tabA, 'bob', { screenshots: false });
    await signInAtIdp(tabB, 'bob', { screenshots: false });
    await Promise.all([tabA.waitForURL(urlA), tabB.waitForURL(urlB)]);
    await shot(tabA, 'tab-a');
    await shot(tabB, 'tab-b');
    assert.equal(await shownUser(tabA), 'bob', 'tab A is signed in');
    assert.equal(await shownUser(tabB), 'bob', 'tab B is signed in');
    const left = (await context.cookies()).filter((c) => c.name.startsWith('_oidc_authz_login_'));
    assert.deepEqual(left.map((c) => c.name), [], 'no login cookie is left behind');
    Object.assign(bob, { context, page: tabA });
    await tabB.close();
  });

  await scenario('sign-out: the IdP end-session page is visited and the next visit needs a login', async () => {
    const { context, page } = await ensureAlice();
    await page.goto(app(HOSTS.app1, '/'), { waitUntil: 'domcontentloaded' });
    assert.equal(await shownUser(page), 'alice');
    const signOuts = await metricSum('oidc_authz_logouts_total', 'kind="sign_out"');
    const rec = recorder(context);
    await page.click('#sign-out');
    // The IdP asks to confirm the sign-out (RP-initiated logout).
    await page.waitForURL((u) => isIdp(u) && u.pathname === '/session/end', { waitUntil: 'domcontentloaded' });
    const endSession = new URL(page.url());
    assert.equal(endSession.searchParams.get('client_id'), 'gateway');
    assert.equal(endSession.searchParams.get('post_logout_redirect_uri'), app(HOSTS.app1, '/'));
    assert.ok(endSession.searchParams.get('id_token_hint')?.startsWith('ey'), 'with the id_token_hint');
    const signOutResponse = rec.responses.find((r) => r.url.startsWith(app(HOSTS.app1, '/oauth2/sign_out')));
    const cleared = (await signOutResponse.response.headerValues('set-cookie')).filter((c) => c.startsWith('_oidc_authz='));
    assert.ok(cleared.some((c) => /Max-Age=0/i.test(c) && /Domain=example\.test/i.test(c)), `the session cookie is deleted on the cookie domain: ${cleared}`);
    assert.equal((await metricSum('oidc_authz_logouts_total', 'kind="sign_out"')) - signOuts, 1, 'oidc_authz_logouts_total{kind="sign_out"} counted it');
    await shot(page, 'idp-end-session-confirm');
    await page.click('button[value=yes]');
    // Back to post_logout_redirect_uri (app1/), which needs a login again.
    await page.waitForURL((u) => isIdp(u) && u.pathname.startsWith('/interaction/'), { waitUntil: 'domcontentloaded' });
    await shot(page, 'after-sign-out-login-again');
    assert.ok(await onIdpLoginPage(page), 'the next visit shows the IdP login page');
    assert.ok(rec.requests.some((u) => u.startsWith(app(HOSTS.app1, '/'))), 'the IdP sent the browser back to the app');
    assert.equal((await context.cookies()).find((c) => c.name === '_oidc_authz'), undefined, 'no session cookie is left');
    // Every app of the cookie domain is signed out.
    const p2 = await context.newPage();
    await p2.goto(app(HOSTS.app2, '/'), { waitUntil: 'domcontentloaded' });
    assert.ok(await onIdpLoginPage(p2), 'app2 needs a login too');
    rec.stop();
    await context.close();
    delete alice.context;
    delete alice.page;
  });

  await scenario('refresh: an expired ID token is refreshed in place: no trip to the IdP, a new cookie through Envoy, a fresh token for the backend', async () => {
    // The rule `refresh` (refresh.example.test) uses the IdP client whose ID tokens live
    // REFRESH_CLIENT_TOKEN_TTL (10) seconds and whose refresh token is rotated on every use.
    // Rita has a small session; rex, in another browser, one of many groups (several cookie
    // chunks, so several Set-Cookie lines on one allow).
    const signIn = async (user, startPath) => {
      const context = await newContext(browser);
      const page = await context.newPage();
      const start = app(HOSTS.refresh, startPath);
      await page.goto(start, { waitUntil: 'domcontentloaded' });
      await signInAtIdp(page, user, { screenshots: false });
      await page.waitForURL(start);
      assert.equal(await shownUser(page), user);
      assert.equal(await page.locator('#rule').textContent(), 'refresh');
      const cookie = await sessionCookieHeader(context);
      assert.ok(cookie, `${user} has a session cookie`);
      const [x] = await xhrs(page, ['/headers']);
      assert.equal(x.status, 200);
      const token = jwtClaims(x.body.headers.authorization);
      assert.equal(token.aud, 'gateway-refresh');
      assert.ok(token.exp - token.iat <= 10, `the ID token lives 10 s (iat ${token.iat}, exp ${token.exp})`);
      return { context, page, cookie, token, rec: recorder(context) }; // recording from the login on
    };
    const refreshesOf = (sub) => idpEvents('refresh').filter((e) => e.client === 'gateway-refresh' && e.sub === sub && e.ok).length;
    const failedRefreshes = () => idpEvents('refresh').filter((e) => e.client === 'gateway-refresh' && !e.ok);
    const metricBase = await metricSum('oidc_authz_sessions_refreshed_total', 'result="success"');
    const rex = await signIn('many-groups-rex', '/r/rex');
    assert.ok(rex.cookie.includes('_oidc_authz_2='), "rex's session is chunked");
    const { context, page, cookie: cookie0, token: t0, rec } = await signIn('rita', '/r/home');
    const rexBase = refreshesOf('many-groups-rex');
    const base = refreshesOf('rita');
    const okRefreshes = () => refreshesOf('rita');

    // Expiry 1: five XHRs at once (one refresh for all of them), then navigations.
    await waitPast(t0.exp);
    const burst = await xhrs(page, [1, 2, 3, 4, 5].map((i) => `/headers?xhr=${i}`));
    await page.evaluate((b) => {
      document.body.insertAdjacentHTML(
        'afterbegin',
        `<pre id="xhr" style="background:#efe;padding:1rem">${b.map((x, i) => `fetch('/headers?xhr=${i + 1}') -> ${x.status}`).join('\n')}</pre>`,
      );
    }, burst);
    await shot(page, 'xhrs-after-id-token-expiry');
    for (const [i, x] of burst.entries()) {
      assert.equal(x.status, 200, `XHR ${i + 1} after the ID token expired: ${x.status} ${JSON.stringify(x.body)?.slice(0, 200)}`);
      assert.equal(x.redirected, false, `XHR ${i + 1} was not redirected`);
    }
    const burstTokens = new Set(burst.map((x) => x.body.headers.authorization));
    assert.equal(burstTokens.size, 1, `the five concurrent XHRs share one refreshed ID token (got ${burstTokens.size} different ones)`);
    const t1 = jwtClaims([...burstTokens][0]);
    assert.ok(t1.iat > t0.iat && t1.exp > t0.exp, `the backend receives a fresh ID token (iat ${t0.iat} -> ${t1.iat}, exp ${t0.exp} -> ${t1.exp})`);
    assert.equal(t1.sub, 'rita');
    const setCookies = [];
    for (const r of rec.responses.filter((x) => x.url.includes('/headers?xhr='))) {
      setCookies.push(...(await r.response.headerValues('set-cookie')).filter((c) => c.startsWith('_oidc_authz')));
    }
    assert.ok(setCookies.length >= 1, 'an allow carried the refreshed session to the browser (Set-Cookie through Envoy)');
    for (const c of setCookies) {
      assert.match(c, /HttpOnly/i, c);
      assert.match(c, /SameSite=Lax/i, c);
      assert.match(c, /Path=\//i, c);
      assert.doesNotMatch(c, /Domain=/i, `the rule has no cookie_domain: a host-only cookie (${c.replace(/=[^;]+/, '=…')})`);
    }
    const cookie1 = await sessionCookieHeader(context);
    assert.ok(cookie1 && cookie1 !== cookie0, "the browser's session cookie changed");
    assert.equal(okRefreshes() - base, 1, `one refresh at the IdP's token endpoint for the expiry (${JSON.stringify(idpEvents('refresh').slice(-6))})`);
    // Navigations: a link click and a typed URL.
    await page.goto(app(HOSTS.refresh, '/r/orders'), { waitUntil: 'domcontentloaded' });
    assert.equal(await shownUser(page), 'rita');
    await page.evaluate(() => document.body.insertAdjacentHTML('afterbegin', '<a id="next" href="/r/orders/2?tab=items">next</a>'));
    await page.click('#next');
    await page.waitForURL(app(HOSTS.refresh, '/r/orders/2?tab=items'));
    await shot(page, 'navigation-after-refresh');
    assert.equal(await shownUser(page), 'rita');

    // The previous cookie, within 60 s of the refresh (another tab's request in flight, a
    // retried request): the refreshed session, not a second refresh (the IdP rotates refresh
    // tokens: a second use of the old one would be refused and end the grant).
    const old = await request({ host: HOSTS.refresh, path: '/headers?old-cookie', headers: { cookie: cookie0, accept: 'application/json', 'x-requested-with': 'XMLHttpRequest' } });
    assert.equal(old.status, 200, `the previous cookie right after the refresh: ${old.status} ${old.body.slice(0, 200)}`);
    const tOld = jwtClaims(old.json.headers.authorization);
    assert.ok(tOld.iat >= t1.iat, `the previous cookie gets the refreshed session (iat ${tOld.iat}, refreshed ${t1.iat}, original ${t0.iat})`);
    assert.equal(okRefreshes() - base, 1, 'no second refresh for the previous cookie');

    // Rex's chunked session: every chunk of the refreshed session reaches his browser.
    await waitPast(rex.token.exp);
    const [rx] = await xhrs(rex.page, ['/headers?rex']);
    assert.equal(rx.status, 200, `rex after expiry: ${rx.status}`);
    assert.ok(jwtClaims(rx.body.headers.authorization).iat > rex.token.iat, 'rex gets a fresh ID token');
    assert.equal(rx.body.headers['x-auth-request-groups'].split(',').length, 121);
    const rexSetCookies = [];
    for (const r of rex.rec.responses.filter((x) => x.url.includes('/headers?rex'))) {
      rexSetCookies.push(...(await r.response.headerValues('set-cookie')).filter((c) => c.startsWith('_oidc_authz')));
    }
    const rexCookie = await sessionCookieHeader(rex.context);
    assert.ok(rexSetCookies.length >= 2, `one allow carried every chunk: ${rexSetCookies.map((c) => c.split('=')[0]).join(', ')}`);
    assert.ok(rexCookie !== rex.cookie && rexCookie.includes('_oidc_authz_2=') && !/(^|; )_oidc_authz=/.test(rexCookie), `rex holds the new chunks (${rexCookie.replace(/=[^;]+/g, '')})`);
    const rexNav = await rex.page.goto(app(HOSTS.refresh, '/r/rex/next'), { waitUntil: 'domcontentloaded' });
    assert.equal(rexNav.status(), 200);
    assert.equal(await shownUser(rex.page), 'many-groups-rex', 'the new chunks work');
    assert.equal(refreshesOf('many-groups-rex') - rexBase, 1, 'one refresh for rex');
    rex.rec.stop();
    assert.deepEqual(rex.rec.toIdp(), [], 'rex never went back to the IdP');
    await rex.context.close();

    // Expiry 2: a navigation first, then an XHR. The rotated refresh token was kept.
    await waitPast(t1.exp);
    const nav = await page.goto(app(HOSTS.refresh, '/r/after-second-expiry'), { waitUntil: 'domcontentloaded' });
    await shot(page, 'navigation-after-second-expiry');
    assert.equal(nav.status(), 200);
    assert.equal(page.url(), app(HOSTS.refresh, '/r/after-second-expiry'), 'no redirect');
    assert.equal(await shownUser(page), 'rita');
    const [after2] = await xhrs(page, ['/headers?second']);
    assert.equal(after2.status, 200);
    const t2 = jwtClaims(after2.body.headers.authorization);
    assert.ok(t2.iat > t1.iat && t2.exp > t1.exp, `a fresh ID token again (iat ${t1.iat} -> ${t2.iat})`);
    const cookie2 = await sessionCookieHeader(context);
    assert.ok(cookie2 && cookie2 !== cookie1, "the browser's session cookie changed again");
    assert.equal(okRefreshes() - base, 2, 'one refresh per expiry at the IdP');
    assert.deepEqual(failedRefreshes(), [], 'no refresh was refused by the IdP');
    rec.stop();
    assert.deepEqual(rec.toIdp(), [], 'the browser never went back to the IdP (no /auth request after the login)');
    const refreshed = (await metricSum('oidc_authz_sessions_refreshed_total', 'result="success"')) - metricBase;
    assert.equal(refreshed, 3, 'oidc_authz_sessions_refreshed_total{result="success"} counted the three refreshes');
    await context.close();
  });

  await scenario('refresh: a refresh the IdP refuses (the user signed out there) ends the session: login again, XHR 401', async () => {
    // The IdP revokes the grant, and so the refresh token, when the user signs out there (the
    // client of the rule `refresh` gets no back-channel logout): the gateway learns it at the
    // first refresh after the ID token expired, from invalid_grant.
    const context = await newContext(browser);
    const page = await context.newPage();
    const start = app(HOSTS.refresh, '/r/rosa');
    await page.goto(start, { waitUntil: 'domcontentloaded' });
    await signInAtIdp(page, 'rosa', { screenshots: false });
    await page.waitForURL(start);
    assert.equal(await shownUser(page), 'rosa');
    const [x0] = await xhrs(page, ['/headers']);
    assert.equal(x0.status, 200);
    const t0 = jwtClaims(x0.body.headers.authorization);
    const cookie = await sessionCookieHeader(context);
    await page.goto(`${stack.issuer}/session/end`, { waitUntil: 'domcontentloaded' });
    await page.click('button[value=yes]');
    await page.waitForURL((u) => isIdp(u) && u.pathname === '/session/end/success', { waitUntil: 'domcontentloaded' });
    // Until the ID token expires the session is served as it is (no back channel for this client).
    const refused = () => idpEvents('refresh').filter((e) => e.client === 'gateway-refresh' && !e.ok && e.error === 'invalid_grant').length;
    const refusedBefore = refused();
    const metricBefore = await metricSum('oidc_authz_sessions_refreshed_total', 'result="invalid_grant"');
    await waitPast(t0.exp);
    assert.equal(await sessionCookieHeader(context), cookie, 'the browser still holds its session cookie');
    const r = await request({ host: HOSTS.refresh, path: '/headers', headers: { cookie, accept: 'application/json', 'x-requested-with': 'XMLHttpRequest' } });
    assert.equal(r.status, 401, `after the refused refresh: ${r.status} ${r.body.slice(0, 200)}`);
    assert.equal(r.json?.headers, undefined, 'the backend was not reached');
    assert.ok(refused() > refusedBefore, `the gateway tried the refresh and the IdP refused it (${JSON.stringify(idpEvents('refresh').slice(-3))})`);
    assert.ok(
      (await metricSum('oidc_authz_sessions_refreshed_total', 'result="invalid_grant"')) > metricBefore,
      'oidc_authz_sessions_refreshed_total{result="invalid_grant"} counted it',
    );
    // The browser: an XHR gets 401, a navigation the IdP's login page.
    await page.goto(app(HOSTS.refresh, '/public/rosa-spa.html'), { waitUntil: 'domcontentloaded' });
    const [x1] = await xhrs(page, ['/api/rosa']);
    assert.equal(x1.status, 401, `XHR: ${x1.status}`);
    await page.goto(app(HOSTS.refresh, '/r/rosa/again'), { waitUntil: 'domcontentloaded' });
    await shot(page, 'refused-refresh-login-again');
    assert.ok(await onIdpLoginPage(page), `a navigation needs a login (at ${page.url()})`);
    await context.close();
  });

  await scenario('back-channel logout: signing out at the IdP (not at the gateway) ends that browser session at the gateway', async () => {
    // A bad logout token: 400 invalid_request, through Envoy, on any host.
    const form = (body) => ({ 'content-type': 'application/x-www-form-urlencoded', 'content-length': String(Buffer.byteLength(body)) });
    for (const [host, body] of [
      [HOSTS.app1, 'logout_token=not-a-jwt'],
      [HOSTS.other, 'logout_token=eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.'],
      [HOSTS.app1, ''],
    ]) {
      const r = await request({ host, path: '/oauth2/backchannel_logout', method: 'POST', headers: form(body), body });
      assert.equal(r.status, 400, `${host} ${body || '(empty body)'}: ${r.status} ${r.body.slice(0, 200)}`);
      assert.equal(r.json?.error, 'invalid_request');
      assert.equal(r.headers['content-type'], 'application/json');
    }

    // Lena signs in on app1. She is also signed in in a second browser (another IdP session,
    // so another sid), and mia in a third: the logout must end only the first one.
    const context = await newContext(browser);
    const page = await context.newPage();
    const start = app(HOSTS.app1, '/bc/home');
    await page.goto(start, { waitUntil: 'domcontentloaded' });
    await signInAtIdp(page, 'lena', { screenshots: false });
    await page.waitForURL(start);
    assert.equal(await shownUser(page), 'lena');
    const other = await freshLogin(browser, 'lena', '/bc/other-browser');
    const mia = await freshLogin(browser, 'mia', '/bc/mia');
    const cookie = await sessionCookieHeader(context);
    assert.ok(cookie, 'lena has a session cookie');
    const asXhr = { accept: 'application/json', 'x-requested-with': 'XMLHttpRequest' };
    const before = await request({ host: HOSTS.app1, path: '/headers', headers: { ...asXhr, cookie } });
    assert.equal(before.status, 200, 'her session works');

    const deliveries = () => idpEvents('backchannel').filter((e) => e.client === 'gateway');
    const delivered0 = deliveries().length;
    const metric0 = await metricSum('oidc_authz_logouts_total', 'kind="backchannel"');

    // She signs out at the IdP itself (as from another application): the browser never
    // visits the gateway; the IdP tells it over the back channel.
    const rec = recorder(context);
    await page.goto(`${stack.issuer}/session/end`, { waitUntil: 'domcontentloaded' });
    await shot(page, 'idp-end-session-page');
    await page.click('button[value=yes]');
    await page.waitForURL((u) => isIdp(u) && u.pathname === '/session/end/success', { waitUntil: 'domcontentloaded' });
    await shot(page, 'idp-signed-out');
    rec.stop();
    const toGateway = rec.requests.filter((u) => new URL(u).hostname.endsWith(`.${HOSTS.domain}`));
    assert.deepEqual(toGateway, [], 'the browser did not visit any app (the sign-out was at the IdP only)');

    // The IdP posts the logout token during the end-session request; bounded wait anyway.
    await waitFor('the IdP delivered a back-channel logout to the gateway client', async () => deliveries().length > delivered0, 10_000);
    const delivery = deliveries().at(-1);
    assert.equal(delivery.ok, true, `the gateway accepted the logout token: ${JSON.stringify(delivery)}`);
    assert.equal(delivery.sub, 'lena');
    assert.ok(delivery.sid, 'the logout token carried a sid');
    const answer = idpEvents('outgoing').filter((o) => o.url === app(HOSTS.app1, '/oauth2/backchannel_logout')).at(-1);
    assert.equal(answer?.status, 200, `the gateway's answer to the delivery: ${JSON.stringify(answer)}`);
    assert.match(answer.cache_control ?? '', /no-store/, 'cache-control: no-store');
    await waitFor(
      'oidc_authz_logouts_total{kind="backchannel"} to count it',
      async () => (await metricSum('oidc_authz_logouts_total', 'kind="backchannel"')) > metric0,
      5_000,
    );

    // The browser still holds its cookie, and it no longer works.
    assert.equal(await sessionCookieHeader(context), cookie, 'the browser still holds the same session cookie');
    const after = await request({ host: HOSTS.app1, path: '/headers', headers: { ...asXhr, cookie } });
    assert.equal(after.status, 401, `the revoked session cookie is refused: ${after.status} ${after.body.slice(0, 200)}`);
    assert.equal(after.json?.headers, undefined, 'the backend was not reached');
    // In the browser: an XHR gets 401, a navigation goes to the IdP's login page.
    await page.goto(app(HOSTS.app1, '/public/bc-spa.html'), { waitUntil: 'domcontentloaded' });
    const [xhr] = await xhrs(page, ['/api/bc-orders']);
    assert.equal(xhr.status, 401, `XHR after the back-channel logout: ${xhr.status}`);
    assert.equal(xhr.redirected, false);
    const rec2 = recorder(context);
    await page.goto(app(HOSTS.app1, '/bc/after-logout'), { waitUntil: 'domcontentloaded' });
    rec2.stop();
    await shot(page, 'login-again-after-back-channel-logout');
    assert.ok(await onIdpLoginPage(page), `the next visit needs a login (at ${page.url()})`);
    assert.ok(rec2.toIdp().some((u) => u.startsWith(`${stack.issuer}/auth?`)), 'through the IdP authorization endpoint');

    // Other sessions are untouched: her other browser (another sid) and mia.
    for (const [who, s, user] of [
      ["lena's other browser", other, 'lena'],
      ['mia', mia, 'mia'],
    ]) {
      const [x] = await xhrs(s.page, ['/headers?still']);
      assert.equal(x.status, 200, `${who} is still signed in (${x.status})`);
      assert.equal(x.body.headers['x-auth-request-user'], user);
      await s.context.close();
    }
    await context.close();
  });

  await scenario('refresh: while the IdP is down an expired session is served for session.refresh_grace, then no longer', async () => {
    await stack.reconfigureOidcAuthz((yaml) => yaml.replace(/^(\s*)max_lifetime: 1h$/m, '$1max_lifetime: 1h\n$1refresh_grace: 4s'));
    try {
      const context = await newContext(browser);
      const page = await context.newPage();
      const start = app(HOSTS.refresh, '/r/uma');
      await page.goto(start, { waitUntil: 'domcontentloaded' });
      await signInAtIdp(page, 'uma', { screenshots: false });
      await page.waitForURL(start);
      const [x0] = await xhrs(page, ['/headers']);
      assert.equal(x0.status, 200);
      const t0 = jwtClaims(x0.body.headers.authorization);
      const unavailable = () => metricSum('oidc_authz_sessions_refreshed_total', 'result="unavailable"');
      const before = await unavailable();
      await stack.stopIdp();
      try {
        // Expired, the IdP cannot be reached, within the grace: served.
        await waitPast(t0.exp);
        const [x1] = await xhrs(page, ['/headers?in-grace']);
        assert.equal(x1.status, 200, `within refresh_grace: ${x1.status}`);
        assert.equal(x1.body.headers['x-auth-request-user'], 'uma');
        const nav = await page.goto(app(HOSTS.refresh, '/r/uma/in-grace'), { waitUntil: 'domcontentloaded' });
        await shot(page, 'idp-down-within-refresh-grace');
        assert.equal(nav.status(), 200);
        assert.equal(await shownUser(page), 'uma');
        assert.ok((await unavailable()) > before, 'oidc_authz_sessions_refreshed_total{result="unavailable"} counted the failed refresh');
        // Past the grace: no session any more (an XHR: 401; a navigation would go to the IdP).
        await waitPast(t0.exp + 4);
        const [x2] = await xhrs(page, ['/headers?after-grace']);
        assert.equal(x2.status, 401, `after refresh_grace: ${x2.status}`);
      } finally {
        await stack.startIdp();
      }
      await context.close();
    } finally {
      await stack.reconfigureOidcAuthz(null);
    }
  });

  await scenario('IdP restart with rotated signing keys: new logins work without restarting oidc-authz', async () => {
    const fetchesBefore = await jwksFetches();
    const oldKid = stack.idpKid;
    await stack.stopIdp();
    const newKid = await stack.startIdp();
    assert.notEqual(newKid, oldKid, 'the IdP signs with a new key');
    const { context, page } = await freshLogin(browser, 'carol', '/after-rotation?step=1');
    await shot(page, 'carol-after-key-rotation');
    assert.equal(await shownUser(page), 'carol');
    assert.ok((await jwksFetches()) > fetchesBefore, 'oidc-authz fetched the new keys by itself');
    // Carol's new ID token is accepted as a bearer token too.
    const echo = await backendHeadersFromPage(page);
    tokens.carolIdToken = echo.body.headers.authorization.slice(7);
    const r = await request({ host: HOSTS.api, path: '/headers', headers: { authorization: `Bearer ${tokens.carolIdToken}` } });
    assert.equal(r.status, 200);
    assert.equal(r.json.headers['x-auth-request-user'], 'carol');
    // Sessions from before the restart keep working.
    if (bob.context) {
      const p = await bob.context.newPage();
      await p.goto(app(HOSTS.app2, '/still-bob'), { waitUntil: 'domcontentloaded' });
      assert.equal(await shownUser(p), 'bob', 'an existing session survives the IdP restart');
      await p.close();
    }
    await context.close();
  });

  await scenario('IdP keep-alive: a kept-alive connection closing under the code exchange does not fail the sign-in', async () => {
    // Every HTTP server closes idle keep-alive connections on its own timer (Node.js: 5 s,
    // nginx: 75 s). When it fires just as the gateway sends the code exchange on a pooled
    // connection, the connection closes with no answer, and the IdP never saw the request.
    // Sign-in must not fail because of that. The IdP's hook makes it happen on purpose.
    const context = await newContext(browser);
    const page = await context.newPage();
    await page.goto(app(HOSTS.app1, '/ka/0'), { waitUntil: 'domcontentloaded' });
    await signInAtIdp(page, 'kim', { screenshots: false });
    await page.waitForURL(app(HOSTS.app1, '/ka/0'));
    const failures = [];
    const rounds = 3;
    const idpOut = () => stack.idpProc.stdoutText;
    const droppedBefore = (idpOut().match(/"dropped"/g) ?? []).length;
    for (let i = 1; i <= rounds; i += 1) {
      // Forget the gateway session only: the IdP signs kim in again without a form, within a
      // second of the last exchange (so the gateway may reuse its connection).
      await context.clearCookies({ name: '_oidc_authz' });
      await stack.armIdp('dropreused');
      const target = app(HOSTS.app1, `/ka/${i}`);
      await page.goto(target, { waitUntil: 'domcontentloaded' });
      await page.waitForURL((u) => !isIdp(u), { waitUntil: 'domcontentloaded' });
      if (page.url() !== target || (await shownUser(page)) !== 'kim') {
        failures.push(`round ${i}: at ${page.url().replace(/code=[^&]+/, 'code=…').slice(0, 90)}: ${await page.locator('h1').first().textContent()}`);
        if (failures.length === 1) await shot(page, 'sign-in-failed-connection-closed');
      }
    }
    const dropped = (idpOut().match(/"dropped"/g) ?? []).length - droppedBefore;
    await context.close();
    assert.deepEqual(
      failures,
      [],
      `${failures.length} of ${rounds} sign-ins failed; the IdP closed ${dropped} reused connection(s) under a token request`,
    );
  });

  await scenario('IdP hung during sign-in: a clear error page within the timeout, not a hang', async () => {
    const context = await newContext(browser);
    const page = await context.newPage();
    const target = app(HOSTS.app1, '/hung?x=1');
    await page.goto(target, { waitUntil: 'domcontentloaded' });
    // Once the IdP has sent the browser to the callback, it freezes (SIGSTOP): the code
    // exchange that the callback makes is accepted by the kernel but never answered.
    await stack.armIdp('freeze');
    const rec = recorder(context);
    try {
      await signInAtIdp(page, 'dave', { screenshots: false });
      await page.waitForURL((u) => u.pathname === '/oauth2/callback', { waitUntil: 'domcontentloaded', timeout: 30_000 });
      assert.ok(stack.idpProc.stdoutText.includes('"frozen":true'), 'the IdP froze after sending the browser to the callback');
    } finally {
      stack.thawIdp();
      rec.stop();
    }
    // How long the callback took to answer, as the browser measured it.
    const cb = rec.responses.find((r) => r.url.startsWith(app(HOSTS.app1, '/oauth2/callback?')));
    assert.equal(cb?.status, 502, 'the callback answers 502');
    const took = Math.round(cb.response.request().timing().responseStart);
    await shot(page, 'idp-hung-error-page');
    assert.ok(page.url().startsWith(app(HOSTS.app1, '/oauth2/callback?')), `the browser is on the callback (${page.url()})`);
    assert.equal(await page.locator('h1').textContent(), 'Sign-in failed', 'oidc-authz shows its own error page');
    assert.ok(took < 15_000, `the error page came within Envoy's route timeout (${took} ms)`);
    assert.ok(took > 2_000, `the IdP really hung: oidc-authz gave up after ${took} ms (its own timeout)`);
    const again = page.locator('a:has-text("Try again")');
    assert.equal(await again.getAttribute('href'), target, 'with a link back to the page the user wanted');
    // The IdP answers again: "Try again" completes the sign-in.
    await again.click();
    await page.waitForURL((u) => u.href === target || isIdp(u), { waitUntil: 'domcontentloaded' });
    if (isIdp(page.url())) await signInAtIdp(page, 'dave', { screenshots: false });
    await page.waitForURL(target);
    assert.equal(await shownUser(page), 'dave', 'signed in after trying again');
    await context.close();
  });

  await scenario('IdP stopped: signed-in users keep access; new logins get a clear error page, not a hang', async () => {
    // A user who signed in while the IdP was up.
    if (!bob.context) Object.assign(bob, await freshLogin(browser, 'bob'));
    // A sign-in in progress when the IdP goes away: the callback's code exchange fails.
    const erin = await newContext(browser);
    const ep = await erin.newPage();
    const target = app(HOSTS.app1, '/erin?x=1');
    await ep.goto(target, { waitUntil: 'domcontentloaded' });
    await stack.armIdp('exit'); // the IdP exits right after sending the browser to the callback
    await signInAtIdp(ep, 'erin', { screenshots: false });
    await ep.waitForURL((u) => u.pathname === '/oauth2/callback', { waitUntil: 'domcontentloaded' });
    await stack.stopIdp(); // (it has exited; this waits for it)
    await shot(ep, 'idp-stopped-during-sign-in');
    assert.ok(ep.url().startsWith(app(HOSTS.app1, '/oauth2/callback?')));
    assert.equal(await ep.locator('h1').textContent(), 'Sign-in failed', 'oidc-authz shows its own error page');
    assert.ok(stack.idpProc.exitCode !== null || stack.idpProc.signalCode !== null, 'the IdP is down');

    // Already signed-in users keep access, on every app.
    const signedIn = bob;
    for (const host of [HOSTS.app1, HOSTS.app2]) {
      const p = await signedIn.context.newPage();
      const resp = await p.goto(app(host, '/while-idp-down'), { waitUntil: 'domcontentloaded' });
      await shot(p, `signed-in-user-keeps-access-${host}`);
      assert.equal(resp.status(), 200);
      assert.equal(await shownUser(p), 'bob', `bob keeps access to ${host}`);
      await p.close();
    }
    // A bearer token that was verified while the IdP was up still works (keys are cached).
    if (tokens.carolIdToken) {
      const r = await request({ host: HOSTS.api, path: '/headers', headers: { authorization: `Bearer ${tokens.carolIdToken}` } });
      assert.equal(r.status, 200, `cached keys still verify bearer tokens (${r.status})`);
    }

    // A new login: the gateway still answers at once (302 to the IdP), and the browser shows
    // its connection error page, quickly.
    const context = await newContext(browser);
    const page = await context.newPage();
    const rec = recorder(context);
    const started = Date.now();
    const err = await page.goto(app(HOSTS.app1, '/new-login'), { waitUntil: 'domcontentloaded' }).then(
      () => null,
      (e) => e,
    );
    const took = Date.now() - started;
    await shot(page, 'new-login-idp-unreachable');
    const first = rec.responses.find((r) => r.url === app(HOSTS.app1, '/new-login'));
    assert.equal(first?.status, 302, 'the gateway answered with a redirect to the IdP');
    assert.ok(err && /ERR_CONNECTION_REFUSED/.test(err.message), `the browser shows that the IdP cannot be reached (${err?.message?.split('\n')[0]})`);
    assert.ok(took < 10_000, `no hang (${took} ms)`);
    rec.stop();
    await context.close();

    // The IdP comes back: erin's "Try again" completes her sign-in.
    await stack.startIdp();
    await ep.click('a:has-text("Try again")');
    await ep.waitForURL((u) => u.href === target || isIdp(u), { waitUntil: 'domcontentloaded' });
    if (isIdp(ep.url())) await signInAtIdp(ep, 'erin', { screenshots: false });
    await ep.waitForURL(target);
    await shot(ep, 'erin-after-idp-is-back');
    assert.equal(await shownUser(ep), 'erin', 'signed in once the IdP is back');
    await erin.close();
  });

  await scenario('demo: make demo brings up the stack, prints the URL, the user and the console with its token (rules writable), and Ctrl-C stops it', async () => {
    const port = await freePort();
    const demo = spawn(process.execPath, [path.join(E2E_DIR, 'demo.mjs')], {
      env: { ...process.env, DEMO_PORT: String(port), ENVOY_BIN: stack.envoyBin, OIDC_AUTHZ_BIN: stack.oidcAuthzBin },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    demo.stdout.on('data', (d) => (out += d));
    demo.stderr.on('data', (d) => (out += d));
    const exited = new Promise((resolve) => demo.once('exit', (code, signal) => resolve({ code, signal })));
    try {
      await waitFor('the demo', async () => out.includes('Press Ctrl-C'), 30_000, demo);
      const open = /^\s*Open\s+(\S+)/m.exec(out)?.[1];
      const creds = /user: (\S+)\s+password: (\S+)/.exec(out);
      assert.ok(open?.startsWith(`http://app1.demo.localhost:${port}/`), `the demo prints the URL to open:\n${out}`);
      assert.ok(creds, 'the demo prints the test user and password');
      const issuer = /^\s*Identity provider\s+(\S+)/m.exec(out)?.[1];
      assert.ok(issuer?.startsWith('http://127.0.0.1:'), 'the demo prints its IdP');
      // The admin console: its URL and token are printed, and its rules are writable (a file
      // store): disabling and enabling a rule answers 200, not 409 (read-only).
      const consoleUrl = /^\s*Admin console\s+(\S+)/m.exec(out)?.[1];
      const adminToken = /^\s*Admin token\s+(\S+)/m.exec(out)?.[1];
      assert.ok(consoleUrl?.startsWith('http://127.0.0.1:') && adminToken, `the demo prints the console's URL and token:\n${out}`);
      const consolePage = await fetch(consoleUrl, { signal: AbortSignal.timeout(5000) });
      assert.equal(consolePage.status, 200, 'the console page is served');
      for (const action of ['disable', 'enable']) {
        const r = await fetch(new URL(`/api/v1/rules/admin/${action}`, consoleUrl), {
          method: 'POST',
          headers: { authorization: `Bearer ${adminToken}` },
          signal: AbortSignal.timeout(5000),
        });
        assert.equal(r.status, 200, `${action} the rule admin in the demo's store: ${r.status} ${await r.text()}`);
      }
      // A person's browser: *.localhost resolves to this machine by itself (no resolver rules).
      const context = await newContext(browser);
      await context.unrouteAll();
      await context.route((u) => !(u.hostname === '127.0.0.1' || u.hostname.endsWith('.localhost')), (r) => r.abort());
      const page = await context.newPage();
      await page.goto(open, { waitUntil: 'domcontentloaded' });
      await signInAtIdp(page, creds[1], { screenshots: false, issuer });
      await page.waitForURL(open).catch(async (e) => {
        await shot(page, 'demo-not-signed-in');
        throw new Error(`not back on ${open}: at ${page.url()} (${e.message.split('\n')[0]})`);
      });
      await shot(page, 'demo-signed-in');
      assert.equal(await shownUser(page), creds[1], 'the demo page shows the signed-in user');
      await page.goto(`http://app2.demo.localhost:${port}/`, { waitUntil: 'domcontentloaded' });
      assert.equal(await shownUser(page), creds[1], 'single sign-on to app2 in the demo');
      await context.close();
    } finally {
      demo.kill('SIGINT'); // what Ctrl-C sends
      const timer = setTimeout(() => demo.kill('SIGKILL'), 20_000);
      const { code } = await exited;
      clearTimeout(timer);
      assert.equal(code, 0, `Ctrl-C stops the demo cleanly:\n${out.slice(-500)}`);
      assert.match(out, /stopped\./);
    }
  });

  if (bob.context) await bob.context.close();

  // Scale-out (issue 10): three replicas on Redis behind envoy/envoy-replicas.yaml, with a
  // stack of their own (tests/e2e/replicas.mjs); the single-replica stack above is untouched.
  await runReplicaScenarios({ browser, scenario, only, newContext, signInAtIdp, shownUser, sessionCookieHeader });

  // Tracing (issue 11): Envoy's OpenTelemetry tracer and oidc-authz export to one OTLP receiver,
  // with a stack of their own (tests/e2e/tracing.mjs).
  await runTracingScenarios({ browser, scenario, only, newContext, signInAtIdp });
}

// ------------------------------------------------------------------------------------------
// Main
// ------------------------------------------------------------------------------------------

async function main() {
  const started = Date.now();
  fs.mkdirSync(OUT_DIR, { recursive: true });
  for (const f of fs.readdirSync(OUT_DIR)) if (f.endsWith('.png')) fs.rmSync(path.join(OUT_DIR, f));
  if (!fs.existsSync(CHROMIUM)) {
    console.log(`${CHROMIUM} not found: install it with  apt-get install -y chromium`);
    console.log('0 passed, 1 failed');
    return 1;
  }
  let browser;
  let setupError;
  const stopAll = async () => {
    await browser?.close().catch(() => {});
    await stack.stop().catch(() => {});
  };
  let interrupted = false;
  for (const sig of ['SIGINT', 'SIGTERM']) {
    process.once(sig, async () => {
      interrupted = true;
      console.log(`\n${sig}: interrupted, stopping everything`);
      await stopAll();
      console.log(`${results.filter((r) => r.ok).length} passed, 1 failed`);
      process.exit(130);
    });
  }
  try {
    await stack.start();
    console.log(
      `stack up in ${((Date.now() - started) / 1000).toFixed(1)} s: envoy http://127.0.0.1:${stack.ports.envoy} ` +
        `(admin ${stack.ports.envoyAdmin}), oidc-authz grpc ${stack.ports.grpc} http ${stack.ports.http}, ` +
        `IdP ${stack.issuer}, backend ${stack.ports.backend}; logs in target/e2e/logs/`,
    );
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      timeout: 30_000,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--host-resolver-rules=MAP *.example.test 127.0.0.1',
      ],
    });
    await run(browser);
  } catch (e) {
    setupError = e;
    console.log(`FAIL  setup: ${e?.stack ?? e}`);
  } finally {
    await stopAll();
  }
  // Interrupted: the signal handler reports and exits.
  if (interrupted) await new Promise(() => {});
  const passed = results.filter((r) => r.ok).length;
  const failed = results.length - passed + (setupError ? 1 : 0);
  if (failed > 0) {
    console.log('\nFailed:');
    for (const r of results.filter((x) => !x.ok)) console.log(`  - ${r.name}: ${String(r.error?.message ?? r.error).split('\n')[0]}`);
    if (setupError) console.log(`  - setup: ${setupError.message}`);
    console.log('Logs: target/e2e/logs/ (oidc-authz.log, envoy.log, idp.log, backend.log); screenshots: target/e2e/*.png');
  }
  console.log(`\ne2e finished in ${((Date.now() - started) / 1000).toFixed(1)} s; screenshots in target/e2e/`);
  console.log(`${passed} passed, ${failed} failed`);
  return failed > 0 ? 1 : 0;
}

process.exit(await main());
