//! Huffman codes for one deflate block (RFC 1951 section 3.2.2): code
//! lengths from symbol counts, limited to the lengths deflate allows, and
//! the canonical codes those lengths define.

/// Code lengths for `counts` (0 for a symbol never used), none longer than
/// `max_bits`, written into `lengths` (as long as `counts`).
///
/// Built as a Huffman tree over the used symbols (two queues: leaves sorted
/// by count, inner nodes made in order of weight). When the tree is deeper
/// than `max_bits`, the counts are halved (never to 0) and the tree built
/// again: with every count at 1 the tree is balanced, and 286 symbols need 9
/// bits, so this ends. It costs a little compression in the rare block
/// whose counts are that skewed, and nothing in the others.
pub(super) fn code_lengths(counts: &[u32], max_bits: u8, lengths: &mut [u8]) {
    lengths.iter_mut().for_each(|l| *l = 0);
    let mut leaves: Vec<(u32, u16)> = counts
        .iter()
        .enumerate()
        .filter(|(_, c)| **c > 0)
        .map(|(s, c)| (*c, s as u16))
        .collect();
    match leaves.len() {
        0 => return,
        1 => {
            // One symbol still takes one bit (inflaters need a code).
            lengths[usize::from(leaves[0].1)] = 1;
            return;
        }
        _ => {}
    }
    let mut depths = Vec::new();
    loop {
        leaves.sort_unstable();
        if tree_depths(&leaves, &mut depths) <= max_bits {
            break;
        }
        for leaf in &mut leaves {
            leaf.0 = leaf.0.div_ceil(2);
        }
    }
    for ((_, symbol), depth) in leaves.iter().zip(&depths) {
        lengths[usize::from(*symbol)] = *depth;
    }
}

/// The depth of each leaf (`leaves` sorted by count, at least two) in a
/// Huffman tree over them; returns the largest.
fn tree_depths(leaves: &[(u32, u16)], depths: &mut Vec<u8>) -> u8 {
    let n = leaves.len();
    // Nodes 0..n are the leaves, n.. the inner nodes in the order they are
    // made; `parent` of each, and the weight of inner nodes.
    let mut parent = vec![0usize; 2 * n - 1];
    let mut weight: Vec<u64> = Vec::with_capacity(n - 1);
    let (mut next_leaf, mut next_inner) = (0, 0);
    for made in 0..n - 1 {
        let mut take = || {
            let leaf = leaves.get(next_leaf).map(|l| u64::from(l.0));
            let inner = weight.get(next_inner).copied();
            match (leaf, inner) {
                (Some(l), Some(i)) if i < l => {
                    next_inner += 1;
                    (n + next_inner - 1, i)
                }
                (Some(l), _) => {
                    next_leaf += 1;
                    (next_leaf - 1, l)
                }
                (None, Some(i)) => {
                    next_inner += 1;
                    (n + next_inner - 1, i)
                }
                // n leaves make n - 1 inner nodes: there are always two
                // nodes left to join while `made` < n - 1.
                (None, None) => (n + made, 0),
            }
        };
        let (a, wa) = take();
        let (b, wb) = take();
        parent[a] = n + made;
        parent[b] = n + made;
        weight.push(wa + wb);
    }
    // The root is the last node made; a node's depth is its parent's + 1,
    // and parents are made after their children.
    let mut depth = vec![0u8; 2 * n - 1];
    for node in (0..2 * n - 2).rev() {
        depth[node] = depth[parent[node]].saturating_add(1);
    }
    depths.clear();
    depths.extend_from_slice(&depth[..n]);
    depths.iter().copied().max().unwrap_or(0)
}

/// The canonical codes (RFC 1951 section 3.2.2) for `lengths`, bit-reversed
/// so that a writer filling bytes from their low bit sends them first bit
/// first.
pub(super) fn canonical_codes(lengths: &[u8], codes: &mut [u16]) {
    let mut count = [0u16; 16];
    for &l in lengths {
        count[usize::from(l)] += 1;
    }
    count[0] = 0;
    let mut next = [0u16; 16];
    let mut code = 0u16;
    for bits in 1..16 {
        code = (code + count[bits - 1]) << 1;
        next[bits] = code;
    }
    for (symbol, &l) in lengths.iter().enumerate() {
        if l > 0 {
            let c = next[usize::from(l)];
            next[usize::from(l)] += 1;
            codes[symbol] = c.reverse_bits() >> (16 - l);
        } else {
            codes[symbol] = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kraft(lengths: &[u8]) -> f64 {
        lengths
            .iter()
            .filter(|l| **l > 0)
            .map(|l| 0.5f64.powi(i32::from(*l)))
            .sum()
    }

    #[test]
    fn lengths_are_complete_and_limited_even_for_skewed_counts() {
        // Fibonacci counts make the deepest possible tree.
        let mut counts = vec![0u32; 286];
        let (mut a, mut b) = (1u32, 1u32);
        for c in counts.iter_mut().take(30) {
            *c = a;
            (a, b) = (b, a.saturating_add(b));
        }
        counts[200] = 5;
        let mut lengths = vec![0u8; 286];
        code_lengths(&counts, 15, &mut lengths);
        assert!(lengths.iter().all(|l| *l <= 15));
        assert_eq!(kraft(&lengths), 1.0);
        assert!(lengths[31..200].iter().all(|l| *l == 0));
        // Frequent symbols get codes no longer than rare ones.
        assert!(lengths[29] <= lengths[0]);

        let mut seven = vec![0u8; 19];
        code_lengths(&counts[..19], 7, &mut seven);
        assert!(seven.iter().all(|l| *l <= 7));
        assert_eq!(kraft(&seven), 1.0);
    }

    #[test]
    fn one_symbol_gets_one_bit_and_none_gets_nothing() {
        let mut lengths = [9u8; 4];
        code_lengths(&[0, 7, 0, 0], 15, &mut lengths);
        assert_eq!(lengths, [0, 1, 0, 0]);
        code_lengths(&[0, 0, 0, 0], 15, &mut lengths);
        assert_eq!(lengths, [0; 4]);
    }

    #[test]
    fn canonical_codes_follow_the_rfcs_example() {
        // RFC 1951 3.2.2: lengths (3, 3, 3, 3, 3, 2, 4, 4) give F = 00,
        // A = 010 ... H = 1111 (sent from the first bit, so reversed here).
        let lengths = [3, 3, 3, 3, 3, 2, 4, 4];
        let mut codes = [0u16; 8];
        canonical_codes(&lengths, &mut codes);
        let expected = [0b010, 0b011, 0b100, 0b101, 0b110, 0b00, 0b1110, 0b1111];
        for ((c, e), l) in codes.iter().zip(expected).zip(lengths) {
            assert_eq!(c.reverse_bits() >> (16 - l), e);
        }
    }
}
