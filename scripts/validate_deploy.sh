#!/usr/bin/env bash
# Validates the deployment files offline (no Docker engine, no cluster): run by .ci/run, and by
# hand from any directory:
#
#   scripts/validate_deploy.sh
#
#   1. docker-compose.yml: `docker-compose config` with and without `--profile ha` (and
#      `docker compose config` too when the Compose v2 plugin is there), plus the checks v1 does
#      not make (profiles and depends_on, mounts, healthchecks, the ha replicas' store);
#   2. the Dockerfiles: what COPY needs is in the build context, multi-stage, non-root user;
#   3. `oidc-authz validate` on the configurations the compose file and the kustomize base
#      mount (placeholder secrets), when the release binary exists;
#   4. `kubectl kustomize deploy/kubernetes` checked by `kubernetes-validate --strict` against
#      pinned Kubernetes versions;
#   5. `kubectl kustomize deploy/istio`: each resource against the openAPIV3Schema of its
#      kind/version in Istio's CRDs (deploy/istio/schemas/, unknown fields are errors), the
#      MeshConfig extensionProviders entry against the provider's fields, and names and ports
#      that must agree between the Kubernetes and Istio files.
#
# Installs what is missing when it can (root with apt-get: docker-compose, kubernetes-client;
# pip into a virtualenv under target/: kubernetes-validate, jsonschema). Each step is bounded.
# Prints `ok`/`FAIL` lines and a summary; exits non-zero when anything failed.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
OUT=$ROOT/target/validate-deploy
mkdir -p "$OUT"
# Kubernetes versions the rendered manifests must be valid for (kubernetes-validate's schemas).
K8S_VERSIONS=${K8S_VERSIONS:-"1.30.0 1.37.0"}
BIN=${OIDC_AUTHZ_BIN:-$ROOT/target/release/oidc-authz}

failed=()
step() { printf '\n--- %s\n' "$*"; }
pass() { printf 'ok    %s\n' "$*"; }
flunk() { printf 'FAIL  %s\n' "$*"; failed+=("$*"); }
# run DESCRIPTION CMD...: runs CMD (bounded), output indented; ok/FAIL on its exit code.
run() {
    local what=$1 rc=0
    shift
    timeout 5m "$@" >"$OUT/last.log" 2>&1 || rc=$?
    if ((rc == 0)); then
        pass "$what"
    else
        flunk "$what (exit $rc)"
        sed 's/^/      | /' "$OUT/last.log" | head -40
    fi
    return "$rc"
}
apt_install() {
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        echo "installing $* (apt-get)"
        { timeout 10m apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 10m apt-get install -y -qq "$@"; } >"$OUT/apt.log" 2>&1 \
            || { tail -5 "$OUT/apt.log"; return 1; }
    else
        echo "cannot install $* (needs root and apt-get)"
        return 1
    fi
}

# Python with PyYAML, jsonschema and kubernetes-validate: the one on PATH (CI's venv), else a
# virtualenv of our own.
PY=${PYTHON:-python3}
if ! "$PY" -c 'import yaml, jsonschema, kubernetes_validate' 2>/dev/null; then
    venv=$ROOT/target/validate-deploy/venv
    if [[ ! -x $venv/bin/python ]]; then python3 -m venv "$venv"; fi
    if ! "$venv/bin/python" -c 'import yaml, jsonschema, kubernetes_validate' 2>/dev/null; then
        echo "pip install kubernetes-validate jsonschema into $venv"
        PIP_DISABLE_PIP_VERSION_CHECK=1 timeout 10m "$venv/bin/pip" install --quiet 'kubernetes-validate==1.37.0' 'jsonschema>=4.20,<5' \
            || flunk "pip install kubernetes-validate jsonschema"
    fi
    PY=$venv/bin/python
fi
KV=$(dirname "$PY")/kubernetes-validate
[[ -x $KV ]] || KV=kubernetes-validate

