//! Typing and presence in Redis, for the distributed deployment: every node
//! sees the same typists, presence and stream positions.
//!
//! Each change that moves a stream runs as one Lua script, so the position
//! counter and the data it stands for change together, atomically, whatever
//! the number of nodes. Keys (all under the configured prefix):
//!
//! - `typing:pos`: the typing stream's position (INCR);
//! - `typing:room:{room}`: hash typist -> until (ms), expiring on its own a
//!   minute after its last typist would have, in case every node is gone;
//! - `typing:changed`: hash room -> position of its last change;
//! - `typing:expiry`: sorted set `room\0user` by until, for the expiry timer;
//! - `presence:pos`: the presence stream's position;
//! - `presence:user:{user}`: hash of the record (state, status_msg,
//!   last_active_ts, hidden) and the position of its last announcement,
//!   kept for 30 days after its last change (last seen);
//! - `presence:changes`: sorted set user by the position of their last
//!   announced change: one entry per user, so reading the changes since a
//!   token costs only the changes.

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};
use ruma_common::{OwnedRoomId, OwnedUserId, RoomId, UserId};

use super::{
    parse_id, ConnectionLeases, PresenceRecord, PresenceState, PresenceStore, RateLimitStore,
    StoreError, StoreResult, StreamPos, TypingStore,
};

/// Presence records outlive their user's last change by this much.
const PRESENCE_TTL_MS: i64 = 30 * 24 * 3600 * 1000;
/// A room's typing hash outlives its latest `until` by this much.
const TYPING_GRACE_MS: i64 = 60_000;
const MAX_TYPING_MS: i64 = 24 * 3600 * 1000;

impl From<redis::RedisError> for StoreError {
    fn from(err: redis::RedisError) -> Self {
        StoreError::database("redis", err)
    }
}

pub struct RedisEphemeral {
    conn: ConnectionManager,
    prefix: String,
    set_typing: Script,
    expire_typing: Script,
    set_presence: Script,
    take_token: Script,
    take_lapsed: Script,
}

/// KEYS: the lease deadlines (a sorted set). ARGV: now, limit. Removes and
/// returns the users whose lease ran out, so two nodes never take the same.
const TAKE_LAPSED: &str = r#"
local users = redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", ARGV[1], "LIMIT", 0, ARGV[2])
if #users > 0 then
  redis.call("ZREM", KEYS[1], unpack(users))
end
return users
"#;

/// KEYS: bucket hash. ARGV: burst, refill per second. A token bucket on the
/// server's clock (every node agrees on it); returns 0 when a token was
/// taken, else the milliseconds until one is there. The key expires once a
/// full bucket would be back, so idle users cost nothing.
const TAKE_TOKEN: &str = r#"
local burst = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local tokens = tonumber(redis.call("HGET", KEYS[1], "tokens") or burst)
local at = tonumber(redis.call("HGET", KEYS[1], "at") or now)
tokens = math.min(burst, tokens + (now - at) / 1000 * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = math.ceil((1 - tokens) / rate * 1000)
end
redis.call("HSET", KEYS[1], "tokens", tostring(tokens), "at", now)
redis.call("PEXPIRE", KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return wait
"#;

/// KEYS: room hash, changed hash, expiry zset, position.
/// ARGV: room, user, until (or "" to stop), time to live ms.
const SET_TYPING: &str = r#"
local member = ARGV[1] .. "\0" .. ARGV[2]
local changed
if ARGV[3] == "" then
  changed = redis.call("HDEL", KEYS[1], ARGV[2]) == 1
  redis.call("ZREM", KEYS[3], member)
else
  changed = redis.call("HSET", KEYS[1], ARGV[2], ARGV[3]) == 1
  redis.call("ZADD", KEYS[3], ARGV[3], member)
  local ttl = tonumber(ARGV[4])
  if redis.call("PTTL", KEYS[1]) < ttl then
    redis.call("PEXPIRE", KEYS[1], ttl)
  end
end
if not changed then return false end
local pos = redis.call("INCR", KEYS[4])
redis.call("HSET", KEYS[2], ARGV[1], pos)
return pos
"#;

/// KEYS: expiry zset, changed hash, position. ARGV: now, room key prefix.
/// Returns a flat list room, position, room, position...
const EXPIRE_TYPING: &str = r#"
local due = redis.call("ZRANGE", KEYS[1], "-inf", ARGV[1], "BYSCORE")
local rooms = {}
local order = {}
for _, member in ipairs(due) do
  local sep = string.find(member, "\0", 1, true)
  local room = string.sub(member, 1, sep - 1)
  local user = string.sub(member, sep + 1)
  redis.call("ZREM", KEYS[1], member)
  if redis.call("HDEL", ARGV[2] .. room, user) == 1 and not rooms[room] then
    rooms[room] = true
    table.insert(order, room)
  end
end
local out = {}
for _, room in ipairs(order) do
  local pos = redis.call("INCR", KEYS[3])
  redis.call("HSET", KEYS[2], room, pos)
  table.insert(out, room)
  table.insert(out, pos)
end
return out
"#;

/// KEYS: user hash, changes zset, position. ARGV: user, announce ("1"/"0"),
/// state, status_msg ("" = none, with has_status "0"), has_status,
/// last_active_ts, hidden, ttl ms.
const SET_PRESENCE: &str = r#"
local pos = false
if ARGV[2] == "1" then
  pos = redis.call("INCR", KEYS[3])
  redis.call("ZADD", KEYS[2], pos, ARGV[1])
  redis.call("HSET", KEYS[1], "pos", pos)
end
redis.call("HSET", KEYS[1], "state", ARGV[3], "last_active_ts", ARGV[6], "hidden", ARGV[7])
if ARGV[5] == "1" then
  redis.call("HSET", KEYS[1], "status_msg", ARGV[4])
else
  redis.call("HDEL", KEYS[1], "status_msg")
end
redis.call("PEXPIRE", KEYS[1], ARGV[8])
return pos
"#;

fn state_name(state: PresenceState) -> &'static str {
    match state {
        PresenceState::Online => "online",
        PresenceState::Unavailable => "unavailable",
        PresenceState::Offline => "offline",
    }
}

/// A record from its hash's fields; `None` for a missing (expired) user.
fn record(fields: &[(String, String)]) -> StoreResult<Option<PresenceRecord>> {
    if fields.is_empty() {
        return Ok(None);
    }
    let get = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let corrupt = |what: &str| StoreError::corrupt_says(format!("presence hash: {what}"));
    let state = match get("state") {
        Some("online") => PresenceState::Online,
        Some("unavailable") => PresenceState::Unavailable,
        Some("offline") => PresenceState::Offline,
        _ => return Err(corrupt("state")),
    };
    Ok(Some(PresenceRecord {
        state,
        status_msg: get("status_msg").map(str::to_owned),
        last_active_ts: get("last_active_ts")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| corrupt("last_active_ts"))?,
        hidden: get("hidden") == Some("1"),
    }))
}

