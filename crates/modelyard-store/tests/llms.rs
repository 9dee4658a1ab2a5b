//! LLM configs: CRUD, paging, system defaults materialized once per preset
//! version (also under concurrency), referrers and delete protection. Every
//! test runs on SQLite and, when `MODELYARD_TEST_POSTGRES_URL` is set, on
//! PostgreSQL (see `common`).

mod common;

use std::collections::BTreeMap;
use std::str::FromStr;

use common::test_dbs;
use modelyard_core::conversation::EventPayload;
use modelyard_core::llm_config::{LlmSource, ProviderOptions};
use modelyard_store::{Backend, LlmConfigFields, LlmConfigFilter, ProjectId, Store, StoreError};
use serde_json::{json, Value};

fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn fields(name: &str, model: &str) -> LlmConfigFields {
    LlmConfigFields {
        display_name: name.to_owned(),
        model: model.to_owned(),
        system_prompt: Some(format!("You are {name}.")),
        provider_options: ProviderOptions {
            temperature: Some(0.25),
            max_tokens: Some(128),
            stop: Some(vec!["END".into()]),
            extra: Some(json!({"min_p": 0.05})),
            ..ProviderOptions::default()
        },
        base_url: None,
    }
}

async fn create_conversation(
    store: &Store,
    project: &ProjectId,
    llm_id: Option<&str>,
    overrides: &[(&str, &str)],
) -> String {
    let id = new_id();
    store
        .append_events(
            project,
            &id,
            &[EventPayload::ConversationCreated {
                advisor: false,
                title: None,
                parent_id: None,
                model: None,
                cwd: None,
                reasoning_effort: None,
                metadata: Value::Null,
                llm_id: llm_id.map(str::to_owned),
                llm_overrides: overrides
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            }],
            1,
        )
        .await
        .expect("create conversation");
    id
}

#[tokio::test]
async fn crud_round_trips_and_pages_newest_first() {
    for db in test_dbs().await {
        let store = &db.store;
        let project = ProjectId::default_project();
        let mut ids = Vec::new();
        for i in 0..5 {
            let id = new_id();
            let row = store
                .create_llm_config(&project, &id, &fields(&format!("c{i}"), "mock/m"), 100 + i)
                .await
                .expect("create");
            assert_eq!(row.source, LlmSource::User);
            assert_eq!(row.created_at_ms, 100 + i);
            assert_eq!(
                store.get_llm_config(&project, &id).await.unwrap(),
                Some(row)
            );
            ids.push(id);
        }
        // Same id again: Duplicate, nothing changes.
        assert!(matches!(
            store
                .create_llm_config(&project, &ids[0], &fields("again", "mock/m"), 1)
                .await,
            Err(StoreError::Duplicate { .. })
        ));
        assert!(matches!(
            store
                .create_llm_config(&project, &new_id(), &fields("x", ""), 1)
                .await,
            Err(StoreError::InvalidInput { .. })
        ));

        // Pages of 2, newest first.
        let mut seen = Vec::new();
        let mut filter = LlmConfigFilter {
            limit: 2,
            before: None,
        };
        loop {
            let page = store.list_llm_configs(&project, &filter).await.unwrap();
            seen.extend(page.iter().map(|r| r.id.clone()));
            match page.last() {
                Some(last) if page.len() == 2 => {
                    filter.before = Some((last.created_at_ms, last.id.clone()))
                }
                _ => break,
            }
        }
        let mut newest_first = ids.clone();
        newest_first.reverse();
        assert_eq!(seen, newest_first);

        // Update.
        let mut changed = fields("renamed", "mock/other");
        changed.system_prompt = None;
        changed.provider_options = ProviderOptions::default();
        changed.base_url = Some("http://127.0.0.1:9/v1".into());
        let row = store
            .update_llm_config(&project, &ids[1], &changed, 500)
            .await
            .unwrap();
        assert_eq!(row.fields, changed);
        assert_eq!((row.created_at_ms, row.updated_at_ms), (101, 500));
        assert!(matches!(
            store.update_llm_config(&project, "nope", &changed, 1).await,
            Err(StoreError::NotFound { .. })
        ));

        // Soft delete: gone from the list, still readable as deleted.
        store
            .delete_llm_config(&project, &ids[2], 600)
            .await
            .unwrap();
        let row = store
            .get_llm_config(&project, &ids[2])
            .await
            .unwrap()
            .unwrap();
        assert!(row.deleted);
        let all = store
            .list_llm_configs(&project, &LlmConfigFilter::default())
            .await
            .unwrap();
        assert_eq!(all.len(), 4);
        assert!(all.iter().all(|r| r.id != ids[2]));
        assert!(matches!(
            store.delete_llm_config(&project, &ids[2], 601).await,
            Err(StoreError::NotFound { .. })
        ));
        assert!(matches!(
            store
                .update_llm_config(&project, &ids[2], &changed, 602)
                .await,
            Err(StoreError::NotFound { .. })
        ));

        // Another project sees none of it.
        let other = store.create_project("other").await.unwrap();
        assert!(store
            .list_llm_configs(&other, &LlmConfigFilter::default())
            .await
            .unwrap()
            .is_empty());
        assert_eq!(store.get_llm_config(&other, &ids[0]).await.unwrap(), None);
        assert!(matches!(
            store.delete_llm_config(&other, &ids[0], 1).await,
            Err(StoreError::NotFound { .. })
        ));
        db.finish().await;
    }
}

