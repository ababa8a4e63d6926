//! Push rules: each user's ruleset, its changes through the Client-Server
//! API, and its evaluation against the events a user receives.
//!
//! A customised ruleset is stored whole as the global account data
//! `m.push_rules` (`{"global": {...}}`), as Synapse does, so it also reaches
//! clients through `/sync` and every change wakes the owner's syncs. A user
//! without one has the server defaults. On load the stored ruleset is merged
//! with the current defaults, keeping the user's `enabled` and `actions` for
//! them, so new server rules reach old accounts.
//!
//! Evaluation runs for every recipient of every message, so parsed rulesets
//! are kept in a bounded cache that every change replaces.

mod defaults;
mod evaluate;
#[cfg(test)]
mod tests;

use parking_lot::Mutex;
use std::num::NonZeroUsize;
use std::sync::Arc;

use lru::LruCache;
use ruma_common::push::{
    Action, AnyPushRuleRef, InsertPushRuleError, NewConditionalPushRule, NewPatternedPushRule,
    NewPushRule, NewSimplePushRule, PushCondition, RemovePushRuleError, RuleKind, Ruleset,
};
use ruma_common::{OwnedRoomId, OwnedUserId, UserId};
use serde_json::{json, Value};

use super::error::{ErrorKind, ServiceError, ServiceResult};
use crate::store::{AccountStore, EventBus, StreamNotice};
pub use evaluate::{contains_word, PreparedEvent, PushOutcome, PushPowerLevels, RoomPushContext};

/// The account data type that holds a user's ruleset.
pub const PUSH_RULES_TYPE: &str = "m.push_rules";

/// Parsed rulesets kept in memory; past this many users the least recently
/// used goes.
const CACHE_CAPACITY: NonZeroUsize = NonZeroUsize::new(10_000).expect("non-zero");

/// Every rule is tried for every message a user receives: a ruleset stops
/// growing here (the server defaults are about 20).
const MAX_RULES: usize = 1_000;

/// The kinds of rule the API accepts, in priority order.
const KINDS: [&str; 5] = ["override", "content", "room", "sender", "underride"];

struct RulesetCache {
    entries: LruCache<OwnedUserId, Arc<Ruleset>>,
    /// Bumped by every write, so a load that raced a write does not cache
    /// what it read before the write.
    generation: u64,
}

impl Default for RulesetCache {
    fn default() -> Self {
        Self {
            entries: LruCache::new(CACHE_CAPACITY),
            generation: 0,
        }
    }
}

/// Where a new or updated rule goes among the user's rules of its kind.
#[derive(Debug, Default, Clone)]
pub struct RulePosition {
    pub before: Option<String>,
    pub after: Option<String>,
}

pub struct PushRuleService {
    store: Arc<dyn AccountStore>,
    bus: Arc<dyn EventBus>,
    cache: Mutex<RulesetCache>,
    /// Serialises read-modify-write of rulesets (changes are rare).
    writes: tokio::sync::Mutex<()>,
}

/// The rule kind named in a path: `M_INVALID_PARAM` for anything else.
pub fn parse_kind(kind: &str) -> ServiceResult<RuleKind> {
    if !KINDS.contains(&kind) {
        return Err(ServiceError::invalid_param(format!(
            "Unknown push rule kind `{kind}`"
        )));
    }
    Ok(RuleKind::from(kind))
}

fn rule_not_found() -> ServiceError {
    ServiceError::not_found("The push rule was not found.")
}

/// A ruleset as clients see it: every kind present, even when empty.
pub fn ruleset_json(ruleset: &Ruleset) -> Value {
    let mut value = serde_json::to_value(ruleset).unwrap_or_else(|_| json!({}));
    if let Some(object) = value.as_object_mut() {
        for kind in KINDS {
            object.entry(kind).or_insert_with(|| json!([]));
        }
    }
    value
}

fn rule_json(rule: AnyPushRuleRef<'_>) -> ServiceResult<Value> {
    let value = match rule {
        AnyPushRuleRef::Override(r) | AnyPushRuleRef::Underride(r) => serde_json::to_value(r),
        AnyPushRuleRef::Content(r) => serde_json::to_value(r),
        AnyPushRuleRef::Room(r) => serde_json::to_value(r),
        AnyPushRuleRef::Sender(r) => serde_json::to_value(r),
        _ => return Err(rule_not_found()),
    };
    value.map_err(ServiceError::internal)
}

