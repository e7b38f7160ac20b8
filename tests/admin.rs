//! The admin surfaces on their own listener and behind a token: the main
//! port stops answering them (but keeps the probes and ingest), the admin
//! listener answers them only with the token (the on-call page's files
//! without), on an edge node and on a sink-only node.

mod common;

use std::time::Duration;

use common::*;
use sonic_rs::JsonValueTrait;

fn status(port: u16, path: &str, auth: Option<&str>) -> u16 {
    let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
    call("GET", port, path, &headers, None).status
}

#[test]
fn admin_surfaces_move_to_their_listener_and_need_the_token() {
    let ch = ClickHouse::start();
    let broker = Broker::start();
    let url = ch.url();
    let token_hash = engine_core::tenant::hash_key_hex("adm_secret");
    for roles in ["ingest,sink", "sink"] {
        let admin_port = free_port();
        let admin = admin_port.to_string();
        let engine = Engine::start_with(
            &broker,
            TEST_CONFIG,
            &[
                ("INGESTION_ROLES", roles),
                ("INGESTION_CLICKHOUSE_URL", &url),
                ("INGESTION_ADMIN_PORT", &admin),
                ("INGESTION_ADMIN_TOKEN_SHA256", &token_hash),
            ],
        );
        wait_for("the admin listener", Duration::from_secs(10), || {
            get(admin_port, "/health/live").is_ok_and(|r| r.status == 200)
        });
        let main = engine.port;
        // The main port: probes yes, admin surfaces no.
        assert_eq!(status(main, "/health/live", None), 200, "{roles}");
        for path in [
            "/metrics",
            "/health",
            "/debug/stats",
            "/debug/latency",
            "/debug/dashboard",
        ] {
            assert_eq!(
                status(main, path, Some("Bearer adm_secret")),
                404,
                "{roles} {path}"
            );
        }
        if roles != "sink" {
            let events: Vec<_> = (0..3)
                .map(|i| event(i, DEV_TENANT, &uuid::Uuid::new_v4().to_string()))
                .collect();
            assert_eq!(post(main, Some(DEV_AUTH), &[], &batch(&events)).status, 200);
        }
        // The admin listener: the token or 401, never the ingest route.
        for path in ["/metrics", "/health", "/debug/stats", "/debug/latency"] {
            let r = call("GET", admin_port, path, &[], None);
            assert_eq!(r.status, 401, "{roles} {path}");
            assert_eq!(r.header("WWW-Authenticate"), Some("Bearer"));
            assert_eq!(r.json()["error"].as_str(), Some("admin_token_required"));
            assert_eq!(
                status(admin_port, path, Some("Bearer adm_wrong")),
                401,
                "{roles} {path}"
            );
            assert_eq!(
                status(admin_port, path, Some("Bearer adm_secret")),
                200,
                "{roles} {path}"
            );
        }
        let metrics = call(
            "GET",
            admin_port,
            "/metrics",
            &[("Authorization", "Bearer adm_secret")],
            None,
        );
        let want = if roles == "sink" {
            "sink_rows_inserted_total"
        } else {
            "ingest_events_accepted_total 3"
        };
        assert!(metrics.body.contains(want), "{roles}: {}", metrics.body);
        assert_eq!(status(admin_port, "/health/ready", None), 200, "{roles}");
        assert_eq!(status(admin_port, "/debug/dashboard", None), 200, "{roles}");
        assert_eq!(
            status(admin_port, "/debug/dashboard/oncall.js", None),
            200,
            "{roles}"
        );
        let r = call(
            "POST",
            admin_port,
            "/ingest",
            &[("Authorization", DEV_AUTH)],
            Some(b"{}"),
        );
        assert_eq!(r.status, 404, "{roles}");
        engine.terminate();
    }
}

#[test]
fn a_bad_admin_config_is_refused_at_start_naming_the_key() {
    // Only this variable: the suite's own (INGESTION_TEST_TMP) is no key.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ingestion-engine"))
        .args(["check-config"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("INGESTION_ADMIN_TOKEN_SHA256", "not-a-hash")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("admin.token_sha256"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
