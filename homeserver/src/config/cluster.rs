//! The `[kafka]` section: several nodes as one deployment.

use serde::Deserialize;

/// Where the cluster bus runs. With it, every node shares what it commits
/// with the others (see `service::cluster`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `host:port[,host:port...]`.
    pub brokers: String,
    #[serde(default = "default_topic")]
    pub topic: String,
    /// Used when the topic is created; rooms spread over the partitions.
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    #[serde(default = "default_replication")]
    pub replication_factor: i32,
}

impl KafkaConfig {
    pub fn check(&self) -> anyhow::Result<()> {
        if self.brokers.trim().is_empty() {
            anyhow::bail!("kafka.brokers must name at least one broker");
        }
        if self.topic.is_empty() {
            anyhow::bail!("kafka.topic must not be empty");
        }
        if self.partitions < 1 || self.replication_factor < 1 {
            anyhow::bail!("kafka.partitions and kafka.replication_factor must be at least 1");
        }
        Ok(())
    }
}

fn default_topic() -> String {
    "tern.events".to_owned()
}

fn default_partitions() -> i32 {
    64
}

fn default_replication() -> i32 {
    1
}
