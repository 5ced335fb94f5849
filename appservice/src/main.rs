//! The `caduceus-appservice` command: `generate-registration` and `run`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use caduceus_appservice::registration::Registration;
use caduceus_config::appservice::AppserviceConfig;
use caduceus_config::LogFormat;
use clap::{Parser, Subcommand};
use tokio::sync::Notify;
use tracing_subscriber::EnvFilter;

/// The verification gatekeeper of Caduceus, an application service.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Writes a registration file with fresh tokens, for the homeserver and for `run`.
    GenerateRegistration {
        /// The URL where the homeserver reaches this service, such as http://127.0.0.1:8009.
        #[arg(long)]
        url: String,
        /// The ID of the application service.
        #[arg(long, default_value = "caduceus-gatekeeper")]
        id: String,
        /// The localpart of the bot user.
        #[arg(long, default_value = "verification")]
        sender_localpart: String,
        /// Limits the bot's exclusive namespace to this server name.
        #[arg(long)]
        server_name: Option<String>,
        /// The file to write. It is not overwritten if it exists.
        #[arg(long)]
        output: PathBuf,
    },
    /// Runs the application service.
    Run {
        /// The settings file (TOML). Without it, defaults and environment variables apply.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::GenerateRegistration { url, id, sender_localpart, server_name, output } => {
            if !url.starts_with("http://") && !url.starts_with("https://") {
                anyhow::bail!("--url must start with http:// or https://, got {url:?}");
            }
            let registration =
                Registration::generate(&id, &url, &sender_localpart, server_name.as_deref());
            write_new_file(&output, &registration.to_yaml())?;
            println!("wrote {}", output.display());
            Ok(())
        }
        Command::Run { config } => {
            let config = AppserviceConfig::load(config.as_deref())?;
            init_logging(&config)?;
            let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
            runtime.block_on(async {
                let shutdown = Arc::new(Notify::new());
                let signal = shutdown.clone();
                tokio::spawn(async move {
                    wait_for_signal().await;
                    tracing::info!("shutting down");
                    signal.notify_waiters();
                });
                caduceus_appservice::run(config, shutdown).await
            })
        }
    }
}

/// Creates `path` with `contents`, refusing to replace an existing file: a new registration
/// over a registered one would lock the service out of the homeserver.
fn write_new_file(path: &std::path::Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    // The file contains the service's credentials.
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file =
        options.open(path).with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    Ok(())
}

fn init_logging(config: &AppserviceConfig) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directive) if !directive.is_empty() => EnvFilter::try_new(directive),
        _ => EnvFilter::try_new(&config.logging.level),
    }
    .context("invalid log filter")?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match config.logging.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

async fn wait_for_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
