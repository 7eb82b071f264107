# tenantry: the commands people type. `make run` and `make test` work on a fresh clone.
SHELL := /bin/bash
.DEFAULT_GOAL := help

CARGO       ?= cargo
# Checkouts sharing one CARGO_TARGET_DIR (a CI clone, a worktree) rerun the build script that
# embeds sql/ and policies/ when this changes (see src/build.rs).
export TNTY_BUILD_CHECKOUT := $(CURDIR)
TARGET_DIR  := $(or $(CARGO_TARGET_DIR),target)
BIN         := $(TARGET_DIR)/debug/tenantry
RELEASE_BIN := $(TARGET_DIR)/release/tenantry

# Local development cluster (make run) and the test cluster (make test): separate dirs and ports.
PG_DIR      := .tenantry/pg
PG_PORT     ?= 55432
TEST_PG_DIR := .tenantry/pg-test
TEST_PG_PORT ?= 55433
# The tests' PgBouncer (transaction pooling) in front of the test cluster.
TEST_PGBOUNCER_DIR := .tenantry/pgbouncer-test
PGBOUNCER_TEST_PORT ?= 56433
# A second test cluster shaped like a managed database (TLS only, no superuser for the install),
# and the throwaway CA its certificate (and the TLS Redis's) comes from.
TEST_MANAGED_DIR := .tenantry/pg-managed
MANAGED_PG_PORT ?= 55436
TEST_TLS_DIR := .tenantry/tls
PG_ADMIN    = postgres://postgres@127.0.0.1:$(1)/$(2)
PG_APP      = postgres://tenantry_app@127.0.0.1:$(1)/$(2)

OIDC_PROVIDER := tests/oidc-provider

# With TENANTRY_DATABASE_URL set, `make run` uses that server and starts no local cluster.
LOCAL_DB    := $(if $(TENANTRY_DATABASE_URL),,yes)

.PHONY: citus citus-test alerts console export-rss help build db db-stop run migrate seed check openapi test test-db test-managed lint fmt pgtap contract bench soak clean-db backup restore

help:
	@echo "make run      start a local PostgreSQL, migrate, seed a demo, print tokens, serve"
	@echo "make test     format check, clippy, all tests, tenantry check, pgTAP, OpenAPI drift"
	@echo "make db / db-stop   start / stop the local PostgreSQL under $(PG_DIR) (port $(PG_PORT))"
	@echo "make migrate | seed | check | openapi | lint | bench | soak"

build:
	$(CARGO) build --bin tenantry

db:
	@.dev/pg.sh start $(PG_DIR) $(PG_PORT)
	@psql "$(call PG_ADMIN,$(PG_PORT),postgres)" -qtAc "select 1 from pg_database where datname = 'tenantry'" | grep -q 1 \
	  || psql "$(call PG_ADMIN,$(PG_PORT),postgres)" -qc "create database tenantry"
	@echo "PostgreSQL is running on 127.0.0.1:$(PG_PORT) (data in $(PG_DIR))"

db-stop:
	@.dev/pg.sh stop $(PG_DIR)
	@.dev/pgbouncer.sh stop $(TEST_PGBOUNCER_DIR)
	@.dev/pg.sh stop $(TEST_PG_DIR)
	@.dev/managed.sh stop $(TEST_MANAGED_DIR)

# The three URLs `make run` uses, also written to .tenantry/env for a second shell.
.tenantry/env: | db
	@mkdir -p .tenantry
	@{ echo "export TENANTRY_DATABASE_URL=$(call PG_APP,$(PG_PORT),tenantry)"; \
	   echo "export TENANTRY_ADMIN_DATABASE_URL=$(call PG_ADMIN,$(PG_PORT),tenantry)"; \
	   echo "export TENANTRY_LISTEN=$${TENANTRY_LISTEN:-127.0.0.1:8080}"; } > $@

ifeq ($(LOCAL_DB),yes)
ENV_SETUP := source .tenantry/env &&
run migrate seed check: .tenantry/env
else
ENV_SETUP :=
endif

migrate: build
	@$(ENV_SETUP) $(BIN) migrate

seed: migrate
	@$(ENV_SETUP) $(BIN) seed

check: build
	@$(ENV_SETUP) $(BIN) check

