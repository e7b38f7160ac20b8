//! `redpanda`: everything that talks to the Kafka-API broker.
//!
//! - [`producer`]: the one producer thread. HTTP shards push
//!   [`producer::ProduceRequest`]s into bounded lock-free rings
//!   ([`producer::Rings`]); the thread drains them into an idempotent
//!   `acks=all` rdkafka producer, and each delivery report completes the
//!   request's one-shot channel, which wakes the owning shard's task.
//! - [`admin`]: topic creation and the broker health probe behind
//!   `/health/ready`.
//! - [`metrics`]: the producer's metrics and the broker's health handle.
//! - [`reader`]: reads the topic from the beginning (the `dump` command).
//!
//! Start with [`producer::start`].

pub mod admin;
pub mod metrics;
pub mod producer;
pub mod reader;

use rdkafka::ClientConfig;

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("broker client: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("topic `{topic}`: {message}")]
    Topic { topic: String, message: String },
    #[error("could not start the producer thread: {0}")]
    Thread(std::io::Error),
}

/// Base client config shared by producer, admin, reader and the sink's consumer.
pub fn base_config(cfg: &engine_core::config::RedpandaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", cfg.brokers.joined())
        .set("client.id", "ingestion-engine")
        .set("socket.keepalive.enable", "true")
        .set("reconnect.backoff.max.ms", "1000");
    for (k, v) in &cfg.librdkafka {
        c.set(k, v);
    }
    c
}
