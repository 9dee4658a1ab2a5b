//! Tests of the LLM-call audit: sessions with their aggregates
//! (`list_sessions`, `get_session`, `child_sessions`) and usage totals
//! (`usage`). Every test runs on SQLite and, when
//! `MODELYARD_TEST_POSTGRES_URL` is set, also on PostgreSQL; see `common`.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Mutex;

use common::test_dbs;
use modelyard_core::conversation::ResolvedFrom;
use modelyard_core::llm_config::{ConfigSnapshot, LlmSource, ProviderOptions};
use modelyard_store::{
    CallCost, NewLlmCall, NewLlmSession, PriceSource, ProjectId, RecordedSession, SessionFilter,
    SessionRow, SessionStatus, Store, TokenSums, UsageFilter, UsageGroup, UsageGroupRow, UsageRow,
};

// ---------------------------------------------------------------- fixtures

/// 2024-01-01T00:00:00Z in unix milliseconds.
const JAN_1: i64 = 1_704_067_200_000;
const DAY: i64 = 86_400_000;

/// A fresh UUIDv7 id strictly greater than every id returned before (in
/// this process), so id order is creation order in these tests.
fn next_id() -> String {
    static LAST: Mutex<String> = Mutex::new(String::new());
    let mut last = LAST.lock().unwrap();
    loop {
        let id = uuid::Uuid::now_v7().to_string();
        if id > *last {
            last.clone_from(&id);
            return id;
        }
    }
}

fn session(operation: &str, created_at_ms: i64) -> NewLlmSession {
    NewLlmSession {
        id: next_id(),
        operation: operation.to_owned(),
        parent_session_id: None,
        conversation_id: None,
        turn_id: None,
        created_at_ms,
        request_id: None,
        key_id: None,
        config: None,
    }
}

fn usage(p: i64, c: i64, r: i64, cached: i64, t: i64) -> UsageRow {
    UsageRow {
        prompt_tokens: Some(p),
        completion_tokens: Some(c),
        reasoning_tokens: Some(r),
        cached_prompt_tokens: Some(cached),
        cache_creation_tokens: None,
        total_tokens: Some(t),
    }
}

/// A successful call of `model_id` (`provider/model`) sent at `sent_at_ms`,
/// completed 500 ms later, with no usage reported.
fn call(session: &NewLlmSession, model_id: &str, sent_at_ms: i64) -> NewLlmCall {
    let (provider, model) = model_id.split_once('/').expect("provider/model");
    NewLlmCall {
        id: next_id(),
        session_id: session.id.clone(),
        model_id: model_id.to_owned(),
        provider: provider.to_owned(),
        upstream_model: model.to_owned(),
        stream: false,
        request_json: "{}".to_owned(),
        response_text: None,
        reasoning_text: None,
        tool_calls_json: None,
        finish_reason: None,
        usage: UsageRow::default(),
        sent_at_ms,
        first_token_at_ms: None,
        completed_at_ms: Some(sent_at_ms + 500),
        http_status: Some(200),
        error: None,
        attempt: 1,
        route: None,
        cost: Default::default(),
    }
}

fn with_usage(mut call: NewLlmCall, usage: UsageRow) -> NewLlmCall {
    call.usage = usage;
    call
}

fn failed(mut call: NewLlmCall, error: &str) -> NewLlmCall {
    call.error = Some(error.to_owned());
    call.http_status = Some(500);
    call
}

async fn record(
    store: &Store,
    project: &ProjectId,
    session: &NewLlmSession,
    calls: Vec<NewLlmCall>,
) {
    store
        .record_sessions(
            project,
            &[RecordedSession {
                session: session.clone(),
                calls,
            }],
        )
        .await
        .expect("record");
}

async fn list(store: &Store, project: &ProjectId, filter: SessionFilter) -> Vec<SessionRow> {
    store
        .list_sessions(project, &filter)
        .await
        .expect("list sessions")
}

fn ids(rows: &[SessionRow]) -> Vec<&str> {
    rows.iter().map(|r| r.id.as_str()).collect()
}

