//! Unit tests of the live-turn buffers.

use super::*;

#[test]
fn overflow_coalesces_text_without_losing_it() {
    let turns = LiveTurns::new(16, 1024);
    let turn = turns.start("c", "t", 3, 4);
    for i in 0..100 {
        turn.push(
            "text.delta",
            serde_json::json!({"turnId": "t", "delta": format!("{i},")}),
        );
    }
    let all = turn.since(0);
    assert!(all.len() <= 17, "{} events buffered", all.len());
    let text: String = all
        .iter()
        .map(|e| e.data["delta"].as_str().unwrap())
        .collect();
    let expected: String = (0..100).map(|i| format!("{i},")).collect();
    assert_eq!(text, expected);
    assert_eq!(all.last().unwrap().index, 100);
    assert!(all.windows(2).all(|w| w[0].index < w[1].index));
}

#[test]
fn a_long_tool_output_is_capped_with_a_marker() {
    let turns = LiveTurns::new(100_000, 1_000);
    let turn = turns.start("c", "t", 3, 4);
    turn.push(
        "advisor.phase",
        serde_json::json!({"turnId": "t", "toolCallId": "a", "phase": "streaming"}),
    );
    let mut sent = 0;
    for i in 0..2_000 {
        let delta = format!("w{i} ");
        sent += delta.len();
        turn.push(
            "advisor.output",
            serde_json::json!({"turnId": "t", "toolCallId": "a", "delta": delta}),
        );
        // Another call's text is not touched.
        if i < 10 {
            turn.push(
                "advisor.output",
                serde_json::json!({"turnId": "t", "toolCallId": "b", "delta": "b"}),
            );
        }
    }
    assert!(
        turn.buffered_bytes() <= 1_000 + 10,
        "{}",
        turn.buffered_bytes()
    );
    let all = turn.since(0);
    assert_eq!(all[0].event_type, "advisor.phase");
    assert!(all.windows(2).all(|w| w[0].index < w[1].index));
    let of_a: Vec<_> = all
        .iter()
        .filter(|e| e.event_type == "advisor.output" && e.data["toolCallId"] == "a")
        .collect();
    let omitted = of_a[0].data["omittedBytes"].as_u64().unwrap() as usize;
    let kept: usize = of_a
        .iter()
        .map(|e| e.data["delta"].as_str().unwrap().len())
        .sum();
    assert_eq!(omitted + kept, sent);
    assert!(of_a[1..]
        .iter()
        .all(|e| e.data.get("omittedBytes").is_none()));
    let tail: String = of_a
        .iter()
        .map(|e| e.data["delta"].as_str().unwrap())
        .collect();
    assert!(tail.ends_with("w1999 "));
    let of_b = all.iter().filter(|e| e.data["toolCallId"] == "b").count();
    assert_eq!(of_b, 10);
}

/// The delta text of `events`, joined.
fn text_of(events: &[Arc<TransientEvent>]) -> String {
    events
        .iter()
        .filter_map(|e| e.data.get("delta").and_then(Value::as_str))
        .collect()
}

#[test]
fn resume_inside_a_coalesced_range_repeats_no_text() {
    let turns = LiveTurns::new(16, 1 << 20);
    let turn = turns.start("c", "t", 3, 4);
    let mut sent = Vec::new();
    for i in 0..100 {
        let delta = format!("{i},");
        turn.push(
            "text.delta",
            serde_json::json!({"turnId": "t", "delta": delta.clone()}),
        );
        sent.push(delta);
    }
    // The first 50 deltas are joined by now; a client saw 20 of them.
    assert!(turn.since(0).len() <= 17);
    let resumed = turn.since(20);
    assert!(resumed.iter().all(|e| e.index > 20));
    assert_eq!(text_of(&resumed), sent[20..].concat());
    assert_eq!(resumed.last().unwrap().index, 100);
}

