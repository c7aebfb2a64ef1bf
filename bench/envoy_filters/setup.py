#!/usr/bin/env python3
"""Credentials and the Envoy bootstrap for bench/envoy_filters.sh (python3 stdlib + openssl CLI).

    setup.py credentials WORK ISSUER AUDIENCE HOST CHECK_REQUEST_FILE HMAC_SECRET
    setup.py bootstrap WORK PORTS_JSON

`credentials` writes, under WORK:
  idp/.well-known/openid-configuration, idp/jwks.json  the static "issuer" (served by http.server)
  jwks.json           the same JWKS, for jwt_authn's local_jwks
  bearer.jwt          an RS256 JWT: iss=ISSUER, aud=AUDIENCE, exp=now+2h, email@example.com
  oidc_cookie.txt     the `cookie` header value of the sealed oidc-authz session, read out of the
                      gRPC-framed CheckRequest that examples/bench_request wrote
  oauth2_cookie.txt   the `cookie` header value of a valid envoy.filters.http.oauth2 session:
                      BearerToken/IdToken/RefreshToken encrypted as that filter does (AES-256-CBC,
                      key = SHA-256(hmac secret), random IV prepended, base64url), OauthExpires,
                      and OauthHMAC = base64(HMAC-SHA256(secret, host \\n expires \\n access \\n id
                      \\n refresh)) over the plaintext tokens (source/extensions/filters/http/oauth2/
                      filter.cc: encodeHmacBase64 / OAuth2CookieValidator::hmacIsValid)

`bootstrap` writes WORK/envoy.json: one Envoy, one HTTP/1.1 listener per benchmarked filter
chain, all answering with a direct_response 200 (no upstream). When PORTS_JSON has
"authz_baseline_grpc", it adds the cluster oidc_authz_baseline_grpc (the baseline oidc-authz) and
the listener oidc_authz_baseline_cookie (PORTS_JSON listeners.oidc_authz_baseline_cookie), the
twin of oidc_authz_cookie asking that cluster.
"""
import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time

B64URL = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def openssl(*args, data=None):
    return subprocess.run(["openssl", *args], input=data, capture_output=True, check=True).stdout


# ------------------------------------------------------------------ protobuf (the cookie header)
def varint(buf, i):
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7


def fields(buf):
    """(field number, wire type, value) of one protobuf message; value is bytes for wire type 2."""
    i = 0
    while i < len(buf):
        key, i = varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = varint(buf, i)
        elif wt == 1:
            v, i = buf[i:i + 8], i + 8
        elif wt == 2:
            n, i = varint(buf, i)
            v, i = buf[i:i + n], i + n
        elif wt == 5:
            v, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"wire type {wt}")
        yield num, wt, v


def first(buf, num):
    for n, wt, v in fields(buf):
        if n == num and wt == 2:
            return v
    raise ValueError(f"field {num} missing")


def cookie_of_check_request(path):
    framed = open(path, "rb").read()
    body = framed[5:5 + int.from_bytes(framed[1:5], "big")]
    # CheckRequest.attributes(1) -> AttributeContext.request(4) -> Request.http(2)
    http = first(first(first(body, 1), 4), 2)
    for n, wt, entry in fields(http):
        if n == 3 and wt == 2:  # HttpRequest.headers: map<string,string> entries {1: key, 2: value}
            kv = {k: v for k, _, v in fields(entry)}
            if kv.get(1) == b"cookie":
                return kv[2].decode()
    raise ValueError("no cookie header in the CheckRequest")


