//! The `caduceus` binary: serves the homeserver, or runs an administration command.

use std::path::PathBuf;
use std::process::ExitCode;

use caduceus_config::{Config, LogFormat};
use caduceus_directory::{Area, Coordinates};
use caduceus_server::admin::{self, AdminCommand, EvidenceArgs};
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// Caduceus, a Matrix homeserver for verified healthcare professionals.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// A TOML settings file; without it the embedded defaults apply (see caduceus.example.toml).
    #[arg(long, short, global = true, value_name = "PATH")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the homeserver (the default when no command is given).
    Serve,
    /// Administer accounts and registration, on a running server or on a stopped one's data dir.
    Admin {
        #[command(subcommand)]
        command: AdminCli,
    },
}

#[derive(Debug, Subcommand)]
enum AdminCli {
    /// Create an account.
    CreateUser {
        /// The localpart of the new user ID, such as `alice` for @alice:SERVER_NAME.
        username: String,
        /// The password; read from the CADUCEUS_PASSWORD environment variable when omitted.
        #[arg(long, env = "CADUCEUS_PASSWORD", hide_env_values = true)]
        password: String,
        /// Make the account a server administrator.
        #[arg(long)]
        admin: bool,
    },
    /// Print the newest security events: logins, failed logins, lockouts and logins refused
    /// during them, unlocks, registrations, replaced primary devices, login tokens issued,
    /// linked sessions ended, password changes, deactivations and admin commands.
    AuditLog {
        /// How many events to print.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Manage the tokens that let people register.
    RegistrationToken {
        #[command(subcommand)]
        command: TokenCli,
    },
    /// Set a user's verification level, its evidence and directory attributes, and update the
    /// directory at once; a lower level also withdraws the user's pending invites.
    SetVerification(Box<VerificationCli>),
    /// Rebuild the directory index from the stored verification records.
    Reindex,
    /// List, approve or reject the requests of users to have their account deleted.
    DeletionRequests {
        #[command(subcommand)]
        command: DeletionCli,
    },
    /// Send a test mail with the `[email]` settings, to check them.
    SendTestMail {
        /// The recipient's email address.
        to: String,
    },
    /// Lift the lockout of an account after wrong passwords and reset its count of failures.
    Unlock {
        /// The user ID or localpart.
        user: String,
    },
}

#[derive(Debug, Subcommand)]
enum DeletionCli {
    /// List every request with its state, oldest first.
    List,
    /// Approve a user's open request: deactivate the account and erase its personal data.
    Approve {
        /// The user ID or localpart.
        user: String,
    },
    /// Reject a user's open request; the account stays as it is.
    Reject {
        /// The user ID or localpart.
        user: String,
        /// Why, shown to the user.
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Debug, clap::Args)]
struct VerificationCli {
    /// The user ID or localpart.
    user: String,
    /// pending, identity or medical.
    #[arg(long)]
    level: String,
    /// A profession, such as physician; repeat the flag for several.
    #[arg(long = "profession")]
    professions: Vec<String>,
    /// A specialty, such as cardiology; repeat the flag for several.
    #[arg(long = "specialty")]
    specialties: Vec<String>,
    /// An organisation the user works for; repeat the flag for several.
    #[arg(long = "organisation")]
    organisations: Vec<String>,
    /// The city of the work place, such as Utrecht.
    #[arg(long)]
    city: Option<String>,
    /// The postal code of the work place, such as 3584 CX.
    #[arg(long)]
    postal_code: Option<String>,
    /// The region of the work place, such as Utrecht or Île-de-France.
    #[arg(long)]
    region: Option<String>,
    /// An ISO 3166-1 alpha-2 code such as NL.
    #[arg(long)]
    country: Option<String>,
    /// Latitude of the work place in decimal degrees; requires --lon.
    #[arg(long, requires = "lon", allow_hyphen_values = true)]
    lat: Option<f64>,
    /// Longitude of the work place in decimal degrees; requires --lat.
    #[arg(long, requires = "lat", allow_hyphen_values = true)]
    lon: Option<f64>,
    /// Keep the user out of directory searches.
    #[arg(long)]
    unlisted: bool,
    /// How the level was established: register, roster, email_domain or officer (the default).
    #[arg(long)]
    source: Option<String>,
    /// The professional register the number was matched in, such as BIG.
    #[arg(long)]
    register: Option<String>,
    /// The registration number in that register.
    #[arg(long)]
    registration_number: Option<String>,
    /// When the level was verified, in milliseconds since the Unix epoch; now when omitted.
    #[arg(long)]
    verified_at: Option<u64>,
    /// When the level should be checked again, in milliseconds since the Unix epoch.
    #[arg(long)]
    next_check: Option<u64>,
    /// A note for other administrators.
    #[arg(long)]
    note: Option<String>,
}

#[derive(Debug, Subcommand)]
enum TokenCli {
    /// Create a token and print it.
    Create {
        /// The token text; random when omitted. 1 to 64 characters from [A-Za-z0-9._~-].
        #[arg(long)]
        token: Option<String>,
        /// How many registrations the token allows; unlimited when omitted.
        #[arg(long)]
        uses_allowed: Option<u64>,
        /// Days until the token expires; never when omitted.
        #[arg(long)]
        expires_in_days: Option<u64>,
    },
    /// List every token with its state and uses.
    List,
    /// Revoke a token so it admits no more registrations.
    Revoke { token: String },
}

impl From<AdminCli> for AdminCommand {
    fn from(command: AdminCli) -> Self {
        match command {
            AdminCli::CreateUser { username, password, admin } => {
                AdminCommand::CreateUser { username, password, admin }
            }
            AdminCli::RegistrationToken {
                command: TokenCli::Create { token, uses_allowed, expires_in_days },
            } => AdminCommand::RegistrationTokenCreate { token, uses_allowed, expires_in_days },
            AdminCli::AuditLog { limit } => AdminCommand::AuditLog { limit },
            AdminCli::RegistrationToken { command: TokenCli::List } => {
                AdminCommand::RegistrationTokenList
            }
            AdminCli::RegistrationToken { command: TokenCli::Revoke { token } } => {
                AdminCommand::RegistrationTokenRevoke { token }
            }
            AdminCli::SetVerification(args) => {
                let args = *args;
                let coordinates = match (args.lat, args.lon) {
                    (Some(lat), Some(lon)) => Some(Coordinates { lat, lon }),
                    _ => None,
                };
                AdminCommand::SetVerification {
                    user: args.user,
                    level: args.level,
                    professions: args.professions,
                    specialties: args.specialties,
                    organisations: args.organisations,
                    area: Area {
                        city: args.city,
                        postal_code: args.postal_code,
                        region: args.region,
                        country: args.country,
                        coordinates,
                    },
                    unlisted: args.unlisted,
                    evidence: Box::new(EvidenceArgs {
                        source: args.source,
                        register: args.register,
                        registration_number: args.registration_number,
                        verified_at: args.verified_at,
                        next_check: args.next_check,
                        note: args.note,
                    }),
                }
            }
            AdminCli::Reindex => AdminCommand::Reindex,
            AdminCli::DeletionRequests { command: DeletionCli::List } => {
                AdminCommand::DeletionRequestList
            }
            AdminCli::DeletionRequests { command: DeletionCli::Approve { user } } => {
                AdminCommand::DeletionRequestApprove { user }
            }
            AdminCli::DeletionRequests { command: DeletionCli::Reject { user, reason } } => {
                AdminCommand::DeletionRequestReject { user, reason }
            }
            AdminCli::SendTestMail { to } => AdminCommand::SendTestMail { to },
            AdminCli::Unlock { user } => AdminCommand::Unlock { user },
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("caduceus: {error}");
            return ExitCode::from(2);
        }
    };

    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("caduceus: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };

    // The log filter is checked here because only the server crate depends on its parser.
    if let Err(error) = EnvFilter::try_new(log_directive(&config)) {
        eprintln!(
            "caduceus: invalid configuration: `logging.level` is {:?}, which is not a valid \
             tracing filter ({error}); use a level such as \"info\" or \"caduceus_server=debug,info\"",
            config.logging.level
        );
        return ExitCode::from(2);
    }

    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            init_logging(&config);
            match runtime.block_on(caduceus_server::serve(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!(
                        error = format!("{error:#}"),
                        "the server stopped with an error"
                    );
                    eprintln!("caduceus: {error:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Admin { command } => runtime.block_on(run_admin(config, command.into())),
    }
}

async fn run_admin(config: Config, command: AdminCommand) -> ExitCode {
    let output = match admin::run_anywhere(&config, command).await {
        Ok(output) => output,
        Err(error) => {
            eprintln!("caduceus admin: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    if output.success {
        println!("{}", output.text);
        ExitCode::SUCCESS
    } else {
        eprintln!("caduceus admin: {}", output.text);
        ExitCode::FAILURE
    }
}

/// Returns the configured log filter, with ruma's authorization checks kept quiet (they log every step at
/// info level) unless the operator names them.
fn log_directive(config: &Config) -> String {
    let mut directive = config.logging.level.clone();
    if !directive.contains("ruma_state_res") {
        directive.push_str(",ruma_state_res=warn");
    }
    directive
}

fn init_logging(config: &Config) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(log_directive(config)))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match config.logging.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
