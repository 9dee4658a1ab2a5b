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
    assert_eq!(
        error("[server]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n"),
        "test.toml: server.lisen: unknown field `lisen`, expected `listen` or `max_body_bytes`"
    );
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