#[test]
fn interleaved_streams_that_cannot_join_stay_exact() {
    // Text and reasoning alternate, so coalescing cannot shrink the
    // buffer: it then waits for the buffer to double (a push stays O(1)
    // amortized) and still loses nothing.
    let turns = LiveTurns::new(16, 1 << 20);
    let turn = turns.start("c", "t", 3, 4);
    let mut sent = String::new();
    for i in 0..20_000 {
        let event_type = if i % 2 == 0 {
            "text.delta"
        } else {
            "reasoning.delta"
        };
        let delta = format!("{i},");
        sent.push_str(&delta);
        turn.push(
            event_type,
            serde_json::json!({"turnId": "t", "delta": delta}),
        );
    }
    assert_eq!(text_of(&turn.since(0)), sent);
    let tail: String = (10_000..20_000).map(|i| format!("{i},")).collect();
    assert_eq!(text_of(&turn.since(10_000)), tail);
}

#[test]
fn an_arenas_models_keep_their_own_text_when_coalesced() {
    // Two models stream into one turn's buffer at once, in runs of a few
    // deltas each: joining keeps each model's text apart and in order.
    let turns = LiveTurns::new(16, 64);
    let turn = turns.start("c", "t", 3, 5);
    let mut sent = [String::new(), String::new()];
    for i in 0..400 {
        let model = (i / 3) % 2;
        let name = ["a/x", "b/y"][model];
        let delta = format!("{i},");
        sent[model].push_str(&delta);
        turn.push(
            "arena.delta",
            serde_json::json!({"turnId": "t", "runId": "r", "model": name,
                               "delta": delta}),
        );
    }
    let text_of_model = |events: &[Arc<TransientEvent>], model: &str| -> String {
        events
            .iter()
            .filter(|e| e.data["model"] == model)
            .map(|e| e.data["delta"].as_str().unwrap())
            .collect()
    };
    let all = turn.since(0);
    assert!(all.len() < 400, "coalesced: {} events", all.len());
    assert_eq!(text_of_model(&all, "a/x"), sent[0]);
    assert_eq!(text_of_model(&all, "b/y"), sent[1]);
    assert!(all.iter().all(|e| e.data["runId"] == "r"));
    // No byte cap: an arena's text is not a tool call's (nothing omitted).
    assert!(all.iter().all(|e| e.data.get("omittedBytes").is_none()));
    // Resuming inside a joined run gives only what came after.
    let resumed = turn.since(200);
    let expected = |model: usize| -> String {
        (200..400)
            .filter(|i| (i / 3) % 2 == model)
            .map(|i| format!("{i},"))
            .collect()
    };
    assert_eq!(text_of_model(&resumed, "a/x"), expected(0));
    assert_eq!(text_of_model(&resumed, "b/y"), expected(1));
}

/// One pushed event of the property test: (type, tool call, text).
fn pushed(choice: u8, text: &str) -> (&'static str, serde_json::Value) {
    match choice % 6 {
        0 | 1 => (
            "text.delta",
            serde_json::json!({"turnId": "t", "delta": text}),
        ),
        2 => (
            "reasoning.delta",
            serde_json::json!({"turnId": "t", "delta": text}),
        ),
        3 => (
            "tool_call.delta",
            serde_json::json!({"turnId": "t", "toolCallId": "a", "delta": text}),
        ),
        4 => (
            "tool_call.delta",
            serde_json::json!({"turnId": "t", "toolCallId": "b", "delta": text}),
        ),
        _ => (
            "tool_call.started",
            serde_json::json!({"turnId": "t", "toolCallId": text}),
        ),
    }
}

