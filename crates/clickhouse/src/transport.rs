//! The HTTP transport: one query per request, `Native` blocks as the body of
//! `INSERT … FORMAT Native` (one insert = one block, so it is atomic).

use std::io::Read;
use std::time::Duration;

use crate::version::ServerVersion;
use crate::Error;

/// Longest answer read from a query, in bytes (queries here are small).
const MAX_ANSWER_BYTES: u64 = 64 << 20;

/// A ClickHouse HTTP client.
#[derive(Clone)]
pub struct Client {
    url: String,
    agent: ureq::Agent,
    user: Option<String>,
    password: Option<String>,
}

/// The password stays out of debug output and logs.
impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.url)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Client {
    /// A client for `url` (e.g. `http://localhost:8123`); `timeout` bounds
    /// each request.
    pub fn new(url: &str, timeout: Duration) -> Self {
        Self {
            url: url.trim_end_matches('/').to_string(),
            agent: ureq::AgentBuilder::new()
                .timeout_connect(Duration::from_secs(5).min(timeout))
                .timeout(timeout)
                .build(),
            user: None,
            password: None,
        }
    }

    /// A client for the configured server, with its credentials.
    pub fn from_config(config: &engine_core::config::ClickhouseConfig, timeout: Duration) -> Self {
        Self::for_node(config, config.url.as_str(), timeout)
    }

    /// A client for one node of the configured cluster (`url`, one of
    /// `clickhouse.shards`' replicas), with the configured credentials.
    pub fn for_node(
        config: &engine_core::config::ClickhouseConfig,
        url: &str,
        timeout: Duration,
    ) -> Self {
        let client = Self::new(url, timeout);
        match config.credentials() {
            Some((user, password)) => client.with_credentials(user, password),
            None => client,
        }
    }

    /// The same client with another bound on each request.
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        Self {
            user: self.user.clone(),
            password: self.password.clone(),
            ..Self::new(&self.url, timeout)
        }
    }

    /// Sets credentials (sent as `X-ClickHouse-User`/`X-ClickHouse-Key`).
    pub fn with_credentials(mut self, user: &str, password: &str) -> Self {
        self.user = Some(user.to_string());
        self.password = Some(password.to_string());
        self
    }

    /// The server URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn request(&self, query: Option<&str>) -> ureq::Request {
        let mut req = self.agent.post(&format!("{}/", self.url));
        if let Some(q) = query {
            req = req.query("query", q);
        }
        if let (Some(u), Some(p)) = (&self.user, &self.password) {
            req = req.set("X-ClickHouse-User", u).set("X-ClickHouse-Key", p);
        }
        req
    }

    fn answer(&self, res: Result<ureq::Response, ureq::Error>) -> Result<String, Error> {
        let bytes = self.answer_bytes(res, MAX_ANSWER_BYTES)?;
        String::from_utf8(bytes).map_err(|e| Error::Protocol(format!("answer is not UTF-8: {e}")))
    }

    fn answer_bytes(
        &self,
        res: Result<ureq::Response, ureq::Error>,
        max_bytes: u64,
    ) -> Result<Vec<u8>, Error> {
        match res {
            Ok(r) => {
                let mut body = Vec::new();
                r.into_reader()
                    .take(max_bytes.saturating_add(1))
                    .read_to_end(&mut body)
                    .map_err(|e| self.connection(e.to_string()))?;
                if body.len() as u64 > max_bytes {
                    return Err(Error::Protocol(format!(
                        "answer larger than {max_bytes} bytes"
                    )));
                }
                Ok(body)
            }
            Err(ureq::Error::Status(_, r)) => {
                let text = r.into_string().unwrap_or_default();
                Err(server_error(&text))
            }
            Err(ureq::Error::Transport(t)) => Err(self.connection(t.to_string())),
        }
    }

    fn connection(&self, message: String) -> Error {
        Error::Connection {
            url: self.url.clone(),
            message,
        }
    }

    /// Runs a statement or query and returns the answer text.
    pub fn query(&self, sql: &str) -> Result<String, Error> {
        self.answer(self.request(None).send_string(sql))
    }

    /// Runs a query with per-query settings (`max_execution_time`, …) as
    /// URL parameters, returning the answer text.
    pub fn query_with_settings(
        &self,
        sql: &str,
        settings: &[(&str, &str)],
    ) -> Result<String, Error> {
        let mut req = self.request(None);
        for (k, v) in settings {
            req = req.query(k, v);
        }
        self.answer(req.send_string(sql))
    }

    /// Runs a query whose answer is binary (`FORMAT RowBinary`), read up to
    /// `max_bytes` (a larger answer is an error, never cut short silently).
    pub fn query_binary(&self, sql: &str, max_bytes: u64) -> Result<Vec<u8>, Error> {
        self.answer_bytes(self.request(None).send_string(sql), max_bytes)
    }

    /// Runs a statement, discarding the answer.
    pub fn execute(&self, sql: &str) -> Result<(), Error> {
        self.query(sql).map(drop)
    }

    /// Inserts one `Native` block into `table` (`db.table`).
    pub fn insert_native(&self, table: &str, block: &[u8]) -> Result<(), Error> {
        self.query_with_body(&format!("INSERT INTO {table} FORMAT Native"), block)
            .map(drop)
    }

    /// Runs `query` (in the URL) with `body` as its data and per-query
    /// settings (`query_id`, …) as URL parameters.
    pub fn query_with_body_settings(
        &self,
        query: &str,
        body: &[u8],
        settings: &[(&str, &str)],
    ) -> Result<String, Error> {
        let mut req = self.request(Some(query));
        for (k, v) in settings {
            req = req.query(k, v);
        }
        self.answer(req.send_bytes(body))
    }

    /// Runs `query` (in the URL) with `body` as its data.
    pub fn query_with_body(&self, query: &str, body: &[u8]) -> Result<String, Error> {
        self.answer(self.request(Some(query)).send_bytes(body))
    }

    /// The server's version.
    pub fn version(&self) -> Result<ServerVersion, Error> {
        let v = self.query("SELECT version()")?;
        ServerVersion::parse(&v).ok_or_else(|| Error::Protocol(format!("version {v:?}")))
    }

    /// Whether the server answers `/ping`.
    pub fn ping(&self) -> bool {
        self.agent
            .get(&format!("{}/ping", self.url))
            .call()
            .is_ok_and(|r| r.status() == 200)
    }
}

