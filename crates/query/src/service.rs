//! Running queries without blocking the edge: the shards parse and check a
//! request ([`Service::submit`]: validation, cache, per-tenant rate), then
//! hand it through a bounded queue to a few worker threads that talk to
//! ClickHouse; the answer comes back on a oneshot channel the shard awaits.
//! A ClickHouse query can take seconds; a shard must never wait on one.

use std::collections::HashMap;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use engine_core::config::ClickhouseConfig;
use futures_channel::oneshot;
use sonic_rs::{JsonContainerTrait, JsonValueTrait, Value};
use tracing::warn;
use uuid::Uuid;

use crate::metrics::QueryMetrics;
use crate::request::{Dimension, Metric, Query};
use crate::{parse, sql, QueryError};

/// Worker threads running ClickHouse queries.
pub const QUERY_WORKERS: usize = 2;
/// Queries waiting for a worker, at most (503 beyond).
pub const QUERY_QUEUE: usize = 64;
/// ClickHouse's `max_execution_time` per query, in seconds.
pub const MAX_EXECUTION_SECS: u64 = 10;
/// ClickHouse threads per query (`max_threads`): the workers' queries run
/// side by side on one thread each, so a dashboard's burst cannot take every
/// core from ingest on a shared machine.
pub const QUERY_THREADS: u32 = 1;
/// ClickHouse's `max_memory_usage` per query, in bytes.
pub const MAX_MEMORY_BYTES: u64 = 1 << 30;
/// How long an identical query (same tenant, same body) is answered from the
/// cache, in ms.
pub const CACHE_TTL_MS: u64 = 5_000;
/// Cached answers kept, at most.
pub const CACHE_ENTRIES: usize = 1_024;
/// Queries a tenant may start per second (429 beyond).
pub const QUERIES_PER_SEC: u32 = 50;
/// Largest answer read from ClickHouse (the `limit` bounds rows; this bounds
/// their text).
pub const MAX_ANSWER_BYTES: u64 = 32 << 20;

/// An HTTP answer: status and JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
    /// `Retry-After`, in seconds.
    pub retry_after_secs: Option<u32>,
}

impl Answer {
    fn error(status: u16, code: &str, message: &str) -> Self {
        let body = sonic_rs::to_vec(&sonic_rs::json!({
            "status": "error", "error": code, "message": message
        }))
        .unwrap_or_default();
        Self {
            status,
            body,
            retry_after_secs: None,
        }
    }

    fn retry(mut self, secs: u32) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }
}

impl From<QueryError> for Answer {
    fn from(e: QueryError) -> Self {
        Answer::error(400, "invalid_query", &e.to_string())
    }
}

struct Job {
    tenant: Uuid,
    query: Query,
    cache_key: (Uuid, Vec<u8>),
    done: oneshot::Sender<Answer>,
}

/// Answers by (tenant, request body), with when they were made.
type Cache = Mutex<HashMap<(Uuid, Vec<u8>), (Instant, Answer)>>;

