#![allow(clippy::unwrap_used)]

use std::time::Instant;

use modelyard_core::limits::{Period, Window};
use modelyard_core::Usage;
use modelyard_store::LimitMetric;

use super::*;

/// 2024-02-29T13:45:10Z.
const NOW: i64 = 1_709_214_310_000;

async fn store() -> Store {
    Store::connect("sqlite::memory:").await.unwrap()
}

fn key(id: &str) -> LimitSubject {
    LimitSubject::Key(id.to_owned())
}

fn project() -> LimitSubject {
    LimitSubject::Project("default".to_owned())
}

fn need(tokens: i64) -> Need {
    Need {
        tokens,
        cost_nusd: 0,
    }
}

fn counter(subject: &LimitSubject, metric: LimitMetric, window: Window) -> CounterKey {
    CounterKey {
        subject: subject.key(),
        metric,
        window_start_ms: window.start_ms,
        window_end_ms: window.end_ms,
    }
}

#[tokio::test]
async fn requests_per_minute_refuses_past_the_limit_until_the_minute_ends() {
    let quotas = Quotas::new(store().await, 100);
    let limits = vec![(
        key("k"),
        Limits {
            requests_per_minute: Some(5),
            ..Limits::default()
        },
    )];
    let mut remaining = Vec::new();
    for _ in 0..5 {
        let admission = quotas.admit(&limits, need(10), NOW).await.unwrap();
        remaining.push(admission.remaining().requests.unwrap());
        admission.settle(10, 0);
    }
    assert_eq!(remaining, vec![4, 3, 2, 1, 0]);
    let refusal = quotas.admit(&limits, need(10), NOW).await.unwrap_err();
    assert_eq!(refusal.to_string(), "key limit requestsPerMinute=5 reached");
    assert_eq!(refusal.code(), "rate_limited");
    // 13:45:10 → the minute ends in 50 s.
    assert_eq!(refusal.retry_after_secs(), Some(50));
    // The next minute is a new window.
    assert!(quotas.admit(&limits, need(10), NOW + 50_000).await.is_ok());
}

#[tokio::test]
async fn two_replicas_on_one_counter_never_admit_past_the_limit() {
    let shared = store().await;
    let replicas = [Quotas::new(shared.clone(), 100), Quotas::new(shared, 100)];
    let limits = vec![(
        key("k"),
        Limits {
            requests_per_minute: Some(100),
            ..Limits::default()
        },
    )];
    let mut admitted = 0;
    for i in 0..300 {
        if let Ok(admission) = replicas[i % 2].admit(&limits, need(1), NOW).await {
            admitted += 1;
            admission.settle(1, 0);
        }
    }
    // At most the limit; at most a block (100 / 40 = 2) parked unspent on
    // the replica that asked last.
    assert!((98..=100).contains(&admitted), "admitted {admitted}");
}

#[tokio::test]
async fn a_token_budget_reserves_then_settles_to_the_actual_usage() {
    let store = store().await;
    let quotas = Quotas::new(store.clone(), 100);
    let limits = vec![(
        project(),
        Limits {
            max_tokens: Some(1_000),
            period: Some(Period::Day),
            ..Limits::default()
        },
    )];
    let first = quotas.admit(&limits, need(300), NOW).await.unwrap();
    let _second = quotas.admit(&limits, need(300), NOW).await.unwrap();
    let _third = quotas.admit(&limits, need(300), NOW).await.unwrap();
    let refusal = quotas.admit(&limits, need(300), NOW).await.unwrap_err();
    assert_eq!(
        refusal.to_string(),
        "project limit maxTokens=1000 per day reached"
    );
    assert_eq!(refusal.code(), "budget_exceeded");
    // 10h14m50s to midnight UTC.
    assert_eq!(refusal.retry_after_secs(), Some(36_890));
    // The first spent 100 of its 300: 200 come back, enough with the 100
    // left for one more.
    first.settle(100, 0);
    let fourth = quotas.admit(&limits, need(300), NOW).await.unwrap();
    assert_eq!(fourth.remaining().tokens, Some(0));
    // Never more leased than the budget.
    let window = Period::Day.window(NOW);
    let row = counter(&project(), LimitMetric::BudgetTokens, window);
    assert_eq!(store.limit_counter(&row).await.unwrap(), 1_000);
}

