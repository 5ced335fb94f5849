//! Email addresses of accounts (third-party identifiers, "3PIDs"), and the validation sessions
//! that prove a person reads the mail of an address.
//!
//! The homeserver validates addresses itself, without an identity server: `requestToken` mails
//! a six-digit code and a link to `/_caduceus/client/v1/email/submit_token`; submitting the code
//! marks the session validated, and registration, password reset or `/account/3pid/add` then
//! use the session once. Codes are stored as SHA-256 hashes only.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use caduceus_config::Config;
use rand::Rng;
use ruma::api::client::uiaa::ThirdpartyIdCredentials;
use ruma::UserId;
use sha2::{Digest, Sha256};

use super::accounts::random_string;
use super::now_ms;
use super::uia::StageResult;
use crate::error::{Error, ErrorCode, Result};
use crate::storage::codec::prefix;
use crate::storage::tables::{
    EmailPurpose, EmailValidationRecord, ThreepidRecord, EMAIL_VALIDATIONS,
    EMAIL_VALIDATION_SECRETS, THREEPIDS, USER_THREEPIDS,
};
use crate::storage::Db;

/// The medium of email addresses in third-party identifiers.
pub const MEDIUM_EMAIL: &str = "email";

/// The path of the endpoint that accepts emailed codes and links.
pub const SUBMIT_TOKEN_PATH: &str = "/_caduceus/client/v1/email/submit_token";

/// Wrong codes a session accepts before it is closed and a new code must be requested.
const MAX_FAILED_ATTEMPTS: u32 = 5;

/// The maximum length of an email address that SMTP allows (RFC 5321: 256 for the path, minus
/// the angle brackets).
const MAX_ADDRESS_LENGTH: usize = 254;

/// The longest `next_link` accepted.
const MAX_NEXT_LINK_LENGTH: usize = 2048;

/// The explanation given to people who may not register, with the ways in.
pub const ACCESS_HELP: &str = "To get an account, ask your hospital's IT team for a registration \
token, register with your work email address, or ask a verified colleague for an invitation.";

/// A `requestToken` call, after ruma has parsed it.
pub struct TokenRequest<'a> {
    pub purpose: EmailPurpose,
    pub email: &'a str,
    pub client_secret: &'a str,
    pub send_attempt: u64,
    pub next_link: Option<&'a str>,
}

/// A validated email session, ready to be used by the action it was started for.
pub struct ValidatedEmail {
    pub sid: String,
    pub address: String,
    pub validated_ts: u64,
}

pub struct Threepids {
    db: Arc<Db>,
    token_lifetime_ms: u64,
    mails_per_address_per_hour: usize,
    trusted_email_domains: Vec<String>,
    public_baseurl: String,
    server_name: String,
    /// Send times of validation mails per address within the last hour. In memory, so a
    /// restart clears them, because the limit protects mailboxes from floods, not a secret.
    mails_sent: Mutex<HashMap<String, VecDeque<Instant>>>,
    /// When expired sessions were last deleted.
    last_sweep: Mutex<Option<Instant>>,
    /// Serialises session updates and address claims, so one `send_attempt` sends one mail and
    /// an address joins one account only.
    write_lock: tokio::sync::Mutex<()>,
}