fn sums(calls: &[NewLlmCall]) -> TokenSums {
    let mut t = TokenSums::default();
    for c in calls {
        t.input += c.usage.prompt_tokens.unwrap_or(0);
        t.output += c.usage.completion_tokens.unwrap_or(0);
        t.reasoning += c.usage.reasoning_tokens.unwrap_or(0);
        t.cached_input += c.usage.cached_prompt_tokens.unwrap_or(0);
        t.total += c.usage.total_tokens.unwrap_or(0);
    }
    t
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn aggregates_calls_with_null_usage_and_status() {
    for db in test_dbs().await {
        let store = &db.store;
        let project = &ProjectId::default_project();

        // Three calls: full usage, no usage at all, partial usage; the middle
        // one never completed, the last one went to another model.
        let mut ok = session("gateway", JAN_1);
        ok.conversation_id = Some("conv-1".to_owned());
        ok.turn_id = Some("turn-1".to_owned());
        let first = with_usage(call(&ok, "a/m1", JAN_1 + 1_000), usage(10, 20, 3, 4, 30));
        let mut unfinished = call(&ok, "a/m1", JAN_1 + 3_000);
        unfinished.completed_at_ms = None;
        let partial = UsageRow {
            prompt_tokens: Some(7),
            total_tokens: Some(9_000_000_000), // larger than i32
            ..UsageRow::default()
        };
        let last = with_usage(call(&ok, "b/m2", JAN_1 + 2_000), partial);
        let ok_calls = vec![first, unfinished, last];
        record(store, project, &ok, ok_calls.clone()).await;

        // Errors before the last call, the last call fine (a request that
        // was retried): status ok — a session's status is its last call's —
        // and the last error is still the one reported.
        let err = session("chat", JAN_1 + 10_000);
        let err_calls = vec![
            failed(call(&err, "a/m1", JAN_1 + 10_000), "first failure"),
            failed(call(&err, "a/m1", JAN_1 + 11_000), "second failure"),
            with_usage(call(&err, "a/m1", JAN_1 + 12_000), usage(1, 2, 0, 0, 3)),
        ];
        record(store, project, &err, err_calls.clone()).await;

        // No calls at all.
        let empty = session("gateway", JAN_1 + 20_000);
        record(store, project, &empty, vec![]).await;

        let rows = list(store, project, SessionFilter::default()).await;
        assert_eq!(ids(&rows), vec![empty.id.as_str(), &err.id, &ok.id]);

        let expected_ok = SessionRow {
            id: ok.id.clone(),
            project_id: project.as_str().to_owned(),
            operation: "gateway".to_owned(),
            parent_session_id: None,
            conversation_id: Some("conv-1".to_owned()),
            turn_id: Some("turn-1".to_owned()),
            created_at_ms: JAN_1,
            request_id: None,
            key_id: None,
            config: None,
            call_count: 3,
            model_id: Some("b/m2".to_owned()),
            provider: Some("b".to_owned()),
            status: SessionStatus::Ok,
            last_error: None,
            started_at_ms: Some(JAN_1 + 1_000),
            finished_at_ms: Some(JAN_1 + 2_500),
            totals: TokenSums {
                input: 17,
                output: 20,
                reasoning: 3,
                cached_input: 4,
                total: 9_000_000_030,
                cost_nusd: None,
            },
        };
        assert_eq!(rows[2], expected_ok);
        assert_eq!(rows[2].totals, sums(&ok_calls));

        let e = &rows[1];
        assert_eq!(e.status, SessionStatus::Ok);
        assert_eq!(e.last_error.as_deref(), Some("second failure"));
        assert_eq!(e.call_count, 3);
        assert_eq!(e.model_id.as_deref(), Some("a/m1"));
        assert_eq!(e.started_at_ms, Some(JAN_1 + 10_000));
        assert_eq!(e.finished_at_ms, Some(JAN_1 + 12_500));
        assert_eq!(e.totals, sums(&err_calls));

        let z = &rows[0];
        assert_eq!(z.call_count, 0);
        assert_eq!(z.status, SessionStatus::Ok);
        assert_eq!(
            (&z.model_id, &z.provider, &z.last_error),
            (&None, &None, &None)
        );
        assert_eq!((z.started_at_ms, z.finished_at_ms), (None, None));
        assert_eq!(z.totals, TokenSums::default());

        // get_session: the same row, its calls oldest first, and the sums of
        // the calls equal the totals.
        for (row, calls) in [(&rows[2], &ok_calls), (&rows[1], &err_calls)] {
            let (got, got_calls) = store
                .get_session(project, &row.id)
                .await
                .expect("get session")
                .expect("session exists");
            assert_eq!(&got, row);
            let call_ids: Vec<&str> = got_calls.iter().map(|c| c.id.as_str()).collect();
            let want: Vec<&str> = calls.iter().map(|c| c.id.as_str()).collect();
            assert_eq!(call_ids, want);
            let from_rows: i64 = got_calls
                .iter()
                .map(|c| c.usage.total_tokens.unwrap_or(0))
                .sum();
            assert_eq!(from_rows, got.totals.total);
        }
        let (got_empty, no_calls) = store
            .get_session(project, &empty.id)
            .await
            .expect("get")
            .expect("exists");
        assert_eq!(got_empty, rows[0]);
        assert!(no_calls.is_empty());
        assert!(store
            .get_session(project, &next_id())
            .await
            .expect("get")
            .is_none());
        db.finish().await;
    }
}

#[tokio::test]
async fn filters_each_criterion() {
    for db in test_dbs().await {
        let store = &db.store;
        let project = &ProjectId::default_project();

        let mut s1 = session("chat", JAN_1);
        s1.conversation_id = Some("c1".to_owned());
        record(store, project, &s1, vec![call(&s1, "a/m1", JAN_1)]).await;

        let mut s2 = session("chat", JAN_1 + DAY);
        s2.conversation_id = Some("c2".to_owned());
        record(
            store,
            project,
            &s2,
            vec![failed(call(&s2, "b/m2", JAN_1 + DAY), "boom")],
        )
        .await;

        // Two models in one session: matches either model.
        let s3 = session("gateway", JAN_1 + 2 * DAY);
        record(
            store,
            project,
            &s3,
            vec![
                call(&s3, "a/m1", JAN_1 + 2 * DAY),
                call(&s3, "b/m3", JAN_1 + 2 * DAY + 1),
            ],
        )
        .await;

        let s4 = session("gateway", JAN_1 + 3 * DAY);
        record(store, project, &s4, vec![]).await;

        let find = |filter: SessionFilter| async move {
            list(store, project, filter)
                .await
                .into_iter()
                .map(|r| r.id)
                .collect::<Vec<_>>()
        };
        let f = SessionFilter::default;
        let s = |v: &str| Some(v.to_owned());

        assert_eq!(
            find(f()).await,
            [
                s4.id.as_str(),
                s3.id.as_str(),
                s2.id.as_str(),
                s1.id.as_str()
            ]
        );
        assert_eq!(
            find(SessionFilter {
                conversation_id: s("c2"),
                ..f()
            })
            .await,
            [s2.id.as_str()]
        );
        assert!(find(SessionFilter {
            conversation_id: s("nope"),
            ..f()
        })
        .await
        .is_empty());
        assert_eq!(
            find(SessionFilter {
                operation: s("chat"),
                ..f()
            })
            .await,
            [s2.id.as_str(), s1.id.as_str()]
        );
        assert_eq!(
            find(SessionFilter {
                operation: s("gateway"),
                ..f()
            })
            .await,
            [s4.id.as_str(), s3.id.as_str()]
        );
        assert_eq!(
            find(SessionFilter {
                model_id: s("a/m1"),
                ..f()
            })
            .await,
            [s3.id.as_str(), s1.id.as_str()]
        );
        assert_eq!(
            find(SessionFilter {
                model_id: s("b/m3"),
                ..f()
            })
            .await,
            [s3.id.as_str()]
        );
        assert_eq!(
            find(SessionFilter {
                provider: s("b"),
                ..f()
            })
            .await,
            [s3.id.as_str(), s2.id.as_str()]
        );
        assert_eq!(
            find(SessionFilter {
                status: Some(SessionStatus::Error),
                ..f()
            })
            .await,
            [s2.id.as_str()]
        );
        // A session without calls has no failed call: ok.
        assert_eq!(
            find(SessionFilter {
                status: Some(SessionStatus::Ok),
                ..f()
            })
            .await,
            [s4.id.as_str(), s3.id.as_str(), s1.id.as_str()]
        );
        // from is inclusive, to exclusive (on created_at_ms).
        assert_eq!(
            find(SessionFilter {
                from_ms: Some(JAN_1 + DAY),
                ..f()
            })
            .await,
            [s4.id.as_str(), s3.id.as_str(), s2.id.as_str()]
        );
        assert_eq!(
            find(SessionFilter {
                to_ms: Some(JAN_1 + DAY),
                ..f()
            })
            .await,
            [s1.id.as_str()]
        );
        assert_eq!(
            find(SessionFilter {
                from_ms: Some(JAN_1 + DAY),
                to_ms: Some(JAN_1 + 3 * DAY),
                ..f()
            })
            .await,
            [s3.id.as_str(), s2.id.as_str()]
        );
        // Everything at once, and a before cursor.
        assert_eq!(
            find(SessionFilter {
                before_id: Some(s4.id.clone()),
                conversation_id: None,
                operation: s("gateway"),
                model_id: s("b/m3"),
                provider: s("b"),
                status: Some(SessionStatus::Ok),
                from_ms: Some(JAN_1),
                to_ms: Some(JAN_1 + 10 * DAY),
                limit: 10,
            })
            .await,
            [s3.id.as_str()]
        );
        assert!(find(SessionFilter {
            model_id: s("a/m1"),
            status: Some(SessionStatus::Error),
            ..f()
        })
        .await
        .is_empty());
        db.finish().await;
    }
}

#[tokio::test]
async fn pages_newest_first_with_before_id_and_limits() {
    for db in test_dbs().await {
        let store = &db.store;
        let project = &ProjectId::default_project();
        let mut sessions = Vec::new();
        for i in 0..7 {
            let s = session("gateway", JAN_1 + i);
            sessions.push(s.clone());
        }
        // Recorded in scrambled order, in one batch: order comes from ids.
        let batch: Vec<RecordedSession> = [3, 0, 6, 1, 5, 2, 4]
            .iter()
            .map(|&i: &usize| {
                let s = &sessions[i];
                RecordedSession {
                    session: s.clone(),
                    calls: vec![call(s, "a/m", JAN_1)],
                }
            })
            .collect();
        store
            .record_sessions(project, &batch)
            .await
            .expect("record");
        let newest_first: Vec<&str> = sessions.iter().rev().map(|s| s.id.as_str()).collect();

        let mut filter = SessionFilter {
            limit: 3,
            ..SessionFilter::default()
        };
        let mut pages: Vec<Vec<String>> = Vec::new();
        loop {
            let page = list(store, project, filter.clone()).await;
            if page.is_empty() {
                break;
            }
            assert!(page.iter().all(|r| r.call_count == 1), "{page:?}");
            filter.before_id = page.last().map(|r| r.id.clone());
            pages.push(page.into_iter().map(|r| r.id).collect());
        }
        assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 1]);
        assert_eq!(pages.concat(), newest_first);

        let count = |limit| async move {
            list(
                store,
                project,
                SessionFilter {
                    limit,
                    ..SessionFilter::default()
                },
            )
            .await
            .len()
        };
        assert_eq!(count(1).await, 1);
        assert_eq!(count(0).await, 7);
        db.finish().await;
    }
}

