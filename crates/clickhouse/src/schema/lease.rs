//! The migration lease: one migrator per database at a time, and a dead
//! migrator's lease taken over in seconds.
//!
//! Sinks migrate at start and the CLI migrates too; two of them running
//! migration 7 at once would each backfill the roll-ups and count every
//! pageview twice. The lease is a table only one `CREATE` can make. Its
//! holder appends a heartbeat row every [`HEARTBEAT`] while it migrates,
//! also while one statement (a backfill of minutes) runs. A lease whose
//! newest heartbeat, or whose creation where it has none yet, is older than
//! [`STALE_AFTER`] belongs to a migrator that died (`kill -9`, a lost
//! machine): the next one drops it and takes its own. A lease created a
//! moment ago counts as fresh, so a waiter that saw the old one stale does
//! not drop the new one; the window left is between a waiter's last look
//! and its `DROP`, milliseconds against [`STALE_AFTER`].
//!
//! The table uses the `Memory` engine: a restarted ClickHouse keeps the
//! table but not its rows, and the creation time then decides.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use tracing::{info, warn};

use crate::transport::Client;
use crate::Error;

/// The lease table's name, in the migrated database.
pub const TABLE: &str = "migration_lease";
/// How often the holder writes a heartbeat.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// A lease without a heartbeat for this long is taken over: six missed
/// heartbeats, so a slow ClickHouse does not hand one lease to two.
pub const STALE_AFTER: Duration = Duration::from_secs(30);
/// Between looks at a lease another migrator holds.
const POLL: Duration = Duration::from_millis(200);

/// ClickHouse's code for "table already exists".
const TABLE_EXISTS: u32 = 57;
/// ClickHouse's code for "table doesn't exist".
const UNKNOWN_TABLE: u32 = 60;
/// ClickHouse's code for "table is dropped": a read that met the lease
/// while its holder's `DROP` ran. For a waiter it means the same as
/// [`UNKNOWN_TABLE`]: the lease is going, try to take it.
const TABLE_IS_DROPPED: u32 = 218;

/// Runs `work` holding database `db`'s migration lease, heartbeating from a
/// second thread; releases the lease after, whatever `work` returned. While
/// another holds the lease it waits, or gives up with [`Error::Stopped`] once
/// `stop` says so.
pub fn with_lease<T>(
    client: &Client,
    db: &str,
    stop: &dyn Fn() -> bool,
    work: impl FnOnce() -> Result<T, Error>,
) -> Result<T, Error> {
    let holder = holder();
    acquire(client, db, &holder, stop)?;
    let beat = client.with_timeout(HEARTBEAT);
    let (holder, beat) = (&holder, &beat);
    let result = std::thread::scope(|s| {
        let (done, wait) = mpsc::channel::<()>();
        s.spawn(move || {
            while let Err(RecvTimeoutError::Timeout) = wait.recv_timeout(HEARTBEAT) {
                if let Err(e) = heartbeat(beat, db, holder) {
                    warn!(error = %e, "migration lease heartbeat failed");
                }
            }
        });
        let result = work();
        drop(done);
        result
    });
    let released = client.execute(&format!("DROP TABLE IF EXISTS {db}.{TABLE}"));
    let value = result?;
    released?;
    Ok(value)
}

/// Who holds a lease, for the log of whoever waits: host and process.
fn holder() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}:{}", host.trim(), std::process::id())
}

fn heartbeat(client: &Client, db: &str, holder: &str) -> Result<(), Error> {
    client.execute(&format!(
        "INSERT INTO {db}.{TABLE} (holder, at) VALUES ('{}', now())",
        holder.replace(['\\', '\''], "_")
    ))
}

/// Creates the lease table, waiting for (or taking over) another's.
fn acquire(client: &Client, db: &str, holder: &str, stop: &dyn Fn() -> bool) -> Result<(), Error> {
    let create = format!("CREATE TABLE {db}.{TABLE} (holder String, at DateTime) ENGINE = Memory");
    let mut waiting_on = None;
    loop {
        match client.execute(&create) {
            Ok(()) => {
                // A lease without its first heartbeat would hold the next
                // try (this process's own) for the stale time.
                return heartbeat(client, db, holder).inspect_err(|_| {
                    let _ = client.execute(&format!("DROP TABLE IF EXISTS {db}.{TABLE}"));
                });
            }
            Err(Error::Server {
                code: Some(TABLE_EXISTS),
                ..
            }) => {}
            Err(e) => return Err(e),
        }
        // Gone in between (released): try again at once.
        let Some((quiet, other)) = look(client, db)? else {
            continue;
        };
        if quiet > STALE_AFTER {
            // Look again right before dropping: a lease taken over by
            // another waiter since is fresh.
            if look(client, db)?.is_some_and(|(q, _)| q > STALE_AFTER) {
                warn!(
                    holder = %other,
                    quiet_secs = quiet.as_secs(),
                    "taking over the migration lease of a migrator that stopped heartbeating"
                );
                client.execute(&format!("DROP TABLE IF EXISTS {db}.{TABLE}"))?;
            }
            continue;
        }
        if stop() {
            return Err(Error::Stopped);
        }
        if waiting_on.as_ref() != Some(&other) {
            info!(holder = %other, "waiting for another migrator to finish");
            waiting_on = Some(other);
        }
        std::thread::sleep(POLL);
    }
}

/// How long the lease has gone without a heartbeat, and its holder; `None`
/// when there is no lease.
fn look(client: &Client, db: &str) -> Result<Option<(Duration, String)>, Error> {
    let sql = format!(
        "SELECT toUInt32(now()) - greatest(toUInt32(max(at)), \
         (SELECT toUInt32(metadata_modification_time) FROM system.tables \
         WHERE database = '{db}' AND name = '{TABLE}')), argMax(holder, at) \
         FROM {db}.{TABLE} FORMAT TabSeparated"
    );
    let answer = match client.query(&sql) {
        Ok(a) => a,
        Err(Error::Server {
            code: Some(UNKNOWN_TABLE | TABLE_IS_DROPPED),
            ..
        }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut fields = answer.trim_end_matches('\n').splitn(2, '\t');
    let quiet = fields.next().unwrap_or_default();
    let other = fields.next().unwrap_or_default();
    // `\N`: the table went between the two reads.
    Ok(quiet.parse::<i64>().ok().map(|secs| {
        let who = if other.is_empty() {
            "unknown (no heartbeat yet)"
        } else {
            other
        };
        (Duration::from_secs(secs.max(0) as u64), who.to_string())
    }))
}
