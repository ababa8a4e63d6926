//! [`StoreError`]: what an engine reports, with the engine's own error kept
//! as the cause for the logs.

use std::error::Error;
use std::sync::Arc;

/// The error behind a failure, kept whole (its `source()` chain too) for the
/// logs. Shared, because one failed group commit answers every caller in the
/// batch with the same error.
pub type Cause = Arc<dyn Error + Send + Sync>;

/// Errors raised by storage engines. The service layer maps them to Matrix
/// errors; clients never see a cause, the logs always do.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("already exists")]
    Conflict,
    #[error("database error: {context}")]
    Database {
        context: String,
        #[source]
        cause: Option<Cause>,
    },
    #[error("corrupt record: {context}")]
    Corrupt {
        context: String,
        #[source]
        cause: Option<Cause>,
    },
    #[error("storage is shutting down")]
    Closed,
    /// The room's state moved on since the event was authorized (another
    /// node of a cluster changed it): authorize again and retry.
    #[error("the room's state changed meanwhile")]
    Stale,
    /// A file or object store failed (media bytes).
    #[error("object storage error: {context}")]
    Io {
        context: String,
        #[source]
        cause: Option<Cause>,
    },
    /// A value the engine cannot store, such as a NUL character in text
    /// for PostgreSQL: the client's input is at fault, not the server.
    #[error("value cannot be stored")]
    Invalid(#[source] Cause),
}

pub type StoreResult<T> = Result<T, StoreError>;

impl StoreError {
    /// A database (or bus, or cache) failure caused by the engine's `cause`.
    pub fn database(context: impl Into<String>, cause: impl Error + Send + Sync + 'static) -> Self {
        StoreError::Database {
            context: context.into(),
            cause: Some(Arc::new(cause)),
        }
    }

    /// A database failure that is ours to describe (no underlying error).
    pub fn database_says(context: impl Into<String>) -> Self {
        StoreError::Database {
            context: context.into(),
            cause: None,
        }
    }

    /// A stored record that does not decode, and why.
    pub fn corrupt(context: impl Into<String>, cause: impl Error + Send + Sync + 'static) -> Self {
        StoreError::Corrupt {
            context: context.into(),
            cause: Some(Arc::new(cause)),
        }
    }

    /// A stored record that breaks a rule of ours.
    pub fn corrupt_says(context: impl Into<String>) -> Self {
        StoreError::Corrupt {
            context: context.into(),
            cause: None,
        }
    }

    /// A file or object store failure caused by `cause`.
    pub fn io(context: impl Into<String>, cause: impl Error + Send + Sync + 'static) -> Self {
        StoreError::Io {
            context: context.into(),
            cause: Some(Arc::new(cause)),
        }
    }

    /// A file or object store failure that is ours to describe.
    pub fn io_says(context: impl Into<String>) -> Self {
        StoreError::Io {
            context: context.into(),
            cause: None,
        }
    }

    /// A value the engine refuses, with the reason for the logs.
    pub fn invalid(reason: impl Into<String>) -> Self {
        let reason: Box<dyn Error + Send + Sync> = reason.into().into();
        StoreError::Invalid(Arc::from(reason))
    }
}

/// The error and each of its causes, `: `-separated: what a log line needs.
pub fn chain(err: &dyn Error) -> String {
    let mut out = err.to_string();
    let mut next = err.source();
    while let Some(cause) = next {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        next = cause.source();
    }
    out
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict,
            // PostgreSQL's character_not_in_repertoire: a NUL in a text value.
            sqlx::Error::Database(db) if db.code().as_deref() == Some("22021") => {
                StoreError::Invalid(Arc::new(err))
            }
            sqlx::Error::PoolClosed => StoreError::Closed,
            _ => StoreError::database("sql", err),
        }
    }
}

/// A stored identifier (or membership) as its typed form: text that does not
/// parse is a corrupt record, since only valid ids are ever written.
pub fn parse_id<T>(text: String) -> StoreResult<T>
where
    T: TryFrom<String>,
    T::Error: Error + Send + Sync + 'static,
{
    T::try_from(text).map_err(|e| StoreError::corrupt("stored identifier", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cause_is_kept_as_the_source() {
        let io = std::io::Error::other("disk on fire");
        let err = StoreError::database("append", io);
        assert_eq!(err.to_string(), "database error: append");
        assert_eq!(chain(&err), "database error: append: disk on fire");
    }

    #[test]
    fn an_invalid_value_names_no_cause_in_its_message() {
        let err = StoreError::invalid("text contains a NUL character");
        assert_eq!(err.to_string(), "value cannot be stored");
        assert_eq!(
            chain(&err),
            "value cannot be stored: text contains a NUL character"
        );
    }
}
