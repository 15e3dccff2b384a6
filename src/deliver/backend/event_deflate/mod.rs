//! A deflate compressor for the agent's own messages: batches of JSON
//! events, compressed for permessage-deflate with context takeover.
//!
//! Written by hand because it is the hot path no crate makes cheap enough.
//! A general compressor (zlib-rs, zlib-ng, the system zlib) looks for a
//! match at every byte: it hashes each position into a table and, with the
//! 4 KiB window Python's `websockets` asks for, slides that table every 4 KiB.
//! That cost more CPU than the whole pipeline before it (docs/protocol.md,
//! "Compression"). What the agent sends is JSON events of one shape: the
//! same keys in the same order, values that repeat (user agents, client
//! hashes, paths, the time), and almost every run worth a back-reference
//! starts right after a `"`. So [`EventDeflate`] looks for matches only at
//! those places, extends each as far as the bytes agree (forwards, and
//! backwards into the literals before it), and codes the result with
//! Huffman codes built for each block, as any deflate stream is coded:
//! the backend's inflater sees ordinary deflate.
//!
//! - [`huffman`]: code lengths and canonical codes.
//! - [`block`]: the block writer (dynamic, fixed or stored, whichever is
//!   smallest) and the bit writer.

mod block;
mod huffman;

use wide::u8x16;

use block::{BitWriter, Counts, Token, distance_code, length_code, write_block};

/// Places each table remembers: 2^13 (32 KiB a table, two a connection).
const HASH_BITS: u32 = 13;
/// A place is keyed by at least this many bytes.
const KEY_BYTES: usize = 8;
/// A token is keyed by its first 32 bytes at most (user agents differ
/// before that).
const MAX_KEY_BYTES: usize = 32;
/// Matches are found from 4 equal bytes on.
const MIN_MATCH: usize = 4;
const MAX_MATCH: usize = 258;
/// Symbols in one block before its codes are written; a default batch
/// (128 KiB) makes about 30,000.
const MAX_BLOCK_TOKENS: usize = 1 << 16;

/// The compressor of one connection's messages.
pub struct EventDeflate {
    /// The largest distance a match may reach back: the negotiated window.
    window: usize,
    /// The last `window` bytes of earlier messages, then the message being
    /// compressed.
    buf: Vec<u8>,
    /// The stream position of `buf[0]` (wrapping: positions in the table
    /// are checked against the bytes they point at, so an old one can only
    /// miss, never mislead).
    base: u32,
    /// Hash of a whole token → stream position of its last copy.
    whole: Box<[u32]>,
    /// Hash of 8 bytes → stream position of the last place they began.
    prefix: Box<[u32]>,
    tokens: Vec<Token>,
    counts: Counts,
    /// Where the message's `"` are, a bit a byte (kept for the next one).
    quote_masks: Vec<u64>,
    writer: BitWriter,
    /// `client_no_context_takeover`: each message on its own.
    reset_each_message: bool,
}

impl std::fmt::Debug for EventDeflate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventDeflate")
            .field("window", &self.window)
            .field("reset_each_message", &self.reset_each_message)
            .finish_non_exhaustive()
    }
}

#[inline(always)]
fn read8(buf: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(b)
}

const MIX: u64 = 0x9E37_79B9_7F4A_7C15;

/// The table slot of the 8 bytes at `at`.
#[inline(always)]
fn prefix_key(buf: &[u8], at: usize) -> usize {
    (read8(buf, at).wrapping_mul(MIX) >> (64 - HASH_BITS)) as usize
}

/// The table slot of `buf[at..stop]` (at least 8 bytes), hashed 8 bytes at
/// a time, the last word overlapping the one before.
#[inline(always)]
fn whole_key(buf: &[u8], at: usize, stop: usize) -> usize {
    let mut h = 0u64;
    let mut i = at;
    while i + 8 <= stop {
        h = (h ^ read8(buf, i)).wrapping_mul(MIX).rotate_left(23);
        i += 8;
    }
    if i < stop {
        h = (h ^ read8(buf, stop - 8)).wrapping_mul(MIX).rotate_left(23);
    }
    (h.wrapping_mul(MIX) >> (64 - HASH_BITS)) as usize
}

