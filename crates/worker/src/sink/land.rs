//! The insert protocol: staging tables as ownership tokens, one part per
//! insert, receipts checked after any doubt, roll-ups repaired from the
//! same rows. The argument that it stores every record once is in
//! `crates/worker/README.md` ("Exactly once"); this module is its code.
//!
//! Invariants:
//! - A sink writes into `events` or a roll-up only with `INSERT … SELECT`
//!   from its staging table of that broker partition. ClickHouse runs such a
//!   query wholly before a `DROP` of the staging table returns, or refuses
//!   it (`UNKNOWN_TABLE`) once the table is gone.
//! - A staging table is created only by a sink taking a partition over
//!   ([`Lander::take_over`], which then drops every other one until none is
//!   left), or by its owner replacing it ([`Lander::replace_own`]), which
//!   counts only if the old one could still be dropped, so a fenced owner
//!   can never make itself a new token.
//! - After an attempt whose outcome is unknown (no answer), the sink
//!   replaces its staging table before anything else: the attempt has then
//!   ended or can never run, and the receipts tell what landed.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use clickhouse_client::receipts::{
    check_sql, create_stage_sql, insert_rows_sql, list_stages_sql, stage_prefix, Receipt,
};
use clickhouse_client::schema::rollup_selects;
use clickhouse_client::{Client, ServerVersion};
use tracing::{error, info, warn};
use uuid::Uuid;

use super::metrics::SinkMetrics;
use crate::Error;

/// ClickHouse's "table doesn't exist".
const UNKNOWN_TABLE: u32 = 60;
/// Most rounds of dropping other owners' staging tables before giving up
/// for now (each round drops all it saw; only a self-replacing owner adds).
const TAKE_OVER_ROUNDS: usize = 100;

/// Staging table of each broker partition this sink owns, shared by the
/// consumer (which takes partitions over) and the inserter (which replaces
/// its own after an unknown outcome).
#[derive(Debug, Default)]
pub(super) struct Stages {
    names: Mutex<HashMap<i32, String>>,
    /// Set when a newer owner dropped one of this sink's staging tables:
    /// the consumer drops its state and rejoins the group.
    pub(super) fenced: std::sync::atomic::AtomicBool,
    /// Set when the consumer's position no longer matches its state.
    pub(super) rejoin: std::sync::atomic::AtomicBool,
}

impl Stages {
    fn get(&self, p: i32) -> Option<String> {
        self.names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&p)
            .cloned()
    }

    fn set(&self, p: i32, name: String) {
        self.names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(p, name);
    }

    /// Asks the consumer to drop what it holds and rejoin the group (its
    /// position no longer matches its state).
    pub(super) fn request_rejoin(&self) {
        self.rejoin.store(true, Ordering::SeqCst);
    }

    /// Whether this sink still holds a staging table of `p`.
    pub(super) fn owns(&self, p: i32) -> bool {
        self.get(p).is_some()
    }

    /// `p`'s staging table is gone: another sink owns `p` now.
    fn forget(&self, p: i32) {
        self.names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&p);
        self.fenced.store(true, Ordering::SeqCst);
    }
}

/// Why writing a partition's part stopped without landing it.
#[derive(Debug)]
pub(super) enum NotLanded {
    /// A newer owner dropped this sink's staging table: the partition is
    /// not this sink's any more.
    Fenced,
    /// ClickHouse failed; the caller retries (all of it is safe to repeat).
    Failed(Error),
}

impl From<Error> for NotLanded {
    fn from(e: Error) -> Self {
        NotLanded::Failed(e)
    }
}

impl From<clickhouse_client::Error> for NotLanded {
    fn from(e: clickhouse_client::Error) -> Self {
        NotLanded::Failed(e.into())
    }
}

/// Where an insert's rows come from when they are staged.
pub(super) enum Rows<'a> {
    /// The encoded `Native` block of the batch's rows of this partition.
    Block(&'a [u8]),
    /// `events`, for an insert a dead owner wrote there whose roll-up
    /// push failed (its receipts say which).
    Events,
}

