//! Starting, stopping and restarting a `caduceus` process, and running its admin CLI.

use std::fs::{self, File, OpenOptions};
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::SmtpServer;

/// The server name of every test server, so user IDs look like `@alice:localhost`.
pub const SERVER_NAME: &str = "localhost";

/// Maximum time a started server may take to respond to `GET /_matrix/client/versions` with 200.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The setting that lets one account sign in with its password on several devices at once.
/// Tests that need several password devices of one user start their server with it, because
/// by default a password login signs the previous primary device out.
pub const SEVERAL_PRIMARY_DEVICES: (&str, &str) =
    ("CADUCEUS__SESSIONS__SINGLE_PRIMARY_DEVICE", "false");

/// Prefix of the environment variables that override the server's settings.
const ENV_PREFIX: &str = "CADUCEUS__";

/// A running `caduceus` process with its own data directory and port.
///
/// Dropping the value kills the process with SIGKILL. When the test is panicking at that
/// moment, the server's output is printed so the failure report shows what the server logged.
pub struct TestServer {
    binary: PathBuf,
    dir: TempDir,
    port: u16,
    env: Vec<(String, String)>,
    /// TOML appended to the config file the harness writes.
    extra_config: String,
    child: Option<Child>,
    http: reqwest::Client,
    output_printed: bool,
}

/// The result of one `caduceus admin ...` command.
#[derive(Debug)]
pub struct AdminOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Returns the path of the `caduceus` binary under test.
///
/// `CADUCEUS_BIN` wins when set. Otherwise the binary is looked up in the Cargo target
/// directory that contains the test executable (`target/debug/deps/e2e-<hash>` runs
/// `target/debug/caduceus`).
pub fn caduceus_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("CADUCEUS_BIN") {
        return PathBuf::from(path);
    }
    let test_executable = std::env::current_exe().expect("failed to find the test executable");
    let profile_dir = test_executable
        .parent()
        .and_then(Path::parent)
        .expect("the test executable is not inside target/<profile>/deps");
    profile_dir.join(format!("caduceus{}", std::env::consts::EXE_SUFFIX))
}

impl TestServer {
    /// Starts a server with the default settings and waits until it responds to requests.
    pub async fn start() -> Self {
        Self::start_with_env(&[]).await
    }

    /// Starts a server on which one account can sign in with its password on several devices
    /// at once ([`SEVERAL_PRIMARY_DEVICES`]).
    pub async fn start_with_several_devices() -> Self {
        Self::start_with_env(&[SEVERAL_PRIMARY_DEVICES]).await
    }

    /// Starts a server with extra `CADUCEUS__SECTION__KEY` settings, such as
    /// `("CADUCEUS__REGISTRATION__OPEN", "true")`, and waits until it responds to requests.
    ///
    /// The listen address, data directory and server name come from a config file that the
    /// harness writes, so `env` must not set them.
    pub async fn start_with_env(env: &[(&str, &str)]) -> Self {
        Self::start_with_config("", env).await
    }

    /// Starts a server like [`TestServer::start_with_env`], with `extra_config` (whole TOML
    /// sections, such as `[appservices]`) appended to the config file the harness writes.
    pub async fn start_with_config(extra_config: &str, env: &[(&str, &str)]) -> Self {
        let binary = caduceus_binary();
        assert!(
            binary.is_file(),
            "the caduceus binary was not found at {}: run `cargo build -p caduceus-server` \
             first, or set CADUCEUS_BIN to the binary to test",
            binary.display()
        );
        for (key, _) in env {
            assert!(key.starts_with(ENV_PREFIX), "{key} is not a {ENV_PREFIX}* setting");
        }

        let dir = tempfile::Builder::new()
            .prefix("caduceus-e2e-")
            .tempdir()
            .expect("failed to create a temporary directory for the server");
        let mut server = Self {
            binary,
            dir,
            port: free_loopback_port(),
            env: env.iter().map(|(key, value)| (key.to_string(), value.to_string())).collect(),
            extra_config: extra_config.to_owned(),
            child: None,
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("failed to build the HTTP client"),
            output_printed: false,
        };
        server.write_config();
        server.spawn();
        server.wait_until_ready().await;
        server
    }

    /// Starts a server that sends its mail to `smtp` over plain SMTP, with extra settings as in
    /// [`TestServer::start_with_env`], and waits until it responds to requests.
    pub async fn start_with_mail(smtp: &SmtpServer, env: &[(&str, &str)]) -> Self {
        let mail_env = smtp.server_env();
        let mut all_env: Vec<(&str, &str)> =
            mail_env.iter().map(|(key, value)| (key.as_str(), value.as_str())).collect();
        all_env.extend_from_slice(env);
        Self::start_with_env(&all_env).await
    }

    /// Returns the port the server listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Returns the base URL of the client API, such as `http://127.0.0.1:40123`, without a final slash.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Returns the RocksDB data directory, which survives [`TestServer::restart`].
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Returns the config file passed to the server and to the admin CLI with `--config`.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("caduceus.toml")
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Kills the server with SIGKILL, so it gets no chance to flush or shut down cleanly.
    pub fn kill_9(&mut self) {
        let mut child = self.child.take().expect("kill_9 called, but the server is not running");
        child.kill().expect("failed to send SIGKILL to the server");
        child.wait().expect("failed to wait for the killed server");
    }

    /// Starts the server again on the same data directory, port and settings, and waits until
    /// it responds to requests. A server that is still running is killed with SIGKILL first.
    pub async fn restart(&mut self) {
        if self.child.is_some() {
            self.kill_9();
        }
        self.spawn();
        self.wait_until_ready().await;
    }

