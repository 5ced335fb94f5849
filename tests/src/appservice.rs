//! Starting and stopping a `caduceus-appservice` process next to a test server.
//!
//! The registration is made by the real `generate-registration` command before the homeserver
//! starts, because the homeserver reads it at start-up; [`TestAppservice::homeserver_config`]
//! is the `[appservices]` section to start the homeserver with.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::server::{append_to, caduceus_binary, free_loopback_port, toml_string, TestServer};
use crate::SERVER_NAME;

/// The localpart of the gatekeeper's bot user in tests.
pub const BOT_LOCALPART: &str = "verification";

/// Maximum time a started appservice may take to respond to a ping.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Returns the path of the `caduceus-appservice` binary under test: `CADUCEUS_APPSERVICE_BIN`
/// when set, else the binary next to `caduceus` in the Cargo target directory.
pub fn appservice_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("CADUCEUS_APPSERVICE_BIN") {
        return PathBuf::from(path);
    }
    caduceus_binary().with_file_name(format!("caduceus-appservice{}", std::env::consts::EXE_SUFFIX))
}

/// A `caduceus-appservice` process with its own registration, config and data dir.
///
/// Dropping the value kills the process. When the test is panicking, its log is printed.
pub struct TestAppservice {
    binary: PathBuf,
    dir: TempDir,
    port: u16,
    pub as_token: String,
    pub hs_token: String,
    child: Option<Child>,
    http: reqwest::Client,
}

impl TestAppservice {
    /// Picks a port and writes a registration with `caduceus-appservice generate-registration`.
    /// The process is not started.
    pub fn prepare() -> Self {
        let binary = appservice_binary();
        assert!(
            binary.is_file(),
            "the caduceus-appservice binary was not found at {}: run `cargo build -p \
             caduceus-appservice` first, or set CADUCEUS_APPSERVICE_BIN",
            binary.display()
        );
        let dir = tempfile::Builder::new()
            .prefix("caduceus-e2e-appservice-")
            .tempdir()
            .expect("failed to create a temporary directory for the appservice");
        let port = free_loopback_port();
        let registration = dir.path().join("registration.yaml");
        let output = Command::new(&binary)
            .args(["generate-registration", "--url"])
            .arg(format!("http://127.0.0.1:{port}"))
            .args(["--sender-localpart", BOT_LOCALPART, "--server-name", SERVER_NAME])
            .arg("--output")
            .arg(&registration)
            .output()
            .expect("failed to run generate-registration");
        assert!(
            output.status.success(),
            "generate-registration failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let yaml = fs::read_to_string(&registration).expect("the registration was written");
        let token = |key: &str| {
            yaml.lines()
                .find_map(|line| line.strip_prefix(&format!("{key}: ")))
                .unwrap_or_else(|| panic!("the registration has no {key}:\n{yaml}"))
                .trim()
                .to_owned()
        };
        Self {
            as_token: token("as_token"),
            hs_token: token("hs_token"),
            binary,
            dir,
            port,
            child: None,
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("failed to build the HTTP client"),
        }
    }

    /// Returns the `[appservices]` section that makes a homeserver load this registration.
    /// Failed transactions are retried within two seconds, so tests that stop the appservice do
    /// not wait for the production back-off.
    pub fn homeserver_config(&self) -> String {
        let path = self.registration_path();
        let path = path.to_str().expect("the temporary path is UTF-8");
        format!(
            "[appservices]\nregistration_files = [{}]\nretry_base_ms = 200\nretry_max_ms = 2000\n",
            toml_string(path)
        )
    }

    pub fn registration_path(&self) -> PathBuf {
        self.dir.path().join("registration.yaml")
    }

    /// Returns the folder of the appservice's config, where tests put register files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Returns the bot's user ID.
    pub fn bot_user_id(&self) -> String {
        format!("@{BOT_LOCALPART}:{SERVER_NAME}")
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Writes the config for `server`, with `extra` (more keys and sections) appended, and
    /// starts the process.
    pub async fn start(&mut self, server: &TestServer, extra: &str) {
        let config = format!(
            "[homeserver]\n\
             url = \"{hs}\"\n\
             server_name = \"{SERVER_NAME}\"\n\
             registration_file = \"registration.yaml\"\n\
             \n\
             [service]\n\
             listen = \"127.0.0.1:{port}\"\n\
             data_dir = \"data\"\n\
             \n\
             {extra}",
            hs = server.base_url(),
            port = self.port,
        );
        fs::write(self.config_path(), config).expect("failed to write the appservice config");
        self.spawn().await;
    }

    /// Kills the process with SIGKILL; its state stays in the data dir.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("the appservice is not running");
        child.kill().expect("failed to kill the appservice");
        child.wait().expect("failed to wait for the appservice");
    }

    /// Starts the process again with the same config and data dir.
    pub async fn restart(&mut self) {
        if self.child.is_some() {
            self.kill();
        }
        self.spawn().await;
    }

    /// Everything the process logged so far.
    pub fn output(&self) -> String {
        let log = fs::read_to_string(self.dir.path().join("appservice.log")).unwrap_or_default();
        format!("--- caduceus-appservice log ---\n{log}")
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("gatekeeper.toml")
    }

    async fn spawn(&mut self) {
        let log = self.dir.path().join("appservice.log");
        let mut command = Command::new(&self.binary);
        command.arg("run").arg("--config").arg(self.config_path());
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("CADUCEUS_APPSERVICE__") {
                command.env_remove(key);
            }
        }
        command
            .env("RUST_LOG", "caduceus_appservice=debug,info")
            .stdin(Stdio::null())
            .stdout(append_to(&log))
            .stderr(append_to(&log));
        let child = command.spawn().expect("failed to start caduceus-appservice");
        self.child = Some(child);

        let url = format!("{}/_matrix/app/v1/ping", self.base_url());
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let child = self.child.as_mut().expect("just started");
            if let Some(status) = child.try_wait().expect("failed to check the appservice") {
                self.child = None;
                panic!("caduceus-appservice exited with {status}\n{}", self.output());
            }
            let response = self
                .http
                .post(&url)
                .bearer_auth(&self.hs_token)
                .json(&serde_json::json!({}))
                .send()
                .await;
            if response.is_ok_and(|response| response.status() == 200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "caduceus-appservice did not respond to a ping within {READY_TIMEOUT:?}\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for TestAppservice {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.output());
        }
    }
}
