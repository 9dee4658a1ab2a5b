use super::*;

fn models(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

struct Fleet {
    local: Vec<String>,
    box2: Vec<String>,
    cloud: Vec<String>,
}

impl Fleet {
    fn new() -> Self {
        Self {
            local: models(&["smollm2", "qwen"]),
            box2: models(&["qwen", "llama"]),
            cloud: models(&["gpt-4o"]),
        }
    }
    fn views(&self, box2_online: bool) -> Vec<ProviderView<'_>> {
        vec![
            ProviderView {
                name: "local",
                online: true,
                models: Some(&self.local),
            },
            ProviderView {
                name: "box2",
                online: box2_online,
                models: Some(&self.box2),
            },
            ProviderView {
                name: "cloud",
                online: true,
                models: Some(&self.cloud),
            },
            ProviderView {
                name: "unknown-list",
                online: false,
                models: None,
            },
        ]
    }
}

#[test]
fn composite_id_resolves_to_its_provider() {
    let fleet = Fleet::new();
    let r = resolve_model("box2/qwen", &fleet.views(true), Some("local")).unwrap();
    assert_eq!(r.model_id.to_string(), "box2/qwen");
    assert_eq!(r.resolved_from, ResolvedFrom::Composite);
}

#[test]
fn composite_id_with_unknown_model_lists_the_providers_models() {
    let fleet = Fleet::new();
    let err = resolve_model("local/nope", &fleet.views(true), None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "model 'nope' is not served by provider 'local'; available: local/smollm2, local/qwen"
    );
}

#[test]
fn provider_with_unknown_list_accepts_any_model() {
    let fleet = Fleet::new();
    let r = resolve_model("unknown-list/whatever", &fleet.views(true), None).unwrap();
    assert_eq!(r.model_id.model(), "whatever");
}

#[test]
fn bare_id_prefers_the_default_provider() {
    let fleet = Fleet::new();
    let r = resolve_model("qwen", &fleet.views(true), Some("local")).unwrap();
    assert_eq!(r.model_id.to_string(), "local/qwen");
    assert_eq!(r.resolved_from, ResolvedFrom::BareDefaultProvider);
}

#[test]
fn bare_id_served_by_one_online_provider() {
    let fleet = Fleet::new();
    let r = resolve_model("gpt-4o", &fleet.views(true), Some("local")).unwrap();
    assert_eq!(r.model_id.to_string(), "cloud/gpt-4o");
    assert_eq!(r.resolved_from, ResolvedFrom::BareUniqueProvider);
}

#[test]
fn bare_id_ignores_offline_providers() {
    let fleet = Fleet::new();
    let err = resolve_model("llama", &fleet.views(false), Some("local")).unwrap_err();
    assert!(matches!(err, ResolveError::NotFound { .. }), "{err:?}");
    let r = resolve_model("llama", &fleet.views(true), Some("local")).unwrap();
    assert_eq!(r.model_id.to_string(), "box2/llama");
}

#[test]
fn bare_id_on_several_providers_is_ambiguous() {
    let fleet = Fleet::new();
    let err = resolve_model("qwen", &fleet.views(true), Some("cloud")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "model 'qwen' is ambiguous: served by local/qwen, box2/qwen; use a composite id"
    );
}

#[test]
fn unknown_bare_id_lists_what_exists() {
    let fleet = Fleet::new();
    let err = resolve_model("mistral", &fleet.views(true), None).unwrap_err();
    let ResolveError::NotFound {
        available, total, ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(*total, 5);
    assert_eq!(available.len(), 5);
    assert!(err
        .to_string()
        .contains("available: local/smollm2, local/qwen, box2/qwen"));
}

#[test]
fn long_listings_are_truncated_with_a_count() {
    let many: Vec<String> = (0..50).map(|i| format!("m{i}")).collect();
    let views = [ProviderView {
        name: "big",
        online: true,
        models: Some(&many),
    }];
    let err = resolve_model("nope", &views, None).unwrap_err();
    let ResolveError::NotFound {
        available, total, ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!((available.len(), *total), (MAX_LISTED_IDS, 50));
    assert!(err
        .to_string()
        .contains("50 models exist, for example: big/m0"));
}
