// Scale-out end to end (issue 10): THREE oidc-authz replicas (release binary) sharing one real
// redis-server (session.store: redis, rules_store: redis://…: docker-compose.yml's `ha`
// configuration, deploy/compose/oidc-authz-ha.yaml, names mapped to loopback), behind one real Envoy running the
// COMMITTED envoy/envoy-replicas.yaml (ports rewritten: round robin, health checks, outlier
// detection, retries), the `oidc-provider` IdP (idp.mjs), the sample backend and headless
// Chromium. Run by suite.mjs after its own scenarios; its scenarios count into the same
// `N passed, M failed` line:
//
//   - the stack comes up and Envoy sees every replica healthy;
//   - a browser signed in once is served by every replica (each replica's
//     oidc_authz_check_total{outcome="allow_session"} grows), with no second login;
//   - a rule disabled in replica 1's console stops asking for a login on replicas 2 and 3
//     within 1 s (each polled on its own admin API's explain), and enabled again likewise;
//   - a sign-out at the IdP's own end-session page (back-channel logout, delivered through
//     Envoy to one replica) makes every replica ask for a login;
//   - `kill -9` of replica 2 under a bounded wrk load through Envoy: no error, no non-2xx
//     answer, the session still works afterwards and a new login works.
//
// Everything it starts (redis-server, the replicas, Envoy, the IdP, the backend, wrk) is a
// child process, waited for with a bound and stopped at the end, also on failure. Logs:
// target/e2e/replicas/logs/; screenshots: target/e2e/replicas/*.png.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';

import { HOSTS, OUT_DIR, REPO_ROOT, Stack, freePorts, renderOidcAuthzConfig, envoyRequest, sleep, startEnvoy, startProcess, stopProcess, waitFor } from './stack.mjs';

/** The committed Envoy example this module runs. */
export const REPLICAS_ENVOY_YAML = path.join(REPO_ROOT, 'envoy', 'envoy-replicas.yaml');
const REPLICAS_DIR = path.join(OUT_DIR, 'replicas');
const N = 3;
/** A rule change must reach every replica within this bound (DESIGN.md, "Several replicas"). */
const PROPAGATION_BOUND_MS = 1000;
/** The rule the console disables: it governs one host of its own and nothing else. */
const TOGGLE_RULE = 'toggle';
const TOGGLE_HOST = `toggle.${HOSTS.domain}`;

/** GET with a bound; resolves to { status, text, json }. */
async function get(url, { headers = {}, ms = 2000 } = {}) {
  const r = await fetch(url, { headers, signal: AbortSignal.timeout(ms), redirect: 'manual' });
  const text = await r.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: r.status, text, json, headers: r.headers };
}

/**
 * envoy/envoy-replicas.yaml with its literal ports and listen address rewritten. Each literal
 * must occur exactly once, so a change to the committed file that this module does not
 * understand fails loudly instead of testing something else.
 */
export function renderReplicasEnvoyConfig(source, ports) {
  const subs = [
    [8080, ports.envoy, 'listener port'],
    [9901, ports.envoyAdmin, 'admin port'],
    [8000, ports.backend, 'backend port'],
    ...ports.replicas.flatMap((r, i) => [
      [9001 + 10 * i, r.grpc, `replica ${i + 1} gRPC port`],
      [9002 + 10 * i, r.http, `replica ${i + 1} HTTP port`],
    ]),
  ];
  let out = source;
  for (const [from, to, what] of subs) {
    const re = new RegExp(`^(\\s*port_value:) ${from}$`, 'gm');
    const n = (out.match(re) ?? []).length;
    if (n !== 1) throw new Error(`envoy/envoy-replicas.yaml: expected exactly one ${what} line (port_value: ${from}), found ${n}`);
    out = out.replace(re, `$1 ${to}`);
  }
  const listen = /^(\s*address:) 0\.0\.0\.0$/gm;
  const n = (out.match(listen) ?? []).length;
  if (n !== 1) throw new Error(`envoy/envoy-replicas.yaml: expected exactly one listener address 0.0.0.0 line, found ${n}`);
  return out.replace(listen, '$1 127.0.0.1');
}

/**
 * One replica's configuration: docker-compose.yml's `ha` configuration
 * (deploy/compose/oidc-authz-ha.yaml: sessions and rules in Redis), mapped to this replica's
 * listeners and the test's redis-server (stack.mjs), with one more rule, `toggle`, for the
 * console scenario. Secrets are read from the environment (Stack.secretEnv()).
 */
