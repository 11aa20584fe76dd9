#!/bin/sh
# Container entrypoint: `pgweir --upstream "$DATABASE_URL"` by default, with the
# config file mounted at /etc/pgweir/proxy.toml when there is one.
#
# - The upstream is passed as PGWEIR_UPSTREAM (what --upstream reads), not on the
#   command line, so the password does not show up in `ps`.
# - An explicit PGWEIR_CONFIG / PGWEIR_UPSTREAM wins over these defaults.
# - A first argument that is not a flag is a subcommand: `check`, `import`, ...
set -eu

# Overridable for tests/tests/deploy.rs, which runs this script outside a container.
bin=${PGWEIR_ENTRYPOINT_BIN:-/usr/local/bin/pgweir}
config=${PGWEIR_ENTRYPOINT_CONFIG:-/etc/pgweir/proxy.toml}

if [ "$#" -gt 0 ] && [ "${1#-}" = "$1" ]; then
    exec "$bin" "$@"
fi
if [ -z "${PGWEIR_CONFIG:-}" ] && [ -f "$config" ]; then
    PGWEIR_CONFIG=$config
    export PGWEIR_CONFIG
fi
if [ -z "${PGWEIR_UPSTREAM:-}" ] && [ -n "${DATABASE_URL:-}" ]; then
    PGWEIR_UPSTREAM=$DATABASE_URL
    export PGWEIR_UPSTREAM
fi
exec "$bin" "$@"
