//! Room tags (`m.favourite`, `m.lowpriority`, `u.work`...): the `m.tag`
//! room account data, edited one tag at a time.

use ruma_common::{RoomId, UserId};
use serde_json::{json, Map, Value};

use super::AccountService;
use crate::service::error::{ServiceError, ServiceResult};

/// The room account data type tags are kept in.
pub const TAG_TYPE: &str = "m.tag";

/// Longest tag name, in bytes (Synapse's limit too).
const MAX_TAG_BYTES: usize = 255;

impl AccountService {
    /// The user's tags of a room: `{tag: {order?}}`.
    pub async fn tags(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
    ) -> ServiceResult<Map<String, Value>> {
        let content = self
            .store
            .get_account_data(user_id, Some(room_id), TAG_TYPE)
            .await?;
        Ok(match content {
            Some(Value::Object(mut c)) => match c.remove("tags") {
                Some(Value::Object(tags)) => tags,
                _ => Map::new(),
            },
            _ => Map::new(),
        })
    }

    /// Sets one tag, with `order` (0 to 1 by convention) if given.
    pub async fn set_tag(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        tag: &str,
        order: Option<f64>,
    ) -> ServiceResult<()> {
        if tag.is_empty() || tag.len() > MAX_TAG_BYTES {
            return Err(ServiceError::invalid_param("A tag is 1 to 255 bytes"));
        }
        let _edit = self.edits.lock().await;
        let mut tags = self.tags(user_id, room_id).await?;
        let info = match order {
            Some(order) => json!({ "order": order }),
            None => json!({}),
        };
        tags.insert(tag.to_owned(), info);
        self.write_tags(user_id, room_id, tags).await
    }

    /// Removes one tag; removing an absent tag is done already.
    pub async fn remove_tag(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        tag: &str,
    ) -> ServiceResult<()> {
        let _edit = self.edits.lock().await;
        let mut tags = self.tags(user_id, room_id).await?;
        if tags.remove(tag).is_some() {
            self.write_tags(user_id, room_id, tags).await?;
        }
        Ok(())
    }

    async fn write_tags(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        tags: Map<String, Value>,
    ) -> ServiceResult<()> {
        let content = json!({ "tags": tags });
        self.set_account_data(user_id, Some(room_id), TAG_TYPE, content)
            .await
    }
}
