use std::path::Path;

use modelyard_upstream::{ProviderKind, Timeouts};

use super::*;

fn no_env(_: &str) -> Option<String> {
    None
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(text, "test.toml", None, &no_env)
}

fn error(text: &str) -> String {
    parse(text).unwrap_err().to_string()
}

const FULL: &str = r#"
[server]
listen = "127.0.0.1:4100"

[storage]
url = "sqlite:///tmp/x.db"

[defaults]
model = "local/smollm2"
provider = "local"

[[providers]]
name = "local"
kind = "llama-cpp"
base_url = "http://127.0.0.1:18080"
timeouts = { first_token_ms = 30000 }
models = [{ id = "smollm2", context_window = 8192 }]

[[providers]]
name = "deepseek"
kind = "openai"
base_url = "https://api.deepseek.com/v1"
api_key_env = "DEEPSEEK_API_KEY"
headers = { "X-Title" = "modelyard" }
"#;

#[test]
fn full_config_parses() {
    let config = parse(FULL).unwrap();
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:4100");
    assert_eq!(config.providers.len(), 2);
    let local = &config.providers[0];
    assert_eq!(local.kind, ProviderKind::LlamaCpp);
    assert_eq!(local.timeouts.first_token_ms, 30_000);
    assert_eq!(local.timeouts.connect_ms, Timeouts::default().connect_ms);
    assert_eq!(local.models[0].context_window, Some(8192));
    assert_eq!(
        config.providers[1].api_key_env.as_deref(),
        Some("DEEPSEEK_API_KEY")
    );
    assert!(config.storage.call_log);
}

#[test]
fn defaults_bind_to_loopback() {
    let config = parse("").unwrap();
    assert_eq!(config.server.listen.to_string(), DEFAULT_LISTEN);
    assert!(config.server.listen.ip().is_loopback());
    assert!(config.storage.url.starts_with("sqlite://"));
    assert!(config.storage.url.ends_with("modelyard.db"));
}

#[test]
fn unknown_keys_are_errors_with_their_path() {
    // (The list of expected keys grows with the [server] table.)
    assert!(error("[server]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n")
        .starts_with("test.toml: server.lisen: unknown field `lisen`, expected one of `listen`"));
    assert!(error("[server]\ncors_origins = [\"*\"]\n").starts_with(
        "test.toml: server.cors_origins[0]: \"*\" is not an origin like https://app.example.com"
    ));
    assert!(
        error("[server]\ncors_origins = [\"http://a.example/path\"]\n")
            .starts_with("test.toml: server.cors_origins[0]:")
    );
    assert!(error("[server]\nallowed_hosts = [\"a b\"]\n")
        .starts_with("test.toml: server.allowed_hosts[0]:"));
    let text = "[[providers]]\nname = \"a\"\nkind = \"openai\"\nbase_url = \"http://h\"\ntimeouts = { conect_ms = 1 }\n";
    assert!(error(text)
        .starts_with("test.toml: providers[0].timeouts.conect_ms: unknown field `conect_ms`"));
    assert!(error("[bogus]\n").starts_with("test.toml: bogus: unknown field `bogus`"));
}

#[test]
fn invalid_values_name_key_and_reason() {
    let provider = |extra: &str| {
        format!(
            "[[providers]]\nname = \"a\"\nkind = \"openai\"\nbase_url = \"http://h\"\n{extra}\n"
        )
    };
    let cases = [
        ("[server]\nlisten = \"localhost\"".to_owned(), "test.toml: server.listen: \"localhost\" is not an address like 127.0.0.1:4000"),
        (provider("").replace("openai", "vertex"), "test.toml: providers[0].kind: unknown provider kind \"vertex\"; expected one of: openai, llama-cpp"),
        (provider("").replace("http://h", "ftp://h"), "test.toml: providers[0].base_url: must be an http:// or https:// URL with a host"),
        (provider("").replace("http://h", "http://u:p@h"), "test.toml: providers[0].base_url: must not contain credentials; use api_key_env"),
        (provider("api_key_env = \"sk-abc123-secret\""), "test.toml: providers[0].api_key_env: \"sk-abc123-secret\" is not an environment variable name (the key itself never goes in the file)"),
        (provider("headers = { Authorization = \"Bearer x\" }"), "test.toml: providers[0].headers.Authorization: credentials may not be written in the config; use api_key_env"),
        (provider("timeouts = { idle_ms = 0 }"), "test.toml: providers[0].timeouts.idle_ms: must be greater than 0"),
        (provider("") + &provider(""), "test.toml: providers[1].name: duplicate provider name \"a\""),
        (provider("").replace("name = \"a\"", "name = \"a/b\""), "test.toml: providers[0].name: invalid provider name \"a/b\""),
        ("[defaults]\nprovider = \"nope\"".to_owned(), "test.toml: defaults.provider: no provider named \"nope\""),
        ("[storage]\nurl = \"mysql://x\"".to_owned(), "test.toml: storage.url: must start with sqlite: or postgres://"),
        ("[server\n".to_owned(), "test.toml: "),
    ];
    for (text, want) in cases {
        let got = error(&text);
        assert!(
            got.starts_with(want),
            "config:\n{text}\ngot:  {got}\nwant: {want}"
        );
    }
}