#[tokio::test]
async fn limit_defaults_to_50_and_is_capped_at_500() {
    for db in test_dbs().await {
        let store = &db.store;
        let project = &ProjectId::default_project();
        let batch: Vec<RecordedSession> = (0..505)
            .map(|i| {
                let s = session("gateway", JAN_1 + i);
                let calls = vec![call(&s, "a/m", JAN_1 + i)];
                RecordedSession { session: s, calls }
            })
            .collect();
        store
            .record_sessions(project, &batch)
            .await
            .expect("record");
        let count = |limit| async move {
            list(
                store,
                project,
                SessionFilter {
                    limit,
                    ..SessionFilter::default()
                },
            )
            .await
            .len()
        };
        assert_eq!(count(0).await, 50);
        assert_eq!(count(500).await, 500);
        assert_eq!(count(501).await, 500);
        db.finish().await;
    }
}

#[tokio::test]
async fn child_sessions_oldest_first() {
    for db in test_dbs().await {
        let store = &db.store;
        let project = &ProjectId::default_project();
        let parent = session("agent", JAN_1);
        record(store, project, &parent, vec![call(&parent, "a/m", JAN_1)]).await;
        let mut children = Vec::new();
        for i in 0..2 {
            let mut child = session("summarize", JAN_1 + 1 + i);
            child.parent_session_id = Some(parent.id.clone());
            children.push(child);
        }
        // Recorded newest first: the listing still goes by id.
        for child in children.iter().rev() {
            let calls = vec![with_usage(
                call(child, "b/m", JAN_1 + 5),
                usage(1, 1, 0, 0, 2),
            )];
            record(store, project, child, calls).await;
        }
        let got = store
            .child_sessions(project, &parent.id)
            .await
            .expect("children");
        assert_eq!(ids(&got), [children[0].id.as_str(), &children[1].id]);
        assert!(got
            .iter()
            .all(|c| c.parent_session_id.as_deref() == Some(&parent.id)
                && c.call_count == 1
                && c.totals.total == 2));
        assert!(store
            .child_sessions(project, &children[0].id)
            .await
            .expect("none")
            .is_empty());
        db.finish().await;
    }
}