/// How many bytes from `a` and `b` on (`a` < `b`) are equal, up to the end
/// of `buf`; 16 bytes a compare (the bytes past `b` may overlap `a`'s:
/// deflate copies byte by byte, so such a match is what the inflater
/// rebuilds).
#[inline(always)]
fn common_length(buf: &[u8], a: usize, b: usize) -> usize {
    let (from_a, _) = buf[a..].as_chunks::<16>();
    let (from_b, _) = buf[b..].as_chunks::<16>();
    let mut n = 0;
    for (x, y) in from_a.iter().zip(from_b) {
        let diff = u128::from_le_bytes(*x) ^ u128::from_le_bytes(*y);
        if diff != 0 {
            return n + (diff.trailing_zeros() / 8) as usize;
        }
        n += 16;
    }
    n + buf[a + n..]
        .iter()
        .zip(&buf[b + n..])
        .take_while(|(x, y)| x == y)
        .count()
}

/// How many bytes before `a` and `b` (`a` < `b`) are equal, at most
/// `limit`; 16 bytes a compare.
#[inline(always)]
fn common_length_back(buf: &[u8], a: usize, b: usize, limit: usize) -> usize {
    let before_a = &buf[a - limit..a];
    let before_b = &buf[b - limit..b];
    let (_, to_a) = before_a.as_rchunks::<16>();
    let (_, to_b) = before_b.as_rchunks::<16>();
    let mut n = 0;
    for (x, y) in to_a.iter().rev().zip(to_b.iter().rev()) {
        let diff = u128::from_le_bytes(*x) ^ u128::from_le_bytes(*y);
        if diff != 0 {
            return n + (diff.leading_zeros() / 8) as usize;
        }
        n += 16;
    }
    n + before_a[..limit - n]
        .iter()
        .rev()
        .zip(before_b[..limit - n].iter().rev())
        .take_while(|(x, y)| x == y)
        .count()
}

impl EventDeflate {
    /// A compressor with a window of 2^`window_bits` bytes (8 to 15).
    pub fn new(window_bits: u8, reset_each_message: bool) -> Self {
        EventDeflate {
            window: 1 << window_bits.clamp(8, 15),
            buf: Vec::new(),
            base: 0,
            whole: vec![0u32; 1 << HASH_BITS].into_boxed_slice(),
            prefix: vec![0u32; 1 << HASH_BITS].into_boxed_slice(),
            tokens: Vec::new(),
            counts: Counts::new(),
            quote_masks: Vec::new(),
            writer: BitWriter::default(),
            reset_each_message,
        }
    }

    /// `payload` as raw deflate data ending in an empty stored block with
    /// its `00 00 ff ff` left out, as RFC 7692 section 7.2.1 sends a message.
    pub fn compress(&mut self, payload: &[u8]) -> &[u8] {
        let start = self.buf.len();
        self.buf.extend_from_slice(payload);
        self.writer.out.clear();
        self.tokens.clear();
        self.counts.clear();
        self.parse(start);
        self.writer.end_message();

        // Keep the window for the next message.
        let keep = if self.reset_each_message {
            0
        } else {
            self.window.min(self.buf.len())
        };
        let drop = self.buf.len() - keep;
        self.buf.drain(..drop);
        self.base = self.base.wrapping_add(drop as u32);
        &self.writer.out
    }

    /// Lets go of what a very large message left behind (the buffers grow
    /// with the message: its bytes, its compressed bytes, its quotes).
    pub fn shrink(&mut self) {
        if self.buf.capacity() > 2 * MAX_KEPT {
            self.buf.shrink_to(MAX_KEPT);
        }
        if self.writer.out.capacity() > 2 * MAX_KEPT {
            self.writer.out = Vec::new();
        }
        if self.quote_masks.capacity() > MAX_KEPT / 64 {
            self.quote_masks = Vec::new();
        }
    }