/// What one table holds of an insert: 0 (nothing), 1 (its part), more
/// (stored twice: a broken promise, logged and counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Landing {
    pub(super) events: u64,
    pub(super) rollups: [u64; 2],
}

/// Writes parts for one sink; both of its threads hold one.
pub(super) struct Lander {
    ch: Client,
    db: String,
    topic: String,
    stages: Arc<Stages>,
    metrics: Arc<SinkMetrics>,
    /// `" SYNC"` where a `DROP` would not wait for running queries.
    drop_suffix: &'static str,
    /// Settings of every write: one thread, one block, so one part per
    /// partition (`min_insert_block_size_*` squash the block whole).
    write_settings: Vec<(&'static str, String)>,
}

impl Lander {
    pub(super) fn new(
        ch: Client,
        db: &str,
        topic: &str,
        server: ServerVersion,
        stages: Arc<Stages>,
        metrics: Arc<SinkMetrics>,
        max_rows: usize,
    ) -> Self {
        let rows = (max_rows as u64).saturating_mul(4).max(1 << 20);
        Self {
            ch,
            db: db.to_string(),
            topic: topic.to_string(),
            stages,
            metrics,
            drop_suffix: server.drop_suffix(),
            write_settings: write_settings(server, rows),
        }
    }

    /// The staging tables this sink holds.
    pub(super) fn stages(&self) -> &Stages {
        &self.stages
    }

    fn new_stage_name(&self, p: i32) -> String {
        format!(
            "{}{}",
            stage_prefix(&self.topic, p),
            Uuid::new_v4().simple()
        )
    }

    fn seen(&self, ok: bool) {
        if !ok {
            self.metrics.insert_failures.fetch_add(1, Ordering::Relaxed);
        }
        self.metrics.clickhouse_up.store(ok, Ordering::Release);
    }

    fn run(
        &self,
        sql: &str,
        settings: &[(&str, &str)],
    ) -> Result<String, clickhouse_client::Error> {
        let r = self.ch.query_with_settings(sql, settings);
        self.seen(r.is_ok());
        r
    }

    /// Takes partition `p` over: a staging table of this sink's own, then
    /// every other one of `p` dropped (each `DROP` waits for the queries
    /// reading it), until a listing shows only this sink's. From then on no
    /// earlier owner can write `p`'s records; only then may the receipts be
    /// read.
    pub(super) fn take_over(&self, p: i32) -> Result<(), Error> {
        let db = &self.db;
        // Always a new one: an own one from an earlier assignment may have
        // been dropped by whoever owned `p` in between.
        let mine = self.new_stage_name(p);
        self.run(&create_stage_sql(db, &mine), &[])?;
        self.stages.set(p, mine.clone());
        let list = list_stages_sql(db, &stage_prefix(&self.topic, p));
        for _ in 0..TAKE_OVER_ROUNDS {
            let names = self.run(&list, &[])?;
            let prefix = stage_prefix(&self.topic, p);
            // Anything else with the prefix is not ours to drop.
            let others: Vec<&str> = names
                .lines()
                .map(str::trim)
                .filter(|n| *n != mine && is_stage_name(n, &prefix))
                .collect();
            if !names.lines().any(|n| n.trim() == mine) {
                // Our own was dropped meanwhile: a newer owner of `p`.
                self.stages.forget(p);
                return Err(Error::Fenced(p));
            }
            if others.is_empty() {
                return Ok(());
            }
            for other in others {
                self.run(
                    &format!("DROP TABLE IF EXISTS {db}.{other}{}", self.drop_suffix),
                    &[],
                )?;
                self.metrics.fences.fetch_add(1, Ordering::Relaxed);
                info!(
                    partition = p,
                    stage = other,
                    "dropped an earlier owner's staging table"
                );
            }
        }
        Err(Error::ClickHouse(clickhouse_client::Error::Protocol(
            format!("partition {p}: staging tables kept appearing over {TAKE_OVER_ROUNDS} rounds"),
        )))
    }

