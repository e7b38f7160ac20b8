//! Insert receipts and staging tables: what the sink's exactly-once protocol
//! reads and writes in ClickHouse (the argument is in
//! `crates/worker/README.md`).
//!
//! - Every sink insert writes rows of **one** ClickHouse partition of
//!   `events` (retention class × day), so it is one part, written whole or
//!   not at all; each roll-up's view turns it into one part of the roll-up.
//! - Every insert carries one more row, its **receipt**: tenant
//!   [`RECEIPT_TENANT`], `event_id` = `session_id` = `insert_id` = the
//!   insert's id, a pageview whose `path` is the id. Being a pageview, each
//!   roll-up's view writes a receipt row for it too, in the same part as the
//!   insert's own roll-up rows. So "did this insert land in `events`, in
//!   `sessions`, in `pageviews_hourly`" is one primary-key lookup per table,
//!   and the answer is exact: the part is there whole, or not at all.
//! - A sink writes into `events` (and repairs a roll-up) only by
//!   `INSERT … SELECT … FROM` its **staging table** for that broker
//!   partition, a `Memory` table. The staging table is the partition's
//!   ownership token: a new owner drops every other one (a `DROP` waits for
//!   the queries reading it), and a writer that dropped its own can never
//!   write again.
//!
//! Receipt rows are not events: every query of the query API names its
//! tenant, and an operator counting rows by hand excludes
//! `tenant_id = RECEIPT_TENANT`.

use uuid::Uuid;

use engine_core::Tier;

/// The tenant id of receipt rows. No tenant may have it (the tenant
/// registry and the config refuse it).
pub const RECEIPT_TENANT: Uuid = engine_core::tenant::RECEIPT_TENANT_ID;
/// `name` of every receipt row.
pub const RECEIPT_NAME: &str = "sink_receipt";
/// Staging tables are named `{STAGE_PREFIX}{topic hash}_{partition}_{id}`.
pub const STAGE_PREFIX: &str = "sink_stage_";

/// One insert of the sink: rows of one broker partition's records
/// `first_offset..=last_offset` that fall in one ClickHouse partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub insert_id: Uuid,
    pub topic: String,
    pub partition: i32,
    /// The records of the batch on this broker partition (all of them, not
    /// only those with rows in this insert).
    pub first_offset: i64,
    pub last_offset: i64,
    /// This insert's place among the batch's inserts on this partition, and
    /// their count: the batch is complete once its last one landed, since
    /// they land in order.
    pub index: u32,
    pub inserts: u32,
    /// Event rows (the receipt not counted).
    pub rows: u64,
    pub retention_days: u16,
    /// The ClickHouse day (`toDate(event_time)` on the server) of every row.
    pub day: u16,
    /// `event_time` of the receipt row: one of the rows' own, so that it
    /// falls in their partition whatever the server's time zone.
    pub event_time: u32,
    pub tier: Tier,
    pub written_at_us: i64,
    /// [`record_hash`] of the record at `last_offset`: what tells, when the
    /// partition is resumed, that the broker's record there is still the one
    /// stored (0: not known, as in receipts of roll-up repairs).
    pub last_hash: u64,
}

impl Receipt {
    /// `path` of the receipt row: the insert id.
    pub fn path(&self) -> String {
        self.insert_id.to_string()
    }

    /// `properties` of the receipt row (JSON read back by [`load_sql`]).
    pub fn properties(&self) -> String {
        format!(
            "{{\"topic\":\"{}\",\"first_offset\":{},\"last_offset\":{},\"index\":{},\"inserts\":{},\"rows\":{},\"last_hash\":{}}}",
            json_escape(&self.topic),
            self.first_offset,
            self.last_offset,
            self.index,
            self.inserts,
            self.rows,
            self.last_hash
        )
    }
}