# ------------------------------------------------------------------ credentials
def credentials(work, issuer, audience, host, check_request, hmac_secret):
    key = os.path.join(work, "rsa.pem")
    if not os.path.exists(key):
        openssl("genrsa", "-out", key, "2048")
    modulus = openssl("rsa", "-in", key, "-noout", "-modulus").decode().strip().split("=", 1)[1]
    kid = "bench-envoy-filters-1"
    jwks = {"keys": [{"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
                      "n": B64URL(bytes.fromhex(modulus)), "e": "AQAB"}]}
    os.makedirs(os.path.join(work, "idp", ".well-known"), exist_ok=True)
    discovery = {
        "issuer": issuer,
        "authorization_endpoint": issuer + "/authorize",
        "token_endpoint": issuer + "/token",
        "jwks_uri": issuer + "/jwks.json",
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    }
    with open(os.path.join(work, "idp", ".well-known", "openid-configuration"), "w") as f:
        json.dump(discovery, f)
    for p in (os.path.join(work, "idp", "jwks.json"), os.path.join(work, "jwks.json")):
        with open(p, "w") as f:
            json.dump(jwks, f)

    now = int(time.time())
    header = {"alg": "RS256", "typ": "JWT", "kid": kid}
    claims = {
        "iss": issuer, "aud": audience, "sub": "248289761001-8f1c2a7e-3b4d-4e5f-9a0b-1c2d3e4f5a6b",
        "iat": now, "exp": now + 7200, "email": "jane.doe@example.com", "email_verified": True,
        "preferred_username": "jane.doe", "name": "Jane Doe", "groups": ["staff", "eng", "oncall"],
    }
    signing_input = (B64URL(json.dumps(header, separators=(",", ":")).encode()) + "." +
                     B64URL(json.dumps(claims, separators=(",", ":")).encode()))
    sig = openssl("dgst", "-sha256", "-sign", key, data=signing_input.encode())
    jwt = signing_input + "." + B64URL(sig)
    with open(os.path.join(work, "bearer.jwt"), "w") as f:
        f.write(jwt)

    with open(os.path.join(work, "oidc_cookie.txt"), "w") as f:
        f.write(cookie_of_check_request(check_request))

    # envoy.filters.http.oauth2: the cookies a browser holds after a login through that filter.
    secret = hmac_secret.encode()
    aes_key = hashlib.sha256(secret).hexdigest()

    def encrypt(plain):
        iv = os.urandom(16)
        ct = openssl("enc", "-aes-256-cbc", "-K", aes_key, "-iv", iv.hex(), data=plain.encode())
        return B64URL(iv + ct)

    access, id_token = jwt, jwt
    refresh = B64URL(os.urandom(48))
    expires = str(now + 7200)
    payload = "\n".join([host, expires, access, id_token, refresh]).encode()
    mac = base64.b64encode(hmac.new(secret, payload, hashlib.sha256).digest()).decode()
    cookie = "; ".join([
        "_ga=GA1.1.1187306121.1714042519",
        f"OauthHMAC={mac}",
        f"OauthExpires={expires}",
        f"BearerToken={encrypt(access)}",
        f"IdToken={encrypt(id_token)}",
        f"RefreshToken={encrypt(refresh)}",
        "theme=dark",
    ])
    with open(os.path.join(work, "oauth2_cookie.txt"), "w") as f:
        f.write(cookie)
    print(f"bearer_jwt_bytes={len(jwt)} oidc_cookie_bytes={os.path.getsize(os.path.join(work, 'oidc_cookie.txt'))} "
          f"oauth2_cookie_bytes={len(cookie)}")


