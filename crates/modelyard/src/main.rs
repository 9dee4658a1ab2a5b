//! `modelyard`: the server and a CLI over its HTTP API.
//!
//! `serve` runs the server; every other command is an HTTP client of a
//! running server (`--server`, default the configured listen address).

mod calls;
mod catalog;
mod chat;
mod client;
mod conversations;
mod keys;
mod llms;
mod operations;
mod sessions;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use modelyard_server::Config;

/// Modelyard: one self-hosted model layer for agent and chat apps.
#[derive(Parser, Debug)]
#[command(name = "modelyard", version, about)]
struct Cli {
    /// Config file (default: $MODELYARD_CONFIG, else ./modelyard.toml if present).
    #[arg(long, global = true, env = "MODELYARD_CONFIG")]
    config: Option<PathBuf>,
    /// Server base URL for client commands (default: http:// + the configured listen address).
    #[arg(long, global = true, env = "MODELYARD_SERVER_URL")]
    server: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum KeysCommand {
    /// Create a key; it is printed once, on stdout. Client commands send
    /// `$MODELYARD_API_KEY`.
    Create {
        /// Project name (created if missing).
        #[arg(long, default_value = "default")]
        project: String,
        /// `admin` (keys and configs too), `member` (uses the API), `read`.
        #[arg(long, default_value = "admin", value_parser = ["admin", "member", "read"])]
        role: String,
        /// A label.
        #[arg(long)]
        name: Option<String>,
    },
    /// List a project's keys (never the secrets).
    Ls {
        /// Project name.
        #[arg(long, default_value = "default")]
        project: String,
    },
    /// Revoke a key.
    Revoke {
        /// Key id.
        id: String,
        /// Project name.
        #[arg(long, default_value = "default")]
        project: String,
    },
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server.
    Serve,
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// The model catalog: favorites first, then one group per provider.
    Models {
        /// Include the models of offline and disabled providers.
        #[arg(long)]
        all: bool,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
    /// Providers: status, last error, model count, last check.
    Providers {
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
    /// Favorite models (stored on the server, shared by every client).
    Favorites {
        #[command(subcommand)]
        command: Option<FavoritesCommand>,
    },
    /// Conversations: stored chats that remember their model.
    Conversations {
        #[command(subcommand)]
        command: ConversationsCommand,
    },
    /// Chat with a model, streaming the answer to the terminal.
    Chat {
        /// Continue this conversation (uses and persists its model; -m overrides).
        #[arg(short, long)]
        conversation: Option<String>,
        /// Model id (`provider/model`); default: the server's default model.
        #[arg(short, long)]
        model: Option<String>,
        /// System prompt.
        #[arg(short, long)]
        system: Option<String>,
        /// Maximum tokens to generate.
        #[arg(long)]
        max_tokens: Option<u32>,
        /// Sampling temperature.
        #[arg(long)]
        temperature: Option<f64>,
        /// Wait for the whole answer instead of streaming.
        #[arg(long)]
        no_stream: bool,
        /// The prompt; read from stdin when omitted.
        prompt: Vec<String>,
    },
    /// API keys (managed in the database named by the config; the first
    /// admin key can be made before the server requires keys).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// LLM configs: reusable model + system prompt + options.
    Llms {
        #[command(subcommand)]
        command: LlmsCommand,
    },
    /// Recent LLM calls, newest first; `calls show ID` for one.
    Calls {
        #[command(subcommand)]
        command: Option<CallsCommand>,
        /// How many calls to list.
        #[arg(short = 'n', long, default_value_t = 20)]
        limit: u32,
        /// Only calls to this model id.
        #[arg(short, long)]
        model: Option<String>,
    },
    /// LLM sessions (a gateway request, a conversation turn, ...) with their
    /// calls' totals, newest first; `sessions show ID` for one.
    #[command(args_conflicts_with_subcommands = true)]
    Sessions {
        #[command(subcommand)]
        command: Option<SessionsCommand>,
        #[command(flatten)]
        list: sessions::ListArgs,
    },
    /// Token usage per model, provider, operation or UTC day.
    Usage {
        /// Grouping.
        #[arg(long, value_name = "GROUP", default_value = "model",
              value_parser = ["model", "provider", "operation", "day"])]
        by: String,
        /// Only calls sent at or after this time (RFC 3339, or a UTC date YYYY-MM-DD).
        #[arg(long, value_name = "RFC3339")]
        from: Option<String>,
        /// Only calls sent before this time (RFC 3339, or a UTC date YYYY-MM-DD).
        #[arg(long, value_name = "RFC3339")]
        to: Option<String>,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum SessionsCommand {
    /// Sessions, newest first.
    Ls(sessions::ListArgs),
    /// One session: its calls, with its child sessions indented under it.
    Show {
        /// Session id.
        id: String,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Validate a config file and print what it configures.
    Check {
        /// File to check (default: --config / $MODELYARD_CONFIG / ./modelyard.toml).
        path: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum ConversationsCommand {
    /// Recent conversations.
    Ls {
        /// How many.
        #[arg(short = 'n', long, default_value_t = 20)]
        limit: u32,
    },
    /// A conversation and its messages (with the model of every answer).
    Show {
        /// Conversation id.
        id: String,
    },
    /// Create a conversation; prints its id.
    New {
        /// Title.
        #[arg(short, long)]
        title: Option<String>,
        /// Initial model selection.
        #[arg(short, long)]
        model: Option<String>,
        /// Parent conversation (a subtask starts with its model).
        #[arg(long)]
        parent: Option<String>,
        /// Offer the advisor tool in its turns.
        #[arg(long)]
        advisor: bool,
    },
    /// Show, or turn on/off, the advisor tool of a conversation.
    Advisor {
        /// Conversation id.
        id: String,
        /// `on` or `off`; without it, show the setting and its model.
        #[arg(value_parser = ["on", "off"])]
        state: Option<String>,
    },
    /// Delete (soft).
    Rm {
        /// Conversation id.
        id: String,
    },
    /// The conversation's model selection.
    Model {
        #[command(subcommand)]
        command: ModelCommand,
    },
    /// Model history: every selection change and every turn's model.
    History {
        /// Conversation id.
        id: String,
    },
    /// Live events of a conversation (after replaying the log).
    Watch {
        /// Conversation id.
        id: String,
    },
    /// Set the conversation's LLM config (default, or for one operation).
    SetLlm {
        /// Conversation id.
        id: String,
        /// Only for this operation (`chat`, `title`, ...).
        #[arg(long)]
        op: Option<String>,
        /// LLM config id; `none` clears.
        config_id: String,
    },
    /// Generate a title with the `title` operation's model.
    Title {
        /// Conversation id.
        id: String,
        /// Model for this call only (not persisted).
        #[arg(short, long)]
        model: Option<String>,
    },
    /// Summarize all but the last messages with the `compaction` model;
    /// later turns send the summary instead.
    Compact {
        /// Conversation id.
        id: String,
        /// Messages left as they are (default 2).
        #[arg(long)]
        keep_last: Option<u32>,
        /// Model for this call only (not persisted).
        #[arg(short, long)]
        model: Option<String>,
    },
}

#[derive(clap::Args, Debug)]
struct LlmFields {
    /// Model id (`provider/model`).
    #[arg(short, long)]
    model: Option<String>,
    /// Display name.
    #[arg(long)]
    name: Option<String>,
    /// System prompt.
    #[arg(short, long)]
    system: Option<String>,
    /// Sampling temperature (0..2).
    #[arg(long)]
    temperature: Option<f64>,
    /// Maximum tokens to generate.
    #[arg(long)]
    max_tokens: Option<u32>,
}

impl LlmFields {
    fn args(&self) -> llms::LlmArgs {
        llms::LlmArgs {
            model: self.model.clone(),
            name: self.name.clone(),
            system: self.system.clone(),
            temperature: self.temperature,
            max_tokens: self.max_tokens,
        }
    }
}

#[derive(Subcommand, Debug)]
enum LlmsCommand {
    /// List configs, newest first.
    Ls {
        /// How many.
        #[arg(short = 'n', long, default_value_t = 50)]
        limit: u32,
    },
    /// One config.
    Show {
        /// Config id.
        id: String,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create a config (`--model` required); prints its id.
    Create {
        #[command(flatten)]
        fields: LlmFields,
    },
    /// Change a user config (system defaults: copy them first).
    Edit {
        /// Config id.
        id: String,
        #[command(flatten)]
        fields: LlmFields,
    },
    /// Delete a user config (refused while conversations use it).
    Rm {
        /// Config id.
        id: String,
    },
    /// Copy a config (e.g. a system default) into a new user config; prints its id.
    Copy {
        /// Config id.
        id: String,
    },
}

#[derive(Subcommand, Debug)]
enum ModelCommand {
    /// Print the selection.
    Get {
        /// Conversation id.
        id: String,
    },
    /// Set the selection.
    Set {
        /// Conversation id.
        id: String,
        /// Model id (`provider/model`).
        model: String,
    },
    /// Clear the selection.
    Clear {
        /// Conversation id.
        id: String,
    },
}

#[derive(Subcommand, Debug)]
enum FavoritesCommand {
    /// List favorites in order.
    Ls,
    /// Add a model at the end.
    Add {
        /// Model id (`provider/model`).
        model: String,
    },
    /// Remove a model.
    Rm {
        /// Model id (`provider/model`).
        model: String,
    },
    /// Move a model to a position (1 = first).
    Move {
        /// Model id (`provider/model`).
        model: String,
        /// New position, 1-based.
        position: usize,
    },
}

#[derive(Subcommand, Debug)]
enum CallsCommand {
    /// One call with its request and response.
    Show {
        /// Call id.
        id: String,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn load_config(explicit: Option<&std::path::Path>) -> anyhow::Result<Config> {
    let path = Config::locate(explicit, &env);
    Ok(Config::load(path.as_deref(), &env)?)
}

fn server_url(cli: &Cli) -> anyhow::Result<String> {
    if let Some(url) = &cli.server {
        return Ok(url.trim_end_matches('/').to_owned());
    }
    let config = load_config(cli.config.as_deref())
        .context("reading the config to find the server address (or pass --server)")?;
    let mut addr = config.server.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    Ok(format!("http://{addr}"))
}

async fn serve(cli: &Cli) -> anyhow::Result<()> {
    let config = load_config(cli.config.as_deref())?;
    if config.providers.is_empty() {
        tracing::warn!("no providers configured; add [[providers]] to the config file");
    }
    let deadline = std::time::Duration::from_millis(config.server.shutdown_timeout_ms);
    let server = modelyard_server::start(config, &env).await?;
    tracing::info!(address = %server.local_addr(), "modelyard listening");
    let stop = server.shutdown_handle();
    tokio::spawn(async move {
        let mut signals = Signals::new();
        signals.recv().await;
        tracing::info!(
            timeout_ms = deadline.as_millis() as u64,
            "shutting down (a second signal exits at once)"
        );
        let _ = stop.send(true);
        // The server enforces the deadline; this thread is the backstop for
        // a runtime that cannot make progress (e.g. a stuck blocking task).
        std::thread::spawn(move || {
            std::thread::sleep(deadline + std::time::Duration::from_secs(2));
            eprintln!("modelyard: shutdown deadline passed; exiting");
            std::process::exit(1);
        });
        signals.recv().await;
        tracing::warn!("second signal: exiting at once");
        std::process::exit(130);
    });
    match server.wait().await {
        modelyard_server::ShutdownOutcome::Clean => Ok(()),
        modelyard_server::ShutdownOutcome::Incomplete => {
            // Exit now: tasks still blocked on a stream or the database
            // must not keep the process alive.
            tracing::error!("shutdown incomplete: exiting with work left behind");
            std::process::exit(1);
        }
    }
}

/// SIGTERM and Ctrl-C (SIGINT), listened to from creation on, so a second
/// signal right after the first is not missed.
struct Signals {
    #[cfg(unix)]
    streams: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let streams = signal(SignalKind::terminate())
                .and_then(|term| Ok((term, signal(SignalKind::interrupt())?)))
                .ok();
            Signals { streams }
        }
        #[cfg(not(unix))]
        {
            Signals {}
        }
    }

    /// The next signal.
    async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some((term, int)) = &mut self.streams {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn config_check(cli: &Cli, path: Option<&std::path::Path>) -> anyhow::Result<()> {
    let path = Config::locate(path.or(cli.config.as_deref()), &env)
        .context("no config file given and ./modelyard.toml does not exist")?;
    let config = Config::load(Some(&path), &env)?;
    println!("{}: OK", path.display());
    println!("  listen   {}", config.server.listen);
    println!(
        "  storage  {}",
        modelyard_store::redact_url(&config.storage.url)
    );
    for p in &config.providers {
        let key = match &p.api_key_env {
            Some(var) if env(var).is_some_and(|v| !v.is_empty()) => format!("key from ${var}"),
            Some(var) => format!("disabled: ${var} is not set"),
            None => "no key".to_owned(),
        };
        println!("  provider {} ({}) {} [{key}]", p.name, p.kind, p.base_url);
    }
    if let Some(model) = &config.defaults.model {
        println!("  default model {model}");
    }
    for (name, preset) in &config.defaults.presets {
        println!("  preset {name} v{} → {}", preset.version, preset.model);
    }
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::Serve => serve(&cli).await.map(|()| ExitCode::SUCCESS),
        Command::Keys { command } => {
            let config = load_config(cli.config.as_deref())?;
            match command {
                KeysCommand::Create {
                    project,
                    role,
                    name,
                } => keys::create(&config, project, role, name.as_deref()).await?,
                KeysCommand::Ls { project } => keys::list(&config, project).await?,
                KeysCommand::Revoke { id, project } => keys::revoke(&config, project, id).await?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Config {
            command: ConfigCommand::Check { path },
        } => config_check(&cli, path.as_deref()).map(|()| ExitCode::SUCCESS),
        Command::Models { all, json } => {
            let client = client::Client::new(server_url(&cli)?)?;
            catalog::models(&client, *all, *json)
                .await
                .map(|()| ExitCode::SUCCESS)
        }
        Command::Providers { json } => {
            let client = client::Client::new(server_url(&cli)?)?;
            catalog::providers(&client, *json)
                .await
                .map(|()| ExitCode::SUCCESS)
        }
        Command::Favorites { command } => {
            let client = client::Client::new(server_url(&cli)?)?;
            match command {
                None | Some(FavoritesCommand::Ls) => catalog::favorites_ls(&client).await,
                Some(FavoritesCommand::Add { model }) => {
                    catalog::favorites_add(&client, model).await
                }
                Some(FavoritesCommand::Rm { model }) => catalog::favorites_rm(&client, model).await,
                Some(FavoritesCommand::Move { model, position }) => {
                    catalog::favorites_move(&client, model, *position).await
                }
            }
            .map(|()| ExitCode::SUCCESS)
        }
        Command::Chat {
            conversation,
            model,
            system,
            max_tokens,
            temperature,
            no_stream,
            prompt,
        } => {
            let client = client::Client::new(server_url(&cli)?)?;
            let prompt = chat::read_prompt(prompt)?;
            if let Some(id) = conversation {
                return conversations::turn(&client, id, model.as_deref(), &prompt).await;
            }
            let options = chat::ChatOptions {
                model: model.clone(),
                system: system.clone(),
                max_tokens: *max_tokens,
                temperature: *temperature,
                stream: !no_stream,
            };
            chat::run(&client, &options, &prompt).await
        }
        Command::Conversations { command } => {
            let client = client::Client::new(server_url(&cli)?)?;
            match command {
                ConversationsCommand::Ls { limit } => conversations::list(&client, *limit).await,
                ConversationsCommand::Show { id } => conversations::show(&client, id).await,
                ConversationsCommand::New {
                    title,
                    model,
                    parent,
                    advisor,
                } => {
                    conversations::create(
                        &client,
                        title.as_deref(),
                        model.as_deref(),
                        parent.as_deref(),
                        *advisor,
                    )
                    .await
                }
                ConversationsCommand::Advisor { id, state } => {
                    conversations::advisor(&client, id, state.as_deref().map(|s| s == "on")).await
                }
                ConversationsCommand::Rm { id } => conversations::remove(&client, id).await,
                ConversationsCommand::Model { command } => match command {
                    ModelCommand::Get { id } => conversations::model(&client, id, None).await,
                    ModelCommand::Set { id, model } => {
                        conversations::model(&client, id, Some(Some(model))).await
                    }
                    ModelCommand::Clear { id } => {
                        conversations::model(&client, id, Some(None)).await
                    }
                },
                ConversationsCommand::History { id } => conversations::history(&client, id).await,
                ConversationsCommand::Watch { id } => {
                    return conversations::watch(&client, id).await
                }
                ConversationsCommand::SetLlm { id, op, config_id } => {
                    llms::set_conversation_llm(&client, id, op.as_deref(), config_id).await
                }
                ConversationsCommand::Title { id, model } => {
                    operations::title(&client, id, model.as_deref()).await
                }
                ConversationsCommand::Compact {
                    id,
                    keep_last,
                    model,
                } => operations::compact(&client, id, *keep_last, model.as_deref()).await,
            }
            .map(|()| ExitCode::SUCCESS)
        }
        Command::Llms { command } => {
            let client = client::Client::new(server_url(&cli)?)?;
            match command {
                LlmsCommand::Ls { limit } => llms::list(&client, *limit).await,
                LlmsCommand::Show { id, json } => llms::show(&client, id, *json).await,
                LlmsCommand::Create { fields } => {
                    if fields.model.is_none() {
                        anyhow::bail!("--model is required");
                    }
                    llms::create(&client, &fields.args()).await
                }
                LlmsCommand::Edit { id, fields } => llms::edit(&client, id, &fields.args()).await,
                LlmsCommand::Rm { id } => llms::remove(&client, id).await,
                LlmsCommand::Copy { id } => llms::copy(&client, id).await,
            }
            .map(|()| ExitCode::SUCCESS)
        }
        Command::Calls {
            command,
            limit,
            model,
        } => {
            let client = client::Client::new(server_url(&cli)?)?;
            match command {
                None => calls::list(&client, *limit, model.as_deref()).await,
                Some(CallsCommand::Show { id, json }) => calls::show(&client, id, *json).await,
            }
            .map(|()| ExitCode::SUCCESS)
        }
        Command::Sessions { command, list } => {
            let client = client::Client::new(server_url(&cli)?)?;
            match command {
                None => sessions::list(&client, list).await,
                Some(SessionsCommand::Ls(args)) => sessions::list(&client, args).await,
                Some(SessionsCommand::Show { id, json }) => {
                    sessions::show(&client, id, *json).await
                }
            }
            .map(|()| ExitCode::SUCCESS)
        }
        Command::Usage { by, from, to, json } => {
            let client = client::Client::new(server_url(&cli)?)?;
            sessions::usage(&client, by, from.as_deref(), to.as_deref(), *json)
                .await
                .map(|()| ExitCode::SUCCESS)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_filter = if matches!(cli.command, Command::Serve) {
        "info"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MODELYARD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
