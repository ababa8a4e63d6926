//! The `[scylla]` section: room timelines served from ScyllaDB.

use serde::Deserialize;

/// Where the timeline copy lives. The relational engine stays the record;
/// see `store::scylla`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScyllaConfig {
    /// `host:port` of one or more nodes; the driver discovers the rest.
    #[serde(default = "default_nodes")]
    pub nodes: Vec<String>,
    #[serde(default = "default_keyspace")]
    pub keyspace: String,
    /// Copies per datacenter, used when the keyspace is created.
    #[serde(default = "default_replication")]
    pub replication_factor: u32,
}

impl ScyllaConfig {
    pub fn check(&self) -> anyhow::Result<()> {
        if self.nodes.iter().all(|n| n.trim().is_empty()) {
            anyhow::bail!("scylla.nodes must name at least one node");
        }
        let mut chars = self.keyspace.chars();
        let plain = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
            && self.keyspace.len() <= 48;
        if !plain {
            anyhow::bail!(
                "scylla.keyspace {:?}: letters, digits and _ only, starting with a letter, \
                 at most 48",
                self.keyspace
            );
        }
        if self.replication_factor < 1 {
            anyhow::bail!("scylla.replication_factor must be at least 1");
        }
        Ok(())
    }
}

fn default_nodes() -> Vec<String> {
    vec!["127.0.0.1:9042".to_owned()]
}

fn default_keyspace() -> String {
    "tern".to_owned()
}

fn default_replication() -> u32 {
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_checks() {
        let config: ScyllaConfig = toml::from_str("").unwrap();
        assert_eq!(config.nodes, ["127.0.0.1:9042"]);
        assert_eq!(config.keyspace, "tern");
        assert_eq!(config.replication_factor, 1);
        assert!(config.check().is_ok());
        for bad in [
            "nodes = []",
            "keyspace = \"tern; DROP KEYSPACE x\"",
            "replication_factor = 0",
        ] {
            let config: ScyllaConfig = toml::from_str(bad).unwrap();
            assert!(config.check().is_err(), "{bad}");
        }
        assert!(toml::from_str::<ScyllaConfig>("node = [\"x\"]").is_err());
    }
}