    /// Replaces this sink's staging table of `p` by a new, empty one, so
    /// that an attempt whose outcome is unknown has ended (the `DROP` waited
    /// for it) or can never run. The new one counts only if the old one was
    /// still there to drop: otherwise a newer owner has `p`.
    fn replace_own(&self, p: i32) -> Result<(), NotLanded> {
        let db = &self.db;
        let Some(old) = self.stages.get(p) else {
            return Err(NotLanded::Fenced);
        };
        let new = self.new_stage_name(p);
        self.run(&create_stage_sql(db, &new), &[])?;
        match self.run(&format!("DROP TABLE {db}.{old}{}", self.drop_suffix), &[]) {
            Ok(_) => {
                self.stages.set(p, new);
                self.metrics.self_fences.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                let _ = self.run(
                    &format!("DROP TABLE IF EXISTS {db}.{new}{}", self.drop_suffix),
                    &[],
                );
                if e.code() == Some(UNKNOWN_TABLE) {
                    self.stages.forget(p);
                    Err(NotLanded::Fenced)
                } else {
                    Err(e.into())
                }
            }
        }
    }

    /// Whether any sink runs a query on the staging tables of `partitions`
    /// now (an owner that is merely slow does; a partition nobody owns has
    /// none).
    pub(super) fn anyone_writing(&self, partitions: &[i32]) -> bool {
        let like: Vec<String> = partitions
            .iter()
            .map(|&p| {
                format!(
                    "position(query, {}) > 0",
                    clickhouse_client::receipts::quote(&stage_prefix(&self.topic, p))
                )
            })
            .collect();
        let sql = format!(
            "SELECT count() FROM system.processes WHERE ({}) AND query NOT LIKE '%system.processes%' FORMAT TabSeparated",
            like.join(" OR ")
        );
        // Unknown counts as busy: no early rejoin on a guess.
        self.run(&sql, &[]).map_or(true, |n| n.trim() != "0")
    }

    /// What `events` and the roll-ups hold of insert `r`.
    pub(super) fn landing(
        &self,
        id: Uuid,
        retention_days: u16,
        day: u16,
    ) -> Result<Landing, Error> {
        let answer = self.run(&check_sql(&self.db, id, retention_days, day), &[])?;
        let n: Vec<u64> = answer
            .trim()
            .split('\t')
            .filter_map(|v| v.parse().ok())
            .collect();
        let [events, a, b] = n[..] else {
            return Err(Error::ClickHouse(clickhouse_client::Error::Protocol(
                format!("receipt check: {answer:?}"),
            )));
        };
        let l = Landing {
            events,
            rollups: [a, b],
        };
        if events > 1 || a > 1 || b > 1 {
            self.metrics
                .receipts_duplicated
                .fetch_add(1, Ordering::Relaxed);
            error!(insert = %id, ?l, "an insert is stored more than once");
        }
        Ok(l)
    }

    fn is_own_stage_gone(&self, e: &clickhouse_client::Error, stage: &str) -> bool {
        e.code() == Some(UNKNOWN_TABLE) && e.to_string().contains(stage)
    }

    /// Lands the inserts `receipts` of broker partition `p` (in order),
    /// their rows staged from `rows`. `done[i]` marks the ones already
    /// landed in full (kept across calls); `doubt[i]` the ones that may have
    /// landed in part, whose receipts are read first. Returns when all
    /// landed, or the first failure (the caller backs off and calls again).
    pub(super) fn land(
        &self,
        p: i32,
        receipts: &[Receipt],
        rows: Rows<'_>,
        progress: &mut Progress,
    ) -> Result<(), NotLanded> {
        if progress.unknown {
            self.replace_own(p)?;
            progress.unknown = false;
            progress.staged = false;
        }
        let result = self.land_staged(p, receipts, &rows, progress);
        if let Err(NotLanded::Failed(Error::ClickHouse(e))) = &result {
            if !e.answered() {
                progress.unknown = true;
            }
            progress.staged = false;
            for (d, done) in progress.doubt.iter_mut().zip(&progress.done) {
                *d = !done;
            }
        }
        result
    }