#[test]
fn environment_overrides_win_and_are_validated() {
    let env = |name: &str| match name {
        "MODELYARD_SERVER_LISTEN" => Some("127.0.0.1:4999".to_owned()),
        "MODELYARD_STORAGE_CALL_LOG" => Some("false".to_owned()),
        _ => None,
    };
    let config = Config::from_toml(FULL, "test.toml", None, &env).unwrap();
    assert_eq!(config.server.listen.port(), 4999);
    assert!(!config.storage.call_log);

    let bad = |name: &str| (name == "MODELYARD_STORAGE_CALL_LOG").then(|| "maybe".to_owned());
    assert_eq!(
        Config::from_toml("", "test.toml", None, &bad).unwrap_err().to_string(),
        "environment variable MODELYARD_STORAGE_CALL_LOG: storage.call_log: expected true or false, got \"maybe\""
    );
}

#[test]
fn missing_file_is_a_clear_error() {
    let err = Config::load(Some(Path::new("/nonexistent/modelyard.toml")), &no_env).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("/nonexistent/modelyard.toml: cannot read:"),
        "{err}"
    );
}

const PRESETS: &str = r#"
[defaults.presets.default]
version = 3
model = "local/smollm2"
display_name = "House default"
system_prompt = "Be brief."
provider_options = { temperature = 0.2, max_tokens = 256, stop = ["END"], extra = { min_p = 0.05 } }

[defaults.presets.title]
version = 1
model = "local/tiny"

[defaults.presets.title.provider_options]
temperature = 1
top_p = 0.9
reasoning_effort = "none"
seed = 7
"#;

#[test]
fn presets_parse() {
    let config = parse(PRESETS).unwrap();
    let presets = &config.defaults.presets;
    assert_eq!(presets.len(), 2);
    let default = &presets["default"];
    assert_eq!(default.version, 3);
    assert_eq!(default.model, "local/smollm2");
    assert_eq!(default.display_name.as_deref(), Some("House default"));
    assert_eq!(default.system_prompt.as_deref(), Some("Be brief."));
    assert_eq!(default.provider_options.temperature, Some(0.2));
    assert_eq!(default.provider_options.max_tokens, Some(256));
    assert_eq!(default.provider_options.stop, Some(vec!["END".to_owned()]));
    assert_eq!(
        default.provider_options.extra,
        Some(serde_json::json!({"min_p": 0.05}))
    );
    let title = &presets["title"];
    assert_eq!(title.provider_options.temperature, Some(1.0));
    assert_eq!(title.provider_options.top_p, Some(0.9));
    assert_eq!(
        title.provider_options.reasoning_effort.as_deref(),
        Some("none")
    );
    assert_eq!(title.provider_options.seed, Some(7));
    assert_eq!(config.defaults.default_model(), Some("local/smollm2"));
}

#[test]
fn defaults_model_still_works_without_a_default_preset() {
    let config = parse("[defaults]\nmodel = \"local/m\"\n[defaults.presets.title]\nversion = 1\nmodel = \"local/t\"\n").unwrap();
    assert_eq!(config.defaults.model.as_deref(), Some("local/m"));
    assert_eq!(config.defaults.default_model(), Some("local/m"));
    assert!(!config.defaults.presets.contains_key("default"));
    assert_eq!(parse("").unwrap().defaults.default_model(), None);
}

