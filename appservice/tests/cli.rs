//! The `caduceus-appservice` command line, run as a separate process.
//!
//! Having an integration test also makes `cargo test` build the binary, which the end-to-end
//! tests in `tests/` start.

use std::process::Command;

use caduceus_appservice::registration::Registration;

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_caduceus-appservice"))
}

#[test]
fn generate_registration_writes_a_file_that_loads_and_is_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("gatekeeper.yaml");
    let run = || {
        binary()
            .args(["generate-registration", "--url", "http://127.0.0.1:8009"])
            .args(["--id", "hospital-gatekeeper", "--sender-localpart", "verifier"])
            .arg("--output")
            .arg(&output)
            .output()
            .unwrap()
    };
    let first = run();
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let registration = Registration::load(&output).unwrap();
    assert_eq!(registration.id, "hospital-gatekeeper");
    assert_eq!(registration.sender_localpart, "verifier");
    assert_eq!(registration.url, "http://127.0.0.1:8009");
    assert!(registration.gatekeeper);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&output).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the registration holds secrets, mode {mode:o}");
    }

    let second = run();
    assert!(!second.status.success(), "an existing registration must not be replaced");
    assert_eq!(Registration::load(&output).unwrap(), registration);
}

#[test]
fn generate_registration_refuses_a_url_without_scheme() {
    let dir = tempfile::tempdir().unwrap();
    let output = binary()
        .args(["generate-registration", "--url", "127.0.0.1:8009", "--output"])
        .arg(dir.path().join("r.yaml"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--url"));
}

#[test]
fn run_names_the_invalid_setting_and_the_missing_registration() {
    let output = binary()
        .args(["run"])
        .env("CADUCEUS_APPSERVICE__BOT__RECHECK_INTERVAL_SECS", "0")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("bot.recheck_interval_secs"), "{stderr}");

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gatekeeper.toml");
    std::fs::write(&config, "[homeserver]\nregistration_file = \"missing.yaml\"\n").unwrap();
    let output = binary().arg("run").arg("--config").arg(&config).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("missing.yaml"), "{stderr}");
}