export function replicaConfig({ ports, replica, hosts, issuer, redisUrl }) {
  const yaml = renderOidcAuthzConfig('oidc-authz-ha.yaml', {
    ports: { envoy: ports.envoy, grpc: replica.grpc, http: replica.http, admin: replica.admin },
    hosts,
    issuer,
    redisUrl,
  });
  const origin = `http://${TOGGLE_HOST}:${ports.envoy}`;
  return `${yaml}  # ${TOGGLE_HOST}: needs a login until the console disables this rule (default_action: allow).
  - name: ${TOGGLE_RULE}
    redirect_url: ${origin}/oauth2/callback
    issuer: ${issuer}
    client_id: gateway
    client_secret: \${DEMO_CLIENT_SECRET}
    insecure_allow_http: true
    domains: [${TOGGLE_HOST}]
    authorization:
      mode: whitelist
      conditions: []
`;
}

/** Parses Prometheus text into { 'name{labels}': value }. */
function parseMetrics(text) {
  const out = {};
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    out[line.slice(0, i)] = Number(line.slice(i + 1));
  }
  return out;
}

/** The stack of three replicas. Reuses Stack for the IdP and the backend. */
export class ReplicaStack extends Stack {
  constructor(opts = {}) {
    super({ outDir: REPLICAS_DIR, logLevel: process.env.OIDC_AUTHZ_LOG ?? 'info', ...opts });
    this.replicas = []; // [{ n, ports: {grpc, http, admin}, proc, configFile }]
    this.adminToken = randomBytes(24).toString('hex');
  }

  async start() {
    const names = ['envoy', 'envoyAdmin', 'backend', 'idp', 'redis'];
    const picked = await freePorts(names.length + 3 * N);
    this.ports = Object.fromEntries(names.map((n, i) => [n, picked[i]]));
    this.ports.replicas = Array.from({ length: N }, (_, i) => {
      const [grpc, http, admin] = picked.slice(names.length + 3 * i, names.length + 3 * i + 3);
      return { grpc, http, admin };
    });
    fs.rmSync(this.logDir, { recursive: true, force: true });
    fs.mkdirSync(this.logDir, { recursive: true });
    this.runDir = path.join(this.outDir, 'run');
    fs.mkdirSync(this.runDir, { recursive: true });
    for (const f of fs.readdirSync(this.outDir)) if (f.endsWith('.png')) fs.rmSync(path.join(this.outDir, f));

    // A safety net: children never outlive this process.
    process.once('exit', () => {
      for (const c of this.children) c.kill('SIGKILL');
    });

    await Promise.all([this.startIdp(), this.startBackend(), this.startRedis()]);
    if (!fs.existsSync(this.oidcAuthzBin)) throw new Error(`${this.oidcAuthzBin} not found: run cargo build --release first`);
    // All three at once, as a deployment would: the empty store receives the rules once.
    await Promise.all(this.ports.replicas.map((_, i) => this.startReplica(i)));

    const source = fs.readFileSync(REPLICAS_ENVOY_YAML, 'utf8');
    this.envoyConfigFile = path.join(this.runDir, 'envoy-replicas.yaml');
    fs.writeFileSync(this.envoyConfigFile, renderReplicasEnvoyConfig(source, this.ports));
    this.envoy = await startEnvoy({
      logDir: this.logDir,
      bin: this.envoyBin,
      configFile: this.envoyConfigFile,
      adminPort: this.ports.envoyAdmin,
      track: (p) => this.track(p),
    });
    return this;
  }

  get redisUrl() {
    return `redis://127.0.0.1:${this.ports.redis}/0`;
  }

  async startRedis() {
    const dir = path.join(this.outDir, 'redis');
    fs.mkdirSync(dir, { recursive: true });
    this.redis = this.track(
      startProcess(this.logDir, 'redis', 'redis-server', [
        '--port', String(this.ports.redis),
        '--bind', '127.0.0.1',
        '--save', '',
        '--appendonly', 'no',
        '--daemonize', 'no',
        '--protected-mode', 'no',
        '--loglevel', 'warning',
        '--dir', dir,
      ]),
    );
    await waitFor(
      'redis-server PING',
      () =>
        new Promise((resolve, reject) => {
          const s = net.connect(this.ports.redis, '127.0.0.1');
          s.setTimeout(1000, () => s.destroy(new Error('no answer')));
          s.on('connect', () => s.write('PING\r\n'));
          s.on('data', (d) => {
            s.destroy();
            resolve(String(d).startsWith('+PONG'));
          });
          s.on('error', reject);
        }),
      10000,
      this.redis,
    );
  }