#[tokio::test]
async fn usage_per_group_with_utc_day_boundaries() {
    for db in test_dbs().await {
        let store = &db.store;
        let project = &ProjectId::default_project();

        // Last millisecond of Jan 1 and first of Jan 2 (UTC).
        let g = session("gateway", JAN_1);
        let g_calls = vec![
            with_usage(call(&g, "a/m1", JAN_1 + DAY - 1), usage(10, 5, 1, 2, 15)),
            with_usage(call(&g, "b/m2", JAN_1 + DAY), usage(100, 50, 0, 0, 150)),
        ];
        record(store, project, &g, g_calls).await;
        let c = session("chat", JAN_1);
        let c_calls = vec![
            // No usage reported: counted as a call, with 0 tokens.
            call(&c, "a/m1", JAN_1),
            with_usage(
                call(&c, "a/m1", JAN_1 + 2 * DAY + 3_600_000),
                usage(1, 2, 0, 1, 3),
            ),
        ];
        record(store, project, &c, c_calls).await;

        let row = |key: &str, calls, input, output, reasoning, cached_input, total| UsageGroupRow {
            key: key.to_owned(),
            calls,
            input,
            output,
            reasoning,
            cached_input,
            total,
            cost_nusd: None,
            unpriced_calls: 0,
        };
        let by = |group| async move {
            store
                .usage(project, group, None, None)
                .await
                .expect("usage")
        };
        assert_eq!(
            by(UsageGroup::Model).await,
            [
                row("a/m1", 3, 11, 7, 1, 3, 18),
                row("b/m2", 1, 100, 50, 0, 0, 150)
            ]
        );
        assert_eq!(
            by(UsageGroup::Provider).await,
            [
                row("a", 3, 11, 7, 1, 3, 18),
                row("b", 1, 100, 50, 0, 0, 150)
            ]
        );
        assert_eq!(
            by(UsageGroup::Operation).await,
            [
                row("chat", 2, 1, 2, 0, 1, 3),
                row("gateway", 2, 110, 55, 1, 2, 165)
            ]
        );
        assert_eq!(
            by(UsageGroup::Day).await,
            [
                row("2024-01-01", 2, 10, 5, 1, 2, 15),
                row("2024-01-02", 1, 100, 50, 0, 0, 150),
                row("2024-01-03", 1, 1, 2, 0, 1, 3),
            ]
        );

        // The range is [from, to) on sent_at_ms.
        let range = |from, to| async move {
            store
                .usage(project, UsageGroup::Day, from, to)
                .await
                .expect("usage")
                .into_iter()
                .map(|r| (r.key, r.calls))
                .collect::<Vec<_>>()
        };
        let day = |d: &str, n: i64| (d.to_owned(), n);
        assert_eq!(
            range(Some(JAN_1 + DAY), None).await,
            [day("2024-01-02", 1), day("2024-01-03", 1)]
        );
        assert_eq!(range(None, Some(JAN_1 + DAY)).await, [day("2024-01-01", 2)]);
        assert_eq!(
            range(Some(JAN_1 + DAY - 1), Some(JAN_1 + DAY)).await,
            [day("2024-01-01", 1)]
        );
        assert!(range(Some(JAN_1 + 10 * DAY), None).await.is_empty());

        // Every call is in exactly one group: the totals agree across groupings
        // and with the sessions' totals.
        let sessions = list(store, project, SessionFilter::default()).await;
        let session_total: i64 = sessions.iter().map(|s| s.totals.total).sum();
        for group in UsageGroup::ALL {
            let rows = by(group).await;
            assert_eq!(rows.iter().map(|r| r.calls).sum::<i64>(), 4, "{group}");
            assert_eq!(
                rows.iter().map(|r| r.total).sum::<i64>(),
                session_total,
                "{group}"
            );
        }
        db.finish().await;
    }
}

