// Tracing end to end (issue 11): real Envoy 1.40 with its OpenTelemetry tracer
// (`envoy.tracers.opentelemetry`, OTLP/gRPC) and oidc-authz exporting with the standard
// OTEL_EXPORTER_OTLP_ENDPOINT, both to one OTLP receiver (examples/otlp_receiver.rs, which
// writes each span it receives as a JSON line). Run by suite.mjs after its own scenarios; its
// scenarios count into the same `N passed, M failed` line:
//
//   - one request through Envoy: one trace id holds Envoy's spans and oidc-authz's
//     `ext_authz.Check`, whose parent is the span Envoy names in the Check's gRPC metadata;
//   - a login through Envoy: the callback (Envoy → oidc-authz's HTTP listener) and its
//     `idp.token` child span are in Envoy's trace, and the IdP call carries that trace;
//   - a request through Envoy whose session's ID token has expired: Envoy's span, our
//     `ext_authz.Check` and its `idp.refresh` child, in one trace.
//
// The stack is the suite's (stack.mjs), with oidc-authz started with the OTEL variables and
// Envoy restarted on the committed envoy/envoy.yaml plus a test-only `tracing:` block and a
// collector cluster. Everything is a child process, stopped at the end, also on failure. Logs:
// target/e2e/tracing/logs/; received spans: target/e2e/tracing/spans.jsonl.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';

import { HOSTS, OUT_DIR, REPO_ROOT, Stack, freePort, sleep, startEnvoy, startProcess, stopProcess, waitFor } from './stack.mjs';

const TRACING_DIR = path.join(OUT_DIR, 'tracing');
const RECEIVER_BIN = path.join(REPO_ROOT, 'target', 'release', 'examples', 'otlp_receiver');
/** Envoy's OpenTelemetry tracer sends its spans on the stats flush (every 5 s): wait longer. */
const SPANS_WAIT_MS = 20_000;

/**
 * The suite's Envoy configuration with tracing on: every request sampled, spans to the
 * `otlp_collector` cluster over OTLP/gRPC. The `stat_prefix: ingress_http` line must occur
 * exactly once, so a change this module does not understand fails loudly.
 */
export function withEnvoyTracing(envoyYaml, collectorPort) {
  const anchor = /^(\s*)stat_prefix: ingress_http$/m;
  const matches = envoyYaml.match(new RegExp(anchor.source, 'gm')) ?? [];
  if (matches.length !== 1) throw new Error(`envoy config: expected one "stat_prefix: ingress_http" line, found ${matches.length}`);
  const clusters = /^(\s*)clusters:$/m;
  if (!clusters.test(envoyYaml)) throw new Error('envoy config: no clusters: line');
  return envoyYaml
    .replace(anchor, (line, indent) =>
      [
        line,
        `${indent}tracing:`,
        `${indent}  random_sampling: { value: 100 }`,
        `${indent}  provider:`,
        `${indent}    name: envoy.tracers.opentelemetry`,
        `${indent}    typed_config:`,
        `${indent}      "@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig`,
        `${indent}      service_name: envoy`,
        `${indent}      grpc_service:`,
        `${indent}        envoy_grpc: { cluster_name: otlp_collector }`,
        `${indent}        timeout: 1s`,
      ].join('\n'),
    )
    .replace(clusters, (line, indent) =>
      [
        line,
        `${indent}  - name: otlp_collector`,
        `${indent}    type: STATIC`,
        `${indent}    connect_timeout: 1s`,
        `${indent}    typed_extension_protocol_options:`,
        `${indent}      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:`,
        `${indent}        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions`,
        `${indent}        explicit_http_config: { http2_protocol_options: {} }`,
        `${indent}    load_assignment:`,
        `${indent}      cluster_name: otlp_collector`,
        `${indent}      endpoints:`,
        `${indent}        - lb_endpoints:`,
        `${indent}            - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: ${collectorPort} } } }`,
      ].join('\n'),
    );
}

/** The suite's stack, with oidc-authz exporting spans to `endpoint`. */
class TracingStack extends Stack {
  constructor(endpoint) {
    super({ outDir: TRACING_DIR });
    this.otlpEndpoint = endpoint;
  }

  /** The variables oidc-authz starts with (stack.mjs's `startOidcAuthz`), plus tracing's. */
  secretEnv() {
    return {
      ...super.secretEnv(),
      OIDC_AUTHZ_LOG_FORMAT: 'json',
      OTEL_EXPORTER_OTLP_ENDPOINT: this.otlpEndpoint,
      OTEL_SERVICE_NAME: 'oidc-authz',
      OTEL_BSP_SCHEDULE_DELAY: '200',
    };
  }