#[tokio::test]
async fn system_defaults_are_created_once_per_preset_version() {
    for db in test_dbs().await {
        let store = &db.store;
        let project = ProjectId::default_project();
        let v1 = store
            .ensure_system_default(
                &project,
                "chat",
                1,
                &new_id(),
                &fields("chat", "mock/a"),
                10,
            )
            .await
            .unwrap();
        assert_eq!(v1.source, LlmSource::SystemDefault);
        assert_eq!(v1.preset_name.as_deref(), Some("chat"));
        assert_eq!(v1.preset_version, Some(1));
        // Same version, other fields: the stored row as it is.
        let again = store
            .ensure_system_default(
                &project,
                "chat",
                1,
                &new_id(),
                &fields("chat", "mock/b"),
                20,
            )
            .await
            .unwrap();
        assert_eq!(again, v1);
        // A new version is a new row; the old one stays.
        let v2 = store
            .ensure_system_default(
                &project,
                "chat",
                2,
                &new_id(),
                &fields("chat", "mock/b"),
                30,
            )
            .await
            .unwrap();
        assert_ne!(v2.id, v1.id);
        assert_eq!(v2.fields.model, "mock/b");
        assert_eq!(
            store.get_llm_config(&project, &v1.id).await.unwrap(),
            Some(v1.clone())
        );
        // Another preset name at the same version is its own row.
        let title = store
            .ensure_system_default(&project, "title", 1, &new_id(), &fields("t", "mock/t"), 40)
            .await
            .unwrap();
        assert_ne!(title.id, v1.id);

        // System defaults cannot be updated or deleted.
        assert!(matches!(
            store
                .update_llm_config(&project, &v1.id, &fields("x", "mock/x"), 50)
                .await,
            Err(StoreError::Conflict { .. })
        ));
        assert!(matches!(
            store.delete_llm_config(&project, &v1.id, 50).await,
            Err(StoreError::Conflict { .. })
        ));
        assert_eq!(
            store.get_llm_config(&project, &v1.id).await.unwrap(),
            Some(v1)
        );
        assert_eq!(
            store
                .list_llm_configs(&project, &LlmConfigFilter::default())
                .await
                .unwrap()
                .len(),
            3
        );
        db.finish().await;
    }
}

#[tokio::test]
async fn concurrent_first_materializations_make_one_row() {
    for db in test_dbs().await {
        let project = ProjectId::default_project();
        for round in 0..5 {
            let version = round + 1;
            let mut tasks = Vec::new();
            for i in 0..2 {
                let store = db.store.clone();
                let project = project.clone();
                tasks.push(tokio::spawn(async move {
                    store
                        .ensure_system_default(
                            &project,
                            "default",
                            version,
                            &new_id(),
                            &fields(&format!("d{i}"), "mock/d"),
                            version,
                        )
                        .await
                }));
            }
            let mut ids = Vec::new();
            for task in tasks {
                ids.push(task.await.expect("task").expect("ensure").id);
            }
            assert_eq!(
                ids[0], ids[1],
                "round {round}: both calls return the one row"
            );
        }
        let rows = db
            .store
            .list_llm_configs(&project, &LlmConfigFilter::default())
            .await
            .unwrap();
        assert_eq!(rows.len(), 5, "one row per version: {rows:#?}");
        db.finish().await;
    }
}