/// Checks a client's `actions` array and parses it: strings must be
/// `notify` (or the no-op legacy `dont_notify`/`coalesce`), objects must be
/// tweaks.
pub fn parse_actions(value: &Value) -> ServiceResult<Vec<Action>> {
    let items = value
        .as_array()
        .ok_or_else(|| ServiceError::bad_json("`actions` must be an array"))?;
    for item in items {
        let known = match item {
            Value::String(s) => matches!(s.as_str(), "notify" | "dont_notify" | "coalesce"),
            Value::Object(o) => o.get("set_tweak").is_some_and(Value::is_string),
            _ => false,
        };
        if !known {
            return Err(ServiceError::bad_json(format!(
                "Unrecognised action {item}"
            )));
        }
    }
    serde_json::from_value(value.clone())
        .map_err(|e| ServiceError::bad_json(format!("Invalid actions: {e}")))
}

/// Builds the rule a `PUT /pushrules/global/{kind}/{ruleId}` body describes.
fn new_rule(kind: &RuleKind, rule_id: &str, body: &Value) -> ServiceResult<NewPushRule> {
    if rule_id.is_empty() || rule_id.len() > 255 {
        return Err(ServiceError::invalid_param("Invalid rule ID"));
    }
    let actions = body
        .get("actions")
        .ok_or_else(|| ServiceError::new(ErrorKind::MissingParam, "Push rule has no `actions`"))?;
    let actions = parse_actions(actions)?;
    let conditions = || -> ServiceResult<Vec<PushCondition>> {
        match body.get("conditions") {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(value) => serde_json::from_value(value.clone())
                .map_err(|e| ServiceError::bad_json(format!("Invalid conditions: {e}"))),
        }
    };
    Ok(match kind {
        RuleKind::Override => NewPushRule::Override(NewConditionalPushRule::new(
            rule_id.to_owned(),
            conditions()?,
            actions,
        )),
        RuleKind::Underride => NewPushRule::Underride(NewConditionalPushRule::new(
            rule_id.to_owned(),
            conditions()?,
            actions,
        )),
        RuleKind::Content => {
            let pattern = body.get("pattern").ok_or_else(|| {
                ServiceError::new(ErrorKind::MissingParam, "Content rules need a `pattern`")
            })?;
            let pattern = pattern
                .as_str()
                .ok_or_else(|| ServiceError::bad_json("`pattern` must be a string"))?;
            NewPushRule::Content(NewPatternedPushRule::new(
                rule_id.to_owned(),
                pattern.to_owned(),
                actions,
            ))
        }
        RuleKind::Room => {
            let room_id = OwnedRoomId::try_from(rule_id).map_err(|_| {
                ServiceError::invalid_param("The rule ID of a room rule must be a room ID")
            })?;
            NewPushRule::Room(NewSimplePushRule::new(room_id, actions))
        }
        RuleKind::Sender => {
            let user_id = OwnedUserId::try_from(rule_id).map_err(|_| {
                ServiceError::invalid_param("The rule ID of a sender rule must be a user ID")
            })?;
            NewPushRule::Sender(NewSimplePushRule::new(user_id, actions))
        }
        _ => return Err(ServiceError::invalid_param("Unknown push rule kind")),
    })
}

fn insert_error(err: InsertPushRuleError) -> ServiceError {
    match err {
        InsertPushRuleError::ServerDefaultRuleId => ServiceError::invalid_param(
            "Rule IDs starting with a dot are reserved for server-default rules",
        ),
        InsertPushRuleError::InvalidRuleId => {
            ServiceError::invalid_param("Rule IDs may not contain `/` or `\\`")
        }
        InsertPushRuleError::RelativeToServerDefaultRule => {
            ServiceError::invalid_param("A rule cannot be placed relative to a server-default rule")
        }
        InsertPushRuleError::UnknownRuleId => {
            ServiceError::invalid_param("The `before` or `after` rule was not found")
        }
        InsertPushRuleError::BeforeHigherThanAfter => {
            ServiceError::invalid_param("`before` has a higher priority than `after`")
        }
        other => ServiceError::invalid_param(other.to_string()),
    }
}

