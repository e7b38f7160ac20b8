//! One query on ClickHouse, bounded in time twice, so that a query the API
//! gave up on never keeps running there (where it would hold one of
//! ClickHouse's `max_concurrent_queries`, which the sink's inserts need):
//!
//! 1. ClickHouse's own `max_execution_time`, a little below the worker's
//!    wait: the server stops the query by itself and says so (code 159).
//! 2. The worker's wait for the answer (the HTTP client's timeout). Every
//!    query has a `query_id`; when the wait ends without an answer (or the
//!    connection breaks), the id goes to the `query-kill` thread, which sends
//!    `KILL QUERY WHERE query_id = '…' ASYNC` on its own connection, so the
//!    worker takes the next query at once.
//!
//! ClickHouse 18.16 has both: `query_id` as an HTTP parameter, and
//! `KILL QUERY … ASYNC` (`tests/query_limits.rs` checks them on it).

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::time::Duration;

use clickhouse_client::{Client, Error};
use tracing::{debug, warn};
use uuid::Uuid;

use crate::sql::literal;

/// Kills waiting to be sent, at most (one per timed-out query; a full queue
/// means ClickHouse is not answering anyway).
const KILL_QUEUE: usize = 256;
/// How long a `KILL QUERY` may take (`ASYNC`: it does not wait for the
/// query to stop).
const KILL_TIMEOUT: Duration = Duration::from_secs(5);

/// A fresh `query_id` for a query of the API (recognisable in
/// `system.processes` and `system.query_log`).
pub fn new_query_id() -> String {
    format!("api-query-{}", Uuid::new_v4())
}

/// Runs queries with a `query_id` and `max_execution_time`, killing those
/// whose answer did not come.
#[derive(Debug, Clone)]
pub struct Runner {
    client: Client,
    kills: SyncSender<String>,
}

impl Runner {
    /// A runner whose queries go through `client` (its timeout is the wait
    /// for an answer); starts the `query-kill` thread, which sends kills
    /// through a copy of `client` with a short timeout, and ends when every
    /// clone of the runner is gone.
    pub fn start(client: Client) -> std::io::Result<Self> {
        let (kills, rx) = sync_channel(KILL_QUEUE);
        let killer = client.with_timeout(KILL_TIMEOUT);
        std::thread::Builder::new()
            .name("query-kill".into())
            .spawn(move || kill_loop(&killer, &rx))?;
        Ok(Self { client, kills })
    }

    /// Runs `sql` as `query_id` with ClickHouse's `max_execution_time` of
    /// `execution_secs` (at least 1) and `settings`. When no answer came
    /// (the client's timeout, or a broken connection) the query is killed.
    pub fn run(
        &self,
        query_id: &str,
        sql: &str,
        execution_secs: u64,
        settings: &[(&str, &str)],
    ) -> Result<String, Error> {
        let time = execution_secs.max(1).to_string();
        let mut all = Vec::with_capacity(settings.len() + 2);
        all.push(("query_id", query_id));
        all.push(("max_execution_time", time.as_str()));
        all.extend(
            settings
                .iter()
                .filter(|(k, _)| *k != "query_id" && *k != "max_execution_time"),
        );
        let answer = self.client.query_with_settings(sql, &all);
        if let Err(Error::Connection { .. }) = &answer {
            self.kill(query_id);
        }
        answer
    }

    /// Asks the `query-kill` thread to kill `query_id`.
    pub fn kill(&self, query_id: &str) {
        match self.kills.try_send(query_id.to_string()) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                warn!(
                    query_id,
                    "too many kills pending; this query runs to its own bound"
                )
            }
            Err(TrySendError::Disconnected(_)) => warn!(query_id, "the query-kill thread stopped"),
        }
    }
}

/// The statement that kills `query_id` without waiting for it to stop.
pub fn kill_statement(query_id: &str) -> String {
    format!("KILL QUERY WHERE query_id = {} ASYNC", literal(query_id))
}

fn kill_loop(client: &Client, rx: &Receiver<String>) {
    while let Ok(id) = rx.recv() {
        match client.query(&kill_statement(&id)) {
            Ok(_) => debug!(query_id = %id, "killed a query that ran past its wait"),
            Err(e) => warn!(query_id = %id, error = %e, "could not kill a query"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_need_no_escaping() {
        let (a, b) = (new_query_id(), new_query_id());
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-'));
        assert_eq!(
            kill_statement(&a),
            format!("KILL QUERY WHERE query_id = '{a}' ASYNC")
        );
        assert_eq!(
            kill_statement("x' OR 1 --"),
            "KILL QUERY WHERE query_id = 'x\\' OR 1 --' ASYNC"
        );
    }

    #[test]
    fn a_query_without_an_answer_is_killed() {
        // Nothing listens on the discard port: no answer comes, so the id
        // goes to the kill queue; an answered query's does not.
        let (kills, rx) = sync_channel(4);
        let runner = Runner {
            client: Client::new("http://127.0.0.1:9", Duration::from_millis(200)),
            kills,
        };
        let r = runner.run("api-query-test", "SELECT 1", 1, &[]);
        assert!(matches!(r, Err(Error::Connection { .. })), "{r:?}");
        assert_eq!(rx.try_recv().as_deref(), Ok("api-query-test"));
        assert!(rx.try_recv().is_err());
    }
}
