//! Arena picks: one per run, and the per-model wins and appearances they
//! add up to. Every test runs on SQLite and, when
//! `MODELYARD_TEST_POSTGRES_URL` is set, on PostgreSQL (see `common`).

#![allow(clippy::unwrap_used)]

mod common;

use common::test_dbs;
use modelyard_core::conversation::{
    ArenaOutcome, ArenaStatus, EventPayload, PendingArena, ResolvedFrom, TokenUsage, TurnStatus,
};
use modelyard_store::{ArenaModelStats, Backend, NewArenaPick, ProjectId, Store, StoreError};

fn pick(run: &str, model: &str, others: &[&str], at: i64) -> NewArenaPick {
    NewArenaPick {
        run_id: run.to_owned(),
        conversation_id: None,
        model: model.to_owned(),
        others: others.iter().map(|o| (*o).to_owned()).collect(),
        created_at_ms: at,
    }
}

fn stats(model: &str, wins: u64, appearances: u64) -> ArenaModelStats {
    ArenaModelStats {
        model: model.to_owned(),
        wins,
        appearances,
    }
}

#[tokio::test]
async fn picks_add_up_to_wins_and_appearances_per_model() {
    for db in test_dbs().await {
        let store = &db.store;
        let project = ProjectId::default_project();
        store
            .insert_arena_pick(&project, &pick("r1", "a", &["b"], 100))
            .await
            .unwrap();
        store
            .insert_arena_pick(&project, &pick("r2", "a", &["b", "c"], 200))
            .await
            .unwrap();
        let mut in_conversation = pick("r3", "c", &["a"], 300);
        in_conversation.conversation_id = Some("conv".into());
        store
            .insert_arena_pick(&project, &in_conversation)
            .await
            .unwrap();
        assert_eq!(
            store.arena_stats(&project, 0).await.unwrap(),
            vec![stats("a", 2, 3), stats("c", 1, 2), stats("b", 0, 2)]
        );
        // `since` leaves older picks out.
        assert_eq!(
            store.arena_stats(&project, 200).await.unwrap(),
            vec![stats("a", 1, 2), stats("c", 1, 2), stats("b", 0, 1)]
        );
        assert_eq!(
            store.arena_pick(&project, "r3").await.unwrap().as_deref(),
            Some("c")
        );
        assert_eq!(store.arena_pick(&project, "nope").await.unwrap(), None);
        db.finish().await;
    }
}

#[tokio::test]
async fn a_run_is_picked_once() {
    for db in test_dbs().await {
        let store = &db.store;
        let project = ProjectId::default_project();
        store
            .insert_arena_pick(&project, &pick("r1", "a", &["b"], 100))
            .await
            .unwrap();
        let again = store
            .insert_arena_pick(&project, &pick("r1", "b", &["a"], 101))
            .await;
        assert!(
            matches!(again, Err(StoreError::Conflict { .. })),
            "{again:?}"
        );
        assert_eq!(
            store.arena_stats(&project, 0).await.unwrap(),
            vec![stats("a", 1, 1), stats("b", 0, 1)]
        );
        db.finish().await;
    }
}

fn outcome(model: &str) -> ArenaOutcome {
    ArenaOutcome {
        model: model.to_owned(),
        status: ArenaStatus::Completed,
        text: "hi".into(),
        usage: TokenUsage::default(),
        error: None,
        model_id: Some(model.to_owned()),
        ttft_ms: Some(1),
        duration_ms: 2,
    }
}

/// A conversation whose arena turn `t1` (run `r1`, models `a/x`, `b/y`)
/// started: seq 1 to 3.
fn arena_start() -> [EventPayload; 3] {
    [
        EventPayload::ConversationCreated {
            title: None,
            parent_id: None,
            model: None,
            cwd: None,
            reasoning_effort: None,
            advisor: false,
            metadata: serde_json::Value::Null,
            llm_id: None,
            llm_overrides: Default::default(),
        },
        EventPayload::TurnStarted {
            turn_id: "t1".into(),
            operation: "arena".into(),
            model_id: "a/x".into(),
            resolved_from: ResolvedFrom::Request,
            llm_config_id: None,
            client_tools: None,
        },
        EventPayload::ArenaStarted {
            turn_id: "t1".into(),
            run_id: "r1".into(),
            models: vec!["a/x".into(), "b/y".into()],
        },
    ]
}

