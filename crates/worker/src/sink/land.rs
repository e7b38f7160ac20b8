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

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clickhouse_client::receipts::{
    check_sql, create_stage_sql, insert_rows_sql, list_stages_sql, stage_prefix, Receipt, Tables,
};
use clickhouse_client::schema::rollup_selects;
use clickhouse_client::{Client, ServerVersion};
use engine_core::config::ClickhouseConfig;
use tracing::{error, info, warn};
use uuid::Uuid;

use super::metrics::{ShardHealth, SinkMetrics};
use crate::Error;

/// ClickHouse's "table doesn't exist".
const UNKNOWN_TABLE: u32 = 60;
/// ClickHouse errors that say "this replica cannot write now" rather than
/// "this statement is wrong": its ZooKeeper session is gone (read-only
/// tables), ZooKeeper is not reachable, or an insert's outcome was lost
/// between it and ZooKeeper. The next attempt goes to another replica.
const REPLICA_TROUBLE: [u32; 5] = [
    242, // TABLE_IS_READ_ONLY
    225, // NO_ZOOKEEPER
    999, // KEEPER_EXCEPTION
    319, // UNKNOWN_STATUS_OF_INSERT
    210, // NETWORK_ERROR
];
/// Most rounds of dropping other owners' staging tables before giving up
/// for now (each round drops all it saw; only a self-replacing owner adds).
const TAKE_OVER_ROUNDS: usize = 100;
/// Longest a take-over waits for one replica to fetch what its shard
/// acknowledged before trying the next (at most half the sink's ClickHouse
/// timeout).
const CATCH_UP_MAX: Duration = Duration::from_secs(20);
/// Between looks at a replica's fetch queue while it catches up.
const CATCH_UP_POLL: Duration = Duration::from_millis(100);
/// After a take-over failed on a shard's replicas (down, timing out), the
/// next try on that shard waits this long: the consumer thread, which
/// takes partitions over, does not block on it once per held record.
const SHARD_RETRY_AFTER: Duration = Duration::from_secs(5);
/// The shard tables whose parts a replica fetches.
const SHARD_TABLES: [&str; 3] = ["events", "sessions", "pageviews_hourly"];

/// Staging tables of each broker partition this sink owns, one per replica
/// of the partition's shard, shared by the consumer (which takes partitions
/// over) and the inserters (which replace their own after an unknown
/// outcome).
#[derive(Debug, Default)]
pub(super) struct Stages {
    /// `(partition, replica)` → staging table name on that replica.
    names: Mutex<HashMap<(i32, usize), String>>,
    /// `(partition, replica)` whose last attempt got no answer: its staging
    /// table there is replaced before that replica is written again.
    unknown: Mutex<HashSet<(i32, usize)>>,
    /// Set when a newer owner dropped one of this sink's staging tables:
    /// the consumer drops its state and rejoins the group.
    pub(super) fenced: std::sync::atomic::AtomicBool,
    /// Set when the consumer's position no longer matches its state.
    pub(super) rejoin: std::sync::atomic::AtomicBool,
}

impl Stages {
    fn get(&self, p: i32, r: usize) -> Option<String> {
        self.names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(p, r))
            .cloned()
    }

    fn set(&self, p: i32, r: usize, name: String) {
        self.names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((p, r), name);
    }

    /// Asks the consumer to drop what it holds and rejoin the group (its
    /// position no longer matches its state).
    pub(super) fn request_rejoin(&self) {
        self.rejoin.store(true, Ordering::SeqCst);
    }

    /// Whether this sink still holds a staging table of `p`.
    pub(super) fn owns(&self, p: i32) -> bool {
        self.names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .any(|&(q, _)| q == p)
    }

    /// `p`'s staging table is gone: another sink owns `p` now.
    fn forget(&self, p: i32) {
        self.names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|&(q, _), _| q != p);
        self.unknown
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|&(q, _)| q != p);
        self.fenced.store(true, Ordering::SeqCst);
    }

    fn mark_unknown(&self, p: i32, r: usize) {
        self.unknown
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((p, r));
    }

    fn is_unknown(&self, p: i32, r: usize) -> bool {
        self.unknown
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&(p, r))
    }

    fn clear_unknown(&self, p: i32, r: Option<usize>) {
        self.unknown
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|&(q, s)| q != p || r.is_some_and(|r| r != s));
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

