//! Incremental Server-Sent Events decoder, after the WHATWG HTML
//! "event stream" parsing rules (§9.2.6): lines end in `\n`, `\r\n` or `\r`;
//! `data:` lines accumulate (joined by `\n`); a blank line dispatches the
//! event; lines starting with `:` are comments; `event:` sets the type;
//! other fields (`id`, `retry`) are ignored by the gateway.
//!
//! The common case — one `data:` line per event — yields a zero-copy slice of
//! the received bytes.
//!
//! One event may be at most `max_event_bytes` long (the event's lines, without
//! the blank line that ends it; [`DEFAULT_MAX_EVENT_BYTES`] unless set): an
//! upstream that sends a longer event, or a line that never ends, gets
//! [`EventTooLarge`] as soon as the buffered bytes prove it, and the decoder
//! keeps nothing more. The outcome does not depend on how the bytes were
//! split into pushes.

use bytes::{Buf, Bytes, BytesMut};

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, if any.
    pub event: Option<String>,
    /// The joined `data:` lines (without the trailing newline).
    pub data: Bytes,
}

/// Default cap on one event, bytes (8 MiB).
pub const DEFAULT_MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;

/// Line terminator bytes that may follow an event's lines before the decoder
/// knows the event is complete (`\r\n` then a `\r` that may start `\r\n`).
const MAX_PENDING_TERMINATOR: usize = 3;

/// An event longer than the decoder's cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an SSE event is larger than {max_event_bytes} bytes")]
pub struct EventTooLarge {
    /// The cap, bytes.
    pub max_event_bytes: usize,
}

/// Feeds bytes in, gets whole events out.
#[derive(Debug)]
pub struct SseDecoder {
    buf: BytesMut,
    /// Bytes of `buf` already scanned for an event boundary.
    scanned: usize,
    /// Longest event accepted, bytes.
    max_event_bytes: usize,
    /// An event was too large: the decoder is done.
    too_large: bool,
}

impl Default for SseDecoder {
    fn default() -> Self {
        Self::with_max_event_bytes(DEFAULT_MAX_EVENT_BYTES)
    }
}

impl SseDecoder {
    /// A decoder with an empty buffer and the default event cap.
    pub fn new() -> Self {
        Self::default()
    }

    /// A decoder that refuses events longer than `max_event_bytes`.
    pub fn with_max_event_bytes(max_event_bytes: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            scanned: 0,
            max_event_bytes,
            too_large: false,
        }
    }

    /// Appends received bytes (ignored once an event was too large).
    pub fn push(&mut self, chunk: &[u8]) {
        if !self.too_large {
            self.buf.extend_from_slice(chunk);
        }
    }

    /// Bytes received but not yet part of a dispatched event.
    pub fn pending_len(&self) -> usize {
        self.buf.len()
    }

    /// Whether undispatched, non-blank bytes remain (an event cut off by the
    /// end of the stream).
    pub fn has_partial_event(&self) -> bool {
        self.buf.iter().any(|b| !matches!(b, b'\n' | b'\r' | b' '))
    }

    /// The next complete event, if the buffer holds one; `None` also after
    /// an event too large (see [`Self::try_next_event`], which says so).
    pub fn next_event(&mut self) -> Option<SseEvent> {
        self.try_next_event().ok().flatten()
    }

    /// The next complete event, if the buffer holds one.
    ///
    /// # Errors
    /// [`EventTooLarge`] when the event being received is longer than the
    /// cap (complete or not); from then on the decoder holds nothing and
    /// every call fails.
    pub fn try_next_event(&mut self) -> Result<Option<SseEvent>, EventTooLarge> {
        let too_large = EventTooLarge {
            max_event_bytes: self.max_event_bytes,
        };
        if self.too_large {
            return Err(too_large);
        }
        loop {
            let Some(end) = self.find_event_end() else {
                // What is left is one event still arriving (blank lines and
                // complete blocks were consumed), plus at most a pending
                // terminator.
                if self.buf.len() > self.max_event_bytes.saturating_add(MAX_PENDING_TERMINATOR) {
                    return Err(self.give_up(too_large));
                }
                return Ok(None);
            };
            if end.block_len > self.max_event_bytes {
                return Err(self.give_up(too_large));
            }
            let block = self.buf.split_to(end.block_len).freeze();
            self.buf.advance(end.terminator_len);
            self.scanned = 0;
            if let Some(event) = parse_block(block) {
                return Ok(Some(event));
            }
        }
    }

    fn give_up(&mut self, err: EventTooLarge) -> EventTooLarge {
        self.too_large = true;
        self.buf = BytesMut::new();
        self.scanned = 0;
        err
    }

    /// Finds the first blank line: returns the length of the event block
    /// before it and the length of the line terminators to skip.
    fn find_event_end(&mut self) -> Option<EventEnd> {
        let bytes = &self.buf[..];
        let mut i = self.scanned;
        // Start at a line boundary: step back one byte so a terminator split
        // across pushes is seen whole.
        i = i.saturating_sub(1);
        while i < bytes.len() {
            match bytes[i] {
                b'\n' | b'\r' => {
                    let first = line_terminator(bytes, i)?;
                    let next = i + first;
                    if next < bytes.len() && matches!(bytes[next], b'\n' | b'\r') {
                        let second = line_terminator(bytes, next)?;
                        return Some(EventEnd {
                            block_len: i,
                            terminator_len: first + second,
                        });
                    }
                    if next >= bytes.len() {
                        self.scanned = i;
                        return None;
                    }
                    // A blank line at the very start of the buffer.
                    if i == 0 {
                        return Some(EventEnd {
                            block_len: 0,
                            terminator_len: first,
                        });
                    }
                    i = next;
                }
                _ => i += 1,
            }
        }
        self.scanned = bytes.len();
        None
    }
}

