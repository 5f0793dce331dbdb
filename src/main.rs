//! The `tagwatch` command: a thin shell over the library (SPEC §6).

use clap::{Parser, Subcommand};
use tagwatch::model::Role;
use tagwatch::Settings;

#[derive(Parser)]
#[command(
    name = "tagwatch",
    version,
    about = "GPS electronic monitoring service"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (migrations run on start).
    Serve {
        #[command(flatten)]
        settings: Settings,
    },
    /// The whole system on real London data: simulated fleet, alerts, a query, the console.
    Demo {
        #[command(flatten)]
        args: tagwatch::demo::DemoArgs,
    },
    /// Drive a running server with simulated tags; report fixes/s and latency.
    Loadgen {
        #[command(flatten)]
        args: tagwatch::loadgen::LoadgenArgs,
    },
    /// Manage users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// The audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Walk the hash chain; print the report; exit 0 only when the chain is intact.
    Verify {
        #[command(flatten)]
        settings: Settings,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user and print its token, alone, on standard output.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// For role device: bind the token to this tag.
        #[arg(long)]
        device_id: Option<String>,
        #[command(flatten)]
        settings: Settings,
    },
    /// Revoke a user's token: refused at once by this store's services (within seconds by
    /// a running one; `DELETE /v1/users/{id}/token` is immediate).
    Revoke {
        /// The user's id.
        #[arg(long, conflicts_with = "name", required_unless_present = "name")]
        id: Option<i64>,
        /// The user's name, if no other user has it.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        settings: Settings,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| "one of device, officer, analyst, auditor, admin".to_owned())
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing();
    match cli.command {
        Command::Serve { settings } => {
            let running = tagwatch::app::start(settings).await?;
            let stop = running.shutdown_handle();
            tokio::spawn(async move {
                let _ = tokio::signal::ctrl_c().await;
                tracing::info!("shutting down");
                let _ = stop.send(true);
            });
            running.wait().await
        }
        Command::Demo { args } => {
            let summary = tagwatch::demo::run(args).await?;
            if summary.missed > 0 || summary.false_alerts > 0 {
                std::process::exit(2);
            }
            Ok(())
        }
        Command::Loadgen { args } => {
            let report = tagwatch::loadgen::run(args).await?;
            println!("{report}");
            Ok(())
        }
        Command::User {
            command:
                UserCommand::Create {
                    name,
                    role,
                    device_id,
                    settings,
                },
        } => {
            let state = tagwatch::app::build_state(settings).await?;
            let user = tagwatch::api::users::create_user(&state, &name, role, device_id.as_deref())
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("{}", user.token);
            Ok(())
        }
        Command::User {
            command: UserCommand::Revoke { id, name, settings },
        } => {
            let store = tagwatch::store::Store::connect(&settings.database_url).await?;
            let id = match (id, name) {
                (Some(id), _) => id,
                (None, Some(name)) => {
                    let ids: Vec<i64> = store
                        .users()
                        .await?
                        .into_iter()
                        .filter(|u| u.name == name)
                        .map(|u| u.id)
                        .collect();
                    match ids[..] {
                        [id] => id,
                        [] => anyhow::bail!("no user is named {name:?}"),
                        _ => anyhow::bail!("users {ids:?} are named {name:?}; give --id"),
                    }
                }
                (None, None) => anyhow::bail!("give --id or --name"),
            };
            tagwatch::api::users::revoke_in_store(&store, id)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("{id}");
            Ok(())
        }
        Command::Audit {
            command: AuditCommand::Verify { settings },
        } => {
            let store = tagwatch::store::Store::connect(&settings.database_url).await?;
            let report = store.verify_audit().await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            if !report.ok {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}
