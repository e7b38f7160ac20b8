//! Health handles: a part of the process that can keep a node from doing its
//! work says so itself; the node asks it instead of reading its metrics.

/// A component whose health a node reports (`/health`, `/health/ready`).
pub trait HealthCheck: Send + Sync + std::fmt::Debug {
    /// The key of its object in `/health`.
    fn name(&self) -> &'static str;
    /// What keeps it from making progress (a snake_case reason), if anything.
    fn problem(&self) -> Option<&'static str>;
    /// Its state as a JSON object, for `/health`.
    fn state_json(&self) -> String;
}
