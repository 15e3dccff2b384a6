//! Writing deflate blocks (RFC 1951 section 3.2): the symbols a parse
//! made, coded with the cheapest of dynamic codes, the fixed codes, or no
//! compression at all, as zlib chooses.

use super::huffman::{canonical_codes, code_lengths};

/// Literal/length symbols (0–285) and distance symbols (0–29).
pub(super) const LITLEN_SYMBOLS: usize = 286;
pub(super) const DIST_SYMBOLS: usize = 30;
const END_OF_BLOCK: usize = 256;

/// One parsed symbol: a run of literal bytes (where in the buffer they
/// are), or a match (length 3–258, distance 1–32,768, and their codes,
/// found once when the parse counts them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Token(u64);

const MATCH: u64 = 1 << 63;

impl Token {
    /// `len` literal bytes from `from` (an index into the parsed buffer).
    pub fn literals(from: usize, len: usize) -> Self {
        Token(((from as u64) << 32) | len as u64)
    }

    /// A match of `length` bytes `distance` back; `codes`: its length
    /// code and distance code ([`length_code`], [`distance_code`]).
    pub fn matched(length: usize, distance: usize, codes: (usize, usize)) -> Self {
        debug_assert!((3..=258).contains(&length) && (1..=32_768).contains(&distance));
        debug_assert!(codes == (length_code(length), distance_code(distance)));
        Token(
            MATCH
                | ((codes.1 as u64) << 40)
                | ((codes.0 as u64) << 32)
                | ((length as u64) << 16)
                | (distance as u64 - 1),
        )
    }
}

const LENGTH_BASE: [u16; 29] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
];
const LENGTH_EXTRA: [u8; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
const DIST_BASE: [u16; 30] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
    2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
];
const DIST_EXTRA: [u8; 30] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];

/// The length code (0–28, symbol 257 + code) of a match length.
pub(super) fn length_code(length: usize) -> usize {
    if length == 258 {
        return 28;
    }
    let x = length - 3;
    if x < 8 {
        return x;
    }
    let log = x.ilog2() as usize;
    4 * log - 4 + ((x >> (log - 2)) & 3)
}

/// The distance code (0–29) of a match distance.
pub(super) fn distance_code(distance: usize) -> usize {
    let x = distance - 1;
    if x < 4 {
        return x;
    }
    let log = x.ilog2() as usize;
    2 * log + ((x >> (log - 1)) & 1)
}

/// Bits into bytes, first bit in the low bit of a byte (RFC 1951 3.1.1).
#[derive(Default)]
pub(super) struct BitWriter {
    pub out: Vec<u8>,
    bits: u64,
    count: u32,
}

impl BitWriter {
    /// `n` (at most 32) low bits of `value`.
    #[inline(always)]
    fn put(&mut self, value: u32, n: u32) {
        self.bits |= u64::from(value) << self.count;
        self.count += n;
        if self.count >= 32 {
            self.out
                .extend_from_slice(&(self.bits as u32).to_le_bytes());
            self.bits >>= 32;
            self.count -= 32;
        }
    }

    /// Pads to a whole byte with zero bits and writes what is pending.
    fn align(&mut self) {
        let bytes = self.count.div_ceil(8) as usize;
        self.out
            .extend_from_slice(&self.bits.to_le_bytes()[..bytes.min(8)]);
        self.bits = 0;
        self.count = 0;
    }

    /// Ends a message as RFC 7692 has it: an empty stored block (what a
    /// sync flush writes), then its `00 00 ff ff` left out.
    pub fn end_message(&mut self) {
        self.put(0, 3);
        self.align();
    }
}

/// Symbol counts of the block being parsed.
pub(super) struct Counts {
    pub litlen: [u32; LITLEN_SYMBOLS],
    pub dist: [u32; DIST_SYMBOLS],
}

impl Counts {
    pub fn new() -> Self {
        Counts {
            litlen: [0; LITLEN_SYMBOLS],
            dist: [0; DIST_SYMBOLS],
        }
    }

    pub fn clear(&mut self) {
        self.litlen = [0; LITLEN_SYMBOLS];
        self.dist = [0; DIST_SYMBOLS];
    }
}

/// The order code-length code lengths are sent in (RFC 1951 3.2.7).
const CODE_LENGTH_ORDER: [usize; 19] = [
    16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
];

