#!/usr/bin/env bash
# promtool: both scrape configurations and the rule files are valid (warnings
# fail too), and the rule unit tests pass.
#   check_prometheus.sh REPO
set -euo pipefail
P="$1/deploy/prometheus"
command -v promtool > /dev/null || { echo "promtool missing: run tools/setup.sh (package prometheus)"; exit 1; }
status=0
run() {
  local out
  out="$("$@" 2>&1)" || { echo "$out"; echo "FAILED: $*"; status=1; return; }
  echo "$out"
  if grep -q WARNING <<< "$out"; then echo "FAILED (warnings): $*"; status=1; fi
}
run promtool check config "$P/prometheus.yml"
run promtool check config "$P/prometheus-kubernetes.yml"
run promtool check rules "$P"/rules/*.yml
run promtool test rules "$P/tests/rules_test.yml"
exit $status
