#!/usr/bin/env bash
# Installs what the tests that run outside programs need: the real-driver suites
# under tests/drivers/ and the exporter test, for the parts named on the command
# line (default: the driver suites, python node java sqlx):
#   python    a venv at target/drivers/venv with psycopg 3, psycopg_pool, asyncpg
#   node      target/drivers/node/node_modules with pg (npm ci from package-lock.json)
#   java      Debian's libpostgresql-jdbc-java (/usr/share/java/postgresql.jar)
#   sqlx      the tests/drivers/sqlx binary, built into target/drivers/sqlx-target
#   exporter  Debian's prometheus-pgbouncer-exporter (tests/tests/exporter.rs)
# Idempotent and cheap when everything is there; tests run it in parallel, so
# the whole run holds a lock under target/drivers.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/tests/drivers
OUT=$ROOT/target/drivers
mkdir -p "$OUT"
exec 9>"$OUT/setup.lock"
flock 9

log() { printf '==> drivers/setup.sh: %s\n' "$*" >&2; }

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
    SUDO=(sudo)
fi

apt_get() {
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get -y -qq -o DPkg::Lock::Timeout=120 "$@" >/dev/null
}

# Installs from the package lists as they are, so a machine whose lists are fine
# does not wait on the network; lists that are missing (a fresh container has
# none) or stale make the install fail, and then they are refreshed once.
apt_updated=
apt_install() {
    if [[ -z $apt_updated ]]; then
        if apt_get install --no-install-recommends "$@" 2>/dev/null; then
            return
        fi
        log "apt-get install $* failed; apt-get update and try again"
        apt_get update
        apt_updated=1
    fi
    apt_get install --no-install-recommends "$@"
}

# A stamp holds a hash of the inputs of an install: same hash, nothing to do.
stamp_ok() { [[ -f $1 && $(cat "$1") == "$2" ]]; }

setup_python() {
    local venv=$OUT/venv stamp=$OUT/venv.stamp want
    want=$(cat "$HERE/python/requirements.txt" <(python3 --version) | sha256sum)
    if [[ -x $venv/bin/python ]] && stamp_ok "$stamp" "$want"; then
        return
    fi
    if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
        log "installing python3-venv"
        apt_install python3-venv
    fi
    log "creating $venv"
    rm -rf "$venv" "$stamp"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$HERE/python/requirements.txt"
    echo "$want" >"$stamp"
}

setup_node() {
    local dir=$OUT/node stamp=$OUT/node.stamp want
    want=$(cat "$HERE/node/package.json" "$HERE/node/package-lock.json" <(node --version) | sha256sum)
    if [[ -d $dir/node_modules ]] && stamp_ok "$stamp" "$want"; then
        return
    fi
    log "npm ci into $dir"
    rm -rf "$dir" "$stamp"
    mkdir -p "$dir"
    cp "$HERE/node/package.json" "$HERE/node/package-lock.json" "$dir/"
    (cd "$dir" && npm ci --silent --no-audit --no-fund)
    echo "$want" >"$stamp"
}

setup_java() {
    if ! command -v java >/dev/null; then
        log "installing a Java runtime"
        apt_install openjdk-17-jdk-headless
    fi
    if [[ ! -f /usr/share/java/postgresql.jar ]]; then
        log "installing libpostgresql-jdbc-java"
        apt_install libpostgresql-jdbc-java
    fi
}

setup_exporter() {
    if ! command -v prometheus-pgbouncer-exporter >/dev/null; then
        log "installing prometheus-pgbouncer-exporter"
        apt_install prometheus-pgbouncer-exporter
    fi
}

setup_sqlx() {
    # cargo itself knows when the binary is up to date.
    CARGO_TARGET_DIR=$OUT/sqlx-target cargo build --quiet --locked \
        --manifest-path "$HERE/sqlx/Cargo.toml"
}

parts=("$@")
if [[ ${#parts[@]} -eq 0 ]]; then
    parts=(python node java sqlx)
fi
for part in "${parts[@]}"; do
    case $part in
        python | node | java | sqlx | exporter) "setup_$part" ;;
        *)
            echo "drivers/setup.sh: unknown part '$part' (python, node, java, sqlx, exporter)" >&2
            exit 2
            ;;
    esac
done