/// Parses `Code: 60, e.displayText() = DB::Exception: …` (old) or
/// `Code: 60. DB::Exception: …` (new) into code and message.
/// Longest ClickHouse error message kept, in bytes: it may quote a query's
/// values (a tenant's filter, say), so it is cut on a character boundary.
pub const MAX_SERVER_MESSAGE_BYTES: usize = 4096;

fn server_error(text: &str) -> Error {
    let text = text.trim();
    let code = text
        .strip_prefix("Code: ")
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|d| d.parse().ok());
    Error::Server {
        code,
        message: engine_text::shown(text, MAX_SERVER_MESSAGE_BYTES).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_password() {
        let c =
            Client::new("http://h:8123", Duration::from_secs(1)).with_credentials("u", "hunter2");
        let shown = format!("{c:?} {:?}", c.with_timeout(Duration::from_secs(2)));
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("\"u\""), "{shown}");
    }

    #[test]
    fn server_errors_keep_code_and_message() {
        let e = server_error("Code: 60, e.displayText() = DB::Exception: Table x.y doesn't exist., e.what() = DB::Exception\n");
        match e {
            Error::Server { code, message } => {
                assert_eq!(code, Some(60));
                assert!(message.contains("Table x.y doesn't exist"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            server_error("Code: 62. DB::Exception: Syntax error"),
            Error::Server { code: Some(62), .. }
        ));
        assert!(matches!(
            server_error("weird"),
            Error::Server { code: None, .. }
        ));
    }
}