#[tokio::test]
async fn spending_past_the_reserve_is_charged_by_the_flush() {
    let store = store().await;
    let quotas = Quotas::new(store.clone(), 100);
    let limits = vec![(
        key("k"),
        Limits {
            max_tokens: Some(1_000),
            period: Some(Period::Month),
            ..Limits::default()
        },
    )];
    let admission = quotas.admit(&limits, need(100), NOW).await.unwrap();
    admission.settle(900, 0);
    let row = counter(
        &key("k"),
        LimitMetric::BudgetTokens,
        Period::Month.window(NOW),
    );
    assert_eq!(store.limit_counter(&row).await.unwrap(), 100, "only leased");
    quotas.flush(NOW).await;
    assert_eq!(store.limit_counter(&row).await.unwrap(), 900, "charged");
    // 100 left: a request reserving 101 is refused, 100 admitted.
    assert!(quotas.admit(&limits, need(101), NOW).await.is_err());
    assert!(quotas.admit(&limits, need(100), NOW).await.is_ok());
}

#[tokio::test]
async fn a_cost_budget_refuses_once_spent_and_a_total_one_never_frees() {
    let store = store().await;
    let quotas = Quotas::new(store.clone(), 100);
    let limits = vec![(
        key("k"),
        Limits {
            max_cost_nusd: Some(5_000_000_000),
            period: Some(Period::Total),
            ..Limits::default()
        },
    )];
    let admission = quotas.admit(&limits, need(10), NOW).await.unwrap();
    assert_eq!(
        admission.remaining().budget_usd().as_deref(),
        Some("5.000000")
    );
    admission.settle(10, 4_000_000_000);
    let admission = quotas.admit(&limits, need(10), NOW).await.unwrap();
    assert_eq!(
        admission.remaining().budget_usd().as_deref(),
        Some("1.000000")
    );
    admission.settle(10, 1_500_000_000);
    quotas.flush(NOW).await;
    let refusal = quotas.admit(&limits, need(10), NOW).await.unwrap_err();
    assert_eq!(
        refusal.to_string(),
        "key limit maxCostUsd=5 in total reached"
    );
    assert_eq!(refusal.code(), "budget_exceeded");
    assert_eq!(refusal.retry_after_secs(), None);
    let row = counter(
        &key("k"),
        LimitMetric::BudgetCost,
        Period::Total.window(NOW),
    );
    assert_eq!(store.limit_counter(&row).await.unwrap(), 5_500_000_000);
}

#[tokio::test]
async fn max_concurrent_frees_a_slot_when_a_request_ends_either_way() {
    let quotas = Quotas::new(store().await, 100);
    let limits = vec![(
        key("k"),
        Limits {
            max_concurrent: Some(2),
            ..Limits::default()
        },
    )];
    let a = quotas.admit(&limits, need(1), NOW).await.unwrap();
    let b = quotas.admit(&limits, need(1), NOW).await.unwrap();
    let refusal = quotas.admit(&limits, need(1), NOW).await.unwrap_err();
    assert_eq!(refusal.to_string(), "key limit maxConcurrent=2 reached");
    assert_eq!(refusal.retry_after_secs(), Some(1));
    a.settle(1, 0);
    let c = quotas.admit(&limits, need(1), NOW).await.unwrap();
    drop(b);
    drop(c);
    assert_eq!(quotas.in_flight(&key("k")), 0);
}

fn concurrent(max: i64) -> Applicable {
    vec![(
        key("k"),
        Limits {
            max_concurrent: Some(max),
            ..Limits::default()
        },
    )]
}

/// Marks every lease of `quotas` idle, so the next flush gives it back.
fn idle(quotas: &Quotas) {
    for cell in lock(&quotas.counters).values() {
        lock(cell).last_used = Instant::now().checked_sub(LEASE_IDLE).unwrap();
    }
}