/// `events` as runs of one stream each (type and tool call; an event
/// without text is its own run, named by its index), consecutive runs of
/// one stream merged: what a subscriber can tell apart.
fn runs<'a>(events: impl Iterator<Item = (u64, &'static str, &'a Value)>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (index, event_type, data) in events {
        let call = data.get("toolCallId").and_then(Value::as_str).unwrap_or("");
        let Some(delta) = data.get("delta").and_then(Value::as_str) else {
            out.push((format!("{index} {event_type} {call}"), String::new()));
            continue;
        };
        match out.last_mut() {
            Some((key, text))
                if key.starts_with(event_type) && key[event_type.len()..] == *call =>
            {
                text.push_str(delta);
            }
            _ => out.push((format!("{event_type}{call}"), delta.to_owned())),
        }
    }
    out
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2_000))]

    #[test]
    fn since_k_is_the_exact_suffix_after_k(
        max_events in 16usize..48,
        pushes in proptest::collection::vec((0u8..6, "[a-z]{0,3}"), 0..160),
        after_seq_bumps in proptest::collection::vec(0usize..160, 0..3),
    ) {
        let turns = LiveTurns::new(max_events, usize::MAX / 4);
        let turn = turns.start("c", "t", 3, 4);
        let mut all: Vec<(u64, &'static str, Value)> = Vec::new();
        for (i, (choice, text)) in pushes.iter().enumerate() {
            if after_seq_bumps.contains(&i) {
                turn.note_seq(5 + i as i64);
            }
            let (event_type, data) = pushed(*choice, text);
            let event = turn.push(event_type, data.clone());
            all.push((event.index, event_type, data));
        }
        let n = all.len() as u64;
        for k in 0..=n + 1 {
            let got = turn.since(k);
            proptest::prop_assert!(got.iter().all(|e| e.index > k));
            proptest::prop_assert!(got.windows(2).all(|w| w[0].index < w[1].index));
            if n > k {
                proptest::prop_assert_eq!(got.last().map(|e| e.index), Some(n));
            }
            let expected = runs(
                all.iter()
                    .filter(|(i, _, _)| *i > k)
                    .map(|(i, t, d)| (*i, *t, d)),
            );
            let got = runs(got.iter().map(|e| (e.index, e.event_type, &e.data)));
            proptest::prop_assert_eq!(got, expected);
        }
    }
}

fn remote(turn_id: &str, turn_seq: i64, index: u64, delta: &str) -> Arc<TransientEvent> {
    Arc::new(TransientEvent {
        turn_id: turn_id.to_owned(),
        turn_seq,
        index,
        after_seq: turn_seq + 1,
        event_type: "text.delta",
        data: serde_json::json!({"turnId": turn_id, "delta": delta}),
    })
}

#[test]
fn a_remote_turn_is_mirrored_for_replay_but_never_run_here() {
    let turns = LiveTurns::new(16, 1024);
    let mirrors = turns.mirrors();
    for (i, delta) in ["a", "b", "c"].into_iter().enumerate() {
        mirrors.record("c1", &remote("t1", 5, i as u64 + 1, delta));
    }
    // A duplicate (NATS redelivery, or a replay) is left out.
    mirrors.record("c1", &remote("t1", 5, 2, "b"));
    let mirror = turns.of_conversation("c1").expect("the mirror replays");
    assert_eq!((mirror.turn_seq, mirror.turn_id.as_str()), (5, "t1"));
    assert_eq!(text_of(&mirror.since(1)), "bc");
    assert_eq!(mirror.since(0).last().unwrap().index, 3);
    // Cancel and the sweeper never see it.
    assert!(turns.get("t1").is_none());
    assert!(turns.is_empty());
    // A newer remote turn replaces it; its end drops the newer one.
    mirrors.record("c1", &remote("t2", 9, 1, "x"));
    assert_eq!(mirrors.len(), 1);
    assert_eq!(turns.of_conversation("c1").unwrap().turn_id, "t2");
    mirrors.finish("t2");
    assert!(turns.of_conversation("c1").is_none());
    // A turn of the conversation starting here drops its mirrors.
    mirrors.record("c1", &remote("t3", 12, 1, "y"));
    mirrors.record("c2", &remote("t4", 3, 1, "z"));
    let local = turns.start("c1", "t5", 20, 21);
    assert!(Arc::ptr_eq(&turns.of_conversation("c1").unwrap(), &local));
    assert_eq!(mirrors.len(), 1, "only c2's mirror is left");
}