    /// Parses `buf[start..]` into literals and matches, writing a block
    /// whenever one is full.
    ///
    /// Places to look are where strings begin: the byte after every
    /// opening `"` (see [`Quotes::next_string`]). Each is remembered twice:
    /// by its whole token (up to its closing `"`, at least 8 bytes), which
    /// finds the last copy of the same user agent, client hash or key; and
    /// by its first 8 bytes, which finds a value that only begins alike (a
    /// path, the time, the event id). The longer match wins, extended
    /// forwards as far as the bytes agree and backwards into the literals
    /// before it; a pending match gives way where a longer one begins.
    /// Values inside a match are only remembered, so the tables point at
    /// the nearest copy; keys and short values there are passed over.
    fn parse(&mut self, start: usize) {
        let buf = &self.buf[..];
        let end = buf.len();
        let window = self.window;
        let base = self.base;
        let position = |i: usize| base.wrapping_add(i as u32);
        let mut symbols = Symbols {
            tokens: &mut self.tokens,
            counts: &mut self.counts,
            literal_from: start,
        };
        let mut block_from = start;
        // The match found last and not yet written: it may still be cut
        // short where a longer one begins.
        let mut pending: Option<Match> = None;
        let mut quotes = Quotes::new(std::mem::take(&mut self.quote_masks), buf, start);
        let (mut at, mut token_end) = quotes.next_string(buf);
        while at + KEY_BYTES <= end {
            let short = token_end < at + KEY_BYTES;
            // Inside the pending match a key (a string followed by `:`)
            // or a short value is passed over: the match goes on through
            // it, and what is looked up there is what begins a value and
            // may go further. (A key's place then stays old in the
            // tables; when a value before it was new, the match found at
            // the next value reaches back over the key anyway.)
            let key = buf.get(token_end + 1) == Some(&b':');
            if (short || key) && pending.is_some_and(|m| m.to > at + KEY_BYTES) {
                (at, token_end) = quotes.next_string(buf);
                continue;
            }
            let prefix = &mut self.prefix[prefix_key(buf, at)];
            let by_prefix = prefix.wrapping_sub(base) as usize;
            *prefix = position(at);
            // A token of up to 7 bytes (and its `"`) is its first 8 bytes.
            let by_token = if short {
                by_prefix
            } else {
                let stop = (token_end + 1).min(at + MAX_KEY_BYTES).min(end);
                let whole = &mut self.whole[whole_key(buf, at, stop)];
                let by_token = whole.wrapping_sub(base) as usize;
                *whole = position(at);
                by_token
            };

            // A match from here must reach past the pending one's end.
            let (reach, same) = match pending {
                Some(m) if m.to > at => (m.to, at - m.distance),
                _ => (at + MIN_MATCH - 1, usize::MAX),
            };
            let mut best = (0, 0);
            for candidate in [by_token, by_prefix] {
                // Only a match that agrees at the byte where the pending
                // one ends can go further: one byte tells most apart.
                if candidate < at
                    && at - candidate <= window
                    && candidate != same
                    && candidate != best.0
                    && (reach >= end || buf[candidate + (reach - at)] == buf[reach])
                {
                    let n = common_length(buf, candidate, at);
                    if at + n > reach.max(at + best.1) {
                        best = (candidate, n);
                    }
                }
                // The whole token and more: no need to look further.
                if at + best.1 > token_end {
                    break;
                }
            }
            if best.1 > 0 {
                let (candidate, length) = best;
                let distance = at - candidate;
                let mut from = at;
                match pending.take() {
                    // Cut short here: the new match goes further.
                    Some(mut m) if m.to > at => {
                        m.to = at;
                        symbols.push(buf, m);
                    }
                    earlier => {
                        if let Some(m) = earlier {
                            symbols.push(buf, m);
                        }
                        // Backwards into the literals before, at the same
                        // distance.
                        let lowest = symbols.literal_from.max(distance);
                        from -= common_length_back(buf, from - distance, from, from - lowest);
                    }
                }
                pending = Some(Match {
                    from,
                    to: at + length,
                    distance,
                });
                if symbols.tokens.len() >= MAX_BLOCK_TOKENS {
                    let literal_from = symbols.literal_from;
                    write_block(
                        &mut self.writer,
                        symbols.tokens,
                        symbols.counts,
                        buf,
                        block_from..literal_from,
                    );
                    symbols.tokens.clear();
                    symbols.counts.clear();
                    block_from = literal_from;
                }
            }
            (at, token_end) = quotes.next_string(buf);
        }
        self.quote_masks = quotes.into_buffer();
        if let Some(m) = pending {
            symbols.push(buf, m);
        }
        symbols.literals(buf, end);
        if !symbols.tokens.is_empty() || block_from == start {
            write_block(
                &mut self.writer,
                symbols.tokens,
                symbols.counts,
                buf,
                block_from..end,
            );
        }
    }
}

