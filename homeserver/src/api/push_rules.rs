//! Push rules: reading and changing the caller's `global` ruleset.
//! Only the `global` scope exists; other scopes fall through to `M_UNRECOGNIZED`.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::ApiResult;
use super::extract::{Auth, MatrixJson, MatrixPath, MatrixQuery};
use super::EmptyResponse;
use crate::service::push_rules::RulePosition;
use crate::service::Services;

#[derive(Deserialize)]
pub struct PositionQuery {
    before: Option<String>,
    after: Option<String>,
}

/// Rules and actions are the stored ruleset's JSON, as the push rules
/// service keeps it.
#[derive(Serialize)]
pub struct PushRulesResponse {
    pub global: Value,
}

#[derive(Deserialize, Serialize)]
pub struct EnabledBody {
    enabled: bool,
}

#[derive(Deserialize, Serialize)]
pub struct ActionsBody {
    actions: Value,
}

/// # `GET /_matrix/client/v3/pushrules/`
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3pushrules>
pub async fn get_all(
    State(services): State<Arc<Services>>,
    auth: Auth,
) -> ApiResult<Json<PushRulesResponse>> {
    let global = services
        .push_rules
        .get_ruleset_json(&auth.who.user_id)
        .await?;
    Ok(Json(PushRulesResponse { global }))
}

/// # `GET /_matrix/client/v3/pushrules/global/`
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3pushrulesglobal>
pub async fn get_global(
    State(services): State<Arc<Services>>,
    auth: Auth,
) -> ApiResult<Json<Value>> {
    let global = services
        .push_rules
        .get_ruleset_json(&auth.who.user_id)
        .await?;
    Ok(Json(global))
}

/// # `GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}`
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3pushrulesglobalkindruleid>
pub async fn get_rule(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath((kind, rule_id)): MatrixPath<(String, String)>,
) -> ApiResult<Json<Value>> {
    let rule = services
        .push_rules
        .get_rule(&auth.who.user_id, &kind, &rule_id)
        .await?;
    Ok(Json(rule))
}

/// # `PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}`
/// <https://spec.matrix.org/v1.16/client-server-api/#put_matrixclientv3pushrulesglobalkindruleid>
pub async fn put_rule(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath((kind, rule_id)): MatrixPath<(String, String)>,
    MatrixQuery(position): MatrixQuery<PositionQuery>,
    MatrixJson(body): MatrixJson<Value>,
) -> ApiResult<Json<EmptyResponse>> {
    let position = RulePosition {
        before: position.before,
        after: position.after,
    };
    services
        .push_rules
        .set_rule(&auth.who.user_id, &kind, &rule_id, &body, position)
        .await?;
    Ok(Json(EmptyResponse {}))
}

/// # `DELETE /_matrix/client/v3/pushrules/global/{kind}/{ruleId}`
/// <https://spec.matrix.org/v1.16/client-server-api/#delete_matrixclientv3pushrulesglobalkindruleid>
pub async fn delete_rule(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath((kind, rule_id)): MatrixPath<(String, String)>,
) -> ApiResult<Json<EmptyResponse>> {
    services
        .push_rules
        .delete_rule(&auth.who.user_id, &kind, &rule_id)
        .await?;
    Ok(Json(EmptyResponse {}))
}

/// # `GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/enabled`
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3pushrulesglobalkindruleidenabled>
pub async fn get_enabled(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath((kind, rule_id)): MatrixPath<(String, String)>,
) -> ApiResult<Json<EnabledBody>> {
    let enabled = services
        .push_rules
        .get_enabled(&auth.who.user_id, &kind, &rule_id)
        .await?;
    Ok(Json(EnabledBody { enabled }))
}

/// # `PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/enabled`
/// <https://spec.matrix.org/v1.16/client-server-api/#put_matrixclientv3pushrulesglobalkindruleidenabled>
pub async fn put_enabled(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath((kind, rule_id)): MatrixPath<(String, String)>,
    MatrixJson(body): MatrixJson<EnabledBody>,
) -> ApiResult<Json<EmptyResponse>> {
    services
        .push_rules
        .set_enabled(&auth.who.user_id, &kind, &rule_id, body.enabled)
        .await?;
    Ok(Json(EmptyResponse {}))
}

/// # `GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/actions`
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3pushrulesglobalkindruleidactions>
pub async fn get_actions(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath((kind, rule_id)): MatrixPath<(String, String)>,
) -> ApiResult<Json<ActionsBody>> {
    let actions = services
        .push_rules
        .get_actions(&auth.who.user_id, &kind, &rule_id)
        .await?;
    Ok(Json(ActionsBody { actions }))
}

/// # `PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/actions`
/// <https://spec.matrix.org/v1.16/client-server-api/#put_matrixclientv3pushrulesglobalkindruleidactions>
pub async fn put_actions(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath((kind, rule_id)): MatrixPath<(String, String)>,
    MatrixJson(body): MatrixJson<ActionsBody>,
) -> ApiResult<Json<EmptyResponse>> {
    services
        .push_rules
        .set_actions(&auth.who.user_id, &kind, &rule_id, &body.actions)
        .await?;
    Ok(Json(EmptyResponse {}))
}
