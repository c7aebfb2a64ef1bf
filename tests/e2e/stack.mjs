// The whole stack on loopback, shared by the end-to-end suite (suite.mjs) and `make demo`
// (demo.mjs): the development IdP (idp.mjs), the sample backend (backend.mjs), the release
// binary of oidc-authz, and Envoy. They run the COMMITTED files that docker-compose.yml mounts:
// envoy/envoy.yaml, deploy/compose/oidc-authz.yaml and deploy/compose/idp.json, with the
// compose service names mapped to 127.0.0.1, the ports rewritten to free ones, and the
// *.demo.localhost hosts to the stack's own domain (see renderEnvoyConfig, renderOidcAuthzConfig
// and renderIdpSettings). Every process is a child of this Node process, logs to
// target/e2e/logs/, is waited for with a bound, and is stopped by `stack.stop()` (also on exit).

import { spawn } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const E2E_DIR = path.dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = path.resolve(E2E_DIR, '..', '..');
/** Where the suite's screenshots, logs (logs/) and generated configurations (run/) go. */
export const OUT_DIR = path.join(REPO_ROOT, 'target', 'e2e');
/** The configuration files of docker-compose.yml (and of this stack). */
export const COMPOSE_DIR = path.join(REPO_ROOT, 'deploy', 'compose');
export const ENVOY_YAML = path.join(REPO_ROOT, 'envoy', 'envoy.yaml');

/** The hosts of the stack under one parent domain (its cookie_domain). */
export function hostsFor(domain) {
  return {
    domain,
    app1: `app1.${domain}`,
    app2: `app2.${domain}`,
    admin: `admin.${domain}`,
    api: `api.${domain}`,
    other: `other.${domain}`,
    // the rule `refresh` (the IdP's client with short-lived tokens), host-only session cookie
    refresh: `refresh.${domain}`,
  };
}

/** The suite's hosts: Chromium maps them to 127.0.0.1 (--host-resolver-rules). */
export const HOSTS = hostsFor('example.test');

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A port that is free on 127.0.0.1 right now (the OS picks it). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.unref();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** `n` distinct free ports. */
export async function freePorts(n) {
  const ports = new Set();
  while (ports.size < n) ports.add(await freePort());
  return [...ports];
}

/** Polls `probe` (async, truthy when ready) every 100 ms for at most `ms`. */
export async function waitFor(what, probe, ms, proc) {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    if (proc && proc.exitCode !== null) {
      throw new Error(`${what}: the process exited (code ${proc.exitCode}) before it was ready; see ${proc.logFile}`);
    }
    try {
      if (await probe()) return;
    } catch (e) {
      last = e;
    }
    await sleep(100);
  }
  throw new Error(`${what} was not ready within ${ms} ms${last ? ` (last error: ${last.message})` : ''}`);
}

/** GET with a bound; resolves to { status, text } or rejects. */
async function get(url, ms = 2000) {
  const r = await fetch(url, { signal: AbortSignal.timeout(ms) });
  return { status: r.status, text: await r.text() };
}

/**
 * One raw HTTP/1.1 request to the Envoy on `port`, as a non-browser client would send it
 * (node:http lets us set any Host and header, and does not follow redirects). Resolves to
 * { status, headers, body, json }.
 */
