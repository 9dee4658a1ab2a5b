//! LLM configs: CRUD, paging, system defaults materialized once per preset
//! version (also under concurrency), referrers and delete protection. Every
//! test runs on SQLite and, when `MODELYARD_TEST_POSTGRES_URL` is set, on
//! PostgreSQL (see `common`).

mod common;

use std::collections::BTreeMap;

use common::test_dbs;
use modelyard_core::conversation::EventPayload;
use modelyard_core::llm_config::{LlmSource, ProviderOptions};
use modelyard_store::{LlmConfigFields, LlmConfigFilter, ProjectId, Store, StoreError};
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