/// Codes of one block, and what the header that sends them costs.
struct Codes {
    litlen_len: [u8; LITLEN_SYMBOLS],
    litlen_code: [u16; LITLEN_SYMBOLS],
    dist_len: [u8; DIST_SYMBOLS],
    dist_code: [u16; DIST_SYMBOLS],
}

impl Codes {
    fn fixed() -> Self {
        // RFC 1951 3.2.6: 288 symbols (286 and 287 never occur, but they
        // count in where the 9-bit codes begin).
        let mut all = [0u8; 288];
        for (s, l) in all.iter_mut().enumerate() {
            *l = match s {
                0..=143 => 8,
                144..=255 => 9,
                256..=279 => 7,
                _ => 8,
            };
        }
        let mut all_codes = [0u16; 288];
        canonical_codes(&all, &mut all_codes);
        let mut codes = Codes {
            litlen_len: [0; LITLEN_SYMBOLS],
            litlen_code: [0; LITLEN_SYMBOLS],
            dist_len: [5; DIST_SYMBOLS],
            dist_code: [0; DIST_SYMBOLS],
        };
        codes.litlen_len.copy_from_slice(&all[..LITLEN_SYMBOLS]);
        codes
            .litlen_code
            .copy_from_slice(&all_codes[..LITLEN_SYMBOLS]);
        canonical_codes(&codes.dist_len, &mut codes.dist_code);
        codes
    }

    /// Bits the block's symbols take with these codes (extra bits apart).
    fn symbol_bits(&self, counts: &Counts) -> u64 {
        weighted(&counts.litlen, &self.litlen_len) + weighted(&counts.dist, &self.dist_len)
    }
}

/// The sum of each count times its code length.
fn weighted(counts: &[u32], lengths: &[u8]) -> u64 {
    counts
        .iter()
        .zip(lengths)
        .map(|(c, l)| u64::from(*c) * u64::from(*l))
        .sum()
}

/// The fixed codes, made once.
static FIXED: std::sync::LazyLock<Codes> = std::sync::LazyLock::new(Codes::fixed);

/// A dynamic block's header: counts, code-length code, and the lengths
/// run-length coded (RFC 1951 3.2.7).
struct DynamicHeader {
    hlit: usize,
    hdist: usize,
    hclen: usize,
    cl_len: [u8; 19],
    cl_code: [u16; 19],
    /// (code-length symbol, its extra bits' value).
    runs: Vec<(u8, u8)>,
}

impl DynamicHeader {
    fn new(codes: &Codes) -> Self {
        let hlit = 257
            + codes.litlen_len[257..]
                .iter()
                .rposition(|l| *l > 0)
                .map_or(0, |p| p + 1);
        let hdist = 1 + codes.dist_len.iter().rposition(|l| *l > 0).unwrap_or(0);
        let lengths: Vec<u8> = codes.litlen_len[..hlit]
            .iter()
            .chain(&codes.dist_len[..hdist])
            .copied()
            .collect();
        let runs = run_lengths(&lengths);
        let mut cl_counts = [0u32; 19];
        for (s, _) in &runs {
            cl_counts[usize::from(*s)] += 1;
        }
        let mut cl_len = [0u8; 19];
        code_lengths(&cl_counts, 7, &mut cl_len);
        let mut cl_code = [0u16; 19];
        canonical_codes(&cl_len, &mut cl_code);
        let hclen = 4.max(
            CODE_LENGTH_ORDER
                .iter()
                .rposition(|s| cl_len[*s] > 0)
                .map_or(0, |p| p + 1),
        );
        DynamicHeader {
            hlit,
            hdist,
            hclen,
            cl_len,
            cl_code,
            runs,
        }
    }

    fn bits(&self) -> u64 {
        let runs: u64 = self
            .runs
            .iter()
            .map(|(s, _)| u64::from(self.cl_len[usize::from(*s)]) + run_extra_bits(*s))
            .sum();
        5 + 5 + 4 + 3 * self.hclen as u64 + runs
    }

