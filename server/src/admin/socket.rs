//! The admin socket: a Unix socket in the data dir through which `caduceus admin` reaches a
//! running server, since RocksDB lets only one process open the database.
//!
//! Access is controlled by the file system: the socket is created with mode 0600, so only the
//! account that runs the server (or root) can connect. Each connection carries one JSON
//! [`AdminCommand`] line and receives one JSON [`AdminOutput`] line.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::{execute, AdminCommand, AdminOutput};
use crate::service::Services;

/// The socket's file name inside the data dir.
pub const SOCKET_NAME: &str = "admin.sock";

/// The largest command line accepted, in bytes.
const MAX_COMMAND_BYTES: u64 = 64 * 1024;

/// Removes the socket file when the server stops.
pub struct SocketGuard {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_NAME)
}

/// Starts accepting admin commands. A socket file left by a killed server is replaced; the
/// database lock, taken before this, guarantees no other server uses this data dir.
pub fn listen(data_dir: &Path, services: Arc<Services>) -> io::Result<SocketGuard> {
    let path = socket_path(data_dir);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;

    let task = tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let services = services.clone();
                    tokio::spawn(async move {
                        if let Err(error) = serve_connection(stream, &services).await {
                            tracing::warn!(error = %error, "admin connection failed");
                        }
                    });
                }
                Err(error) => {
                    tracing::error!(error = %error, "accepting an admin connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(SocketGuard { path, task })
}

async fn serve_connection(stream: UnixStream, services: &Arc<Services>) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read).take(MAX_COMMAND_BYTES).read_line(&mut line).await?;
    let output = match serde_json::from_str::<AdminCommand>(&line) {
        Ok(command) => {
            tracing::info!(command = command_name(&command), "admin command received");
            execute(services, command).await
        }
        Err(error) => {
            AdminOutput { success: false, text: format!("invalid admin command: {error}") }
        }
    };
    let mut reply = serde_json::to_vec(&output)?;
    reply.push(b'\n');
    write.write_all(&reply).await?;
    write.shutdown().await
}

/// The command's name, for logs that must not carry passwords or tokens.
pub fn command_name(command: &AdminCommand) -> &'static str {
    match command {
        AdminCommand::CreateUser { .. } => "create-user",
        AdminCommand::RegistrationTokenCreate { .. } => "registration-token create",
        AdminCommand::RegistrationTokenList => "registration-token list",
        AdminCommand::RegistrationTokenRevoke { .. } => "registration-token revoke",
        AdminCommand::AuditLog { .. } => "audit-log",
        AdminCommand::SetVerification { .. } => "set-verification",
        AdminCommand::Reindex => "reindex",
        AdminCommand::DeletionRequestList => "deletion-requests list",
        AdminCommand::DeletionRequestApprove { .. } => "deletion-requests approve",
        AdminCommand::DeletionRequestReject { .. } => "deletion-requests reject",
        AdminCommand::SendTestMail { .. } => "send-test-mail",
        AdminCommand::Unlock { .. } => "unlock",
    }
}

/// Sends a command to a running server. Returns `None` if no server listens on this data dir.
pub async fn send(data_dir: &Path, command: &AdminCommand) -> io::Result<Option<AdminOutput>> {
    let stream = match UnixStream::connect(socket_path(data_dir)).await {
        Ok(stream) => stream,
        Err(error)
            if matches!(
                error.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(error) => return Err(error),
    };
    let (read, mut write) = stream.into_split();
    let mut request = serde_json::to_vec(command)?;
    request.push(b'\n');
    write.write_all(&request).await?;
    write.shutdown().await?;

    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    let output = serde_json::from_str(&line)
        .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))?;
    Ok(Some(output))
}