#[tokio::test]
async fn two_replicas_share_max_concurrent() {
    let shared = store().await;
    let (a, b) = (
        Quotas::new(shared.clone(), 100),
        Quotas::new(shared.clone(), 100),
    );
    let limits = concurrent(2);
    let on_a = a.admit(&limits, need(1), NOW).await.unwrap();
    let on_b = b.admit(&limits, need(1), NOW).await.unwrap();
    for quotas in [&a, &b] {
        let refusal = quotas.admit(&limits, need(1), NOW).await.unwrap_err();
        assert_eq!(refusal.to_string(), "key limit maxConcurrent=2 reached");
    }
    let row = counter(&key("k"), LimitMetric::Concurrent, Window::minute(NOW));
    assert_eq!(shared.limit_counter(&row).await.unwrap(), 2);
    // A's slot goes back to A's lease: A may use it again at once, B only
    // once A's flush gave the idle lease back.
    drop(on_a);
    assert!(b.admit(&limits, need(1), NOW).await.is_err());
    let again = a.admit(&limits, need(1), NOW).await.unwrap();
    drop(again);
    idle(&a);
    a.flush(NOW).await;
    assert_eq!(shared.limit_counter(&row).await.unwrap(), 1);
    let on_b2 = b.admit(&limits, need(1), NOW).await.unwrap();
    assert_eq!(b.in_flight(&key("k")), 2);
    drop((on_b, on_b2));
}

#[tokio::test]
async fn requests_in_flight_carry_into_the_next_minute() {
    let shared = store().await;
    let (a, b) = (
        Quotas::new(shared.clone(), 100),
        Quotas::new(shared.clone(), 100),
    );
    let limits = concurrent(2);
    let next = NOW + 60_000;
    // Admitted in one minute, still running in the next.
    let long = a.admit(&limits, need(1), NOW).await.unwrap();
    let on_b = b.admit(&limits, need(1), next).await.unwrap();
    // A's request counts in the new minute: a second one on A is a third.
    let refusal = a.admit(&limits, need(1), next).await.unwrap_err();
    assert_eq!(refusal.to_string(), "key limit maxConcurrent=2 reached");
    let row = counter(&key("k"), LimitMetric::Concurrent, Window::minute(next));
    a.flush(next).await;
    assert_eq!(shared.limit_counter(&row).await.unwrap(), 2);
    // When it ends, its slot goes back to the new minute's lease.
    drop(long);
    let fresh = a.admit(&limits, need(1), next).await.unwrap();
    assert_eq!(a.in_flight(&key("k")), 1);
    drop((fresh, on_b));
    idle(&a);
    idle(&b);
    a.flush(next).await;
    b.flush(next).await;
    assert_eq!(
        shared.limit_counter(&row).await.unwrap(),
        0,
        "all given back"
    );
}

#[tokio::test]
async fn a_refusal_by_the_project_gives_the_keys_units_back() {
    let quotas = Quotas::new(store().await, 100);
    let limits = vec![
        (
            key("k"),
            Limits {
                requests_per_minute: Some(3),
                max_concurrent: Some(10),
                ..Limits::default()
            },
        ),
        (
            project(),
            Limits {
                max_concurrent: Some(1),
                ..Limits::default()
            },
        ),
    ];
    let held = quotas.admit(&limits, need(1), NOW).await.unwrap();
    for _ in 0..5 {
        let refusal = quotas.admit(&limits, need(1), NOW).await.unwrap_err();
        assert_eq!(refusal.to_string(), "project limit maxConcurrent=1 reached");
    }
    assert_eq!(quotas.in_flight(&key("k")), 1);
    drop(held);
    // The refused ones did not count against the key's 3 per minute.
    for _ in 0..2 {
        quotas
            .admit(&limits, need(1), NOW)
            .await
            .unwrap()
            .settle(1, 0);
    }
    assert_eq!(
        quotas
            .admit(&limits, need(1), NOW)
            .await
            .unwrap_err()
            .to_string(),
        "key limit requestsPerMinute=3 reached"
    );
}

