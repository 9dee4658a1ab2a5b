//! Randomized crash test: 50 times, start a long turn on a slowly streaming
//! mock, SIGKILL the built binary at a random moment (before, during or
//! after the turn's start is committed), and restart it on the same SQLite
//! file. Every turn ends in a terminal state after the restart, `seq` is
//! gap-free and the tables equal the fold, `PRAGMA integrity_check` is ok,
//! and a turn's checkpointed text is consistent with what a subscriber saw.
//!
//! The moments come from a seeded RNG; the seed is printed, and
//! `MODELYARD_CRASH_SEED=<seed>` replays a run.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{assert_store_consistent, create_conversation, long_text, Dir, Server};
use modelyard_testkit::MockUpstream;
use serde_json::json;

const ROUNDS: usize = 50;
/// Words of the turn's prompt; the mock echoes them back, one per event.
const WORDS: usize = 200;

/// xorshift64*: small, seeded, good enough to pick moments.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// One round's turn, as the test saw it before the kill.
struct Round {
    conv: String,
    turn_id: Option<String>,
    seen: Arc<Mutex<String>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_sigkills_during_turns_lose_nothing() {
    let seed = std::env::var("MODELYARD_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("crash_random seed: {seed} (MODELYARD_CRASH_SEED={seed} replays it)");
    let mut rng = Rng(seed);
    let mock = MockUpstream::start().await;
    mock.set_listed_models(Some(vec!["slow:20".into()]));
    let dir = Dir::new("random");
    let prompt = long_text(WORDS);
    let answer = format!("echo: {prompt}");
    let mut server = Server::start(&dir, &mock).await;
    let mut rounds: Vec<Round> = Vec::new();
    for round in 0..ROUNDS {
        let conv = create_conversation(&server, "mock/slow:20").await;
        // A subscriber collects the streamed text until the process dies.
        let seen = Arc::new(Mutex::new(String::new()));
        let mut sse = server.events(&conv).await;
        let collected = Arc::clone(&seen);
        let reader = tokio::spawn(async move {
            while let Some(ev) = sse.next().await {
                if ev.event == "text.delta" {
                    let delta = ev.data["delta"].as_str().unwrap_or_default().to_owned();
                    collected.lock().unwrap().push_str(&delta);
                }
            }
        });
        let start = server
            .http
            .post(server.url(&format!("/v1/conversations/{conv}/turns")))
            .json(&json!({"content": prompt}))
            .send();
        let start = tokio::spawn(start);
        // Kill at a random moment: mostly mid-stream, sometimes while the
        // start is still being committed.
        let wait_ms = match rng.below(10) {
            0 => rng.below(5),
            _ => rng.below(1_500),
        };
        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        server.child.kill().expect("SIGKILL");
        server.wait_exit().await;
        let turn_id = match start.await.unwrap() {
            Ok(response) if response.status() == 202 => response
                .json::<serde_json::Value>()
                .await
                .ok()
                .and_then(|v| v["turnId"].as_str().map(str::to_owned)),
            _ => None,
        };
        let _ = reader.await;
        eprintln!("round {round}: killed after {wait_ms} ms, turn {turn_id:?}");
        rounds.push(Round {
            conv,
            turn_id,
            seen,
        });
        drop(server);
        server = Server::start(&dir, &mock).await;
        // The restart closed the turn: it is not running any more.
        let last = rounds.last().unwrap();
        let turns = server
            .get(&format!("/v1/conversations/{}/turns", last.conv))
            .await;
        for turn in turns["data"].as_array().unwrap() {
            assert_ne!(turn["status"], "running", "round {round}: {turn}");
        }
    }

    // Every turn's end is in the log; its checkpointed text is a prefix of
    // the answer and agrees with what the subscriber saw.
    for (i, round) in rounds.iter().enumerate() {
        let log = server.log(&round.conv).await;
        let ends: Vec<_> = log
            .iter()
            .filter(|e| e.event.starts_with("turn.") && e.event != "turn.started")
            .collect();
        let started = log.iter().filter(|e| e.event == "turn.started").count();
        assert_eq!(
            ends.len(),
            started,
            "round {i}: every started turn ended: {log:#?}"
        );
        if let Some(turn_id) = &round.turn_id {
            assert_eq!(started, 1, "round {i}: {log:#?}");
            assert_eq!(ends[0].data["turnId"], turn_id.as_str());
        }
        let seen = round.seen.lock().unwrap().clone();
        assert!(answer.starts_with(&seen), "round {i}: saw {seen:?}");
        for end in ends {
            if let Some(partial) = end.data["partialText"].as_str() {
                assert!(
                    answer.starts_with(partial),
                    "round {i}: partial text {partial:?} is a prefix of the answer"
                );
                assert!(
                    seen.starts_with(partial) || partial.starts_with(&seen),
                    "round {i}: partial text {partial:?} vs seen {seen:?}"
                );
            }
        }
    }
    drop(server);
    let checked = assert_store_consistent(&format!("sqlite://{}", dir.db().display())).await;
    assert_eq!(checked, ROUNDS);
    eprintln!("crash_random seed {seed}: {ROUNDS} rounds consistent");
}
