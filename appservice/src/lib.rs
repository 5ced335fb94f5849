//! `caduceus-appservice`, the verification gatekeeper of Caduceus.
//!
//! An application service that the homeserver trusts to raise and lower verification levels.
//! Its bot greets every new account in a direct chat, checks the registration numbers people
//! send against professional registers imported from files, passes unclear cases to
//! verification officers, grants `identity` from HR rosters and trusted email domains, and
//! re-checks every medical verification it granted.
//!
//! - [`as_api`]: the routes the homeserver calls (transactions, queries, ping).
//! - [`bot`]: what the bot does, one step at a time.
//! - [`homeserver`]: the requests the bot sends to the homeserver.
//! - [`registers`], [`rosters`], [`source`]: imported files and their change detection.
//! - [`matching`]: comparing display names with register names.
//! - [`commands`], [`messages`]: what people write to the bot and what it answers.
//! - [`state`]: the durable state in the data dir.
//! - [`registration`]: the registration YAML shared with the homeserver.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use caduceus_config::appservice::AppserviceConfig;
use tokio::sync::Notify;

pub mod as_api;
pub mod bot;
pub mod commands;
pub mod crypto;
pub mod homeserver;
pub mod matching;
pub mod messages;
pub mod registers;
pub mod registration;
pub mod rosters;
pub mod source;
pub mod state;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// Runs the gatekeeper until `shutdown` is notified: the Application Service API on the
/// configured address, and the bot.
pub async fn run(config: AppserviceConfig, shutdown: Arc<Notify>) -> anyhow::Result<()> {
    let registration = registration::Registration::load(&config.homeserver.registration_file)?;
    let bot_user_id =
        format!("@{}:{}", registration.sender_localpart, config.homeserver.server_name);
    let store = Arc::new(state::Store::open(&config.service.data_dir)?);
    let inbox_ready = Arc::new(Notify::new());

    let api = as_api::router(Arc::new(as_api::ApiState {
        hs_token: registration.hs_token.clone(),
        bot_user_id: bot_user_id.clone(),
        store: store.clone(),
        inbox_ready: inbox_ready.clone(),
    }));
    let listener = tokio::net::TcpListener::bind(config.service.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.service.listen))?;
    tracing::info!(listen = %config.service.listen, bot = %bot_user_id, "the gatekeeper is listening");

    let hs =
        homeserver::Homeserver::new(&config.homeserver.url, &registration.as_token, &bot_user_id)?;
    let bot = bot::Bot::new(config, hs, store);
    let server_shutdown = shutdown.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, api)
            .with_graceful_shutdown(async move { server_shutdown.notified().await })
            .await
    });
    // Events that arrived before a restart are still in the inbox.
    inbox_ready.notify_one();
    bot.run(inbox_ready, shutdown.clone()).await;
    shutdown.notify_waiters();
    server.await.context("the API server task failed")??;
    Ok(())
}
