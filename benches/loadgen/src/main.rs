//! `loadgen`: a fixed-rate HTTP/1.1 load generator for `POST /ingest` that
//! corrects for coordinated omission, in the manner of wrk2.
//!
//! # Coordinated omission
//!
//! A closed-loop load generator ("send, wait for the answer, send the next")
//! coordinates with the server it measures: when the server stalls, the client
//! stops sending, so the requests that *would* have arrived during the stall
//! are never issued and never measured. A 2-second pause then shows up as one
//! slow sample among thousands of fast ones, and the high percentiles look far
//! better than what real users (who do not politely wait) would see.
//!
//! This tool runs an open loop instead. Request `i` has an *intended* start
//! time fixed in advance, `t0 + i * interval`, where `interval` is derived from
//! the target rate. Its latency is measured from that intended start to the
//! moment its response has been read completely, not from when it was actually
//! written. If the server (or this client's connection) falls behind, requests
//! go out late, back to back, and each one is charged for the time it spent
//! waiting to be sent: a stall is reflected in every request scheduled during
//! it, exactly as a constant-rate stream of clients would experience it.
//!
//! # Model
//!
//! One OS thread per connection, each with a blocking keep-alive
//! [`TcpStream`] (`TCP_NODELAY`). Connection `k` of `C` owns requests
//! `i ≡ k (mod C)`; it sleeps until a request's intended time when it is
//! ahead, and sends immediately when it is behind. Each thread records into its
//! own [`Histogram`] (µs, 1 µs..60 s, 3 significant figures), merged at the end.
//! Requests of the warm-up period run on the same schedule but are not
//! recorded. Batch bodies are generated before the run starts, so the
//! generator does no JSON work while measuring.
//!
//! # Output
//!
//! `key: value` lines on stdout (target and achieved rates, counts by status,
//! latency percentiles in ms, average event size). The process exits non-zero
//! when fewer than 99% of the measured requests were answered `200`.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use clap::Parser;
use hdrhistogram::Histogram;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use uuid::Uuid;

/// Highest trackable latency, µs (60 s).
const MAX_LATENCY_US: u64 = 60_000_000;
/// Significant figures kept by the histograms.
const SIGFIG: u8 = 3;
/// Fraction of `200` responses required for a zero exit status.
const MIN_OK_RATIO: f64 = 0.99;
/// How much of a non-`200` body is kept as a sample for the report.
const SAMPLE_BYTES: usize = 300;

/// Fixed-rate load generator for `POST /ingest`, corrected for coordinated omission.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version, about)]
struct Args {
    /// Target URL (plain `http://host:port/path` only).
    #[arg(long, default_value = "http://127.0.0.1:8080/ingest")]
    url: String,
    /// Value of the `Authorization` header.
    #[arg(
        long,
        default_value = "Bearer 00000000-0000-0000-0000-000000000000:secret"
    )]
    auth: String,
    /// Tenant UUID written into every event's `tenant_id`.
    #[arg(long, default_value = "00000000-0000-0000-0000-000000000000")]
    tenant: Uuid,
    /// Target rate in EVENTS per second (requests/s = rate / events-per-batch).
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Events in each batch (request body).
    #[arg(long, default_value_t = 100)]
    events_per_batch: usize,
    /// Measured duration, in seconds (after the warm-up).
    #[arg(long, default_value_t = 30)]
    duration_secs: u64,
    /// Warm-up duration, in seconds: same schedule, not recorded.
    #[arg(long, default_value_t = 3)]
    warmup_secs: u64,
    /// Number of keep-alive connections (one thread each).
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Number of distinct pre-generated batch bodies, used in turn.
    #[arg(long, default_value_t = 64)]
    bodies: usize,
    /// Socket connect/read/write timeout, in seconds.
    #[arg(long, default_value_t = 30)]
    timeout_secs: u64,
    /// Print the full HdrHistogram percentile table (values in ms).
    #[arg(long)]
    print_histogram: bool,
    /// Generate every request afresh (new event ids), so a downstream dedup
    /// does not drop repeats; costs ~100 µs of generation per request.
    #[arg(long)]
    unique_ids: bool,
    /// Wire format of the batches: `native` (`POST /ingest`), `segment`
    /// (a Segment batch, the write key as the Basic user) or `posthog` (a
    /// PostHog batch, the key as `api_key`): the same events in each
    /// (`engine_core::sample`). Point `--url` at the matching path.
    #[arg(long, default_value = "native")]
    format: Format,
    /// The write key of `segment` and `posthog` batches.
    #[arg(long, default_value = "pk_development")]
    key: String,
}

