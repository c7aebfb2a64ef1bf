#!/bin/sh
# The first oidc-authz replica of docker-compose.yml. Compose profiles can only add services, so
# this replica picks its configuration when it starts:
#   - the `ha` profile is on (its `redis` service, alias oidc-authz-ha-redis, exists in the
#     network): oidc-authz-ha.yaml, sessions and rules in Redis, shared with the second replica;
#   - otherwise: oidc-authz.yaml, sessions in the cookie, rules in a file on a volume.
# The `redis` container starts with the other services that depend on nothing, long before this
# one (which waits for the IdP to be healthy), so its alias resolves by then when the profile is on.
set -eu
dir=/etc/oidc-authz
if getent hosts oidc-authz-ha-redis >/dev/null 2>&1; then
    config=$dir/oidc-authz-ha.yaml
else
    config=$dir/oidc-authz.yaml
fi
echo "start-oidc-authz.sh: oidc-authz serve --config $config" >&2
exec oidc-authz serve --config "$config"
