//! Label sets written in order, and label values kept bounded: operation
//! names from a fixed list, HTTP statuses without allocating.

use std::borrow::Cow;

use prometheus_client::encoding::{EncodeLabelSet, LabelSetEncoder};

/// Operation names metrics label (`modelyard_operation`); any other is
/// `other`, so the label stays bounded.
pub(super) const OPERATIONS: [&str; 7] = [
    "gateway",
    "messages",
    "chat",
    "advisor",
    "title",
    "compaction",
    "other",
];

pub(super) fn operation_index(operation: &str) -> usize {
    OPERATIONS
        .iter()
        .position(|o| *o == operation)
        .unwrap_or(OPERATIONS.len() - 1)
}

/// A label set whose members are written in order, `None` values left out.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub(super) struct Labels<const N: usize>(pub(super) [(&'static str, Option<Cow<'static, str>>); N]);

impl<const N: usize> EncodeLabelSet for Labels<N> {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        for (name, value) in &self.0 {
            if let Some(value) = value {
                use prometheus_client::encoding::EncodeLabel;
                (*name, value.as_ref()).encode(encoder.encode_label())?;
            }
        }
        Ok(())
    }
}

/// A label value copied (for names known only at run time).
pub(super) fn label(value: &str) -> Option<Cow<'static, str>> {
    Some(Cow::Owned(value.to_owned()))
}

/// A label value that needs no copy.
pub(super) fn fixed(value: &'static str) -> Option<Cow<'static, str>> {
    Some(Cow::Borrowed(value))
}

/// An HTTP status as a label value, without allocating for the common
/// ones.
pub fn status_text(status: u16) -> Cow<'static, str> {
    const COMMON: [(u16, &str); 16] = [
        (200, "200"),
        (201, "201"),
        (204, "204"),
        (400, "400"),
        (401, "401"),
        (403, "403"),
        (404, "404"),
        (409, "409"),
        (413, "413"),
        (415, "415"),
        (421, "421"),
        (429, "429"),
        (500, "500"),
        (502, "502"),
        (503, "503"),
        (504, "504"),
    ];
    match COMMON.iter().find(|(s, _)| *s == status) {
        Some((_, text)) => Cow::Borrowed(text),
        None => Cow::Owned(status.to_string()),
    }
}