#[test]
fn invalid_presets_name_key_and_reason() {
    let preset = |name: &str, body: &str| format!("[defaults.presets.{name}]\n{body}\n");
    let ok = "version = 1\nmodel = \"local/m\"\n";
    let cases = [
        (preset("Chat", ok), "test.toml: defaults.presets.Chat: a preset is named `default` or after an operation ([a-z][a-z0-9_-]{0,31})"),
        (preset("\"a/b\"", ok), "test.toml: defaults.presets.a/b: a preset is named"),
        (preset("chat", "model = \"local/m\""), "test.toml: defaults.presets.chat.version: is required"),
        (preset("chat", "version = 0\nmodel = \"local/m\""), "test.toml: defaults.presets.chat.version: must be at least 1, got 0"),
        (preset("chat", "version = \"2\"\nmodel = \"local/m\""), "test.toml: defaults.presets.chat.version: invalid type"),
        (preset("chat", "version = 1"), "test.toml: defaults.presets.chat.model: is required"),
        (preset("chat", "version = 1\nmodel = \"\""), "test.toml: defaults.presets.chat.model: must not be empty"),
        (preset("chat", &format!("{ok}temperature = 1")), "test.toml: defaults.presets.chat.temperature: unknown field `temperature`"),
        (preset("chat", &format!("{ok}api_key = \"sk-x\"")), "test.toml: defaults.presets.chat.api_key: unknown field `api_key`"),
        (preset("chat", &format!("{ok}provider_options = {{ temperature = 2.5 }}")), "test.toml: defaults.presets.chat.provider_options.temperature: must be between 0 and 2, got 2.5"),
        (preset("chat", &format!("{ok}provider_options = {{ top_p = 1.5 }}")), "test.toml: defaults.presets.chat.provider_options.top_p: must be between 0 and 1"),
        (preset("chat", &format!("{ok}provider_options = {{ max_tokens = 0 }}")), "test.toml: defaults.presets.chat.provider_options.max_tokens: must be at least 1, got 0"),
        (preset("chat", &format!("{ok}provider_options = {{ reasoning_effort = \"max\" }}")), "test.toml: defaults.presets.chat.provider_options.reasoning_effort: must be one of none, minimal, low, medium, high, xhigh"),
        (preset("chat", &format!("{ok}provider_options = {{ stop = [\"a\", \"b\", \"c\", \"d\", \"e\"] }}")), "test.toml: defaults.presets.chat.provider_options.stop: at most 4 sequences, got 5"),
        (preset("chat", &format!("{ok}provider_options = {{ extra = {{ model = \"x\" }} }}")), "test.toml: defaults.presets.chat.provider_options.extra: \"model\" is set by routing"),
        (preset("chat", &format!("{ok}provider_options = {{ extra = {{ api_key = \"x\" }} }}")), "test.toml: defaults.presets.chat.provider_options.extra: \"api_key\" looks like a credential"),
        (preset("chat", &format!("{ok}provider_options = {{ extra = 3 }}")), "test.toml: defaults.presets.chat.provider_options.extra: invalid type"),
        (preset("chat", &format!("{ok}provider_options = {{ temprature = 1 }}")), "test.toml: defaults.presets.chat.provider_options.temprature: unknown field `temprature`"),
        (format!("[defaults]\nmodel = \"local/x\"\n{}", preset("default", ok)), "test.toml: defaults.model: conflicts with [defaults.presets.default]"),
    ];
    for (text, want) in cases {
        let got = error(&text);
        assert!(
            got.starts_with(want),
            "config:\n{text}\ngot:  {got}\nwant: {want}"
        );
    }
}

#[test]
fn storage_content_and_retention_parse() {
    let config = parse("").unwrap();
    assert_eq!(config.storage.content, ContentPolicy::Full);
    assert_eq!(config.storage.retention, RetentionConfig::default());
    assert!(!config.storage.retention.is_configured());

    let config = parse(
        "[storage]\ncontent = \"metadata\"\n\n[storage.retention]\nmax_age_days = 30\nmax_calls = 100000\n",
    )
    .unwrap();
    assert_eq!(config.storage.content, ContentPolicy::Metadata);
    assert_eq!(
        config.storage.retention,
        RetentionConfig {
            max_age_days: Some(30),
            max_calls: Some(100_000),
        }
    );
    assert!(config.storage.retention.is_configured());
    let only_count = parse("[storage.retention]\nmax_calls = 1\n").unwrap();
    assert_eq!(only_count.storage.retention.max_age_days, None);
    assert_eq!(only_count.storage.retention.max_calls, Some(1));

    let env = |name: &str| (name == "MODELYARD_STORAGE_CONTENT").then(|| "metadata".to_owned());
    let config = Config::from_toml("", "test.toml", None, &env).unwrap();
    assert_eq!(config.storage.content, ContentPolicy::Metadata);
}