#[tokio::test]
async fn projects_are_isolated() {
    for db in test_dbs().await {
        let store = &db.store;
        let default = ProjectId::default_project();
        let other = store.create_project("other").await.expect("project");

        let mine = session("gateway", JAN_1);
        record(
            store,
            &default,
            &mine,
            vec![with_usage(call(&mine, "a/m", JAN_1), usage(1, 1, 0, 0, 2))],
        )
        .await;
        let mut child = session("gateway", JAN_1);
        child.parent_session_id = Some(mine.id.clone());
        record(store, &default, &child, vec![]).await;

        let theirs = session("gateway", JAN_1);
        let mut theirs_child = session("gateway", JAN_1);
        theirs_child.parent_session_id = Some(mine.id.clone());
        record(
            store,
            &other,
            &theirs,
            vec![with_usage(
                call(&theirs, "a/m", JAN_1),
                usage(5, 5, 0, 0, 10),
            )],
        )
        .await;
        record(store, &other, &theirs_child, vec![]).await;

        let listed = list(store, &default, SessionFilter::default()).await;
        assert_eq!(ids(&listed), [child.id.as_str(), &mine.id]);
        let listed = list(store, &other, SessionFilter::default()).await;
        assert_eq!(ids(&listed), [theirs_child.id.as_str(), &theirs.id]);
        assert!(listed.iter().all(|r| r.project_id == other.as_str()));

        assert!(store
            .get_session(&other, &mine.id)
            .await
            .expect("get")
            .is_none());
        assert!(store
            .get_session(&default, &theirs.id)
            .await
            .expect("get")
            .is_none());
        assert_eq!(
            ids(&store.child_sessions(&default, &mine.id).await.expect("c")),
            [child.id.as_str()]
        );
        assert_eq!(
            ids(&store.child_sessions(&other, &mine.id).await.expect("c")),
            [theirs_child.id.as_str()]
        );

        let usage_of = |project: ProjectId| async move {
            store
                .usage(&project, UsageGroup::Model, None, None)
                .await
                .expect("usage")
        };
        assert_eq!(usage_of(default.clone()).await[0].total, 2);
        assert_eq!(usage_of(other.clone()).await[0].total, 10);
        let nobody = ProjectId::new("nobody".to_owned());
        assert!(usage_of(nobody.clone()).await.is_empty());
        assert!(list(store, &nobody, SessionFilter::default())
            .await
            .is_empty());
        db.finish().await;
    }
}

