//! A Kafka-protocol broker for the tests: librdkafka's mock cluster, which
//! answers the real wire protocol (produce, fetch, metadata, idempotent
//! producers, consumer groups) on loopback ports. Chosen over a full broker
//! because it comes with the `rdkafka` crate we build anyway: no JVM, no
//! download, nothing else to install.
//!
//! Usage: `tern-kafka-mock [topic] [partitions]`. Prints the bootstrap
//! servers on the first line of stdout, then serves until stdin closes or the
//! process is killed.

use std::io::{BufRead, Write};

use rdkafka::mocking::MockCluster;

fn main() {
    let mut args = std::env::args().skip(1);
    let topic = args.next().unwrap_or_else(|| "tern.events".to_owned());
    let partitions: i32 = args
        .next()
        .map(|p| p.parse().expect("partitions must be a number"))
        .unwrap_or(8);
    let cluster = MockCluster::new(1).expect("starting the mock cluster");
    cluster
        .create_topic(&topic, partitions, 1)
        .expect("creating the topic");
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{}", cluster.bootstrap_servers()).expect("stdout");
    stdout.flush().expect("stdout");
    // Serve until whoever started us goes away.
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        if line.is_err() {
            break;
        }
    }
}