#[test]
fn invalid_storage_content_and_retention_name_key_and_reason() {
    let cases = [
        (
            "[storage]\ncontent = \"none\"",
            "test.toml: storage.content: must be \"full\" or \"metadata\", got \"none\"",
        ),
        (
            "[storage]\ncontent = 1",
            "test.toml: storage.content: invalid type: integer `1`, expected a string",
        ),
        (
            "[storage.retention]\nmax_age_days = 0",
            "test.toml: storage.retention.max_age_days: must be at least 1, got 0",
        ),
        (
            "[storage.retention]\nmax_calls = -5",
            "test.toml: storage.retention.max_calls: must be at least 1, got -5",
        ),
        (
            "[storage.retention]\nmax_age_days = 99999999999",
            "test.toml: storage.retention.max_age_days: 99999999999 is too large",
        ),
        (
            "[storage.retention]\nmax_days = 3",
            "test.toml: storage.retention.max_days: unknown field `max_days`, expected `max_age_days` or `max_calls`",
        ),
        (
            "[storage.retention]\nmax_calls = \"10\"",
            "test.toml: storage.retention.max_calls: invalid type: string \"10\", expected i64",
        ),
    ];
    for (text, want) in cases {
        assert_eq!(error(text), want, "config:\n{text}");
    }
}

#[test]
fn shutdown_timeout_and_sweep_interval_have_defaults_and_bounds() {
    let config = parse("").unwrap();
    assert_eq!(config.server.shutdown_timeout_ms, 30_000);
    assert_eq!(config.turns.sweep_interval_ms, 30_000);
    let config =
        parse("[server]\nshutdown_timeout_ms = 0\n[turns]\nsweep_interval_ms = 500\n").unwrap();
    assert_eq!(config.server.shutdown_timeout_ms, 0);
    assert_eq!(config.turns.sweep_interval_ms, 500);
    assert!(
        error("[server]\nshutdown_timeout_ms = 3600001\n").contains("server.shutdown_timeout_ms")
    );
    assert!(error("[turns]\nsweep_interval_ms = 10\n").contains("turns.sweep_interval_ms"));
}

#[test]
fn context_keys_have_defaults_and_bounds() {
    let config = parse("").unwrap();
    assert_eq!(
        config.turns.context_strategy,
        super::ContextStrategy::Compact
    );
    assert!((config.turns.compact_at - 0.8).abs() < f64::EPSILON);
    assert_eq!(config.turns.output_reserve_tokens, 1024);
    let config = parse(
        "[turns]\ncontext_strategy = \"truncate\"\ncompact_at = 0.5\noutput_reserve_tokens = 256\n",
    )
    .unwrap();
    assert_eq!(
        config.turns.context_strategy,
        super::ContextStrategy::Truncate
    );
    assert!((config.turns.compact_at - 0.5).abs() < f64::EPSILON);
    assert_eq!(config.turns.output_reserve_tokens, 256);
    let config = parse("[turns]\ncontext_strategy = \"error\"\n").unwrap();
    assert_eq!(config.turns.context_strategy, super::ContextStrategy::Error);
    let bad = error("[turns]\ncontext_strategy = \"shrink\"\n");
    assert!(
        bad.contains("turns.context_strategy") && bad.contains("shrink"),
        "{bad}"
    );
    assert!(error("[turns]\ncompact_at = 1.5\n").contains("turns.compact_at"));
    assert!(error("[turns]\ncompact_at = 0.0\n").contains("turns.compact_at"));
    assert!(error("[turns]\noutput_reserve_tokens = 0\n").contains("turns.output_reserve_tokens"));
}

const TWO: &str = r#"
[[providers]]
name = "a"
kind = "llama-cpp"
base_url = "http://127.0.0.1:18080"

[[providers]]
name = "b"
kind = "llama-cpp"
base_url = "http://127.0.0.1:18081"
"#;

#[test]
fn routes_and_routing_parse_with_their_defaults() {
    let config = parse(&format!(
        "{TWO}\n[routing]\nretries = 1\nretry_on = [\"connect\", 503]\n\n\
         [[routes]]\nname = \"qwen3-8b\"\ntargets = [\"a/qwen3-8b\", {{ model = \"b/qwen3-8b\", weight = 2 }}]\n\
         fallbacks = [\"cheap\", \"b/other\"]\n\n\
         [[routes]]\nname = \"cheap\"\ntargets = [\"b/small\"]\nstrategy = \"round-robin\"\naffinity = \"none\"\n"
    ))
    .unwrap();
    assert_eq!(config.routing.retries, 1);
    assert_eq!(
        config.routing.retry_on,
        RetryOn {
            connect: true,
            timeout: false,
            statuses: vec![503]
        }
    );
    assert_eq!(config.routing.cooldown_ms, 30_000);
    let route = &config.routes[0];
    assert_eq!(route.strategy, Strategy::LeastBusy);
    assert_eq!(route.affinity, Affinity::Conversation);
    assert_eq!(route.targets[1].weight, 2);
    assert_eq!(config.routes[1].strategy, Strategy::RoundRobin);
    assert_eq!(parse(TWO).unwrap().routing, RoutingConfig::default());
}

