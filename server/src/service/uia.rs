//! User-interactive authentication (UIA) sessions.
//!
//! Sessions live in memory: a restart makes clients start the authentication again, which the
//! spec allows (an unknown session gets a fresh challenge). Completed stages are kept
//! per session, and a session is bound to the action and user it started for, so it cannot be
//! replayed for another request.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Map;

use super::accounts::random_string;
use crate::error::{Error, ErrorCode, Result, UiaChallenge};

/// How long a session may stay unfinished.
const SESSION_LIFETIME: Duration = Duration::from_secs(30 * 60);

/// How many unfinished sessions the server keeps at most, so that a client cannot fill memory.
const MAX_SESSIONS: usize = 10_000;

pub const STAGE_PASSWORD: &str = "m.login.password";
pub const STAGE_DUMMY: &str = "m.login.dummy";
pub const STAGE_REGISTRATION_TOKEN: &str = "m.login.registration_token";
pub const STAGE_EMAIL_IDENTITY: &str = "m.login.email.identity";

/// What a session authorises: an action, and for signed-in users, whose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub action: &'static str,
    pub user_id: Option<String>,
}

#[derive(Debug)]
struct Session {
    scope: Scope,
    completed: Vec<String>,
    /// The registration token accepted in this session, consumed when the account is created.
    registration_token: Option<String>,
    started: Instant,
}

/// The result of submitting one stage.
pub enum StageResult {
    Passed,
    Failed(ErrorCode, String),
}

pub struct Uia {
    sessions: Mutex<HashMap<String, Session>>,
}

/// A session that has completed one of the flows.
pub struct Completed {
    pub registration_token: Option<String>,
}

impl Uia {
    pub fn new() -> Self {
        Self { sessions: Mutex::new(HashMap::new()) }
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts a session and returns the challenge that opens it.
    pub fn challenge(&self, scope: Scope, flows: Vec<Vec<String>>) -> Result<Error> {
        let session_id = random_string(24);
        let mut sessions = self.sessions();
        sessions.retain(|_, session| session.started.elapsed() < SESSION_LIFETIME);
        if sessions.len() >= MAX_SESSIONS {
            return Err(Error::new(
                ErrorCode::LimitExceeded { retry_after: Some(Duration::from_secs(60)) },
                "Too many authentication sessions are open; try again in a minute",
            ));
        }
        sessions.insert(
            session_id.clone(),
            Session {
                scope,
                completed: Vec::new(),
                registration_token: None,
                started: Instant::now(),
            },
        );
        Ok(challenge_error(flows, Vec::new(), session_id, None))
    }

    /// Records the outcome of a stage for `session_id` and decides what comes next.
    ///
    /// Returns the finished session once a flow is complete (the session is then closed), and
    /// otherwise `Err` with the next challenge. An unknown or expired session, or one opened for
    /// another action or user, gets a fresh challenge.
    pub fn submit(
        &self,
        session_id: Option<&str>,
        scope: Scope,
        flows: Vec<Vec<String>>,
        stage: &str,
        result: StageResult,
        registration_token: Option<String>,
    ) -> Result<Completed> {
        let mut sessions = self.sessions();
        let session_id = match session_id {
            Some(id)
                if sessions.get(id).is_some_and(|session| {
                    session.scope == scope && session.started.elapsed() < SESSION_LIFETIME
                }) =>
            {
                id.to_owned()
            }
            // Stages that carry their own proof (a password) may open a session directly, which
            // is what clients that skip the first challenge rely on.
            None if stage == STAGE_PASSWORD => {
                let id = random_string(24);
                sessions.insert(
                    id.clone(),
                    Session {
                        scope: scope.clone(),
                        completed: Vec::new(),
                        registration_token: None,
                        started: Instant::now(),
                    },
                );
                id
            }
            _ => {
                drop(sessions);
                return Err(self.challenge(scope, flows)?);
            }
        };

        let session = sessions.get_mut(&session_id).expect("session checked above");
        let allowed = flows.iter().any(|flow| {
            flow.iter().any(|s| s == stage)
                && flow.iter().take_while(|s| *s != stage).all(|s| session.completed.contains(s))
        });
        if !allowed {
            let completed = session.completed.clone();
            return Err(challenge_error(
                flows,
                completed,
                session_id,
                Some((ErrorCode::Forbidden, format!("The stage {stage} is not expected here"))),
            ));
        }

        match result {
            StageResult::Failed(code, message) => {
                let completed = session.completed.clone();
                Err(challenge_error(flows, completed, session_id, Some((code, message))))
            }
            StageResult::Passed => {
                if !session.completed.iter().any(|s| s == stage) {
                    session.completed.push(stage.to_owned());
                }
                if registration_token.is_some() {
                    session.registration_token = registration_token;
                }
                let done =
                    flows.iter().any(|flow| flow.iter().all(|s| session.completed.contains(s)));
                if done {
                    let session = sessions.remove(&session_id).expect("session exists");
                    Ok(Completed { registration_token: session.registration_token })
                } else {
                    let completed = session.completed.clone();
                    Err(challenge_error(flows, completed, session_id, None))
                }
            }
        }
    }
}

impl Default for Uia {
    fn default() -> Self {
        Self::new()
    }
}

fn challenge_error(
    flows: Vec<Vec<String>>,
    completed: Vec<String>,
    session: String,
    stage_error: Option<(ErrorCode, String)>,
) -> Error {
    Error::Uia(Box::new(UiaChallenge {
        flows,
        completed,
        session,
        params: Map::new(),
        stage_error,
    }))
}

/// Requires a signed-in user to confirm their password before a sensitive action (changing the
/// password, deleting devices, deactivating), through the `m.login.password` stage.
pub async fn confirm_password(
    services: &super::Services,
    user_id: &ruma::UserId,
    auth: Option<&ruma::api::client::uiaa::AuthData>,
    action: &'static str,
) -> Result<()> {
    use ruma::api::client::uiaa::{AuthData, UserIdentifier};

    let scope = Scope { action, user_id: Some(user_id.to_string()) };
    let flows = vec![vec![STAGE_PASSWORD.to_owned()]];
    let Some(auth) = auth else {
        return Err(services.uia.challenge(scope, flows)?);
    };
    let AuthData::Password(stage) = auth else {
        let stage = auth.auth_type().map(|kind| kind.to_string()).unwrap_or_default();
        let failed =
            StageResult::Failed(ErrorCode::Forbidden, format!("The stage {stage} is not offered"));
        services.uia.submit(auth.session(), scope, flows, &stage, failed, None)?;
        return Err(Error::forbidden("Unsupported authentication stage"));
    };

    let claimed = match &stage.identifier {
        UserIdentifier::Matrix(identifier) => services.local_user_id(&identifier.user).ok(),
        _ => None,
    };
    services.security.check_locked(user_id)?;
    let result = if claimed.as_deref() != Some(user_id) {
        StageResult::Failed(
            ErrorCode::Forbidden,
            "The identifier does not match the signed-in user".to_owned(),
        )
    } else if services.accounts.verify_password(user_id, &stage.password).await? {
        StageResult::Passed
    } else {
        tracing::info!(user_id = %user_id, action, "password confirmation failed");
        // Wrong passwords here count towards the lockout too, so a stolen session cannot be
        // used to guess the password.
        if let Some(locked_for) = services.security.record_failure(user_id, None)? {
            return Err(services.security.locked_error(locked_for));
        }
        StageResult::Failed(ErrorCode::Forbidden, "Invalid password".to_owned())
    };
    services.uia.submit(stage.session.as_deref(), scope, flows, STAGE_PASSWORD, result, None)?;
    Ok(())
}