impl Threepids {
    pub fn new(db: Arc<Db>, config: &Config) -> Self {
        Self {
            db,
            token_lifetime_ms: config.email.token_lifetime_secs.saturating_mul(1000),
            mails_per_address_per_hour: config.email.mails_per_address_per_hour as usize,
            trusted_email_domains: config
                .registration
                .trusted_email_domains
                .iter()
                .map(|domain| domain.trim().trim_start_matches('.').to_lowercase())
                .collect(),
            public_baseurl: config.public_baseurl(),
            server_name: config.server.server_name.clone(),
            mails_sent: Mutex::new(HashMap::new()),
            last_sweep: Mutex::new(None),
            write_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Returns whether registration with a validated email address is offered at all.
    pub fn email_registration_enabled(&self) -> bool {
        !self.trusted_email_domains.is_empty()
    }

    /// Returns whether `address` (lower case) is at a trusted domain or one of its subdomains.
    pub fn is_trusted(&self, address: &str) -> bool {
        let Some((_, domain)) = address.rsplit_once('@') else {
            return false;
        };
        self.trusted_email_domains.iter().any(|trusted| {
            domain == trusted
                || domain.strip_suffix(trusted.as_str()).is_some_and(|rest| rest.ends_with('.'))
        })
    }

    /// Starts or repeats a validation session and mails its code, then returns the session
    /// ID. The mail goes out through `send`, which receives the recipient, subject and body.
    ///
    /// A repeat with a `send_attempt` not above the last one returns the same session and
    /// sends nothing. A higher `send_attempt` sends a new code for the same session.
    pub async fn request_token<F, Fut>(&self, request: TokenRequest<'_>, send: F) -> Result<String>
    where
        F: FnOnce(String, String, String) -> Fut,
        Fut: std::future::Future<Output = Result<()>>,
    {
        if let Some(next_link) = request.next_link {
            check_next_link(next_link)?;
        }
        let address = normalize_email(request.email)?;
        self.check_purpose(request.purpose, &address)?;

        // Held across the mail, so two requests with the same send_attempt send one mail.
        // NOTE: this also makes concurrent requests for different addresses wait for each
        // other's SMTP conversation; fine at a hospital's scale, not for mass sign-ups.
        let _guard = self.write_lock.lock().await;
        self.sweep_expired()?;
        let secret_key = (
            hex_sha256(request.client_secret.as_bytes()),
            purpose_name(request.purpose).to_owned(),
            address.clone(),
        );
        let now = now_ms();
        let existing = match self.db.get(&EMAIL_VALIDATION_SECRETS, &secret_key)? {
            Some(sid) => self.db.get(&EMAIL_VALIDATIONS, &sid)?.map(|record| (sid, record)),
            None => None,
        };
        if let Some((sid, record)) = &existing {
            if request.send_attempt <= record.send_attempt && !self.is_expired(record, now) {
                tracing::debug!(sid, "repeated requestToken; no new mail");
                return Ok(sid.clone());
            }
        }

        self.take_mail_allowance(&address)?;
        let sid = existing.map_or_else(|| random_string(24), |(sid, _)| sid);
        let code = format!("{:06}", rand::thread_rng().gen_range(0..1_000_000));
        let record = EmailValidationRecord {
            purpose: request.purpose,
            address: address.clone(),
            client_secret_hash: secret_key.0.clone(),
            code_hash: code_hash(&sid, &code),
            send_attempt: request.send_attempt,
            sent_ts: now,
            failed_attempts: 0,
            validated_ts: None,
            next_link: request.next_link.map(str::to_owned),
        };

        let (subject, body) =
            self.validation_mail(request.purpose, &sid, request.client_secret, &code);
        send(address.clone(), subject, body).await?;

        let mut batch = self.db.batch();
        batch.put(&EMAIL_VALIDATIONS, &sid, &record);
        batch.put(&EMAIL_VALIDATION_SECRETS, &secret_key, &sid);
        self.db.commit(batch)?;
        tracing::info!(sid, purpose = purpose_name(request.purpose), "validation mail sent");
        Ok(sid)
    }

    /// Returns the URL clients may post the code to, given in `requestToken` responses.
    pub fn submit_url(&self) -> String {
        format!("{}{SUBMIT_TOKEN_PATH}", self.public_baseurl)
    }

    /// Checks an emailed code and marks the session validated. Returns the session's
    /// `next_link`, if it has one. Submitting the right code again succeeds again.
    pub async fn submit_token(
        &self,
        sid: &str,
        client_secret: &str,
        code: &str,
    ) -> Result<Option<String>> {
        let _guard = self.write_lock.lock().await;
        let mut record = self.session(sid, client_secret)?;
        let now = now_ms();
        if record.validated_ts.is_some() {
            if record.code_hash == code_hash(sid, code.trim()) {
                return Ok(record.next_link);
            }
            return Err(auth_failed("The code is wrong"));
        }
        if record.failed_attempts >= MAX_FAILED_ATTEMPTS {
            return Err(auth_failed(
                "Too many wrong codes were entered; request a new code with a higher send_attempt",
            ));
        }
        if now >= record.sent_ts.saturating_add(self.token_lifetime_ms) {
            return Err(auth_failed("The code has expired; request a new one"));
        }
        if record.code_hash != code_hash(sid, code.trim()) {
            record.failed_attempts += 1;
            self.db.put(&EMAIL_VALIDATIONS, &sid.to_owned(), &record)?;
            tracing::warn!(sid, failed_attempts = record.failed_attempts, "wrong email code");
            return Err(auth_failed("The code is wrong"));
        }
        record.validated_ts = Some(now);
        self.db.put(&EMAIL_VALIDATIONS, &sid.to_owned(), &record)?;
        tracing::info!(sid, "email address validated");
        Ok(record.next_link)
    }

    /// Returns the validated address of a session started for `purpose`, or the reason it
    /// cannot be used (`M_THREEPID_AUTH_FAILED`).
    pub fn validated(
        &self,
        sid: &str,
        client_secret: &str,
        purpose: EmailPurpose,
    ) -> Result<ValidatedEmail> {
        let record = self.session(sid, client_secret)?;
        if record.purpose != purpose {
            return Err(auth_failed(format!(
                "This validation session was started for {}, not for {}",
                purpose_description(record.purpose),
                purpose_description(purpose)
            )));
        }
        let Some(validated_ts) = record.validated_ts else {
            return Err(auth_failed(
                "The email address has not been validated yet; enter the code from the mail first",
            ));
        };
        if self.is_expired(&record, now_ms()) {
            return Err(auth_failed("The email validation has expired; request a new code"));
        }
        Ok(ValidatedEmail { sid: sid.to_owned(), address: record.address, validated_ts })
    }

    /// Checks the credentials of an `m.login.email.identity` stage for `purpose`. Returns the
    /// validated address, or the failed stage for a client's mistake; only our own failures
    /// are `Err`.
    pub fn check_stage(
        &self,
        creds: &ThirdpartyIdCredentials,
        purpose: EmailPurpose,
    ) -> Result<Result<ValidatedEmail, StageResult>> {
        match self.validated(creds.sid.as_str(), creds.client_secret.as_str(), purpose) {
            Ok(email) => Ok(Ok(email)),
            Err(Error::Matrix { code, message, .. }) => Ok(Err(StageResult::Failed(code, message))),
            Err(error) => Err(error),
        }
    }

    /// Ends a session after its one use.
    pub fn close_session(&self, sid: &str) -> Result<()> {
        let Some(record) = self.db.get(&EMAIL_VALIDATIONS, &sid.to_owned())? else {
            return Ok(());
        };
        let mut batch = self.db.batch();
        batch.delete(&EMAIL_VALIDATIONS, &sid.to_owned());
        batch.delete(
            &EMAIL_VALIDATION_SECRETS,
            &(record.client_secret_hash, purpose_name(record.purpose).to_owned(), record.address),
        );
        self.db.commit(batch)?;
        Ok(())
    }

    /// Returns the account an email address belongs to.
    pub fn find_user(&self, email: &str) -> Result<Option<String>> {
        let address = email.trim().to_lowercase();
        let key = (MEDIUM_EMAIL.to_owned(), address);
        Ok(self.db.get(&THREEPIDS, &key)?.map(|record| record.user_id))
    }

    /// Returns the identifiers of an account as (medium, address, record).
    pub fn list(&self, user_id: &UserId) -> Result<Vec<(String, String, ThreepidRecord)>> {
        let rows = self
            .db
            .scan_prefix(&USER_THREEPIDS, &prefix(&[user_id.as_str()]))?
            .into_iter()
            .map(|((_, medium, address), record)| (medium, address, record))
            .collect();
        Ok(rows)
    }

    /// Adds an email address to an account. Fails with `M_THREEPID_IN_USE` when another
    /// account has it; adding an address the account already has changes nothing.
    pub async fn add_email(
        &self,
        user_id: &UserId,
        address: &str,
        validated_at: u64,
    ) -> Result<()> {
        let _guard = self.write_lock.lock().await;
        let key = (MEDIUM_EMAIL.to_owned(), address.to_lowercase());
        if let Some(existing) = self.db.get(&THREEPIDS, &key)? {
            if existing.user_id == user_id.as_str() {
                return Ok(());
            }
            return Err(in_use());
        }
        let record =
            ThreepidRecord { user_id: user_id.to_string(), validated_at, added_at: now_ms() };
        let mut batch = self.db.batch();
        batch.put(&THREEPIDS, &key, &record);
        batch.put(&USER_THREEPIDS, &(user_id.to_string(), key.0.clone(), key.1.clone()), &record);
        self.db.commit(batch)?;
        Ok(())
    }

    /// Removes an identifier from an account. Returns false if the account does not have it.
    pub async fn remove(&self, user_id: &UserId, medium: &str, address: &str) -> Result<bool> {
        let _guard = self.write_lock.lock().await;
        let address =
            if medium == MEDIUM_EMAIL { address.trim().to_lowercase() } else { address.to_owned() };
        let key = (medium.to_owned(), address.clone());
        match self.db.get(&THREEPIDS, &key)? {
            Some(record) if record.user_id == user_id.as_str() => {}
            _ => return Ok(false),
        }
        let mut batch = self.db.batch();
        batch.delete(&THREEPIDS, &key);
        batch.delete(&USER_THREEPIDS, &(user_id.to_string(), medium.to_owned(), address));
        self.db.commit(batch)?;
        Ok(true)
    }

    /// Removes every identifier of an account, so its addresses can be used again. Returns
    /// the removed addresses.
    pub async fn remove_all(&self, user_id: &UserId) -> Result<Vec<String>> {
        let _guard = self.write_lock.lock().await;
        let rows = self.db.scan_prefix(&USER_THREEPIDS, &prefix(&[user_id.as_str()]))?;
        let mut batch = self.db.batch();
        let mut removed = Vec::new();
        for ((user, medium, address), _) in rows {
            batch.delete(&THREEPIDS, &(medium.clone(), address.clone()));
            batch.delete(&USER_THREEPIDS, &(user, medium, address.clone()));
            removed.push(address);
        }
        self.db.commit(batch)?;
        Ok(removed)
    }

    fn check_purpose(&self, purpose: EmailPurpose, address: &str) -> Result<()> {
        let owner = self.find_user(address)?;
        match purpose {
            EmailPurpose::Register => {
                if owner.is_some() {
                    return Err(in_use());
                }
                if !self.is_trusted(address) {
                    return Err(Error::new(
                        ErrorCode::ThreepidDenied,
                        format!(
                            "Registration by email is open only to addresses at the hospitals \
                             this server trusts. {ACCESS_HELP}"
                        ),
                    ));
                }
            }
            EmailPurpose::AddThreepid => {
                if owner.is_some() {
                    return Err(in_use());
                }
            }
            EmailPurpose::ResetPassword => {
                if owner.is_none() {
                    return Err(Error::new(
                        ErrorCode::ThreepidNotFound,
                        "No account on this server has that email address",
                    ));
                }
            }
        }
        Ok(())
    }

    /// Returns the session if `client_secret` matches; an unknown session and a wrong secret
    /// get the same error, so a session ID alone reveals nothing.
    fn session(&self, sid: &str, client_secret: &str) -> Result<EmailValidationRecord> {
        let record = self.db.get(&EMAIL_VALIDATIONS, &sid.to_owned())?;
        match record {
            Some(record) if record.client_secret_hash == hex_sha256(client_secret.as_bytes()) => {
                Ok(record)
            }
            _ => Err(auth_failed("No email validation session matches this sid and client_secret")),
        }
    }

    /// Returns whether a session expired: a token lifetime after its code was sent, or after it
    /// was validated.
    fn is_expired(&self, record: &EmailValidationRecord, now: u64) -> bool {
        let start = record.validated_ts.unwrap_or(record.sent_ts);
        now >= start.saturating_add(self.token_lifetime_ms)
    }

    /// Deletes sessions that expired, at most every ten minutes, so abandoned validations do
    /// not pile up. The caller holds the write lock.
    fn sweep_expired(&self) -> Result<()> {
        {
            let mut last = self.last_sweep.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if last.is_some_and(|time| time.elapsed() < Duration::from_secs(10 * 60)) {
                return Ok(());
            }
            *last = Some(Instant::now());
        }
        let now = now_ms();
        let mut batch = self.db.batch();
        let mut expired = 0;
        for (sid, record) in self.db.scan_all(&EMAIL_VALIDATIONS)? {
            if self.is_expired(&record, now) {
                batch.delete(&EMAIL_VALIDATIONS, &sid);
                let purpose = purpose_name(record.purpose).to_owned();
                batch.delete(
                    &EMAIL_VALIDATION_SECRETS,
                    &(record.client_secret_hash, purpose, record.address),
                );
                expired += 1;
            }
        }
        if expired > 0 {
            self.db.commit(batch)?;
            tracing::debug!(expired, "deleted expired email validation sessions");
        }
        Ok(())
    }

    fn take_mail_allowance(&self, address: &str) -> Result<()> {
        let window = Duration::from_secs(60 * 60);
        let mut sent = self.mails_sent.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        sent.retain(|_, times| {
            times.retain(|time| now.duration_since(*time) < window);
            !times.is_empty()
        });
        let times = sent.entry(address.to_owned()).or_default();
        if times.len() >= self.mails_per_address_per_hour {
            let retry_after = times
                .front()
                .map_or(window, |oldest| window.saturating_sub(now.duration_since(*oldest)));
            tracing::warn!("validation mails to one address exceeded the hourly limit");
            return Err(Error::new(
                ErrorCode::LimitExceeded { retry_after: Some(retry_after) },
                "Too many codes were sent to this email address; try again later",
            ));
        }
        times.push_back(now);
        Ok(())
    }

    fn validation_mail(
        &self,
        purpose: EmailPurpose,
        sid: &str,
        client_secret: &str,
        code: &str,
    ) -> (String, String) {
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("sid", sid)
            .append_pair("client_secret", client_secret)
            .append_pair("token", code)
            .finish();
        let link = format!("{}?{query}", self.submit_url());
        let minutes = self.token_lifetime_ms.div_ceil(60_000);
        let server = &self.server_name;
        let subject = format!("Your code for {server}: {code}");
        let body = format!(
            "Someone, hopefully you, asked to use this email address {what} on {server}.\n\
             \n\
             Your code is: {code}\n\
             \n\
             Enter the code in your app, or open this link to confirm the address:\n\
             {link}\n\
             \n\
             The code expires in {minutes} minutes. If you did not ask for it, ignore this mail;\n\
             nothing changes without the code.\n",
            what = purpose_description(purpose),
        );
        (subject, body)
    }
}

/// Checks the syntax of an email address and returns it in lower case.
///
/// The check is deliberately simple: one `@`, a local part of printable characters without
/// spaces, and a domain of letters, digits, hyphens and dots with at least one dot. Whether
/// the address exists is what the emailed code proves.
pub fn normalize_email(email: &str) -> Result<String> {
    let address = email.trim().to_lowercase();
    let invalid =
        || Error::new(ErrorCode::InvalidEmail, format!("{email:?} is not a valid email address"));
    if address.len() > MAX_ADDRESS_LENGTH {
        return Err(invalid());
    }
    let Some((local, domain)) = address.split_once('@') else {
        return Err(invalid());
    };
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && local.chars().all(|c| c.is_ascii_graphic() && !"@<>()[]\\,;:\"".contains(c));
    let domain_ok = domain.contains('.')
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if !local_ok || !domain_ok {
        return Err(invalid());
    }
    Ok(address)
}

/// Accepts only absolute http and https URLs, so a mail link cannot lead to `javascript:` or
/// other schemes.
fn check_next_link(next_link: &str) -> Result<()> {
    let lower = next_link.to_ascii_lowercase();
    let rest = lower.strip_prefix("https://").or_else(|| lower.strip_prefix("http://"));
    let valid = rest.is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'))
        && next_link.len() <= MAX_NEXT_LINK_LENGTH
        && !next_link.chars().any(|c| c.is_whitespace() || c.is_control());
    if !valid {
        return Err(Error::invalid_param(
            "next_link must be an absolute http:// or https:// URL without spaces",
        ));
    }
    Ok(())
}

fn purpose_name(purpose: EmailPurpose) -> &'static str {
    match purpose {
        EmailPurpose::Register => "register",
        EmailPurpose::AddThreepid => "add_threepid",
        EmailPurpose::ResetPassword => "reset_password",
    }
}

fn purpose_description(purpose: EmailPurpose) -> &'static str {
    match purpose {
        EmailPurpose::Register => "to create an account",
        EmailPurpose::AddThreepid => "to be added to an account",
        EmailPurpose::ResetPassword => "to reset a password",
    }
}

fn code_hash(sid: &str, code: &str) -> String {
    hex_sha256(format!("{sid}:{code}").as_bytes())
}

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|byte| format!("{byte:02x}")).collect()
}

