//! The user directory: whom a user may find by name.

use ruma_common::UserId;
use sqlx::Row as _;

use super::engine::{dialect, Store};
use super::rows::id;
use crate::store::{DirectoryUser, StoreResult};

impl Store {
    /// One query: the joined members of the searcher's rooms and of public
    /// rooms (listed in the directory, or with a public join rule), matched
    /// on the id, the profile's display name or, for another server's user,
    /// the name their membership event gives.
    pub(super) async fn directory_search(
        &self,
        searcher: &UserId,
        term: &str,
        limit: usize,
    ) -> StoreResult<Vec<DirectoryUser>> {
        let pattern = format!("%{}%", escape_like(&term.to_lowercase()));
        let query = format!(
            "WITH visible AS ( \
               SELECT room_id FROM memberships WHERE user_id = $1 AND membership = 'join' \
               UNION SELECT room_id FROM rooms WHERE is_public \
               UNION SELECT cs.room_id FROM current_state cs JOIN events e ON e.stream = cs.stream \
                 WHERE cs.type = 'm.room.join_rules' AND cs.state_key = '' AND {join_rule} = 'public' \
             ), found AS ( \
               SELECT m.user_id, COALESCE(u.displayname, {name}) AS name, \
                 CASE WHEN u.user_id IS NULL THEN NULL ELSE u.avatar_url END AS avatar \
               FROM memberships m JOIN events e ON e.event_id = m.event_id \
               LEFT JOIN users u ON u.user_id = m.user_id \
               WHERE m.membership = 'join' AND m.room_id IN (SELECT room_id FROM visible) \
             ) \
             SELECT user_id, MIN(name), MIN(avatar) FROM found \
             WHERE lower(user_id) LIKE $2 ESCAPE '\\' OR lower(name) LIKE $2 ESCAPE '\\' \
             GROUP BY user_id ORDER BY user_id{order} LIMIT $3",
            join_rule = dialect::PDU_JOIN_RULE,
            name = dialect::PDU_DISPLAYNAME,
            order = dialect::BYTE_ORDER,
        );
        let rows = sqlx::query(&query)
            .bind(searcher.as_str())
            .bind(pattern)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(DirectoryUser {
                    user_id: id(row, 0)?,
                    display_name: row.try_get(1)?,
                    avatar_url: row.try_get(2)?,
                })
            })
            .collect()
    }
}

/// `term` matched literally by `LIKE ... ESCAPE '\'`.
fn escape_like(term: &str) -> String {
    term.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}
