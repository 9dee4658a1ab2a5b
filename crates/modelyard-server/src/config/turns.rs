//! `[turns]`: tools in conversation turns and how a turn fits the
//! model's context window.

use super::raw::RawTurns;
use super::validate::error_in;
use super::ConfigError;

/// `[turns]`: tools in conversation turns and how a turn fits the model's
/// context window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TurnsConfig {
    /// Most model calls in one turn while the model keeps calling tools
    /// (`max_tool_steps`, default 8, 1..=64); the turn fails past it.
    pub max_tool_steps: u32,
    /// Advisor consultations allowed per turn (`advisor_max_uses`, default
    /// 3, 0..=32); a call beyond it gets a tool error result.
    pub advisor_max_uses: u32,
    /// `max_tokens` of an advisor call whose LLM config sets none
    /// (`advisor_max_tokens`, default 1024).
    pub advisor_max_tokens: u32,
    /// Bytes of streamed text one tool call keeps in the turn's transient
    /// buffer for reconnecting clients (`tool_output_buffer_bytes`, default
    /// 64 KiB, at least 1024); older text is replaced by a marker counting
    /// the omitted bytes. The tool's persisted result always has all of it.
    pub tool_output_buffer_bytes: usize,
    /// How often the sweeper closes turns that are `running` in the store
    /// but run nowhere in this process (`sweep_interval_ms`, default 30 000,
    /// 100..=86 400 000); also done once at start-up.
    pub sweep_interval_ms: u64,
    /// What a turn does when the conversation's history no longer fits the
    /// serving deployment's context window (`context_strategy`, default
    /// `compact`); see [`ContextStrategy`]. Nothing is done while the
    /// window is unknown.
    pub context_strategy: ContextStrategy,
    /// With `compact`: the share of the window (minus the output reserve)
    /// past which a turn compacts the conversation before its model call
    /// (`compact_at`, default 0.8, 0.1..=1.0).
    pub compact_at: f64,
    /// Tokens of the context window kept free for the answer when the
    /// request sets no `max_tokens` (`output_reserve_tokens`, default 1024,
    /// 1..=1 000 000).
    pub output_reserve_tokens: u32,
}

/// `[turns] context_strategy`: how a turn keeps its prompt within the
/// serving deployment's context window minus the output reserve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ContextStrategy {
    /// `compact` (default): past `compact_at` of the budget, run the
    /// conversation's `compaction` operation (recorded as a normal
    /// `conversation.compacted` event); if the prompt still does not fit,
    /// truncate.
    #[default]
    Compact,
    /// `truncate`: drop the oldest whole messages from the request (never
    /// an assistant tool call without its results; always keeping the
    /// system prompt and the last user message). Nothing is persisted.
    Truncate,
    /// `error`: refuse the turn (422 `context_length_exceeded` with the
    /// numbers at its start; `turn.failed` at a later tool step).
    Error,
}

impl ContextStrategy {
    /// `compact`, `truncate` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            ContextStrategy::Compact => "compact",
            ContextStrategy::Truncate => "truncate",
            ContextStrategy::Error => "error",
        }
    }

    /// Parses [`Self::as_str`]'s output.
    pub fn parse(text: &str) -> Option<Self> {
        [
            ContextStrategy::Compact,
            ContextStrategy::Truncate,
            ContextStrategy::Error,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

impl Default for TurnsConfig {
    fn default() -> Self {
        Self {
            max_tool_steps: 8,
            advisor_max_uses: 3,
            advisor_max_tokens: 1024,
            tool_output_buffer_bytes: 64 * 1024,
            sweep_interval_ms: 30_000,
            context_strategy: ContextStrategy::Compact,
            compact_at: 0.8,
            output_reserve_tokens: 1024,
        }
    }
}

/// `[turns]`.
pub(super) fn turns(raw: RawTurns, source_name: &str) -> Result<TurnsConfig, ConfigError> {
    let err = error_in(source_name);
    let defaults = TurnsConfig::default();
    let in_range = |field: &str, value: Option<i64>, min: i64, max: i64, default: i64| {
        let v = value.unwrap_or(default);
        if (min..=max).contains(&v) {
            Ok(v)
        } else {
            Err(err(
                format!("turns.{field}"),
                format!("must be between {min} and {max}, got {v}"),
            ))
        }
    };
    Ok(TurnsConfig {
        max_tool_steps: in_range("max_tool_steps", raw.max_tool_steps, 1, 64, 8)? as u32,
        advisor_max_uses: in_range("advisor_max_uses", raw.advisor_max_uses, 0, 32, 3)? as u32,
        advisor_max_tokens: in_range(
            "advisor_max_tokens",
            raw.advisor_max_tokens,
            1,
            1_000_000,
            1024,
        )? as u32,
        tool_output_buffer_bytes: in_range(
            "tool_output_buffer_bytes",
            raw.tool_output_buffer_bytes,
            1024,
            64 * 1024 * 1024,
            defaults.tool_output_buffer_bytes as i64,
        )? as usize,
        sweep_interval_ms: in_range(
            "sweep_interval_ms",
            raw.sweep_interval_ms,
            100,
            86_400_000,
            defaults.sweep_interval_ms as i64,
        )? as u64,
        context_strategy: match raw.context_strategy.as_deref() {
            None => defaults.context_strategy,
            Some(text) => ContextStrategy::parse(text).ok_or_else(|| {
                err(
                    "turns.context_strategy".to_owned(),
                    format!("must be \"compact\", \"truncate\" or \"error\", got {text:?}"),
                )
            })?,
        },
        compact_at: match raw.compact_at {
            None => defaults.compact_at,
            Some(v) if (0.1..=1.0).contains(&v) => v,
            Some(v) => {
                return Err(err(
                    "turns.compact_at".to_owned(),
                    format!("must be between 0.1 and 1.0, got {v}"),
                ))
            }
        },
        output_reserve_tokens: in_range(
            "output_reserve_tokens",
            raw.output_reserve_tokens,
            1,
            1_000_000,
            defaults.output_reserve_tokens.into(),
        )? as u32,
    })
}