/// The wire format of the generated batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Native,
    Segment,
    Posthog,
}

/// Where to send requests, from `--url`.
#[derive(Debug, Clone)]
struct Target {
    /// `host[:port]` as written in the URL, for the `Host` header.
    authority: String,
    host: String,
    port: u16,
    /// Path and query, starting with `/`.
    path: String,
}

fn parse_url(url: &str) -> anyhow::Result<Target> {
    let rest = match url.split_at_checked(7) {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http://") => rest,
        _ => bail!("--url must start with http:// (plain HTTP only): {url}"),
    };
    let (authority, path) = match rest.find(['/', '?']).and_then(|i| rest.split_at_checked(i)) {
        Some((authority, path)) if path.starts_with('/') => (authority, path.to_string()),
        Some((authority, query)) => (authority, format!("/{query}")),
        None => (rest, "/".to_string()),
    };
    ensure!(!authority.is_empty(), "--url has no host: {url}");
    ensure!(
        !authority.contains('@'),
        "--url must not carry credentials: {url}"
    );
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .with_context(|| format!("unterminated IPv6 address in --url: {url}"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().with_context(|| format!("bad port in {url}"))?,
            None if after.is_empty() => 80,
            None => bail!("bad authority in --url: {url}"),
        };
        (host.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (
                h.to_string(),
                p.parse().with_context(|| format!("bad port in {url}"))?,
            ),
            None => (authority.to_string(), 80),
        }
    };
    ensure!(!host.is_empty(), "--url has no host: {url}");
    Ok(Target {
        authority: authority.to_string(),
        host,
        port,
        path,
    })
}

/// One pre-generated batch: its complete HTTP request and size facts.
#[derive(Debug)]
struct Batch {
    request: Vec<u8>,
    body_len: usize,
    events_json_len: usize,
}