#[tokio::test]
async fn referenced_configs_cannot_be_deleted() {
    for db in test_dbs().await {
        let store = &db.store;
        let project = ProjectId::default_project();
        let a = new_id();
        let b = new_id();
        let unused = new_id();
        for id in [&a, &b, &unused] {
            store
                .create_llm_config(&project, id, &fields("x", "mock/x"), 1)
                .await
                .unwrap();
        }
        let by_default = create_conversation(store, &project, Some(&a), &[]).await;
        let by_override =
            create_conversation(store, &project, None, &[("title", &a), ("chat", &b)]).await;
        // A key equal to the id is no reference; nor is a longer id.
        let by_key = create_conversation(store, &project, None, &[("x", "y")]).await;
        let _ = by_key;

        let mut want = vec![by_default.clone(), by_override.clone()];
        want.sort();
        assert_eq!(store.config_referrers(&project, &a).await.unwrap(), want);
        assert_eq!(
            store.config_referrers(&project, &b).await.unwrap(),
            vec![by_override.clone()]
        );
        assert!(store
            .config_referrers(&project, &unused)
            .await
            .unwrap()
            .is_empty());
        assert!(store
            .config_referrers(&project, &a[..10])
            .await
            .unwrap()
            .is_empty());

        match store.delete_llm_config(&project, &a, 5).await {
            Err(StoreError::InUse { referrers, .. }) => assert_eq!(referrers, want),
            other => panic!("expected InUse, got {other:?}"),
        }
        assert!(
            !store
                .get_llm_config(&project, &a)
                .await
                .unwrap()
                .unwrap()
                .deleted
        );

        // Once the conversations let go (deleted, or overrides changed), it can go.
        store
            .append_events(
                &project,
                &by_override,
                &[EventPayload::LlmChanged {
                    llm_id: None,
                    llm_overrides: Some(BTreeMap::from([("chat".to_owned(), b.clone())])),
                }],
                6,
            )
            .await
            .unwrap();
        store
            .append_events(
                &project,
                &by_default,
                &[EventPayload::ConversationDeleted {}],
                7,
            )
            .await
            .unwrap();
        assert!(store
            .config_referrers(&project, &a)
            .await
            .unwrap()
            .is_empty());
        store.delete_llm_config(&project, &a, 8).await.unwrap();
        assert!(matches!(
            store.delete_llm_config(&project, &b, 9).await,
            Err(StoreError::InUse { .. })
        ));
        store.delete_llm_config(&project, &unused, 9).await.unwrap();
        db.finish().await;
    }
}

