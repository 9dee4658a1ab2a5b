//! The fold of a conversation arena turn: started, completed, picked.

use super::*;

fn arena_turn(seq: i64, id: &str) -> Event {
    ev(
        seq,
        EventPayload::TurnStarted {
            turn_id: id.into(),
            operation: ARENA_OPERATION.into(),
            model_id: "a/x".into(),
            resolved_from: ResolvedFrom::Request,
            llm_config_id: None,
            client_tools: None,
        },
    )
}

fn outcome(model: &str, ok: bool) -> ArenaOutcome {
    ArenaOutcome {
        model: model.into(),
        status: if ok {
            ArenaStatus::Completed
        } else {
            ArenaStatus::Failed
        },
        text: format!("from {model}"),
        usage: TokenUsage {
            prompt_tokens: Some(7),
            completion_tokens: Some(3),
            ..Default::default()
        },
        error: (!ok).then(|| "boom".into()),
        model_id: Some(model.into()),
        ttft_ms: None,
        duration_ms: 5,
    }
}

fn arena_log(ok: [bool; 2]) -> Vec<Event> {
    vec![
        ev(1, created()),
        arena_turn(2, "t1"),
        ev(
            3,
            EventPayload::ArenaStarted {
                turn_id: "t1".into(),
                run_id: "r1".into(),
                models: vec!["a/x".into(), "b/y".into()],
            },
        ),
        ev(
            4,
            EventPayload::ArenaCompleted {
                turn_id: "t1".into(),
                run_id: "r1".into(),
                results: vec![outcome("a/x", ok[0]), outcome("b/y", ok[1])],
            },
        ),
    ]
}

#[test]
fn an_arena_turn_awaits_its_pick_and_the_pick_completes_it() {
    let log = arena_log([true, true]);
    let (c, turns, _) = fold(&log).unwrap();
    let c = c.unwrap();
    assert_eq!(turns[0].status, TurnStatus::AwaitingPick);
    assert_eq!(turns[0].arena_run_id.as_deref(), Some("r1"));
    assert_eq!(c.running_turn_id.as_deref(), Some("t1"));
    assert_eq!(
        c.pending_arena,
        Some(PendingArena {
            run_id: "r1".into(),
            turn_id: "t1".into(),
        })
    );
    assert_eq!(c.totals, TokenTotals::default(), "no answer counted yet");
    // Before the models end, nothing waits for a pick yet.
    let (running, _, _) = fold(&log[..3]).unwrap();
    assert_eq!(running.unwrap().pending_arena, None);
    // No other turn while the pick is pending.
    let mut refused = log.clone();
    refused.push(turn(5, "t2"));
    assert!(matches!(
        fold(&refused),
        Err(ApplyError::TurnRunning { .. })
    ));
    // The pick: the chosen answer, then the end.
    let mut picked = log.clone();
    picked.push(ev(
        5,
        EventPayload::ArenaPicked {
            turn_id: "t1".into(),
            run_id: "r1".into(),
            model: "b/y".into(),
        },
    ));
    picked.push(answer(6, "t1", "b/y", 7));
    picked.push(ev(
        7,
        EventPayload::TurnCompleted {
            turn_id: "t1".into(),
        },
    ));
    let (c, turns, messages) = fold(&picked).unwrap();
    let c = c.unwrap();
    assert_eq!(turns[0].status, TurnStatus::Completed);
    assert_eq!(turns[0].model_id, "b/y");
    assert_eq!(c.latest_model_id.as_deref(), Some("b/y"));
    assert_eq!(c.totals.prompt_tokens, 7);
    assert_eq!(c.running_turn_id, None);
    assert_eq!(c.pending_arena, None);
    assert_eq!(messages.len(), 1);
    // Already cleared by `arena.picked`, before the answer's append ends.
    let (c, _, _) = fold(&picked[..5]).unwrap();
    assert_eq!(c.unwrap().pending_arena, None);
    // A second pick of the same run is refused.
    let mut twice = picked.clone();
    twice.push(ev(
        8,
        EventPayload::ArenaPicked {
            turn_id: "t1".into(),
            run_id: "r1".into(),
            model: "a/x".into(),
        },
    ));
    assert!(matches!(
        fold(&twice),
        Err(ApplyError::NotAwaitingPick { .. })
    ));
}

#[test]
fn an_arena_turn_without_answers_does_not_await_a_pick() {
    let log = arena_log([false, false]);
    let (_, turns, _) = fold(&log).unwrap();
    assert_eq!(turns[0].status, TurnStatus::Running);
    let mut pick = log.clone();
    pick.push(ev(
        5,
        EventPayload::ArenaPicked {
            turn_id: "t1".into(),
            run_id: "r1".into(),
            model: "a/x".into(),
        },
    ));
    assert!(fold(&pick).is_err());
    let mut failed = log.clone();
    failed.push(ev(
        5,
        EventPayload::TurnFailed {
            turn_id: "t1".into(),
            error: "every model failed".into(),
        },
    ));
    let (c, turns, _) = fold(&failed).unwrap();
    assert_eq!(turns[0].status, TurnStatus::Failed);
    let c = c.unwrap();
    assert_eq!(c.running_turn_id, None);
    assert_eq!(c.pending_arena, None, "nothing to pick");
}

#[test]
fn an_arena_pick_can_be_cancelled() {
    let mut log = arena_log([true, false]);
    let (c, _, _) = fold(&log).unwrap();
    assert!(c.unwrap().pending_arena.is_some(), "one answer to pick");
    log.push(ev(
        5,
        EventPayload::TurnCancelled {
            turn_id: "t1".into(),
        },
    ));
    let (c, turns, _) = fold(&log).unwrap();
    assert_eq!(turns[0].status, TurnStatus::Cancelled);
    let c = c.unwrap();
    assert_eq!(c.running_turn_id, None);
    assert_eq!(c.pending_arena, None);
}