/// Standard base64 of `bytes` (the Basic header of a Segment batch).
fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(A[(n >> shift) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The `Authorization` header of a batch in `format`.
fn auth_of(format: Format, auth: &str, key: &str) -> String {
    match format {
        Format::Segment => format!("Basic {}", base64(format!("{key}:").as_bytes())),
        _ => auth.to_string(),
    }
}

/// Generates batch `b`: one session, `events` events cycling through the types.
fn make_batch(
    b: usize,
    events: usize,
    tenant: &Uuid,
    target: &Target,
    (format, auth, key): (Format, &str, &str),
) -> Batch {
    let session = Uuid::new_v4();
    let now = OffsetDateTime::now_utc();
    let now = now.replace_nanosecond(0).unwrap_or(now);
    let timestamp = now.format(&Rfc3339).unwrap_or_else(|_| now.to_string());
    let mut body = String::with_capacity(events * 300 + 64);
    body.push_str(match format {
        Format::Native => r#"{"events":["#,
        Format::Segment => r#"{"batch":["#,
        Format::Posthog => r#"{"api_key":""#,
    });
    if format == Format::Posthog {
        body.push_str(key);
        body.push_str(r#"","batch":["#);
    }
    let mut events_json_len = 0;
    for j in 0..events {
        if j > 0 {
            body.push(',');
        }
        let n = b * events + j;
        let ev = match format {
            Format::Native => engine_core::sample::event_json(n, tenant, &session, &timestamp),
            Format::Segment => engine_core::sample::segment_json(n, &session, &timestamp),
            Format::Posthog => engine_core::sample::posthog_json(n, &session, &timestamp),
        };
        events_json_len += ev.len();
        body.push_str(&ev);
    }
    body.push_str("]}");
    let auth = auth_of(format, auth, key);
    // A PostHog batch carries its key in the body only.
    let auth_line = if format == Format::Posthog {
        String::new()
    } else {
        format!("Authorization: {auth}\r\n")
    };
    let mut request = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n{}Content-Length: {}\r\n\r\n",
        target.path,
        target.authority,
        auth_line,
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body.as_bytes());
    Batch {
        request,
        body_len: body.len(),
        events_json_len,
    }
}

/// Run-wide settings shared by every connection thread.
#[derive(Debug)]
struct Plan {
    addr: SocketAddr,
    timeout: Duration,
    batches: Vec<Batch>,
    connections: usize,
    /// Requests per second.
    request_rate: f64,
    /// Requests `0..warmup` are not recorded.
    warmup: u64,
    /// Total requests scheduled (warm-up included).
    total: u64,
    /// With `--unique-ids`: what each fresh request is made from.
    fresh: Option<Fresh>,
}

/// Inputs of [`make_batch`] for requests generated during the run.
#[derive(Debug)]
struct Fresh {
    events: usize,
    tenant: Uuid,
    target: Target,
    auth: String,
    format: Format,
    key: String,
}

impl Plan {
    /// Intended start of request `i`, relative to `t0`.
    fn offset(&self, i: u64) -> Duration {
        Duration::from_secs_f64(i as f64 / self.request_rate)
    }
}

/// What one connection thread measured.
#[derive(Debug)]
struct WorkerReport {
    all: Histogram<u64>,
    ok: Histogram<u64>,
    not_ok: Histogram<u64>,
    statuses: BTreeMap<u16, u64>,
    transport_errors: u64,
    first_error: Option<String>,
    non_ok_sample: Option<(u16, String)>,
    reconnects: u64,
    /// Completion time of the last measured request.
    last_done: Option<Instant>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, SIGFIG).expect("valid histogram bounds")
}

/// A keep-alive connection with its read buffer.
#[derive(Debug)]
struct Conn {
    reader: BufReader<TcpStream>,
    line: Vec<u8>,
    body: Vec<u8>,
}

/// A failed exchange; `stale` when the server closed a reused connection
/// before sending any byte of a response (safe to retry on a fresh one).
#[derive(Debug)]
struct Failure {
    stale: bool,
    err: io::Error,
}

impl From<io::Error> for Failure {
    fn from(err: io::Error) -> Self {
        Self { stale: false, err }
    }
}

/// A complete response: status and whether the connection may be reused.
#[derive(Debug, Clone, Copy)]
struct Response {
    status: u16,
    keep_alive: bool,
}

fn eof(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("connection closed {what}"),
    )
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

impl Conn {
    fn connect(addr: &SocketAddr, timeout: Duration) -> io::Result<Self> {
        let stream = TcpStream::connect_timeout(addr, timeout)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(Self {
            reader: BufReader::with_capacity(16 * 1024, stream),
            line: Vec::with_capacity(256),
            body: Vec::with_capacity(4 * 1024),
        })
    }

    /// Reads one line (through `\n`) into `self.line`; `Ok(false)` on EOF.
    fn read_line(&mut self) -> io::Result<bool> {
        self.line.clear();
        let n = self.reader.read_until(b'\n', &mut self.line)?;
        if n == 0 {
            return Ok(false);
        }
        if self.line.last() != Some(&b'\n') {
            return Err(eof("mid-line"));
        }
        Ok(true)
    }

    /// Appends exactly `n` body bytes to `self.body`.
    fn read_exact_body(&mut self, n: u64) -> io::Result<()> {
        let read = (&mut self.reader).take(n).read_to_end(&mut self.body)?;
        if (read as u64) < n {
            return Err(eof("mid-body"));
        }
        Ok(())
    }

    fn read_chunked_body(&mut self) -> io::Result<()> {
        loop {
            if !self.read_line()? {
                return Err(eof("in chunked body"));
            }
            let line = String::from_utf8_lossy(&self.line);
            let size = line.split(';').next().unwrap_or("").trim();
            let size = u64::from_str_radix(size, 16)
                .map_err(|_| invalid(format!("bad chunk size {size:?}")))?;
            if size == 0 {
                // Trailers, up to the empty line.
                loop {
                    if !self.read_line()? {
                        return Err(eof("in chunk trailer"));
                    }
                    if self.line.trim_ascii().is_empty() {
                        return Ok(());
                    }
                }
            }
            self.read_exact_body(size)?;
            if !self.read_line()? {
                return Err(eof("after chunk"));
            }
        }
    }

    /// Sends one request and reads its complete response.
    fn round_trip(&mut self, request: &[u8]) -> Result<Response, Failure> {
        if let Err(err) = self.reader.get_mut().write_all(request) {
            let stale = matches!(
                err.kind(),
                io::ErrorKind::BrokenPipe
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
            );
            return Err(Failure { stale, err });
        }
        let mut first = true;
        loop {
            // Status line.
            match self.read_line() {
                Ok(true) => {}
                Ok(false) => {
                    return Err(Failure {
                        stale: first,
                        err: eof("before the response"),
                    })
                }
                Err(err) if first && err.kind() == io::ErrorKind::ConnectionReset => {
                    return Err(Failure { stale: true, err })
                }
                Err(err) => return Err(err.into()),
            }
            first = false;
            let status_line = String::from_utf8_lossy(&self.line).trim_end().to_string();
            let mut parts = status_line.split_ascii_whitespace();
            let version = parts.next().unwrap_or("");
            let status: u16 = parts
                .next()
                .and_then(|s| s.parse().ok())
                .filter(|_| version.starts_with("HTTP/1."))
                .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;
            let mut keep_alive = version == "HTTP/1.1";

            // Headers.
            let mut content_length: Option<u64> = None;
            let mut chunked = false;
            loop {
                if !self.read_line()? {
                    return Err(eof("in headers").into());
                }
                if self.line.trim_ascii().is_empty() {
                    break;
                }
                let line = String::from_utf8_lossy(&self.line);
                let Some((name, value)) = line.split_once(':') else {
                    continue;
                };
                let (name, value) = (name.trim(), value.trim());
                if name.eq_ignore_ascii_case("content-length") {
                    content_length = Some(
                        value
                            .parse()
                            .map_err(|_| invalid(format!("bad Content-Length {value:?}")))?,
                    );
                } else if name.eq_ignore_ascii_case("transfer-encoding") {
                    chunked = value.to_ascii_lowercase().contains("chunked");
                } else if name.eq_ignore_ascii_case("connection") {
                    let v = value.to_ascii_lowercase();
                    if v.contains("close") {
                        keep_alive = false;
                    } else if v.contains("keep-alive") {
                        keep_alive = true;
                    }
                }
            }

            // Body.
            self.body.clear();
            if (100..200).contains(&status) {
                continue; // Interim response; the real one follows.
            }
            if status == 204 || status == 304 {
                // No body.
            } else if chunked {
                self.read_chunked_body()?;
            } else if let Some(n) = content_length {
                self.read_exact_body(n)?;
            } else {
                self.reader.read_to_end(&mut self.body)?;
                keep_alive = false;
            }
            return Ok(Response { status, keep_alive });
        }
    }
}

/// Sends `request` on `slot`'s connection, (re)connecting as needed. A reused
/// connection that the server had already closed is retried once.
fn exchange(
    slot: &mut Option<Conn>,
    plan: &Plan,
    request: &[u8],
    reconnects: &mut u64,
) -> io::Result<(u16, Option<String>)> {
    loop {
        let reused = slot.is_some();
        let conn = match slot {
            Some(c) => c,
            None => {
                *reconnects += 1;
                slot.insert(Conn::connect(&plan.addr, plan.timeout)?)
            }
        };
        match conn.round_trip(request) {
            Ok(resp) => {
                let sample = (resp.status != 200).then(|| {
                    let n = conn.body.len().min(SAMPLE_BYTES);
                    String::from_utf8_lossy(&conn.body[..n]).into_owned()
                });
                if !resp.keep_alive {
                    *slot = None;
                }
                return Ok((resp.status, sample));
            }
            Err(f) => {
                *slot = None;
                if !(f.stale && reused) {
                    return Err(f.err);
                }
                // The server closed an idle keep-alive connection: retry once
                // on a fresh one (`reused` is false on the next pass).
            }
        }
    }
}

/// The loop of connection `k`: requests `k, k + C, k + 2C, ...`.
fn worker(k: usize, plan: Arc<Plan>, mut slot: Option<Conn>, t0: Instant) -> WorkerReport {
    let mut report = WorkerReport {
        all: histogram(),
        ok: histogram(),
        not_ok: histogram(),
        statuses: BTreeMap::new(),
        transport_errors: 0,
        first_error: None,
        non_ok_sample: None,
        reconnects: 0,
        last_done: None,
    };
    let mut i = k as u64;
    while i < plan.total {
        let intended = t0 + plan.offset(i);
        let now = Instant::now();
        if intended > now {
            thread::sleep(intended - now);
        }
        let fresh = plan.fresh.as_ref().map(|f| {
            make_batch(
                i as usize,
                f.events,
                &f.tenant,
                &f.target,
                (f.format, &f.auth, &f.key),
            )
        });
        let batch = fresh
            .as_ref()
            .unwrap_or(&plan.batches[(i as usize) % plan.batches.len()]);
        let outcome = exchange(&mut slot, &plan, &batch.request, &mut report.reconnects);
        let done = Instant::now();
        if i >= plan.warmup {
            // Latency from the INTENDED start: the coordinated-omission correction.
            let us = u64::try_from(done.saturating_duration_since(intended).as_micros())
                .unwrap_or(u64::MAX)
                .max(1);
            report.last_done = Some(done);
            match outcome {
                Ok((status, sample)) => {
                    report.all.saturating_record(us);
                    *report.statuses.entry(status).or_default() += 1;
                    if status == 200 {
                        report.ok.saturating_record(us);
                    } else {
                        report.not_ok.saturating_record(us);
                        if report.non_ok_sample.is_none() {
                            report.non_ok_sample = Some((status, sample.unwrap_or_default()));
                        }
                    }
                }
                Err(e) => {
                    report.transport_errors += 1;
                    if report.first_error.is_none() {
                        report.first_error = Some(e.to_string());
                    }
                }
            }
        }
        i += plan.connections as u64;
    }
    report
}

fn ms(us: u64) -> f64 {
    us as f64 / 1_000.0
}

/// Prints `h` as the classic HdrHistogram percentile distribution, in ms.
fn print_percentile_table(h: &Histogram<u64>) {
    println!(
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    for v in h.iter_quantiles(5) {
        total += v.count_since_last_iteration();
        let q = v.quantile_iterated_to();
        let value = ms(v.value_iterated_to());
        if q < 1.0 {
            println!("{value:12.3} {q:2.12} {total:10} {:14.2}", 1.0 / (1.0 - q));
        } else {
            println!("{value:12.3} {q:2.12} {total:10}");
        }
    }
    // Sub-buckets per bucket: the power of two covering 2 * 10^sigfig.
    let sub_buckets = (2.0 * 10f64.powi(i32::from(h.sigfig())))
        .log2()
        .ceil()
        .exp2();
    println!(
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]",
        ms_f(h.mean()),
        ms_f(h.stdev())
    );
    println!(
        "#[Max     = {:12.3}, Total count    = {:12}]",
        ms(h.max()),
        h.len()
    );
    println!(
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        h.buckets(),
        sub_buckets
    );
}

fn ms_f(us: f64) -> f64 {
    us / 1_000.0
}

/// Prints `prefix_p50_ms: ...` lines for `h`.
fn print_latency(prefix: &str, h: &Histogram<u64>) {
    if h.is_empty() {
        println!("{prefix}_count: 0");
        return;
    }
    for (name, q) in [
        ("p50", 0.50),
        ("p90", 0.90),
        ("p99", 0.99),
        ("p99.9", 0.999),
    ] {
        println!("{prefix}_{name}_ms: {:.3}", ms(h.value_at_quantile(q)));
    }
    println!("{prefix}_max_ms: {:.3}", ms(h.max()));
    println!("{prefix}_mean_ms: {:.3}", ms_f(h.mean()));
}

fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    ensure!(args.rate > 0, "--rate must be positive");
    ensure!(
        args.events_per_batch > 0,
        "--events-per-batch must be positive"
    );
    ensure!(args.connections > 0, "--connections must be positive");
    ensure!(args.duration_secs > 0, "--duration-secs must be positive");
    ensure!(args.bodies > 0, "--bodies must be positive");
    ensure!(args.timeout_secs > 0, "--timeout-secs must be positive");

    let target = parse_url(&args.url)?;
    let addr = (target.host.as_str(), target.port)
        .to_socket_addrs()
        .with_context(|| format!("resolving {}", target.authority))?
        .next()
        .with_context(|| format!("{} resolved to no address", target.authority))?;
    let timeout = Duration::from_secs(args.timeout_secs);

    // Bodies first, so no JSON is produced while measuring.
    let batches: Vec<Batch> = (0..args.bodies)
        .map(|b| {
            make_batch(
                b,
                args.events_per_batch,
                &args.tenant,
                &target,
                (args.format, &args.auth, &args.key),
            )
        })
        .collect();
    let (body_len, events_json_len) = (batches[0].body_len, batches[0].events_json_len);
    let avg_event = events_json_len as f64 / args.events_per_batch as f64;
    let avg_event_wire = body_len as f64 / args.events_per_batch as f64;
    if args.format == Format::Native && !(200.0..=300.0).contains(&avg_event) {
        eprintln!("warning: average event size {avg_event:.1} B is not ~250-280 B");
    }

    let request_rate = args.rate as f64 / args.events_per_batch as f64;
    let warmup = (args.warmup_secs as f64 * request_rate).round() as u64;
    let measured = ((args.duration_secs as f64 * request_rate).round() as u64).max(1);
    let plan = Arc::new(Plan {
        addr,
        timeout,
        batches,
        connections: args.connections,
        request_rate,
        warmup,
        total: warmup + measured,
        fresh: args.unique_ids.then(|| Fresh {
            events: args.events_per_batch,
            tenant: args.tenant,
            target: target.clone(),
            auth: args.auth.clone(),
            format: args.format,
            key: args.key.clone(),
        }),
    });

    println!(
        "loadgen: url={} addr={addr} connections={} events_per_batch={} duration_secs={} warmup_secs={}",
        args.url, args.connections, args.events_per_batch, args.duration_secs, args.warmup_secs
    );
    println!("bodies: {}", args.bodies);
    println!("body_bytes: {body_len}");
    println!("avg_bytes_per_event: {avg_event:.1}");
    println!("avg_body_bytes_per_event: {avg_event_wire:.1}");
    println!("target_events_per_sec: {}", args.rate);
    println!("target_requests_per_sec: {request_rate:.2}");
    println!("requests_warmup: {warmup}");
    println!("requests_scheduled: {measured}");

    // Open every connection before the clock starts.
    let mut conns = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        conns.push(
            Conn::connect(&addr, timeout)
                .with_context(|| format!("connecting to {addr} ({})", target.authority))?,
        );
    }

    let t0 = Instant::now() + Duration::from_millis(50);
    let measure_start = t0 + plan.offset(warmup);
    let handles: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(k, conn)| {
            let plan = Arc::clone(&plan);
            thread::Builder::new()
                .name(format!("conn-{k}"))
                .spawn(move || worker(k, plan, Some(conn), t0))
        })
        .collect::<io::Result<_>>()
        .context("spawning connection threads")?;

    let mut all = histogram();
    let mut ok = histogram();
    let mut not_ok = histogram();
    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    let mut transport_errors = 0u64;
    let mut reconnects = 0u64;
    let mut first_error = None;
    let mut non_ok_sample = None;
    let mut last_done: Option<Instant> = None;
    for h in handles {
        let r = h
            .join()
            .map_err(|_| anyhow::anyhow!("a connection thread panicked"))?;
        all.add(&r.all).context("merging histograms")?;
        ok.add(&r.ok).context("merging histograms")?;
        not_ok.add(&r.not_ok).context("merging histograms")?;
        for (status, n) in r.statuses {
            *statuses.entry(status).or_default() += n;
        }
        transport_errors += r.transport_errors;
        reconnects += r.reconnects;
        first_error = first_error.or(r.first_error);
        non_ok_sample = non_ok_sample.or(r.non_ok_sample);
        last_done = last_done.max(r.last_done);
    }

    let responses: u64 = statuses.values().sum();
    let ok_count = statuses.get(&200).copied().unwrap_or(0);
    let attempted = responses + transport_errors;
    let elapsed = last_done
        .map(|d| d.saturating_duration_since(measure_start))
        .unwrap_or_default()
        .as_secs_f64()
        .max(1e-9);
    let epb = args.events_per_batch as f64;

    println!("measured_secs: {elapsed:.3}");
    println!(
        "achieved_requests_per_sec: {:.2}",
        responses as f64 / elapsed
    );
    println!(
        "achieved_events_per_sec: {:.1}",
        responses as f64 * epb / elapsed
    );
    println!("ok_events_per_sec: {:.1}", ok_count as f64 * epb / elapsed);
    println!("responses: {responses}");
    for (status, n) in &statuses {
        println!("status_{status}: {n}");
    }
    println!("non_200: {}", responses - ok_count);
    println!("transport_errors: {transport_errors}");
    println!("reconnects: {reconnects}");
    let ok_ratio = if attempted == 0 {
        0.0
    } else {
        ok_count as f64 / attempted as f64
    };
    println!("ok_ratio_pct: {:.3}", ok_ratio * 100.0);
    if let Some(e) = &first_error {
        println!("first_transport_error: {e}");
    }
    if let Some((status, body)) = &non_ok_sample {
        println!("sample_non_200: status={status} body={body:?}");
    }
    // Latency of every response (any status), from its intended start.
    print_latency("latency", &all);
    if !not_ok.is_empty() {
        print_latency("latency_200", &ok);
        print_latency("latency_non_200", &not_ok);
    }
    if args.print_histogram {
        println!();
        print_percentile_table(&all);
    }

    if ok_ratio < MIN_OK_RATIO {
        eprintln!(
            "FAIL: {ok_count} of {attempted} requests answered 200 ({:.2}% < {:.0}%)",
            ok_ratio * 100.0,
            MIN_OK_RATIO * 100.0
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_and_the_compat_batches() {
        assert_eq!(base64(b"pk_development:"), "cGtfZGV2ZWxvcG1lbnQ6");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"a"), "YQ==");
        let target = parse_url("http://127.0.0.1:1/v1/batch").unwrap();
        for format in [Format::Segment, Format::Posthog] {
            let b = make_batch(0, 5, &Uuid::nil(), &target, (format, "", "pk_x"));
            let text = String::from_utf8(b.request).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            assert!(body.starts_with('{') && body.ends_with("]}"), "{body}");
            assert_eq!(body.matches("\"timestamp\"").count(), 5, "{body}");
            assert_eq!(head.contains("Basic "), format == Format::Segment);
        }
    }

    #[test]
    fn parses_urls() {
        let t = parse_url("http://127.0.0.1:18080/ingest").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("127.0.0.1", 18080));
        assert_eq!(
            (t.authority.as_str(), t.path.as_str()),
            ("127.0.0.1:18080", "/ingest")
        );
        let t = parse_url("HTTP://localhost").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("localhost", 80, "/")
        );
        let t = parse_url("http://[::1]:9000/a?b=1").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("::1", 9000, "/a?b=1")
        );
        assert!(parse_url("https://x/ingest").is_err());
        assert!(parse_url("http://:80/").is_err());
        assert!(parse_url("http://x:port/").is_err());
    }

    #[test]
    fn events_are_about_280_bytes() {
        let target = parse_url("http://127.0.0.1:8080/ingest").unwrap();
        let b = make_batch(
            0,
            100,
            &Uuid::nil(),
            &target,
            (Format::Native, "Bearer x", ""),
        );
        let avg = b.events_json_len as f64 / 100.0;
        assert!((200.0..=300.0).contains(&avg), "{avg}");
        let text = String::from_utf8(b.request).unwrap();
        assert!(text.starts_with("POST /ingest HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"));
        assert!(text.ends_with("]}"));
    }

    #[test]
    fn reads_responses_over_a_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).unwrap();
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .unwrap();
            let _ = s.read(&mut buf).unwrap();
            s.write_all(
                b"HTTP/1.1 429 Too Many\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            )
            .unwrap();
            let _ = s.read(&mut buf).unwrap();
            s.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
                .unwrap();
        });
        let mut c = Conn::connect(&addr, Duration::from_secs(5)).unwrap();
        let r = c.round_trip(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!((r.status, r.keep_alive), (200, true));
        let r = c.round_trip(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!((r.status, r.keep_alive), (429, true));
        assert_eq!(c.body, b"abc");
        let r = c.round_trip(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!((r.status, r.keep_alive), (200, false));
        server.join().unwrap();
    }

    #[test]
    fn worker_keeps_the_schedule_and_reconnects() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // Answers 3 requests per connection, then closes it (forcing reconnects).
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(s) = stream else { return };
                thread::spawn(move || {
                    let mut r = BufReader::new(s.try_clone().unwrap());
                    let mut s = s;
                    for n in 0..3 {
                        let mut len = 0usize;
                        loop {
                            let mut line = String::new();
                            if r.read_line(&mut line).unwrap_or(0) == 0 {
                                return;
                            }
                            if let Some(v) = line.strip_prefix("Content-Length: ") {
                                len = v.trim().parse().unwrap();
                            }
                            if line == "\r\n" {
                                break;
                            }
                        }
                        let mut body = vec![0; len];
                        r.read_exact(&mut body).unwrap();
                        let close = if n == 2 { "Connection: close\r\n" } else { "" };
                        let _ = s.write_all(
                            format!("HTTP/1.1 200 OK\r\n{close}Content-Length: 2\r\n\r\nok")
                                .as_bytes(),
                        );
                    }
                });
            }
        });
        let target = parse_url(&format!("http://{addr}/ingest")).unwrap();
        let plan = Arc::new(Plan {
            addr,
            timeout: Duration::from_secs(5),
            batches: (0..4)
                .map(|b| {
                    make_batch(
                        b,
                        5,
                        &Uuid::nil(),
                        &target,
                        (Format::Native, "Bearer x", ""),
                    )
                })
                .collect(),
            connections: 2,
            request_rate: 200.0,
            warmup: 4,
            total: 24,
            fresh: None,
        });
        let t0 = Instant::now();
        let reports: Vec<WorkerReport> = (0..2)
            .map(|k| {
                let plan = Arc::clone(&plan);
                thread::spawn(move || worker(k, plan, None, t0))
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect();
        // 24 requests at 200/s: the last is intended at 115 ms.
        assert!(t0.elapsed() >= Duration::from_millis(115));
        for r in &reports {
            assert_eq!(r.transport_errors, 0, "{:?}", r.first_error);
            assert_eq!(r.statuses.get(&200), Some(&10));
            assert_eq!(r.all.len(), 10);
            assert!(r.reconnects >= 4, "{}", r.reconnects);
        }
    }
}
