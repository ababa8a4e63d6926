//! Matrix identifier checks (spec appendix "Identifier Grammar").

use super::error::{ErrorKind, ServiceError, ServiceResult};

/// Localparts this server hands out: `a-z 0-9 . _ = - /`, as the spec
/// recommends for new user ids.
pub fn is_valid_localpart(localpart: &str) -> bool {
    !localpart.is_empty()
        && localpart.len() <= 200
        && localpart
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._=-/+".contains(&b))
}

/// A user id with a sigil, a localpart and a server name.
pub fn check_user_id(user_id: &str) -> ServiceResult<()> {
    let valid = user_id.len() <= 255
        && user_id
            .strip_prefix('@')
            .and_then(|rest| rest.split_once(':'))
            .is_some_and(|(local, server)| {
                !local.is_empty()
                    && !server.is_empty()
                    && local
                        .bytes()
                        .all(|b| (0x21..=0x7e).contains(&b) && b != b':')
                    && server
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
            });
    if valid {
        Ok(())
    } else {
        Err(ServiceError::new(
            ErrorKind::InvalidParam,
            format!("'{user_id}' is not a valid user id"),
        ))
    }
}

/// `@localpart:server` from a bare localpart or a full user id of this server.
pub fn local_user_id(input: &str, server_name: &str) -> ServiceResult<String> {
    let localpart = match input.strip_prefix('@') {
        Some(rest) => match rest.split_once(':') {
            Some((local, server)) if server == server_name => local,
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
    Ok(format!("@{localpart}:{server_name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn localparts_follow_the_grammar() {
        assert!(is_valid_localpart("alice.b_1"));
        assert!(!is_valid_localpart("Bad User!"));
        assert!(!is_valid_localpart(""));
        assert_eq!(local_user_id("Alice", "hs").unwrap(), "@alice:hs");
        assert!(local_user_id("@a:other", "hs").is_err());
    }

    #[test]
    fn user_ids_need_sigil_and_server() {
        assert!(check_user_id("@a:hs").is_ok());
        assert!(check_user_id("a:hs").is_err());
        assert!(check_user_id("@a").is_err());
        assert!(check_user_id("@:hs").is_err());
    }
}
