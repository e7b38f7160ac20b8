//! A free tenant's first records while the sink cannot read the tenant
//! registry: before issue 19 the sink guessed paid/90 days and cached the
//! guess until restart, so the free tenant's rows were kept 90 days
//! (retention is a privacy promise). Now nothing is guessed: the records
//! wait, the lookup is retried, and they land with the tenant's own class.
mod common;
use common::*;
use std::time::Duration;

#[test]
fn a_new_free_tenant_while_the_registry_cannot_be_read_keeps_its_own_retention() {
    let ch = ClickHouse::start();
    let broker = Broker::start();
    let engine = Engine::start_on(&broker, &ch, "ingest,sink");
    let created = tenant_cli(
        &engine,
        &broker,
        &ch,
        &["tenant", "create", "--name", "free-one", "--tier", "free"],
    );
    let id = field(&created, "tenant_id");
    let key = field(&created, "secret_key");
    let auth = format!("Bearer {id}:{key}");
    // The edge knows the tenant (a query is authenticated: not 401), no event sent yet.
    wait_for("the edge knows the tenant", Duration::from_secs(30), || {
        call(
            "POST",
            engine.port,
            "/api/v1/query",
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            Some(b"{}"),
        )
        .status
            != 401
    });
    ch.query("RENAME TABLE overwatch.tenants TO overwatch.tenants_away");
    let events: Vec<_> = (0..3)
        .map(|i| event(i, &id, &uuid::Uuid::new_v4().to_string()))
        .collect();
    assert_eq!(
        post(engine.port, Some(&auth), &[], &batch(&events)).status,
        200
    );
    let count = || {
        ch.query(&format!(
            "SELECT count() FROM overwatch.events WHERE tenant_id = toUUID('{id}')"
        ))
        .trim()
        .to_string()
    };
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(count(), "0", "stored while its class was unknown");
    ch.query("RENAME TABLE overwatch.tenants_away TO overwatch.tenants");
    wait_for("the held rows", Duration::from_secs(30), || count() == "3");
    let classes = ch.query(&format!(
        "SELECT DISTINCT retention_days FROM overwatch.events WHERE tenant_id = toUUID('{id}')"
    ));
    assert_eq!(classes.trim(), "1", "a free tenant's rows keep 1 day");
    engine.terminate();
}