  /** Replaces the suite's Envoy with one whose tracer sends to `collectorPort`. */
  async restartEnvoyTraced(collectorPort) {
    await stopProcess(this.envoy);
    const traced = path.join(path.dirname(this.envoyConfigFile), 'envoy-traced.yaml');
    fs.writeFileSync(traced, withEnvoyTracing(fs.readFileSync(this.envoyConfigFile, 'utf8'), collectorPort));
    this.envoy = await startEnvoy({
      logDir: this.logDir,
      bin: this.envoyBin,
      configFile: traced,
      adminPort: this.ports.envoyAdmin,
      name: 'envoy-traced',
      concurrency: 1,
      track: (p) => this.track(p),
    });
  }
}

/** GET /private through Envoy with `headers` (node:http: any Host); resolves to { status }. */
function viaEnvoy(port, headers) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: '/private', headers, timeout: 5000, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode }));
    });
    req.on('timeout', () => req.destroy(new Error('no answer from Envoy within 5 s')));
    req.on('error', reject);
    req.end();
  });
}

/** The spans received so far. */
function readSpans(file) {
  if (!fs.existsSync(file)) return [];
  return fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l));
}

/** Waits (bounded) until `pred(spans)` holds; resolves to the spans. */
async function spansUntil(file, what, pred) {
  const deadline = Date.now() + SPANS_WAIT_MS;
  for (;;) {
    const spans = readSpans(file);
    if (pred(spans)) return spans;
    if (Date.now() > deadline) {
      throw new Error(`${what}: not received within ${SPANS_WAIT_MS} ms; spans: ${JSON.stringify(spans.map((s) => [s.service, s.name, s.trace_id, s.span_id, s.parent_span_id]))}`);
    }
    await sleep(200);
  }
}