export function envoyRequest(port, { host, path: p = '/', method = 'GET', headers = {}, body, timeoutMs = 10_000 }) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        method,
        path: p,
        headers: { host: `${host}:${port}`, ...headers },
        timeout: timeoutMs,
        agent: false,
      },
      (res) => {
        let data = '';
        res.setEncoding('utf8');
        res.on('data', (c) => (data += c));
        res.on('end', () => {
          let json;
          try {
            json = JSON.parse(data);
          } catch {
            json = undefined;
          }
          resolve({ status: res.statusCode, headers: res.headers, body: data, json });
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error(`${method} ${host}${p}: no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    if (body) req.write(body);
    req.end();
  });
}

/**
 * Starts Envoy on `configFile` (a fresh base id, no hot restart, so several may run at once) and
 * waits (bounded) until its admin on `adminPort` says LIVE. `track` receives the process before
 * the wait, so that it is stopped with the rest even when Envoy never gets ready.
 */
export async function startEnvoy({ logDir, bin, configFile, adminPort, name = 'envoy', concurrency = 2, track = (p) => p }) {
  const proc = track(
    startProcess(logDir, name, bin, [
      '-c', configFile,
      '--base-id', String(randomInt(1000, 2 ** 30)),
      '--disable-hot-restart',
      '--log-level', 'warn',
      '--concurrency', String(concurrency),
    ]),
  );
  await waitFor(
    `${name} /ready`,
    async () => {
      const r = await get(`http://127.0.0.1:${adminPort}/ready`);
      return r.status === 200 && r.text.trim() === 'LIVE';
    },
    30000,
    proc,
  );
  return proc;
}

/**
 * Applies `subs` ([regexp, replacement, what, expected count]) to `source`. Each pattern must
 * occur exactly as often as expected, so a change to a committed file that the suite does not
 * understand fails loudly instead of testing something else.
 */
function substitute(file, source, subs) {
  let out = source;
  for (const [re, to, what, count = 1] of subs) {
    const global = new RegExp(re.source, re.flags.includes('g') ? re.flags : `${re.flags}g`);
    const n = (out.match(global) ?? []).length;
    const ok = count === '*' || (count === '+' ? n > 0 : n === count);
    if (!ok) throw new Error(`${file}: expected ${count === '+' ? 'at least one' : count === 1 ? 'exactly one' : count} ${what}, found ${n}`);
    out = out.replace(global, to);
  }
  return out;
}

/**
 * The committed envoy/envoy.yaml (the one docker-compose.yml runs) with the compose service
 * names mapped to 127.0.0.1, and its literal ports and listen address rewritten (the same
 * substitutions as `sed -e 's/^\(\s*port_value:\) 8080$/\1 N/' -e 's/address: oidc-authz$/…/' …`).
 */
export function renderEnvoyConfig(source, { envoy, envoyAdmin, grpc, http, backend }) {
  return substitute('envoy/envoy.yaml', source, [
    [/^(\s*port_value:) 8080$/m, `$1 ${envoy}`, 'listener port 8080 line'],
    [/^(\s*port_value:) 9901$/m, `$1 ${envoyAdmin}`, 'admin port 9901 line'],
    [/^(\s*port_value:) 9001$/m, `$1 ${grpc}`, 'oidc-authz gRPC port 9001 line'],
    [/^(\s*port_value:) 9002$/m, `$1 ${http}`, 'oidc-authz HTTP port 9002 line'],
    [/^(\s*port_value:) 8000$/m, `$1 ${backend}`, 'backend port 8000 line'],
    [/^(\s*address:) 0\.0\.0\.0$/m, '$1 127.0.0.1', 'listener address 0.0.0.0 line'],
    [/^(\s*address:) oidc-authz$/m, '$1 127.0.0.1', '`address: oidc-authz` lines (gRPC and HTTP clusters)', 2],
    [/^(\s*address:) backend$/m, '$1 127.0.0.1', '`address: backend` line'],
  ]);
}

/**
 * The names of docker-compose.yml in the committed compose files, mapped to the stack's: the
 * IdP's issuer, the *.demo.localhost hosts on Envoy's port 8080 (the stack's domain and Envoy
 * port), and Envoy's address as the IdP's gateway.
 */
function mapComposeNames(file, source, { hosts, issuer, envoyPort }) {
  return substitute(file, source, [
    [/http:\/\/idp\.demo\.localhost:3000/, issuer, 'issuer http://idp.demo.localhost:3000', '+'],
    [/\.demo\.localhost:8080\b/, `.${hosts.domain}:${envoyPort}`, 'origin on *.demo.localhost:8080', '+'],
    // what is left: host names and the cookie domain
    [/\bdemo\.localhost\b/, hosts.domain, 'name under demo.localhost', '*'],
  ]);
}

/**
 * A committed oidc-authz configuration of docker-compose.yml (deploy/compose/oidc-authz.yaml,
 * or oidc-authz-ha.yaml) for this stack: listeners on 127.0.0.1 and the given ports, the names
 * mapped (mapComposeNames), the file rule store at `rulesFile`, and Redis at `redisUrl`.
 * Secrets stay `${…}` references: oidc-authz reads them from the environment (secretEnv()).
 */
export function renderOidcAuthzConfig(file, { ports, hosts, issuer, rulesFile, redisUrl }) {
  const source = fs.readFileSync(path.join(COMPOSE_DIR, file), 'utf8');
  const subs = [
    [/^(\s*grpc_listen:) 0\.0\.0\.0:9001$/m, `$1 127.0.0.1:${ports.grpc}`, 'grpc_listen: 0.0.0.0:9001 line'],
    [/^(\s*http_listen:) 0\.0\.0\.0:9002$/m, `$1 127.0.0.1:${ports.http}`, 'http_listen: 0.0.0.0:9002 line'],
    [/^(\s*admin_listen:) 0\.0\.0\.0:9003$/m, `$1 127.0.0.1:${ports.admin}`, 'admin_listen: 0.0.0.0:9003 line'],
  ];
  if (rulesFile) subs.push([/^rules_store: file:\/var\/lib\/oidc-authz\/rules\.yaml$/m, `rules_store: file:${rulesFile}`, 'rules_store: file:/var/lib/oidc-authz/rules.yaml line']);
  if (redisUrl) subs.push([/redis:\/\/redis:6379\/0$/m, redisUrl, 'redis://redis:6379/0 (redis_url and rules_store)', 2]);
  const out = substitute(`deploy/compose/${file}`, source, subs);
  return mapComposeNames(`deploy/compose/${file}`, out, { hosts, issuer, envoyPort: ports.envoy });
}

/** The single-replica configuration (deploy/compose/oidc-authz.yaml) of the stack. */
export function oidcAuthzConfig({ ports, hosts, issuer, rulesFile }) {
  return renderOidcAuthzConfig('oidc-authz.yaml', { ports, hosts, issuer, rulesFile });
}

/** deploy/compose/idp.json for this stack (mapComposeNames; it listens on 127.0.0.1). */
export function renderIdpSettings({ hosts, issuer, ports }) {
  const source = fs.readFileSync(path.join(COMPOSE_DIR, 'idp.json'), 'utf8');
  const settings = JSON.parse(mapComposeNames('deploy/compose/idp.json', source, { hosts, issuer, envoyPort: ports.envoy }));
  if (settings.gateway !== 'envoy:8080') throw new Error(`deploy/compose/idp.json: expected gateway envoy:8080, found ${settings.gateway}`);
  return { ...settings, listen: { host: '127.0.0.1', port: ports.idp }, gateway: `127.0.0.1:${ports.envoy}` };
}

/** A child process with its output in <logDir>/<name>.log. */
export function startProcess(logDir, name, cmd, args, { env, cwd, stdin = 'ignore' } = {}) {
  fs.mkdirSync(logDir, { recursive: true });
  const logFile = path.join(logDir, `${name}.log`);
  const log = fs.openSync(logFile, 'a');
  fs.writeSync(log, `\n---- ${new Date().toISOString()} ${cmd} ${args.join(' ')}\n`);
  const child = spawn(cmd, args, {
    cwd: cwd ?? REPO_ROOT,
    env: { ...process.env, ...env },
    stdio: [stdin, 'pipe', log],
  });
  fs.closeSync(log);
  child.logFile = logFile;
  child.label = name;
  child.stdoutText = '';
  child.stdout.on('data', (d) => {
    child.stdoutText += d;
    fs.appendFileSync(logFile, d);
  });
  child.on('error', (e) => fs.appendFileSync(logFile, `spawn error: ${e.message}\n`));
  child.stdin?.on('error', () => {});
  return child;
}

/** Stops a child: SIGTERM, then SIGKILL after `ms`. Resolves once it exited. */
export function stopProcess(child, ms = 5000) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), ms);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill('SIGCONT'); // in case a scenario froze it
    child.kill('SIGTERM');
  });
}