/// The `"` of 64 bytes not escaped (not right after a `\\`), a bit a byte,
/// low byte first. `escaped_first`: the byte before them is a `\\`.
/// Compared 16 bytes at a time (SSE2 or NEON, through `wide`).
#[inline(always)]
fn quote_mask(block: &[u8; 64], escaped_first: bool) -> (u64, bool) {
    let quote = u8x16::splat(b'"');
    let backslash = u8x16::splat(b'\\');
    let mut quotes = 0u64;
    let mut backslashes = 0u64;
    for (i, part) in block.as_chunks::<16>().0.iter().enumerate() {
        let v = u8x16::new(*part);
        quotes |= u64::from(v.simd_eq(quote).to_bitmask()) << (16 * i);
        backslashes |= u64::from(v.simd_eq(backslash).to_bitmask()) << (16 * i);
    }
    let escaped = (backslashes << 1) | u64::from(escaped_first);
    (quotes & !escaped, backslashes >> 63 == 1)
}

/// The places of the `"` not escaped in `buf[start..]`, in order, from a
/// bit mask of the message made first, 64 bytes a step (tokens are a dozen
/// bytes on average: a search call for each cost more than the whole mask).
struct Quotes {
    masks: Vec<u64>,
    start: usize,
    word: usize,
    mask: u64,
}

impl Quotes {
    fn new(masks: Vec<u64>, buf: &[u8], start: usize) -> Self {
        let mut masks = masks;
        masks.clear();
        let (blocks, rest) = buf[start..].as_chunks::<64>();
        let mut escaped = start > 0 && buf[start - 1] == b'\\';
        for block in blocks {
            let (m, e) = quote_mask(block, escaped);
            masks.push(m);
            escaped = e;
        }
        let mut last = [0u8; 64];
        last[..rest.len()].copy_from_slice(rest);
        masks.push(quote_mask(&last, escaped).0);
        let mask = masks[0];
        Quotes {
            masks,
            start,
            word: 0,
            mask,
        }
    }

    /// The next `"` not escaped.
    #[inline(always)]
    fn next_unescaped(&mut self) -> Option<usize> {
        while self.mask == 0 {
            self.word += 1;
            self.mask = *self.masks.get(self.word)?;
        }
        let q = self.start + self.word * 64 + self.mask.trailing_zeros() as usize;
        self.mask &= self.mask - 1;
        Some(q)
    }

    /// Where the next string begins (after its opening quote) and where
    /// it ends (its closing quote), or the end of `buf`. Quotes that open
    /// a string are every other `"` not escaped. (A string ending in an
    /// escaped backslash puts the count out until the next such string;
    /// the places are then the bytes after closing quotes, which costs a
    /// few bytes, never correctness.)
    #[inline(always)]
    fn next_string(&mut self, buf: &[u8]) -> (usize, usize) {
        match self.next_unescaped() {
            Some(open) => (open + 1, self.next_unescaped().unwrap_or(buf.len())),
            None => (buf.len(), buf.len()),
        }
    }

    /// The masks' buffer, for the next message.
    fn into_buffer(self) -> Vec<u64> {
        self.masks
    }
}

/// A run of bytes equal to the bytes `distance` before.
#[derive(Clone, Copy)]
struct Match {
    from: usize,
    to: usize,
    distance: usize,
}

/// The symbols of the block being parsed, and how far they reach.
struct Symbols<'a> {
    tokens: &'a mut Vec<Token>,
    counts: &'a mut Counts,
    /// The first byte not yet made a symbol.
    literal_from: usize,
}

impl Symbols<'_> {
    /// The bytes up to `to` as literals.
    fn literals(&mut self, buf: &[u8], to: usize) {
        if to > self.literal_from {
            for &b in &buf[self.literal_from..to] {
                self.counts.litlen[usize::from(b)] += 1;
            }
            self.tokens
                .push(Token::literals(self.literal_from, to - self.literal_from));
            self.literal_from = to;
        }
    }

    /// The literals before `m`, then `m` (up to 258 bytes a symbol; what
    /// is too short for one is left as literals to come).
    fn push(&mut self, buf: &[u8], m: Match) {
        self.literals(buf, m.from);
        let mut left = m.to - m.from;
        let dc = distance_code(m.distance);
        while left >= 3 {
            let mut n = left.min(MAX_MATCH);
            // Never leave 1 or 2 bytes a match cannot take.
            if left > MAX_MATCH && left - MAX_MATCH < 3 {
                n = left - 3;
            }
            let lc = length_code(n);
            self.tokens.push(Token::matched(n, m.distance, (lc, dc)));
            self.counts.litlen[257 + lc] += 1;
            self.counts.dist[dc] += 1;
            left -= n;
        }
        self.literal_from = m.to - left;
    }
}