#[tokio::test]
async fn every_update_is_a_new_version_and_every_version_stays_readable() {
    for db in test_dbs().await {
        let store = &db.store;
        let project = ProjectId::default_project();
        let id = new_id();
        let v1 = fields("v1", "mock/a");
        let row = store
            .create_llm_config(&project, &id, &v1, 100)
            .await
            .unwrap();
        assert_eq!(row.version, 1);
        let versions = store
            .list_llm_config_versions(&project, &id, 0, None)
            .await
            .unwrap();
        assert_eq!(versions.len(), 1);
        assert_eq!(
            (versions[0].llm_id.as_str(), versions[0].version),
            (id.as_str(), 1)
        );
        assert_eq!(versions[0].fields, v1);
        assert_eq!(versions[0].created_at_ms, 100);

        // Two updates: versions 2 and 3, each with its body and time.
        let mut v2 = fields("v2", "mock/b");
        v2.system_prompt = None;
        v2.base_url = Some("http://127.0.0.1:9/v1".into());
        let mut v3 = fields("v3", "mock/c");
        v3.provider_options = ProviderOptions {
            seed: Some(7),
            ..ProviderOptions::default()
        };
        let row = store
            .update_llm_config(&project, &id, &v2, 200)
            .await
            .unwrap();
        assert_eq!(row.version, 2);
        let row = store
            .update_llm_config(&project, &id, &v3, 300)
            .await
            .unwrap();
        assert_eq!((row.version, row.fields.clone()), (3, v3.clone()));
        assert_eq!(
            store.get_llm_config(&project, &id).await.unwrap(),
            Some(row)
        );
        let versions = store
            .list_llm_config_versions(&project, &id, 0, None)
            .await
            .unwrap();
        let summary: Vec<(i64, &LlmConfigFields, i64)> = versions
            .iter()
            .map(|v| (v.version, &v.fields, v.created_at_ms))
            .collect();
        assert_eq!(summary, vec![(3, &v3, 300), (2, &v2, 200), (1, &v1, 100)]);
        for v in &versions {
            assert_eq!(
                store
                    .get_llm_config_version(&project, &id, v.version)
                    .await
                    .unwrap()
                    .as_ref(),
                Some(v)
            );
        }
        assert_eq!(
            store
                .get_llm_config_version(&project, &id, 4)
                .await
                .unwrap(),
            None
        );

        // Pages, newest first.
        let page = store
            .list_llm_config_versions(&project, &id, 2, None)
            .await
            .unwrap();
        assert_eq!(page.iter().map(|v| v.version).collect::<Vec<_>>(), [3, 2]);
        let page = store
            .list_llm_config_versions(&project, &id, 2, Some(2))
            .await
            .unwrap();
        assert_eq!(page.iter().map(|v| v.version).collect::<Vec<_>>(), [1]);

        // A refused update writes no version.
        assert!(matches!(
            store
                .update_llm_config(&project, &id, &fields("", "mock/x"), 350)
                .await,
            Err(StoreError::InvalidInput { .. })
        ));
        // Deleting keeps every version; an update of the deleted config
        // writes none.
        store.delete_llm_config(&project, &id, 400).await.unwrap();
        assert!(matches!(
            store.update_llm_config(&project, &id, &v1, 500).await,
            Err(StoreError::NotFound { .. })
        ));
        let after = store
            .list_llm_config_versions(&project, &id, 0, None)
            .await
            .unwrap();
        assert_eq!(after, versions);
        assert_eq!(
            store
                .get_llm_config_version(&project, &id, 1)
                .await
                .unwrap()
                .map(|v| v.fields),
            Some(v1)
        );

        // Another project sees none of it.
        let other = store.create_project("other").await.unwrap();
        assert!(store
            .list_llm_config_versions(&other, &id, 0, None)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(
            store.get_llm_config_version(&other, &id, 1).await.unwrap(),
            None
        );
        db.finish().await;
    }
}

#[tokio::test]
async fn a_system_default_is_its_version_one_once() {
    for db in test_dbs().await {
        let store = &db.store;
        let project = ProjectId::default_project();
        let mut tasks = Vec::new();
        for i in 0..2 {
            let store = store.clone();
            let project = project.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .ensure_system_default(
                        &project,
                        "default",
                        1,
                        &new_id(),
                        &fields(&format!("d{i}"), "mock/d"),
                        10,
                    )
                    .await
            }));
        }
        let mut rows = Vec::new();
        for task in tasks {
            rows.push(task.await.expect("task").expect("ensure"));
        }
        assert_eq!(rows[0], rows[1]);
        assert_eq!(rows[0].version, 1);
        let versions = store
            .list_llm_config_versions(&project, &rows[0].id, 0, None)
            .await
            .unwrap();
        assert_eq!(versions.len(), 1, "{versions:#?}");
        assert_eq!(versions[0].version, 1);
        assert_eq!(versions[0].fields, rows[0].fields);
        // Read back later: still one version.
        store
            .ensure_system_default(
                &project,
                "default",
                1,
                &new_id(),
                &fields("x", "mock/d"),
                20,
            )
            .await
            .unwrap();
        assert_eq!(
            store
                .list_llm_config_versions(&project, &rows[0].id, 0, None)
                .await
                .unwrap()
                .len(),
            1
        );
        db.finish().await;
    }
}

