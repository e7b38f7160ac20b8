//! The dashboards' browser driver (`dashboard/e2e/drive.mjs`: playwright-core
//! with Debian's chromium, both installed by `scripts/test`).

use std::path::Path;
use std::process::Command;

use sonic_rs::{JsonContainerTrait, JsonValueTrait, Value};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Where the driver saves its screenshots.
pub fn out_dir() -> std::path::PathBuf {
    let d = root().join("target/browser");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs the driver (`mode`: `None` for the analytics dashboard, or
/// `oncall`) against the engine on `port`: its report, checked for errors,
/// and the report pretty-printed for messages.
pub fn drive(port: u16, env: &[(&str, &str)], mode: Option<&str>) -> (Value, String) {
    assert!(
        root()
            .join("dashboard/node_modules/playwright-core")
            .exists(),
        "dashboard/node_modules is missing: scripts/test installs it (npm ci in dashboard/)"
    );
    let mut cmd = Command::new("node");
    cmd.arg(root().join("dashboard/e2e/drive.mjs"));
    cmd.args(mode);
    let out = cmd
        .env("ENGINE_URL", format!("http://127.0.0.1:{port}"))
        .env("OUT_DIR", out_dir())
        .env("TZ", "UTC")
        .envs(env.iter().copied())
        .output()
        .expect("node must be installed (scripts/test checks it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = sonic_rs::from_str(stdout.lines().last().unwrap_or("{}"))
        .unwrap_or_else(|e| panic!("driver said {stdout:?}: {e}"));
    let pretty = sonic_rs::to_string_pretty(&report).unwrap();
    assert!(report.get("error").is_none(), "{pretty}");
    assert!(out.status.success(), "{pretty}");
    assert_eq!(
        report["console_errors"].as_array().unwrap().len(),
        0,
        "{pretty}"
    );
    (report, pretty)
}