fn priced(mut call: NewLlmCall, cost_nusd: Option<i64>, source: PriceSource) -> NewLlmCall {
    call.cost = CallCost {
        cost_nusd,
        price_source: Some(source),
        price_version: cost_nusd.map(|_| "0123456789ab".to_owned()),
    };
    call
}

#[tokio::test]
async fn costs_are_stored_on_calls_and_summed_in_sessions_and_usage_groups() {
    for db in test_dbs().await {
        let store = &db.store;
        let project = &ProjectId::default_project();

        // A keyed session with two priced calls (one with a cache write).
        let mut keyed = session("gateway", JAN_1);
        keyed.key_id = Some("key-1".to_owned());
        let mut written = usage(100, 10, 0, 40, 110);
        written.cache_creation_tokens = Some(20);
        let first = priced(
            with_usage(call(&keyed, "a/m", JAN_1), written),
            Some(1_500),
            PriceSource::Config,
        );
        let second = priced(
            with_usage(call(&keyed, "a/m", JAN_1 + 10), usage(1, 1, 0, 0, 2)),
            Some(250),
            PriceSource::Provider,
        );
        record(store, project, &keyed, vec![first.clone(), second]).await;
        // A keyless session: a free local call and an unpriced cloud call.
        let open = session("chat", JAN_1 + DAY);
        let free = priced(
            with_usage(call(&open, "local/m", JAN_1 + DAY), usage(5, 5, 0, 0, 10)),
            Some(0),
            PriceSource::None,
        );
        let unknown = priced(
            with_usage(call(&open, "cloud/m", JAN_1 + DAY), usage(7, 3, 0, 0, 10)),
            None,
            PriceSource::None,
        );
        record(store, project, &open, vec![free, unknown]).await;
        // A session whose only call has no cost (recorded before costs).
        let old = session("gateway", JAN_1 + 2 * DAY);
        record(
            store,
            project,
            &old,
            vec![call(&old, "cloud/m", JAN_1 + 2 * DAY)],
        )
        .await;

        // The call row reads back its cost and cache write count.
        let read = store
            .get_call(project, &first.id)
            .await
            .expect("get")
            .expect("the call");
        assert_eq!(read.cost, first.cost);
        assert_eq!(read.usage.cache_creation_tokens, Some(20));

        let rows = list(store, project, SessionFilter::default()).await;
        let cost_of = |id: &str| rows.iter().find(|r| r.id == id).unwrap().totals.cost_nusd;
        assert_eq!(cost_of(&keyed.id), Some(1_750));
        assert_eq!(cost_of(&open.id), Some(0), "a known 0 plus an unknown");
        assert_eq!(cost_of(&old.id), None, "no call has a cost");
        let keyed_row = rows.iter().find(|r| r.id == keyed.id).unwrap();
        assert_eq!(keyed_row.key_id.as_deref(), Some("key-1"));

        let by = |group| async move {
            store
                .usage(project, group, None, None)
                .await
                .expect("usage")
        };
        let keys: Vec<(String, i64, Option<i64>, i64)> = by(UsageGroup::Key)
            .await
            .into_iter()
            .map(|r| (r.key, r.calls, r.cost_nusd, r.unpriced_calls))
            .collect();
        assert_eq!(
            keys,
            [
                ("key-1".to_owned(), 2, Some(1_750), 0),
                ("none".to_owned(), 3, Some(0), 1),
            ]
        );
        let projects = by(UsageGroup::Project).await;
        assert_eq!(projects.len(), 1);
        assert_eq!(projects[0].key, "default");
        assert_eq!(projects[0].cost_nusd, Some(1_750));
        assert_eq!(projects[0].calls, 5);
        // Unreported usage is not "unpriced": only the call with usage
        // and no cost counts.
        assert_eq!(projects[0].unpriced_calls, 1);
        let models: Vec<(String, Option<i64>)> = by(UsageGroup::Model)
            .await
            .into_iter()
            .map(|r| (r.key, r.cost_nusd))
            .collect();
        assert_eq!(
            models,
            [
                ("a/m".to_owned(), Some(1_750)),
                ("cloud/m".to_owned(), None),
                ("local/m".to_owned(), Some(0)),
            ]
        );
        db.finish().await;
    }
}

