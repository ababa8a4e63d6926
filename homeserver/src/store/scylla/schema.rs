//! The CQL: the migration files, the keyspace statement, and every prepared
//! statement the engine runs, kept here together so the unit tests can check
//! them against the schema without a running ScyllaDB.

use crate::store::StoreError;

/// The migrations, in order, as `(name, text)`.
pub const MIGRATIONS: &[(&str, &str)] = &[(
    "001_timeline.cql",
    include_str!("../../../../migrations/scylla/001_timeline.cql"),
)];

pub const INSERT_EVENT: &str = "INSERT INTO room_events (room_id, bucket, stream, event_id, \
     sender, type, state_key, pdu, txn_device, txn_id, visibility) \
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
pub const INSERT_EVENT_ID: &str =
    "INSERT INTO events_by_id (event_id, room_id, stream) VALUES (?, ?, ?)";
pub const INSERT_BUCKET: &str = "INSERT INTO room_buckets (room_id, bucket) VALUES (?, ?)";
pub const FIND_EVENT_ID: &str = "SELECT room_id, stream FROM events_by_id WHERE event_id = ?";
pub const REDACT_EVENT: &str =
    "UPDATE room_events SET pdu = ? WHERE room_id = ? AND bucket = ? AND stream = ?";
/// The columns every event read returns, in `StoredEvent` order.
#[cfg(test)]
pub const EVENT_COLUMNS: &str =
    "event_id, room_id, stream, sender, type, state_key, pdu, txn_device, txn_id, visibility";
pub const SELECT_EVENT: &str = "SELECT event_id, room_id, stream, sender, type, state_key, pdu, \
     txn_device, txn_id, visibility FROM room_events \
     WHERE room_id = ? AND bucket = ? AND stream = ?";
/// Newest first: the table's clustering order.
pub const SELECT_EVENTS_BACKWARD: &str = "SELECT event_id, room_id, stream, sender, type, \
     state_key, pdu, txn_device, txn_id, visibility FROM room_events \
     WHERE room_id = ? AND bucket = ? AND stream > ? AND stream <= ? LIMIT ?";
pub const SELECT_EVENTS_FORWARD: &str = "SELECT event_id, room_id, stream, sender, type, \
     state_key, pdu, txn_device, txn_id, visibility FROM room_events \
     WHERE room_id = ? AND bucket = ? AND stream > ? AND stream <= ? \
     ORDER BY stream ASC LIMIT ?";
pub const SELECT_BUCKETS_BACKWARD: &str = "SELECT bucket FROM room_buckets \
     WHERE room_id = ? AND bucket >= ? AND bucket <= ? LIMIT ?";
pub const SELECT_BUCKETS_FORWARD: &str = "SELECT bucket FROM room_buckets \
     WHERE room_id = ? AND bucket >= ? AND bucket <= ? ORDER BY bucket ASC LIMIT ?";
pub const SELECT_PROGRESS: &str = "SELECT stream FROM timeline_progress WHERE writer = ?";
pub const UPDATE_PROGRESS: &str = "INSERT INTO timeline_progress (writer, stream) VALUES (?, ?)";

/// Every prepared statement, for the tests.
#[cfg(test)]
pub const PREPARED: &[&str] = &[
    INSERT_EVENT,
    INSERT_EVENT_ID,
    INSERT_BUCKET,
    FIND_EVENT_ID,
    REDACT_EVENT,
    SELECT_EVENT,
    SELECT_EVENTS_BACKWARD,
    SELECT_EVENTS_FORWARD,
    SELECT_BUCKETS_BACKWARD,
    SELECT_BUCKETS_FORWARD,
    SELECT_PROGRESS,
    UPDATE_PROGRESS,
];

/// Checks a keyspace name: DDL cannot take it as a bound value, so it is
/// spliced into the statement, and only a plain CQL identifier may be.
pub fn check_keyspace(name: &str) -> Result<(), StoreError> {
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 48;
    if valid {
        Ok(())
    } else {
        Err(StoreError::database_says(format!(
            "invalid scylla keyspace name {name:?}: letters, digits and _, at most 48"
        )))
    }
}

/// `CREATE KEYSPACE` for `keyspace` (already checked) with `replication_factor`
/// copies in every datacenter.
pub fn create_keyspace(keyspace: &str, replication_factor: u32) -> String {
    format!(
        "CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = \
         {{'class': 'NetworkTopologyStrategy', 'replication_factor': {replication_factor}}}"
    )
}

