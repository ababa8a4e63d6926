//! Sync and pagination tokens.
//!
//! A sync token records, per stream, the position a client has seen. Its
//! string form is versioned and self-describing:
//!
//! ```text
//! v1-e<events>-a<account_data>-t<typing>-r<receipts>-p<presence>-d<device_lists>-x<to_device>
//! ```
//!
//! Each part after the version is a one-letter stream key and a decimal
//! position. Parsers ignore unknown keys and treat missing ones as 0, so later
//! versions can add streams (receipts, presence, per-partition positions)
//! without breaking clients that hold old tokens.
//!
//! A pagination token (`/messages` `from`/`to`, `prev_batch`) is `t<events>`:
//! the position between two events of the event stream. `/messages` also
//! accepts a sync token, whose event position it uses.

use std::fmt;

use super::error::{ServiceError, ServiceResult};
use crate::store::StreamPos;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncToken {
    pub events: StreamPos,
    pub account_data: StreamPos,
    /// Typing is in memory on each node, so after a restart its positions
    /// start over; a token from before then just sees the current typists.
    pub typing: StreamPos,
    pub receipts: StreamPos,
    /// In memory like typing: a token from before a restart is "from the start".
    pub presence: StreamPos,
    /// Whose devices or keys changed.
    pub device_lists: StreamPos,
    /// The device's to-device inbox: everything up to here is acknowledged
    /// once the client sends this token back.
    pub to_device: StreamPos,
}

impl fmt::Display for SyncToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "v1-e{}-a{}-t{}-r{}-p{}-d{}-x{}",
            self.events,
            self.account_data,
            self.typing,
            self.receipts,
            self.presence,
            self.device_lists,
            self.to_device
        )
    }
}

fn bad_token() -> ServiceError {
    ServiceError::invalid_param("Invalid sync token")
}

impl std::str::FromStr for SyncToken {
    type Err = ServiceError;

    fn from_str(s: &str) -> ServiceResult<Self> {
        let mut parts = s.split('-');
        if parts.next() != Some("v1") {
            return Err(bad_token());
        }
        let mut token = SyncToken::default();
        for part in parts {
            let (key, value) = part.split_at_checked(1).ok_or_else(bad_token)?;
            let pos: StreamPos = value.parse().map_err(|_| bad_token())?;
            if pos < 0 {
                return Err(bad_token());
            }
            match key {
                "e" => token.events = pos,
                "a" => token.account_data = pos,
                "t" => token.typing = pos,
                "r" => token.receipts = pos,
                "p" => token.presence = pos,
                "d" => token.device_lists = pos,
                "x" => token.to_device = pos,
                _ => {}
            }
        }
        Ok(token)
    }
}

/// Formats a pagination token.
pub fn pagination_token(pos: StreamPos) -> String {
    format!("t{pos}")
}

/// Parses a pagination token or a sync token into an event position.
pub fn parse_pagination_token(s: &str) -> ServiceResult<StreamPos> {
    let invalid = || ServiceError::invalid_param("Invalid pagination token");
    if let Some(rest) = s.strip_prefix('t') {
        let pos: StreamPos = rest.parse().map_err(|_| invalid())?;
        return if pos >= 0 { Ok(pos) } else { Err(invalid()) };
    }
    s.parse::<SyncToken>()
        .map(|t| t.events)
        .map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_tokens_round_trip() {
        let token = SyncToken {
            events: 42,
            account_data: 7,
            typing: 3,
            receipts: 9,
            presence: 4,
            device_lists: 5,
            to_device: 6,
        };
        assert_eq!(token.to_string(), "v1-e42-a7-t3-r9-p4-d5-x6");
        assert_eq!(token.to_string().parse::<SyncToken>().unwrap(), token);
    }

    #[test]
    fn unknown_streams_are_ignored_and_missing_ones_are_zero() {
        let token: SyncToken = "v1-e5-x9-a1".parse().unwrap();
        assert_eq!(token.events, 5);
        assert_eq!(token.account_data, 1);
        let token: SyncToken = "v1-e5".parse().unwrap();
        assert_eq!(token.account_data, 0);
    }

    #[test]
    fn garbage_is_refused() {
        for bad in ["", "v2-e1", "v1-ex", "v1-e-1", "s72_1", "v1-e"] {
            assert!(bad.parse::<SyncToken>().is_err(), "{bad}");
        }
    }

    #[test]
    fn pagination_accepts_both_forms() {
        assert_eq!(parse_pagination_token("t12").unwrap(), 12);
        assert_eq!(parse_pagination_token("v1-e9-a0").unwrap(), 9);
        assert!(parse_pagination_token("t-3").is_err());
        assert!(parse_pagination_token("x").is_err());
    }
}