fn json_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// A SQL string literal.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// `YYYY-MM-DD` of ClickHouse day number `day` (days since 1970-01-01).
pub fn date_text(day: u16) -> String {
    // Howard Hinnant's civil_from_days.
    let z = i64::from(day) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The fingerprint of a broker record: FNV-1a (64 bits) of its value. Two
/// different records of our topic differ in it but by chance (each carries
/// its own event ids and receive time); 0 is never returned (it means "not
/// known" in a receipt).
pub fn record_hash(value: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in value {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h.max(1)
}

/// A short, stable hash of the topic name for staging table names.
pub fn topic_hash(topic: &str) -> String {
    // FNV-1a, 32 bits: names stay short; a collision only shares a prefix.
    let mut h: u32 = 0x811c_9dc5;
    for b in topic.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("{h:08x}")
}

/// The name prefix of partition `partition`'s staging tables.
pub fn stage_prefix(topic: &str, partition: i32) -> String {
    format!("{STAGE_PREFIX}{}_{partition}_", topic_hash(topic))
}

/// The tables a sink reads and writes for one shard: `db.events`,
/// `db.sessions` and `db.pageviews_hourly` on one server; on a cluster the
/// shard's own `…_local` tables on the replica asked (the `Distributed`
/// tables of the same names would read every shard, each from whichever
/// replica it picks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tables {
    db: String,
    suffix: &'static str,
    /// On a cluster replica: per table (`events`, …), its `replica_path`
    /// in ZooKeeper, for [`Tables::unrecorded`].
    recorded: Vec<(String, String)>,
}

impl Tables {
    /// One server's tables in `db`.
    pub fn single(db: &str) -> Self {
        Self {
            db: db.to_string(),
            suffix: "",
            recorded: Vec::new(),
        }
    }

    /// A cluster node's own tables of its shard in `db`.
    pub fn shard_local(db: &str) -> Self {
        Self {
            db: db.to_string(),
            suffix: "_local",
            recorded: Vec::new(),
        }
    }

    /// These tables as read on one replica, whose `replica_path` of each
    /// table (`events`, `sessions`, `pageviews_hourly`, without the suffix)
    /// `paths` gives: reads leave out what [`Tables::unrecorded`] does.
    pub fn recorded_at(&self, paths: Vec<(String, String)>) -> Self {
        Self {
            recorded: paths,
            ..self.clone()
        }
    }

    /// `system.replicas` of a replica: each shard table's `replica_path`
    /// (tab-separated `table`, `replica_path` lines, the table's full name).
    pub fn replica_paths_sql(&self) -> String {
        let names: Vec<String> = ["events", "sessions", "pageviews_hourly"]
            .iter()
            .map(|t| quote(&format!("{t}{}", self.suffix)))
            .collect();
        format!(
            "SELECT table, replica_path FROM system.replicas WHERE database = {} AND table IN ({}) \
             FORMAT TabSeparated",
            quote(&self.db),
            names.join(", ")
        )
    }

    /// Parses [`Tables::replica_paths_sql`]'s answer into
    /// [`Tables::recorded_at`]'s argument: `None` unless every shard table
    /// is there.
    pub fn parse_replica_paths(&self, answer: &str) -> Option<Vec<(String, String)>> {
        let mut out = Vec::new();
        for line in answer.lines() {
            let (table, path) = line.split_once('\t')?;
            let name = table.strip_suffix(self.suffix)?;
            if !path.is_empty() {
                out.push((name.to_string(), path.to_string()));
            }
        }
        let all = ["events", "sessions", "pageviews_hourly"]
            .iter()
            .all(|t| out.iter().any(|(n, _)| n == t));
        all.then_some(out)
    }

    /// A condition (` AND …`, or empty) that leaves out of a read of `name`
    /// the parts of this replica that ZooKeeper does not record. On 18.16 an
    /// insert whose commit lost ZooKeeper (code 319, unknown status) keeps
    /// its part readable on the replica that wrote it, although the insert
    /// may not have happened, until the server's part check drops it five
    /// minutes later: a check that counted it would take the insert for
    /// landed, and lose it then. Only inserted parts (level 0) can be such
    /// a part: merges and fetches are recorded in ZooKeeper before they
    /// become active, and this schema has no mutations. Empty on one
    /// server.
    pub fn unrecorded(&self, name: &str) -> String {
        let Some((_, path)) = self.recorded.iter().find(|(t, _)| t == name) else {
            return String::new();
        };
        format!(
            " AND _part NOT IN (SELECT name FROM system.parts WHERE database = {} AND table = {} \
             AND active AND level = 0 AND name NOT IN \
             (SELECT name FROM system.zookeeper WHERE path = {}))",
            quote(&self.db),
            quote(&format!("{name}{}", self.suffix)),
            quote(&format!("{path}/parts"))
        )
    }

    /// The database.
    pub fn db(&self) -> &str {
        &self.db
    }

    /// `db.name` (one server) or `db.name_local` (a cluster node) for
    /// `events` or a roll-up.
    pub fn table(&self, name: &str) -> String {
        format!("{}.{name}{}", self.db, self.suffix)
    }

    /// The table's name without its database (`events_local` on a node).
    pub fn name(&self, base: &str) -> String {
        format!("{base}{}", self.suffix)
    }

    /// The events table.
    pub fn events(&self) -> String {
        self.table("events")
    }
}

/// `CREATE` of a staging table (`db.name`), with `events`' columns.
pub fn create_stage_sql(t: &Tables, name: &str) -> String {
    format!(
        "CREATE TABLE {}.{name} AS {} ENGINE = Memory",
        t.db(),
        t.events()
    )
}

/// The staging tables of one partition (answer: one name per line).
pub fn list_stages_sql(db: &str, prefix: &str) -> String {
    format!(
        "SELECT name FROM system.tables WHERE database = {} AND startsWith(name, {}) \
         FORMAT TabSeparated",
        quote(db),
        quote(prefix)
    )
}

/// The rows of insert `id` in `source`, failing the whole query unless
/// there are exactly `rows` of them (plus its receipt): a staging table
/// emptied by a ClickHouse restart, or filled twice, is refused rather
/// than written from.
pub fn insert_rows_sql(source: &str, id: Uuid, rows: u64, extra: &str) -> String {
    let id = quote(&id.to_string());
    let expected = rows + 1;
    format!(
        "(SELECT * FROM {source} WHERE insert_id = toUUID({id}){extra} AND \
         throwIf((SELECT count() FROM {source} WHERE insert_id = toUUID({id}){extra}) != {expected}) = 0)"
    )
}

/// Whether insert `id` (partition `retention_days` × `day`) landed in
/// `events` and in each roll-up: one line, one count per table in the order
/// `events`, then [`crate::schema::ROLLUPS`]. 0: not there; 1: there; more:
/// stored more than once.
pub fn check_sql(tables: &Tables, id: Uuid, retention_days: u16, day: u16) -> String {
    let (events, sessions, pageviews) = (
        tables.events(),
        tables.table("sessions"),
        tables.table("pageviews_hourly"),
    );
    let (ue, us, up) = (
        tables.unrecorded("events"),
        tables.unrecorded("sessions"),
        tables.unrecorded("pageviews_hourly"),
    );
    let t = quote(&RECEIPT_TENANT.to_string());
    let i = quote(&id.to_string());
    let d = quote(&date_text(day));
    format!(
        "SELECT \
         (SELECT count() FROM {events} WHERE tenant_id = toUUID({t}) AND retention_days = {retention_days} \
          AND toDate(event_time) = toDate({d}) AND session_id = toUUID({i}){ue}), \
         (SELECT count() FROM {sessions} WHERE tenant_id = toUUID({t}) AND day = toDate({d}) \
          AND session_id = toUUID({i}) AND retention_days = {retention_days}{us}), \
         (SELECT count() FROM {pageviews} WHERE tenant_id = toUUID({t}) \
          AND toDate(hour) = toDate({d}) AND path = {i} AND retention_days = {retention_days}{up}) \
         FORMAT TabSeparated"
    )
}

/// The receipts of `topic`'s partition `partition` written after
/// `after_us` (its last accepted reset, see [`epoch_sql`]) whose batch
/// reaches `from_offset` or later, at most `limit` + 1 of them (so that more
/// than `limit` shows), with their landing in each roll-up: one line each,
/// [`LoadedReceipt`] fields in order.
pub fn load_sql(
    tables: &Tables,
    topic: &str,
    partition: i32,
    after_us: i64,
    from_offset: i64,
    limit: usize,
) -> String {
    let t = quote(&RECEIPT_TENANT.to_string());
    let topic = quote(topic);
    let more = limit + 1;
    let events = tables.events();
    let u = tables.unrecorded("events");
    format!(
        "SELECT toString(session_id), retention_days, toUInt16(toDate(event_time)), \
         visitParamExtractInt(properties, 'first_offset'), broker_offset, \
         visitParamExtractUInt(properties, 'index'), visitParamExtractUInt(properties, 'inserts'), \
         visitParamExtractUInt(properties, 'rows'), received_at_us, count() \
         FROM {events} WHERE tenant_id = toUUID({t}) AND broker_partition = {partition} \
         AND broker_offset >= {from_offset} AND received_at_us > {after_us} \
         AND visitParamExtractString(properties, 'topic') = {topic}{u} \
         GROUP BY session_id, retention_days, event_time, properties, broker_offset, received_at_us \
         ORDER BY broker_offset, visitParamExtractUInt(properties, 'index') LIMIT {more} \
         FORMAT TabSeparated"
    )
}

/// `(broker_offset, event_id)` of every event row the inserts `ids`
/// (`(insert id, retention class, day)`, of partition `partition`) wrote,
/// as RowBinary: 8 + 16 bytes a row.
pub fn stored_events_sql(tables: &Tables, partition: i32, ids: &[(Uuid, u16, u16)]) -> String {
    let events = tables.events();
    let u = tables.unrecorded("events");
    let t = quote(&RECEIPT_TENANT.to_string());
    let any: Vec<String> = ids
        .iter()
        .map(|&(id, rd, day)| {
            format!(
                "(retention_days = {rd} AND toDate(event_time) = toDate({}) AND insert_id = toUUID({}))",
                quote(&date_text(day)),
                quote(&id.to_string())
            )
        })
        .collect();
    format!(
        "SELECT DISTINCT broker_offset, event_id FROM {events} WHERE broker_partition = {partition} \
         AND tenant_id != toUUID({t}) AND ({}){u} FORMAT RowBinary",
        if any.is_empty() {
            "0".to_string()
        } else {
            any.join(" OR ")
        }
    )
}

/// Bytes of one row of [`stored_events_sql`]'s answer.
pub const STORED_EVENT_ROW_BYTES: usize = 8 + 16;

/// A receipt read back by [`load_sql`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadedReceipt {
    pub insert_id: Uuid,
    pub retention_days: u16,
    pub day: u16,
    pub first_offset: i64,
    pub last_offset: i64,
    pub index: u32,
    pub inserts: u32,
    pub rows: u64,
    /// When its batch was closed (µs): every insert of one batch has the
    /// same, so with `first..=last` it names the batch.
    pub written_at_us: i64,
    /// How many times `events` holds it (more than 1: stored twice).
    pub copies: u64,
}

