//! The web console (SPEC §2 "Web console"): its assets and headers over HTTP, and the
//! end-to-end browser scenario in Debian's headless Chromium (`tests/browser/`, driven by
//! playwright-core). Node and Chromium are required: if either is missing the test fails,
//! it never skips. `TAGWATCH_SCREENSHOTS=1 cargo test --test console` rewrites the
//! screenshots in `docs/`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{ago, spawn_app, Backend};
use reqwest::StatusCode;
use serde_json::json;

const CHROMIUM: &str = "/usr/bin/chromium";
const HOME: (f64, f64) = (51.5450, -0.1030); // Islington
const STATION: (f64, f64) = (51.5308, -0.1238); // King's Cross
const OFFICER: &str = "Officer Olsen";
const ANALYST: &str = "Analyst Ada";
/// Markup in a name typed by a user: the console must show it as text.
const DISPLAY_NAME: &str = "Jo <img src=x id=pwned> Bloggs";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_assets_are_served_with_security_headers() {
    let app = spawn_app(Backend::Sqlite).await;
    let get = |path: &str| app.client.get(format!("{}{}", app.url, path)).send();

    let page = get("/").await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let h = page.headers().clone();
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert_eq!(h["x-frame-options"], "DENY");
    let html = page.text().await.unwrap();
    assert!(!html.contains("<script>"), "no inline script");

    for (path, ct) in [
        ("/console/app.js", "text/javascript; charset=utf-8"),
        ("/console/map.js", "text/javascript; charset=utf-8"),
        ("/console/style.css", "text/css; charset=utf-8"),
        (
            "/console/vendor/leaflet/leaflet.js",
            "text/javascript; charset=utf-8",
        ),
        (
            "/console/vendor/leaflet/leaflet.css",
            "text/css; charset=utf-8",
        ),
        (
            "/console/vendor/leaflet/LICENSE",
            "text/plain; charset=utf-8",
        ),
        (
            "/console/vendor/leaflet/images/marker-icon.png",
            "image/png",
        ),
        ("/console/config.json", "application/json"),
    ] {
        let r = get(path).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert_eq!(r.headers()["content-type"], ct, "{path}");
        assert_eq!(r.headers()["x-content-type-options"], "nosniff", "{path}");
    }
    assert_eq!(
        get("/console/../Cargo.toml").await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get("/console/nope.js").await.unwrap().status(),
        StatusCode::NOT_FOUND
    );

    // who am I: any valid token; none → 401
    assert_eq!(
        get("/v1/me").await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let (_, token) = app.user(OFFICER, "officer").await;
    let (st, me) = app.get("/v1/me", &token).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(me["name"], OFFICER);
    assert_eq!(me["role"], "officer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn officer_analyst_and_auditor_use_the_console_in_a_real_browser() {
    // arrange: the service, and the people and things the scenario needs
    let browser_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    require_tools(&browser_dir);
    let app = spawn_app(Backend::Sqlite).await;
    let (officer_id, officer) = app.user(OFFICER, "officer").await;
    let (_, analyst) = app.user(ANALYST, "analyst").await;
    let (_, auditor) = app.user("Auditor Aziz", "auditor").await;
    let (st, v) = app
        .post(
            "/v1/subjects",
            &app.admin_token,
            json!({"id": "GTO-00017", "display_name": DISPLAY_NAME, "borough": "Islington", "officer_id": officer_id}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let device = app.device("TAG-7", "GTO-00017").await;
    let (st, v) = app
        .post(
            "/v1/subjects/GTO-00017/zones",
            &officer,
            json!({"kind": "exclusion", "name": "King's Cross station", "valid_from": ago(7200),
                   "geometry": {"type": "Circle", "center": [STATION.1, STATION.0], "radius_m": 300}}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");

    // act: the browser scenario (it posts the breach pings once the officer is signed in)
    let screenshots = std::env::var("TAGWATCH_SCREENSHOTS").unwrap_or_default();
    let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs");
    let envs: Vec<(&str, String)> = vec![
        ("TAGWATCH_URL", app.url.clone()),
        ("OFFICER_TOKEN", officer),
        ("ANALYST_TOKEN", analyst),
        ("AUDITOR_TOKEN", auditor),
        ("DEVICE_TOKEN", device),
        ("DEVICE_ID", "TAG-7".into()),
        ("SUBJECT_ID", "GTO-00017".into()),
        ("SUBJECT_DISPLAY_NAME", DISPLAY_NAME.into()),
        ("OFFICER_NAME", OFFICER.into()),
        ("ANALYST_NAME", ANALYST.into()),
        ("ZONE_LAT", STATION.0.to_string()),
        ("ZONE_LON", STATION.1.to_string()),
        ("HOME_LAT", HOME.0.to_string()),
        ("HOME_LON", HOME.1.to_string()),
        ("CHROMIUM_PATH", CHROMIUM.into()),
        ("TAGWATCH_SCREENSHOTS", screenshots),
        ("SCREENSHOT_DIR", docs.display().to_string()),
    ];
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg("console.test.mjs")
            .current_dir(&browser_dir)
            .envs(envs)
            .output()
            .expect("node is required for the console tests")
    })
    .await
    .unwrap();

    // assert
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "browser scenario failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
}

/// Chromium and Node must be installed; `npm ci` fills `node_modules` from the lock file.
fn require_tools(browser_dir: &Path) {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is required for the console tests (apt-get install -y chromium)"
    );
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "node (>= 20) is required for the console tests (apt-get install -y nodejs npm)"
    );
    if !browser_dir.join("node_modules/playwright-core").exists() {
        let st = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(browser_dir)
            .status()
            .expect("npm is required for the console tests");
        assert!(st.success(), "npm ci in tests/browser failed");
    }
}