#[tokio::test]
async fn idle_leases_go_back_to_the_shared_counter() {
    let store = store().await;
    let quotas = Quotas::new(store.clone(), 100);
    let limits = vec![(
        key("k"),
        Limits {
            tokens_per_minute: Some(4_000),
            ..Limits::default()
        },
    )];
    // A block of 100 (4000 / 40) leased, 10 spent.
    quotas
        .admit(&limits, need(10), NOW)
        .await
        .unwrap()
        .settle(10, 0);
    let row = counter(&key("k"), LimitMetric::Tokens, Window::minute(NOW));
    assert_eq!(store.limit_counter(&row).await.unwrap(), 100);
    quotas.flush(NOW).await;
    assert_eq!(
        store.limit_counter(&row).await.unwrap(),
        100,
        "not idle yet"
    );
    for cell in lock(&quotas.counters).values() {
        let mut local = lock(cell);
        local.last_used = Instant::now().checked_sub(LEASE_IDLE).unwrap();
    }
    quotas.flush(NOW).await;
    assert_eq!(
        store.limit_counter(&row).await.unwrap(),
        10,
        "90 given back"
    );
    // Past the window, the counter is forgotten.
    quotas.flush(NOW + 60_000).await;
    assert!(lock(&quotas.counters).is_empty());
}

#[test]
fn the_budget_header_rounds_nano_usd_to_six_decimals() {
    let shown = |nusd: i64| {
        Remaining {
            budget_nusd: Some(nusd),
            ..Remaining::default()
        }
        .budget_usd()
        .unwrap()
    };
    assert_eq!(shown(1_234_567_890), "1.234568");
    assert_eq!(shown(1_234_567_490), "1.234567");
    assert_eq!(shown(999_999_999_999), "1000.000000");
    assert_eq!(shown(7), "0.000000");
    assert_eq!(shown(-5), "0.000000", "never negative");
    assert_eq!(shown(i64::MAX), "9223372036.854776");
}

proptest::proptest! {
    /// The header's digits are what `format!` gives for the same
    /// arithmetic in i128 (the way it was written before), for any amount.
    #[test]
    fn the_budget_header_is_the_formatted_micro_usd(nusd in proptest::prelude::any::<i64>()) {
        let micro = (i128::from(nusd.max(0)) + 500) / 1000;
        let expected = format!("{}.{:06}", micro / 1_000_000, micro % 1_000_000);
        let remaining = Remaining { budget_nusd: Some(nusd), ..Remaining::default() };
        proptest::prop_assert_eq!(remaining.budget_usd(), Some(expected));
    }
}

#[tokio::test]
async fn reserve_rates_are_resolved_once_per_ttl() {
    let quotas = Quotas::new(store().await, 100);
    let price = modelyard_core::cost::Price {
        input_per_mtok: 1.0,
        cached_input_per_mtok: None,
        output_per_mtok: 2.0,
        reasoning_per_mtok: None,
    };
    let mut resolved = 0;
    for _ in 0..3 {
        let rates = quotas.reserve_rates("p/m", || {
            resolved += 1;
            vec![price]
        });
        assert_eq!(&*rates, &[price]);
    }
    assert_eq!(resolved, 1, "cached for {LIMITS_TTL:?}");
    let other = quotas.reserve_rates("p/other", Vec::new);
    assert!(other.is_empty());
    // A long id (from a request body) is never kept.
    let long = "x".repeat(10_000);
    let mut resolved = 0;
    for _ in 0..2 {
        quotas.reserve_rates(&long, || {
            resolved += 1;
            Vec::new()
        });
    }
    assert_eq!(resolved, 2);
}

#[test]
fn a_reserve_is_the_output_cap_plus_the_prompt_estimate() {
    let body = br#"{"model":"m","max_tokens":50,"messages":[]}"#;
    assert_eq!(reserve_tokens(body, 1000, true), 50 + body.len() as i64 / 4);
    let body = br#"{"max_completion_tokens":7,"max_tokens":50,"n":3}"#;
    assert_eq!(reserve_tokens(body, 1000, true), 21 + body.len() as i64 / 4);
    let body = br#"{"input":"hello"}"#;
    assert_eq!(
        reserve_tokens(body, 1000, true),
        1000 + body.len() as i64 / 4
    );
    assert_eq!(reserve_tokens(body, 1000, false), body.len() as i64 / 4);
    assert_eq!(reserve_tokens(b"not json", 1000, true), 1002);
}

