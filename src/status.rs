//! The status endpoint of a sink-only node: `GET /health`, `/health/live`,
//! `/health/ready`, `/metrics` and `/debug/latency` on `host:port`.
//!
//! A node running the ingest role serves these from its HTTP shards; a sink
//! has no shards, so this small blocking server answers instead. One request
//! per connection, served in turn: scrapes and probes are rare and cheap.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use api::http::probe;
use engine_core::config::Config;
use telemetry::Metrics;
use tracing::debug;

/// Largest request head read; anything longer gets 431.
const MAX_HEAD_BYTES: usize = 8 * 1024;
/// How long a client may take to send its head or read the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// Binds `host:port` and serves on a thread; returns the bound address.
pub fn start(config: &Config, metrics: Arc<Metrics>) -> Result<SocketAddr> {
    let listener = TcpListener::bind((config.host.as_str(), config.port))
        .with_context(|| format!("binding {}:{}", config.host, config.port))?;
    let addr = listener.local_addr()?;
    std::thread::Builder::new()
        .name("status".into())
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                if let Err(e) = serve(conn, &metrics) {
                    debug!(%e, "status request failed");
                }
            }
        })?;
    Ok(addr)
}

fn serve(mut conn: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let (get, path) = loop {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        let mut fields = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut fields);
        match req.parse(&head) {
            Ok(httparse::Status::Complete(_)) => {
                let path = req.path.unwrap_or_default();
                let path = path.split('?').next().unwrap_or_default().to_string();
                break (req.method == Some("GET"), path);
            }
            Ok(httparse::Status::Partial) if head.len() <= MAX_HEAD_BYTES => {}
            Ok(httparse::Status::Partial) => {
                return respond(&mut conn, 431, "application/json", error("head_too_large"));
            }
            Err(_) => return respond(&mut conn, 400, "application/json", error("bad_request")),
        }
    };
    if !get && path != "/ingest" {
        return respond(
            &mut conn,
            405,
            "application/json",
            error("method_not_allowed"),
        );
    }
    let sink = &metrics.sink;
    let up = sink.clickhouse_up.load(Ordering::Acquire);
    let (status, kind, body) = match path.as_str() {
        "/health/live" => (200, "application/json", probe::LIVE.to_string()),
        "/health/ready" if up => (200, "application/json", probe::READY.to_string()),
        "/health/ready" => (
            503,
            "application/json",
            probe::not_ready("clickhouse_unreachable"),
        ),
        "/health" => (
            200,
            "application/json",
            format!(
                r#"{{"status":"{}","version":"{}","roles":["sink"],"ready":{up},"sink":{}}}"#,
                if up { "ok" } else { "degraded" },
                env!("CARGO_PKG_VERSION"),
                metrics.sink_health_json()
            ),
        ),
        "/metrics" => (
            200,
            "text/plain; version=0.0.4",
            metrics.render_prometheus(),
        ),
        "/debug/latency" => (
            200,
            "text/plain; charset=utf-8",
            metrics.render_latency_table(),
        ),
        "/ingest" => (
            404,
            "application/json",
            error_with(
                "not_found",
                "this node runs only the sink role; send events to an ingest node",
            ),
        ),
        _ => (404, "application/json", error("not_found")),
    };
    respond(&mut conn, status, kind, body)
}

fn error(code: &str) -> String {
    error_with(code, "see /health and /metrics")
}

fn error_with(code: &str, message: &str) -> String {
    format!(r#"{{"status":"error","error":"{code}","message":"{message}"}}"#)
}

fn respond(conn: &mut TcpStream, status: u16, kind: &str, body: String) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {kind}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes())?;
    conn.write_all(body.as_bytes())?;
    conn.flush()
}