export class Stack {
  constructor(opts = {}) {
    this.envoyBin = opts.envoyBin ?? process.env.ENVOY_BIN ?? 'envoy';
    this.oidcAuthzBin = opts.oidcAuthzBin ?? process.env.OIDC_AUTHZ_BIN ?? path.join(REPO_ROOT, 'target', 'release', 'oidc-authz');
    this.fixedPorts = opts.ports ?? {};
    this.hosts = opts.hosts ?? HOSTS;
    this.outDir = opts.outDir ?? OUT_DIR;
    this.logDir = path.join(this.outDir, 'logs');
    this.logLevel = opts.logLevel ?? process.env.OIDC_AUTHZ_LOG ?? 'info,oidc_authz=debug';
    this.children = new Set();
    this.idpProc = null;
    this.idpGeneration = 0;
    this.clientSecret = `client-${randomBytes(12).toString('hex')}`;
    this.apiClientSecret = `api-${randomBytes(12).toString('hex')}`;
    this.sessionSecret = randomBytes(32).toString('base64');
    this.adminToken = randomBytes(24).toString('hex');
  }

  origin(host) {
    return `http://${host}:${this.ports.envoy}`;
  }

  get issuer() {
    return `http://127.0.0.1:${this.ports.idp}`;
  }

  /** The secrets the committed configurations read from the environment (`${NAME}`). */
  secretEnv() {
    return {
      OIDC_AUTHZ_ADMIN_TOKEN: this.adminToken,
      OIDC_AUTHZ_SESSION_SECRET: this.sessionSecret,
      DEMO_CLIENT_SECRET: this.clientSecret,
      DEMO_API_CLIENT_SECRET: this.apiClientSecret,
    };
  }

