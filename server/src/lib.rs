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

    let app = api::router(services);
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("the HTTP server failed")?;

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