struct EventEnd {
    block_len: usize,
    terminator_len: usize,
}

/// Length of the line terminator at `i`, or None when a `\r` ends the buffer
/// (a `\n` may follow in the next push).
fn line_terminator(bytes: &[u8], i: usize) -> Option<usize> {
    match bytes[i] {
        b'\r' => match bytes.get(i + 1) {
            Some(b'\n') => Some(2),
            Some(_) => Some(1),
            None => None,
        },
        _ => Some(1),
    }
}

fn parse_block(block: Bytes) -> Option<SseEvent> {
    let mut event = None;
    let mut data: Option<Bytes> = None;
    let mut joined: Option<BytesMut> = None;
    let mut start = 0;
    let len = block.len();
    while start <= len {
        let mut end = start;
        while end < len && !matches!(block[end], b'\n' | b'\r') {
            end += 1;
        }
        let line = block.slice(start..end);
        let skip = if end < len && block[end] == b'\r' && block.get(end + 1) == Some(&b'\n') {
            2
        } else {
            1
        };
        start = end + skip;
        if line.is_empty() || line[0] == b':' {
            continue;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let mut value = line.slice(colon + 1..);
                if value.first() == Some(&b' ') {
                    value.advance(1);
                }
                (line.slice(..colon), value)
            }
            None => (line.clone(), Bytes::new()),
        };
        match &field[..] {
            b"data" => match (&mut joined, &data) {
                (Some(acc), _) => {
                    acc.extend_from_slice(b"\n");
                    acc.extend_from_slice(&value);
                }
                (None, Some(first)) => {
                    let mut acc = BytesMut::from(&first[..]);
                    acc.extend_from_slice(b"\n");
                    acc.extend_from_slice(&value);
                    joined = Some(acc);
                }
                (None, None) => data = Some(value),
            },
            b"event" => event = Some(String::from_utf8_lossy(&value).into_owned()),
            _ => {}
        }
    }
    let data = match joined {
        Some(acc) => acc.freeze(),
        None => data?,
    };
    Some(SseEvent { event, data })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(chunks: &[&[u8]]) -> Vec<String> {
        let mut decoder = SseDecoder::new();
        let mut out = Vec::new();
        for chunk in chunks {
            decoder.push(chunk);
            while let Some(event) = decoder.next_event() {
                out.push(String::from_utf8(event.data.to_vec()).unwrap());
            }
        }
        out
    }

    #[test]
    fn single_and_multi_line_events() {
        let out = decode_all(&[b"data: {\"a\":1}\n\ndata: x\ndata: y\n\ndata: [DONE]\n\n"]);
        assert_eq!(out, vec!["{\"a\":1}", "x\ny", "[DONE]"]);
    }

    #[test]
    fn events_split_across_every_byte_boundary() {
        let input: &[u8] =
            b": comment\r\nevent: message\r\ndata: one\r\n\r\ndata:two\r\rdata: three\n\n";
        for split in 0..input.len() {
            let (a, b) = input.split_at(split);
            assert_eq!(
                decode_all(&[a, b]),
                vec!["one", "two", "three"],
                "split at {split}"
            );
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(decode_all(&bytes), vec!["one", "two", "three"]);
    }

    #[test]
    fn comments_and_blank_events_are_skipped() {
        assert_eq!(
            decode_all(&[b": keep-alive\n\n\n\nid: 3\n\ndata: z\n\n"]),
            vec!["z"]
        );
    }

    #[test]
    fn partial_event_is_reported() {
        let mut decoder = SseDecoder::new();
        decoder.push(b"data: {\"trunc");
        assert!(decoder.next_event().is_none());
        assert!(decoder.has_partial_event());
    }

    /// Every event and the too-large outcome, feeding `input` in pieces cut
    /// at `cuts` (positions, any order, out of range ones clamped).
    fn decode_split(input: &[u8], cuts: &[usize], max: usize) -> (Vec<SseEvent>, bool, bool) {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        cuts.push(0);
        cuts.push(input.len());
        cuts.sort_unstable();
        let mut decoder = SseDecoder::with_max_event_bytes(max);
        let mut events = Vec::new();
        let mut too_large = false;
        for pair in cuts.windows(2) {
            decoder.push(&input[pair[0]..pair[1]]);
            loop {
                match decoder.try_next_event() {
                    Ok(Some(event)) => events.push(event),
                    Ok(None) => break,
                    Err(_) => {
                        too_large = true;
                        break;
                    }
                }
            }
            if too_large {
                break;
            }
        }
        let partial = !too_large && decoder.has_partial_event();
        (events, too_large, partial)
    }

    #[test]
    fn an_event_over_the_cap_is_an_error_and_frees_the_buffer() {
        let mut decoder = SseDecoder::with_max_event_bytes(16);
        decoder.push(b"data: 0123456789\n\n");
        assert_eq!(
            decoder.try_next_event().unwrap().unwrap().data,
            "0123456789"
        );
        // 17 bytes of event lines, complete.
        decoder.push(b"data: 0123456789A\n\ndata: after\n\n");
        assert_eq!(
            decoder.try_next_event(),
            Err(EventTooLarge {
                max_event_bytes: 16
            })
        );
        assert_eq!(decoder.pending_len(), 0);
        // The decoder is done: later bytes are dropped, every call fails.
        decoder.push(b"data: x\n\n");
        assert_eq!(decoder.pending_len(), 0);
        assert!(decoder.try_next_event().is_err());
        assert_eq!(decoder.next_event(), None);
    }

    #[test]
    fn a_line_that_never_ends_is_refused_once_over_the_cap() {
        let mut decoder = SseDecoder::with_max_event_bytes(1024);
        decoder.push(b"data: ");
        let block = [b'a'; 256];
        let mut refused_after = None;
        for i in 0..64 {
            decoder.push(&block);
            if decoder.try_next_event().is_err() {
                refused_after = Some(i);
                break;
            }
            assert!(decoder.pending_len() <= 1024 + 3 + block.len());
        }
        // 6 + 4 × 256 = 1030 > 1027: refused at the fourth push, not buffered on.
        assert_eq!(refused_after, Some(3));
        assert_eq!(decoder.pending_len(), 0);
    }

    #[test]
    fn the_default_cap_is_8_mib() {
        let mut decoder = SseDecoder::new();
        let mut event = b"data: ".to_vec();
        event.resize(DEFAULT_MAX_EVENT_BYTES, b'x');
        event.extend_from_slice(b"\n\n");
        decoder.push(&event);
        assert_eq!(
            decoder.try_next_event().unwrap().unwrap().data.len(),
            DEFAULT_MAX_EVENT_BYTES - 6
        );
        let mut too_long = b"data: ".to_vec();
        too_long.resize(DEFAULT_MAX_EVENT_BYTES + 1, b'x');
        too_long.extend_from_slice(b"\r\n\r\n");
        decoder.push(&too_long);
        assert!(decoder.try_next_event().is_err());
    }

    mod properties {
        use proptest::collection::vec;
        use proptest::prelude::*;

        use super::decode_split;

        /// SSE-ish bytes: fields, comments, every line terminator, blank
        /// lines, and arbitrary bytes.
        fn sse_bytes() -> impl Strategy<Value = Vec<u8>> {
            let piece = prop_oneof![
                Just(b"data: ".to_vec()),
                Just(b"data:".to_vec()),
                Just(b"event: message".to_vec()),
                Just(b": keep-alive".to_vec()),
                Just(b"id: 7".to_vec()),
                Just(b"\n".to_vec()),
                Just(b"\r".to_vec()),
                Just(b"\r\n".to_vec()),
                Just(b"\n\n".to_vec()),
                Just(b"\r\n\r\n".to_vec()),
                Just(b"[DONE]".to_vec()),
                "[a-z {}\":,]{0,12}".prop_map(String::into_bytes),
                vec(any::<u8>(), 0..8),
            ];
            vec(piece, 0..40).prop_map(|pieces| pieces.concat())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(4000))]

            /// The events, the too-large outcome and the partial-event
            /// state do not depend on how the stream was split, for any cap.
            #[test]
            fn decoding_is_invariant_under_any_split(
                input in sse_bytes(),
                cuts in vec(any::<usize>(), 0..12),
                max in prop_oneof![Just(usize::MAX), 0usize..64],
            ) {
                let whole = decode_split(&input, &[], max);
                let split = decode_split(&input, &cuts, max);
                prop_assert_eq!(&split, &whole);
                let bytes: Vec<usize> = (0..input.len()).collect();
                prop_assert_eq!(&decode_split(&input, &bytes, max), &whole);
            }
        }
    }
}
