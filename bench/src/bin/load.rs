//! `load`: a messaging load test against a homeserver on this machine. Run with `--help`.

use std::process::ExitCode;

use caduceus_bench::load::{self, Options};
use clap::Parser;
use tracing_subscriber::EnvFilter;

/// Exit status of a run that finished but did not send or deliver every message. Status 1 is a
/// failed set-up and status 2 is clap's status for invalid options.
const EXIT_INCOMPLETE: u8 = 3;

#[tokio::main]
async fn main() -> ExitCode {
    let options = Options::parse();
    // Progress and warnings go to standard error, so standard output holds only the summary.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();

    let report = match load::run(&options).await {
        Ok(report) => report,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "the load test failed");
            return ExitCode::FAILURE;
        }
    };
    if options.json {
        match serde_json::to_string_pretty(&report) {
            Ok(json) => println!("{json}"),
            Err(error) => {
                tracing::error!(%error, "the report could not be serialized");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{report}");
    }
    if report.complete {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_INCOMPLETE)
    }
}
