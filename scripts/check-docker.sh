#!/usr/bin/env bash
# Static validation of docker/ (Dockerfile, compose.yaml, node configs, nginx)
# for machines with no Docker engine, CI among them. Installs its tools into
# the test venv (PyPI) and nginx from Debian's packages, then runs
# scripts/check_docker.py: the checks, and their self-test, which breaks a
# scratch copy once per check to prove each one can fail. The node configs are
# checked by `homeserver check-config`: build the binary first (TERN_BIN, or
# release/homeserver under CARGO_TARGET_DIR, default ~/.cache/tern-target).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${TERN_VENV:-$HOME/.cache/tern-venv}"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
# check-jsonschema vendors the compose-spec schema (--builtin-schema
# vendor.compose-spec); dockerfile-parse reads the Dockerfile as docker does.
"$VENV/bin/pip" install --quiet --disable-pip-version-check 'check-jsonschema==0.*' 'dockerfile-parse==2.*'
# `nginx -t` checks the load balancer's configuration (it only parses; the
# check never starts a server).
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null 2>&1 \
        || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null; }
fi

"$VENV/bin/python" scripts/check_docker.py
"$VENV/bin/python" scripts/check_docker.py --self-test