#[test]
fn invalid_routes_name_the_key_and_reason() {
    for (routes, key, reason) in [
        (
            "[[routes]]\nname = \"a/x\"\ntargets = [\"a/x\"]\n",
            "routes[0].name",
            "starts with the provider name",
        ),
        (
            "[[routes]]\nname = \"r\"\ntargets = [\"nope/x\"]\n",
            "routes[0].targets[0]",
            "is not a deployment",
        ),
        ("[[routes]]\nname = \"r\"\ntargets = []\n", "routes[0].targets", "needs 1-64"),
        (
            "[[routes]]\nname = \"r\"\ntargets = [\"a/x\"]\nstrategy = \"random\"\n",
            "routes[0].strategy",
            "is not one of",
        ),
        (
            "[[routes]]\nname = \"r\"\ntargets = [\"a/x\"]\nfallbacks = [\"ghost\"]\n",
            "routes[0].fallbacks[0]",
            "no route has that name",
        ),
        (
            "[[routes]]\nname = \"r\"\ntargets = [\"a/x\"]\n[[routes]]\nname = \"r\"\ntargets = [\"b/x\"]\n",
            "routes[1].name",
            "duplicate",
        ),
        ("[routing]\nretries = 11\n", "routing.retries", "between 0 and 10"),
        ("[routing]\nretry_on = [\"sometimes\"]\n", "routing.retry_on[0]", "HTTP status"),
    ] {
        let message = error(&format!("{TWO}\n{routes}"));
        assert!(
            message.contains(key) && message.contains(reason),
            "{routes}: {message}"
        );
    }
}

#[test]
fn traces_are_off_by_default_and_the_endpoint_must_be_loopback_unless_allowed() {
    let config = parse("").unwrap();
    assert_eq!(config.telemetry.otlp_endpoint, None);
    assert_eq!(config.telemetry.service_name, "modelyard");
    assert!(!config.telemetry.capture_content);

    let config =
        parse("[telemetry]\notlp_endpoint = \"http://127.0.0.1:4318\"\nservice_name = \"gw\"\n")
            .unwrap();
    let endpoint = config.telemetry.otlp_endpoint.unwrap();
    assert_eq!(endpoint.as_str(), "http://127.0.0.1:4318/v1/traces");
    assert_eq!(config.telemetry.service_name, "gw");
    let kept = parse("[telemetry]\notlp_endpoint = \"http://localhost:4318/v1/traces\"\n").unwrap();
    assert_eq!(
        kept.telemetry.otlp_endpoint.unwrap().as_str(),
        "http://localhost:4318/v1/traces"
    );

    assert_eq!(
        error("[telemetry]\notlp_endpoint = \"http://collector.internal:4318\"\n"),
        "test.toml: telemetry.otlp_endpoint: \"http://collector.internal:4318\" is not a loopback \
         address; set telemetry.otlp_allow_remote = true to send spans to another host"
    );
    let remote = parse(
        "[telemetry]\notlp_endpoint = \"https://collector.internal\"\notlp_allow_remote = true\n",
    )
    .unwrap();
    assert_eq!(
        remote.telemetry.otlp_endpoint.unwrap().as_str(),
        "https://collector.internal/v1/traces"
    );
    assert!(
        error("[telemetry]\notlp_endpoint = \"grpc://127.0.0.1:4317\"\n")
            .contains("the scheme must be http or https")
    );
    assert!(
        error("[telemetry]\notlp_endpoint = \"http://u:p@127.0.0.1:4318\"\n")
            .contains("user name or password")
    );
    assert!(error("[telemetry]\notlp_endpoint = \"not a url\"\n").contains("is not a URL"));
    assert!(error("[telemetry]\nservice_name = \"\"\n").contains("telemetry.service_name"));

    let env = |name: &str| match name {
        "MODELYARD_TELEMETRY_OTLP_ENDPOINT" => Some("http://[::1]:4318".to_owned()),
        "MODELYARD_TELEMETRY_CAPTURE_CONTENT" => Some("true".to_owned()),
        "MODELYARD_TELEMETRY_SERVICE_NAME" => Some("edge".to_owned()),
        _ => None,
    };
    let config = Config::from_toml("", "test.toml", None, &env).unwrap();
    assert_eq!(
        config.telemetry.otlp_endpoint.unwrap().as_str(),
        "http://[::1]:4318/v1/traces"
    );
    assert!(config.telemetry.capture_content);
    assert_eq!(config.telemetry.service_name, "edge");
}