/// Splits a CQL file into statements: `--` and `//` comments dropped,
/// statements ended by `;` outside string literals.
pub fn split_statements(text: &str) -> Vec<String> {
    let mut statements = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let mut in_string = false;
        for (i, c) in line.char_indices() {
            match c {
                '\'' => {
                    in_string = !in_string;
                    current.push(c);
                }
                '-' | '/' if !in_string && line[i + 1..].starts_with(c) => break,
                ';' if !in_string => {
                    let statement = current.split_whitespace().collect::<Vec<_>>().join(" ");
                    if !statement.is_empty() {
                        statements.push(statement);
                    }
                    current.clear();
                }
                _ => current.push(c),
            }
        }
        current.push('\n');
    }
    let rest = current.split_whitespace().collect::<Vec<_>>().join(" ");
    if !rest.is_empty() {
        statements.push(rest);
    }
    statements
}

/// The shape of one `CREATE TABLE`, as far as the tests need it.
#[cfg(test)]
#[derive(Debug, PartialEq, Eq)]
pub struct TableShape {
    pub name: String,
    pub columns: Vec<String>,
    pub partition_key: Vec<String>,
    pub clustering_key: Vec<String>,
    /// `(column, "ASC" | "DESC")` from `WITH CLUSTERING ORDER BY`.
    pub clustering_order: Vec<(String, String)>,
}

/// Parses a `CREATE TABLE [IF NOT EXISTS] name (col type, ..., PRIMARY KEY
/// (...)) [WITH CLUSTERING ORDER BY (...)]` statement; `None` for anything
/// else or anything malformed.
#[cfg(test)]
pub fn parse_create_table(statement: &str) -> Option<TableShape> {
    let rest = strip_prefix_ci(statement.trim(), "CREATE TABLE ")?;
    let rest = strip_prefix_ci(rest, "IF NOT EXISTS ").unwrap_or(rest);
    let open = rest.find('(')?;
    let name = rest[..open].trim().to_owned();
    let close = matching_paren(rest, open)?;
    let body = &rest[open + 1..close];
    let tail = rest[close + 1..].trim();
    let mut columns = Vec::new();
    let mut primary = None;
    for part in split_top_level(body) {
        if let Some(key) = strip_prefix_ci(&part, "PRIMARY KEY") {
            primary = Some(key.trim().to_owned());
        } else {
            let mut words = part.split_whitespace();
            let column = words.next()?;
            words.next()?; // the type
            columns.push(column.to_owned());
        }
    }
    let primary = primary?;
    let inner = primary.strip_prefix('(')?.strip_suffix(')')?;
    let mut keys = split_top_level(inner).into_iter();
    let first = keys.next()?;
    let partition_key = match first.strip_prefix('(') {
        Some(composite) => composite
            .strip_suffix(')')?
            .split(',')
            .map(|c| c.trim().to_owned())
            .collect(),
        None => vec![first],
    };
    let clustering_key: Vec<String> = keys.collect();
    let mut clustering_order = Vec::new();
    if !tail.is_empty() {
        let order = strip_prefix_ci(tail, "WITH CLUSTERING ORDER BY")?.trim();
        let order = order.strip_prefix('(')?.strip_suffix(')')?;
        for item in order.split(',') {
            let mut words = item.split_whitespace();
            let column = words.next()?.to_owned();
            let dir = words.next().unwrap_or("ASC").to_ascii_uppercase();
            clustering_order.push((column, dir));
        }
    }
    Some(TableShape {
        name,
        columns,
        partition_key,
        clustering_key,
        clustering_order,
    })
}

#[cfg(test)]
fn strip_prefix_ci<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