    fn land_staged(
        &self,
        p: i32,
        receipts: &[Receipt],
        rows: &Rows<'_>,
        progress: &mut Progress,
    ) -> Result<(), NotLanded> {
        let db = &self.db;
        let stage = self.stages.get(p).ok_or(NotLanded::Fenced)?;
        let fenced = |e: clickhouse_client::Error| {
            if self.is_own_stage_gone(&e, &stage) {
                self.stages.forget(p);
                NotLanded::Fenced
            } else {
                NotLanded::Failed(e.into())
            }
        };
        let settings: Vec<(&str, &str)> = self
            .write_settings
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .collect();
        if !progress.staged {
            self.run(&format!("TRUNCATE TABLE {db}.{stage}"), &[])
                .map_err(fenced)?;
            match rows {
                Rows::Block(bytes) => {
                    let r = self.ch.query_with_body_settings(
                        &format!("INSERT INTO {db}.{stage} FORMAT Native"),
                        bytes,
                        &settings,
                    );
                    self.seen(r.is_ok());
                    r.map_err(fenced)?;
                }
                Rows::Events => {
                    for r in receipts.iter().zip(&progress.done).filter(|(_, d)| !**d) {
                        let r = r.0;
                        let sql = format!(
                            "INSERT INTO {db}.{stage} SELECT * FROM {db}.events WHERE insert_id = toUUID('{}') \
                             AND retention_days = {} AND toDate(event_time) = toDate('{}')",
                            r.insert_id,
                            r.retention_days,
                            clickhouse_client::receipts::date_text(r.day)
                        );
                        self.run(&sql, &settings).map_err(fenced)?;
                    }
                }
            }
            progress.staged = true;
        }
        let source = format!("{db}.{stage}");
        for (i, r) in receipts.iter().enumerate() {
            if progress.done[i] {
                continue;
            }
            let landing = if progress.doubt[i] || matches!(rows, Rows::Events) {
                self.landing(r.insert_id, r.retention_days, r.day)?
            } else {
                Landing {
                    events: 0,
                    rollups: [0, 0],
                }
            };
            let id_setting = r.insert_id.to_string();
            let mut with_id = settings.clone();
            with_id.push(("query_id", &id_setting));
            if landing.events == 0 && landing.rollups.iter().any(|&n| n > 0) {
                // Views are pushed after `events`' part: this cannot be. Not
                // written again (that would double the roll-ups) and not
                // done either: it waits, loudly, for an operator.
                error!(insert = %r.insert_id, ?landing, "roll-ups hold an insert that events does not; holding it");
                return Err(NotLanded::Failed(Error::ClickHouse(
                    clickhouse_client::Error::Protocol(format!(
                        "insert {} is in a roll-up but not in events",
                        r.insert_id
                    )),
                )));
            } else if landing.events == 0 {
                let from = insert_rows_sql(&source, r.insert_id, r.rows, "");
                self.run(
                    &format!("INSERT INTO {db}.events SELECT * FROM {from}"),
                    &with_id,
                )
                .map_err(fenced)?;
                // Exact, and needed: a modern server skips the guard when
                // the staging table was emptied (a restart) and inserts
                // nothing, answering success.
                let after = self.landing(r.insert_id, r.retention_days, r.day)?;
                if after.events == 0 || after.rollups.contains(&0) {
                    return Err(NotLanded::Failed(Error::ClickHouse(
                        clickhouse_client::Error::Protocol(format!(
                            "insert {} answered but is not in every table ({after:?}): staging table emptied?",
                            r.insert_id
                        )),
                    )));
                }
            } else {
                for ((table, select), n) in
                    rollup_selects(&insert_rows_sql(&source, r.insert_id, r.rows, ""))
                        .iter()
                        .zip(landing.rollups)
                {
                    if n > 0 {
                        continue;
                    }
                    warn!(insert = %r.insert_id, table, partition = p, "roll-up missing an insert whose events landed; repairing it from the same rows");
                    self.run(&format!("INSERT INTO {db}.{table} {select}"), &settings)
                        .map_err(fenced)?;
                    self.metrics.rollup_repairs.fetch_add(1, Ordering::Relaxed);
                }
                let after = self.landing(r.insert_id, r.retention_days, r.day)?;
                if after.rollups.contains(&0) {
                    return Err(NotLanded::Failed(Error::ClickHouse(
                        clickhouse_client::Error::Protocol(format!(
                            "roll-up repair of insert {} answered but did not land (staging table emptied?)",
                            r.insert_id
                        )),
                    )));
                }
            }
            progress.done[i] = true;
        }
        // Empty for the next batch (a failure here only leaves rows that
        // the next staging truncates first).
        let _ = self.run(&format!("TRUNCATE TABLE {db}.{stage}"), &[]);
        progress.staged = false;
        Ok(())
    }
}

/// Settings of every write: one thread, one block (so one part per
/// partition: `min_insert_block_size_*` squash the block whole, and
/// single-level, in-memory aggregation gives each view one block), and on
/// modern servers neither asynchronous inserts, parallel view pushes nor
/// ignored view errors, whatever the user's profile says.
fn write_settings(server: ServerVersion, rows: u64) -> Vec<(&'static str, String)> {
    let mut s = vec![
        ("max_threads", "1".into()),
        ("min_insert_block_size_rows", rows.to_string()),
        ("min_insert_block_size_bytes", (1u64 << 40).to_string()),
        ("group_by_two_level_threshold", "0".into()),
        ("group_by_two_level_threshold_bytes", "0".into()),
        ("max_bytes_before_external_group_by", "0".into()),
    ];
    if (server.major, server.minor) >= (23, 8) {
        s.push(("async_insert", "0".into()));
        s.push(("parallel_view_processing", "0".into()));
        s.push(("materialized_views_ignore_errors", "0".into()));
    }
    s
}

/// Whether `name` is a staging table this code made: only such names are
/// ever put into a `DROP`.
fn is_stage_name(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix).is_some_and(|id| {
        id.len() == 32
            && id
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    })
}

