//! Typed ids of the things Modelyard stores: conversations, turns, LLM
//! configs and LLM sessions.
//!
//! Every one of them is a UUID (v7 when Modelyard made it, so id order is
//! time order), stored as its hyphenated lowercase text. A request's id is
//! parsed once, at the edge ([`ConversationId::parse`] and friends); the
//! inside of the program takes the typed id and never re-validates a string.
//! An id that is not a UUID cannot name anything stored, so callers answer
//! it like an unknown id (404).

use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

/// A text that is not a UUID where an id of `kind` was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} id {text:?} is not a UUID")]
pub struct IdError {
    /// What the id was for: `conversation`, `turn`, `LLM config`, `LLM session`.
    pub kind: &'static str,
    /// The text as given (at most 64 characters of it).
    pub text: String,
}

/// Parses a UUID's text (any letter case, with or without hyphens) into its
/// hyphenated lowercase form.
fn canonical_uuid(text: &str) -> Option<String> {
    let hex: Vec<u8> = match text.len() {
        32 => text.bytes().collect(),
        36 => {
            let b = text.as_bytes();
            if [8, 13, 18, 23].iter().any(|&i| b[i] != b'-') {
                return None;
            }
            b.iter().copied().filter(|&c| c != b'-').collect()
        }
        _ => return None,
    };
    if hex.len() != 32 || !hex.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let mut out = String::with_capacity(36);
    for (i, c) in hex.iter().enumerate() {
        if matches!(i, 8 | 12 | 16 | 20) {
            out.push('-');
        }
        out.push(char::from(c.to_ascii_lowercase()));
    }
    Some(out)
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            #[doc = concat!("Parses a ", $kind, " id: a UUID's text, any letter case, with or without hyphens.")]
            ///
            /// # Errors
            /// [`IdError`] when `text` is not a UUID.
            pub fn parse(text: &str) -> Result<Self, IdError> {
                canonical_uuid(text).map($name).ok_or_else(|| IdError {
                    kind: $kind,
                    text: text.chars().take(64).collect(),
                })
            }

            #[doc = concat!("Wraps a ", $kind, " id read from the store or made by Modelyard, unchecked.")]
            pub fn from_trusted(text: impl Into<String>) -> Self {
                $name(text.into())
            }

            /// The hyphenated lowercase text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The text, by value.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                $name::parse(&text).map_err(serde::de::Error::custom)
            }
        }
    };
}

uuid_id!(
    /// A conversation's id (`/v1/conversations/{id}`).
    ConversationId,
    "conversation"
);
uuid_id!(
    /// A turn's id (`/v1/conversations/{id}/turns/{turnId}`).
    TurnId,
    "turn"
);
uuid_id!(
    /// An LLM config's id (`/v1/llms/{id}`, a conversation's `llmId`).
    LlmConfigId,
    "LLM config"
);
uuid_id!(
    /// An LLM session's id (`/v1/llm-sessions/{id}`).
    SessionId,
    "LLM session"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_spelling_of_a_uuid_into_one_text() {
        let canonical = "01938f2a-7b3c-7d4e-8f50-123456789abc";
        for text in [
            canonical,
            "01938F2A-7B3C-7D4E-8F50-123456789ABC",
            "01938f2a7b3c7d4e8f50123456789abc",
        ] {
            assert_eq!(ConversationId::parse(text).unwrap().as_str(), canonical);
        }
    }

    #[test]
    fn refuses_what_is_not_a_uuid_and_names_the_kind() {
        for text in [
            "",
            "nope",
            "01938f2a-7b3c-7d4e-8f50-123456789ab",
            "01938f2a-7b3c-7d4e-8f50-123456789abcd",
            "01938f2a_7b3c_7d4e_8f50_123456789abc",
            "01938f2a-7b3c-7d4e-8f50-123456789abg",
            "ü1938f2a-7b3c-7d4e-8f50-123456789ab",
        ] {
            let err = TurnId::parse(text).unwrap_err();
            assert_eq!(err.kind, "turn");
            assert!(err.to_string().starts_with("turn id "), "{err}");
        }
        let long = "x".repeat(10_000);
        assert_eq!(SessionId::parse(&long).unwrap_err().text.len(), 64);
    }

    #[test]
    fn serde_round_trips_and_validates() {
        let id: LlmConfigId =
            serde_json::from_str("\"01938F2A-7B3C-7D4E-8F50-123456789ABC\"").unwrap();
        assert_eq!(
            serde_json::to_string(&id).unwrap(),
            "\"01938f2a-7b3c-7d4e-8f50-123456789abc\""
        );
        assert!(serde_json::from_str::<LlmConfigId>("\"x\"").is_err());
    }
}
