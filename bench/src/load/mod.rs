//! A messaging load test for any homeserver on this machine.
//!
//! The run registers its own users (with a random run ID in their names), creates one public
//! room, and then lets `senders` users each send `messages` events with
//! `PUT /rooms/{roomId}/send/m.room.message/{txnId}`, one request in flight per sender, while
//! `receivers` users long-poll `/sync`. Every instant comes from one monotonic clock in this
//! process, so a delivery is matched to its send by event ID and timed without clock skew.

pub mod client;
pub mod report;
pub mod stats;
pub mod target;

mod receiver;
mod sender;
mod setup;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use tokio::sync::watch;

use self::client::{Homeserver, RegistrationAuth};
use self::report::Report;
use self::target::LoopbackTarget;

/// How long the HTTP client waits for one response beyond the `/sync` timeout before it gives
/// up on the request.
const REQUEST_TIMEOUT_MARGIN: Duration = Duration::from_secs(30);

/// Command-line options of the `load` binary.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "load",
    about = "Measure message throughput and /sync delivery latency of a homeserver on this machine",
    long_about = None,
    after_help = "Exit status: 0 when every message was acknowledged and delivered to every \
                  receiver, 1 when the set-up failed, 2 for invalid options, 3 when the run \
                  finished incomplete (failed sends, missing deliveries or the deadline)."
)]
pub struct Options {
    /// Base URL of the homeserver. Only http:// URLs whose host is in 127.0.0.0/8, is [::1] or
    /// is localhost are accepted.
    #[arg(long, default_value = "http://127.0.0.1:8008", value_parser = target::parse_loopback_url)]
    pub url: LoopbackTarget,

    /// Register users with this registration token (UIA stage m.login.registration_token).
    /// Each user spends one use. Without it, users register with m.login.dummy, which needs
    /// open registration.
    #[arg(long, value_name = "TOKEN")]
    pub registration_token: Option<String>,

    /// Number of concurrent senders, each a user with one request in flight.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub senders: u32,

    /// Number of messages each sender sends.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub messages: u32,

    /// Number of receivers, each a user long-polling /sync.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub receivers: u32,

    /// Deadline for the whole run in seconds, set-up included. The run stops at the deadline
    /// and reports what it measured until then.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub deadline: u64,

    /// The `timeout` parameter of each incremental /sync, in milliseconds.
    #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(0..=300_000))]
    pub sync_timeout_ms: u64,

    /// Print the summary as JSON on standard output instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs the scenario described by `options` and returns its report.
///
/// Returns an error only when the set-up (registration, room creation, joins, first `/sync`)
/// fails or misses the deadline; failures during the measured phase are counted in the report.
pub async fn run(options: &Options) -> anyhow::Result<Report> {
    let started = Instant::now();
    let deadline = tokio::time::Instant::from_std(started + Duration::from_secs(options.deadline));
    let sync_timeout = Duration::from_millis(options.sync_timeout_ms);
    let server = Homeserver::new(&options.url, sync_timeout + REQUEST_TIMEOUT_MARGIN)?;
    let auth = match &options.registration_token {
        Some(token) => RegistrationAuth::Token(token.clone()),
        None => RegistrationAuth::Open,
    };
    let run_id = setup::random_lowercase(8);

    tracing::info!(
        url = %options.url.url,
        run_id,
        senders = options.senders,
        receivers = options.receivers,
        "setting up: registering users and creating the room"
    );
    let setup = tokio::time::timeout_at(
        deadline,
        setup::set_up(&server, &auth, &run_id, options.senders, options.receivers),
    )
    .await
    .context("the set-up did not finish before the deadline")??;
    let setup_time = started.elapsed();
    tracing::info!(room_id = setup.room_id, seconds = setup_time.as_secs_f64(), "set-up done");

    let total_messages = u64::from(options.senders) * u64::from(options.messages);
    let filter = receiver::sync_filter(&setup.room_id, total_messages);
    let (acknowledged_tx, acknowledged_rx) = watch::channel(None);
    let mut receiver_tasks = Vec::new();
    for (session, since) in setup.receivers.iter().zip(&setup.receiver_since) {
        receiver_tasks.push(tokio::spawn(receiver::receive(receiver::ReceiverConfig {
            server: server.clone(),
            session: session.clone(),
            filter: filter.clone(),
            since: since.clone(),
            sync_timeout,
            deadline,
            acknowledged: acknowledged_rx.clone(),
        })));
    }

    let senders_started = Instant::now();
    tracing::info!(messages = total_messages, "sending");
    let mut sender_tasks = Vec::new();
    for (index, session) in setup.senders.iter().enumerate() {
        sender_tasks.push(tokio::spawn(sender::send_all(sender::SenderConfig {
            server: server.clone(),
            session: session.clone(),
            room_id: setup.room_id.clone(),
            run_id: run_id.clone(),
            sender_index: index,
            messages: options.messages,
            deadline,
        })));
    }
    let mut senders = Vec::new();
    for task in sender_tasks {
        senders.push(task.await.context("a sender task panicked")?);
    }
    let acknowledged: HashSet<String> =
        senders.iter().flat_map(|outcome| &outcome.sent).map(|m| m.event_id.clone()).collect();
    tracing::info!(
        acknowledged = acknowledged.len(),
        seconds = senders_started.elapsed().as_secs_f64(),
        "senders finished, waiting for the receivers"
    );
    // The receivers stop once every acknowledged event has reached them, or at the deadline.
    acknowledged_tx.send_replace(Some(Arc::new(acknowledged)));

    let mut receivers = Vec::new();
    for task in receiver_tasks {
        receivers.push(task.await.context("a receiver task panicked")?);
    }
    tracing::info!(seconds = started.elapsed().as_secs_f64(), "receivers finished");

    Ok(report::build(report::Inputs {
        options,
        run_id,
        room_id: setup.room_id,
        receiver_ids: setup.receivers.iter().map(|s| s.user_id.clone()).collect(),
        setup_time,
        senders_started,
        deadline_reached: tokio::time::Instant::now() >= deadline,
        senders,
        receivers,
    }))
}
