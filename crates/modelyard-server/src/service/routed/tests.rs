use super::retry::backoff;
use super::*;
use crate::config::RoutingConfig;
use crate::service::llm_call::UpstreamStatus;

fn status(code: u16, retry_after: Option<&str>) -> LlmCallError {
    LlmCallError::Status(Box::new(UpstreamStatus {
        status: code,
        message: "m".into(),
        kind: None,
        code: None,
        retry_after: retry_after.map(str::to_owned),
    }))
}

#[test]
fn retry_after_reads_seconds_and_http_dates() {
    let now = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000);
    assert_eq!(retry_after_ms(&status(429, Some("2")), now), Some(2_000));
    let date = httpdate::fmt_http_date(now + Duration::from_secs(5));
    assert_eq!(retry_after_ms(&status(429, Some(&date)), now), Some(5_000));
    let past = httpdate::fmt_http_date(now - Duration::from_secs(5));
    assert_eq!(retry_after_ms(&status(503, Some(&past)), now), Some(0));
    assert_eq!(retry_after_ms(&status(429, Some("soon")), now), None);
    assert_eq!(retry_after_ms(&status(429, None), now), None);
}

#[test]
fn retry_on_decides_what_is_retried() {
    let config = RoutingConfig::default();
    assert!(retried(&config, &status(429, None)));
    assert!(retried(&config, &status(503, None)));
    assert!(!retried(&config, &status(400, None)));
    assert!(!retried(&config, &status(501, None)));
    assert!(counts_against_health(&status(501, None)));
    assert!(!counts_against_health(&status(404, None)));
}

#[test]
fn backoff_stays_under_its_cap() {
    let config = RoutingConfig::default();
    for made in 1..40 {
        let cap = (100u64 << (made - 1).min(16)).min(30_000);
        assert!(backoff(&config, made) <= Duration::from_millis(cap));
    }
}