#[tokio::test]
async fn an_arena_turn_keeps_its_run_and_is_no_running_turn_while_it_waits() {
    for db in test_dbs().await {
        let store = &db.store;
        let project = ProjectId::default_project();
        let conv = uuid::Uuid::now_v7().to_string();
        let start = arena_start();
        store
            .append_events(&project, &conv, &start, 1)
            .await
            .unwrap();
        let turn = store.get_turn(&project, "t1").await.unwrap().unwrap();
        assert_eq!(turn.arena_run_id.as_deref(), Some("r1"));
        assert_eq!(store.running_turns().await.unwrap().len(), 1);
        let completed = [EventPayload::ArenaCompleted {
            turn_id: "t1".into(),
            run_id: "r1".into(),
            results: vec![outcome("a/x"), outcome("b/y")],
        }];
        store
            .append_events(&project, &conv, &completed, 2)
            .await
            .unwrap();
        let turn = store.get_turn(&project, "t1").await.unwrap().unwrap();
        assert_eq!(turn.status, TurnStatus::AwaitingPick);
        assert_eq!(turn.arena_run_id.as_deref(), Some("r1"));
        // The conversation names the run that waits, in the list too.
        let pending = Some(PendingArena {
            run_id: "r1".into(),
            turn_id: "t1".into(),
        });
        let read = store.get_conversation(&project, &conv).await.unwrap();
        assert_eq!(read.unwrap().pending_arena, pending);
        let listed = store
            .list_conversations(&project, &Default::default())
            .await
            .unwrap();
        let listed = listed.iter().find(|c| c.id == conv).unwrap();
        assert_eq!(listed.pending_arena, pending);
        // The sweeper looks at running turns only: a pick may wait forever.
        assert!(store.running_turns().await.unwrap().is_empty());
        // A second pick of the run is refused by the fold.
        let pick = |model: &str| EventPayload::ArenaPicked {
            turn_id: "t1".into(),
            run_id: "r1".into(),
            model: model.into(),
        };
        let done = EventPayload::TurnCompleted {
            turn_id: "t1".into(),
        };
        store
            .append_events(&project, &conv, &[pick("b/y"), done], 3)
            .await
            .unwrap();
        assert!(matches!(
            store
                .append_events(&project, &conv, &[pick("a/x")], 4)
                .await,
            Err(StoreError::Conflict { .. })
        ));
        let turn = store.get_turn(&project, "t1").await.unwrap().unwrap();
        assert_eq!(turn.status, TurnStatus::Completed);
        assert_eq!(turn.model_id, "b/y");
        let read = store.get_conversation(&project, &conv).await.unwrap();
        assert_eq!(read.unwrap().pending_arena, None, "picked");
        db.finish().await;
    }
}

/// Runs `sql` on the database at `url`.
async fn execute(backend: Backend, url: &str, sql: &str) {
    match backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(url).await.unwrap();
            sqlx::query(sql).execute(&pool).await.unwrap();
            pool.close().await;
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            sqlx::query(sql).execute(&pool).await.unwrap();
            pool.close().await;
        }
    }
}

#[tokio::test]
async fn a_pick_pending_before_migration_0020_is_named_after_it() {
    for db in test_dbs().await {
        let project = ProjectId::default_project();
        let conv = uuid::Uuid::now_v7().to_string();
        let waiting = uuid::Uuid::now_v7().to_string();
        let (store, backend) = (&db.store, db.store.backend());
        store
            .append_events(&project, &conv, &arena_start(), 1)
            .await
            .unwrap();
        let completed = [EventPayload::ArenaCompleted {
            turn_id: "t1".into(),
            run_id: "r1".into(),
            results: vec![outcome("a/x"), outcome("b/y")],
        }];
        store
            .append_events(&project, &conv, &completed, 4)
            .await
            .unwrap();
        // Another conversation whose arena is still running: nothing waits.
        let mut running = arena_start();
        if let EventPayload::TurnStarted { turn_id, .. } = &mut running[1] {
            *turn_id = "t2".into();
        }
        if let EventPayload::ArenaStarted {
            turn_id, run_id, ..
        } = &mut running[2]
        {
            (*turn_id, *run_id) = ("t2".into(), "r2".into());
        }
        store
            .append_events(&project, &waiting, &running, 1)
            .await
            .unwrap();
        store.close().await;
        // The database as a server before migration 0020 left it.
        for sql in [
            "ALTER TABLE conversations DROP COLUMN pending_arena_run_id",
            "ALTER TABLE conversations DROP COLUMN pending_arena_turn_id",
            "DELETE FROM _sqlx_migrations WHERE version = 20",
        ] {
            execute(backend, &db.url, sql).await;
        }
        let store = Store::connect(&db.url)
            .await
            .expect("migrate to the newest");
        let read = store.get_conversation(&project, &conv).await.unwrap();
        assert_eq!(
            read.unwrap().pending_arena,
            Some(PendingArena {
                run_id: "r1".into(),
                turn_id: "t1".into(),
            }),
            "{backend}"
        );
        let read = store.get_conversation(&project, &waiting).await.unwrap();
        assert_eq!(read.unwrap().pending_arena, None, "{backend}");
        store.close().await;
        db.finish().await;
    }
}