    fn write(&self, w: &mut BitWriter) {
        w.put((self.hlit - 257) as u32, 5);
        w.put((self.hdist - 1) as u32, 5);
        w.put((self.hclen - 4) as u32, 4);
        for s in &CODE_LENGTH_ORDER[..self.hclen] {
            w.put(u32::from(self.cl_len[*s]), 3);
        }
        for (s, extra) in &self.runs {
            let s = usize::from(*s);
            w.put(u32::from(self.cl_code[s]), u32::from(self.cl_len[s]));
            let n = run_extra_bits(s as u8);
            if n > 0 {
                w.put(u32::from(*extra), n as u32);
            }
        }
    }
}

fn run_extra_bits(symbol: u8) -> u64 {
    match symbol {
        16 => 2,
        17 => 3,
        18 => 7,
        _ => 0,
    }
}

/// Code lengths as code-length symbols: 16 repeats the previous length
/// 3–6 times, 17 and 18 repeat a zero 3–10 and 11–138 times.
fn run_lengths(lengths: &[u8]) -> Vec<(u8, u8)> {
    let mut runs = Vec::with_capacity(lengths.len());
    let mut i = 0;
    while i < lengths.len() {
        let l = lengths[i];
        let mut n = lengths[i..].iter().take_while(|x| **x == l).count();
        i += n;
        if l == 0 {
            while n >= 11 {
                let r = n.min(138);
                runs.push((18, (r - 11) as u8));
                n -= r;
            }
            if n >= 3 {
                runs.push((17, (n - 3) as u8));
                n = 0;
            }
        } else {
            runs.push((l, 0));
            n -= 1;
            while n >= 3 {
                let r = n.min(6);
                runs.push((16, (r - 3) as u8));
                n -= r;
            }
        }
        runs.extend(std::iter::repeat_n((l, 0), n));
    }
    runs
}

/// Writes one block of `tokens` (their counts in `counts`; literals are
/// bytes of `buf`, and the block stands for `buf[raw]`), not the last of
/// the stream, in whichever form is smallest.
pub(super) fn write_block(
    w: &mut BitWriter,
    tokens: &[Token],
    counts: &mut Counts,
    buf: &[u8],
    raw: std::ops::Range<usize>,
) {
    let raw_bytes = &buf[raw.clone()];
    counts.litlen[END_OF_BLOCK] += 1;
    // Inflaters (zlib's among them) want at least one distance code, and
    // zlib gives every tree two: an unused code costs nothing to send.
    let used = counts.dist.iter().filter(|c| **c > 0).count();
    if used < 2 {
        let spare = usize::from(counts.dist[0] > 0);
        counts.dist[spare] = counts.dist[spare].max(1);
        if used == 0 {
            counts.dist[1] = 1;
        }
    }

    let mut dynamic = Codes {
        litlen_len: [0; LITLEN_SYMBOLS],
        litlen_code: [0; LITLEN_SYMBOLS],
        dist_len: [0; DIST_SYMBOLS],
        dist_code: [0; DIST_SYMBOLS],
    };
    code_lengths(&counts.litlen, 15, &mut dynamic.litlen_len);
    code_lengths(&counts.dist, 15, &mut dynamic.dist_len);
    canonical_codes(&dynamic.litlen_len, &mut dynamic.litlen_code);
    canonical_codes(&dynamic.dist_len, &mut dynamic.dist_code);
    let header = DynamicHeader::new(&dynamic);

    let extra: u64 = counts.litlen[257..]
        .iter()
        .zip(LENGTH_EXTRA)
        .chain(counts.dist.iter().zip(DIST_EXTRA))
        .map(|(c, e)| u64::from(*c) * u64::from(e))
        .sum();
    let fixed = &*FIXED;
    let dynamic_bits = 3 + header.bits() + dynamic.symbol_bits(counts) + extra;
    let fixed_bits = 3 + fixed.symbol_bits(counts) + extra;
    // A stored block: header, padding to a byte (at most 7), LEN and NLEN,
    // the bytes; one per 65,535 bytes.
    let stored_bits =
        (raw.len().div_ceil(65_535).max(1) as u64) * (3 + 7 + 32) + 8 * raw.len() as u64;

    if stored_bits < dynamic_bits.min(fixed_bits) {
        write_stored(w, raw_bytes);
    } else if fixed_bits <= dynamic_bits {
        w.put(0b010, 3);
        write_symbols(w, tokens, buf, fixed);
    } else {
        w.put(0b100, 3);
        header.write(w);
        write_symbols(w, tokens, buf, &dynamic);
    }
}

