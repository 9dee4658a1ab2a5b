//! `modelyard`: the server and a CLI over its HTTP API.
//!
//! `serve` runs the server; every other command is an HTTP client of a
//! running server (`--server`, default the configured listen address).

mod arena;
mod calls;
mod catalog;
mod chat;
mod cli;
mod client;
mod conv_arena;
mod conversations;
mod keys;
mod llms;
mod operations;
mod serve;
mod sessions;

use std::process::ExitCode;

/// The process's allocator: mimalloc, not the system's (glibc). A proxied
/// request allocates and frees many small buffers across two worker threads;
/// glibc's malloc, free and `malloc_consolidate` took about a tenth of the
/// server's CPU under load (`perf`, BENCHMARKS.md, issue 20).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context;
use clap::Parser;
use modelyard_server::Config;

use cli::{
    ArenaCommand, CallsCommand, Cli, Command, ConfigCommand, ConversationsCommand,
    FavoritesCommand, KeysCommand, LlmsCommand, ModelCommand, ModelsCommand, ProjectsCommand,
    SessionsCommand,
};
use serve::serve;

pub(crate) fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

pub(crate) fn load_config(explicit: Option<&std::path::Path>) -> anyhow::Result<Config> {
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
                KeysCommand::Limits {
                    id,
                    project,
                    limits,
                } => keys::key_limits(&config, project, id, limits).await?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Projects {
            command: ProjectsCommand::Limits { project, limits },
        } => {
            let config = load_config(cli.config.as_deref())?;
            keys::project_limits(&config, project, limits).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Config {
            command: ConfigCommand::Check { path },
        } => config_check(&cli, path.as_deref()).map(|()| ExitCode::SUCCESS),
        Command::Models { all, json, command } => {
            let client = client::Client::new(server_url(&cli)?)?;
            match command {
                None => catalog::models(&client, *all, *json).await,
                Some(ModelsCommand::Load { model }) => catalog::control(&client, model, true).await,
                Some(ModelsCommand::Unload { model }) => {
                    catalog::control(&client, model, false).await
                }
            }
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
        Command::Arena {
            command: Some(ArenaCommand::Stats { since, json }),
            ..
        } => {
            let client = client::Client::new(server_url(&cli)?)?;
            conv_arena::stats(&client, since.as_deref(), *json)
                .await
                .map(|()| ExitCode::SUCCESS)
        }
        Command::Arena {
            command: None,
            models,
            llm,
            max_tokens,
            temperature,
            json,
            columns,
            no_columns,
            prompt,
        } => {
            let client = client::Client::new(server_url(&cli)?)?;
            let prompt = chat::read_prompt(prompt)?;
            let options = arena::ArenaOptions {
                models: models.clone(),
                llm_id: llm.clone(),
                max_tokens: *max_tokens,
                temperature: *temperature,
                json: *json,
                columns: match (*columns, *no_columns) {
                    (_, true) => arena::ColumnsFlag::Never,
                    (true, false) => arena::ColumnsFlag::Always,
                    (false, false) => arena::ColumnsFlag::Auto,
                },
            };
            arena::run(&client, &options, &prompt).await
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
                ConversationsCommand::Warm { id, model, op } => {
                    operations::warm(&client, id, model.as_deref(), op.as_deref()).await
                }
                ConversationsCommand::Arena {
                    id,
                    models,
                    max_tokens,
                    temperature,
                    json,
                    content,
                } => {
                    let content = chat::read_prompt(content)?;
                    let options = conv_arena::Options {
                        models: models.clone(),
                        max_tokens: *max_tokens,
                        temperature: *temperature,
                        json: *json,
                    };
                    return conv_arena::run(&client, id, &options, &content).await;
                }
                ConversationsCommand::Pick { id, run_id, model } => {
                    conv_arena::pick(&client, id, run_id, model).await
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
                LlmsCommand::Show { id, version, json } => {
                    llms::show(&client, id, *version, *json).await
                }
                LlmsCommand::Versions { id, limit } => llms::versions(&client, id, *limit).await,
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
        // Colour only on a terminal: a log file or journal gets plain text
        // (and each access-log line is cheaper to format).
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
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
