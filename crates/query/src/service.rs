//! Running queries without blocking the edge: the shards parse and check a
//! request ([`Service::submit`]), then hand it through a bounded queue to a
//! few worker threads that talk to ClickHouse; the answer comes back on a
//! oneshot channel the shard awaits. A ClickHouse query can take seconds; a
//! shard must never wait on one.
//!
//! What a request goes through, cheapest first:
//! 1. the tenant's rate ([`admission::QUERIES_PER_SEC`], 429): every
//!    request counts, answered from the cache or not;
//! 2. validation ([`crate::request`], 400);
//! 3. the cache ([`crate::cache`]: bounded in entries, in bytes and per
//!    answer; a hit shares the cached bytes);
//! 4. the tenant's share of the queue ([`admission::TENANT_QUEUE_SHARE`]
//!    queued or running, 429), then the queue itself ([`QUERY_QUEUE`], 503);
//! 5. a worker runs it ([`crate::runner`]: a `query_id`, ClickHouse's
//!    `max_execution_time`, a kill when no answer came), unless the shard
//!    gave up waiting already.

use edge_http::ErrorCode;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use engine_core::config::ClickhouseConfig;
use futures_channel::oneshot;
use sonic_rs::{JsonContainerTrait, JsonValueTrait, Value};
use tracing::warn;
use uuid::Uuid;

pub use crate::admission::{QUERIES_PER_SEC, TENANT_QUEUE_SHARE};
pub use crate::cache::{CACHE_BYTES, CACHE_ENTRIES, CACHE_TTL_MS, MAX_CACHED_ANSWER_BYTES};

use crate::admission::{Rate, Shares, Slot};
use crate::cache::{self, Cache};
use crate::metrics::QueryMetrics;
use crate::request::{Dimension, Metric, Query};
use crate::runner::{new_query_id, Runner};
use crate::{parse, sql, QueryError};

/// Worker threads running ClickHouse queries.
pub const QUERY_WORKERS: usize = 2;
/// Queries waiting for a worker, at most (503 beyond).
pub const QUERY_QUEUE: usize = 64;
/// ClickHouse's `max_execution_time` per query, in seconds: ClickHouse stops
/// the query by itself a little before the worker stops waiting.
pub const MAX_EXECUTION_SECS: u64 = 10;
/// How long a worker waits for ClickHouse's answer, in seconds; past it the
/// query is killed (`KILL QUERY WHERE query_id = …`, [`crate::runner`]).
pub const QUERY_WAIT_SECS: u64 = MAX_EXECUTION_SECS + 5;
/// How long the shard waits for an answer after [`Service::submit`], queue
/// included, in seconds (then 503 `query_timeout`).
pub const ANSWER_WAIT_SECS: u64 = QUERY_WAIT_SECS + 5;
/// A queued query is started only with this much of the shard's wait left,
/// in seconds; its `max_execution_time` ends this long before the shard
/// stops waiting.
const MIN_RUN_SECS: u64 = 2;
/// ClickHouse threads per query (`max_threads`): the workers' queries run
/// side by side on one thread each, so a dashboard's burst cannot take every
/// core from ingest on a shared machine.
pub const QUERY_THREADS: u32 = 1;
/// ClickHouse's `max_memory_usage` per query, in bytes.
pub const MAX_MEMORY_BYTES: u64 = 1 << 30;
/// Largest answer read from ClickHouse, and largest answer body made of it,
/// in bytes (the `limit` bounds rows; this bounds their text): 413 beyond.
pub const MAX_ANSWER_BYTES: u64 = 32 << 20;

/// An HTTP answer: status and JSON body. The body is shared bytes: an
/// answer from the cache is the cached bytes, not a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
    /// `Retry-After`, in seconds.
    pub retry_after_secs: Option<u32>,
}

impl Answer {
    fn error(status: u16, code: ErrorCode, message: &str) -> Self {
        debug_assert!(code.statuses().contains(&status), "{}", code.as_str());
        let body = sonic_rs::to_vec(&sonic_rs::json!({
            "status": "error", "error": code.as_str(), "message": message
        }))
        .unwrap_or_default();
        Self {
            status,
            body: body.into(),
            retry_after_secs: None,
        }
    }

