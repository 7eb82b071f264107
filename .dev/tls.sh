#!/usr/bin/env bash
# A throwaway certificate authority for the tests' TLS servers (PostgreSQL shaped like a managed
# database, Redis with TLS). Idempotent; files are valid for 30 days and remade when older.
#   .dev/tls.sh DIR
# DIR/ca.crt           the CA the tests trust (like a provider's CA bundle)
# DIR/server.{crt,key} issued by it for DNS:localhost only (so 127.0.0.1 is a wrong host name)
# DIR/client.{crt,key} issued by it to CN=tenantry_app (PostgreSQL `cert` authentication)
# DIR/other-ca.crt     a CA nobody issued anything with (a wrong sslrootcert)
# Never use these outside tests: the keys sit unencrypted next to the certificates.
set -euo pipefail
DIR=${1:?DIR}
command -v openssl >/dev/null || .dev/tools.sh openssl
mkdir -p "$DIR"
cd "$DIR"
if [ -f server.crt ] && [ -f done ] && [ -z "$(find done -mtime +20)" ]; then exit 0; fi
rm -f ./*.crt ./*.key ./*.csr ./*.srl done
ec() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
ca() {
  ec "$1.key"
  openssl req -x509 -new -key "$1.key" -out "$1.crt" -days 30 -subj "/CN=$2" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}
issue() { # name CN extensions
  ec "$1.key"
  openssl req -new -key "$1.key" -out "$1.csr" -subj "/CN=$2" 2>/dev/null
  openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$1.crt" -days 30 \
    -extfile <(printf '%b' "$3") 2>/dev/null
  rm -f "$1.csr"
}
ca ca "tenantry test CA"
ca other-ca "some other CA"
rm -f other-ca.key
issue server localhost "subjectAltName=DNS:localhost\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth"
issue client tenantry_app "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth"
chmod 0600 ./*.key
touch done