impl LoadedReceipt {
    /// Parses one line of [`load_sql`]'s answer.
    pub fn parse(line: &str) -> Option<Self> {
        let mut f = line.split('\t');
        let r = Self {
            insert_id: Uuid::parse_str(f.next()?).ok()?,
            retention_days: f.next()?.parse().ok()?,
            day: f.next()?.parse().ok()?,
            first_offset: f.next()?.parse().ok()?,
            last_offset: f.next()?.parse().ok()?,
            index: f.next()?.parse().ok()?,
            inserts: f.next()?.parse().ok()?,
            rows: f.next()?.parse().ok()?,
            written_at_us: f.next()?.parse().ok()?,
            copies: f.next()?.parse().ok()?,
        };
        f.next().is_none().then_some(r)
    }
}

/// The highest offset `topic`'s partition `partition` has a receipt for
/// written after `after_us`, the `last_hash` of that receipt and the count
/// of receipts: one line, three numbers (the caller reads a count of 0 as
/// "none").
pub fn max_stored_sql(tables: &Tables, topic: &str, partition: i32, after_us: i64) -> String {
    max_stored_below_sql(tables, topic, partition, after_us, i64::MAX)
}

/// [`max_stored_sql`] for receipts ending below offset `end` only.
pub fn max_stored_below_sql(
    tables: &Tables,
    topic: &str,
    partition: i32,
    after_us: i64,
    end: i64,
) -> String {
    let t = quote(&RECEIPT_TENANT.to_string());
    let events = tables.events();
    format!(
        "SELECT max(broker_offset), argMax(visitParamExtractUInt(properties, 'last_hash'), broker_offset), count() \
         FROM {events} WHERE tenant_id = toUUID({t}) \
         AND broker_partition = {partition} AND received_at_us > {after_us} AND broker_offset < {end} \
         AND visitParamExtractString(properties, 'topic') = {}{} \
         FORMAT TabSeparated",
        quote(topic),
        tables.unrecorded("events")
    )
}