    fn retry(mut self, secs: u32) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    fn gave_up() -> Self {
        Answer::error(
            503,
            ErrorCode::QueryTimeout,
            "the query did not finish; retry later",
        )
        .retry(5)
    }
}

impl From<QueryError> for Answer {
    fn from(e: QueryError) -> Self {
        Answer::error(400, ErrorCode::InvalidQuery, &e.to_string())
    }
}

struct Job {
    tenant: Uuid,
    query: Query,
    cache_key: cache::Key,
    /// When the shard stops waiting ([`ANSWER_WAIT_SECS`] after submit).
    deadline: Instant,
    done: oneshot::Sender<Answer>,
    /// The tenant's place in the queue, given back with the job.
    _slot: Slot,
}

/// The query service shared by the shards.
#[derive(Debug)]
pub struct Service {
    jobs: SyncSender<JobBox>,
    /// The workers' end of the queue (kept here too, so that a service
    /// without workers, in tests, still queues).
    _queue: Arc<Mutex<Receiver<JobBox>>>,
    metrics: Arc<QueryMetrics>,
    cache: Arc<Mutex<Cache>>,
    rate: Rate,
    shares: Arc<Shares>,
    epoch: Instant,
}

/// A job, boxed so the channel holds pointers.
struct JobBox(Box<Job>);

impl std::fmt::Debug for JobBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Job")
    }
}

/// Either an answer now (invalid, cached, limited, saturated) or one to await.
#[derive(Debug)]
pub enum Submitted {
    Now(Answer),
    Later(oneshot::Receiver<Answer>),
}

impl Service {
    /// Starts the workers against the configured ClickHouse.
    pub fn start(ch: &ClickhouseConfig) -> std::io::Result<Arc<Self>> {
        Self::start_with(ch, QUERY_WORKERS)
    }

