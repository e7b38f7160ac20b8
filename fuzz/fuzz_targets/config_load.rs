//! The config loader on arbitrary TOML (and one environment override): a
//! config loads and checks, or is refused with an error; a loaded one's
//! masked form (`check-config`) renders.
#![no_main]

use engine_core::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The last line, when it looks like `INGESTION_X=v`, is an override.
    let (file, env) = match text.rsplit_once('\n') {
        Some((file, last)) if last.starts_with("INGESTION_") => match last.split_once('=') {
            Some((k, v)) => (file, vec![(k, v)]),
            None => (text, Vec::new()),
        },
        _ => (text, Vec::new()),
    };
    if let Ok(config) = Config::load(Some(file), env) {
        let _ = config.to_masked_toml();
    }
});