  track(child) {
    this.children.add(child);
    child.once('exit', () => this.children.delete(child));
    return child;
  }

  async start() {
    const names = ['envoy', 'envoyAdmin', 'grpc', 'http', 'admin', 'backend', 'idp'];
    const picked = await freePorts(names.length);
    this.ports = Object.fromEntries(names.map((n, i) => [n, Number(this.fixedPorts[n] ?? picked[i])]));
    fs.rmSync(this.logDir, { recursive: true, force: true });
    fs.mkdirSync(this.logDir, { recursive: true });
    const runDir = path.join(this.outDir, 'run');
    fs.mkdirSync(runDir, { recursive: true });

    // A safety net: children never outlive this process.
    process.once('exit', () => {
      for (const c of this.children) c.kill('SIGKILL');
    });

    await Promise.all([this.startIdp(), this.startBackend()]);

    if (!fs.existsSync(this.oidcAuthzBin)) {
      throw new Error(`${this.oidcAuthzBin} not found: run cargo build --release first`);
    }
    this.configFile = path.join(runDir, 'oidc-authz.yaml');
    // The file rule store starts empty: the configuration's rules are imported.
    this.rulesFile = path.join(runDir, 'rules.yaml');
    fs.rmSync(this.rulesFile, { force: true });
    fs.writeFileSync(
      this.configFile,
      oidcAuthzConfig({ ports: this.ports, hosts: this.hosts, issuer: this.issuer, rulesFile: this.rulesFile }),
    );
    await this.startOidcAuthz();

    const envoySource = fs.readFileSync(ENVOY_YAML, 'utf8');
    this.envoyConfigFile = path.join(runDir, 'envoy.yaml');
    fs.writeFileSync(this.envoyConfigFile, renderEnvoyConfig(envoySource, this.ports));
    this.envoy = await startEnvoy({
      logDir: this.logDir,
      bin: this.envoyBin,
      configFile: this.envoyConfigFile,
      adminPort: this.ports.envoyAdmin,
      track: (p) => this.track(p),
    });
    return this;
  }

  /** Starts oidc-authz (again, with the same configuration and session secret). */
  async startOidcAuthz() {
    this.oidcAuthz = this.track(
      startProcess(this.logDir, 'oidc-authz', this.oidcAuthzBin, ['serve', '--config', this.configFile], {
        env: { ...this.secretEnv(), OIDC_AUTHZ_LOG: this.logLevel, RUST_BACKTRACE: '1' },
      }),
    );
    // Ready: the listeners are up and every rule's discovery document and keys are loaded.
    await waitFor(
      'oidc-authz /readyz',
      async () => (await get(`http://127.0.0.1:${this.ports.http}/readyz`)).status === 200,
      20000,
      this.oidcAuthz,
    );
  }

