//! The command line: `clap` definitions of the commands and their options.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::{llms, sessions};

/// Modelyard: one self-hosted model layer for agent and chat apps.
#[derive(Parser, Debug)]
#[command(name = "modelyard", version, about)]
pub(crate) struct Cli {
    /// Config file (default: $MODELYARD_CONFIG, else ./modelyard.toml if present).
    #[arg(long, global = true, env = "MODELYARD_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// Server base URL for client commands (default: http:// + the configured listen address).
    #[arg(long, global = true, env = "MODELYARD_SERVER_URL")]
    pub(crate) server: Option<String>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum KeysCommand {
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
    /// Show or change a key's budgets and rate limits (the flags given
    /// change; the others stay unless `--clear`).
    Limits {
        /// Key id.
        id: String,
        /// Project name.
        #[arg(long, default_value = "default")]
        project: String,
        #[command(flatten)]
        limits: LimitsArgs,
    },
}

/// Budgets and rate limits, as `keys limits` and `projects limits` set them.
#[derive(clap::Args, Debug, Default)]
pub(crate) struct LimitsArgs {
    /// Requests per UTC minute.
    #[arg(long)]
    pub(crate) rpm: Option<i64>,
    /// Tokens (prompt + completion) per UTC minute.
    #[arg(long)]
    pub(crate) tpm: Option<i64>,
    /// Most tokens per `--period`.
    #[arg(long)]
    pub(crate) max_tokens: Option<i64>,
    /// Most USD spent per `--period`.
    #[arg(long)]
    pub(crate) max_cost_usd: Option<f64>,
    /// The period of `--max-tokens` / `--max-cost-usd` (UTC).
    #[arg(long, value_parser = ["day", "week", "month", "total"])]
    pub(crate) period: Option<String>,
    /// Most requests and turns in flight at once (per server replica).
    #[arg(long)]
    pub(crate) max_concurrent: Option<i64>,
    /// Remove every limit first (alone: no limits).
    #[arg(long)]
    pub(crate) clear: bool,
}

#[derive(Subcommand, Debug)]
pub(crate) enum ProjectsCommand {
    /// Show or change a project's budgets and rate limits (all its keys
    /// together; the flags given change, the others stay unless `--clear`).
    Limits {
        /// Project name.
        #[arg(long, default_value = "default")]
        project: String,
        #[command(flatten)]
        limits: LimitsArgs,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Run the server.
    Serve,
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// The model catalog: favorites first, then one group per provider;
    /// `load` / `unload` a model on hosts that swap models.
    Models {
        /// Include the models of offline and disabled providers.
        #[arg(long)]
        all: bool,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        command: Option<ModelsCommand>,
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
    /// One prompt, several models side by side (`POST /v1/arena`): on a
    /// terminal wide enough, in columns (tokens, ttft, total time under
    /// each) at the end; otherwise each answer under `== model ==` as it
    /// completes, then a summary line per model on stderr.
    /// `modelyard arena stats`: per-model wins over the picks.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Arena {
        #[command(subcommand)]
        command: Option<ArenaCommand>,
        /// A model id (route name or `provider/model`); 2 to 8 of them.
        #[arg(short, long = "model", required = true)]
        models: Vec<String>,
        /// An LLM config whose options and system prompt apply.
        #[arg(long)]
        llm: Option<String>,
        /// Maximum tokens to generate per model.
        #[arg(long)]
        max_tokens: Option<u32>,
        /// Sampling temperature.
        #[arg(long)]
        temperature: Option<f64>,
        /// Print the non-streamed JSON answer instead.
        #[arg(long)]
        json: bool,
        /// Print the answers side by side even when stdout is not a wide
        /// terminal (width from `COLUMNS`, else 40 per model).
        #[arg(long, conflicts_with = "no_columns")]
        columns: bool,
        /// Print the answers one after another (the default unless stdout
        /// is a terminal with at least 40 columns per model).
        #[arg(long)]
        no_columns: bool,
        /// The prompt; read from stdin when omitted.
        prompt: Vec<String>,
    },
    /// API keys (managed in the database named by the config; the first
    /// admin key can be made before the server requires keys).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Projects' budgets and rate limits (managed in the database named by
    /// the config; a running server applies changes within seconds).
    Projects {
        #[command(subcommand)]
        command: ProjectsCommand,
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
              value_parser = ["project", "key", "model", "provider", "operation", "day"])]
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
pub(crate) enum SessionsCommand {
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
pub(crate) enum ConfigCommand {
    /// Validate a config file and print what it configures.
    Check {
        /// File to check (default: --config / $MODELYARD_CONFIG / ./modelyard.toml).
        path: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum ArenaCommand {
    /// Per-model wins over the project's arena picks (`GET /v1/arena/stats`).
    Stats {
        /// Only picks at or after this time (RFC 3339, or a date).
        #[arg(long)]
        since: Option<String>,
        /// Print the JSON answer.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum ConversationsCommand {
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
    /// Prepare the next turn's deployment: load its model (llama-swap,
    /// Ollama) or prime llama.cpp's prompt cache with the conversation.
    Warm {
        /// Conversation id.
        id: String,
        /// The next turn's model override (not persisted).
        #[arg(short, long)]
        model: Option<String>,
        /// The next turn's operation (default `chat`).
        #[arg(long)]
        op: Option<String>,
    },
    /// Answer the next message with several models at once (the
    /// conversation's arena): each answer is printed under `== model ==`
    /// as it completes; the turn then waits for `conversations pick`.
    Arena {
        /// Conversation id.
        id: String,
        /// A model id (route name or `provider/model`); 2 to 8 of them.
        #[arg(short, long = "model", required = true)]
        models: Vec<String>,
        /// Maximum tokens to generate per model.
        #[arg(long)]
        max_tokens: Option<u32>,
        /// Sampling temperature.
        #[arg(long)]
        temperature: Option<f64>,
        /// Print the non-streamed JSON answer instead.
        #[arg(long)]
        json: bool,
        /// The message; read from stdin when omitted.
        content: Vec<String>,
    },
    /// Pick one answer of a conversation arena run: it becomes the turn's
    /// answer and the conversation goes on.
    Pick {
        /// Conversation id.
        id: String,
        /// The run id (`conversations arena` prints it).
        run_id: String,
        /// The chosen model.
        model: String,
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
pub(crate) struct LlmFields {
    /// Model id (`provider/model`).
    #[arg(short, long)]
    pub(crate) model: Option<String>,
    /// Display name.
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// System prompt.
    #[arg(short, long)]
    pub(crate) system: Option<String>,
    /// Sampling temperature (0..2).
    #[arg(long)]
    pub(crate) temperature: Option<f64>,
    /// Maximum tokens to generate.
    #[arg(long)]
    pub(crate) max_tokens: Option<u32>,
}

impl LlmFields {
    pub(crate) fn args(&self) -> llms::LlmArgs {
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
pub(crate) enum LlmsCommand {
    /// List configs, newest first.
    Ls {
        /// How many.
        #[arg(short = 'n', long, default_value_t = 50)]
        limit: u32,
    },
    /// One config (`--version N`: as it was at that version, also after
    /// it was deleted).
    Show {
        /// Config id.
        id: String,
        /// An earlier version (from 1; `llms versions` lists them).
        #[arg(long)]
        version: Option<i64>,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
    /// A config's versions, newest first: every create and edit is one.
    Versions {
        /// Config id.
        id: String,
        /// How many.
        #[arg(short = 'n', long, default_value_t = 50)]
        limit: u32,
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
pub(crate) enum ModelCommand {
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
pub(crate) enum ModelsCommand {
    /// Load a model on its host (llama-swap, Ollama, llama.cpp router mode; admin).
    Load {
        /// Model id (`provider/model`).
        model: String,
    },
    /// Unload a model from its host's memory (admin).
    Unload {
        /// Model id (`provider/model`).
        model: String,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum FavoritesCommand {
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
pub(crate) enum CallsCommand {
    /// One call with its request and response.
    Show {
        /// Call id.
        id: String,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
}
