//! Which model a conversation turn uses (docs/design.md#turn-model), in one pure function
//! shared by every operation (chat, title, compaction, advisor, ...).
//!
//! For operation `op` in conversation `c`, the first that applies:
//! 1. the model named on the request (for `chat` it is then persisted as
//!    `c.model` in the same transaction as the turn's start);
//! 2. for `chat`: `c.model`, the persisted selection;
//! 3. the model of `c.llm_overrides[op]`;
//! 4. the model of `c.llm_id`, the conversation's default config (the
//!    server passes an `llm_id` naming a server default as step 5 instead);
//! 5. the server's default for `op`, then the server default.
//!
//! Options and system prompt come from the first config found in steps 3–5,
//! whichever step chose the model.

use crate::conversation::ResolvedFrom;

/// An LLM config (or a server default) as resolution sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigRef<'a> {
    /// The config id; `None` for a server default that is only a model id.
    pub id: Option<&'a str>,
    /// Its model id.
    pub model: &'a str,
}

/// Everything resolution looks at.
#[derive(Debug, Clone, Copy, Default)]
pub struct TurnModelInput<'a> {
    /// The operation (`chat`, `title`, ...).
    pub operation: &'a str,
    /// Step 1: the model on the request.
    pub request_model: Option<&'a str>,
    /// Step 2: the conversation's persisted selection.
    pub conversation_model: Option<&'a str>,
    /// Step 3: the conversation's config for this operation.
    pub operation_config: Option<ConfigRef<'a>>,
    /// Step 4: the conversation's default config.
    pub conversation_config: Option<ConfigRef<'a>>,
    /// Step 5a: the server's default for this operation.
    pub server_operation_default: Option<ConfigRef<'a>>,
    /// Step 5b: the server default.
    pub server_default: Option<ConfigRef<'a>>,
}

/// The outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnModel {
    /// The model id to call.
    pub model: String,
    /// Which step chose it.
    pub resolved_from: ResolvedFrom,
    /// The config that supplies options and system prompt (first of steps 3–5).
    pub llm_config_id: Option<String>,
    /// Whether the model must be persisted as the conversation's selection
    /// (a `chat` request override that differs from it).
    pub persist_selection: bool,
}

/// Resolves the model of a turn; `None` when no step yields one.
pub fn resolve_turn_model(input: &TurnModelInput<'_>) -> Option<TurnModel> {
    let is_chat = input.operation == "chat";
    let configs = [
        (input.operation_config, ResolvedFrom::OperationConfig),
        (input.conversation_config, ResolvedFrom::ConversationConfig),
        (input.server_operation_default, ResolvedFrom::ServerDefault),
        (input.server_default, ResolvedFrom::ServerDefault),
    ];
    let first_config = configs.iter().find_map(|(c, from)| c.map(|c| (c, *from)));
    let llm_config_id = first_config.and_then(|(c, _)| c.id.map(str::to_owned));
    if let Some(model) = input.request_model.filter(|m| !m.is_empty()) {
        return Some(TurnModel {
            model: model.to_owned(),
            resolved_from: ResolvedFrom::Request,
            llm_config_id,
            persist_selection: is_chat && input.conversation_model != Some(model),
        });
    }
    if is_chat {
        if let Some(model) = input.conversation_model {
            return Some(TurnModel {
                model: model.to_owned(),
                resolved_from: ResolvedFrom::Conversation,
                llm_config_id,
                persist_selection: false,
            });
        }
    }
    let (config, from) = first_config?;
    Some(TurnModel {
        model: config.model.to_owned(),
        resolved_from: from,
        llm_config_id,
        persist_selection: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg<'a>(id: &'a str, model: &'a str) -> Option<ConfigRef<'a>> {
        Some(ConfigRef {
            id: Some(id),
            model,
        })
    }

    fn full<'a>(op: &'a str) -> TurnModelInput<'a> {
        TurnModelInput {
            operation: op,
            request_model: Some("p/request"),
            conversation_model: Some("p/conversation"),
            operation_config: cfg("op-cfg", "p/op"),
            conversation_config: cfg("conv-cfg", "p/conv"),
            server_operation_default: cfg("srv-op", "p/srv-op"),
            server_default: Some(ConfigRef {
                id: None,
                model: "p/default",
            }),
        }
    }

    #[test]
    fn each_step_in_order_for_chat() {
        let mut input = full("chat");
        let steps = [
            ("p/request", ResolvedFrom::Request),
            ("p/conversation", ResolvedFrom::Conversation),
            ("p/op", ResolvedFrom::OperationConfig),
            ("p/conv", ResolvedFrom::ConversationConfig),
            ("p/srv-op", ResolvedFrom::ServerDefault),
            ("p/default", ResolvedFrom::ServerDefault),
        ];
        for (i, (model, from)) in steps.iter().enumerate() {
            let got = resolve_turn_model(&input).unwrap();
            assert_eq!(
                (got.model.as_str(), got.resolved_from),
                (*model, *from),
                "step {i}"
            );
            match i {
                0 => input.request_model = None,
                1 => input.conversation_model = None,
                2 => input.operation_config = None,
                3 => input.conversation_config = None,
                4 => input.server_operation_default = None,
                _ => input.server_default = None,
            }
        }
        assert_eq!(resolve_turn_model(&input), None);
    }

    #[test]
    fn options_come_from_the_first_config_whatever_chose_the_model() {
        let input = full("chat");
        assert_eq!(
            resolve_turn_model(&input).unwrap().llm_config_id.as_deref(),
            Some("op-cfg")
        );
        let input = TurnModelInput {
            operation_config: None,
            ..full("chat")
        };
        assert_eq!(
            resolve_turn_model(&input).unwrap().llm_config_id.as_deref(),
            Some("conv-cfg")
        );
        let input = TurnModelInput {
            operation: "chat",
            server_default: Some(ConfigRef {
                id: None,
                model: "p/d",
            }),
            ..Default::default()
        };
        assert_eq!(resolve_turn_model(&input).unwrap().llm_config_id, None);
    }

    #[test]
    fn only_chat_uses_and_persists_the_conversation_model() {
        let input = TurnModelInput {
            request_model: None,
            ..full("title")
        };
        let got = resolve_turn_model(&input).unwrap();
        assert_eq!(
            (got.model.as_str(), got.resolved_from),
            ("p/op", ResolvedFrom::OperationConfig)
        );
        let got = resolve_turn_model(&full("title")).unwrap();
        assert!(
            !got.persist_selection,
            "a title override is not the chat selection"
        );
        assert!(resolve_turn_model(&full("chat")).unwrap().persist_selection);
        let same = TurnModelInput {
            request_model: Some("p/conversation"),
            ..full("chat")
        };
        assert!(
            !resolve_turn_model(&same).unwrap().persist_selection,
            "no change, no event"
        );
    }
}