    fn start_with(ch: &ClickhouseConfig, workers: usize) -> std::io::Result<Arc<Self>> {
        let (tx, rx) = sync_channel::<JobBox>(QUERY_QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        let cache = Arc::new(Mutex::new(Cache::default()));
        let metrics = Arc::new(QueryMetrics::default());
        let runner = Runner::start(clickhouse_client::Client::from_config(
            ch,
            Duration::from_secs(QUERY_WAIT_SECS),
        ))?;
        for i in 0..workers {
            let rx = rx.clone();
            let cache = cache.clone();
            let metrics = metrics.clone();
            let runner = runner.clone();
            let db = ch.database.clone();
            std::thread::Builder::new()
                .name(format!("query-{i}"))
                .spawn(move || loop {
                    // A poisoned lock means another worker panicked, which
                    // aborts the process anyway (docs/guarantees.md, "Failure policy").
                    let job = match rx.lock().map(|r| r.recv()) {
                        Ok(Ok(JobBox(job))) => job,
                        _ => return,
                    };
                    work(&runner, &db, &cache, &metrics, *job);
                })?;
        }
        Ok(Arc::new(Self {
            jobs: tx,
            _queue: rx,
            metrics,
            cache,
            rate: Rate::default(),
            shares: Arc::new(Shares::default()),
            epoch: Instant::now(),
        }))
    }

    /// The service's metrics, for the exposition (`telemetry::Metrics::register`).
    pub fn metrics(&self) -> Arc<QueryMetrics> {
        self.metrics.clone()
    }

    /// Checks a request of `tenant` (already authenticated with a secret key)
    /// and queues it; `now` is Unix seconds.
    pub fn submit(&self, tenant: Uuid, body: &[u8], now: i64) -> Submitted {
        let second = self.epoch.elapsed().as_secs();
        let submitted = self.submit_at(tenant, body, now, second);
        if let Submitted::Now(a) = &submitted {
            self.metrics.answered(a.status);
        }
        submitted
    }

    /// [`Service::submit`] in the rate's `second`.
    fn submit_at(&self, tenant: Uuid, body: &[u8], now: i64, second: u64) -> Submitted {
        if !self.rate.admit(tenant, second) {
            return Submitted::Now(
                Answer::error(
                    429,
                    ErrorCode::RateLimited,
                    &format!("at most {QUERIES_PER_SEC} queries per second per tenant"),
                )
                .retry(1),
            );
        }
        let query = match parse(body, now) {
            Ok(q) => q,
            Err(e) => return Submitted::Now(e.into()),
        };
        let cache_key = cache::key(tenant, body);
        let cached = self
            .cache
            .lock()
            .ok()
            .and_then(|c| c.get(&cache_key, Instant::now()));
        if let Some(body) = cached {
            self.metrics.cache_hit();
            return Submitted::Now(Answer {
                status: 200,
                body,
                retry_after_secs: None,
            });
        }
        let Some(slot) = self.shares.take(tenant) else {
            return Submitted::Now(
                Answer::error(
                    429,
                    ErrorCode::TooManyQueries,
                    &format!(
                        "at most {TENANT_QUEUE_SHARE} queries per tenant may wait or run at once; \
                         retry when one is answered"
                    ),
                )
                .retry(1),
            );
        };
        let (done, rx) = oneshot::channel();
        let job = JobBox(Box::new(Job {
            tenant,
            query,
            cache_key,
            deadline: Instant::now() + Duration::from_secs(ANSWER_WAIT_SECS),
            done,
            _slot: slot,
        }));
        match self.jobs.try_send(job) {
            Ok(()) => Submitted::Later(rx),
            Err(TrySendError::Full(_)) => Submitted::Now(
                Answer::error(
                    503,
                    ErrorCode::QueryBackpressure,
                    "too many queries waiting; retry later",
                )
                .retry(1),
            ),
            Err(TrySendError::Disconnected(_)) => Submitted::Now(Answer::error(
                503,
                ErrorCode::QueryUnavailable,
                "the query workers stopped",
            )),
        }
    }
}

/// One job on a worker: skipped when the shard stopped waiting, else run,
/// cached when it may be, answered.
fn work(runner: &Runner, db: &str, cache: &Mutex<Cache>, metrics: &QueryMetrics, job: Job) {
    if job.done.is_canceled() {
        // The shard answered 503 and left: nobody reads this answer.
        return;
    }
    let left = job
        .deadline
        .saturating_duration_since(Instant::now())
        .as_secs();
    let answer = if left < 2 * MIN_RUN_SECS {
        Answer::gave_up()
    } else {
        let started = Instant::now();
        let execution = MAX_EXECUTION_SECS.min(left - MIN_RUN_SECS);
        let answer = run(runner, db, &job, execution);
        metrics.ran(started.elapsed().as_micros() as u64);
        answer
    };
    metrics.answered(answer.status);
    if answer.status == 200 {
        if let Ok(mut c) = cache.lock() {
            c.put(job.cache_key, answer.body.clone(), Instant::now());
        }
    }
    let _ = job.done.send(answer);
}

/// ClickHouse's codes for a query over its time or memory bound.
const TIMEOUT_EXCEEDED: u32 = 159;
const MEMORY_LIMIT_EXCEEDED: u32 = 241;

fn run(runner: &Runner, db: &str, job: &Job, execution_secs: u64) -> Answer {
    let started = Instant::now();
    let text = sql::build(&job.query, db, job.tenant);
    let memory = MAX_MEMORY_BYTES.to_string();
    let threads = QUERY_THREADS.to_string();
    let settings = [
        ("max_threads", threads.as_str()),
        ("max_memory_usage", memory.as_str()),
        // A page's panels read the same granules (a tenant's day is a few
        // granules of `events`), so all but the first skip decompressing
        // them: 30% less ClickHouse time per page, measured. ClickHouse's
        // `uncompressed_cache_size` bounds the cache.
        ("use_uncompressed_cache", "1"),
        ("output_format_json_quote_64bit_integers", "0"),
        ("output_format_json_quote_denormals", "1"),
        ("readonly", "2"),
        // On a cluster (`Distributed` names), a filter on events inside a
        // sessions query runs on each shard against its own events: a
        // session's rows all live on one shard. No effect on one server.
        ("distributed_product_mode", "local"),
    ];
    let query_id = new_query_id();
    let too_large = || {
        Answer::error(
            413,
            ErrorCode::AnswerTooLarge,
            "the answer is too large; lower `limit`",
        )
    };
    match runner.run(&query_id, &text, execution_secs, &settings) {
        Ok(out) if out.len() as u64 <= MAX_ANSWER_BYTES => {
            match shape(&job.query, &out, started.elapsed()) {
                Some(body) if body.len() as u64 <= MAX_ANSWER_BYTES => Answer {
                    status: 200,
                    body: body.into(),
                    retry_after_secs: None,
                },
                Some(_) => too_large(),
                None => {
                    warn!(tenant = %job.tenant, query_id, "query answer not understood");
                    Answer::error(
                        500,
                        ErrorCode::Internal,
                        "the query's answer could not be read",
                    )
                }
            }
        }
        Ok(_) => too_large(),
        Err(clickhouse_client::Error::Server {
            code: Some(TIMEOUT_EXCEEDED | MEMORY_LIMIT_EXCEEDED),
            ..
        }) => Answer::error(
            422,
            ErrorCode::QueryTooExpensive,
            "the query exceeded its time or memory bound; narrow the range, dimensions or filters",
        ),
        Err(clickhouse_client::Error::Connection { .. })
            if started.elapsed() >= Duration::from_secs(QUERY_WAIT_SECS) =>
        {
            // No answer within the wait: the runner killed it.
            warn!(tenant = %job.tenant, query_id, "query killed after its wait");
            Answer::gave_up()
        }
        Err(clickhouse_client::Error::Connection { .. }) => Answer::error(
            503,
            ErrorCode::ClickhouseUnavailable,
            "ClickHouse is not reachable; retry later",
        )
        .retry(5),
        Err(e) => {
            // Never echo ClickHouse's text: it may quote the query.
            warn!(tenant = %job.tenant, query_id, error = %e, "query failed");
            Answer::error(500, ErrorCode::Internal, "the query failed")
        }
    }
}

fn metric_name(m: Metric) -> String {
    match m {
        Metric::Visitors => "visitors".into(),
        Metric::Visits => "visits".into(),
        Metric::Pageviews => "pageviews".into(),
        Metric::Events => "events".into(),
        Metric::BounceRate => "bounce_rate".into(),
        Metric::VisitDuration => "visit_duration".into(),
        Metric::ViewsPerVisit => "views_per_visit".into(),
        Metric::Clicks => "clicks".into(),
        Metric::ScrollDepth => "scroll_depth".into(),
        Metric::Vital(v, p) => format!("{}_p{p}", v.column()),
    }
}

/// ClickHouse's `JSONCompact` as the API's answer:
/// `{"results":[{"dimensions":[…],"metrics":[…]}],"meta":{…}}`, metrics in
/// the order asked; a metric with no value (no vitals in range) is `null`.
fn shape(q: &Query, out: &str, elapsed: Duration) -> Option<Vec<u8>> {
    let v: Value = sonic_rs::from_str(out).ok()?;
    let dims = q.answer_dimensions();
    let mut results = Vec::new();
    for row in v.get("data")?.as_array()?.iter() {
        let row = row.as_array()?;
        let mut d: Vec<Value> = row.iter().take(dims).cloned().collect();
        if !q.breakdowns.is_empty() {
            // The breakdown comes as its index in the request.
            let i = d.first()?.as_u64()?;
            let name = Dimension::name(*q.breakdowns.get(usize::try_from(i).ok()?)?);
            d[0] = Value::from(name);
        }
        let m: Vec<Value> = row
            .iter()
            .skip(dims)
            .map(|c| {
                if c.is_number() {
                    c.clone()
                } else {
                    Value::new_null()
                }
            })
            .collect();
        results.push(sonic_rs::json!({"dimensions": d, "metrics": m}));
    }
    let meta = sonic_rs::json!({
        "metrics": q.metrics.iter().map(|m| metric_name(*m)).collect::<Vec<_>>(),
        "dimensions": if q.breakdowns.is_empty() {
            q.dimensions.iter().map(|d| Dimension::name(*d)).collect::<Vec<_>>()
        } else {
            vec!["breakdown", "value"]
        },
        "breakdowns": q.breakdowns.iter().map(|d| Dimension::name(*d)).collect::<Vec<_>>(),
        "date_range": [
            engine_core::timestamp::format_rfc3339_us(q.range.from * 1_000_000),
            engine_core::timestamp::format_rfc3339_us(q.range.to * 1_000_000),
        ],
        "timezone": q.timezone,
        "rows": results.len(),
        "elapsed_ms": elapsed.as_millis() as u64,
    });
    sonic_rs::to_vec(&sonic_rs::json!({"results": results, "meta": meta})).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-28T12:00:00Z.
    const NOW: i64 = 1_795_867_200;

    /// A service whose queue nobody takes from: queued jobs stay queued.
    fn idle_service() -> Arc<Service> {
        Service::start_with(&ClickhouseConfig::default(), 0).unwrap()
    }

    fn body(limit: u32) -> Vec<u8> {
        format!(r#"{{"metrics":["events"],"date_range":"day","limit":{limit}}}"#).into_bytes()
    }

    fn status(s: &Submitted) -> u16 {
        match s {
            Submitted::Now(a) => a.status,
            Submitted::Later(_) => 0,
        }
    }

    #[test]
    fn cached_answers_count_against_the_rate_and_share_their_bytes() {
        let svc = idle_service();
        let tenant = Uuid::from_u128(7);
        let cached = Bytes::from_static(br#"{"results":[],"meta":{}}"#);
        svc.cache
            .lock()
            .unwrap()
            .put(cache::key(tenant, &body(1)), cached.clone(), Instant::now());
        let answers: Vec<Submitted> = (0..QUERIES_PER_SEC + 10)
            .map(|_| svc.submit_at(tenant, &body(1), NOW, 3))
            .collect();
        let served = answers.iter().filter(|s| status(s) == 200).count();
        let limited = answers.iter().filter(|s| status(s) == 429).count();
        assert_eq!((served, limited), (QUERIES_PER_SEC as usize, 10));
        let Submitted::Now(first) = &answers[0] else {
            panic!("a cached answer is answered now");
        };
        assert_eq!(first.body.as_ptr(), cached.as_ptr(), "shared, not copied");
        // Another tenant's identical body is not this tenant's answer.
        let other = svc.submit_at(Uuid::from_u128(8), &body(1), NOW, 3);
        assert!(matches!(other, Submitted::Later(_)));
    }

    #[test]
    fn a_tenant_holds_at_most_its_share_of_the_queue() {
        let svc = idle_service();
        let greedy = Uuid::from_u128(1);
        let mut waiting = Vec::new();
        for n in 1..=TENANT_QUEUE_SHARE as u32 {
            let s = svc.submit_at(greedy, &body(n), NOW, 0);
            assert_eq!(status(&s), 0, "query {n} is queued");
            waiting.push(s);
        }
        let over = svc.submit_at(greedy, &body(99), NOW, 0);
        let Submitted::Now(a) = over else {
            panic!("over its share")
        };
        assert_eq!((a.status, a.retry_after_secs), (429, Some(1)));
        assert!(String::from_utf8_lossy(&a.body).contains("too_many_queries"));
        // The others fill the rest of the queue, a share each; then 503.
        let mut statuses = Vec::new();
        for t in 2..20u128 {
            for n in 1..=TENANT_QUEUE_SHARE as u32 {
                statuses.push(status(&svc.submit_at(Uuid::from_u128(t), &body(n), NOW, 0)));
            }
        }
        let queued = statuses.iter().filter(|s| **s == 0).count();
        assert_eq!(queued, QUERY_QUEUE - TENANT_QUEUE_SHARE);
        assert!(
            statuses.iter().all(|s| [0, 503].contains(s)),
            "{statuses:?}"
        );
        // A refused job gives its place back: nothing is held but the queue.
        assert_eq!(svc.shares.held(greedy), TENANT_QUEUE_SHARE);
        let held: usize = (2..20u128)
            .map(|t| svc.shares.held(Uuid::from_u128(t)))
            .sum();
        assert_eq!(held, QUERY_QUEUE - TENANT_QUEUE_SHARE);
    }

    #[test]
    fn invalid_requests_count_against_the_rate_too() {
        let svc = idle_service();
        let t = Uuid::from_u128(3);
        let statuses: Vec<u16> = (0..QUERIES_PER_SEC + 1)
            .map(|_| status(&svc.submit_at(t, b"{", NOW, 9)))
            .collect();
        assert!(statuses[..QUERIES_PER_SEC as usize]
            .iter()
            .all(|s| *s == 400));
        assert_eq!(statuses.last(), Some(&429));
    }
}
