//! The configuration reference of `docs/configuration.md` against the config
//! types: every key the engine reads is listed once, no listed key is
//! unknown, and each default shown is the one `Config::default()` has.
//!
//! The keys are those of the default configuration serialised, plus those
//! a fixture that sets every optional part adds (tenants, cluster shards,
//! TLS files, librdkafka properties): a new field appears in the
//! serialisation and fails this test until it is documented.

use std::collections::BTreeMap;
use std::path::Path;

use engine_core::config::Config;

/// Sets what the default leaves out; parsed with the types'
/// `deny_unknown_fields`, so a key renamed in code fails here too.
const FIXTURE: &str = r#"
[redpanda.librdkafka]
"socket.keepalive.enable" = "true"

[clickhouse]
cluster = "acc"
[[clickhouse.shards]]
replicas = ["http://127.0.0.1:47211"]

[tls]
cert_path = "/etc/ingestion-engine/tls/fullchain.pem"
key_path = "/etc/ingestion-engine/tls/privkey.pem"

[[tenants]]
id = "00000000-0000-0000-0000-000000000001"
name = "shop"
tier = "paid"
retention_days = 90
secret_key_sha256 = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"
write_key_sha256 = "5ae9195d0e56112ce85c1fb32f7cd9cf1779774f6f6fe45d7999175f546e5744"
api_key_sha256 = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"
allowed_origins = ["https://shop.example"]
disabled = false
rate_limit_eps = 500
"#;

/// `key → value` for every leaf of `v`; arrays of tables as `key[].field`,
/// an empty table as `{}`.
fn flatten(prefix: &str, v: &toml::Value, out: &mut BTreeMap<String, String>) {
    let join = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match v {
        toml::Value::Table(t) if !t.is_empty() || prefix.is_empty() => {
            for (k, v) in t {
                // librdkafka's properties are librdkafka's, not ours.
                if prefix == "redpanda.librdkafka" {
                    continue;
                }
                flatten(&join(k), v, out);
            }
            if prefix == "redpanda.librdkafka" {
                out.insert(prefix.to_string(), "{}".into());
            }
        }
        toml::Value::Array(a) if a.first().is_some_and(|x| x.is_table()) => {
            for item in a {
                flatten(&format!("{prefix}[]"), item, out);
            }
        }
        toml::Value::Table(_) => {
            out.insert(prefix.to_string(), "{}".into());
        }
        leaf => {
            out.insert(prefix.to_string(), leaf.to_string());
        }
    }
}

fn keys_of(config: &Config) -> BTreeMap<String, String> {
    let v = toml::Value::try_from(config).expect("the config serialises");
    let mut out = BTreeMap::new();
    flatten("", &v, &mut out);
    out
}

/// The rows of the page's `## Reference` section: `key → default`, and the
/// keys listed twice.
fn documented(page: &str) -> (BTreeMap<String, String>, Vec<String>) {
    let section = page
        .split_once("\n## Reference")
        .map(|(_, rest)| rest.split("\n## ").next().unwrap_or(rest))
        .expect("docs/configuration.md has a `## Reference` section");
    let (mut rows, mut twice) = (BTreeMap::new(), Vec::new());
    for line in section.lines() {
        let cells: Vec<&str> = line.trim().trim_matches('|').split(" | ").collect();
        let Some(key) = cells
            .first()
            .and_then(|c| c.trim().strip_prefix('`'))
            .and_then(|c| c.strip_suffix('`'))
        else {
            continue;
        };
        let default = cells.get(1).map_or("", |c| c.trim());
        let default = default
            .strip_prefix('`')
            .and_then(|d| d.strip_suffix('`'))
            .unwrap_or(default);
        if rows.insert(key.to_string(), default.to_string()).is_some() {
            twice.push(key.to_string());
        }
    }
    (rows, twice)
}

#[test]
fn the_configuration_reference_lists_every_key_with_its_default() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md");
    let page = std::fs::read_to_string(&path).expect("docs/configuration.md");
    let (rows, twice) = documented(&page);

    let defaults = keys_of(&Config::default());
    let fixture: Config = toml::from_str(FIXTURE).expect("the fixture is a valid config");
    let mut all = keys_of(&fixture);
    all.extend(defaults.clone());

    let mut problems = Vec::new();
    for key in &twice {
        problems.push(format!("`{key}` is listed twice"));
    }
    for (key, value) in &all {
        match rows.get(key) {
            None => problems.push(match defaults.get(key) {
                Some(d) => format!("missing row: | `{key}` | `{d}` | … |"),
                None => format!("missing row: | `{key}` | (none) | … |"),
            }),
            Some(shown) if defaults.contains_key(key) && shown != value => problems.push(format!(
                "`{key}`: the page says the default is `{shown}`, the code `{value}`"
            )),
            Some(_) => {}
        }
    }
    for key in rows.keys() {
        if !all.contains_key(key) {
            problems.push(format!(
                "`{key}` is documented but the config has no such key"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "docs/configuration.md's reference and the config types differ \
         (crates/core/src/config/*.rs):\n{}",
        problems.join("\n")
    );
}
