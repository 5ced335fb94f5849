//! The `caduceus` binary's command line: start-up errors and offline administration.

use std::process::Command;

fn caduceus() -> Command {
    Command::new(env!("CARGO_BIN_EXE_caduceus"))
}

/// Runs `caduceus admin ARGS` on a data dir without a server.
fn run_admin(data_dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    caduceus()
        .env("CADUCEUS__STORAGE__DATA_DIR", data_dir)
        .arg("admin")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn invalid_setting_stops_startup_naming_key() {
    let data_dir = tempfile::tempdir().unwrap();
    let output = caduceus()
        .env("CADUCEUS__STORAGE__DATA_DIR", data_dir.path())
        .env("CADUCEUS__SERVER__LISTEN", "not-an-address")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("server.listen"), "stderr: {stderr}");
}

#[test]
fn unknown_key_in_file_stops_startup() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("caduceus.toml");
    std::fs::write(&file, "[registration]\nopne = true\n").unwrap();
    let output = caduceus().arg("--config").arg(&file).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("opne"), "stderr: {stderr}");
}

#[test]
fn admin_registration_tokens_offline() {
    let data_dir = tempfile::tempdir().unwrap();
    let admin = |args: &[&str]| run_admin(data_dir.path(), args);

    let created = admin(&["registration-token", "create", "--uses-allowed", "2"]);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let token = String::from_utf8(created.stdout).unwrap().trim().to_owned();
    assert_eq!(token.len(), 16, "token: {token:?}");

    let listed = admin(&["registration-token", "list"]);
    let listing = String::from_utf8(listed.stdout).unwrap();
    assert!(listing.contains(&token) && listing.contains("valid"), "{listing}");
    assert!(listing.contains("used 0 of 2"), "{listing}");

    assert!(admin(&["registration-token", "revoke", &token]).status.success());
    let listing = String::from_utf8(admin(&["registration-token", "list"]).stdout).unwrap();
    assert!(listing.contains("revoked"), "{listing}");

    let unknown = admin(&["registration-token", "revoke", "no-such-token"]);
    assert!(!unknown.status.success());
}

#[test]
fn admin_create_user_rejects_weak_password_and_duplicates() {
    let data_dir = tempfile::tempdir().unwrap();
    let create = |name: &str, password: &str| {
        run_admin(data_dir.path(), &["create-user", name, "--password", password])
    };

    let weak = create("alice", "short");
    assert!(!weak.status.success());
    assert!(String::from_utf8_lossy(&weak.stderr).contains("at least 8"));

    let created = create("alice", "correct horse battery");
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    assert_eq!(String::from_utf8(created.stdout).unwrap().trim(), "created @alice:localhost");

    let duplicate = create("alice", "correct horse battery");
    assert!(!duplicate.status.success());
    assert!(String::from_utf8_lossy(&duplicate.stderr).contains("already taken"));
}

#[test]
fn invalid_log_filter_stops_startup() {
    let data_dir = tempfile::tempdir().unwrap();
    let output = caduceus()
        .env("CADUCEUS__STORAGE__DATA_DIR", data_dir.path())
        .env("CADUCEUS__LOGGING__LEVEL", "===")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("logging.level"), "stderr: {stderr}");
}

#[test]
fn admin_rejects_bad_token_uses_and_usernames() {
    let data_dir = tempfile::tempdir().unwrap();
    let admin = |args: &[&str]| run_admin(data_dir.path(), args);
    let zero = admin(&["registration-token", "create", "--uses-allowed", "0"]);
    assert!(!zero.status.success());
    assert!(String::from_utf8_lossy(&zero.stderr).contains("at least 1"));

    let upper = admin(&["create-user", "Carol", "--password", "correct horse battery"]);
    assert!(!upper.status.success(), "uppercase usernames are rejected as in /register");
}
