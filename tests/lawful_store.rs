//! The audited transaction as the stores run it: concurrent appenders to the audit chain
//! (on PostgreSQL, two servers) form one unbroken chain; on PostgreSQL an entry appended
//! the way builds before migration postgres/0007 did (advisory lock, head read from
//! `audit`) is chained onto like any other, verification finds entries deleted from the
//! chain's end through the recorded head, a transaction of key lookups plans its
//! statements once, and a panic inside an audited read leaves no transaction open.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{fresh_database, Backend};
use serde_json::json;
use tagwatch::audit::chain::{seal, AuditDraft, AuditRecord, ChainBreak};
use tagwatch::store::{AuditFilter, Store};

fn draft(task: u64, n: u64) -> AuditDraft {
    AuditDraft {
        id: 0,
        at_us: 1_700_000_000_000_000 + (task * 1_000 + n) as i64,
        actor: task as i64 + 1,
        actor_name: format!("analyst {task}"),
        role: "analyst".into(),
        action: "query.location_at_time".into(),
        parameters: json!({"task": task, "n": n}),
        justification: Some(
            json!({"crime_ref": "CR-1", "legal_basis": "s.2 PACE", "reason": "test"}),
        ),
        subject_ids: vec![format!("S-{n}")],
        result_count: n as i64,
    }
}

async fn all_entries(store: &Store) -> Vec<AuditRecord> {
    let mut v = store
        .audit_page(&AuditFilter {
            limit: 1_000,
            ..Default::default()
        })
        .await
        .unwrap();
    v.sort_by_key(|r| r.id);
    v
}

const TASKS: u64 = 8;
const PER_TASK: u64 = 20;

async fn appends_from_many_tasks_form_one_unbroken_chain(backend: Backend) {
    let (url, _guard) = fresh_database(backend).await;
    // PostgreSQL: two stores (two servers' pools) on one database; SQLite: one.
    let first = Store::connect(&url).await.unwrap();
    let second = match backend {
        Backend::Postgres => Store::connect(&url).await.unwrap(),
        Backend::Sqlite => first.clone(),
    };
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let store = if task % 2 == 0 { &first } else { &second }.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for n in 0..PER_TASK {
                let d = draft(task, n);
                let rec = store.append_audit(d.clone()).await.unwrap();
                assert_eq!(
                    (&rec.parameters, rec.result_count),
                    (&d.parameters, d.result_count)
                );
                mine.push(rec);
            }
            mine
        }));
    }
    let mut returned: Vec<AuditRecord> = Vec::new();
    for t in tasks {
        returned.extend(t.await.unwrap());
    }
    returned.sort_by_key(|r| r.id);

    let report = first.verify_audit().await.unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.entries, TASKS * PER_TASK);
    let ids: Vec<i64> = returned.iter().map(|r| r.id).collect();
    let want: Vec<i64> = (1..=(TASKS * PER_TASK) as i64).collect();
    assert_eq!(ids, want, "every append got its own id, with no gap");
    assert_eq!(
        all_entries(&second).await,
        returned,
        "what each append returned is what was stored"
    );
    assert_eq!(report.head_hash, returned.last().unwrap().hash);
}

/// A panic while location-at-time's entry is drafted, inside the audited transaction
/// (on SQLite one pass on a pooled connection's handle, which sqlx never saw begin), leaves
/// no transaction open: more panics than the pool has connections, then appends succeed
/// and the chain is whole.
async fn a_panic_inside_an_audited_read_leaves_no_transaction_open(backend: Backend) {
    let (url, _guard) = fresh_database(backend).await;
    let store = Store::connect(&url).await.unwrap();
    for _ in 0..6 {
        let s = store.clone();
        let out = tokio::spawn(async move {
            s.at_time_audited("S-1", 0, |_| -> (AuditDraft, ()) {
                panic!("drafting the entry failed")
            })
            .await
        })
        .await;
        assert!(out.unwrap_err().is_panic());
    }
    for n in 0..6 {
        store.append_audit(draft(0, n)).await.unwrap();
    }
    assert_eq!(all_entries(&store).await.len(), 6);
    assert!(store.verify_audit().await.unwrap().ok);
}

on_both_stores!(
    appends_from_many_tasks_form_one_unbroken_chain,
    a_panic_inside_an_audited_read_leaves_no_transaction_open
);

/// An upgrade runs old and new servers side by side for a while; an older build appends by
/// taking the advisory lock and reading the head from `audit`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_chains_onto_an_entry_appended_the_way_older_builds_did() {
    let (url, _guard) = fresh_database(Backend::Postgres).await;
    let store = Store::connect(&url).await.unwrap();
    store.append_audit(draft(0, 0)).await.unwrap();
    store.append_audit(draft(0, 1)).await.unwrap();

    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock(8386097743574360936)")
        .execute(&mut *tx)
        .await
        .unwrap();
    let (head_id, head_hash): (i64, String) =
        sqlx::query_as("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    let old = seal(
        &head_hash,
        AuditDraft {
            id: head_id + 1,
            ..draft(1, 0)
        },
    )
    .unwrap();
    sqlx::query(
        "INSERT INTO audit (id, at, actor, actor_name, role, action, parameters, justification, \
         subject_ids, result_count, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(old.id)
    .bind(old.at_us)
    .bind(old.actor)
    .bind(&old.actor_name)
    .bind(&old.role)
    .bind(&old.action)
    .bind(old.parameters.to_string())
    .bind(old.justification.as_ref().map(|j| j.to_string()))
    .bind(serde_json::to_string(&old.subject_ids).unwrap())
    .bind(old.result_count)
    .bind(&old.prev_hash)
    .bind(&old.hash)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let next = store.append_audit(draft(0, 2)).await.unwrap();
    assert_eq!((next.id, next.prev_hash.as_str()), (4, old.hash.as_str()));
    let report = store.verify_audit().await.unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!((report.entries, report.head_hash), (4, next.hash));
}

/// On PostgreSQL `audit_head` records the newest entry, so verification sees what the links
/// alone cannot: entries deleted from the end. Verifying while others append raises nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_verify_finds_entries_deleted_from_the_end_and_not_a_concurrent_append() {
    let (url, _guard) = fresh_database(Backend::Postgres).await;
    let store = Store::connect(&url).await.unwrap();
    let appender = {
        let store = store.clone();
        tokio::spawn(async move {
            for n in 0..60 {
                store.append_audit(draft(0, n)).await.unwrap();
            }
        })
    };
    let mut checked = 0;
    while !appender.is_finished() {
        let report = store.verify_audit().await.unwrap();
        assert!(report.ok, "during appends: {report:?}");
        checked += 1;
    }
    appender.await.unwrap();
    assert!(checked > 0);
    let report = store.verify_audit().await.unwrap();
    assert!(report.ok && report.entries == 60, "{report:?}");
    let newest = all_entries(&store).await.pop().unwrap();

    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::query("DELETE FROM audit WHERE id >= 59")
        .execute(&pool)
        .await
        .unwrap();
    let report = store.verify_audit().await.unwrap();
    assert!(!report.ok, "{report:?}");
    assert_eq!(report.first_bad_id, Some(59));
    assert_eq!(
        report.problem,
        Some(ChainBreak::RecordedHeadMissing {
            id: 60,
            hash: newest.hash
        })
    );
}