#[test]
fn anthropic_providers_speak_messages_and_other_kinds_opt_in() {
    let config = parse(
        "[[providers]]\nname = \"claude\"\nkind = \"anthropic\"\n\n\
         [[providers]]\nname = \"local\"\nkind = \"llama-cpp\"\nbase_url = \"http://127.0.0.1:8080\"\nmessages_api = true\n\n\
         [[providers]]\nname = \"plain\"\nkind = \"openai\"\nbase_url = \"http://h\"\n",
    )
    .unwrap();
    let claude = &config.providers[0];
    assert_eq!(claude.kind, ProviderKind::Anthropic);
    assert_eq!(claude.base_url.as_str(), "https://api.anthropic.com/");
    assert!(claude.messages_api);
    assert!(config.providers[1].messages_api);
    assert!(!config.providers[2].messages_api);
    assert_eq!(
        error("[[providers]]\nname = \"c\"\nkind = \"anthropic\"\nmessages_api = false\n"),
        "test.toml: providers[0].messages_api: kind anthropic speaks only the Messages API; it \
         cannot be false"
    );
}

#[test]
fn prices_are_checked_and_versioned() {
    let provider = "[[providers]]\nname = \"deepseek\"\nkind = \"deepseek\"\n";
    let with = |prices: &str| format!("{provider}\n{prices}");
    let config = parse(&with(
        "[[prices]]\nmodel = \"deepseek/*\"\ninput_per_mtok = 0.27\n\
         cached_input_per_mtok = 0.07\noutput_per_mtok = 1.10\ncurrency = \"USD\"\n\
         [[prices]]\nmodel = \"deepseek/deepseek-reasoner\"\ninput_per_mtok = 0.55\n\
         output_per_mtok = 2.19\nreasoning_per_mtok = 2.19\n",
    ))
    .unwrap();
    assert_eq!(config.prices.len(), 2);
    let glob = &config.prices[0];
    assert_eq!(glob.model, "deepseek/*");
    assert_eq!(glob.price.cached_input_per_mtok, Some(0.07));
    assert_eq!(glob.price.reasoning_per_mtok, None);
    assert_eq!(glob.version, glob.price.version("deepseek/*"));
    assert_ne!(glob.version, config.prices[1].version);

    let bad = |prices: &str| error(&with(prices));
    let entry = |extra: &str| {
        format!(
            "[[prices]]\nmodel = \"deepseek/*\"\ninput_per_mtok = 1\noutput_per_mtok = 2\n{extra}"
        )
    };
    let eur = bad(&entry("currency = \"EUR\"\n"));
    assert!(
        eur.contains("prices[0].currency") && eur.contains("only \"USD\""),
        "{eur}"
    );
    let negative = bad(&entry("cached_input_per_mtok = -0.5\n"));
    assert!(
        negative.contains("prices[0].cached_input_per_mtok"),
        "{negative}"
    );
    let twice = bad(&format!("{}{}", entry(""), entry("")));
    assert!(
        twice.contains("prices[1].model") && twice.contains("twice"),
        "{twice}"
    );
    let unknown =
        bad("[[prices]]\nmodel = \"openai/gpt-4o\"\ninput_per_mtok = 1\noutput_per_mtok = 2\n");
    assert!(
        unknown.contains("prices[0].model") && unknown.contains("no provider named \"openai\""),
        "{unknown}"
    );
    let bare = bad("[[prices]]\nmodel = \"gpt-4o\"\ninput_per_mtok = 1\noutput_per_mtok = 2\n");
    assert!(bare.contains("composite id"), "{bare}");
    let missing = bad("[[prices]]\nmodel = \"deepseek/*\"\ninput_per_mtok = 1\n");
    assert!(missing.contains("output_per_mtok"), "{missing}");
    let typo = bad(&entry("output_per_mtokens = 3\n"));
    assert!(typo.contains("output_per_mtokens"), "{typo}");
}
