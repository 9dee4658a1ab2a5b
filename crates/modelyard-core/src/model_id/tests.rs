use proptest::prelude::*;

use super::*;

fn providers(name: &str) -> bool {
    matches!(name, "local" | "vllm" | "openai")
}

#[test]
fn splits_on_first_slash_only() {
    let parsed = ModelRef::parse("vllm/meta-llama/Llama-3-8B", providers).unwrap();
    let ModelRef::Composite(id) = parsed else {
        panic!("expected composite, got {parsed:?}")
    };
    assert_eq!(id.provider().as_str(), "vllm");
    assert_eq!(id.model(), "meta-llama/Llama-3-8B");
    assert_eq!(id.to_string(), "vllm/meta-llama/Llama-3-8B");
}

#[test]
fn unregistered_prefix_is_a_bare_id() {
    assert_eq!(
        ModelRef::parse("meta-llama/Llama-3-8B", providers).unwrap(),
        ModelRef::Bare("meta-llama/Llama-3-8B".into())
    );
    assert_eq!(
        ModelRef::parse("gpt-4o", providers).unwrap(),
        ModelRef::Bare("gpt-4o".into())
    );
}

#[test]
fn empty_inputs_are_errors() {
    assert_eq!(ModelRef::parse("", providers), Err(ModelIdError::Empty));
    assert_eq!(
        ModelRef::parse("local/", providers),
        Err(ModelIdError::EmptyModel {
            id: "local/".into()
        })
    );
}

#[test]
fn provider_name_rules() {
    assert!(ProviderName::new("local").is_ok());
    assert!(ProviderName::new("my_host-2.lan").is_ok());
    for bad in ["", "a/b", "-x", "has space", &"x".repeat(65)] {
        assert!(
            ProviderName::new(bad).is_err(),
            "{bad:?} should be rejected"
        );
    }
}

fn provider_strategy() -> impl Strategy<Value = String> {
    "[A-Za-z0-9][A-Za-z0-9_.-]{0,20}"
}

proptest! {
    /// format ∘ parse is the identity for every composite id whose provider is registered.
    #[test]
    fn format_then_parse_is_identity(provider in provider_strategy(), model in ".{1,40}") {
        let id = ModelId::new(ProviderName::new(provider.clone()).unwrap(), model).unwrap();
        let text = id.to_string();
        let parsed = ModelRef::parse(&text, |p| p == provider).unwrap();
        prop_assert_eq!(parsed, ModelRef::Composite(id.clone()));
        prop_assert_eq!(text, format!("{}/{}", id.provider(), id.model()));
    }

    /// parse ∘ format is the identity on the input string, bare or composite.
    #[test]
    fn parse_then_format_round_trips(input in ".{1,40}", registered in provider_strategy()) {
        let parsed = ModelRef::parse(&input, |p| p == registered).unwrap_or(ModelRef::Bare(String::new()));
        match parsed {
            ModelRef::Composite(id) => prop_assert_eq!(id.to_string(), input),
            ModelRef::Bare(name) if !name.is_empty() => prop_assert_eq!(name, input),
            ModelRef::Bare(_) => {
                let only_prefix = format!("{}/", registered);
                prop_assert_eq!(input, only_prefix);
            }
        }
    }
}
