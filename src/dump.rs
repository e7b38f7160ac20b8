//! `dump`: every event the topic holds, one JSON line each, with the original
//! field names, plus tenant, partition and offset.

use std::io::Write;

use anyhow::Result;
use engine_core::config::Config;
use engine_core::record::{decode_record, ArchivedEventRecord};
use engine_core::timestamp::format_rfc3339_us;
use engine_core::EventType;
use sonic_rs::{json, JsonValueMutTrait, Value};
use uuid::Uuid;

fn opt_str(v: &engine_core::record::ArchivedText) -> Option<&str> {
    v.as_ref().map(|s| &**s)
}

fn event_json(tenant: &str, e: &ArchivedEventRecord<'static>) -> Value {
    let mut v = json!({
        "id": Uuid::from_bytes(e.id).to_string(),
        "tenant_id": tenant,
        "session_id": Uuid::from_bytes(e.session_id).to_string(),
        "type": EventType::from_code(e.event_type).map_or("unknown", EventType::as_str),
        "timestamp": format_rfc3339_us(e.timestamp_us.to_native()),
        "client_timestamp": format_rfc3339_us(e.client_timestamp_us.to_native()),
    });
    let obj = v.as_object_mut().expect("object literal");
    for (k, s) in e.texts() {
        // `properties` is JSON; it is added as an object below.
        if let (Some(s), false) = (opt_str(s), k == "properties") {
            obj.insert(k, Value::from(s));
        }
    }
    for (k, n) in e.numbers() {
        if let Some(n) = n.as_ref() {
            obj.insert(k, json!(n.to_native()));
        }
    }
    if let (Some(w), Some(h)) = (e.screen_width.as_ref(), e.screen_height.as_ref()) {
        obj.insert(
            "screen",
            json!({"width": w.to_native(), "height": h.to_native()}),
        );
    }
    if let Some(p) = opt_str(&e.properties) {
        let props: Value = sonic_rs::from_str(p).unwrap_or_else(|_| Value::from(p));
        obj.insert("properties", props);
    }
    v
}

/// Runs `dump`.
pub fn run(config: &Config, follow: bool) -> Result<()> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut failed = None;
    redpanda::reader::read_topic(&config.redpanda, follow, |rec| {
        if failed.is_some() {
            return;
        }
        let line = match rec.payload.map(decode_record) {
            Some(Ok(b)) => {
                let tenant = Uuid::from_bytes(b.tenant_id).to_string();
                let batch_id = Uuid::from_bytes(b.batch_id).to_string();
                let received = format_rfc3339_us(b.received_at_us.to_native());
                let mut text = String::new();
                for e in b.events.iter() {
                    let line = json!({
                        "tenant_id": tenant, "partition": rec.partition, "offset": rec.offset,
                        "batch_id": batch_id, "received_at": received, "event": event_json(&tenant, e),
                    });
                    text.push_str(&line.to_string());
                    text.push('\n');
                }
                text
            }
            Some(Err(e)) => format!(
                "{}\n",
                json!({"partition": rec.partition, "offset": rec.offset, "error": e.to_string()})
            ),
            None => format!(
                "{}\n",
                json!({"partition": rec.partition, "offset": rec.offset, "error": "empty record"})
            ),
        };
        if let Err(e) =
            out.write_all(line.as_bytes())
                .and_then(|()| if follow { out.flush() } else { Ok(()) })
        {
            failed = Some(e);
        }
    })?;
    out.flush()?;
    if let Some(e) = failed {
        return Err(e.into());
    }
    Ok(())
}
