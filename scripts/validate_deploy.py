#!/usr/bin/env python3
"""The offline checks of scripts/validate_deploy.sh that need Python (PyYAML, jsonschema).

    validate_deploy.py compose         docker-compose.yml: profiles, depends_on, mounts, healthchecks
    validate_deploy.py dockerfile      Dockerfile and .dockerignore: what COPY needs is in the context
    validate_deploy.py istio FILE      rendered deploy/istio resources against Istio's CRD schemas
    validate_deploy.py mesh            deploy/istio/mesh-config.yaml's extensionProviders entry
    validate_deploy.py consistency K8S ISTIO   names and ports agree across Kubernetes and Istio

Each prints one line per check (`ok …` or `FAIL …`) and exits 1 when any check failed.
"""

import copy
import fnmatch
import os
import re
import sys

import jsonschema
import yaml

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
CRDS = os.path.join(ROOT, "deploy", "istio", "schemas", "customresourcedefinitions.gen.yaml")

failures = 0


def ok(msg):
    print(f"ok    {msg}")


def fail(msg):
    global failures
    failures += 1
    print(f"FAIL  {msg}")


def check(cond, msg, detail=""):
    if cond:
        ok(msg)
    else:
        fail(f"{msg}{': ' + detail if detail else ''}")


def load(path):
    with open(os.path.join(ROOT, path)) as f:
        return yaml.safe_load(f)


# ---------------------------------------------------------------------------------------------
# docker-compose.yml: what docker-compose v1's `config` does not check (it ignores profiles).
# ---------------------------------------------------------------------------------------------
def compose():
    doc = load("docker-compose.yml")
    services = doc["services"]
    always = {n for n, s in services.items() if not s.get("profiles")}
    expected_default = {"envoy", "oidc-authz", "idp", "backend"}
    expected_ha = expected_default | {"redis", "oidc-authz-2"}
    check(always == expected_default, f"services without a profile: {sorted(always)}", f"expected {sorted(expected_default)}")
    ha = always | {n for n, s in services.items() if "ha" in (s.get("profiles") or [])}
    check(ha == expected_ha, f"services with --profile ha: {sorted(ha)}", f"expected {sorted(expected_ha)}")
    for label, active in (("default", always), ("ha", ha)):
        for name in sorted(active):
            deps = services[name].get("depends_on") or {}
            if isinstance(deps, list):
                deps = {d: {"condition": "service_started"} for d in deps}
            for dep, how in deps.items():
                # Compose v2 refuses a dependency on a service its profiles leave out.
                check(dep in active, f"[{label}] {name} depends on {dep}, which is active", "it is not (profile)")
                if how.get("condition") == "service_healthy":
                    check("healthcheck" in services[dep], f"[{label}] {dep} (waited for as healthy by {name}) has a healthcheck")
    for name, s in services.items():
        check("healthcheck" in s, f"{name} has a healthcheck")
        for v in s.get("volumes") or []:
            src = v.split(":")[0] if isinstance(v, str) else v.get("source", "")
            if src.startswith("./"):
                check(os.path.exists(os.path.join(ROOT, src)), f"{name} mounts {src}, which exists")
        for p in s.get("ports") or []:
            check(str(p).startswith("127.0.0.1:"), f"{name} publishes {p} on the host's loopback only")
    # The ha replicas: both on the redis store, behind the one name Envoy resolves.
    ha_cfg = load("deploy/compose/oidc-authz-ha.yaml")
    check(ha_cfg["session"].get("store") == "redis", "oidc-authz-ha.yaml: session.store is redis")
    check(str(ha_cfg.get("rules_store", "")).startswith("redis://redis:"), "oidc-authz-ha.yaml: rules in the profile's Redis")
    second = services["oidc-authz-2"]
    check("/etc/oidc-authz/oidc-authz-ha.yaml" in (second.get("command") or []), "oidc-authz-2 runs oidc-authz-ha.yaml")
    aliases = ((second.get("networks") or {}).get("default") or {}).get("aliases") or []
    check("oidc-authz" in aliases, "oidc-authz-2 answers to the name oidc-authz (Envoy's STRICT_DNS cluster)")
    start = open(os.path.join(ROOT, "deploy/compose/start-oidc-authz.sh")).read()
    redis_aliases = ((services["redis"].get("networks") or {}).get("default") or {}).get("aliases") or []
    check("oidc-authz-ha.yaml" in start and any(f"getent hosts {a} " in start for a in redis_aliases), "replica 1 picks oidc-authz-ha.yaml when the ha profile's redis (by its alias) exists")
    envoy = open(os.path.join(ROOT, "envoy/envoy.yaml")).read()
    for host in ("oidc-authz", "backend"):
        check(re.search(rf"^\s*address: {host}$", envoy, re.M) is not None and host in services, f"envoy/envoy.yaml's upstream {host} is a compose service")
    check("envoyproxy/envoy:v1.40" in services["envoy"]["image"], "Envoy is the official v1.40 image")
    # The files the end-to-end suite runs (tests/e2e/stack.mjs) are the ones mounted here.
    mounts = {n: [v.split(":")[0] for v in (services[n].get("volumes") or []) if isinstance(v, str)] for n in services}
    check("./envoy/envoy.yaml" in mounts["envoy"], "Envoy mounts envoy/envoy.yaml (the suite's Envoy configuration)")
    check("./deploy/compose" in mounts["oidc-authz"] and "./deploy/compose" in mounts["oidc-authz-2"], "both replicas mount deploy/compose/ (the suite's oidc-authz configurations)")
    check("./deploy/compose/idp.json" in mounts["idp"], "the IdP mounts deploy/compose/idp.json (the suite's IdP settings)")
    check(services["oidc-authz"]["build"]["dockerfile"] == "Dockerfile", "oidc-authz is built from the Dockerfile")


