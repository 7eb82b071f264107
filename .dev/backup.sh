#!/usr/bin/env bash
# Backups of the whole database (every tenant) and their restore.
#   .dev/backup.sh backup  BACKUP_URL DIR          pg_dump -Fc as tenantry_backup into DIR; prints the file
#   .dev/backup.sh restore FILE ADMIN_BASE_URL DB  creates DB and restores FILE into it (as a superuser),
#                                                   then runs `tenantry check` on it (TENANTRY_BIN)
# tenantry_backup is the only login role allowed to bypass RLS (a backup must hold every row); it is
# read-only. Roles live in the cluster, not in the dump: restore into a cluster where
# sql/01_roles.sql has been applied.
set -euo pipefail
BINDIR=$("$(dirname "$0")/pg.sh" bindir)
cmd=${1:-}
case "$cmd" in
  backup)
    URL=$2; DIR=$3
    # A dump of every tenant needs a role that bypasses RLS, which only a superuser can create.
    # Say so plainly instead of failing half-way with "query would be affected by row-level
    # security policy".
    no_backup_role() {
      echo "backup.sh: $1. A whole-database dump needs tenantry_backup (BYPASSRLS), which only a" >&2
      echo "superuser can create: a managed PostgreSQL (RDS/Aurora, Cloud SQL, Azure) has none. Back up" >&2
      echo "with the provider's snapshots and point-in-time recovery instead (README, \"Backups\")." >&2
      exit 3
    }
    if ! bypass=$(psql "$URL" -XqtAc "select rolbypassrls or rolsuper from pg_roles where rolname = current_user" 2>&1); then
      echo "$bypass" >&2
      no_backup_role "cannot connect as the backup role (above)"
    fi
    [ "$bypass" = t ] || no_backup_role "the role in BACKUP_URL does not bypass row-level security"
    mkdir -p "$DIR"
    FILE="$DIR/tenantry-$(date -u +%Y%m%dT%H%M%SZ)-$$.dump"
    trap 'rm -f "$FILE.partial"' EXIT # a failed dump leaves nothing that looks like a backup
    "$BINDIR/pg_dump" --format=custom --no-password --file="$FILE.partial" "$URL"
    mv "$FILE.partial" "$FILE"
    chmod 600 "$FILE"
    echo "$FILE"
    ;;
  restore)
    FILE=$2; BASE=${3%/}; DB=$4
    BIN=${TENANTRY_BIN:-target/debug/tenantry}
    psql "$BASE/postgres" -v ON_ERROR_STOP=1 -qc "create database \"$DB\""
    "$BINDIR/pg_restore" --exit-on-error --no-password --dbname="$BASE/$DB" "$FILE"
    TENANTRY_ADMIN_DATABASE_URL="$BASE/$DB" TENANTRY_LOG=warn "$BIN" check
    ;;
  *)
    echo "usage: $0 backup BACKUP_URL DIR | restore FILE ADMIN_BASE_URL DB" >&2; exit 2 ;;
esac