#[test]
fn an_arena_reserves_one_chat_per_model() {
    let body = br#"{"prompt":"hi","models":["a","b","c"],"options":{"max_tokens":50}}"#;
    let one = 50 + body.len() as i64 / 4;
    assert_eq!(super::arena_reserve_tokens(body, 1000, 8), 3 * one);
    let body = br#"{"content":"hi","models":["a","b"]}"#;
    assert_eq!(
        super::arena_reserve_tokens(body, 1000, 8),
        2 * (1000 + body.len() as i64 / 4)
    );
    // More models than a run may have count as the most it may have.
    let body = br#"{"models":["a","b","c"]}"#;
    assert_eq!(
        super::arena_reserve_tokens(body, 10, 2),
        2 * (10 + body.len() as i64 / 4)
    );
    assert_eq!(super::arena_reserve_tokens(b"not json", 1000, 8), 1002);
}

#[test]
fn settling_from_calls_counts_each_calls_tokens() {
    let usage = |p, c| Usage {
        prompt_tokens: Some(p),
        completion_tokens: Some(c),
        ..Usage::default()
    };
    assert_eq!(call_tokens(&usage(3, 4)), 7);
    assert_eq!(
        call_tokens(&Usage {
            total_tokens: Some(9),
            ..Usage::default()
        }),
        9
    );
    assert_eq!(call_tokens(&Usage::default()), 0);
}

mod reserve_props {
    use proptest::prelude::*;

    use modelyard_upstream::openai::ChatRequestHead;

    use super::super::{arena_reserve_tokens, chat_split, reserve_split, BYTES_PER_TOKEN};

    /// A chat-completion body with or without each cap.
    fn chat_body() -> impl Strategy<Value = Vec<u8>> {
        (
            proptest::option::of("[a-z/]{1,12}"),
            proptest::option::of(any::<u64>()),
            proptest::option::of(any::<u64>()),
            proptest::option::of(0u64..300),
            0usize..4,
        )
            .prop_map(|(model, max, max_completion, n, messages)| {
                let mut fields = vec![format!(
                    "\"messages\":[{}]",
                    vec!["{\"role\":\"user\",\"content\":\"hi\"}"; messages].join(",")
                )];
                if let Some(model) = model {
                    fields.push(format!("\"model\":\"{model}\""));
                }
                if let Some(max) = max {
                    fields.push(format!("\"max_tokens\":{max}"));
                }
                if let Some(max) = max_completion {
                    fields.push(format!("\"max_completion_tokens\":{max}"));
                }
                if let Some(n) = n {
                    fields.push(format!("\"n\":{n}"));
                }
                format!("{{{}}}", fields.join(",")).into_bytes()
            })
    }

    /// A body that is JSON with caps and a model of any shape, or not.
    fn body() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..512),
            (
                any::<u64>(),
                any::<u64>(),
                proptest::option::of(any::<i64>()),
                0usize..40
            )
                .prop_map(|(max, n, model, models)| {
                    let model = model.map_or_else(|| "\"m/x\"".to_owned(), |m| m.to_string());
                    let ids: Vec<String> = (0..models).map(|i| format!("\"m/{i}\"")).collect();
                    format!(
                        "{{\"model\":{model},\"max_tokens\":{max},\"n\":{n},\
                         \"models\":[{}],\"options\":{{\"max_completion_tokens\":{max}}}}}",
                        ids.join(",")
                    )
                    .into_bytes()
                }),
        ]
    }

    proptest! {
        /// Client bytes never panic the reserve and never make it wrap:
        /// the prompt estimate is the body's length, an arena's reserve
        /// (saturating) never falls below one prompt's.
        #[test]
        fn reserves_of_any_body_are_bounded(body in body(), default in 0u64..10_000_000) {
            let split = reserve_split(&body, default, true);
            prop_assert_eq!(split.prompt, body.len() as u64 / BYTES_PER_TOKEN);
            let arena = arena_reserve_tokens(&body, default, 8);
            prop_assert!(arena >= 0);
            let one = body.len() as i64 / BYTES_PER_TOKEN as i64;
            prop_assert!(arena >= one.min(i64::MAX / 8));
        }

        /// A chat completion's reserve from the head the handler reads is
        /// the reserve of its body read alone (the middleware parses once).
        #[test]
        fn chat_split_is_the_body_reserve(body in chat_body(), default in 0u64..10_000_000) {
            let head = ChatRequestHead::parse(&body).unwrap();
            prop_assert_eq!(chat_split(&head, body.len(), default), reserve_split(&body, default, true));
        }
    }
}