#[cfg(test)]
fn matching_paren(text: &str, open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in text.char_indices().skip_while(|(i, _)| *i < open) {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// Splits on commas that are not inside parentheses or angle brackets
/// (`map<text, text>`).
#[cfg(test)]
fn split_top_level(text: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut current = String::new();
    for c in text.chars() {
        match c {
            '(' | '<' => depth += 1,
            ')' | '>' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(current.trim().to_owned());
                current.clear();
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    if !current.trim().is_empty() {
        parts.push(current.trim().to_owned());
    }
    parts
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn tables() -> HashMap<String, TableShape> {
        MIGRATIONS
            .iter()
            .flat_map(|(_, text)| split_statements(text))
            .map(|s| {
                let shape = parse_create_table(&s).unwrap_or_else(|| panic!("not a table: {s}"));
                (shape.name.clone(), shape)
            })
            .collect()
    }

    #[test]
    fn the_splitter_drops_comments_and_keeps_strings_whole() {
        let text = "-- a comment; with a semicolon\nCREATE TABLE a (x int, PRIMARY KEY (x));\n\
                    // another\nINSERT INTO a (x) VALUES ('it''s; fine');";
        assert_eq!(
            split_statements(text),
            vec![
                "CREATE TABLE a (x int, PRIMARY KEY (x))".to_string(),
                "INSERT INTO a (x) VALUES ('it''s; fine')".to_string(),
            ]
        );
        assert!(split_statements("-- only a comment\n").is_empty());
    }

    #[test]
    fn every_migration_statement_is_an_idempotent_create_table() {
        for (name, text) in MIGRATIONS {
            let statements = split_statements(text);
            assert!(!statements.is_empty(), "{name} is empty");
            for s in statements {
                assert!(
                    s.to_ascii_uppercase()
                        .starts_with("CREATE TABLE IF NOT EXISTS "),
                    "{name}: not idempotent: {s}"
                );
                assert!(parse_create_table(&s).is_some(), "{name}: unparsed: {s}");
            }
        }
    }

    #[test]
    fn timelines_are_partitioned_by_room_and_bucket_newest_first() {
        let tables = tables();
        let events = &tables["room_events"];
        assert_eq!(events.partition_key, ["room_id", "bucket"]);
        assert_eq!(events.clustering_key, ["stream"]);
        assert_eq!(
            events.clustering_order,
            [("stream".to_string(), "DESC".to_string())]
        );
        let buckets = &tables["room_buckets"];
        assert_eq!(buckets.partition_key, ["room_id"]);
        assert_eq!(buckets.clustering_key, ["bucket"]);
        assert_eq!(
            buckets.clustering_order,
            [("bucket".to_string(), "DESC".to_string())]
        );
        let by_id = &tables["events_by_id"];
        assert_eq!(by_id.partition_key, ["event_id"]);
        assert!(by_id.clustering_key.is_empty());
    }

    /// Each prepared statement names a table of the schema and only its
    /// columns, and restricts reads by the whole partition key (no
    /// `ALLOW FILTERING`, no scans).
    #[test]
    fn prepared_statements_match_the_schema() {
        let tables = tables();
        for statement in PREPARED {
            let upper = statement.to_ascii_uppercase();
            assert!(!upper.contains("ALLOW FILTERING"), "{statement}");
            let words: Vec<&str> = statement
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '?'))
                .filter(|w| !w.is_empty())
                .collect();
            let table_at = words
                .iter()
                .position(|w| ["INTO", "FROM", "UPDATE"].contains(&w.to_ascii_uppercase().as_str()))
                .unwrap_or_else(|| panic!("no table in {statement}"));
            let table = tables
                .get(words[table_at + 1])
                .unwrap_or_else(|| panic!("unknown table in {statement}"));
            const KEYWORDS: &[&str] = &[
                "INSERT", "INTO", "VALUES", "SELECT", "FROM", "WHERE", "AND", "LIMIT", "UPDATE",
                "SET", "ORDER", "BY", "ASC", "DESC", "?",
            ];
            for word in &words {
                if KEYWORDS.contains(&word.to_ascii_uppercase().as_str()) || *word == table.name {
                    continue;
                }
                assert!(
                    table.columns.iter().any(|c| c == word),
                    "{statement}: {word} is not a column of {}",
                    table.name
                );
            }
            if upper.starts_with("SELECT") || upper.starts_with("UPDATE") {
                let filter = &statement[upper.find(" WHERE ").expect("restricted")..];
                for key in &table.partition_key {
                    assert!(
                        filter.contains(&format!("{key} = ?")),
                        "{statement}: no {key} restriction"
                    );
                }
            }
            if upper.starts_with("INSERT") {
                let list = &statement[statement.find('(').unwrap()..statement.find(')').unwrap()];
                assert_eq!(
                    list.split(',').count(),
                    statement.matches('?').count(),
                    "{statement}: columns and values differ"
                );
            }
        }
        // The column list reads return is the one `EVENT_COLUMNS` names.
        for read in [SELECT_EVENT, SELECT_EVENTS_BACKWARD, SELECT_EVENTS_FORWARD] {
            assert!(read.contains(EVENT_COLUMNS), "{read}");
        }
    }

    #[test]
    fn keyspace_names_are_plain_identifiers() {
        assert!(check_keyspace("tern").is_ok());
        assert!(check_keyspace("tern_test_42").is_ok());
        for bad in [
            "",
            "1tern",
            "tern; DROP",
            "tern-x",
            "\"tern\"",
            &"k".repeat(49),
        ] {
            assert!(check_keyspace(bad).is_err(), "{bad}");
        }
        assert_eq!(
            create_keyspace("tern", 3),
            "CREATE KEYSPACE IF NOT EXISTS tern WITH replication = \
             {'class': 'NetworkTopologyStrategy', 'replication_factor': 3}"
        );
    }
}