  /** Starts replica `i` (0-based) and waits for its /readyz. */
  async startReplica(i) {
    const replica = this.ports.replicas[i];
    const configFile = path.join(this.runDir, `oidc-authz-${i + 1}.yaml`);
    fs.writeFileSync(
      configFile,
      replicaConfig({
        ports: this.ports,
        replica,
        hosts: this.hosts,
        issuer: this.issuer,
        redisUrl: this.redisUrl,
      }),
    );
    const proc = this.track(
      startProcess(this.logDir, `oidc-authz-${i + 1}`, this.oidcAuthzBin, ['serve', '--config', configFile], {
        env: { ...this.secretEnv(), OIDC_AUTHZ_LOG: this.logLevel, RUST_BACKTRACE: '1' },
      }),
    );
    this.replicas[i] = { n: i + 1, ports: replica, proc, configFile };
    await waitFor(
      `oidc-authz replica ${i + 1} /readyz`,
      async () => (await get(`http://127.0.0.1:${replica.http}/readyz`)).status === 200,
      20000,
      proc,
    );
  }

  /** Replica `i`'s /metrics as { name{labels}: value }. */
  async replicaMetrics(i) {
    return parseMetrics((await get(`http://127.0.0.1:${this.ports.replicas[i].http}/metrics`)).text);
  }

  /** Sum of one metric over the series whose labels include `labelText`, for each replica. */
  async metricPerReplica(name, labelText, which = [0, 1, 2]) {
    return Promise.all(
      which.map(async (i) => {
        const m = await this.replicaMetrics(i);
        return Object.entries(m)
          .filter(([k]) => (k === name || k.startsWith(`${name}{`)) && k.includes(labelText))
          .reduce((s, [, v]) => s + v, 0);
      }),
    );
  }

  /** Envoy's /clusters lines for one cluster: { 'host:port': health_flags }. */
  async envoyHealth(cluster) {
    const r = await get(`http://127.0.0.1:${this.ports.envoyAdmin}/clusters`);
    const out = {};
    for (const line of r.text.split('\n')) {
      const m = new RegExp(`^${cluster}::([^:]+:\\d+)::health_flags::(.*)$`).exec(line);
      if (m) out[m[1]] = m[2];
    }
    return out;
  }

  /** Envoy's counters whose name contains `filter`, as { name: value }. */
  async envoyStats(filter) {
    const r = await get(`http://127.0.0.1:${this.ports.envoyAdmin}/stats?filter=${encodeURIComponent(filter)}`);
    const out = {};
    for (const line of r.text.split('\n')) {
      const m = /^([^:]+): (\d+)$/.exec(line);
      if (m) out[m[1]] = Number(m[2]);
    }
    return out;
  }

  async stop() {
    const all = [...this.children];
    // Envoy first (no new requests), then the replicas (they drain), then the rest.
    await stopProcess(this.envoy);
    await Promise.all(this.replicas.map((r) => stopProcess(r?.proc, 10000)));
    await Promise.all(all.map((c) => stopProcess(c)));
  }
}

/** The wrk script: counts answers by status, printed as `status <code> <count>` at the end. */
const WRK_STATUS_LUA = `-- Generated by tests/e2e/replicas.mjs: counts wrk's answers by HTTP status.
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) statuses = {} end
function response(status, headers, body) statuses[status] = (statuses[status] or 0) + 1 end
function done(summary, latency, requests)
  for _, t in ipairs(threads) do
    for code, count in pairs(t:get("statuses")) do io.write(string.format("status %d %d\\n", code, count)) end
  end
end
`;

/**
 * The scenarios. `scenario(name, fn, { always })` is the suite's runner (E2E_ONLY applies to
 * each name; `always` runs the stack's start whenever one of these scenarios runs), and the
 * browser helpers are the suite's own.
 */