# ---------------------------------------------------------------------------------------------
step "1. docker-compose.yml"
if ! command -v docker-compose >/dev/null; then apt_install docker-compose || true; fi
if command -v docker-compose >/dev/null; then
    echo "$(docker-compose version --short 2>/dev/null || docker-compose version | head -1)"
    run "docker-compose config" docker-compose config -q
    run "docker-compose --profile ha config" docker-compose --profile ha config -q
    docker-compose config --services >"$OUT/services.txt" 2>/dev/null || true
else
    flunk "docker-compose not found (apt-get install -y docker-compose)"
fi
if docker compose version >/dev/null 2>&1; then
    run "docker compose config (v2)" docker compose config -q
    run "docker compose --profile ha config (v2)" docker compose --profile ha config -q
fi
"$PY" scripts/validate_deploy.py compose || failed+=("compose checks")

# ---------------------------------------------------------------------------------------------
step "2. Dockerfile, deploy/compose/node.Dockerfile, .dockerignore"
"$PY" scripts/validate_deploy.py dockerfile || failed+=("Dockerfile checks")

# ---------------------------------------------------------------------------------------------
step "3. oidc-authz validate on the mounted configurations"
if [[ ! -x $BIN ]]; then
    echo "      $BIN is not built yet: cargo build --release"
    (cd "$ROOT" && timeout 30m cargo build --release) || flunk "cargo build --release"
fi
if [[ -x $BIN ]]; then
    for f in deploy/compose/oidc-authz.yaml deploy/compose/oidc-authz-ha.yaml deploy/kubernetes/oidc-authz.yaml; do
        run "oidc-authz validate --config $f" env \
            OIDC_AUTHZ_ADMIN_TOKEN=validate-admin-token-0000000000 \
            OIDC_AUTHZ_SESSION_SECRET=validate-session-secret-0123456789abcdef0123 \
            DEMO_CLIENT_SECRET=validate CORP_CLIENT_SECRET=validate \
            "$BIN" validate --config "$f"
    done
else
    flunk "$BIN missing after cargo build --release"
fi

# ---------------------------------------------------------------------------------------------
step "4. Kubernetes: kubectl kustomize deploy/kubernetes | kubernetes-validate"
if ! command -v kubectl >/dev/null; then apt_install kubernetes-client || true; fi
if command -v kubectl >/dev/null; then
    kubectl version --client 2>/dev/null | head -2
    if run "kubectl kustomize deploy/kubernetes" kubectl kustomize deploy/kubernetes; then
        cp "$OUT/last.log" "$OUT/kubernetes.yaml"
        grep -E '^kind: ' "$OUT/kubernetes.yaml" | sed 's/^/      /'
        for v in $K8S_VERSIONS; do
            run "kubernetes-validate --strict -k $v (deploy/kubernetes)" "$KV" --strict --quiet -k "$v" "$OUT/kubernetes.yaml"
        done
    fi
    if run "kubectl kustomize deploy/istio" kubectl kustomize deploy/istio; then
        cp "$OUT/last.log" "$OUT/istio.yaml"
    fi
else
    flunk "kubectl not found (apt-get install -y kubernetes-client)"
fi

# ---------------------------------------------------------------------------------------------
step "5. Istio: resources against Istio's CRD schemas, the MeshConfig provider, consistency"
if [[ -s $OUT/istio.yaml ]]; then
    "$PY" scripts/validate_deploy.py istio "$OUT/istio.yaml" || failed+=("Istio schemas")
fi
"$PY" scripts/validate_deploy.py mesh || failed+=("MeshConfig provider")
if [[ -s $OUT/istio.yaml && -s $OUT/kubernetes.yaml ]]; then
    "$PY" scripts/validate_deploy.py consistency "$OUT/kubernetes.yaml" "$OUT/istio.yaml" || failed+=("Kubernetes/Istio consistency")
fi

# ---------------------------------------------------------------------------------------------
echo
if ((${#failed[@]} > 0)); then
    echo "validate_deploy: ${#failed[@]} failure(s):"
    printf '  - %s\n' "${failed[@]}"
    exit 1
fi
echo "validate_deploy: compose, Dockerfile, Kubernetes and Istio files are valid"
