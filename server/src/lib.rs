//! Caduceus, a Matrix homeserver for verified healthcare professionals.
//!
//! Layers depend downwards only: [`api`] (HTTP) calls [`service`] (rules), which owns the
//! tables in [`storage`] (RocksDB).

pub mod admin;
pub mod api;
pub mod error;
pub mod service;
pub mod storage;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use caduceus_config::Config;

use crate::service::Services;
use crate::storage::Db;

/// How long requests still open at shutdown may take to finish.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// Opens the data dir, starts the client API and the admin socket, and serves until SIGINT or
/// SIGTERM.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let data_dir = config.storage.data_dir.clone();
    let db = Arc::new(
        Db::open(&data_dir.join("db"))
            .with_context(|| format!("cannot open the database in {}", data_dir.display()))?,
    );
    let services = Services::new(config.clone(), db)?;
    services.start_appservices().await.context("cannot start the application services")?;

    let admin_socket = admin::socket::listen(&data_dir, services.clone())
        .context("cannot open the admin socket")?;

    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    tracing::info!(
        address = %listener.local_addr()?,
        server_name = %config.server.server_name,
        "listening for clients"
    );

    let session_sweep = tokio::spawn(service::session_sweep::run(services.clone()));
    let app = api::router(services);
    let stopping = Arc::new(tokio::sync::Notify::new());
    let signalled = stopping.clone();
    let server = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            signalled.notify_one();
        });
    // Long-polling `/sync` requests would delay a graceful shutdown for their whole timeout.
    // So open requests get a few seconds and are then cut off, and clients retry them.
    let grace = async {
        stopping.notified().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        result = server => result.context("the HTTP server failed")?,
        () = grace => tracing::info!(seconds = SHUTDOWN_GRACE.as_secs(), "requests still open after the shutdown grace period were cut off"),
    }

    session_sweep.abort();
    drop(admin_socket);
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    let mut terminate = match tokio::signal::unix::signal(
        tokio::signal::unix::SignalKind::terminate(),
    ) {
        Ok(signal) => signal,
        Err(error) => {
            tracing::warn!(error = %error, "cannot listen for SIGTERM; only Ctrl-C stops the server");
            let _ = interrupt.await;
            return;
        }
    };
    tokio::select! {
        _ = interrupt => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("shutting down");
}