export async function runReplicaScenarios({ browser, scenario, only, newContext, signInAtIdp, shownUser, sessionCookieHeader, shotDir = REPLICAS_DIR }) {
  const names = {
    up: 'replicas: three replicas on one Redis behind envoy/envoy-replicas.yaml come up, all healthy in Envoy',
    spread: 'replicas: one login, then requests through Envoy land on every replica with no second login',
    console: 'replicas: a rule disabled in replica 1\'s console stops asking for a login on replicas 2 and 3 within 1 s',
    backchannel: 'replicas: a sign-out at the IdP (back-channel, to one replica) makes every replica ask for a login',
    kill: 'replicas: kill -9 of a replica under wrk load through Envoy: no error, no session lost',
  };
  if (only && !Object.values(names).some((n) => n.toLowerCase().includes(only.toLowerCase()))) return;

  const rs = new ReplicaStack();
  const envoyOrigin = (host) => `http://${host}:${rs.ports.envoy}`;
  const app = (host, p = '/') => `${envoyOrigin(host)}${p}`;
  const replicaHttp = (i) => `http://127.0.0.1:${rs.ports.replicas[i].http}`;
  const replicaAdmin = (i) => `http://127.0.0.1:${rs.ports.replicas[i].admin}`;
  const isIdp = (u) => String(u).startsWith(`${rs.issuer}/`);
  let up = false;
  let shots = 0;
  const shot = async (page, label) => {
    shots += 1;
    const file = path.join(shotDir, `${String(shots).padStart(2, '0')}-${label}.png`);
    await page.screenshot({ path: file, fullPage: true, timeout: 5000 }).catch((e) => console.log(`      (screenshot ${label} failed: ${e.message.split('\n')[0]})`));
  };
  const needUp = () => {
    if (!up) throw new Error('the replica stack did not come up (see the first replicas scenario)');
  };

  /** One raw HTTP/1.1 request to Envoy (no redirects followed). */
  const request = (options) => envoyRequest(rs.ports.envoy, options);

  /** `userinfo` straight from replica `i`'s HTTP listener (not through Envoy), with `cookie`. */
  const userinfoAt = (i, cookie) => get(`${replicaHttp(i)}/oauth2/userinfo`, { headers: { cookie, host: `${HOSTS.app1}:${rs.ports.envoy}`, accept: 'application/json' } });

  /** A fresh browser profile signed in as `user` through Envoy; resolves to { context, page, cookie }. */
  const login = async (user, startPath) => {
    const context = await newContext(browser);
    const page = await context.newPage();
    const start = app(HOSTS.app1, startPath);
    await page.goto(start, { waitUntil: 'domcontentloaded' });
    await signInAtIdp(page, user, { screenshots: false, issuer: rs.issuer });
    await page.waitForURL(start, { waitUntil: 'domcontentloaded' });
    assert.equal(await shownUser(page), user, `the backend page shows ${user}`);
    const cookie = await sessionCookieHeader(context);
    assert.ok(cookie, `${user} has a session cookie`);
    return { context, page, cookie };
  };

  const explainAt = async (i, url) => {
    const r = await get(`${replicaAdmin(i)}/api/v1/explain?url=${encodeURIComponent(url)}&method=GET`, {
      headers: { authorization: `Bearer ${rs.adminToken}` },
      ms: 1000,
    });
    assert.equal(r.status, 200, `explain on replica ${i + 1}: ${r.status} ${r.text.slice(0, 200)}`);
    return r.json;
  };

  /**
   * Polls replica `i`'s explain for `url` until its action is `want` (bounded by `ms`);
   * resolves to the performance.now() at which it first answered so.
   */
  const pollUntil = async (i, url, want, ms) => {
    const deadline = performance.now() + ms;
    while (performance.now() < deadline) {
      const e = await explainAt(i, url);
      if (e.action === want) return performance.now();
      await sleep(2);
    }
    throw new Error(`replica ${i + 1} still did not answer ${want} for ${url} after ${ms} ms`);
  };

  try {
    await scenario(
      names.up,
      async () => {
        const t0 = Date.now();
        await rs.start();
        // Envoy's health checks pass on every replica, on both clusters.
        await waitFor(
          'Envoy: every replica healthy on oidc_authz_grpc and oidc_authz_http',
          async () => {
            const g = await rs.envoyHealth('oidc_authz_grpc');
            const h = await rs.envoyHealth('oidc_authz_http');
            return [g, h].every((c) => Object.keys(c).length === N && Object.values(c).every((f) => f === 'healthy'));
          },
          15_000,
          rs.envoy,
        );
        // One rule set in Redis, written once, and the same on every replica.
        const lists = await Promise.all(
          [0, 1, 2].map(async (i) => (await get(`${replicaAdmin(i)}/api/v1/rules`, { headers: { authorization: `Bearer ${rs.adminToken}` } })).json),
        );
        for (const l of lists) assert.deepEqual(l.rules.map((r) => r.name), ['apps', 'admin', 'refresh', TOGGLE_RULE]);
        const hcs = await rs.envoyStats('health_check.success');
        assert.ok((hcs['cluster.oidc_authz_grpc.health_check.success'] ?? 0) >= N, `gRPC health checks passed: ${JSON.stringify(hcs)}`);
        up = true;
        console.log(
          `      replica stack up in ${((Date.now() - t0) / 1000).toFixed(1)} s: envoy ${rs.ports.envoy}, redis ${rs.ports.redis}, ` +
            `replicas ${rs.ports.replicas.map((r) => `grpc ${r.grpc}/http ${r.http}/admin ${r.admin}`).join(', ')}; logs in target/e2e/replicas/logs/`,
        );
      },
      { always: true },
    );

    await scenario(names.spread, async () => {
      needUp();
      const { context, page, cookie } = await login('rita', '/replicas/home');
      const toIdp = [];
      context.on('request', (r) => {
        if (isIdp(r.url())) toIdp.push(r.url());
      });
      const before = await rs.metricPerReplica('oidc_authz_check_total', 'outcome="allow_session"');
      const REQUESTS = 15;
      for (let k = 0; k < REQUESTS; k += 1) {
        const host = k % 3 === 2 ? HOSTS.app2 : HOSTS.app1;
        const url = app(host, `/replicas/page-${k}`);
        const response = await page.goto(url, { waitUntil: 'domcontentloaded' });
        assert.equal(response.status(), 200, `request ${k + 1} (${url}): ${response.status()}`);
        assert.equal(page.url(), url, `request ${k + 1} stays on ${url} (no redirect to the IdP)`);
        assert.equal(await shownUser(page), 'rita', `request ${k + 1} is served by the backend as rita`);
      }
      await shot(page, 'spread-signed-in-on-every-replica');
      assert.deepEqual(toIdp, [], 'no request went to the IdP after the one login');
      const after = await rs.metricPerReplica('oidc_authz_check_total', 'outcome="allow_session"');
      const delta = after.map((a, i) => a - before[i]);
      console.log(`      allow_session per replica over ${REQUESTS} navigations: ${delta.join(' / ')}`);
      delta.forEach((d, i) => assert.ok(d >= 1, `replica ${i + 1} served some of the requests (allow_session +${d})`));
      assert.ok(delta.reduce((a, b) => a + b, 0) >= REQUESTS, `every navigation was one allow_session: ${delta}`);
      // And each replica, asked directly (not through Envoy), knows the session.
      for (let i = 0; i < N; i += 1) {
        const r = await userinfoAt(i, cookie);
        assert.equal(r.status, 200, `userinfo on replica ${i + 1}: ${r.status} ${r.text.slice(0, 200)}`);
        assert.equal(r.json?.sub, 'rita', `replica ${i + 1} sees rita: ${r.text.slice(0, 200)}`);
      }
      await context.close();
    });

    await scenario(names.console, async () => {
      needUp();
      const target = `http://${TOGGLE_HOST}/replicas/toggle`;
      const asBrowser = { accept: 'text/html,application/xhtml+xml' };
      // Before: every replica asks for a login on the toggle host, and so does Envoy.
      for (let i = 0; i < N; i += 1) assert.equal((await explainAt(i, target)).action, 'login', `replica ${i + 1} asks for a login first`);
      const first = await request({ host: TOGGLE_HOST, path: '/replicas/toggle', headers: asBrowser });
      assert.equal(first.status, 302, `through Envoy, before: ${first.status}`);
      assert.ok(isIdp(first.headers.location), `a redirect to the IdP: ${first.headers.location}`);

      // Replica 1's console, in Chromium, on its admin listener.
      const context = await newContext(browser);
      const page = await context.newPage();
      await page.goto(`${replicaAdmin(0)}/`);
      await page.locator('#login-view').waitFor({ state: 'visible' });
      await page.fill('#token', rs.adminToken);
      await page.click('#login-submit');
      const row = page.locator(`[data-test=rule-row][data-name="${TOGGLE_RULE}"]`);
      await row.waitFor({ state: 'visible' });
      assert.equal((await row.locator('[data-test=status]').textContent()).trim(), 'Enabled');
      await shot(page, 'console-replica-1-before');

      // Flip the rule in the console while replicas 2 and 3 are polled, each on its own.
      const flip = async (button, want, label) => {
        const pollers = [1, 2].map((i) => pollUntil(i, target, want, 5000));
        const answered = page.waitForResponse((r) => r.url().includes(`/api/v1/rules/${TOGGLE_RULE}/`) && r.request().method() === 'POST');
        const clicked = performance.now();
        await row.locator(`[data-test=${button}]`).click();
        const apiAnswer = await answered;
        const acked = performance.now();
        assert.equal(apiAnswer.status(), 200, `the console's ${button} call: ${apiAnswer.status()}`);
        const seen = await Promise.all(pollers);
        const times = seen.map((t) => t - clicked);
        console.log(
          `      ${label}: replica 2 after ${times[0].toFixed(1)} ms, replica 3 after ${times[1].toFixed(1)} ms ` +
            `(from the click; the console's API call answered after ${(acked - clicked).toFixed(1)} ms)`,
        );
        times.forEach((t, k) => assert.ok(t < PROPAGATION_BOUND_MS, `${label}: replica ${k + 2} took ${t.toFixed(1)} ms (bound ${PROPAGATION_BOUND_MS} ms)`));
        return times;
      };

      await flip('disable', 'allow', 'disabled in the console of replica 1, no login asked');
      await row.locator('[data-test=status]', { hasText: 'Disabled' }).waitFor();
      await shot(page, 'console-replica-1-disabled');
      // Through Envoy, on whichever replica: the backend serves the page with no login.
      const before = await rs.metricPerReplica('oidc_authz_check_total', 'outcome="allow_default"');
      for (let k = 0; k < 9; k += 1) {
        const r = await request({ host: TOGGLE_HOST, path: `/replicas/toggle-${k}`, headers: asBrowser });
        assert.equal(r.status, 200, `request ${k + 1} to ${TOGGLE_HOST} after the disable: ${r.status} ${r.headers.location ?? ''}`);
        assert.match(r.body, /id="anonymous"/, 'served by the backend, with no user');
      }
      const allowed = (await rs.metricPerReplica('oidc_authz_check_total', 'outcome="allow_default"')).map((a, i) => a - before[i]);
      console.log(`      allow_default per replica over 9 requests after the disable: ${allowed.join(' / ')}`);
      allowed.forEach((d, i) => assert.ok(d >= 1, `replica ${i + 1} let the toggle host through (allow_default +${d})`));

      // Enabled again from the console: every replica asks for a login again.
      await flip('enable', 'login', 'enabled again in the console of replica 1, login asked');
      await row.locator('[data-test=status]', { hasText: 'Enabled' }).waitFor();
      for (let k = 0; k < 6; k += 1) {
        const r = await request({ host: TOGGLE_HOST, path: `/replicas/toggle-again-${k}`, headers: asBrowser });
        assert.equal(r.status, 302, `request ${k + 1} after the enable: ${r.status}`);
      }
      await shot(page, 'console-replica-1-enabled-again');
      await context.close();
    });

    await scenario(names.backchannel, async () => {
      needUp();
      const { context, page, cookie } = await login('bella', '/replicas/bc');
      for (let i = 0; i < N; i += 1) assert.equal((await userinfoAt(i, cookie)).status, 200, `replica ${i + 1} serves bella's session first`);
      const deliveries = () =>
        rs.idpProc.stdoutText
          .split('\n')
          .filter((l) => l.startsWith('{"backchannel":'))
          .map((l) => JSON.parse(l).backchannel)
          .filter((e) => e.client === 'gateway');
      const delivered0 = deliveries().length;
      const logouts0 = await rs.metricPerReplica('oidc_authz_logouts_total', 'kind="backchannel"');

      // She signs out at the IdP itself; the IdP tells the gateway through Envoy.
      await page.goto(`${rs.issuer}/session/end`, { waitUntil: 'domcontentloaded' });
      await page.click('button[value=yes]');
      await page.waitForURL((u) => isIdp(u) && u.pathname === '/session/end/success', { waitUntil: 'domcontentloaded' });
      await waitFor('the IdP delivered a back-channel logout to the gateway client', async () => deliveries().length > delivered0, 10_000);
      const delivery = deliveries().at(-1);
      assert.equal(delivery.ok, true, `the gateway accepted the logout token: ${JSON.stringify(delivery)}`);
      assert.equal(delivery.sub, 'bella');
      const logouts = (await rs.metricPerReplica('oidc_authz_logouts_total', 'kind="backchannel"')).map((a, i) => a - logouts0[i]);
      const receiver = logouts.findIndex((d) => d === 1);
      assert.deepEqual(logouts.toSorted(), [0, 0, 1], `one replica took the logout token: ${logouts}`);
      console.log(`      the back-channel logout reached replica ${receiver + 1} (through Envoy)`);

      // Every replica, asked directly, no longer knows the session within 1 s of the delivery
      // (a replica may serve a session it read less than 500 ms ago from its local copy).
      const deliveredAt = Date.now();
      const endedAfter = [];
      for (let i = 0; i < N; i += 1) {
        let r = await userinfoAt(i, cookie);
        while (r.status !== 401 && Date.now() - deliveredAt < 1000) {
          await sleep(20);
          r = await userinfoAt(i, cookie);
        }
        endedAfter.push(Date.now() - deliveredAt);
        assert.equal(r.status, 401, `userinfo on replica ${i + 1} 1 s after the logout: ${r.status} ${r.text.slice(0, 200)}`);
      }
      console.log(`      every replica had ended the session ${endedAfter.join(' / ')} ms after the delivery was seen`);
      // And through Envoy, every replica sends the browser to the IdP.
      const redirects0 = await rs.metricPerReplica('oidc_authz_check_total', 'outcome="login_redirect"');
      const sessions0 = await rs.metricPerReplica('oidc_authz_check_total', 'outcome="allow_session"');
      for (let k = 0; k < 12; k += 1) {
        const r = await request({ host: HOSTS.app1, path: `/replicas/bc-${k}`, headers: { cookie, accept: 'text/html,application/xhtml+xml' } });
        assert.equal(r.status, 302, `request ${k + 1} with the ended session: ${r.status}`);
        assert.ok(isIdp(r.headers.location), `to the IdP: ${r.headers.location}`);
      }
      const redirects = (await rs.metricPerReplica('oidc_authz_check_total', 'outcome="login_redirect"')).map((a, i) => a - redirects0[i]);
      const sessions = (await rs.metricPerReplica('oidc_authz_check_total', 'outcome="allow_session"')).map((a, i) => a - sessions0[i]);
      console.log(`      login_redirect per replica over 12 requests with the ended session: ${redirects.join(' / ')}`);
      redirects.forEach((d, i) => assert.ok(d >= 1, `replica ${i + 1} asked for a login (login_redirect +${d})`));
      assert.deepEqual(sessions, [0, 0, 0], 'no replica allowed the ended session');
      // The browser too.
      await page.goto(app(HOSTS.app1, '/replicas/bc-after'), { waitUntil: 'domcontentloaded' });
      await page.locator('input[name=login]').waitFor();
      assert.ok(isIdp(page.url()), `the browser is on the IdP's login page: ${page.url()}`);
      await shot(page, 'backchannel-login-again');
      await context.close();
    });

    await scenario(names.kill, async () => {
      needUp();
      const { context, cookie } = await login('kurt', '/replicas/kill');
      await context.close();
      const killed = 1; // replica 2
      const survivors = [0, 2];
      const lua = path.join(rs.runDir, 'status.lua');
      fs.writeFileSync(lua, WRK_STATUS_LUA);
      const args = [
        '-t1', '-c8', '-d6s', '--timeout', '3s', '-s', lua,
        '-H', `Host: ${HOSTS.app1}:${rs.ports.envoy}`,
        '-H', `Cookie: ${cookie}`,
        '-H', 'Accept: application/json',
        `http://127.0.0.1:${rs.ports.envoy}/headers`,
      ];
      const wrk = rs.track(spawn('wrk', args, { stdio: ['ignore', 'pipe', 'pipe'] }));
      let out = '';
      wrk.on('error', (e) => (out += `spawn error: ${e.message} (apt-get install -y wrk)\n`));
      wrk.stdout.on('data', (d) => (out += d));
      wrk.stderr.on('data', (d) => (out += d));
      const exited = new Promise((resolve) => {
        wrk.once('exit', (code, signal) => resolve({ code, signal }));
        wrk.once('error', () => resolve({ code: -1, signal: null }));
      });
      const guard = setTimeout(() => wrk.kill('SIGKILL'), 30_000);
      let atKill;
      try {
        await sleep(2000);
        assert.equal(wrk.exitCode, null, `wrk is still running at 2 s:\n${out}`);
        atKill = await rs.metricPerReplica('oidc_authz_check_total', 'outcome="allow_session"', survivors);
        rs.replicas[killed].proc.kill('SIGKILL');
        const { code, signal } = await exited;
        assert.equal(signal, null, `wrk ended by ${signal}:\n${out}`);
        assert.equal(code, 0, `wrk exit code ${code}:\n${out}`);
      } finally {
        clearTimeout(guard);
      }
      fs.writeFileSync(path.join(rs.logDir, 'wrk.log'), `wrk ${args.join(' ')}\n${out}`);
      assert.equal(rs.replicas[killed].proc.signalCode, 'SIGKILL', 'replica 2 was killed with SIGKILL');
      const summary = /^\s*(\d+) requests in ([\d.]+\w+), .*$/m.exec(out);
      assert.ok(summary, `wrk printed its summary:\n${out}`);
      const total = Number(summary[1]);
      const statuses = Object.fromEntries([...out.matchAll(/^status (\d+) (\d+)$/gm)].map((m) => [m[1], Number(m[2])]));
      const socketErrors = /Socket errors: (.*)$/m.exec(out)?.[1] ?? 'none';
      const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0);
      const rps = /Requests\/sec:\s*([\d.]+)/.exec(out)?.[1];
      const grpcStats = await rs.envoyStats('cluster.oidc_authz_grpc.');
      const stat = (k) => grpcStats[`cluster.oidc_authz_grpc.${k}`] ?? 0;
      console.log(`      wrk: ${summary[0].trim()} (${rps} req/s); statuses ${JSON.stringify(statuses)}; socket errors: ${socketErrors}; non-2xx/3xx: ${non2xx}`);
      console.log(
        `      envoy oidc_authz_grpc: retries ${stat('upstream_rq_retry')} (succeeded ${stat('upstream_rq_retry_success')}, ` +
          `over budget ${stat('upstream_rq_retry_overflow')}), connect failures ${stat('upstream_cx_connect_fail')}, ` +
          `ejections ${stat('outlier_detection.ejections_enforced_total')} (refused by max_ejection_percent ` +
          `${stat('outlier_detection.ejections_overflow')}), health check failures ${stat('health_check.failure')}`,
      );
      assert.equal(socketErrors, 'none', `no socket error (connect, read, write, timeout): ${socketErrors}`);
      assert.equal(non2xx, 0, 'no non-2xx answer');
      assert.deepEqual(Object.keys(statuses), ['200'], `every answer was 200: ${JSON.stringify(statuses)}`);
      assert.equal(statuses['200'], total, 'every request wrk counted was answered 200');
      assert.ok(total >= 100, `the load ran (${total} requests)`);
      // The load went on after the kill, on the two replicas left.
      const afterKill = (await rs.metricPerReplica('oidc_authz_check_total', 'outcome="allow_session"', survivors)).map((a, k) => a - atKill[k]);
      console.log(`      allow_session after the kill: replica 1 +${afterKill[0]}, replica 3 +${afterKill[1]}`);
      afterKill.forEach((d, k) => assert.ok(d >= 20, `replica ${survivors[k] + 1} carried the load after the kill (+${d})`));
      // Envoy took replica 2 out of the rotation (health check or outlier detection).
      const deadHost = `127.0.0.1:${rs.ports.replicas[killed].grpc}`;
      await waitFor(
        `Envoy marks replica 2 (${deadHost}) unhealthy`,
        async () => /failed_active_hc|failed_outlier_check/.test((await rs.envoyHealth('oidc_authz_grpc'))[deadHost] ?? ''),
        5000,
      );

      // No session lost: the same cookie, through Envoy, again and again, and on each survivor.
      for (let k = 0; k < 12; k += 1) {
        const r = await request({ host: HOSTS.app1, path: `/headers?after-kill-${k}`, headers: { cookie, accept: 'application/json' } });
        assert.equal(r.status, 200, `request ${k + 1} with kurt's cookie after the kill: ${r.status} ${r.body.slice(0, 200)}`);
        assert.equal(r.json?.headers?.['x-auth-request-user'], 'kurt');
      }
      for (const i of survivors) assert.equal((await userinfoAt(i, cookie)).status, 200, `replica ${i + 1} still serves kurt's session`);
      // A new login works on the replicas left (the callback goes through the HTTP cluster).
      const nora = await login('nora', '/replicas/after-kill');
      await shot(nora.page, 'kill-new-login-after-the-kill');
      for (const i of survivors) assert.equal((await userinfoAt(i, nora.cookie)).status, 200, `replica ${i + 1} serves nora's new session`);
      await nora.context.close();
    });
  } finally {
    await rs.stop().catch((e) => console.log(`      (stopping the replica stack: ${e.message})`));
  }
}
