//! `tagwatch demo` end to end: the real binary on a fresh SQLite file runs a short simulated
//! fleet through HTTP and its summary shows every ground-truth episode found and no false
//! alert.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn a_short_demo_finds_every_simulated_breach_and_raises_no_false_alert() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tagwatch"))
        .args([
            "demo",
            "--exit",
            "--listen",
            "127.0.0.1:0",
            "--subjects",
            "16",
            "--hours",
            "24",
            "--seed",
            "5",
        ])
        .arg("--database-url")
        .arg(format!("sqlite://{}/demo.db", dir.path().display()))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("SUMMARY "))
        .expect("no summary line");
    let s: serde_json::Value = serde_json::from_str(line).unwrap();
    assert!(s["truth_breaches"].as_u64().unwrap() >= 3, "{s}");
    assert_eq!(s["found"], s["truth_breaches"], "{s}");
    assert_eq!(s["missed"], 0, "{s}");
    assert_eq!(s["false_alerts"], 0, "{s}");
    assert_eq!(s["fixes_accepted"], s["fixes_posted"], "{s}");
    assert!(stdout.contains("officer  token tw_"), "tokens are printed");
}
