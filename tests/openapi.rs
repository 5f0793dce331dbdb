//! The served OpenAPI document against the rules the API keeps, so that a handler annotation
//! cannot drift from them without a failing test (Schemathesis, `tests/schemathesis/run.sh`,
//! checks the running service against the document; this checks the document itself).
//!
//! The document does not depend on the store, so one SQLite app serves it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use common::{spawn_app, Backend};
use reqwest::{Method, StatusCode};
use serde_json::Value;

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// The served document.
async fn document() -> Value {
    let app = spawn_app(Backend::Sqlite).await;
    let (s, doc) = app.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(s, StatusCode::OK);
    doc
}

/// `(METHOD path, operation)` for every operation of the document.
fn operations(doc: &Value) -> Vec<(String, &Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS {
            if let Some(op) = item.get(method) {
                out.push((format!("{} {path}", method.to_uppercase()), op));
            }
        }
    }
    assert!(
        out.len() > 20,
        "the document lists {} operations",
        out.len()
    );
    out
}

/// A response with a `$ref` to `#/components/responses/…` resolved.
fn resolve<'a>(doc: &'a Value, response: &'a Value) -> &'a Value {
    match response["$ref"].as_str() {
        Some(r) => {
            let name = r
                .strip_prefix("#/components/responses/")
                .unwrap_or_else(|| panic!("unexpected $ref {r}"));
            let target = &doc["components"]["responses"][name];
            assert!(target.is_object(), "{r} is not in components.responses");
            target
        }
        None => response,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_response_is_problem_json_with_the_problem_schema() {
    let doc = document().await;
    let mut wrong = Vec::new();
    for (op_name, op) in operations(&doc) {
        for (status, response) in op["responses"].as_object().unwrap() {
            if !(status.starts_with('4') || status.starts_with('5')) {
                continue;
            }
            let content = resolve(&doc, response)["content"].as_object();
            let types: Vec<&String> = content.map(|c| c.keys().collect()).unwrap_or_default();
            let schema = &content
                .and_then(|c| c.get("application/problem+json"))
                .map_or(&Value::Null, |m| &m["schema"])["$ref"];
            if types != ["application/problem+json"] || schema != "#/components/schemas/Problem" {
                wrong.push(format!("{op_name} {status}: {types:?}, schema {schema}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "error responses not declared as problem+json with the Problem schema:\n{}",
        wrong.join("\n")
    );
    let problem = &doc["components"]["schemas"]["Problem"];
    let required: BTreeSet<&str> = problem["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        required,
        BTreeSet::from(["type", "title", "status", "detail"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_behind_a_token_declares_401_and_has_its_own_id() {
    let doc = document().await;
    let mut ids = BTreeSet::new();
    for (op_name, op) in operations(&doc) {
        let id = op["operationId"].as_str().unwrap_or_default();
        assert!(
            ids.insert(id.to_owned()),
            "{op_name}: operationId {id:?} is not unique"
        );
        let needs_token = op["security"]
            .as_array()
            .is_some_and(|alternatives| alternatives.iter().all(|a| a.get("bearer").is_some()));
        if needs_token {
            assert!(
                op["responses"].get("401").is_some(),
                "{op_name} needs a token but does not declare 401"
            );
        }
        assert!(
            op["responses"]
                .as_object()
                .unwrap()
                .keys()
                .any(|s| s.starts_with('2')),
            "{op_name} declares no success"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_metrics_and_geojson_declare_their_media_types() {
    let doc = document().await;
    let ok = |path: &str, method: &str| -> BTreeSet<String> {
        doc["paths"][path][method]["responses"]["200"]["content"]
            .as_object()
            .unwrap_or_else(|| panic!("{method} {path}: no 200 content"))
            .keys()
            .cloned()
            .collect()
    };
    let set = |types: &[&str]| types.iter().map(|t| t.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(ok("/v1/alerts/stream", "get"), set(&["text/event-stream"]));
    assert_eq!(
        ok("/metrics", "get"),
        set(&["text/plain", "application/openmetrics-text"])
    );
    assert_eq!(
        ok("/v1/geodata/boroughs", "get"),
        set(&["application/geo+json"])
    );
    assert_eq!(
        ok("/v1/subjects/{id}/trail", "get"),
        set(&["application/json", "application/geo+json"])
    );
    let crime_match = doc["paths"]["/v1/queries/crime-match"]["post"]["requestBody"]["content"]
        .as_object()
        .unwrap();
    assert!(crime_match.contains_key("text/csv"));
    assert!(crime_match.contains_key("application/json"));
}