fn write_stored(w: &mut BitWriter, raw: &[u8]) {
    let mut chunks = raw.chunks(65_535).peekable();
    if chunks.peek().is_none() {
        w.put(0, 3);
        w.align();
        w.out.extend_from_slice(&[0, 0, 0xff, 0xff]);
    }
    for chunk in chunks {
        w.put(0, 3);
        w.align();
        let n = chunk.len() as u16;
        w.out.extend_from_slice(&n.to_le_bytes());
        w.out.extend_from_slice(&(!n).to_le_bytes());
        w.out.extend_from_slice(chunk);
    }
}

fn write_symbols(w: &mut BitWriter, tokens: &[Token], buf: &[u8], codes: &Codes) {
    // Code and length of each literal in one word: one load a byte.
    let mut literal = [0u32; 256];
    for (b, l) in literal.iter_mut().enumerate() {
        *l = u32::from(codes.litlen_code[b]) | (u32::from(codes.litlen_len[b]) << 16);
    }
    for t in tokens {
        let t = t.0;
        if t & MATCH == 0 {
            let from = (t >> 32) as usize;
            let bytes = &buf[from..from + (t & 0xffff_ffff) as usize];
            // Two literals a write: 15 + 15 bits fit.
            let mut pairs = bytes.chunks_exact(2);
            for pair in &mut pairs {
                let a = literal[usize::from(pair[0])];
                let b = literal[usize::from(pair[1])];
                let la = a >> 16;
                w.put((a & 0xffff) | ((b & 0xffff) << la), la + (b >> 16));
            }
            for &byte in pairs.remainder() {
                let a = literal[usize::from(byte)];
                w.put(a & 0xffff, a >> 16);
            }
            continue;
        }
        let length = ((t >> 16) & 0x1ff) as usize;
        let distance = (t & 0xffff) as usize + 1;
        let lc = ((t >> 32) & 0x1f) as usize;
        let s = 257 + lc;
        let e = u32::from(LENGTH_EXTRA[lc]);
        w.put(
            u32::from(codes.litlen_code[s])
                | ((length as u32 - u32::from(LENGTH_BASE[lc])) << codes.litlen_len[s]),
            u32::from(codes.litlen_len[s]) + e,
        );
        let dc = ((t >> 40) & 0x1f) as usize;
        let e = u32::from(DIST_EXTRA[dc]);
        w.put(
            u32::from(codes.dist_code[dc])
                | ((distance as u32 - u32::from(DIST_BASE[dc])) << codes.dist_len[dc]),
            u32::from(codes.dist_len[dc]) + e,
        );
    }
    w.put(
        u32::from(codes.litlen_code[END_OF_BLOCK]),
        u32::from(codes.litlen_len[END_OF_BLOCK]),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_and_distance_codes_match_the_rfcs_tables() {
        for length in 3..=258 {
            let c = length_code(length);
            let base = usize::from(LENGTH_BASE[c]);
            let span = 1usize << LENGTH_EXTRA[c];
            assert!(
                base <= length && (length < base + span || (c == 28 && length == 258)),
                "{length}"
            );
            // 258 has its own code, never 284 with all extra bits set.
            assert!(c != 27 || length < 258);
        }
        for distance in 1..=32_768 {
            let c = distance_code(distance);
            let base = usize::from(DIST_BASE[c]);
            assert!(
                base <= distance && distance < base + (1 << DIST_EXTRA[c]),
                "{distance}"
            );
        }
    }

    #[test]
    fn run_lengths_cover_the_lengths_exactly() {
        let lengths: Vec<u8> = [
            vec![0; 150],
            vec![8; 10],
            vec![0; 4],
            vec![5, 5],
            vec![0; 12],
        ]
        .concat();
        let mut back = Vec::new();
        for (s, extra) in run_lengths(&lengths) {
            match s {
                16 => {
                    let last = back.last().copied().unwrap_or(0);
                    back.extend(std::iter::repeat_n(last, 3 + usize::from(extra)));
                }
                17 => back.extend(std::iter::repeat_n(0, 3 + usize::from(extra))),
                18 => back.extend(std::iter::repeat_n(0, 11 + usize::from(extra))),
                l => back.push(l),
            }
        }
        assert_eq!(back, lengths);
    }
}
