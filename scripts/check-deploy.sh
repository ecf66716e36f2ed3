#!/usr/bin/env bash
# The shipped deployment files, checked by the ecosystem's own tools (see
# scripts/tools.sh): Prometheus config and alert rules with their unit tests
# (promtool), the Dockerfile (hadolint), the compose file (docker-compose
# config) and every Kubernetes manifest (kubernetes-validate --strict).
# Runs every check even when one fails; exits non-zero if any did.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PATH="$(scripts/tools.sh)" || exit 1
export PATH
status=0
check() { # name command...
    echo "--> $1"
    shift
    "$@" || { echo "FAILED: $*"; status=1; }
}
check "promtool check config" promtool check config deploy/prometheus/prometheus.yml
check "promtool check rules" promtool check rules deploy/prometheus/alerts.yml
if ls deploy/prometheus/tests/*.yml >/dev/null 2>&1; then
    check "promtool test rules" promtool test rules deploy/prometheus/tests/*.yml
else
    echo "FAILED: no alert rule tests in deploy/prometheus/tests/"; status=1
fi
check "hadolint" hadolint Dockerfile
# Compose refuses to start without an admin token hash and a Grafana admin
# password; any values check it. Every profile's services are checked.
check "docker-compose config" env HOOKRELAY_ADMIN_TOKEN_SHA256=0000000000000000000000000000000000000000000000000000000000000000 \
    GRAFANA_ADMIN_PASSWORD=check-only \
    docker-compose -f docker-compose.yml --profile cluster --profile redis-sentinel config -q
check "kubernetes-validate --strict" kubernetes-validate --strict --quiet deploy/kubernetes/*.yaml
# kubernetes-validate only warns about a kind it has no schema for, and then
# checks nothing of it: the core manifests must hold built-in kinds only, and
# deploy/kubernetes/prometheus-operator/ (CRD kinds, applied apart) must parse
# and hold only ServiceMonitors.
no_unknown_kinds() { # allowed-pattern files...
    local allowed=$1
    shift
    ! kubernetes-validate --strict "$@" 2>&1 | grep "Couldn't find schema" | grep -v -e "$allowed"
}
check "kubernetes: built-in kinds only" no_unknown_kinds '^$' deploy/kubernetes/*.yaml
check "kubernetes-validate prometheus-operator/" kubernetes-validate --strict --quiet --no-warn deploy/kubernetes/prometheus-operator/*.yaml
check "kubernetes: prometheus-operator/ holds ServiceMonitors only" \
    no_unknown_kinds 'kind ServiceMonitor with api version monitoring.coreos.com/v1 ' deploy/kubernetes/prometheus-operator/*.yaml
exit "$status"