/// Buffers kept between messages, at most (a default batch is 128 KiB).
const MAX_KEPT: usize = 256 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    /// The backend's reader: zlib's inflate with the negotiated window,
    /// which refuses a distance past it.
    struct Backend {
        inflate: zlib_rs::Inflate,
        bits: u8,
        reset: bool,
    }

    impl Backend {
        fn new(bits: u8, reset: bool) -> Self {
            Backend {
                inflate: zlib_rs::Inflate::new(false, bits),
                bits,
                reset,
            }
        }

        fn read(&mut self, message: &[u8]) -> Vec<u8> {
            let mut input = message.to_vec();
            input.extend_from_slice(&[0, 0, 0xff, 0xff]);
            let mut out = vec![0u8; 64 * message.len() + 1024];
            let before = self.inflate.total_out();
            let status =
                self.inflate
                    .decompress(&input, &mut out, zlib_rs::InflateFlush::SyncFlush);
            assert!(
                status.is_ok(),
                "inflate: {:?}",
                self.inflate.error_message()
            );
            out.truncate((self.inflate.total_out() - before) as usize);
            if self.reset {
                self.inflate = zlib_rs::Inflate::new(false, self.bits);
            }
            out
        }
    }

    fn events(n: usize, seed: u64) -> Vec<u8> {
        let agents = [
            "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0",
            "curl/8.5.0",
            "python-requests/2.32.3",
        ];
        let mut x = seed | 1;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut out = b"{\"type\":\"batch\",\"seq\":1,\"events\":[".to_vec();
        for i in 0..n {
            let r = next();
            out.extend_from_slice(
                format!(
                    "{{\"remote_addr\":\"{:016x}{:016x}\",\"endpoint\":\"/api/v1/products/{}\",\"status\":{},\"user_agent\":\"{}\",\"event_id\":\"{:032x}\"}},",
                    r % 50,
                    r % 50,
                    r % 100_000,
                    [200, 404, 500][(r % 3) as usize],
                    agents[(r >> 8) as usize % 3],
                    i
                )
                .as_bytes(),
            );
        }
        out.extend_from_slice(b"]}");
        out
    }

    #[test]
    fn messages_inflate_as_sent_with_the_window_the_backend_keeps() {
        for (bits, reset) in [
            (15, false),
            (12, false),
            (9, false),
            (8, false),
            (15, true),
            (12, true),
        ] {
            let mut deflate = EventDeflate::new(bits, reset);
            let mut backend = Backend::new(bits.max(9), reset);
            for (i, n) in [0usize, 1, 7, 300, 2, 3000, 40].into_iter().enumerate() {
                let message = events(n, i as u64 + 1);
                let compressed = deflate.compress(&message).to_vec();
                assert_eq!(
                    backend.read(&compressed),
                    message,
                    "window {bits}, reset {reset}, {n} events"
                );
                if n > 100 {
                    assert!(
                        compressed.len() * 3 < message.len(),
                        "{} of {}",
                        compressed.len(),
                        message.len()
                    );
                }
            }
        }
    }

    /// Messages of pieces that repeat (keys, quotes, backslashes, long
    /// runs) and bytes of any value.
    fn message() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        let piece = prop_oneof![
            Just(b"\"".to_vec()),
            Just(b"\\\"".to_vec()),
            Just(b"\",\"user_agent\":\"Mozilla/5.0 (X11; Linux x86_64)".to_vec()),
            Just(b"{\"remote_addr\":\"".to_vec()),
            Just(vec![b'a'; 300]),
            Just(vec![b'"'; 70]),
            proptest::collection::vec(any::<u8>(), 0..40),
        ];
        proptest::collection::vec(piece, 0..60).prop_map(|p| p.concat())
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]
        #[test]
        fn any_messages_inflate_as_sent_within_the_window(
            bits in 9u8..=15,
            reset in proptest::bool::ANY,
            messages in proptest::collection::vec(message(), 1..8),
        ) {
            let mut deflate = EventDeflate::new(bits, reset);
            let mut backend = Backend::new(bits, reset);
            for m in &messages {
                let compressed = deflate.compress(m).to_vec();
                proptest::prop_assert_eq!(&backend.read(&compressed), m);
            }
        }
    }
}
