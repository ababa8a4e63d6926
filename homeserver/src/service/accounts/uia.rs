//! User-interactive authentication: the password a user gives again before
//! a change that could lock them out or hand their identity to another
//! device (deleting devices, uploading cross-signing keys, a new password).
//!
//! Every flow Tern offers has one stage, `m.login.password`; the session
//! still records it, bound to the user and the operation, so a client that
//! completed it and then failed for another reason can retry with the
//! session alone, and a session opened for one operation cannot authorize
//! another.

use ruma_common::UserId;
use serde::Deserialize;
use serde_json::{json, Value};

use super::AccountService;
use crate::service::error::{ErrorKind, ServiceError, ServiceResult};
use crate::service::rooms::{now_ms, Requester};
use crate::store::e2ee::UiaSession;

/// The stage Tern asks for.
pub const PASSWORD_STAGE: &str = "m.login.password";

/// How long a session stays open for its client to complete it.
const SESSION_MS: i64 = 10 * 60 * 1000;

/// The `auth` object of a request guarded by user-interactive auth.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct AuthData {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub session: Option<String>,
    pub identifier: Option<UserIdentifier>,
    /// The deprecated form of `identifier`.
    pub user: Option<String>,
    pub password: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
pub struct UserIdentifier {
    #[serde(rename = "type")]
    pub kind: String,
    pub user: Option<String>,
}

impl AuthData {
    /// The user the client names, if it names one.
    pub fn named_user(&self) -> Option<&str> {
        match &self.identifier {
            Some(id) if id.kind == "m.id.user" => id.user.as_deref(),
            Some(_) => None,
            None => self.user.as_deref(),
        }
    }
}

/// The 401 that tells the client what to complete (with `errcode` and
/// `error` when its last attempt failed).
fn uia_required(session: &UiaSession, failure: Option<(&str, &str)>) -> ServiceError {
    let mut body = json!({
        "flows": [{ "stages": [PASSWORD_STAGE] }],
        "params": {},
        "session": session.session_id,
        "completed": session.completed,
    });
    if let Some((errcode, error)) = failure {
        body["errcode"] = Value::from(errcode);
        body["error"] = Value::from(error);
    }
    ServiceError::new(ErrorKind::UiaRequired(body), "Authentication required")
}

impl AccountService {
    /// Passes when `auth` completes the flow for `operation` by `who`;
    /// otherwise the 401 that says what is left.
    pub async fn interactive_auth(
        &self,
        who: &Requester,
        operation: &str,
        auth: Option<&AuthData>,
    ) -> ServiceResult<()> {
        let now = now_ms();
        let mut session = self.uia_session_for(who, operation, auth, now).await?;
        let Some(auth) = auth else {
            return self.ask_again(session, None, now).await;
        };
        match auth.kind.as_deref() {
            None if session.completed.iter().any(|s| s == PASSWORD_STAGE) => Ok(()),
            None => self.ask_again(session, None, now).await,
            Some(PASSWORD_STAGE) => {
                if !self.password_is_theirs(&who.user_id, auth).await? {
                    let failure = ("M_FORBIDDEN", "Invalid password");
                    return self.ask_again(session, Some(failure), now).await;
                }
                // One stage makes the flow: done. The session keeps it until
                // it expires, for a retry of this operation with the session
                // alone (should the operation fail after this point).
                if !session.completed.iter().any(|s| s == PASSWORD_STAGE) {
                    session.completed.push(PASSWORD_STAGE.to_owned());
                }
                if auth.session.is_some() {
                    self.e2ee.save_uia_session(&session, now).await?;
                }
                Ok(())
            }
            Some(_) => {
                let failure = ("M_UNRECOGNIZED", "Unsupported authentication stage");
                self.ask_again(session, Some(failure), now).await
            }
        }
    }

    /// The session the client names (it must be for this user and
    /// operation, and open), or a new one.
    async fn uia_session_for(
        &self,
        who: &Requester,
        operation: &str,
        auth: Option<&AuthData>,
        now: i64,
    ) -> ServiceResult<UiaSession> {
        if let Some(id) = auth.and_then(|a| a.session.as_deref()) {
            let found = self.e2ee.uia_session(id).await?.filter(|s| {
                s.user_id == who.user_id && s.operation == operation && s.expires_ts > now
            });
            return found.ok_or_else(|| {
                ServiceError::new(ErrorKind::Forbidden, "Unknown or expired UIA session")
            });
        }
        Ok(UiaSession {
            session_id: super::random_token(18),
            user_id: who.user_id.clone(),
            operation: operation.to_owned(),
            completed: Vec::new(),
            expires_ts: now + SESSION_MS,
        })
    }

    async fn ask_again<T>(
        &self,
        session: UiaSession,
        failure: Option<(&str, &str)>,
        now: i64,
    ) -> ServiceResult<T> {
        self.e2ee.save_uia_session(&session, now).await?;
        Err(uia_required(&session, failure))
    }

    /// Whether the password is `user_id`'s (and any user the client names is them).
    async fn password_is_theirs(&self, user_id: &UserId, auth: &AuthData) -> ServiceResult<bool> {
        let named = auth.named_user().unwrap_or(user_id.as_str());
        let password = auth.password.as_deref().unwrap_or_default();
        match self.check_password(named, password).await {
            Ok(verified) => Ok(verified == user_id),
            Err(err) if err.kind == ErrorKind::Forbidden => Ok(false),
            Err(err) => Err(err),
        }
    }
}