# A local demo identity provider for `make run` (the tests' node oidc-provider): sign in at
# /api/v1/auth/demo/login as alice (mapped to admin of Acme). Skipped when Node.js is missing.
DEMO_IDP_PORT ?= 9090
.tenantry/tenantry.toml:
	@mkdir -p .tenantry
	@addr=$${TENANTRY_LISTEN:-127.0.0.1:8080}; { \
	  echo '# Written by make run: the local demo identity provider.'; \
	  echo '[[auth.providers]]'; \
	  echo 'name = "demo"'; \
	  echo 'kind = "oidc"'; \
	  echo 'display_name = "Local demo OpenID provider"'; \
	  echo 'issuer = "http://127.0.0.1:$(DEMO_IDP_PORT)"'; \
	  echo 'client_id = "tenantry"'; \
	  echo 'client_secret = "tenantry-test-secret"'; \
	  echo "redirect_uri = \"http://$$addr/api/v1/auth/demo/callback\""; \
	  echo 'scopes = ["groups"]'; \
	  echo '[[auth.providers.role_mappings]]'; \
	  echo 'claim = "groups"'; \
	  echo 'value = "acme-admins"'; \
	  echo 'organization_id = "0a000000-0000-4000-8000-000000000001"'; \
	  echo 'role = "admin"'; } > $@

run: build
	@if command -v node >/dev/null && command -v npm >/dev/null; then \
	  $(MAKE) --no-print-directory $(OIDC_PROVIDER)/node_modules/.package-lock.json .tenantry/tenantry.toml; \
	  addr=$${TENANTRY_LISTEN:-127.0.0.1:8080}; \
	  (cd $(OIDC_PROVIDER) && exec node server.mjs $(DEMO_IDP_PORT) "http://$$addr/api/v1/auth/demo/callback" > ../../.tenantry/demo-idp.log 2>&1 &); \
	else echo "(Node.js not found: no demo identity provider)"; fi
	@$(ENV_SETUP) $(BIN) migrate
	@$(ENV_SETUP) $(BIN) seed --print-tokens > .tenantry/demo-tokens.txt
	@$(ENV_SETUP) { \
	  addr=$${TENANTRY_LISTEN:-127.0.0.1:8080}; \
	  echo; echo "tenantry is starting on http://$$addr"; \
	  echo "  Swagger UI:   http://$$addr/swagger-ui/   (Authorize with a token below)"; \
	  echo "  Console:      http://$$addr/console/   (sign in, or paste a token below)"; \
	  echo "  OpenAPI:      http://$$addr/api/v1/openapi.json"; \
	  echo "  Environment:  source .tenantry/env"; \
	  if [ -f .tenantry/tenantry.toml ]; then \
	    echo "  Sign in:      http://$$addr/api/v1/auth/demo/login  (demo OpenID provider on :$(DEMO_IDP_PORT), as alice)"; fi; \
	  echo; echo "Demo tokens (valid 12 h; also in .tenantry/demo-tokens.txt):"; \
	  cat .tenantry/demo-tokens.txt; echo; \
	  echo "Try: curl -H \"Authorization: Bearer \$$TOKEN\" http://$$addr/api/v1/orgs"; echo; \
	}
	@$(ENV_SETUP) export TENANTRY_CONFIG=$${TENANTRY_CONFIG:-.tenantry/tenantry.toml}; \
	  $(BIN) worker > .tenantry/worker.log 2>&1 & worker=$$!; \
	  echo "  Worker:       executing workflow runs and delivering webhooks (log: .tenantry/worker.log)"; \
	  trap 'kill $$worker 2>/dev/null' EXIT INT TERM; \
	  $(BIN) serve

openapi: build
	@$(BIN) openapi > openapi/openapi.json
	@echo "wrote openapi/openapi.json"

fmt:
	$(CARGO) fmt

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

# The test cluster: its own directory and port, durability off (it is thrown away).
test-db:
	@.dev/pg.sh start $(TEST_PG_DIR) $(TEST_PG_PORT) fast
	@.dev/tools.sh redis-server pgbouncer openssl
	@.dev/tls.sh $(TEST_TLS_DIR)

# The statuses the integration suites saw, per operation (compared with the OpenAPI document).
OBSERVED_STATUSES = .tenantry/observed-statuses.tsv
TEST_ENV = TEST_ADMIN_DATABASE_URL=$(call PG_ADMIN,$(TEST_PG_PORT),postgres) \
           TEST_PG_PORT=$(TEST_PG_PORT) TEST_TLS_DIR=$(abspath $(TEST_TLS_DIR))

