//! Budgets and rate limits in the store: limits rows per project and key,
//! and the shared counters replicas lease blocks from. Every test runs on
//! SQLite and, when `MODELYARD_TEST_POSTGRES_URL` is set, also on
//! PostgreSQL; see `common`.

#![allow(clippy::unwrap_used)]

mod common;

use common::test_dbs;
use modelyard_core::limits::{Limits, Period};
use modelyard_store::{
    ApiKeyRow, CounterKey, LimitMetric, LimitSubject, ProjectId, Role, Store, StoreError,
};

async fn key(store: &Store, project: &ProjectId, id: &str) {
    let row = ApiKeyRow {
        id: id.to_owned(),
        project_id: project.as_str().to_owned(),
        name: id.to_owned(),
        role: Role::Member,
        prefix: "mk_00000000".to_owned(),
        created_at_ms: 1_000,
        revoked_at_ms: None,
    };
    store
        .create_api_key(project, &row, &format!("hash-{id}"))
        .await
        .unwrap();
}

fn counter(subject: &str, metric: LimitMetric, start: i64) -> CounterKey {
    CounterKey {
        subject: subject.to_owned(),
        metric,
        window_start_ms: start,
        window_end_ms: Some(start + 60_000),
    }
}

#[tokio::test]
async fn limits_are_per_subject_and_scoped_by_project() {
    for db in test_dbs().await {
        let store = &db.store;
        let a = ProjectId::default_project();
        let b = store.create_project("b").await.unwrap();
        key(store, &a, "k1").await;
        key(store, &b, "k2").await;
        let key_limits = Limits {
            requests_per_minute: Some(100),
            max_cost_nusd: Some(5_000_000_000),
            period: Some(Period::Day),
            ..Limits::default()
        };
        let project_limits = Limits {
            max_concurrent: Some(3),
            tokens_per_minute: Some(10_000),
            ..Limits::default()
        };
        let k1 = LimitSubject::Key("k1".into());
        let pa = LimitSubject::Project(a.as_str().into());
        store.put_limits(&a, &k1, &key_limits, 10).await.unwrap();
        store
            .put_limits(&a, &pa, &project_limits, 10)
            .await
            .unwrap();
        assert_eq!(
            store
                .limits_of(&a, &[k1.clone(), pa.clone()])
                .await
                .unwrap(),
            vec![(k1.clone(), key_limits), (pa.clone(), project_limits)],
            "{:?}",
            db.url
        );
        // Another project's key is not found, and reads nothing of A's.
        let k2 = LimitSubject::Key("k2".into());
        assert!(matches!(
            store.put_limits(&a, &k2, &key_limits, 10).await,
            Err(StoreError::NotFound { kind: "key", .. })
        ));
        assert!(store
            .limits_of(&b, std::slice::from_ref(&k1))
            .await
            .unwrap()
            .is_empty());
        // Replacing, then clearing.
        let fewer = Limits {
            requests_per_minute: Some(5),
            ..Limits::default()
        };
        store.put_limits(&a, &k1, &fewer, 20).await.unwrap();
        assert_eq!(
            store
                .limits_of(&a, std::slice::from_ref(&k1))
                .await
                .unwrap(),
            vec![(k1.clone(), fewer)]
        );
        store
            .put_limits(&a, &k1, &Limits::default(), 30)
            .await
            .unwrap();
        assert_eq!(
            store.limits_of(&a, &[k1, pa.clone()]).await.unwrap(),
            vec![(pa, project_limits)]
        );
    }
}

#[tokio::test]
async fn leases_never_pass_the_limit_and_come_back() {
    for db in test_dbs().await {
        let store = &db.store;
        let c = counter("key:k", LimitMetric::Requests, 60_000);
        // 3 blocks of 40 under 100: 40, 40, then the 20 left, then nothing.
        let grants: Vec<i64> = {
            let mut out = Vec::new();
            for _ in 0..4 {
                out.push(store.take_limit_block(&c, 40, 100).await.unwrap().granted);
            }
            out
        };
        assert_eq!(grants, vec![40, 40, 20, 0], "{:?}", db.url);
        assert_eq!(store.limit_counter(&c).await.unwrap(), 100);
        // Giving 30 back lets 30 out again, no more.
        assert_eq!(store.add_to_limit_counter(&c, -30).await.unwrap(), 70);
        let lease = store.take_limit_block(&c, 50, 100).await.unwrap();
        assert_eq!((lease.granted, lease.taken), (30, 100));
        // Spending past a reserve goes over the limit; then nothing is granted.
        assert_eq!(store.add_to_limit_counter(&c, 7).await.unwrap(), 107);
        assert_eq!(store.take_limit_block(&c, 1, 100).await.unwrap().granted, 0);
        // Never below zero.
        assert_eq!(store.add_to_limit_counter(&c, -1_000).await.unwrap(), 0);
        // Windows and metrics are separate rows; a lowered limit applies at once.
        let next = counter("key:k", LimitMetric::Requests, 120_000);
        assert_eq!(
            store.take_limit_block(&next, 5, 3).await.unwrap().granted,
            3
        );
        let tokens = counter("key:k", LimitMetric::Tokens, 60_000);
        assert_eq!(store.limit_counter(&tokens).await.unwrap(), 0);
        // A charge creates its row.
        assert_eq!(store.add_to_limit_counter(&tokens, 12).await.unwrap(), 12);
        // Old windows are pruned.
        assert_eq!(store.prune_limit_counters(180_001).await.unwrap(), 3);
        assert_eq!(store.limit_counter(&next).await.unwrap(), 0);
    }
}

#[tokio::test]
async fn concurrent_takes_share_the_limit_exactly() {
    for db in test_dbs().await {
        let store = db.store.clone();
        let c = counter("project:p", LimitMetric::BudgetTokens, 0);
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (store, c) = (store.clone(), c.clone());
            tasks.push(tokio::spawn(async move {
                let mut got = 0;
                for _ in 0..10 {
                    got += store.take_limit_block(&c, 7, 500).await.unwrap().granted;
                }
                got
            }));
        }
        let mut total = 0;
        for task in tasks {
            total += task.await.unwrap();
        }
        assert_eq!(total, 500, "{:?}", db.url);
        assert_eq!(store.limit_counter(&c).await.unwrap(), 500);
    }
}
