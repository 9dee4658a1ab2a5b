use serde_json::{json, Map};

use super::*;

#[test]
fn compose_puts_routing_fields_last() {
    let mut options = Map::new();
    options.insert("model".into(), json!("wrong"));
    options.insert("stream".into(), json!(false));
    options.insert("temperature".into(), json!(0.5));
    let body = compose("m", options, vec![json!({"role": "user"})], true);
    assert_eq!(
        body,
        json!({"model": "m", "stream": true, "temperature": 0.5,
               "messages": [{"role": "user"}], "stream_options": {"include_usage": true}})
    );
    let body = compose("m", Map::new(), Vec::new(), false);
    assert_eq!(body, json!({"model": "m", "messages": [], "stream": false}));
}

#[test]
fn status_messages_name_the_provider_and_the_cause() {
    assert!(status_message("p", 401, "bad key").contains("rejected the server's credentials"));
    assert!(status_message("p", 302, "moved").contains("redirects are not followed"));
    assert_eq!(
        status_message("p", 500, "boom"),
        "provider 'p' answered HTTP 500: boom"
    );
}