/// The newest write time (µs) of any receipt of `topic`'s partition
/// `partition`, and their count: one line, two numbers.
pub fn newest_receipt_sql(tables: &Tables, topic: &str, partition: i32) -> String {
    let t = quote(&RECEIPT_TENANT.to_string());
    let events = tables.events();
    format!(
        "SELECT max(received_at_us), count() FROM {events} WHERE tenant_id = toUUID({t}) \
         AND broker_partition = {partition} AND visitParamExtractString(properties, 'topic') = {}{} \
         FORMAT TabSeparated",
        quote(topic),
        tables.unrecorded("events")
    )
}

/// The last accepted reset of `topic`'s partition `partition`: one line
/// `after_us \t from_offset`, or none.
pub fn epoch_sql(db: &str, topic: &str, partition: i32) -> String {
    format!(
        "SELECT after_us, from_offset FROM {db}.{epochs} WHERE topic = {} AND broker_partition = {partition} \
         ORDER BY after_us DESC LIMIT 1 FORMAT TabSeparated",
        quote(topic),
        epochs = crate::schema::TOPIC_EPOCHS
    )
}

/// Records an accepted reset of `topic`'s partition `partition`: receipts
/// written up to `after_us` are of the old log; the new one starts at
/// `from_offset`.
pub fn insert_epoch_sql(
    db: &str,
    topic: &str,
    partition: i32,
    after_us: i64,
    from_offset: i64,
) -> String {
    format!(
        "INSERT INTO {db}.{epochs} (topic, broker_partition, after_us, from_offset) VALUES ({}, {partition}, {after_us}, {from_offset})",
        quote(topic),
        epochs = crate::schema::TOPIC_EPOCHS
    )
}