impl PushRuleService {
    pub fn new(store: Arc<dyn AccountStore>, bus: Arc<dyn EventBus>) -> Self {
        Self {
            store,
            bus,
            cache: Mutex::new(RulesetCache::default()),
            writes: tokio::sync::Mutex::new(()),
        }
    }

    /// Drops a user's cached ruleset: another node changed it.
    pub fn forget(&self, user_id: &UserId) {
        let mut cache = self.cache.lock();
        cache.generation += 1;
        cache.entries.pop(user_id);
    }

    /// The spec's predefined rules for a user.
    pub fn server_default(user_id: &UserId) -> Ruleset {
        defaults::server_default(user_id)
    }

    /// The user's ruleset: stored if customised, else the server defaults.
    pub async fn get_ruleset(&self, user_id: &UserId) -> ServiceResult<Arc<Ruleset>> {
        let generation = {
            let mut cache = self.cache.lock();
            if let Some(ruleset) = cache.entries.get(user_id) {
                return Ok(ruleset.clone());
            }
            cache.generation
        };
        let stored = self
            .store
            .get_account_data(user_id, None, PUSH_RULES_TYPE)
            .await?;
        let ruleset = Arc::new(Self::merge_stored(user_id, stored));
        let mut cache = self.cache.lock();
        if cache.generation == generation {
            cache.entries.put(user_id.to_owned(), ruleset.clone());
        }
        Ok(ruleset)
    }

    /// A stored ruleset brought up to the current server defaults.
    fn merge_stored(user: &UserId, stored: Option<Value>) -> Ruleset {
        let defaults = defaults::server_default(user);
        let Some(mut content) = stored else {
            return defaults;
        };
        match serde_json::from_value::<Ruleset>(content["global"].take()) {
            Ok(mut ruleset) => {
                ruleset.update_with_server_default(defaults);
                ruleset
            }
            Err(err) => {
                tracing::warn!(%err, user = %user, "unreadable stored push rules, using defaults");
                defaults
            }
        }
    }

    /// `GET /pushrules/global/`: the ruleset as JSON.
    pub async fn get_ruleset_json(&self, user_id: &UserId) -> ServiceResult<Value> {
        Ok(ruleset_json(&*self.get_ruleset(user_id).await?))
    }

    /// One rule as JSON.
    pub async fn get_rule(
        &self,
        user_id: &UserId,
        kind: &str,
        rule_id: &str,
    ) -> ServiceResult<Value> {
        let kind = parse_kind(kind)?;
        let ruleset = self.get_ruleset(user_id).await?;
        let rule = ruleset.get(kind, rule_id).ok_or_else(rule_not_found)?;
        rule_json(rule)
    }

    pub async fn get_enabled(
        &self,
        user_id: &UserId,
        kind: &str,
        rule_id: &str,
    ) -> ServiceResult<bool> {
        let kind = parse_kind(kind)?;
        let ruleset = self.get_ruleset(user_id).await?;
        let rule = ruleset.get(kind, rule_id).ok_or_else(rule_not_found)?;
        Ok(rule.enabled())
    }

    pub async fn get_actions(
        &self,
        user_id: &UserId,
        kind: &str,
        rule_id: &str,
    ) -> ServiceResult<Value> {
        let kind = parse_kind(kind)?;
        let ruleset = self.get_ruleset(user_id).await?;
        let rule = ruleset.get(kind, rule_id).ok_or_else(rule_not_found)?;
        serde_json::to_value(rule.actions()).map_err(ServiceError::internal)
    }

    /// Creates or replaces a user-defined rule (`body` is the request JSON).
    pub async fn set_rule(
        &self,
        user_id: &UserId,
        kind: &str,
        rule_id: &str,
        body: &Value,
        position: RulePosition,
    ) -> ServiceResult<()> {
        let kind = parse_kind(kind)?;
        if !body.is_object() {
            return Err(ServiceError::bad_json(
                "The push rule must be a JSON object",
            ));
        }
        let rule = new_rule(&kind, rule_id, body)?;
        self.modify(user_id, |ruleset| {
            ruleset
                .insert(rule, position.after.as_deref(), position.before.as_deref())
                .map_err(insert_error)?;
            if ruleset.iter().count() > MAX_RULES {
                return Err(ServiceError::new(
                    ErrorKind::TooLarge,
                    format!("A ruleset holds at most {MAX_RULES} rules"),
                ));
            }
            Ok(())
        })
        .await
    }