# The managed pass: the same suites on the managed-shaped cluster, through verify-full, the
# install done by its NOSUPERUSER CREATEROLE CREATEDB admin, the app role signed in by its
# client certificate. Passwords are generated per cluster by .dev/managed.sh.
MANAGED_TLS = sslmode=verify-full&sslrootcert=$(abspath $(TEST_TLS_DIR))/ca.crt
MANAGED_ENV = TEST_PG_PORT=$(MANAGED_PG_PORT) TEST_PG_HOST=localhost TEST_TLS_DIR=$(abspath $(TEST_TLS_DIR)) \
  TEST_PG_TLS='$(MANAGED_TLS)' \
  TEST_PG_SUPERUSER="postgres:$$(cat $(TEST_MANAGED_DIR)/superuser.password)" \
  TEST_PG_INSTALLER="tenantry_admin:$$(cat $(TEST_MANAGED_DIR)/admin.password)" \
  TEST_PG_APP_TLS='sslcert=$(abspath $(TEST_TLS_DIR))/client.crt&sslkey=$(abspath $(TEST_TLS_DIR))/client.key'
MANAGED_URL = postgres://$(1):$$(cat $(TEST_MANAGED_DIR)/$(2).password)@localhost:$(MANAGED_PG_PORT)/{db}?$(MANAGED_TLS)

# The real OpenID provider the sign-in tests start (node oidc-provider, pinned by its lockfile).
$(OIDC_PROVIDER)/node_modules/.package-lock.json: $(OIDC_PROVIDER)/package-lock.json
	@command -v npm >/dev/null || { echo "make test needs Node.js and npm (for the test OpenID provider)"; exit 1; }
	npm ci --prefix $(OIDC_PROVIDER) --no-audit --no-fund --loglevel=error

# The integration tests run twice: straight to PostgreSQL, then through PgBouncer 1.18 in
# transaction pooling (the servers then use database_statement_cache = "transaction").
test: test-db lint $(OIDC_PROVIDER)/node_modules/.package-lock.json
	@rm -f $(OBSERVED_STATUSES)
	env -u TEST_PGBOUNCER_PORT $(TEST_ENV) TEST_OBSERVED_STATUSES=$(abspath $(OBSERVED_STATUSES)) $(CARGO) test --all-targets -- --skip managed::
	@.dev/openapi_check.sh $(OBSERVED_STATUSES)
	@.dev/pgbouncer.sh start $(TEST_PGBOUNCER_DIR) $(PGBOUNCER_TEST_PORT) $(TEST_PG_PORT)
	@echo "The integration tests again, through PgBouncer (transaction pooling) on port $(PGBOUNCER_TEST_PORT):"
	$(TEST_ENV) TEST_PGBOUNCER_PORT=$(PGBOUNCER_TEST_PORT) $(CARGO) test --test api -- --skip managed::
	@.dev/pgbouncer.sh stop $(TEST_PGBOUNCER_DIR)
	@$(MAKE) --no-print-directory pgtap
	@$(MAKE) --no-print-directory test-managed
	@$(MAKE) --no-print-directory contract
	@$(MAKE) --no-print-directory export-rss
	@$(MAKE) --no-print-directory alerts
	@$(MAKE) --no-print-directory console
	@echo "make test: all checks passed"

# The integration suites and pgTAP on the managed-shaped cluster (also part of `make test`). The
# backup tests stay on the plain cluster: without a superuser there is no backup role (what
# managed::a_backup_without_a_role... checks instead).
test-managed: test-db build
	@.dev/managed.sh start $(TEST_MANAGED_DIR) $(MANAGED_PG_PORT) $(TEST_TLS_DIR)
	@echo "The integration tests on a managed-shaped PostgreSQL (TLS only, installed without a superuser) on port $(MANAGED_PG_PORT):"
	env -u TEST_PGBOUNCER_PORT $(MANAGED_ENV) $(CARGO) test --test api -- --skip backup:: --skip catalog::a_backup_role_that_can_write_is_reported
	@echo "pgTAP on the managed-shaped cluster, installed by its admin:"
	@.dev/pgtap.sh "$(call MANAGED_URL,postgres,superuser)" $(BIN) "$(call MANAGED_URL,tenantry_admin,admin)"