#[tokio::test]
async fn the_latest_system_default_of_a_preset_is_its_highest_version() {
    for db in test_dbs().await {
        let store = &db.store;
        let project = ProjectId::default_project();
        assert_eq!(
            store
                .latest_system_default(&project, "defaults.model")
                .await
                .unwrap(),
            None
        );
        for version in [2, 1, 3] {
            store
                .ensure_system_default(
                    &project,
                    "defaults.model",
                    version,
                    &new_id(),
                    &fields(&format!("v{version}"), "mock/d"),
                    version,
                )
                .await
                .unwrap();
        }
        store
            .ensure_system_default(&project, "other", 9, &new_id(), &fields("o", "mock/o"), 9)
            .await
            .unwrap();
        let latest = store
            .latest_system_default(&project, "defaults.model")
            .await
            .unwrap()
            .expect("latest");
        assert_eq!(latest.preset_version, Some(3));
        assert_eq!(latest.fields.display_name, "v3");
        db.finish().await;
    }
}

/// Applies the migrations of `backend` up to `last` (inclusive) to the
/// empty database at `url`, as an older server would have.
async fn migrate_up_to(backend: Backend, url: &str, last: i64) {
    let dir = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(dir);
    let mut migrator = sqlx::migrate::Migrator::new(path)
        .await
        .expect("read migrations");
    let older: Vec<sqlx::migrate::Migration> = migrator
        .migrations
        .iter()
        .filter(|m| m.version <= last)
        .cloned()
        .collect();
    migrator.migrations = older.into();
    match backend {
        Backend::Sqlite => {
            let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)
                .expect("sqlite URL")
                .create_if_missing(true);
            let pool = sqlx::SqlitePool::connect_with(options)
                .await
                .expect("open sqlite");
            migrator.run(&pool).await.expect("migrate");
            pool.close().await;
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(url).await.expect("open postgres");
            migrator.run(&pool).await.expect("migrate");
            pool.close().await;
        }
    }
}

#[tokio::test]
async fn configs_that_exist_at_migration_0018_are_their_version_one() {
    for (backend, url, cleanup) in common::empty_dbs().await {
        migrate_up_to(backend, &url, 17).await;
        // A config written (and changed) by a server before versions.
        let id = new_id();
        let sql = "INSERT INTO llm_configs (project_id, id, source, display_name, model, \
                   system_prompt, provider_options_json, base_url, preset_name, preset_version, \
                   created_at_ms, updated_at_ms, deleted) \
                   VALUES ('default', $1, 'user', 'old', 'mock/old', 'Be old.', \
                   '{\"temperature\":0.5}', NULL, NULL, NULL, 100, 250, $2)";
        match backend {
            Backend::Sqlite => {
                let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
                sqlx::query(sql)
                    .bind(&id)
                    .bind(false)
                    .execute(&pool)
                    .await
                    .unwrap();
                pool.close().await;
            }
            Backend::Postgres => {
                let pool = sqlx::PgPool::connect(&url).await.unwrap();
                sqlx::query(sql)
                    .bind(&id)
                    .bind(false)
                    .execute(&pool)
                    .await
                    .unwrap();
                pool.close().await;
            }
        }

        let store = Store::connect(&url).await.expect("migrate to the newest");
        let project = ProjectId::default_project();
        let row = store
            .get_llm_config(&project, &id)
            .await
            .unwrap()
            .expect("the config");
        assert_eq!(row.version, 1, "{backend}");
        let versions = store
            .list_llm_config_versions(&project, &id, 0, None)
            .await
            .unwrap();
        assert_eq!(versions.len(), 1, "{backend}: {versions:#?}");
        assert_eq!(versions[0].version, 1);
        assert_eq!(versions[0].fields, row.fields);
        assert_eq!(versions[0].fields.system_prompt.as_deref(), Some("Be old."));
        assert_eq!(versions[0].created_at_ms, 250, "written at its last update");
        // The next change is version 2.
        let changed = store
            .update_llm_config(&project, &id, &fields("new", "mock/new"), 300)
            .await
            .unwrap();
        assert_eq!(changed.version, 2);
        store.close().await;
        drop(cleanup);
    }
}