/// The query service shared by the shards.
#[derive(Debug)]
pub struct Service {
    jobs: SyncSender<JobBox>,
    metrics: Arc<QueryMetrics>,
    cache: Arc<Cache>,
    rates: Mutex<HashMap<Uuid, (u64, u32)>>,
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
        let (tx, rx) = sync_channel::<JobBox>(QUERY_QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        let cache = Arc::new(Mutex::new(HashMap::new()));
        let metrics = Arc::new(QueryMetrics::default());
        for i in 0..QUERY_WORKERS {
            let rx = rx.clone();
            let cache = cache.clone();
            let metrics = metrics.clone();
            let client = clickhouse_client::Client::from_config(
                ch,
                Duration::from_secs(MAX_EXECUTION_SECS + 5),
            );
            let db = ch.database.clone();
            std::thread::Builder::new()
                .name(format!("query-{i}"))
                .spawn(move || loop {
                    // A poisoned lock means another worker panicked, which
                    // aborts the process anyway (README, "Failure policy").
                    let job = match rx.lock().map(|r| r.recv()) {
                        Ok(Ok(JobBox(job))) => job,
                        _ => return,
                    };
                    let started = Instant::now();
                    let answer = run(&client, &db, &job);
                    metrics.ran(started.elapsed().as_micros() as u64);
                    metrics.answered(answer.status);
                    if answer.status == 200 {
                        if let Ok(mut c) = cache.lock() {
                            let now = Instant::now();
                            c.retain(|_, (at, _)| now.duration_since(*at) < ttl());
                            if c.len() < CACHE_ENTRIES {
                                c.insert(job.cache_key, (now, answer.clone()));
                            }
                        }
                    }
                    let _ = job.done.send(answer);
                })?;
        }
        Ok(Arc::new(Self {
            jobs: tx,
            metrics,
            cache,
            rates: Mutex::new(HashMap::new()),
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
        let submitted = self.submit_inner(tenant, body, now);
        if let Submitted::Now(a) = &submitted {
            self.metrics.answered(a.status);
        }
        submitted
    }

    fn submit_inner(&self, tenant: Uuid, body: &[u8], now: i64) -> Submitted {
        let query = match parse(body, now) {
            Ok(q) => q,
            Err(e) => return Submitted::Now(e.into()),
        };
        let cache_key = (tenant, body.to_vec());
        if let Ok(c) = self.cache.lock() {
            if let Some((at, a)) = c.get(&cache_key) {
                if at.elapsed() < ttl() {
                    self.metrics.cache_hit();
                    return Submitted::Now(a.clone());
                }
            }
        }
        if !self.admit(tenant) {
            return Submitted::Now(
                Answer::error(
                    429,
                    "rate_limited",
                    &format!("at most {QUERIES_PER_SEC} queries per second per tenant"),
                )
                .retry(1),
            );
        }
        let (done, rx) = oneshot::channel();
        let job = JobBox(Box::new(Job {
            tenant,
            query,
            cache_key,
            done,
        }));
        match self.jobs.try_send(job) {
            Ok(()) => Submitted::Later(rx),
            Err(TrySendError::Full(_)) => Submitted::Now(
                Answer::error(
                    503,
                    "query_backpressure",
                    "too many queries waiting; retry later",
                )
                .retry(1),
            ),
            Err(TrySendError::Disconnected(_)) => Submitted::Now(Answer::error(
                503,
                "query_unavailable",
                "the query workers stopped",
            )),
        }
    }

    /// A fixed one-second window per tenant.
    fn admit(&self, tenant: Uuid) -> bool {
        let second = self.epoch.elapsed().as_secs();
        let Ok(mut rates) = self.rates.lock() else {
            return false;
        };
        if rates.len() > 10_000 {
            rates.retain(|_, (s, _)| *s == second);
        }
        let (s, n) = rates.entry(tenant).or_insert((second, 0));
        if *s != second {
            *s = second;
            *n = 0;
        }
        *n += 1;
        *n <= QUERIES_PER_SEC
    }
}

fn ttl() -> Duration {
    Duration::from_millis(CACHE_TTL_MS)
}

/// ClickHouse's codes for a query over its time or memory bound.
const TIMEOUT_EXCEEDED: u32 = 159;
const MEMORY_LIMIT_EXCEEDED: u32 = 241;

fn run(client: &clickhouse_client::Client, db: &str, job: &Job) -> Answer {
    let started = Instant::now();
    let text = sql::build(&job.query, db, job.tenant);
    let time = MAX_EXECUTION_SECS.to_string();
    let memory = MAX_MEMORY_BYTES.to_string();
    let threads = QUERY_THREADS.to_string();
    let settings = [
        ("max_execution_time", time.as_str()),
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
    ];
    match client.query_with_settings(&text, &settings) {
        Ok(out) if out.len() as u64 <= MAX_ANSWER_BYTES => {
            match shape(&job.query, &out, started.elapsed()) {
                Some(body) => Answer {
                    status: 200,
                    body,
                    retry_after_secs: None,
                },
                None => {
                    warn!(tenant = %job.tenant, "query answer not understood");
                    Answer::error(500, "internal", "the query's answer could not be read")
                }
            }
        }
        Ok(_) => Answer::error(
            413,
            "answer_too_large",
            "the answer is too large; lower `limit`",
        ),
        Err(clickhouse_client::Error::Server {
            code: Some(TIMEOUT_EXCEEDED | MEMORY_LIMIT_EXCEEDED),
            ..
        }) => Answer::error(
            422,
            "query_too_expensive",
            "the query exceeded its time or memory bound; narrow the range, dimensions or filters",
        ),
        Err(clickhouse_client::Error::Connection { .. }) => Answer::error(
            503,
            "clickhouse_unavailable",
            "ClickHouse is not reachable; retry later",
        )
        .retry(5),
        Err(e) => {
            // Never echo ClickHouse's text: it may quote the query.
            warn!(tenant = %job.tenant, error = %e, "query failed");
            Answer::error(500, "internal", "the query failed")
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
