//! The user ids this server hands out (ruma checks the grammar of the rest).

use super::error::{ErrorKind, ServiceError, ServiceResult};
use ruma_common::{OwnedUserId, ServerName, UserId};

/// Localparts this server hands out: `a-z 0-9 . _ = - /`, as the spec
/// recommends for new user ids.
pub fn is_valid_localpart(localpart: &str) -> bool {
    !localpart.is_empty()
        && localpart.len() <= 200
        && localpart
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._=-/+".contains(&b))
}

/// `@localpart:server` from a bare localpart or a full user id of this server.
pub fn local_user_id(input: &str, server_name: &ServerName) -> ServiceResult<OwnedUserId> {
    let localpart = match input.strip_prefix('@') {
        Some(rest) => match rest.split_once(':') {
            Some((local, server)) if server == server_name.as_str() => local,
            _ => return Err(ServiceError::forbidden("Not a user of this server")),
        },
        None => input,
    };
    let localpart = localpart.to_lowercase();
    if !is_valid_localpart(&localpart) {
        return Err(ServiceError::new(
            ErrorKind::InvalidUsername,
            "User names may contain only a-z, 0-9, '.', '_', '=', '-', '/' and '+'",
        ));
    }
    UserId::parse(format!("@{localpart}:{server_name}"))
        .map_err(|e| ServiceError::new(ErrorKind::InvalidUsername, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ruma_common::server_name;

    #[test]
    fn localparts_follow_the_grammar() {
        assert!(is_valid_localpart("alice.b_1"));
        assert!(!is_valid_localpart("Bad User!"));
        assert!(!is_valid_localpart(""));
        let hs = server_name!("hs");
        assert_eq!(local_user_id("Alice", hs).unwrap(), "@alice:hs");
        assert!(local_user_id("@a:other", hs).is_err());
    }
}
