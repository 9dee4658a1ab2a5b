//! API keys in the store: keys stay required once one existed, and a
//! project's last active admin key cannot be revoked. Every test runs on
//! SQLite and, when `MODELYARD_TEST_POSTGRES_URL` is set, also on
//! PostgreSQL; see `common`.

#![allow(clippy::unwrap_used)]

mod common;

use common::test_dbs;
use modelyard_store::{ApiKeyRow, ProjectId, Revoke, Role, Store};

async fn key(store: &Store, project: &ProjectId, id: &str, role: Role) {
    let row = ApiKeyRow {
        id: id.to_owned(),
        project_id: project.as_str().to_owned(),
        name: id.to_owned(),
        role,
        prefix: "mk_00000000".to_owned(),
        created_at_ms: 1_000,
        revoked_at_ms: None,
    };
    store
        .create_api_key(project, &row, &format!("hash-{id}"))
        .await
        .unwrap();
}

#[tokio::test]
async fn keys_stay_required_and_the_last_admin_stays() {
    for db in test_dbs().await {
        let store = &db.store;
        let a = ProjectId::default_project();
        assert!(!store.keys_required().await.unwrap(), "no key yet");
        // Given a member key and an admin key...
        key(store, &a, "member", Role::Member).await;
        assert!(store.keys_required().await.unwrap(), "{:?}", db.url);
        key(store, &a, "admin", Role::Admin).await;
        // ... the admin key is the project's last: refused, nothing changes.
        assert_eq!(
            store.revoke_api_key(&a, "admin", 2_000).await.unwrap(),
            Revoke::LastAdmin
        );
        assert!(store
            .find_active_api_key("hash-admin")
            .await
            .unwrap()
            .is_some());
        // Another project's admin does not count.
        let b = store.create_project("b").await.unwrap();
        key(store, &b, "b-admin", Role::Admin).await;
        assert_eq!(
            store.revoke_api_key(&a, "admin", 2_000).await.unwrap(),
            Revoke::LastAdmin
        );
        assert_eq!(
            store.revoke_api_key(&b, "admin", 2_000).await.unwrap(),
            Revoke::NotFound,
            "scoped by project"
        );
        // A second admin of the project lets the first go.
        key(store, &a, "admin-2", Role::Admin).await;
        assert_eq!(
            store.revoke_api_key(&a, "admin", 3_000).await.unwrap(),
            Revoke::Revoked
        );
        assert_eq!(
            store.revoke_api_key(&a, "admin", 3_000).await.unwrap(),
            Revoke::NotFound,
            "already revoked"
        );
        assert_eq!(
            store.revoke_api_key(&a, "member", 4_000).await.unwrap(),
            Revoke::Revoked
        );
        assert_eq!(
            store.api_keys_revoked_since(3_500).await.unwrap(),
            vec!["member".to_owned()]
        );
        let mut since = store.api_keys_revoked_since(0).await.unwrap();
        since.sort();
        assert_eq!(since, ["admin", "member"]);
        // Revokes never clear the flag.
        assert!(store.keys_required().await.unwrap());
        db.finish().await;
    }
}

#[tokio::test]
async fn concurrent_revokes_leave_one_admin() {
    for db in test_dbs().await {
        let store = &db.store;
        let a = ProjectId::default_project();
        key(store, &a, "x", Role::Admin).await;
        key(store, &a, "y", Role::Admin).await;
        let (x, y) = tokio::join!(
            store.revoke_api_key(&a, "x", 2_000),
            store.revoke_api_key(&a, "y", 2_000)
        );
        let mut outcomes = [x.unwrap(), y.unwrap()];
        outcomes.sort_by_key(|o| format!("{o:?}"));
        assert_eq!(
            outcomes,
            [Revoke::LastAdmin, Revoke::Revoked],
            "{:?}",
            db.url
        );
        db.finish().await;
    }
}
