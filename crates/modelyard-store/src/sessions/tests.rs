use super::*;

#[test]
fn names_round_trip() {
    for g in UsageGroup::ALL {
        assert_eq!(UsageGroup::from_name(g.as_str()), Some(g));
    }
    for s in SessionStatus::ALL {
        assert_eq!(SessionStatus::from_name(s.as_str()), Some(s));
    }
    assert_eq!(UsageGroup::from_name("Model"), None);
    assert_eq!(SessionStatus::from_name("failed"), None);
}

#[test]
fn session_filter_limits() {
    let limit = |limit| {
        SessionFilter {
            limit,
            ..SessionFilter::default()
        }
        .effective_limit()
    };
    assert_eq!(limit(0), DEFAULT_LIST_LIMIT);
    assert_eq!(limit(7), 7);
    assert_eq!(limit(10_000), MAX_LIST_LIMIT);
}
