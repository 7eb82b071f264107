#!/usr/bin/env bash
# The OpenAPI contract checks of `make test`: Redocly's lint (zero errors), every example valid
# against its schema, and every status the suites observed documented for its operation.
#   .dev/openapi_check.sh [OBSERVED_STATUSES_TSV]
set -euo pipefail
cd "$(dirname "$0")/.."
JSONSCHEMA_VERSION=4.23.0
VENV=${TENANTRY_TOOLS_DIR:-$HOME/.cache/tenantry}/jsonschema-$JSONSCHEMA_VERSION
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import jsonschema' 2>/dev/null; then
  echo "openapi_check.sh: installing jsonschema $JSONSCHEMA_VERSION into $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "jsonschema==$JSONSCHEMA_VERSION"
fi
.dev/openapi_lint.sh openapi/openapi.json 2>&1 | grep -v '^\s*$' | grep -vi 'node\.js\|deprecation\|║\|╔\|╚' || { echo "openapi: the lint failed" >&2; exit 1; }
"$VENV/bin/python" .dev/openapi_check.py openapi/openapi.json "$@"
