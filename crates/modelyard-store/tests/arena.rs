//! Arena picks: one per run, and the per-model wins and appearances they
//! add up to. Every test runs on SQLite and, when
//! `MODELYARD_TEST_POSTGRES_URL` is set, on PostgreSQL (see `common`).

mod common;

use common::test_dbs;
use modelyard_store::{ArenaModelStats, NewArenaPick, ProjectId, StoreError};

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