/// Two numbers of one TabSeparated line, e.g. the answer of [`epoch_sql`].
pub fn parse_pair(answer: &str) -> Option<(i64, i64)> {
    let (a, b) = answer.trim().split_once('\t')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// The answer of [`max_stored_sql`]: `(highest offset, its receipt's
/// last_hash)`, or `None` when there is no receipt.
pub fn parse_max_stored(answer: &str) -> Option<(i64, u64)> {
    let mut f = answer.trim().split('\t');
    let (max, hash, n) = (f.next()?, f.next()?, f.next()?);
    if n == "0" || f.next().is_some() {
        return None;
    }
    Some((max.parse().ok()?, hash.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_leave_out_unrecorded_parts_on_a_cluster_replica_only() {
        let single = Tables::single("ow");
        assert_eq!(single.unrecorded("events"), "");
        let local = Tables::shard_local("ow");
        let answer = "events_local\t/t/01/events_local/replicas/r1\n\
                      sessions_local\t/t/01/sessions_local/replicas/r1\n";
        // Every shard table, or none.
        assert_eq!(local.parse_replica_paths(answer), None);
        let answer =
            format!("{answer}pageviews_hourly_local\t/t/01/pageviews_hourly_local/replicas/r1\n");
        let paths = local.parse_replica_paths(&answer).unwrap();
        let read = local.recorded_at(paths);
        let u = read.unrecorded("sessions");
        assert!(u.contains("table = 'sessions_local'"), "{u}");
        assert!(
            u.contains("path = '/t/01/sessions_local/replicas/r1/parts'"),
            "{u}"
        );
        assert!(u.contains("level = 0"), "{u}");
        assert!(
            check_sql(&read, Uuid::nil(), 30, 1)
                .matches("_part NOT IN")
                .count()
                == 3
        );
        assert!(!check_sql(&local, Uuid::nil(), 30, 1).contains("_part"));
        // The names stay those of the tables.
        assert_eq!(read.events(), "ow.events_local");
    }

    #[test]
    fn dates_match_the_calendar() {
        assert_eq!(date_text(0), "1970-01-01");
        assert_eq!(date_text(59), "1970-03-01");
        assert_eq!(date_text(11_016), "2000-02-29");
        assert_eq!(date_text(20_788), "2026-12-01");
        assert_eq!(date_text(u16::MAX), "2149-06-06");
    }

    #[test]
    fn receipts_read_back_what_they_wrote() {
        let r = Receipt {
            insert_id: Uuid::from_u128(7),
            topic: "ev\"t".into(),
            partition: 3,
            first_offset: 10,
            last_offset: 20,
            index: 1,
            inserts: 2,
            rows: 5,
            retention_days: 30,
            day: 20_788,
            event_time: 1_796_000_000,
            tier: Tier::Paid,
            written_at_us: 1,
            last_hash: 7,
        };
        assert_eq!(
            r.properties(),
            r#"{"topic":"ev\"t","first_offset":10,"last_offset":20,"index":1,"inserts":2,"rows":5,"last_hash":7}"#
        );
        let line = format!("{}\t30\t20788\t10\t20\t1\t2\t5\t1\t1", r.insert_id);
        let l = LoadedReceipt::parse(&line).unwrap();
        assert_eq!(
            (l.insert_id, l.first_offset, l.last_offset),
            (r.insert_id, 10, 20)
        );
        assert_eq!(parse_max_stored("20\t7\t3\n"), Some((20, 7)));
        assert_eq!(parse_max_stored("0\t0\t0\n"), None);
        assert_ne!(record_hash(b"a"), record_hash(b"b"));
        assert_ne!(record_hash(b""), 0);
        assert_eq!((l.index, l.inserts, l.rows, l.copies), (1, 2, 5, 1));
        assert!(LoadedReceipt::parse(&format!("{line}\textra")).is_none());
        assert!(LoadedReceipt::parse("x").is_none());
        assert_eq!(quote("a'b\\"), r"'a\'b\\'");
        assert_ne!(stage_prefix("events", 1), stage_prefix("events", 11));
        assert!(stage_prefix("events", 1).ends_with("_1_"));
    }
}