#[tokio::test]
async fn a_session_keeps_the_config_snapshot_it_ran_with() {
    for db in test_dbs().await {
        let store = &db.store;
        let project = &ProjectId::default_project();
        let snapshot = ConfigSnapshot {
            llm_id: Some("0198a0a0-0000-7000-8000-000000000001".to_owned()),
            version: Some(3),
            source: Some(LlmSource::User),
            resolved_from: Some(ResolvedFrom::ConversationConfig),
            model: "a/m".to_owned(),
            provider_options: ProviderOptions {
                temperature: Some(0.25),
                stop: Some(vec!["END".to_owned()]),
                extra: Some(serde_json::json!({"min_p": 0.05})),
                ..ProviderOptions::default()
            },
            system_prompt: Some("You are terse.".to_owned()),
            base_url: Some("http://127.0.0.1:9/v1".to_owned()),
        };
        let mut with = session("chat", JAN_1);
        with.conversation_id = Some("conv-1".to_owned());
        with.config = Some(snapshot.clone());
        let without = session("gateway", JAN_1 + 1);
        record(store, project, &with, vec![call(&with, "a/m", JAN_1)]).await;
        record(store, project, &without, vec![]).await;

        let (row, calls) = store
            .get_session(project, &with.id)
            .await
            .unwrap()
            .expect("the session");
        assert_eq!(row.config.as_ref(), Some(&snapshot));
        assert_eq!(calls.len(), 1);
        let (row, _) = store
            .get_session(project, &without.id)
            .await
            .unwrap()
            .expect("the session");
        assert_eq!(row.config, None);
        // Listed with it too.
        let rows = list(store, project, SessionFilter::default()).await;
        assert_eq!(ids(&rows), vec![without.id.as_str(), &with.id]);
        assert_eq!(rows[1].config.as_ref(), Some(&snapshot));
        assert_eq!(rows[0].config, None);
        db.finish().await;
    }
}