# ------------------------------------------------------------------ bootstrap
def bootstrap(work, ports_json):
    p = json.loads(ports_json)
    jwks = open(os.path.join(work, "jwks.json")).read()

    def cluster(name, port, h2):
        c = {
            "name": name, "type": "STATIC", "connect_timeout": "1s", "lb_policy": "ROUND_ROBIN",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]},
        }
        if h2:
            c["typed_extension_protocol_options"] = {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}}}}
        return c

    def ext_authz(cluster_name):
        # The ext_authz settings of envoy/envoy.yaml, verbatim but for the cluster name.
        return {"name": "envoy.filters.http.ext_authz", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
            "transport_api_version": "V3",
            "grpc_service": {
                "envoy_grpc": {"cluster_name": cluster_name},
                "timeout": "5s",
                "retry_policy": {
                    "retry_on": "connect-failure,refused-stream,reset,unavailable",
                    "num_retries": 2,
                    "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"}}],
                    "host_selection_retry_max_attempts": 3,
                    "retry_back_off": {"base_interval": "0.01s", "max_interval": "0.1s"},
                },
            },
            "failure_mode_allow": False,
            "status_on_error": {"code": "ServiceUnavailable"},
            "include_peer_certificate": False,
        }}

    oauth2 = {"name": "envoy.filters.http.oauth2", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.oauth2.v3.OAuth2",
        "config": {
            "token_endpoint": {"cluster": "idp_down", "uri": "http://127.0.0.1:1/token", "timeout": "3s"},
            "authorization_endpoint": "https://idp.bench.test/authorize",
            "redirect_uri": "https://%REQ(:authority)%/oauth2/callback",
            "redirect_path_matcher": {"path": {"exact": "/oauth2/callback"}},
            "signout_path": {"path": {"exact": "/oauth2/sign_out"}},
            "credentials": {"client_id": "gateway",
                            "token_secret": {"name": "oauth2_token"},
                            "hmac_secret": {"name": "oauth2_hmac"}},
            "auth_scopes": ["openid", "email", "profile"],
            "forward_bearer_token": True,
        },
    }}

    def jwt_authn(cache):
        provider = {
            "issuer": p["issuer"], "audiences": [p["audience"]],
            "local_jwks": {"inline_string": jwks},
            "forward": True,
        }
        if cache:
            provider["jwt_cache_config"] = {"jwt_cache_size": 100}
        return {"name": "envoy.filters.http.jwt_authn", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {"bench": provider},
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "bench"}}],
        }}

    router = {"name": "envoy.filters.http.router", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}

    def listener(name, port, filters):
        return {"name": name, "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": name,
                    "codec_type": "AUTO",
                    # The connection-manager settings of envoy/envoy.yaml (no access log: none
                    # of the listeners logs, so that cost is left out of every row alike).
                    "common_http_protocol_options": {"headers_with_underscores_action": "REJECT_REQUEST"},
                    "use_remote_address": True,
                    "normalize_path": True,
                    "merge_slashes": True,
                    "path_with_escaped_slashes_action": "KEEP_UNCHANGED",
                    "route_config": {"name": name, "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                        {"match": {"prefix": "/"}, "direct_response": {"status": 200}}]}]},
                    "http_filters": filters + [router],
                }}]}]}

    baseline = "authz_baseline_grpc" in p
    answer = "noop_answer" in p
    listeners = {
        "none": [],
        "ext_authz_noop": [ext_authz("noop_grpc")],
        **({"ext_authz_noop_answer": [ext_authz("noop_answer_grpc")]} if answer else {}),
        "oidc_authz_cookie": [ext_authz("oidc_authz_grpc")],
        **({"oidc_authz_baseline_cookie": [ext_authz("oidc_authz_baseline_grpc")]} if baseline else {}),
        "oidc_authz_bearer": [ext_authz("oidc_authz_grpc")],
        "oauth2_native": [oauth2],
        "jwt_authn_cache": [jwt_authn(True)],
        "jwt_authn_nocache": [jwt_authn(False)],
    }
    boot = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p["admin"]}}},
        "overload_manager": {"resource_monitors": [{
            "name": "envoy.resource_monitors.global_downstream_max_connections",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
                "max_active_downstream_connections": 50000}}]},
        "static_resources": {
            "listeners": [listener(n, p["listeners"][n], f) for n, f in listeners.items()],
            "clusters": [
                cluster("noop_grpc", p["noop"], True),
                *([cluster("noop_answer_grpc", p["noop_answer"], True)] if answer else []),
                cluster("oidc_authz_grpc", p["authz_grpc"], True),
                *([cluster("oidc_authz_baseline_grpc", p["authz_baseline_grpc"], True)] if baseline else []),
                cluster("idp_down", 1, False),
            ],
            "secrets": [
                {"name": "oauth2_token", "generic_secret": {"secret": {"inline_string": "bench-client-secret"}}},
                {"name": "oauth2_hmac", "generic_secret": {"secret": {"inline_string": p["hmac_secret"]}}},
            ],
        },
    }
    with open(os.path.join(work, "envoy.json"), "w") as f:
        json.dump(boot, f, indent=1)


if __name__ == "__main__":
    if sys.argv[1] == "credentials" and len(sys.argv) == 8:
        credentials(*sys.argv[2:])
    elif sys.argv[1] == "bootstrap" and len(sys.argv) == 4:
        bootstrap(*sys.argv[2:])
    else:
        sys.exit(__doc__)
