//! The run's set-up: register the users, create the room, join it, and take each receiver's
//! first `/sync` position.

use std::time::Duration;

use anyhow::Context;
use futures::stream::{self, StreamExt, TryStreamExt};
use rand::distributions::Alphanumeric;
use rand::Rng;

use super::client::{Homeserver, RegistrationAuth, Session};
use super::receiver;

/// How many registrations or joins are in flight at once during set-up. Registration hashes a
/// password on the server, so set-up keeps it modest and leaves the load for the measured phase.
const SETUP_CONCURRENCY: usize = 4;

pub struct Setup {
    pub room_id: String,
    pub senders: Vec<Session>,
    pub receivers: Vec<Session>,
    /// Each receiver's `next_batch` from a `/sync` taken after every user joined.
    pub receiver_since: Vec<String>,
}

/// Generates a random string of lowercase letters and digits, valid in a user ID localpart.
pub fn random_lowercase(length: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(length)
        .map(|byte| char::from(byte).to_ascii_lowercase())
        .collect()
}

async fn register_all(
    server: &Homeserver,
    auth: &RegistrationAuth,
    usernames: Vec<String>,
) -> anyhow::Result<Vec<Session>> {
    stream::iter(usernames)
        .map(|username| async move {
            let password = random_lowercase(24);
            server.register(&username, &password, auth).await
        })
        .buffered(SETUP_CONCURRENCY)
        .try_collect()
        .await
}

pub async fn set_up(
    server: &Homeserver,
    auth: &RegistrationAuth,
    run_id: &str,
    sender_count: u32,
    receiver_count: u32,
) -> anyhow::Result<Setup> {
    let sender_names = (0..sender_count).map(|i| format!("load-{run_id}-sender-{i}")).collect();
    let receiver_names =
        (0..receiver_count).map(|i| format!("load-{run_id}-receiver-{i}")).collect();
    let senders = register_all(server, auth, sender_names).await?;
    let receivers = register_all(server, auth, receiver_names).await?;

    let room_id = server.create_room(&senders[0], &format!("Load test {run_id}")).await?;
    stream::iter(senders[1..].iter().chain(&receivers))
        .map(|session| server.join(session, &room_id))
        .buffer_unordered(SETUP_CONCURRENCY)
        .try_collect::<()>()
        .await?;

    // The first position comes from a sync without waiting. Every join is already before it,
    // so the measured phase receives only the messages.
    let filter = receiver::sync_filter(&room_id, 1);
    let mut receiver_since = Vec::new();
    for session in &receivers {
        let (response, _) = server
            .sync(session, None, &filter, Duration::ZERO)
            .await
            .with_context(|| format!("the first /sync of {} failed", session.user_id))?;
        receiver_since.push(response.next_batch);
    }
    Ok(Setup { room_id, senders, receivers, receiver_since })
}