# ---------------------------------------------------------------------------------------------
# Dockerfile: without a Docker engine, check what can be checked by reading it.
# ---------------------------------------------------------------------------------------------
def dockerignore_patterns(path):
    pats = []
    if os.path.exists(path):
        for line in open(path):
            line = line.strip()
            if line and not line.startswith("#"):
                pats.append(line.lstrip("/"))
    return pats


def ignored(rel, pats):
    for p in pats:
        base = p[3:] if p.startswith("**/") else p
        parts = rel.split("/")
        for i in range(len(parts)):
            if fnmatch.fnmatch("/".join(parts[: i + 1]), p) or fnmatch.fnmatch(parts[i], base):
                return True
    return False


def dockerfile_check(dockerfile, context=ROOT):
    text = open(os.path.join(ROOT, dockerfile)).read()
    lines = re.sub(r"\\\n", " ", text).splitlines()
    pats = dockerignore_patterns(os.path.join(context, ".dockerignore"))
    stages = 0
    for line in lines:
        s = line.strip()
        if s.upper().startswith("FROM "):
            stages += 1
        if s.upper().startswith("COPY ") and "--from=" not in s:
            args = [a for a in s.split()[1:] if not a.startswith("--")]
            for src in args[:-1]:
                path = os.path.join(context, src)
                check(os.path.exists(path), f"{dockerfile}: COPY {src} exists in the build context")
                check(not ignored(src.rstrip("/"), pats), f"{dockerfile}: COPY {src} is not excluded by .dockerignore")
    return text, stages


def dockerfile():
    text, stages = dockerfile_check("Dockerfile")
    check(stages >= 2, f"Dockerfile: multi-stage ({stages} stages)")
    check(re.search(r"^ENTRYPOINT \[\"/usr/local/bin/oidc-authz\"\]$", text, re.M) is not None, "Dockerfile: oidc-authz is the ENTRYPOINT")
    users = re.findall(r"^USER (\S+)$", text, re.M)
    check(bool(users) and users[-1].split(":")[0].isdigit() and users[-1].split(":")[0] != "0", f"Dockerfile: the runtime runs as a numeric non-root user ({users[-1] if users else 'none'})")
    check("ca-certificates" in text, "Dockerfile: the runtime has ca-certificates")
    check("echo 'fn main() {}' > src/main.rs" in text, "Dockerfile: dependencies are built in a layer of their own (empty crate first)")
    ignore = dockerignore_patterns(os.path.join(ROOT, ".dockerignore"))
    for big in ("target", ".git"):
        check(big in ignore, f".dockerignore keeps {big}/ out of the build context")
    dockerfile_check("deploy/compose/node.Dockerfile")