/// Whether `e` says the replica asked cannot write now (no answer, or one
/// of [`REPLICA_TROUBLE`]), rather than that the statement is wrong.
fn replica_trouble(e: &clickhouse_client::Error) -> bool {
    !e.answered() || e.code().is_some_and(|c| REPLICA_TROUBLE.contains(&c))
}

/// The shard a broker partition's rows live on: `partition mod shards`
/// (see crates/worker/README.md, "On a cluster", for what a change of
/// either count means).
pub(super) fn shard_of(partition: i32, shards: usize) -> usize {
    usize::try_from(partition).unwrap_or(0) % shards.max(1)
}

/// Writes parts for one sink; each of its threads holds one.
pub(super) struct Lander {
    /// Per shard (`shard_of`), a client per replica, in the configured
    /// order; one shard of one server outside cluster mode.
    shards: Vec<Vec<Client>>,
    tables: Tables,
    /// Per (shard, replica), the tables as read there
    /// ([`Lander::tables_on`]).
    read_tables: Mutex<HashMap<(usize, usize), Tables>>,
    /// On a cluster: a take-over reads only from a replica that caught up,
    /// and an insert that may have landed elsewhere is written again only
    /// on a replica with no part left to fetch.
    cluster: bool,
    catch_up: Duration,
    /// Per shard, when a take-over may try it again after its replicas
    /// failed one.
    retry_after: Mutex<Vec<Option<Instant>>>,
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
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        config: &ClickhouseConfig,
        timeout: Duration,
        topic: &str,
        server: ServerVersion,
        stages: Arc<Stages>,
        metrics: Arc<SinkMetrics>,
        max_rows: usize,
    ) -> Self {
        let rows = (max_rows as u64).saturating_mul(4).max(1 << 20);
        let cluster = config.is_cluster();
        let (shards, tables) = if cluster {
            let shards = config
                .shards
                .iter()
                .map(|s| {
                    s.replicas
                        .iter()
                        .map(|u| Client::for_node(config, u.as_str(), timeout))
                        .collect()
                })
                .collect();
            (shards, Tables::shard_local(&config.database))
        } else {
            (
                vec![vec![Client::from_config(config, timeout)]],
                Tables::single(&config.database),
            )
        };
        let urls = |s: &Vec<Client>| s.iter().map(|c| c.url().to_string()).collect::<Vec<_>>();
        metrics
            .shards
            .get_or_init(|| shards.iter().map(|s| ShardHealth::new(urls(s))).collect());
        Self {
            retry_after: Mutex::new(vec![None; shards.len()]),
            shards,
            tables,
            read_tables: Mutex::new(HashMap::new()),
            cluster,
            catch_up: (timeout / 2).clamp(Duration::from_secs(1), CATCH_UP_MAX),
            topic: topic.to_string(),
            stages,
            metrics,
            drop_suffix: server.drop_suffix(),
            write_settings: write_settings(server, rows, cluster),
        }
    }

    /// The staging tables this sink holds.
    pub(super) fn stages(&self) -> &Stages {
        &self.stages
    }

    /// How many shards the rows are spread over (1 on one server).
    pub(super) fn shard_count(&self) -> usize {
        self.shards.len()
    }

    fn shard(&self, p: i32) -> usize {
        shard_of(p, self.shards.len())
    }

    fn health(&self, shard: usize) -> Option<&ShardHealth> {
        self.metrics.shards.get().and_then(|s| s.get(shard))
    }

    /// The replica of `p`'s shard written (and read) now.
    fn active(&self, p: i32) -> usize {
        let shard = self.shard(p);
        let n = self.shards[shard].len();
        self.health(shard)
            .map_or(0, |h| h.active.load(Ordering::Relaxed))
            % n
    }

    /// Moves `p`'s shard on from replica `from` to its next one.
    fn fail_over(&self, p: i32, from: usize, e: &clickhouse_client::Error) {
        let shard = self.shard(p);
        let n = self.shards[shard].len();
        if n < 2 {
            return;
        }
        let next = (from + 1) % n;
        if let Some(h) = self.health(shard) {
            if h.active
                .compare_exchange(from, next, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                self.metrics
                    .replica_failovers
                    .fetch_add(1, Ordering::Relaxed);
                warn!(
                    shard = shard + 1,
                    from = self.shards[shard][from].url(),
                    to = self.shards[shard][next].url(),
                    error = %e,
                    "a replica failed; writing the shard's partitions to the next one"
                );
            }
        }
    }

    /// A client for reading `p`'s rows on replica `r` of its shard (the one
    /// [`Lander::take_over`] found caught up), and the tables to read.
    pub(super) fn reader(&self, p: i32, r: usize) -> Result<(Client, Tables), Error> {
        let shard = self.shard(p);
        let replicas = &self.shards[shard];
        let r = r % replicas.len();
        Ok((replicas[r].clone(), self.tables_on(p, r)?))
    }

    /// The tables as read on replica `r` of `p`'s shard. On a cluster reads
    /// leave out the parts ZooKeeper does not record
    /// ([`Tables::unrecorded`]): the replica's ZooKeeper paths are asked
    /// once.
    fn tables_on(&self, p: i32, r: usize) -> Result<Tables, clickhouse_client::Error> {
        if !self.cluster {
            return Ok(self.tables.clone());
        }
        let shard = self.shard(p);
        let cached = self
            .read_tables
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(shard, r))
            .cloned();
        if let Some(t) = cached {
            return Ok(t);
        }
        let answer = self.run(p, r, &self.tables.replica_paths_sql(), &[])?;
        let paths = self.tables.parse_replica_paths(&answer).ok_or_else(|| {
            clickhouse_client::Error::Protocol(format!(
                "{} does not list every replicated shard table in system.replicas: {answer:?}",
                self.shards[shard][r].url()
            ))
        })?;
        let t = self.tables.recorded_at(paths);
        self.read_tables
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((shard, r), t.clone());
        Ok(t)
    }

    fn new_stage_name(&self, p: i32) -> String {
        format!(
            "{}{}",
            stage_prefix(&self.topic, p),
            Uuid::new_v4().simple()
        )
    }

    fn seen(&self, shard: usize, r: usize, ok: bool) {
        if !ok {
            self.metrics.insert_failures.fetch_add(1, Ordering::Relaxed);
        }
        let up = match self.metrics.shards.get() {
            Some(all) => {
                if let Some(h) = all.get(shard) {
                    h.seen(r, ok);
                }
                // Up while some shard can be written: one shard down is
                // `ShardDown`, not the whole of ClickHouse.
                all.iter().any(|h| !h.down())
            }
            None => ok,
        };
        self.metrics.clickhouse_up.store(up, Ordering::Release);
    }

    /// Runs `sql` on replica `r` of `p`'s shard.
    fn run(
        &self,
        p: i32,
        r: usize,
        sql: &str,
        settings: &[(&str, &str)],
    ) -> Result<String, clickhouse_client::Error> {
        let shard = self.shard(p);
        let res = self.shards[shard][r].query_with_settings(sql, settings);
        self.seen(shard, r, res.is_ok());
        res
    }

    /// Takes partition `p` over: on every replica of its shard, a staging
    /// table of this sink's own, then every other one of `p` there dropped
    /// (each `DROP` waits for the queries reading it), until a listing shows
    /// only this sink's. From then on no earlier owner can write `p`'s
    /// records through any replica. On a cluster a replica is then found
    /// that has fetched every part its shard acknowledged; the receipts may
    /// be read only from the replica returned ([`Lander::reader`]). Every
    /// replica must answer: a partition changing hands while a replica of
    /// its shard is down waits for it (its token there could otherwise
    /// outlive the take-over). After a shard's replicas failed a take-over,
    /// the next on that shard fails at once for [`SHARD_RETRY_AFTER`].
    pub(super) fn take_over(&self, p: i32) -> Result<usize, Error> {
        let shard = self.shard(p);
        let now = Instant::now();
        if let Some(at) =
            self.retry_after.lock().unwrap_or_else(|e| e.into_inner())[shard].filter(|&at| now < at)
        {
            return Err(Error::Refused(format!(
                "partition {p}: shard {} failed a take-over; trying it again in {} ms",
                shard + 1,
                at.duration_since(now).as_millis()
            )));
        }
        let result = self.take_over_now(p);
        let trouble = matches!(&result, Err(Error::ClickHouse(e)) if replica_trouble(e));
        self.retry_after.lock().unwrap_or_else(|e| e.into_inner())[shard] =
            trouble.then(|| Instant::now() + SHARD_RETRY_AFTER);
        result
    }

    fn take_over_now(&self, p: i32) -> Result<usize, Error> {
        let shard = self.shard(p);
        for r in 0..self.shards[shard].len() {
            // Always a new one: an own one from an earlier assignment may
            // have been dropped by whoever owned `p` in between.
            let mine = self.new_stage_name(p);
            self.run(p, r, &create_stage_sql(&self.tables, &mine), &[])?;
            self.stages.set(p, r, mine);
        }
        for r in 0..self.shards[shard].len() {
            self.fence_others(p, r)?;
        }
        // Every earlier attempt of this sink on `p` ended with the DROPs.
        self.stages.clear_unknown(p, None);
        if self.cluster {
            return self.caught_up_replica(p);
        }
        Ok(0)
    }

    /// Drops every staging table of `p` on replica `r` but this sink's.
    fn fence_others(&self, p: i32, r: usize) -> Result<(), Error> {
        let db = self.tables.db();
        let Some(mine) = self.stages.get(p, r) else {
            return Err(Error::Fenced(p));
        };
        let prefix = stage_prefix(&self.topic, p);
        let list = list_stages_sql(db, &prefix);
        for _ in 0..TAKE_OVER_ROUNDS {
            let names = self.run(p, r, &list, &[])?;
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
                    p,
                    r,
                    &format!("DROP TABLE IF EXISTS {db}.{other}{}", self.drop_suffix),
                    &[],
                )?;
                self.metrics.fences.fetch_add(1, Ordering::Relaxed);
                info!(
                    partition = p,
                    replica = self.shards[self.shard(p)][r].url(),
                    stage = other,
                    "dropped an earlier owner's staging table"
                );
            }
        }
        Err(Error::ClickHouse(clickhouse_client::Error::Protocol(
            format!("partition {p}: staging tables kept appearing over {TAKE_OVER_ROUNDS} rounds"),
        )))
    }

    /// Parts replica `r` of `p`'s shard has yet to fetch from another
    /// replica (its replication queue's `GET_PART` entries for the shard's
    /// tables; merges do not count), plus one for each shard table whose
    /// replication log it has not pulled in full, or that is read-only (no
    /// ZooKeeper session): a part another replica committed shows in the
    /// queue only once the log entry naming it is pulled (`log_pointer`,
    /// the next entry to pull, past `log_max_index`, the newest; both 0
    /// before the first insert), and each table pulls its own log.
    fn pending_fetches(&self, p: i32, r: usize) -> Result<u64, clickhouse_client::Error> {
        let names: Vec<String> = SHARD_TABLES
            .iter()
            .map(|t| clickhouse_client::receipts::quote(&self.tables.name(t)))
            .collect();
        let (db, names) = (
            clickhouse_client::receipts::quote(self.tables.db()),
            names.join(", "),
        );
        let answer = self.run(
            p,
            r,
            &format!(
                "SELECT \
                 (SELECT count() FROM system.replication_queue WHERE database = {db} AND table IN ({names}) \
                  AND type = 'GET_PART'), \
                 (SELECT countIf(is_readonly OR is_session_expired \
                   OR (log_pointer <= log_max_index AND NOT (log_pointer = 0 AND log_max_index = 0))) \
                  FROM system.replicas WHERE database = {db} AND table IN ({names})) \
                 FORMAT TabSeparated"
            ),
            &[],
        )?;
        let n: Vec<u64> = answer
            .trim()
            .split('\t')
            .filter_map(|v| v.parse().ok())
            .collect();
        match n[..] {
            [fetches, behind] => Ok(fetches.saturating_add(behind)),
            _ => Err(clickhouse_client::Error::Protocol(format!(
                "replication queue count: {answer:?}"
            ))),
        }
    }

    /// A replica of `p`'s shard that has fetched every part its shard
    /// acknowledged (an empty fetch queue), the one written now first, each
    /// given the catch-up time; it becomes the one written. None: the
    /// take-over fails and the partition is held (a replica that lacks parts
    /// another acknowledged would read their receipts as absent).
    fn caught_up_replica(&self, p: i32) -> Result<usize, Error> {
        let shard = self.shard(p);
        let n = self.shards[shard].len();
        let first = self.active(p);
        let mut last = None;
        for k in 0..n {
            let r = (first + k) % n;
            let until = Instant::now() + self.catch_up;
            loop {
                match self.pending_fetches(p, r) {
                    Ok(0) => {
                        if let Some(h) = self.health(shard) {
                            h.active.store(r, Ordering::Relaxed);
                        }
                        return Ok(r);
                    }
                    Ok(left) => {
                        last = Some(Error::Refused(format!(
                            "partition {p}: replica {} still has {left} parts to fetch",
                            self.shards[shard][r].url()
                        )));
                    }
                    Err(e) => {
                        last = Some(e.into());
                        break;
                    }
                }
                if Instant::now() >= until {
                    break;
                }
                std::thread::sleep(CATCH_UP_POLL);
            }
            warn!(
                partition = p,
                replica = self.shards[shard][r].url(),
                "replica not caught up; trying the next"
            );
        }
        Err(last.unwrap_or_else(|| {
            Error::Refused(format!("partition {p}: its shard lists no replica"))
        }))
    }

    /// Replaces this sink's staging table of `p` on replica `r` by a new,
    /// empty one, so that an attempt whose outcome is unknown has ended
    /// (the `DROP` waited for it) or can never run. The new one counts only
    /// if the old one was still there to drop: otherwise a newer owner has
    /// `p`.
    fn replace_own(&self, p: i32, r: usize) -> Result<(), NotLanded> {
        let db = self.tables.db();
        let Some(old) = self.stages.get(p, r) else {
            return Err(NotLanded::Fenced);
        };
        let new = self.new_stage_name(p);
        self.run(p, r, &create_stage_sql(&self.tables, &new), &[])?;
        match self.run(
            p,
            r,
            &format!("DROP TABLE {db}.{old}{}", self.drop_suffix),
            &[],
        ) {
            Ok(_) => {
                self.stages.set(p, r, new);
                self.stages.clear_unknown(p, Some(r));
                self.metrics.self_fences.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                let _ = self.run(
                    p,
                    r,
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

    /// Whether the shard of some partition in `partitions` has a replica
    /// that answers now (each shard asked once, replica by replica; the
    /// answers go into the shard's health). A partition stalled on a shard
    /// that is down stalls with whichever sink owns it: moving it is of no
    /// use.
    pub(super) fn any_shard_reachable(&self, partitions: &[i32]) -> bool {
        let mut asked = vec![false; self.shards.len()];
        for &p in partitions {
            let s = self.shard(p);
            if std::mem::replace(&mut asked[s], true) {
                continue;
            }
            for (r, c) in self.shards[s].iter().enumerate() {
                let ok = c.ping();
                if let Some(h) = self.health(s) {
                    h.seen(r, ok);
                }
                if ok {
                    return true;
                }
            }
        }
        false
    }

    /// Whether any sink runs a query on the staging tables of `partitions`
    /// now, on any replica (an owner that is merely slow does; a partition
    /// nobody owns has none).
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
        self.shards.iter().flatten().any(|c| {
            c.query_with_settings(&sql, &[])
                .map_or(true, |n| n.trim() != "0")
        })
    }

    /// What `events` and the roll-ups hold of insert `id` of partition
    /// `p`, on replica `r` of its shard.
    pub(super) fn landing_on(
        &self,
        p: i32,
        r: usize,
        id: Uuid,
        retention_days: u16,
        day: u16,
    ) -> Result<Landing, Error> {
        let tables = self.tables_on(p, r)?;
        let answer = self.run(p, r, &check_sql(&tables, id, retention_days, day), &[])?;
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

    /// On a cluster, before writing insert `id` that may have landed on
    /// another replica (`checked`: its receipts were read because an
    /// attempt failed, or it is a repair): replica `r` must have no part
    /// left to fetch. A part another replica acknowledged and `r` has not
    /// fetched reads as absent here, and a copy written now would be
    /// deduplicated against it only while its block id is still in the
    /// shard's deduplication window; once the window moved on (a dead
    /// replica, a long wait), it would be stored twice. So the insert waits
    /// until `r` has fetched everything (the part may then be there).
    fn fetched_all(&self, p: i32, r: usize, id: Uuid, checked: bool) -> Result<(), NotLanded> {
        if !self.cluster || !checked {
            return Ok(());
        }
        match self.pending_fetches(p, r)? {
            0 => Ok(()),
            n => Err(NotLanded::Failed(Error::ClickHouse(
                clickhouse_client::Error::Protocol(format!(
                    "insert {id} may have landed on another replica: waiting until {} has fetched its {n} parts before writing it again",
                    self.shards[self.shard(p)][r].url()
                )),
            ))),
        }
    }

    fn is_own_stage_gone(&self, e: &clickhouse_client::Error, stage: &str) -> bool {
        e.code() == Some(UNKNOWN_TABLE) && e.to_string().contains(stage)
    }

    /// Lands the inserts `receipts` of broker partition `p` (in order),
    /// their rows staged from `rows`, on the replica of its shard written
    /// now. `done[i]` marks the ones already landed in full (kept across
    /// calls); `doubt[i]` the ones that may have landed in part, whose
    /// receipts are read first. Returns when all landed, or the first
    /// failure (the caller backs off and calls again); a failure of the
    /// replica itself moves the next call to the shard's next replica,
    /// which gets the same bytes (block deduplication of the shard's
    /// replicated tables makes a copy the first replica landed after all
    /// a no-op; see crates/worker/README.md, "On a cluster").
    pub(super) fn land(
        &self,
        p: i32,
        receipts: &[Receipt],
        rows: Rows<'_>,
        progress: &mut Progress,
    ) -> Result<(), NotLanded> {
        self.land_at(p, None, receipts, rows, progress)
    }

    /// [`Lander::land`] on replica `r` only (a take-over's repair, on the
    /// replica it read): no failover.
    pub(super) fn land_on(
        &self,
        p: i32,
        r: usize,
        receipts: &[Receipt],
        rows: Rows<'_>,
        progress: &mut Progress,
    ) -> Result<(), NotLanded> {
        self.land_at(p, Some(r), receipts, rows, progress)
    }

    fn land_at(
        &self,
        p: i32,
        pinned: Option<usize>,
        receipts: &[Receipt],
        rows: Rows<'_>,
        progress: &mut Progress,
    ) -> Result<(), NotLanded> {
        let r = pinned.unwrap_or_else(|| self.active(p));
        let mut result = Ok(());
        if self.stages.is_unknown(p, r) {
            // An attempt on this replica may still run: it ends (or can
            // never run) before this one starts.
            result = self.replace_own(p, r);
            progress.staged = None;
        }
        if result.is_ok() {
            result = self.land_staged(p, r, receipts, &rows, progress);
        }
        if let Err(NotLanded::Failed(Error::ClickHouse(e))) = &result {
            if !e.answered() {
                self.stages.mark_unknown(p, r);
            }
            progress.staged = None;
            for (d, done) in progress.doubt.iter_mut().zip(&progress.done) {
                *d = !done;
            }
            if pinned.is_none() && replica_trouble(e) {
                self.fail_over(p, r, e);
            }
        }
        result
    }

    fn land_staged(
        &self,
        p: i32,
        r: usize,
        receipts: &[Receipt],
        rows: &Rows<'_>,
        progress: &mut Progress,
    ) -> Result<(), NotLanded> {
        let (db, t) = (self.tables.db(), &self.tables);
        let stage = self.stages.get(p, r).ok_or(NotLanded::Fenced)?;
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
        let shard = self.shard(p);
        if progress.staged != Some(r) {
            self.run(p, r, &format!("TRUNCATE TABLE {db}.{stage}"), &[])
                .map_err(fenced)?;
            match rows {
                Rows::Block(bytes) => {
                    let res = self.shards[shard][r].query_with_body_settings(
                        &format!("INSERT INTO {db}.{stage} FORMAT Native"),
                        bytes,
                        &settings,
                    );
                    self.seen(shard, r, res.is_ok());
                    res.map_err(fenced)?;
                }
                Rows::Events => {
                    // Only rows ZooKeeper records: a roll-up repaired from
                    // a part the server drops later would outlive it.
                    let unrecorded = self
                        .tables_on(p, r)
                        .map_err(|e| NotLanded::Failed(e.into()))?
                        .unrecorded("events");
                    for rc in receipts.iter().zip(&progress.done).filter(|(_, d)| !**d) {
                        let rc = rc.0;
                        let sql = format!(
                            "INSERT INTO {db}.{stage} SELECT * FROM {} WHERE insert_id = toUUID('{}') \
                             AND retention_days = {} AND toDate(event_time) = toDate('{}'){unrecorded}",
                            t.events(),
                            rc.insert_id,
                            rc.retention_days,
                            clickhouse_client::receipts::date_text(rc.day)
                        );
                        self.run(p, r, &sql, &settings).map_err(fenced)?;
                    }
                }
            }
            progress.staged = Some(r);
        }
        let source = format!("{db}.{stage}");
        for (i, rc) in receipts.iter().enumerate() {
            if progress.done[i] {
                continue;
            }
            let checked = progress.doubt[i] || matches!(rows, Rows::Events);
            // Whatever the shard acknowledged is on `r` before its receipts
            // are read here, so absent means absent.
            self.fetched_all(p, r, rc.insert_id, checked)?;
            let landing = if checked {
                self.landing_on(p, r, rc.insert_id, rc.retention_days, rc.day)?
            } else {
                Landing {
                    events: 0,
                    rollups: [0, 0],
                }
            };
            let id_setting = rc.insert_id.to_string();
            let mut with_id = settings.clone();
            with_id.push(("query_id", &id_setting));
            if landing.events == 0 && landing.rollups.iter().any(|&n| n > 0) {
                // Views are pushed after `events`' part: this cannot be. Not
                // written again (that would double the roll-ups) and not
                // done either: it waits, loudly, for an operator.
                error!(insert = %rc.insert_id, ?landing, "roll-ups hold an insert that events does not; holding it");
                return Err(NotLanded::Failed(Error::ClickHouse(
                    clickhouse_client::Error::Protocol(format!(
                        "insert {} is in a roll-up but not in events",
                        rc.insert_id
                    )),
                )));
            } else if landing.events == 0 {
                let from = insert_rows_sql(&source, rc.insert_id, rc.rows, "");
                self.run(
                    p,
                    r,
                    &format!("INSERT INTO {} SELECT * FROM {from}", t.events()),
                    &with_id,
                )
                .map_err(fenced)?;
                // Exact, and needed: a modern server skips the guard when
                // the staging table was emptied (a restart) and inserts
                // nothing, answering success. On a cluster it also catches
                // a copy deduplicated against a part another replica
                // landed that this one has not fetched yet: the insert
                // waits until it has (or that replica answers again).
                let after = self.landing_on(p, r, rc.insert_id, rc.retention_days, rc.day)?;
                if after.events == 0 || after.rollups.contains(&0) {
                    return Err(NotLanded::Failed(Error::ClickHouse(
                        clickhouse_client::Error::Protocol(format!(
                            "insert {} answered but is not in every table ({after:?}): staging table emptied, \
                             or deduplicated against a part of another replica not fetched yet?",
                            rc.insert_id
                        )),
                    )));
                }
            } else {
                for ((table, select), n) in
                    rollup_selects(&insert_rows_sql(&source, rc.insert_id, rc.rows, ""))
                        .iter()
                        .zip(landing.rollups)
                {
                    if n > 0 {
                        continue;
                    }
                    warn!(insert = %rc.insert_id, table, partition = p, "roll-up missing an insert whose events landed; repairing it from the same rows");
                    self.run(
                        p,
                        r,
                        &format!("INSERT INTO {} {select}", t.table(table)),
                        &settings,
                    )
                    .map_err(fenced)?;
                    self.metrics.rollup_repairs.fetch_add(1, Ordering::Relaxed);
                }
                let after = self.landing_on(p, r, rc.insert_id, rc.retention_days, rc.day)?;
                if after.rollups.contains(&0) {
                    return Err(NotLanded::Failed(Error::ClickHouse(
                        clickhouse_client::Error::Protocol(format!(
                            "roll-up repair of insert {} answered but did not land (staging table emptied?)",
                            rc.insert_id
                        )),
                    )));
                }
            }
            progress.done[i] = true;
        }
        // Empty for the next batch (a failure here only leaves rows that
        // the next staging truncates first).
        let _ = self.run(p, r, &format!("TRUNCATE TABLE {db}.{stage}"), &[]);
        progress.staged = None;
        Ok(())
    }
}

/// Settings of every write: one thread, one block (so one part per
/// partition: `min_insert_block_size_*` squash the block whole, and
/// single-level, in-memory aggregation gives each view one block), and on
/// modern servers neither asynchronous inserts, parallel view pushes nor
/// ignored view errors, whatever the user's profile says.
fn write_settings(server: ServerVersion, rows: u64, cluster: bool) -> Vec<(&'static str, String)> {
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
    if (server.major, server.minor) >= (24, 7) {
        // A retried block the table deduplicates is deduplicated in the
        // views too, rather than skipped there (18.16 skips it: the
        // receipts' roll-up repair covers that).
        s.push((
            "deduplicate_blocks_in_dependent_materialized_views",
            "1".into(),
        ));
    }
    if cluster {
        // One replica acknowledges; see crates/worker/README.md for why
        // not a quorum.
        s.push(("insert_quorum", "0".into()));
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
    /// The replica whose staging table holds the rows (exactly once).
    staged: Option<usize>,
}

impl Progress {
    pub(super) fn new(inserts: usize, doubt: bool) -> Self {
        Self {
            done: vec![false; inserts],
            doubt: vec![doubt; inserts],
            staged: None,
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
        let has = |s: Vec<(&str, String)>, key: &str| s.iter().any(|(k, _)| *k == key);
        assert!(!has(write_settings(old, 1, false), "async_insert"));
        assert!(!has(
            write_settings(old, 1, true),
            "deduplicate_blocks_in_dependent_materialized_views"
        ));
        assert!(has(write_settings(old, 1, true), "insert_quorum"));
        assert!(!has(write_settings(old, 1, false), "insert_quorum"));
        let new = ServerVersion::parse("25.8.1").unwrap();
        assert!(has(write_settings(new, 1, false), "async_insert"));
        assert!(has(
            write_settings(new, 1, false),
            "deduplicate_blocks_in_dependent_materialized_views"
        ));
        // Partition p's rows live on shard p mod shards.
        assert_eq!(shard_of(0, 2), 0);
        assert_eq!(shard_of(5, 2), 1);
        assert_eq!(shard_of(7, 1), 0);
        assert_eq!(shard_of(-1, 3), 0);
    }
}
