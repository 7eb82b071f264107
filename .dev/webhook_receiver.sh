#!/usr/bin/env bash
# The tests' webhook receiver needs the official Standard Webhooks library (PyPI, pinned in
# tests/webhook-receiver/requirements.txt). Installs it into a venv once and prints that venv's
# python, which the tests run tests/webhook-receiver/receiver.py with.
set -euo pipefail
cd "$(dirname "$0")/.."
REQUIREMENTS=tests/webhook-receiver/requirements.txt
VENV=${TENANTRY_TOOLS_DIR:-$HOME/.cache/tenantry}/webhook-receiver-$(sha256sum "$REQUIREMENTS" | cut -c1-12)
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import standardwebhooks' 2>/dev/null; then
  echo "webhook_receiver.sh: installing $(grep -v '^#' "$REQUIREMENTS" | xargs) into $VENV" >&2
  rm -rf "$VENV.tmp"
  python3 -m venv "$VENV.tmp" 2>/dev/null || {
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      (apt-get install -y -qq python3-venv >/dev/null 2>&1) || { apt-get update -qq >/dev/null && apt-get install -y -qq python3-venv >/dev/null; }
      python3 -m venv "$VENV.tmp"
    else echo "webhook_receiver.sh: python3-venv is required" >&2; exit 1; fi
  }
  "$VENV.tmp/bin/pip" install -q -r "$REQUIREMENTS" >&2
  rm -rf "$VENV" && mv "$VENV.tmp" "$VENV"
fi
echo "$VENV/bin/python"