impl RedisEphemeral {
    /// Connects (the connection manager reconnects on its own later).
    /// `prefix` namespaces every key, so deployments (or tests) can share a
    /// Redis.
    pub async fn connect(url: &str, prefix: &str) -> StoreResult<Self> {
        let client = redis::Client::open(url)?;
        let conn = ConnectionManager::new(client).await?;
        Ok(Self {
            conn,
            prefix: prefix.to_owned(),
            set_typing: Script::new(SET_TYPING),
            expire_typing: Script::new(EXPIRE_TYPING),
            set_presence: Script::new(SET_PRESENCE),
            take_token: Script::new(TAKE_TOKEN),
            take_lapsed: Script::new(TAKE_LAPSED),
        })
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn conn(&self) -> ConnectionManager {
        // A cheap handle onto the shared, multiplexed connection.
        self.conn.clone()
    }

    async fn user_records(
        &self,
        user_ids: &[OwnedUserId],
    ) -> StoreResult<Vec<(OwnedUserId, PresenceRecord)>> {
        if user_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for user in user_ids {
            pipe.hgetall(self.key(&format!("presence:user:{user}")));
        }
        let hashes: Vec<Vec<(String, String)>> = pipe.query_async(&mut self.conn()).await?;
        let mut out = Vec::with_capacity(user_ids.len());
        for (user, fields) in user_ids.iter().zip(hashes) {
            if let Some(record) = record(&fields)? {
                out.push((user.clone(), record));
            }
        }
        Ok(out)
    }

    /// Deletes every key under the prefix (tests).
    pub async fn clear(&self) -> StoreResult<()> {
        let mut conn = self.conn();
        let keys: Vec<String> = {
            let mut iter: redis::AsyncIter<String> =
                conn.scan_match(format!("{}*", self.prefix)).await?;
            let mut keys = Vec::new();
            while let Some(key) = futures::StreamExt::next(&mut iter).await {
                keys.push(key?);
            }
            keys
        };
        if !keys.is_empty() {
            let _: () = self.conn().del(keys).await?;
        }
        Ok(())
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[async_trait]
impl TypingStore for RedisEphemeral {
    async fn set_typing(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        until_ts: Option<i64>,
    ) -> StoreResult<Option<StreamPos>> {
        let until = until_ts.map(|t| t.to_string()).unwrap_or_default();
        // Relative, and capped: clients' timeouts are capped long before a day.
        let ttl = (until_ts.unwrap_or(0) - now_ms()).clamp(0, MAX_TYPING_MS) + TYPING_GRACE_MS;
        let pos: Option<StreamPos> = self
            .set_typing
            .key(self.key(&format!("typing:room:{room_id}")))
            .key(self.key("typing:changed"))
            .key(self.key("typing:expiry"))
            .key(self.key("typing:pos"))
            .arg(room_id.as_str())
            .arg(user_id.as_str())
            .arg(until)
            .arg(ttl)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(pos)
    }

    async fn expire_typing(&self, now_ts: i64) -> StoreResult<Vec<(OwnedRoomId, StreamPos)>> {
        let pairs: Vec<(String, StreamPos)> = self
            .expire_typing
            .key(self.key("typing:expiry"))
            .key(self.key("typing:changed"))
            .key(self.key("typing:pos"))
            .arg(now_ts)
            .arg(self.key("typing:room:"))
            .invoke_async(&mut self.conn())
            .await?;
        pairs
            .into_iter()
            .map(|(room, pos)| Ok((parse_id(room)?, pos)))
            .collect()
    }

    async fn next_typing_expiry(&self) -> StoreResult<Option<i64>> {
        let first: Vec<(String, f64)> = self
            .conn()
            .zrange_withscores(self.key("typing:expiry"), 0, 0)
            .await?;
        Ok(first.first().map(|(_, score)| *score as i64))
    }

    async fn typing_since(
        &self,
        room_ids: &[OwnedRoomId],
        since: StreamPos,
    ) -> StoreResult<Vec<(OwnedRoomId, Vec<OwnedUserId>)>> {
        if room_ids.is_empty() {
            return Ok(Vec::new());
        }
        let changed: Vec<Option<StreamPos>> = redis::cmd("HMGET")
            .arg(self.key("typing:changed"))
            .arg(room_ids.iter().map(|r| r.as_str()).collect::<Vec<_>>())
            .query_async(&mut self.conn())
            .await?;
        let moved: Vec<&OwnedRoomId> = room_ids
            .iter()
            .zip(changed)
            .filter(|(_, pos)| pos.is_some_and(|p| p > since))
            .map(|(room, _)| room)
            .collect();
        if moved.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for room in &moved {
            pipe.hkeys(self.key(&format!("typing:room:{room}")));
        }
        let typists: Vec<Vec<String>> = pipe.query_async(&mut self.conn()).await?;
        moved
            .into_iter()
            .zip(typists)
            .map(|(room, users)| {
                let mut users = users
                    .into_iter()
                    .map(parse_id)
                    .collect::<StoreResult<Vec<OwnedUserId>>>()?;
                users.sort();
                Ok((room.clone(), users))
            })
            .collect()
    }

    async fn typing_position(&self) -> StoreResult<StreamPos> {
        let pos: Option<StreamPos> = self.conn().get(self.key("typing:pos")).await?;
        Ok(pos.unwrap_or(0))
    }
}

#[async_trait]
impl PresenceStore for RedisEphemeral {
    async fn set_presence(
        &self,
        user_id: &UserId,
        presence: PresenceRecord,
        announce: bool,
    ) -> StoreResult<Option<StreamPos>> {
        let pos: Option<StreamPos> = self
            .set_presence
            .key(self.key(&format!("presence:user:{user_id}")))
            .key(self.key("presence:changes"))
            .key(self.key("presence:pos"))
            .arg(user_id.as_str())
            .arg(if announce { "1" } else { "0" })
            .arg(state_name(presence.state))
            .arg(presence.status_msg.as_deref().unwrap_or(""))
            .arg(if presence.status_msg.is_some() {
                "1"
            } else {
                "0"
            })
            .arg(presence.last_active_ts)
            .arg(if presence.hidden { "1" } else { "0" })
            .arg(PRESENCE_TTL_MS)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(pos)
    }

    async fn get_presence(&self, user_id: &UserId) -> StoreResult<Option<PresenceRecord>> {
        let fields: Vec<(String, String)> = self
            .conn()
            .hgetall(self.key(&format!("presence:user:{user_id}")))
            .await?;
        record(&fields)
    }

    async fn presences(
        &self,
        user_ids: &[OwnedUserId],
    ) -> StoreResult<Vec<(OwnedUserId, PresenceRecord)>> {
        self.user_records(user_ids).await
    }

    async fn presence_since(
        &self,
        since: StreamPos,
        limit: usize,
    ) -> StoreResult<Vec<(OwnedUserId, PresenceRecord)>> {
        let users: Vec<String> = redis::cmd("ZRANGE")
            .arg(self.key("presence:changes"))
            .arg(format!("({since}"))
            .arg("+inf")
            .arg("BYSCORE")
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(&mut self.conn())
            .await?;
        let users = users
            .into_iter()
            .map(parse_id)
            .collect::<StoreResult<Vec<_>>>()?;
        self.user_records(&users).await
    }

    async fn presence_position(&self) -> StoreResult<StreamPos> {
        let pos: Option<StreamPos> = self.conn().get(self.key("presence:pos")).await?;
        Ok(pos.unwrap_or(0))
    }
}

#[async_trait]
impl ConnectionLeases for RedisEphemeral {
    async fn set_connected(
        &self,
        user_ids: &[OwnedUserId],
        node: &str,
        ttl_ms: i64,
    ) -> StoreResult<()> {
        if user_ids.is_empty() {
            return Ok(());
        }
        // One key per user with a TTL: Redis forgets whoever stops renewing.
        // The deadlines also go in one sorted set, so a user whose node died
        // is found without scanning anyone else.
        let until = now_ms() + ttl_ms.max(1);
        let mut pipe = redis::pipe();
        for user in user_ids {
            pipe.cmd("SET")
                .arg(self.key(&format!("conn:{user}")))
                .arg(node)
                .arg("PX")
                .arg(ttl_ms.max(1))
                .ignore();
        }
        let mut zadd = redis::cmd("ZADD");
        zadd.arg(self.key("conn-deadlines"));
        for user in user_ids {
            zadd.arg(until).arg(user.as_str());
        }
        pipe.add_command(zadd).ignore();
        pipe.query_async::<()>(&mut self.conn()).await?;
        Ok(())
    }

    async fn connected_node(&self, user_id: &UserId) -> StoreResult<Option<String>> {
        Ok(self
            .conn()
            .get(self.key(&format!("conn:{user_id}")))
            .await?)
    }

    async fn take_lapsed_connections(
        &self,
        now_ts: i64,
        limit: usize,
    ) -> StoreResult<Vec<OwnedUserId>> {
        let users: Vec<String> = self
            .take_lapsed
            .key(self.key("conn-deadlines"))
            .arg(now_ts)
            .arg(limit.max(1))
            .invoke_async(&mut self.conn())
            .await?;
        users.into_iter().map(parse_id).collect()
    }
}

#[async_trait]
impl RateLimitStore for RedisEphemeral {
    async fn take_token(&self, key: &str, burst: f64, per_sec: f64) -> StoreResult<Option<u64>> {
        let wait: i64 = self
            .take_token
            .key(self.key(&format!("bucket:{key}")))
            .arg(burst)
            .arg(per_sec)
            .invoke_async(&mut self.conn())
            .await?;
        Ok((wait > 0).then_some(wait as u64))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::conformance;
    use ruma_common::{owned_room_id, owned_user_id, room_id, user_id};

    /// Redis on 127.0.0.1:6379 unless `TERN_TEST_REDIS_URL` says otherwise.
    fn url() -> String {
        std::env::var("TERN_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
    }

    #[tokio::test]
    async fn ephemeral_conformance() {
        let prefix = format!("tern-test-{}:", rand::random::<u64>());
        let store = Arc::new(RedisEphemeral::connect(&url(), &prefix).await.expect(
            "Redis at TERN_TEST_REDIS_URL (default redis://127.0.0.1:6379); scripts/test.sh starts it",
        ));
        conformance::typing_store(store.clone()).await;
        conformance::presence_store(store.clone()).await;
        conformance::connection_leases(store.clone()).await;
        conformance::rate_limit_store(store.clone()).await;
        store.clear().await.unwrap();
    }

    #[tokio::test]
    async fn two_nodes_share_one_stream() {
        let prefix = format!("tern-test-{}:", rand::random::<u64>());
        let a = RedisEphemeral::connect(&url(), &prefix).await.unwrap();
        let b = RedisEphemeral::connect(&url(), &prefix).await.unwrap();
        let p1 = a
            .set_typing(room_id!("!r:x"), user_id!("@a:x"), Some(i64::MAX / 2))
            .await
            .unwrap();
        let p2 = b
            .set_typing(room_id!("!r:x"), user_id!("@b:x"), Some(i64::MAX / 2))
            .await
            .unwrap();
        assert!(p2 > p1);
        let seen = a.typing_since(&[owned_room_id!("!r:x")], 0).await.unwrap();
        assert_eq!(
            seen,
            vec![(
                owned_room_id!("!r:x"),
                vec![owned_user_id!("@a:x"), owned_user_id!("@b:x")]
            )]
        );
        let record = PresenceRecord {
            state: PresenceState::Online,
            status_msg: Some("lunch".into()),
            last_active_ts: 5,
            hidden: false,
        };
        let pos = b
            .set_presence(user_id!("@b:x"), record.clone(), true)
            .await
            .unwrap();
        assert_eq!(a.presence_position().await.unwrap(), pos.unwrap());
        assert_eq!(
            a.get_presence(user_id!("@b:x")).await.unwrap(),
            Some(record)
        );
        a.clear().await.unwrap();
    }
}