    /// Deletes a user-defined rule; server-default rules cannot be deleted.
    pub async fn delete_rule(
        &self,
        user_id: &UserId,
        kind: &str,
        rule_id: &str,
    ) -> ServiceResult<()> {
        let kind = parse_kind(kind)?;
        self.modify(user_id, |ruleset| {
            ruleset.remove(kind, rule_id).map_err(|err| match err {
                RemovePushRuleError::ServerDefault => {
                    ServiceError::invalid_param("Server-default rules cannot be deleted")
                }
                _ => rule_not_found(),
            })
        })
        .await
    }

    pub async fn set_enabled(
        &self,
        user_id: &UserId,
        kind: &str,
        rule_id: &str,
        enabled: bool,
    ) -> ServiceResult<()> {
        let kind = parse_kind(kind)?;
        self.modify(user_id, |ruleset| {
            ruleset
                .set_enabled(kind, rule_id, enabled)
                .map_err(|_| rule_not_found())
        })
        .await
    }

    /// Replaces a rule's actions (server-default rules included).
    pub async fn set_actions(
        &self,
        user_id: &UserId,
        kind: &str,
        rule_id: &str,
        actions: &Value,
    ) -> ServiceResult<()> {
        let kind = parse_kind(kind)?;
        let actions = parse_actions(actions)?;
        self.modify(user_id, |ruleset| {
            ruleset
                .set_actions(kind, rule_id, actions)
                .map_err(|_| rule_not_found())
        })
        .await
    }

    /// Applies `change` to a copy of the user's ruleset and stores the result;
    /// on error nothing is stored.
    async fn modify(
        &self,
        user_id: &UserId,
        change: impl FnOnce(&mut Ruleset) -> ServiceResult<()>,
    ) -> ServiceResult<()> {
        let _write = self.writes.lock().await;
        let mut ruleset = (*self.get_ruleset(user_id).await?).clone();
        change(&mut ruleset)?;
        let content = json!({ "global": ruleset_json(&ruleset) });
        let stream = self
            .store
            .set_account_data(user_id, None, PUSH_RULES_TYPE, &content)
            .await?;
        {
            let mut cache = self.cache.lock();
            cache.generation += 1;
            cache.entries.put(user_id.to_owned(), Arc::new(ruleset));
        }
        // The same notice as any account data change: wakes the owner's syncs.
        let notice = StreamNotice::AccountData {
            stream,
            user_id: user_id.to_owned(),
        };
        if let Err(err) = self.bus.publish(notice).await {
            tracing::warn!(%err, "publishing a push rules notice failed");
        }
        Ok(())
    }

    /// Evaluates `event` for each `(user_id, display_name)` recipient (the
    /// caller leaves the sender out). The event is flattened once; a recipient
    /// whose ruleset cannot be loaded gets the server defaults.
    pub async fn evaluate_for_members(
        &self,
        event: &Value,
        room: &RoomPushContext,
        recipients: &[(OwnedUserId, String)],
    ) -> Vec<(OwnedUserId, PushOutcome)> {
        let prepared = PreparedEvent::new(event, room);
        // One lock for all the cache hits; only misses go to the store.
        let cached: Vec<Option<Arc<Ruleset>>> = {
            let mut cache = self.cache.lock();
            recipients
                .iter()
                .map(|(user_id, _)| cache.entries.get(user_id).cloned())
                .collect()
        };
        let mut outcomes = Vec::with_capacity(recipients.len());
        for ((user_id, display_name), cached) in recipients.iter().zip(cached) {
            let loaded = match cached {
                Some(ruleset) => Ok(ruleset),
                None => self.get_ruleset(user_id).await,
            };
            let ruleset = match loaded {
                Ok(ruleset) => ruleset,
                Err(err) => {
                    tracing::warn!(%err, user = %user_id, "push rules unavailable, using defaults");
                    Arc::new(defaults::server_default(user_id))
                }
            };
            let outcome = prepared.evaluate(&ruleset, user_id, display_name).await;
            outcomes.push((user_id.clone(), outcome));
        }
        outcomes
    }
}