fn auth_failed(message: impl Into<String>) -> Error {
    Error::new(ErrorCode::ThreepidAuthFailed, message)
}

fn in_use() -> Error {
    Error::new(ErrorCode::ThreepidInUse, "That email address is already used by an account")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_syntax() {
        assert_eq!(normalize_email(" Alice@Hospital.Example ").unwrap(), "alice@hospital.example");
        for valid in ["a.b+c@x.example", "dr_who@sub.hospital.example"] {
            assert!(normalize_email(valid).is_ok(), "{valid} should be valid");
        }
        for invalid in [
            "",
            "alice",
            "@x.example",
            "alice@",
            "alice@localhost",
            "a b@x.example",
            "a@b@x.example",
            "a@-x.example",
            "a@x..example",
        ] {
            assert!(normalize_email(invalid).is_err(), "{invalid:?} should be invalid");
        }
    }

    #[test]
    fn trusted_domains_include_subdomains() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(dir.path()).unwrap());
        let mut config = Config::default();
        config.registration.trusted_email_domains = vec!["Hospital.Example".to_owned()];
        let threepids = Threepids::new(db, &config);

        assert!(threepids.is_trusted("a@hospital.example"));
        assert!(threepids.is_trusted("a@cardio.hospital.example"));
        assert!(!threepids.is_trusted("a@evilhospital.example"));
        assert!(!threepids.is_trusted("a@hospital.example.org"));
        assert!(!threepids.is_trusted("hospital.example"));
    }

    #[tokio::test]
    async fn address_belongs_to_one_account() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(dir.path()).unwrap());
        let threepids = Threepids::new(db, &Config::default());
        let alice = UserId::parse("@alice:localhost").unwrap();
        let bob = UserId::parse("@bob:localhost").unwrap();

        threepids.add_email(&alice, "alice@hospital.example", 1).await.unwrap();
        threepids.add_email(&alice, "alice@hospital.example", 2).await.unwrap();
        let taken = threepids.add_email(&bob, "Alice@Hospital.Example", 3).await.unwrap_err();
        assert_eq!(taken.code(), ErrorCode::ThreepidInUse);
        assert_eq!(
            threepids.find_user("ALICE@hospital.example").unwrap().as_deref(),
            Some("@alice:localhost")
        );
        assert_eq!(threepids.list(&alice).unwrap().len(), 1);

        assert!(!threepids.remove(&bob, MEDIUM_EMAIL, "alice@hospital.example").await.unwrap());
        assert_eq!(threepids.remove_all(&alice).await.unwrap(), ["alice@hospital.example"]);
        assert!(threepids.find_user("alice@hospital.example").unwrap().is_none());
        threepids.add_email(&bob, "alice@hospital.example", 4).await.unwrap();
    }

    #[test]
    fn next_link_schemes() {
        assert!(check_next_link("https://app.example/done").is_ok());
        assert!(check_next_link("http://127.0.0.1:8080/").is_ok());
        for invalid in [
            "javascript:alert(1)",
            "ftp://x.example",
            "https://",
            "https:///x",
            "//x.example",
            "https://x.example/a b",
        ] {
            assert!(check_next_link(invalid).is_err(), "{invalid:?} should be rejected");
        }
    }
}
