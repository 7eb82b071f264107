//! The `tenantry` command: serve, migrate, check, seed, token, openapi, config.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tenantry::config::{Environment, LogFormat, Settings};

#[derive(Parser)]
#[command(
    name = "tenantry",
    version,
    about = "Multi-tenant SaaS backend isolated by PostgreSQL row-level security"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API (TENANTRY_DATABASE_URL, TENANTRY_LISTEN).
    Serve,
    /// Execute queued workflow runs (TENANTRY_DATABASE_URL, TENANTRY_WORKER__*) until Ctrl-C.
    Worker,
    /// Apply sql/, migrations and policies/ (TENANTRY_ADMIN_DATABASE_URL). Idempotent.
    Migrate,
    /// Verify the catalog: roles, RLS, policies, keys, definer functions, views.
    Check {
        /// The role the server logs in as.
        #[arg(long, default_value = "tenantry_app")]
        app_role: String,
    },
    /// Create the demo organizations and users (TENANTRY_DATABASE_URL). Idempotent.
    Seed {
        /// Also print a development token for each demo user.
        #[arg(long)]
        print_tokens: bool,
    },
    /// Print a development access token for EMAIL (refused in production).
    Token {
        #[arg(long)]
        email: String,
        /// Lifetime, e.g. 30m, 12h, 7d.
        #[arg(long, default_value = "1h")]
        ttl: String,
    },
    /// The audit log: `verify` checks every organization's hash chain (or one, with --org).
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Platform admins (TENANTRY_ADMIN_DATABASE_URL): grant or revoke by issuer + subject.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Master keys for provider keys: `new-master` adds a version to the key file,
    /// `rotate-master` re-wraps every data key with the newest (TENANTRY_ADMIN_DATABASE_URL).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Print the OpenAPI document.
    Openapi,
    /// Print the effective settings (secrets redacted).
    Config,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Make the user with this identity a platform admin (creating the user if new).
    Grant {
        #[arg(long)]
        issuer: String,
        #[arg(long)]
        subject: String,
        #[arg(long)]
        note: Option<String>,
    },
    /// Remove a platform admin.
    Revoke {
        #[arg(long)]
        issuer: String,
        #[arg(long)]
        subject: String,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Append a new random master key version to provider_keys.master_keys_file.
    NewMaster,
    /// Re-wrap every organization's data key with the newest master key, while servers serve.
    RotateMaster {
        /// Data keys per query.
        #[arg(long, default_value_t = 500)]
        batch: i32,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify hash chains (TENANTRY_ADMIN_DATABASE_URL); exit 1 when one is broken.
    Verify {
        #[arg(long)]
        org: Option<uuid::Uuid>,
        /// Also write the result in the Prometheus text format (for node_exporter's textfile
        /// collector, from cron): the worker watchdog's metrics, `tenantry_audit_chains{state}`
        /// and `tenantry_audit_last_verification_timestamp_seconds`.
        #[arg(long)]
        metrics_file: Option<std::path::PathBuf>,
    },
}

/// The audit watchdog's metrics as a textfile-collector file, replaced atomically.
fn write_audit_metrics(path: &std::path::Path, chains: usize, broken: usize) -> anyhow::Result<()> {
    let now = chrono::Utc::now().timestamp();
    let text = format!(
        "# HELP tenantry_audit_chains Audit chains at the last verification\n\
         # TYPE tenantry_audit_chains gauge\n\
         tenantry_audit_chains{{state=\"verified\"}} {}\n\
         tenantry_audit_chains{{state=\"broken\"}} {broken}\n\
         # HELP tenantry_audit_last_verification_timestamp_seconds When every audit chain was last verified\n\
         # TYPE tenantry_audit_last_verification_timestamp_seconds gauge\n\
         tenantry_audit_last_verification_timestamp_seconds {now}\n",
        chains - broken
    );
    let partial = path.with_extension("partial");
    std::fs::write(&partial, text).with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}

fn parse_ttl(text: &str) -> anyhow::Result<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().with_context(|| format!("invalid duration {text:?}"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => anyhow::bail!("invalid duration unit in {text:?} (use s, m, h or d)"),
    };
    anyhow::ensure!((1..=30 * 86_400).contains(&secs), "ttl must be between 1s and 30d");
    Ok(Duration::from_secs(secs))
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let settings = Settings::load()?;
    let service = if matches!(cli.command, Command::Worker) { "tenantry-worker" } else { "tenantry" };
    // Flushes the last spans when `run` returns.
    let json_logs = settings.log_format == LogFormat::Json;
    let _telemetry = tenantry::telemetry::init(json_logs, &settings.telemetry, service)?;
    for var in Settings::unknown_env_vars() {
        tracing::warn!(variable = %var, "unknown TENANTRY_ setting ignored (typo?)");
    }
    match cli.command {
        Command::Serve => {
            let listen = settings.listen.clone();
            let app = tenantry::startup::Application::build(settings).await?;
            tracing::info!(%listen, port = app.port(), "serving; Swagger UI at /swagger-ui/");
            app.run_until_stopped().await?;
        }
        Command::Worker => {
            let connector = tenantry::db::app_connector(&settings)?;
            let pool = tenantry::db::app_pool(
                &connector,
                // Dispatch loops hold a connection only to claim, read and record, never while
                // a request is out: a few connections serve them all.
                settings.worker.concurrency + 2 + settings.webhooks.dispatch_concurrency.min(4),
                std::time::Duration::from_millis(settings.pool_timeout_ms),
            )?;
            tenantry::db::check::refuse_privileged_app_role(&pool).await?;
            let db = tenantry::db::Db::from_settings(pool, &connector, &settings);
            tracing::info!(concurrency = settings.worker.concurrency, region = %settings.region, "worker started");
            let master_keys = std::sync::Arc::new(settings.master_keys()?);
            let dispatcher = tenantry::dispatcher::Dispatcher::new(
                db.clone(),
                settings.webhooks.clone(),
                master_keys.clone(),
            );
            let worker = tenantry::worker::Worker::new(db, settings.worker.clone())
                .with_metrics_token(settings.metrics_token.clone())
                .with_providers(settings.provider_keys.clone(), master_keys)
                .with_dispatcher(dispatcher);
            worker
                .run_until(tenantry::db::listen_connector(&settings)?, tenantry::startup::shutdown_signal())
                .await?;
        }
        Command::Migrate => {
            tenantry::db::migrate::run(&tenantry::db::admin_connector(&settings)?).await?;
            tracing::info!("database is up to date");
        }
        Command::Check { app_role } => {
            let client = tenantry::db::admin_client(&tenantry::db::admin_connector(&settings)?).await?;
            let mut violations = tenantry::db::check::run(&client, &app_role).await?;
            // On a Citus coordinator, also every shard (one query per table and placement).
            if tenantry::db::citus::is_citus(&client).await? {
                violations.extend(tenantry::db::citus::shard_policy_violations(&client).await?);
            }
            let applied: i64 = client
                .query_one("select coalesce(max(version), 0)::int8 from refinery_schema_history", &[])
                .await
                .map(|r| r.get(0))
                .unwrap_or(0);
            let expected = tenantry::db::migrate::latest_version();
            if applied < expected {
                violations.push(tenantry::db::check::Violation {
                    rule: "migrations_behind",
                    object: "refinery_schema_history".into(),
                    message: format!("applied version {applied}, this binary expects {expected}"),
                });
            } else if applied > expected {
                eprintln!(
                    "note: migrations at {applied}, ahead of this binary's {expected} (a newer release)"
                );
            }
            if violations.is_empty() {
                println!("tenantry check: OK (app role {app_role}, migrations at {expected})");
                return Ok(ExitCode::SUCCESS);
            }
            for v in &violations {
                println!("{v}");
            }
            println!("tenantry check: {} violation(s)", violations.len());
            return Ok(ExitCode::from(1));
        }
        Command::Seed { print_tokens } => {
            let connector = tenantry::db::app_connector(&settings)?;
            let pool = tenantry::db::app_pool(&connector, 2, Duration::from_secs(5))?;
            let db = tenantry::db::Db::from_settings(pool, &connector, &settings);
            tenantry::seed::run(&db, &settings.auth.issuer).await?;
            if print_tokens {
                let keys = tenantry::startup::signing_keys(&settings)?;
                for user in tenantry::seed::USERS {
                    let token = keys.current.mint(
                        &settings.auth.issuer,
                        &settings.auth.audience,
                        &tenantry::seed::subject_for(user.email),
                        Some(user.email),
                        Duration::from_secs(12 * 3600),
                    )?;
                    println!("\n{} ({}):\n{token}", user.email, user.memberships);
                }
            }
        }
        Command::Token { email, ttl } => {
            anyhow::ensure!(
                settings.environment == Environment::Development,
                "tenantry token is for development only (environment is production)"
            );
            anyhow::ensure!(
                email.contains('@') && email.len() <= 320 && !email.chars().any(char::is_whitespace),
                "--email must be an email address"
            );
            let keys = tenantry::startup::signing_keys(&settings)?;
            let token = keys.current.mint(
                &settings.auth.issuer,
                &settings.auth.audience,
                &tenantry::seed::subject_for(&email),
                Some(email.trim()),
                parse_ttl(&ttl)?,
            )?;
            println!("{token}");
        }
        Command::Audit { command: AuditCommand::Verify { org, metrics_file } } => {
            let client = tenantry::db::admin_client(&tenantry::db::admin_connector(&settings)?).await?;
            // The chains, then each verified in a statement of its own: on Citus, a function
            // called per row of a distributed table would run a distributed query on a shard.
            let rows = client
                .query(
                    "select o.organization_id, count(*) as entries from audit_events o \
                     where $1::uuid is null or o.organization_id = $1 \
                     group by o.organization_id order by o.organization_id",
                    &[&org],
                )
                .await?;
            let mut broken = 0;
            for row in &rows {
                let id: uuid::Uuid = row.get("organization_id");
                let entries: i64 = row.get("entries");
                let first_broken =
                    client.query_opt("select seq, reason from app.audit_verify($1)", &[&id]).await?;
                match first_broken {
                    None => println!("{id}  ok      {entries} entries"),
                    Some(v) => {
                        broken += 1;
                        let (seq, reason): (i64, String) = (v.get(0), v.get(1));
                        println!("{id}  BROKEN  at entry {seq}: {reason}");
                    }
                }
            }
            println!("tenantry audit verify: {} chain(s), {broken} broken", rows.len());
            if let Some(path) = metrics_file {
                write_audit_metrics(&path, rows.len(), broken)?;
            }
            if broken > 0 {
                return Ok(ExitCode::from(1));
            }
        }
        Command::Admin { command } => {
            let client = tenantry::db::admin_client(&tenantry::db::admin_connector(&settings)?).await?;
            match command {
                AdminCommand::Grant { issuer, subject, note } => {
                    client
                        .execute(
                            "insert into platform_admins (user_id, note) \
                             select app.provision_user($1, $2, null, null), $3 on conflict (user_id) do nothing",
                            &[&issuer, &subject, &note],
                        )
                        .await?;
                    println!("platform admin: {issuer} {subject}");
                }
                AdminCommand::Revoke { issuer, subject } => {
                    let n = client
                        .execute(
                            "delete from platform_admins a using users u \
                             where u.id = a.user_id and u.issuer = $1 and u.subject = $2",
                            &[&issuer, &subject],
                        )
                        .await?;
                    println!("revoked {n} platform admin(s)");
                }
            }
        }
        Command::Keys { command: KeysCommand::NewMaster } => {
            let path = &settings.provider_keys.master_keys_file;
            let version = tenantry::crypto::MasterKeys::add_version_to_file(path)?;
            println!("added master key version {version} to {}", path.display());
            println!("deploy the file to every server and worker, then run `tenantry keys rotate-master`");
        }
        Command::Keys { command: KeysCommand::RotateMaster { batch } } => {
            anyhow::ensure!(batch >= 1, "--batch must be at least 1");
            let keys = settings.master_keys()?;
            let client = tenantry::db::admin_client(&tenantry::db::admin_connector(&settings)?).await?;
            let rewrapped = tenantry::db::rotation::rotate_master(&client, &keys, batch).await?;
            println!("re-wrapped {rewrapped} data key(s) with master key version {}", keys.current_version());
            let remaining = tenantry::db::rotation::remaining(&client, keys.current_version()).await?;
            anyhow::ensure!(
                remaining == 0,
                "{remaining} data key(s) are still under an older version; run it again"
            );
            let retired: Vec<i32> =
                keys.versions().into_iter().filter(|v| *v != keys.current_version()).collect();
            if !retired.is_empty() {
                println!("versions {retired:?} wrap nothing now and can be removed from the key file");
            }
        }
        Command::Openapi => print!("{}", tenantry::api::openapi_json()),
        Command::Config => println!("{}", settings.redacted_toml()),
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    // Both aws-lc-rs and (possibly) ring may be in the tree; pick one before any TLS config.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
