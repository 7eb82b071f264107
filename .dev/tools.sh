#!/usr/bin/env bash
# Makes sure the OS packages the tests run next to the server are installed:
#   .dev/tools.sh redis-server pgbouncer promtool:prometheus
# (a command, or command:package when the package is named otherwise). As root with apt-get,
# missing ones are installed; otherwise the script says what to install.
set -euo pipefail

missing=()
for tool in "$@"; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool#*:}")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "tools.sh: installing ${missing[*]} from the OS packages" >&2
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  # The Debian packages start system-wide services; the tests start their own.
  for tool in "${missing[@]}"; do
    command -v systemctl >/dev/null 2>&1 && systemctl disable --now "$tool" >/dev/null 2>&1 || true
    command -v service >/dev/null 2>&1 && service "$tool" stop >/dev/null 2>&1 || true
  done
  exit 0
fi
echo "tools.sh: missing ${missing[*]}; install them (e.g. 'sudo apt-get install ${missing[*]}')" >&2
exit 1
