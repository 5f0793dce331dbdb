//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`) and crash reproducers
//! (`fuzz/regressions/<target>/`) through the fuzz targets' own bodies, on stable Rust and
//! without cargo-fuzz: every input must go through without a panic and keep the targets'
//! invariants. The bodies live in `fuzz/src/lib.rs`, included here so they are written once.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

#[path = "../fuzz/src/lib.rs"]
mod bodies;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files of `fuzz/<kind>/<target>/`, sorted; none when the directory does not exist.
fn inputs(kind: &str, target: &str) -> std::io::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(fuzz_dir().join(kind).join(target)) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        other => other?,
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

#[test]
fn every_committed_corpus_file_and_reproducer_runs_without_a_panic() {
    let mut failures = Vec::new();
    for &(target, body) in bodies::TARGETS {
        let corpus = inputs("corpus", target).expect("read fuzz/corpus");
        assert!(
            !corpus.is_empty(),
            "fuzz/corpus/{target}/ is empty or missing"
        );
        let regressions = inputs("regressions", target).expect("read fuzz/regressions");
        for path in corpus.iter().chain(&regressions) {
            let data = std::fs::read(path).expect("read corpus file");
            if catch_unwind(AssertUnwindSafe(|| body(&data))).is_err() {
                failures.push(path.display().to_string());
            }
        }
    }
    assert!(failures.is_empty(), "panicked on: {failures:#?}");
}

#[test]
fn every_fuzz_target_is_replayed_here() {
    let mut names: Vec<String> = std::fs::read_dir(fuzz_dir().join("fuzz_targets"))
        .expect("fuzz/fuzz_targets")
        .map(|e| e.expect("directory entry").path())
        .filter_map(|p| Some(p.file_stem()?.to_str()?.to_owned()))
        .collect();
    names.sort();
    let mut known: Vec<String> = bodies::TARGETS
        .iter()
        .map(|(n, _)| (*n).to_owned())
        .collect();
    known.sort();
    assert_eq!(names, known);
}