# The shipped alert rules: promtool (Debian's prometheus package) checks them and runs their
# unit tests, which fire each rule on synthetic series and keep it quiet on healthy ones.
alerts:
	@.dev/tools.sh promtool:prometheus
	promtool check rules .ops/prometheus/tenantry-alerts.yml
	cd .ops/prometheus && promtool test rules tenantry-alerts.test.yml

# The web console in headless Chromium (Debian's package, driven by Playwright from PyPI): the
# exit-gate journey through the real OpenID provider, server and worker (also part of `make test`).
# Screenshots of the main pages are written to .tenantry/console-screenshots/.
console: test-db build $(OIDC_PROVIDER)/node_modules/.package-lock.json
	@.dev/console.sh "$(call PG_ADMIN,$(TEST_PG_PORT),postgres)" $(TEST_PG_PORT) $(BIN)

# pgTAP: migrate a scratch database, run policies/tests with pg_prove, then `tenantry check` on it.
pgtap: test-db build
	@.dev/pgtap.sh "postgres://postgres@127.0.0.1:$(TEST_PG_PORT)/{db}" $(BIN)

# An export of 200,000 rows in bounded server memory (also part of `make test`).
export-rss: test-db build
	@.dev/export_rss.sh "$(call PG_ADMIN,$(TEST_PG_PORT),postgres)" $(TEST_PG_PORT) $(BIN)

# Contract: schemathesis against the served OpenAPI document (no 5xx, responses match the schema).
contract: test-db build
	@.dev/contract.sh "$(call PG_ADMIN,$(TEST_PG_PORT),postgres)" $(TEST_PG_PORT) $(BIN)

# Backups of the local database: `make backup` writes .tenantry/backups/tenantry-<time>.dump as
# tenantry_backup; `make restore FILE=... DB=restored` restores it into a new database and checks it.
BACKUP_DIR ?= .tenantry/backups
BACKUP_URL ?= postgres://tenantry_backup@127.0.0.1:$(PG_PORT)/tenantry
backup: migrate
	@.dev/backup.sh backup "$(BACKUP_URL)" $(BACKUP_DIR)

restore: build db
	@test -n "$(FILE)" -a -n "$(DB)" || { echo "usage: make restore FILE=<dump> DB=<new database name>"; exit 2; }
	@TENANTRY_BIN=$(BIN) .dev/backup.sh restore $(FILE) "postgres://postgres@127.0.0.1:$(PG_PORT)" $(DB)

bench: build
	@.dev/bench.sh

# Long load and fault runs, not part of make test: sustained load (latency, errors, memory), a
# PostgreSQL restart under load, a load spike. SOAK_SECONDS sets the sustained phase (120).
soak: build
	@.dev/soak.sh

# The isolation drill on a real Citus cluster (a coordinator and two workers), not part of make
# test: CITUS_SRC is a source tree of a Citus release for this PostgreSQL major (README, "Scaling
# out"). Builds and installs Citus, distributes the schema, probes it through a server.
citus: build
	@test -n "$(CITUS_SRC)" || { echo "make citus CITUS_SRC=/path/to/citus (a 13.x source tree for PostgreSQL 15)" >&2; exit 2; }
	@.dev/citus_drill.sh "$(CITUS_SRC)" $(BIN)

# The integration suites on the same Citus cluster: every test database is made on all three
# nodes, distributed as the drill does (tests/api/helpers.rs, TEST_CITUS_WORKERS). The backup
# suite stays on plain PostgreSQL (pg_dump of one node is not a cluster's backup).
CITUS_PORT ?= 55440
citus-test: test-db
	@test -n "$(CITUS_SRC)" || { echo "make citus-test CITUS_SRC=/path/to/citus (a 13.x source tree for PostgreSQL 15)" >&2; exit 2; }
	@.dev/citus_build.sh "$(CITUS_SRC)"
	@.dev/citus.sh up > /dev/null
	TEST_PG_PORT=$(CITUS_PORT) TEST_CITUS_WORKERS=$$(($(CITUS_PORT) + 1)),$$(($(CITUS_PORT) + 2)) TEST_PG_TLS=sslmode=disable \
	  TEST_TLS_DIR=$(abspath $(TEST_TLS_DIR)) $(CARGO) test --test api -- --skip managed:: --skip backup:: $(CITUS_TESTS)

clean-db: db-stop
	rm -rf $(PG_DIR) $(TEST_PG_DIR) $(TEST_PGBOUNCER_DIR) $(TEST_MANAGED_DIR) $(TEST_TLS_DIR)