  /**
   * Restarts oidc-authz with its configuration passed through `transform(yaml) -> yaml`
   * (`null`: back to the original configuration).
   */
  async reconfigureOidcAuthz(transform) {
    this.originalConfig ??= fs.readFileSync(this.configFile, 'utf8');
    const yaml = transform ? transform(this.originalConfig) : this.originalConfig;
    await this.stopOidcAuthz();
    fs.writeFileSync(this.configFile, yaml);
    await this.startOidcAuthz();
  }

  /** Stops oidc-authz (SIGTERM: it drains, then exits); resolves to its exit code. */
  async stopOidcAuthz() {
    await stopProcess(this.oidcAuthz, 10000);
    return this.oidcAuthz.exitCode;
  }

  async startBackend() {
    this.backend = this.track(
      startProcess(this.logDir, 'backend', process.execPath, [path.join(E2E_DIR, 'backend.mjs'), '--port', String(this.ports.backend)]),
    );
    await waitFor('backend', async () => this.backend.stdoutText.includes('"ready":true'), 10000, this.backend);
  }

  /** Starts the IdP (again): a new process, a new signing key. Resolves to its kid. */
  async startIdp() {
    if (this.idpProc && this.idpProc.exitCode === null) throw new Error('the IdP is already running');
    this.idpGeneration += 1;
    // deploy/compose/idp.json, mapped: the first app origin is the gateway client's
    // back-channel logout origin.
    const settingsFile = path.join(this.outDir, 'run', 'idp.json');
    fs.mkdirSync(path.dirname(settingsFile), { recursive: true });
    fs.writeFileSync(settingsFile, JSON.stringify(renderIdpSettings({ hosts: this.hosts, issuer: this.issuer, ports: this.ports }), null, 2));
    const child = this.track(
      startProcess(this.logDir, 'idp', process.execPath, [path.join(E2E_DIR, 'idp.mjs'), '--settings', settingsFile], {
        stdin: 'pipe',
        env: this.secretEnv(),
      }),
    );
    this.idpProc = child;
    await waitFor('IdP', async () => child.stdoutText.includes('"ready":true'), 15000, child);
    const line = child.stdoutText.split('\n').find((l) => l.includes('"ready":true'));
    this.idpKid = JSON.parse(line).kid;
    return this.idpKid;
  }

  async stopIdp() {
    await stopProcess(this.idpProc);
  }

  /**
   * Arms the IdP's test hook (idp.mjs): right after its next redirect to an /oauth2/callback,
   * the IdP exits (`exit`) or freezes itself with SIGSTOP (`freeze`; `thawIdp()` resumes it);
   * `dropreused`: its next token request is dropped if it arrives on a kept-alive connection.
   */
  async armIdp(action) {
    const child = this.idpProc;
    const before = child.stdoutText.length;
    child.stdin.write(`arm ${action}\n`);
    await waitFor(`IdP armed (${action})`, async () => child.stdoutText.slice(before).includes(`"armed":"${action}"`), 5000, child);
  }

  /** Resumes a frozen IdP. */
  thawIdp() {
    if (this.idpProc.exitCode === null) this.idpProc.kill('SIGCONT');
  }

  /** oidc-authz's Prometheus metrics as { name{labels}: value }. */
  async metrics() {
    const r = await get(`http://127.0.0.1:${this.ports.http}/metrics`);
    const out = {};
    for (const line of r.text.split('\n')) {
      if (!line || line.startsWith('#')) continue;
      const i = line.lastIndexOf(' ');
      out[line.slice(0, i)] = Number(line.slice(i + 1));
    }
    return out;
  }

  async stop() {
    const all = [...this.children];
    // Envoy first (no new requests), then oidc-authz (drains), then the rest.
    await stopProcess(this.envoy);
    await stopProcess(this.oidcAuthz, 10000);
    await Promise.all(all.map((c) => stopProcess(c)));
  }
}