#[tokio::test]
async fn usage_of_one_conversation_splits_by_operation() {
    for db in test_dbs().await {
        let store = &db.store;
        let project = &ProjectId::default_project();
        let in_conversation = |operation: &str, conversation: &str, at: i64| {
            let mut s = session(operation, at);
            s.conversation_id = Some(conversation.to_owned());
            s
        };
        let chat = in_conversation("chat", "conv-1", JAN_1);
        let title = in_conversation("title", "conv-1", JAN_1 + 1);
        let advisor = in_conversation("advisor", "conv-1", JAN_1 + 2);
        let other = in_conversation("chat", "conv-2", JAN_1 + 3);
        let gateway = session("gateway", JAN_1 + 4);
        for (s, tokens) in [
            (&chat, 10),
            (&title, 20),
            (&advisor, 30),
            (&other, 40),
            (&gateway, 50),
        ] {
            let calls = vec![
                with_usage(
                    call(s, "a/m", s.created_at_ms),
                    usage(tokens, 1, 0, 0, tokens + 1),
                ),
                with_usage(call(s, "a/m", s.created_at_ms + DAY), usage(1, 1, 0, 0, 2)),
            ];
            record(store, project, s, calls).await;
        }
        let of = |filter: UsageFilter, group| async move {
            store
                .usage_where(project, group, &filter)
                .await
                .expect("usage")
                .into_iter()
                .map(|r| (r.key, r.calls, r.input))
                .collect::<Vec<_>>()
        };
        let conv1 = UsageFilter {
            conversation_id: Some("conv-1".to_owned()),
            ..UsageFilter::default()
        };
        assert_eq!(
            of(conv1.clone(), UsageGroup::Operation).await,
            [
                ("advisor".to_owned(), 2, 31),
                ("chat".to_owned(), 2, 11),
                ("title".to_owned(), 2, 21),
            ]
        );
        // Other groupings and a time range combine with it.
        assert_eq!(
            of(conv1.clone(), UsageGroup::Model).await,
            [("a/m".to_owned(), 6, 63)]
        );
        let first_day = UsageFilter {
            to_ms: Some(JAN_1 + DAY),
            ..conv1
        };
        assert_eq!(
            of(first_day, UsageGroup::Project).await,
            [("default".to_owned(), 3, 60)]
        );
        // No such conversation: no groups; no filter: every call.
        let none = UsageFilter {
            conversation_id: Some("conv-9".to_owned()),
            ..UsageFilter::default()
        };
        assert!(of(none, UsageGroup::Operation).await.is_empty());
        assert_eq!(
            of(UsageFilter::default(), UsageGroup::Project).await,
            [("default".to_owned(), 10, 155)]
        );
        db.finish().await;
    }
}
