#!/usr/bin/env bash
# Builds and installs Citus from a source tree of a release that supports this machine's
# PostgreSQL major (13.x for 15), for the `make citus` drill. Never part of `make test`: Citus is
# not in the OS packages.
#   .dev/citus_build.sh CITUS_SRC
set -euo pipefail
SRC=$1
PG_CONFIG=${PG_CONFIG:-pg_config}
[ -f "$SRC/configure" ] || { echo "citus_build.sh: $SRC is not a Citus source tree" >&2; exit 2; }
if [ -f "$($PG_CONFIG --pkglibdir)/citus.so" ] && [ -z "${CITUS_REBUILD:-}" ]; then
  echo "citus_build.sh: Citus is installed ($($PG_CONFIG --pkglibdir)/citus.so); CITUS_REBUILD=1 rebuilds" >&2
  exit 0
fi
# The server's headers and the compression libraries' (installing the server headers can
# upgrade the server's minor version in place: restart running clusters afterwards).
major=$($PG_CONFIG --version | sed -E 's/[^0-9]*([0-9]+).*/\1/')
missing=()
[ -f "$($PG_CONFIG --includedir-server)/postgres.h" ] || missing+=("postgresql-server-dev-$major")
[ -f /usr/include/lz4.h ] || missing+=(liblz4-dev)
[ -f /usr/include/zstd.h ] || missing+=(libzstd-dev)
[ -f /usr/include/gssapi/gssapi.h ] || missing+=(libkrb5-dev)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else echo "citus_build.sh: install ${missing[*]}" >&2; exit 1; fi
fi
BUILD=$(mktemp -d)
trap '[ -n "${CITUS_KEEP_BUILD:-}" ] || rm -rf "$BUILD"' EXIT
cp -a "$SRC/." "$BUILD/"
cd "$BUILD"
# PostgreSQL 15.20 exports have_createdb_privilege(); Citus 13.2's compat header still defines its
# own static copy for 15, which then fails to compile. Use the server's when it has one.
server_include=$($PG_CONFIG --includedir-server)
if grep -q "have_createdb_privilege" "$server_include/commands/dbcommands.h" \
   && grep -q "^have_createdb_privilege(void)" src/include/pg_version_compat.h; then
  python3 - src/include/pg_version_compat.h <<'PY'
import re, sys
path = sys.argv[1]
text = open(path).read()
text = re.sub(r"static inline bool\nhave_createdb_privilege\(void\)\n\{.*?\n\}\n", "", text, count=1, flags=re.S)
text = text.replace('#include "miscadmin.h"\n', '#include "miscadmin.h"\n#include "commands/dbcommands.h"\n', 1)
open(path, "w").write(text)
PY
fi
./configure --without-libcurl PG_CONFIG="$PG_CONFIG" > configure.log 2>&1 || { tail -30 configure.log; exit 1; }
make -j"$(nproc)" > make.log 2>&1 || { tail -40 make.log; exit 1; }
make install > install.log 2>&1 || { tail -20 install.log; exit 1; }
echo "citus_build.sh: installed $($PG_CONFIG --pkglibdir)/citus.so"
