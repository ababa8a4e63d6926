//! The `[turn]` and `[support]` sections: what clients are told about calls
//! and about whom to contact.

use ruma_common::OwnedUserId;
use serde::{Deserialize, Serialize};

/// `[turn]`: a TURN server sharing a secret with this one (coturn's
/// `use-auth-secret`), so each user gets short-lived credentials.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TurnConfig {
    /// e.g. `turn:turn.example.org:3478?transport=udp`.
    pub uris: Vec<String>,
    pub shared_secret: String,
    /// How long the credentials handed out are valid.
    #[serde(default = "default_turn_lifetime")]
    pub user_lifetime_s: u64,
}

fn default_turn_lifetime() -> u64 {
    86_400
}

impl TurnConfig {
    pub fn check(&self) -> anyhow::Result<()> {
        if self.uris.is_empty() || self.uris.iter().any(|u| !u.starts_with("turn")) {
            anyhow::bail!("[turn] uris must list turn: or turns: URIs");
        }
        if self.shared_secret.is_empty() {
            anyhow::bail!("[turn] shared_secret must not be empty");
        }
        if self.user_lifetime_s == 0 {
            anyhow::bail!("[turn] user_lifetime_s must be above zero");
        }
        Ok(())
    }
}

/// `[support]`: what `/.well-known/matrix/support` answers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SupportConfig {
    #[serde(default)]
    pub contacts: Vec<SupportContact>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub support_page: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SupportContact {
    /// `m.role.admin`, `m.role.security`, or a namespaced role.
    pub role: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matrix_id: Option<OwnedUserId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email_address: Option<String>,
}

impl SupportConfig {
    /// The spec wants at least a contact or a page, and a way to reach each
    /// contact.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.contacts.is_empty() && self.support_page.is_none() {
            anyhow::bail!("[support] needs contacts or support_page");
        }
        for contact in &self.contacts {
            if contact.matrix_id.is_none() && contact.email_address.is_none() {
                anyhow::bail!("[support] each contact needs matrix_id or email_address");
            }
            if contact.role.is_empty() {
                anyhow::bail!("[support] each contact needs a role");
            }
        }
        Ok(())
    }
}
