#!/usr/bin/env bash
# Lints openapi/openapi.json with Redocly CLI (from npm, pinned) and its recommended ruleset
# (openapi/redocly.yaml): zero errors, or the run fails.
#   .dev/openapi_lint.sh [DOCUMENT]
set -euo pipefail
cd "$(dirname "$0")/.."
DOC=${1:-openapi/openapi.json}
REDOCLY_VERSION=2.77.0
DIR=${TENANTRY_TOOLS_DIR:-$HOME/.cache/tenantry}/redocly-$REDOCLY_VERSION
if [ ! -x "$DIR/node_modules/.bin/redocly" ]; then
  echo "openapi_lint.sh: installing @redocly/cli $REDOCLY_VERSION into $DIR" >&2
  mkdir -p "$DIR"
  (cd "$DIR" && npm install --no-audit --no-fund --silent "@redocly/cli@$REDOCLY_VERSION")
fi
REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true \
  "$DIR/node_modules/.bin/redocly" lint --config openapi/redocly.yaml --format stylish "$DOC"
