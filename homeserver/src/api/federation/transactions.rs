//! `PUT /_matrix/federation/v1/send/{txnId}`: another server's events and
//! ephemeral data for rooms we share.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use ruma_common::{OwnedEventId, OwnedServerName};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use super::auth::Signed;
use crate::api::error::{ApiError, ApiResult};
use crate::api::extract::MatrixPath;
use crate::service::error::ErrorKind;
use crate::service::federation::TxnAnswer;
use crate::service::Services;

/// The spec's limits on one transaction.
const MAX_PDUS: usize = 50;
const MAX_EDUS: usize = 100;

#[derive(Deserialize)]
pub struct Transaction {
    origin: OwnedServerName,
    #[serde(default)]
    pdus: Vec<Box<RawValue>>,
    #[serde(default)]
    edus: Vec<Value>,
}

#[derive(Serialize)]
pub struct TransactionResponse {
    pdus: BTreeMap<OwnedEventId, PduOutcome>,
}

/// `{}` for an accepted event, `{"error": …}` for a refused one.
#[derive(Serialize)]
pub struct PduOutcome {
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// # `PUT /_matrix/federation/v1/send/{txnId}`
/// <https://spec.matrix.org/v1.16/server-server-api/#put_matrixfederationv1sendtxnid>
///
/// Typing and receipt EDUs are applied; a transaction sent again (same
/// origin and id) gets the answer the first one got.
pub async fn send(
    State(services): State<Arc<Services>>,
    MatrixPath(txn_id): MatrixPath<String>,
    Signed { origin, body }: Signed<Transaction>,
) -> ApiResult<Json<TransactionResponse>> {
    let Transaction {
        origin: claimed,
        pdus,
        edus,
    } = body;
    if claimed != origin {
        return Err(ApiError::new(
            ErrorKind::Forbidden,
            "The transaction's origin is not the server that signed it",
        ));
    }
    if pdus.len() > MAX_PDUS || edus.len() > MAX_EDUS {
        return Err(ApiError::new(
            ErrorKind::TooLarge,
            format!("At most {MAX_PDUS} PDUs and {MAX_EDUS} EDUs per transaction"),
        ));
    }
    tracing::debug!(%origin, txn_id, pdus = pdus.len(), edus = edus.len(), "transaction");
    let federation = super::federation(&services)?;
    if let Some(answer) = federation.answered(&origin, &txn_id) {
        return Ok(Json(TransactionResponse::from(answer.as_ref())));
    }
    let results = services.rooms.receive_pdus(&origin, &pdus).await;
    services.receive_edus(&origin, &edus).await;
    let answer: TxnAnswer = results
        .into_iter()
        .map(|(id, result)| (id, result.err()))
        .collect();
    let response = TransactionResponse::from(&answer);
    federation.remember_answer(&origin, &txn_id, Arc::new(answer));
    Ok(Json(response))
}

impl From<&TxnAnswer> for TransactionResponse {
    fn from(answer: &TxnAnswer) -> Self {
        let pdus = answer
            .iter()
            .map(|(id, error)| {
                let error = error.clone();
                (id.clone(), PduOutcome { error })
            })
            .collect();
        Self { pdus }
    }
}
