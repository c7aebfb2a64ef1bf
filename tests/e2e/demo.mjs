// `make demo` / scripts/demo.sh: the end-to-end stack, left running for a person with a browser.
// Envoy, oidc-authz, the development IdP and the sample backend, on loopback, under
// *.demo.localhost (browsers resolve every *.localhost name to 127.0.0.1 by themselves), with
// the configuration files of docker-compose.yml (stack.mjs maps their names to loopback). The
// rules live in a file store under target/demo/run/ (emptied at each start, then filled from
// the configuration), so the admin console can edit, disable and delete them.
// Ctrl-C (or SIGTERM) stops everything.
//
//   DEMO_PORT (default 8080, or a free port when 8080 is taken), DEMO_DOMAIN (default demo.localhost)

import path from 'node:path';

import { REPO_ROOT, Stack, freePort, hostsFor } from './stack.mjs';

async function portIsFree(port) {
  const net = await import('node:net');
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

const wanted = Number(process.env.DEMO_PORT ?? 8080);
const envoyPort = (await portIsFree(wanted)) ? wanted : await freePort();
const hosts = hostsFor(process.env.DEMO_DOMAIN ?? 'demo.localhost');
const stack = new Stack({
  hosts,
  ports: { envoy: envoyPort },
  outDir: path.join(REPO_ROOT, 'target', 'demo'),
  logLevel: process.env.OIDC_AUTHZ_LOG ?? 'info',
});

let stopping = false;
async function stop(signal) {
  if (stopping) return;
  stopping = true;
  console.log(`\n${signal}: stopping Envoy, oidc-authz, the IdP and the backend …`);
  await stack.stop();
  console.log('stopped.');
  process.exit(0);
}
process.on('SIGINT', () => stop('SIGINT'));
process.on('SIGTERM', () => stop('SIGTERM'));

try {
  await stack.start();
} catch (e) {
  console.error(`the demo stack did not start: ${e.message}\nlogs: target/demo/logs/`);
  await stack.stop();
  process.exit(1);
}

const url = (host, p = '/') => `${stack.origin(host)}${p}`;
console.log(`
oidc-authz demo is running (Envoy 1.40 -> oidc-authz -> sample backend, with a development IdP).

  Open      ${url(hosts.app1, '/hello?from=demo')}

  Sign in   user: alice    password: alice
            (the development IdP accepts any user name with any password; the user name becomes
             the identity. Sign in as "admin" to be in the group admins.)

  Then try  ${url(hosts.app2)}            same session, no second login (cookie_domain .${hosts.domain})
            ${url(hosts.app1, '/public/')}     public: no login (whitelist condition)
            ${url(hosts.admin)}           open host, but ${url(hosts.admin, '/admin')} needs a login
                                                     and the group admins (others get 403)
            ${url(hosts.app1, '/oauth2/sign_out')}  sign out (at the IdP too)
            curl -i -H 'Host: ${hosts.api}' http://127.0.0.1:${stack.ports.envoy}/v1/items   an API client without a token: 401

  Admin console      http://127.0.0.1:${stack.ports.admin}/
  Admin token        ${stack.adminToken}
                     (paste it into the console; or: curl -H 'authorization: Bearer <token>' http://127.0.0.1:${stack.ports.admin}/api/v1/rules)
                     Rules are kept in target/demo/run/rules.yaml: edit, disable, enable and delete them.

  Identity provider  ${stack.issuer}   (client "gateway"; discovery at /.well-known/openid-configuration)
  oidc-authz         gRPC 127.0.0.1:${stack.ports.grpc}, HTTP http://127.0.0.1:${stack.ports.http} (/readyz, /metrics)
  Config files       target/demo/run/oidc-authz.yaml, envoy.yaml and idp.json: deploy/compose/oidc-authz.yaml,
                     envoy/envoy.yaml and deploy/compose/idp.json (as docker-compose.yml runs them) with
                     loopback addresses and these ports
  Logs               target/demo/logs/

Browsers resolve *.localhost to this machine. If yours does not, add to /etc/hosts:
  127.0.0.1 ${hosts.app1} ${hosts.app2} ${hosts.admin} ${hosts.api}

Press Ctrl-C to stop everything.`);

// Stay up until a signal; notice if a component dies.
for (const [name, child] of [
  ['envoy', stack.envoy],
  ['oidc-authz', stack.oidcAuthz],
  ['IdP', stack.idpProc],
  ['backend', stack.backend],
]) {
  child.once('exit', (code, signal) => {
    if (stopping) return;
    console.error(`\n${name} exited (${signal ?? code}); see target/demo/logs/. Stopping the demo.`);
    stop('exit');
  });
}
setInterval(() => {}, 1 << 30);