    /// Runs `caduceus --config FILE admin ARGS...` with the server's settings and returns its
    /// output, whether it succeeded or not.
    pub async fn admin(&self, args: &[&str]) -> AdminOutput {
        let mut command = self.command();
        command.arg("admin").args(args).stdin(Stdio::null());
        let output = tokio::process::Command::from(command)
            .output()
            .await
            .unwrap_or_else(|error| panic!("failed to run `caduceus admin {args:?}`: {error}"));
        AdminOutput {
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Runs an admin command like [`TestServer::admin`] and panics unless it exits with 0.
    pub async fn admin_ok(&self, args: &[&str]) -> AdminOutput {
        let output = self.admin(args).await;
        assert!(
            output.status.success(),
            "`caduceus admin {}` failed with {}\nstdout:\n{}\nstderr:\n{}",
            args.join(" "),
            output.status,
            output.stdout,
            output.stderr
        );
        output
    }

    /// Creates a registration token with the admin CLI and returns it. `uses_allowed` limits
    /// how many accounts the token can create; `None` means no limit.
    pub async fn create_registration_token(&self, uses_allowed: Option<u32>) -> String {
        let uses_allowed = uses_allowed.map(|uses| uses.to_string());
        let mut args = vec!["registration-token", "create"];
        if let Some(uses) = &uses_allowed {
            args.extend(["--uses-allowed", uses.as_str()]);
        }
        let output = self.admin_ok(&args).await;
        let token = output.stdout.lines().map(str::trim).rfind(|line| !line.is_empty());
        token
            .unwrap_or_else(|| {
                panic!("`caduceus admin {}` printed no token on stdout", args.join(" "))
            })
            .to_owned()
    }

    /// Returns everything the server has written to stdout and stderr so far, across restarts.
    pub fn output(&self) -> String {
        let stdout = fs::read_to_string(self.stdout_path()).unwrap_or_default();
        let stderr = fs::read_to_string(self.stderr_path()).unwrap_or_default();
        format!("--- caduceus stderr ---\n{stderr}--- caduceus stdout ---\n{stdout}")
    }

    fn stdout_path(&self) -> PathBuf {
        self.dir.path().join("stdout.log")
    }

    fn stderr_path(&self) -> PathBuf {
        self.dir.path().join("stderr.log")
    }

    fn write_config(&self) {
        let data_dir = self.data_dir();
        let data_dir = data_dir.to_str().expect("the temporary directory path is not UTF-8");
        let config = format!(
            "[server]\n\
             server_name = \"{SERVER_NAME}\"\n\
             listen = \"127.0.0.1:{port}\"\n\
             \n\
             [storage]\n\
             data_dir = {data_dir}\n",
            port = self.port,
            data_dir = toml_string(data_dir),
        ) + "\n"
            + self.extra_config.as_str();
        fs::write(self.config_path(), config).expect("failed to write the server config file");
    }

    /// Builds `caduceus --config FILE` with only the settings this server was started with:
    /// `CADUCEUS__*` variables inherited from the caller's shell are removed.
    fn command(&self) -> Command {
        let mut command = Command::new(&self.binary);
        command.arg("--config").arg(self.config_path());
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with(ENV_PREFIX) {
                command.env_remove(key);
            }
        }
        command.envs(self.env.iter().map(|(key, value)| (key, value)));
        command
    }

    fn spawn(&mut self) {
        let stdout = append_to(&self.stdout_path());
        let stderr = append_to(&self.stderr_path());
        let mut command = self.command();
        command.stdin(Stdio::null()).stdout(stdout).stderr(stderr);
        let child = command
            .spawn()
            .unwrap_or_else(|error| panic!("failed to start {}: {error}", self.binary.display()));
        self.child = Some(child);
    }

    async fn wait_until_ready(&mut self) {
        let url = format!("{}/_matrix/client/versions", self.base_url());
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let child = self.child.as_mut().expect("the server was not started");
            if let Some(status) = child.try_wait().expect("failed to check the server process") {
                self.child = None;
                self.output_printed = true;
                panic!("caduceus exited with {status} before it was ready\n{}", self.output());
            }

            let response = self.http.get(&url).timeout(Duration::from_secs(2)).send().await.ok();
            if response.is_some_and(|response| response.status() == 200) {
                return;
            }

            if Instant::now() > deadline {
                self.output_printed = true;
                panic!(
                    "timed out after {} s waiting for caduceus to respond to GET {url} with 200\n{}",
                    READY_TIMEOUT.as_secs(),
                    self.output()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() && !self.output_printed {
            eprintln!("{}", self.output());
        }
    }
}

/// Returns a port that was free on 127.0.0.1 a moment ago.
///
/// NOTE: another process can take the port between this call and the server's bind. Tests
/// then fail at start-up with the server's "address in use" error in the output.
pub(crate) fn free_loopback_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .expect("failed to bind a free port on 127.0.0.1");
    listener.local_addr().expect("failed to read the bound port").port()
}

pub(crate) fn append_to(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|error| panic!("failed to open {}: {error}", path.display()))
}

/// Quotes `value` as a TOML basic string.
pub(crate) fn toml_string(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('"');
    for character in value.chars() {
        match character {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            control if control.is_control() => {
                quoted.push_str(&format!("\\u{:04X}", u32::from(control)))
            }
            other => quoted.push(other),
        }
    }
    quoted.push('"');
    quoted
}