# ---------------------------------------------------------------------------------------------
# Istio: each resource's spec against the openAPIV3Schema of its kind and version.
# ---------------------------------------------------------------------------------------------
def strict(schema):
    """Unknown fields become errors (as kubectl's strict field validation does), except where
    the schema keeps unknown fields on purpose."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields") and "additionalProperties" not in node:
                node["additionalProperties"] = False
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(schema)
    return schema


def crd_schemas():
    out = {}
    with open(CRDS) as f:
        for doc in yaml.safe_load_all(f):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            group = doc["spec"]["group"]
            kind = doc["spec"]["names"]["kind"]
            for v in doc["spec"]["versions"]:
                out[(f"{group}/{v['name']}", kind)] = (v.get("served", False), v["schema"]["openAPIV3Schema"])
    return out


def istio(rendered):
    schemas = crd_schemas()
    check(len(schemas) > 20, f"{len(schemas)} kind/version schemas read from deploy/istio/schemas/")
    with open(rendered) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    check(len(docs) >= 3, f"{len(docs)} Istio resources rendered")
    for doc in docs:
        key = (doc.get("apiVersion"), doc.get("kind"))
        name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('namespace', '?')}/{doc.get('metadata', {}).get('name')}"
        if key not in schemas:
            fail(f"{name}: no CRD schema for {key[0]} {key[1]}")
            continue
        served, schema = schemas[key]
        check(served, f"{name}: {key[0]} is a served version")
        body = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind", "metadata")}
        errors = sorted(jsonschema.Draft7Validator(strict(schema)).iter_errors(body), key=lambda e: list(e.path))
        check(not errors, f"{name}: valid against the {key[0]} {key[1]} schema", "; ".join(f"{'.'.join(map(str, e.path)) or '(root)'}: {e.message}" for e in errors[:5]))


# ---------------------------------------------------------------------------------------------
# MeshConfig extensionProviders: Istio ships no schema for MeshConfig in the CRDs; this one is
# written from the API reference of MeshConfig.ExtensionProvider (EnvoyExternalAuthorization
# GrpcProvider: service, port, timeout, failOpen, clearRouteCache, statusOnError,
# includeRequestBodyInCheck) and rejects any other field.
# ---------------------------------------------------------------------------------------------
DURATION = {"type": "string", "pattern": r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"}
GRPC_PROVIDER = {
    "type": "object",
    "additionalProperties": False,
    "required": ["service", "port"],
    "properties": {
        "service": {"type": "string", "pattern": r"^([a-z0-9-]+/)?[a-z0-9]([a-z0-9.-]*[a-z0-9])?$"},
        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
        "timeout": DURATION,
        "failOpen": {"type": "boolean"},
        "clearRouteCache": {"type": "boolean"},
        "statusOnError": {"type": "string", "pattern": r"^[1-5][0-9][0-9]$"},
        "includeRequestBodyInCheck": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "maxRequestBytes": {"type": "integer", "minimum": 0},
                "allowPartialMessage": {"type": "boolean"},
                "packAsBytes": {"type": "boolean"},
            },
        },
    },
}
MESH_FRAGMENT = {
    "type": "object",
    "additionalProperties": False,
    "required": ["meshConfig"],
    "properties": {
        "meshConfig": {
            "type": "object",
            "additionalProperties": False,
            "required": ["extensionProviders"],
            "properties": {
                "extensionProviders": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["name", "envoyExtAuthzGrpc"],
                        "properties": {"name": {"type": "string", "minLength": 1}, "envoyExtAuthzGrpc": GRPC_PROVIDER},
                    },
                }
            },
        }
    },
}


def mesh():
    doc = load("deploy/istio/mesh-config.yaml")
    errors = list(jsonschema.Draft7Validator(MESH_FRAGMENT).iter_errors(doc))
    check(not errors, "mesh-config.yaml: extensionProviders entry has the shape of an envoyExtAuthzGrpc provider", "; ".join(f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors[:5]))
    if errors:
        return
    p = doc["meshConfig"]["extensionProviders"][0]["envoyExtAuthzGrpc"]
    check(p.get("failOpen") is False, "mesh-config.yaml: failOpen is false")
    t = p.get("timeout", "")
    check(re.fullmatch(r"[0-9]+s", t) is not None and 1 <= int(t[:-1]) <= 30, f"mesh-config.yaml: timeout {t} (seconds, for the code exchange inside Check)")


def consistency(k8s_rendered, istio_rendered):
    with open(k8s_rendered) as f:
        k8s = [d for d in yaml.safe_load_all(f) if d]
    with open(istio_rendered) as f:
        ist = [d for d in yaml.safe_load_all(f) if d]
    svc = next(d for d in k8s if d["kind"] == "Service")
    ports = {p["name"]: p for p in svc["spec"]["ports"]}
    check(ports.get("grpc", {}).get("appProtocol") == "grpc", "Service: the gRPC port is named grpc with appProtocol grpc")
    fqdn = f"{svc['metadata']['name']}.{svc['metadata']['namespace']}.svc.cluster.local"
    provider = load("deploy/istio/mesh-config.yaml")["meshConfig"]["extensionProviders"][0]
    check(provider["envoyExtAuthzGrpc"]["service"] == fqdn, f"extension provider service is the Service {fqdn}")
    check(provider["envoyExtAuthzGrpc"]["port"] == ports["grpc"]["port"], "extension provider port is the Service's grpc port")
    ap = next(d for d in ist if d["kind"] == "AuthorizationPolicy")
    check(ap["spec"]["action"] == "CUSTOM" and ap["spec"]["provider"]["name"] == provider["name"], "AuthorizationPolicy: action CUSTOM with the provider's name")
    check(ap["spec"]["selector"]["matchLabels"].get("istio") == "ingressgateway" and ap["metadata"]["namespace"] == "istio-system", "AuthorizationPolicy: the ingress gateway (istio-system, istio: ingressgateway)")
    excluded = [p for r in ap["spec"].get("rules", []) for t in r.get("to", []) for p in t["operation"].get("notPaths", [])]
    check("/oauth2/*" in excluded, "AuthorizationPolicy: /oauth2/* is not sent to ext_authz")
    vs = next(d for d in ist if d["kind"] == "VirtualService")
    oauth = [r for r in vs["spec"]["http"] if any(m.get("uri", {}).get("prefix") == "/oauth2/" for m in r.get("match", []))]
    check(bool(oauth) and vs["spec"]["http"].index(oauth[0]) == 0, "VirtualService: /oauth2/ is its first route")
    if oauth:
        dest = oauth[0]["route"][0]["destination"]
        check(dest["host"] == fqdn and dest["port"]["number"] == ports["http"]["port"], "VirtualService: /oauth2/ goes to the Service's HTTP port")
    dep = next(d for d in k8s if d["kind"] == "Deployment")
    c = dep["spec"]["template"]["spec"]["containers"][0]
    check(dep["spec"]["replicas"] == 2, "Deployment: 2 replicas")
    check(c["livenessProbe"]["httpGet"]["path"] == "/healthz" and c["readinessProbe"]["httpGet"]["path"] == "/readyz", "Deployment: liveness /healthz, readiness /readyz")
    sc = c["securityContext"]
    pod_sc = dep["spec"]["template"]["spec"]["securityContext"]
    check(pod_sc.get("runAsNonRoot") and sc.get("readOnlyRootFilesystem") and sc.get("allowPrivilegeEscalation") is False and sc["capabilities"]["drop"] == ["ALL"], "Deployment: non-root, read-only root filesystem, no privilege escalation, no capabilities")
    check(bool(c["resources"].get("requests")), "Deployment: resource requests")
    check(any(d["kind"] == "PodDisruptionBudget" for d in k8s), "PodDisruptionBudget present")


def main(argv):
    what = argv[1] if len(argv) > 1 else ""
    if what == "compose":
        compose()
    elif what == "dockerfile":
        dockerfile()
    elif what == "istio":
        istio(argv[2])
    elif what == "mesh":
        mesh()
    elif what == "consistency":
        consistency(argv[2], argv[3])
    else:
        print(__doc__)
        return 2
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
