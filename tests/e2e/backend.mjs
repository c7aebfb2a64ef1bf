// The sample backend behind Envoy: it shows what a protected application receives.
//
//   GET /headers (any host)  -> JSON {method, host, url, headers} of the request as received
//   anything else            -> an HTML page with the signed-in user (x-auth-request-user) in
//                               large type, the identity headers, and every header received
//
//   node tests/e2e/backend.mjs --port 8000     (prints {"ready":true,…} once listening)

import http from 'node:http';
import { parseArgs } from 'node:util';

const esc = (s) =>
  String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);

function page(req) {
  const h = req.headers;
  const user = h['x-auth-request-user'];
  const rows = Object.entries(h)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([k, v]) => {
      // Long tokens would fill the screen: show their start only.
      const shown = k === 'authorization' && String(v).length > 60 ? `${String(v).slice(0, 60)}…` : v;
      return `<tr><th>${esc(k)}</th><td>${esc(shown)}</td></tr>`;
    })
    .join('');
  const who = user
    ? `Signed in as <strong id="user">${esc(user)}</strong>`
    : `<span id="anonymous">Not signed in</span> (no <code>x-auth-request-user</code>: a public page)`;
  const signOut = user ? '<p><a id="sign-out" href="/oauth2/sign_out">Sign out</a></p>' : '';
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>Sample backend: ${esc(h.host ?? '')}</title>
<style>
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:60rem;padding:0 1rem;color:#222}
.who{font-size:2rem;margin:1rem 0}.who strong{color:#0a6}
table{border-collapse:collapse;font-size:.85rem}th,td{border:1px solid #ccc;padding:.2rem .5rem;text-align:left;vertical-align:top}
td{word-break:break-all}
</style></head>
<body>
<h1>Sample backend</h1>
<p class="who">${who}</p>
<p>Host <code id="host">${esc(h.host ?? '')}</code>, path <code id="path">${esc(req.url)}</code></p>
<dl>
<dt>email</dt><dd id="email">${esc(h['x-auth-request-email'] ?? '')}</dd>
<dt>preferred username</dt><dd id="username">${esc(h['x-auth-request-preferred-username'] ?? '')}</dd>
<dt>groups</dt><dd id="groups">${esc(h['x-auth-request-groups'] ?? '')}</dd>
<dt>rule</dt><dd id="rule">${esc(h['x-auth-request-rule'] ?? '')}</dd>
</dl>
${signOut}
<h2>Request headers received by the backend</h2>
<table id="headers">${rows}</table>
</body></html>`;
}

export function createBackend() {
  // Identity headers and the upstream bearer token of a user with many groups exceed Node's
  // default 16 KB header limit; Envoy's own limit is 60 KB.
  return http.createServer({ maxHeaderSize: 96 * 1024 }, (req, res) => {
    const path = req.url.split('?')[0];
    if (path === '/headers' || path.endsWith('/headers')) {
      const body = JSON.stringify({ method: req.method, host: req.headers.host, url: req.url, headers: req.headers });
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      res.end(body);
      return;
    }
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
    res.end(req.method === 'HEAD' ? undefined : page(req));
  });
}

export async function startBackend({ host = '127.0.0.1', port }) {
  const server = createBackend();
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, resolve);
  });
  return {
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections?.();
      }),
  };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({
    options: { host: { type: 'string', default: '127.0.0.1' }, port: { type: 'string' } },
  });
  if (!values.port) {
    console.error('usage: backend.mjs --port N');
    process.exit(2);
  }
  const b = await startBackend({ host: values.host, port: Number(values.port) });
  console.log(JSON.stringify({ ready: true, port: Number(values.port) }));
  const stop = async () => {
    await b.close();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}