export async function runTracingScenarios({ browser, scenario, only, newContext, signInAtIdp }) {
  const names = {
    check: 'tracing: a request through Envoy (OpenTelemetry tracer): Envoy\'s spans and ext_authz.Check share one trace',
    login: 'tracing: a login through Envoy: the callback and its idp.token child span are in Envoy\'s trace',
    refresh: 'tracing: a refresh inside Check: Envoy\'s span, ext_authz.Check and its idp.refresh child share one trace',
  };
  if (only && !Object.values(names).some((n) => n.toLowerCase().includes(only.toLowerCase()))) return;

  fs.rmSync(TRACING_DIR, { recursive: true, force: true });
  fs.mkdirSync(TRACING_DIR, { recursive: true });
  const spansFile = path.join(TRACING_DIR, 'spans.jsonl');
  let receiver;
  let ts;
  let up = false;

  const setUp = async () => {
    if (!fs.existsSync(RECEIVER_BIN)) {
      const built = spawnSync('cargo', ['build', '--release', '--quiet', '--example', 'otlp_receiver'], { cwd: REPO_ROOT, stdio: 'inherit', timeout: 900_000 });
      if (built.status !== 0) throw new Error('cannot build examples/otlp_receiver');
    }
    const port = await freePort();
    receiver = startProcess(path.join(TRACING_DIR, 'receiver'), 'otlp-receiver', RECEIVER_BIN, [`127.0.0.1:${port}`, spansFile]);
    await waitFor('otlp receiver', async () => receiver.stdoutText.includes('listening on'), 10000, receiver);
    ts = new TracingStack(`http://127.0.0.1:${port}`);
    await ts.start();
    await ts.restartEnvoyTraced(port);
    up = true;
  };

  try {
    await scenario(names.check, async () => {
      if (!up) await setUp();
      const requestId = `trace-e2e-${Date.now()}`;
      // An API request without a session: Envoy asks oidc-authz, which answers 401.
      const r = await viaEnvoy(ts.ports.envoy, { host: `${HOSTS.app1}:${ts.ports.envoy}`, accept: 'application/json', 'x-request-id': requestId });
      assert.equal(r.status, 401, 'an API request without credentials is 401');
      const ours = (spans) => spans.find((s) => s.service === 'oidc-authz' && s.name === 'ext_authz.Check' && s.attributes.outcome === 'unauthorized');
      const spans = await spansUntil(spansFile, 'Envoy\'s spans and ext_authz.Check in one trace', (all) => {
        const check = ours(all);
        return check && all.some((s) => s.service === 'envoy' && s.trace_id === check.trace_id && s.span_id === check.parent_span_id);
      });
      const check = ours(spans);
      const trace = spans.filter((s) => s.trace_id === check.trace_id);
      const parent = trace.find((s) => s.span_id === check.parent_span_id);
      assert.equal(parent.service, 'envoy', 'the Check span\'s parent is an Envoy span');
      assert.equal(check.kind, 2, 'ext_authz.Check is a SERVER span');
      assert.equal(check.attributes.rule, 'apps');
      assert.equal(check.attributes['http.request.method'], 'GET');
      assert.equal(check.attributes['server.address'], HOSTS.app1);
      const envoySpans = trace.filter((s) => s.service === 'envoy');
      assert.ok(envoySpans.length >= 1, 'Envoy\'s own spans are in the trace');
      console.log(
        `      trace ${check.trace_id}: ${trace.map((s) => `${s.service}:${s.name}(${s.span_id}<-${s.parent_span_id || 'root'})`).join(', ')}`,
      );
      assert.ok(!/Some\(/.test(fs.readFileSync(ts.oidcAuthz.logFile, 'utf8')), 'no Some(..) in the logs');
    });

    await scenario(names.login, async () => {
      if (!up) await setUp();
      const context = await newContext(browser);
      try {
        const page = await context.newPage();
        const start = `http://${HOSTS.app1}:${ts.ports.envoy}/traced`;
        await page.goto(start, { waitUntil: 'domcontentloaded' });
        await signInAtIdp(page, 'alice', { screenshots: false, issuer: ts.issuer });
        await page.waitForURL(start, { waitUntil: 'domcontentloaded' });
      } finally {
        await context.close();
      }
      const isToken = (s) => s.service === 'oidc-authz' && s.name === 'idp.token';
      const spans = await spansUntil(spansFile, 'the callback trace with Envoy\'s span and idp.token', (all) => {
        const token = all.find(isToken);
        if (!token) return false;
        const callback = all.find((s) => s.span_id === token.parent_span_id);
        return callback && all.some((s) => s.service === 'envoy' && s.span_id === callback.parent_span_id && s.trace_id === token.trace_id);
      });
      const token = spans.find(isToken);
      const callback = spans.find((s) => s.span_id === token.parent_span_id);
      assert.equal(callback.name, 'GET /oauth2/callback', 'the token call is a child of the callback span');
      assert.equal(callback.service, 'oidc-authz');
      assert.equal(token.kind, 3, 'idp.token is a CLIENT span');
      assert.equal(token.attributes['http.response.status_code'], '200');
      const trace = spans.filter((s) => s.trace_id === token.trace_id);
      console.log(
        `      trace ${token.trace_id}: ${trace.map((s) => `${s.service}:${s.name}(${s.span_id}<-${s.parent_span_id || 'root'})`).join(', ')}`,
      );
      // Who signed in, on the JSON line; never a token.
      const lines = fs.readFileSync(ts.oidcAuthz.logFile, 'utf8').split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));
      const done = lines.find((l) => l.message === 'login completed');
      assert.ok(done, 'a login completed line');
      assert.ok(done.x_request_id, `the line carries the callback's x-request-id (Envoy's): ${JSON.stringify(done)}`);
      assert.match(String(done.sub), /alice/);
      assert.ok(!fs.readFileSync(ts.oidcAuthz.logFile, 'utf8').includes('eyJ'), 'no token in the logs');
    });

    await scenario(names.refresh, async () => {
      if (!up) await setUp();
      // The rule `refresh` uses the IdP client whose ID tokens live 10 s.
      const context = await newContext(browser);
      try {
        const page = await context.newPage();
        const start = `http://${HOSTS.refresh}:${ts.ports.envoy}/traced-refresh`;
        await page.goto(start, { waitUntil: 'domcontentloaded' });
        await signInAtIdp(page, 'alice', { screenshots: false, issuer: ts.issuer });
        await page.waitForURL(start, { waitUntil: 'domcontentloaded' });
        await sleep(11_500);
        const after = `http://${HOSTS.refresh}:${ts.ports.envoy}/traced-refresh-after`;
        const response = await page.goto(after, { waitUntil: 'domcontentloaded' });
        assert.equal(response.status(), 200, 'served after the refresh, with no login');
        assert.equal(page.url(), after, 'no trip to the IdP');
      } finally {
        await context.close();
      }
      const isRefresh = (s) => s.service === 'oidc-authz' && s.name === 'idp.refresh';
      const spans = await spansUntil(spansFile, 'Envoy\'s span, ext_authz.Check and idp.refresh in one trace', (all) => {
        const refresh = all.find(isRefresh);
        if (!refresh) return false;
        const check = all.find((s) => s.span_id === refresh.parent_span_id);
        return check && all.some((s) => s.service === 'envoy' && s.span_id === check.parent_span_id && s.trace_id === refresh.trace_id);
      });
      const refresh = spans.find(isRefresh);
      const check = spans.find((s) => s.span_id === refresh.parent_span_id);
      assert.equal(check.name, 'ext_authz.Check', 'the refresh is a child of the Check span');
      assert.equal(check.attributes.rule, 'refresh');
      assert.equal(check.attributes.outcome, 'allow_session');
      assert.equal(refresh.kind, 3, 'idp.refresh is a CLIENT span');
      assert.equal(refresh.trace_id, check.trace_id);
      const trace = spans.filter((s) => s.trace_id === refresh.trace_id);
      console.log(
        `      trace ${refresh.trace_id}: ${trace.map((s) => `${s.service}:${s.name}(${s.span_id}<-${s.parent_span_id || 'root'})`).join(', ')}`,
      );
    });
  } finally {
    await ts?.stop().catch(() => {});
    await stopProcess(receiver);
  }
}
