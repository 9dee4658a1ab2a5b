//! Database faults against the built binary: the SQLite writer held by
//! another connection for 15 s while a turn runs. The turn's closing append
//! is retried until the lock goes; nothing is left `running`, `seq` stays
//! gap-free and the conversation is usable again without a restart.

mod common;

use std::time::Duration;

use common::{
    assert_store_consistent, conversation_usable, create_conversation, long_text, start_turn, Dir,
    Server,
};
use modelyard_testkit::MockUpstream;
use sqlx::{ConnectOptions, Connection, Executor};
use tokio::time::Instant;

/// How long the test holds the write lock.
const HOLD: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_ends_once_a_writer_held_for_15_s_lets_go() {
    let mock = MockUpstream::start().await;
    mock.set_listed_models(Some(vec![
        "slow-first:2000".into(),
        "slow:200".into(),
        "echo".into(),
    ]));
    let dir = Dir::new("sqlite-lock");
    let server = Server::start(&dir, &mock).await;
    let conv = create_conversation(&server, "mock/slow-first:2000").await;
    // Given a turn whose answer comes in 2 s, all at once (no checkpoint
    // write on its way)...
    let turn_id = start_turn(&server, &conv, &long_text(20), None).await;
    // ...when another connection holds the write lock for 15 s, over the
    // turn's end and past several busy timeouts...
    let mut blocker = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(dir.db())
        .busy_timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("open the database");
    blocker
        .execute("BEGIN IMMEDIATE")
        .await
        .expect("take the write lock");
    let locked_at = Instant::now();
    tokio::time::sleep(HOLD / 2).await;
    let turns = server.get(&format!("/v1/conversations/{conv}/turns")).await;
    assert_eq!(
        turns["data"][0]["status"], "running",
        "the end waits for the lock"
    );
    tokio::time::sleep(HOLD.saturating_sub(locked_at.elapsed())).await;
    blocker
        .execute("COMMIT")
        .await
        .expect("release the write lock");
    let _ = blocker.close().await;

    // ...then the turn still ends, with its answer, once the lock goes.
    let turn = server.wait_turn(&conv, &turn_id).await;
    assert_eq!(turn["status"], "completed", "{turn}");
    let c = server.get(&format!("/v1/conversations/{conv}")).await;
    assert_eq!(c["status"], "idle", "{c}");
    let log = server.log(&conv).await;
    assert_eq!(log.last().unwrap().event, "turn.completed", "{log:#?}");
    conversation_usable(&server, &conv).await;
    drop(server);
    assert_eq!(
        assert_store_consistent(&format!("sqlite://{}", dir.db().display())).await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_streams_on_while_the_writer_is_held() {
    let mock = MockUpstream::start().await;
    mock.set_listed_models(Some(vec![
        "slow:100".into(),
        "slow:200".into(),
        "echo".into(),
    ]));
    let dir = Dir::new("sqlite-lock-stream");
    let server = Server::start(&dir, &mock).await;
    let conv = create_conversation(&server, "mock/slow:100").await;
    let mut sse = server.events(&conv).await;
    let prompt = long_text(30);
    let answer = format!("echo: {prompt}");
    let turn_id = start_turn(&server, &conv, &prompt, None).await;
    let mut streamed = String::new();
    // Given a turn streaming for about 3 s (its first delta arrived)...
    while streamed.is_empty() {
        let ev = sse.next().await.expect("turn events");
        if ev.event == "text.delta" {
            streamed.push_str(ev.data["delta"].as_str().unwrap());
        }
    }
    // ...when another connection holds the write lock for 8 s...
    let mut blocker = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(dir.db())
        .busy_timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("open the database");
    blocker
        .execute("BEGIN IMMEDIATE")
        .await
        .expect("take the write lock");
    let locked_at = Instant::now();
    // ...the whole answer still streams to the subscriber while it is held:
    // the turn's checkpoints wait for the database beside the stream, not in it.
    while streamed != answer {
        let ev = tokio::time::timeout(
            Duration::from_secs(8).saturating_sub(locked_at.elapsed()),
            sse.next(),
        )
        .await
        .unwrap_or_else(|_| panic!("stalled at {streamed:?} while the writer was held"))
        .expect("turn events");
        if ev.event == "text.delta" {
            streamed.push_str(ev.data["delta"].as_str().unwrap());
        }
    }
    assert!(locked_at.elapsed() < Duration::from_secs(8));
    tokio::time::sleep(Duration::from_secs(8).saturating_sub(locked_at.elapsed())).await;
    blocker
        .execute("COMMIT")
        .await
        .expect("release the write lock");
    let _ = blocker.close().await;
    let turn = server.wait_turn(&conv, &turn_id).await;
    assert_eq!(turn["status"], "completed", "{turn}");
    drop(server);
    assert_store_consistent(&format!("sqlite://{}", dir.db().display())).await;
}