/// How far one partition's part got, across attempts.
#[derive(Debug)]
pub(super) struct Progress {
    pub(super) done: Vec<bool>,
    pub(super) doubt: Vec<bool>,
    /// The rows sit in the staging table (exactly once).
    staged: bool,
    /// The last attempt got no answer: replace the staging table first.
    unknown: bool,
}

impl Progress {
    pub(super) fn new(inserts: usize, doubt: bool) -> Self {
        Self {
            done: vec![false; inserts],
            doubt: vec![doubt; inserts],
            staged: false,
            unknown: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_this_code_makes_are_dropped() {
        let prefix = stage_prefix("events", 3);
        let ok = format!("{prefix}{}", Uuid::new_v4().simple());
        assert!(is_stage_name(&ok, &prefix));
        for bad in [
            format!("{prefix}x"),
            format!("{ok}, overwatch.events"),
            format!("{prefix}{}", "A".repeat(32)),
            "events".to_string(),
        ] {
            assert!(!is_stage_name(&bad, &prefix), "{bad}");
        }
        let old = ServerVersion::parse("18.16.1").unwrap();
        assert!(!write_settings(old, 1)
            .iter()
            .any(|(k, _)| *k == "async_insert"));
        let new = ServerVersion::parse("25.8.1").unwrap();
        assert!(write_settings(new, 1)
            .iter()
            .any(|(k, _)| *k == "async_insert"));
    }
}
