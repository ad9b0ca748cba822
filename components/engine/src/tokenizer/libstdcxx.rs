//! The iteration order of llama.cpp's `std::unordered_map<std::string, llama_token> token_to_id`
//! under GNU libstdc++ (what the Linux reference builds use).
//!
//! `llama_vocab::impl::load` finds the EOT, EOM and FIM tokens by text while iterating that map and
//! keeps the first match, so when a vocabulary holds several candidates (SmolLM2 has both
//! `<|endoftext|>` and `<|im_end|>`) the pick depends on the map's internal order. This reproduces
//! libstdc++'s `_Hashtable` for unique keys: `std::hash<std::string>` (`_Hash_bytes`, seed
//! 0xc70f6907), insertion at the front of a key's bucket or, for an empty bucket, at the front of the
//! whole list, and the prime rehash policy (max load factor 1), which rebuilds the list when it grows.

/// `std::_Hash_bytes` (libstdc++ hash_bytes.cc, 64-bit `size_t`).
pub(super) fn hash_bytes(bytes: &[u8]) -> u64 {
    const SEED: u64 = 0xc70f_6907;
    const MUL: u64 = (0xc6a4_a793u64 << 32) + 0x5bd1_e995;
    let shift_mix = |v: u64| v ^ (v >> 47);
    let len = bytes.len();
    let mut hash = SEED ^ (len as u64).wrapping_mul(MUL);
    let aligned = len & !7;
    for chunk in bytes[..aligned].chunks_exact(8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let data = shift_mix(u64::from_le_bytes(word).wrapping_mul(MUL)).wrapping_mul(MUL);
        hash ^= data;
        hash = hash.wrapping_mul(MUL);
    }
    if len & 7 != 0 {
        // load_bytes: the tail as a little-endian number.
        let data = bytes[aligned..]
            .iter()
            .rev()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
        hash ^= data;
        hash = hash.wrapping_mul(MUL);
    }
    hash = shift_mix(hash).wrapping_mul(MUL);
    shift_mix(hash)
}

/// (element count reached by an insertion, bucket count that insertion rehashes to) for a map that
/// starts empty and only grows: `_Prime_rehash_policy` with max load factor 1, as measured on
/// libstdc++ (GCC 12).
const GROWTH: &[(usize, usize)] = &[
    (1, 13),
    (14, 29),
    (30, 59),
    (60, 127),
    (128, 257),
    (258, 541),
    (542, 1109),
    (1110, 2357),
    (2358, 5087),
    (5088, 10273),
    (10274, 20753),
    (20754, 42043),
    (42044, 85229),
    (85230, 172933),
    (172934, 351061),
    (351062, 712697),
    (712698, 1447153),
    (1447154, 2938679),
    (2938680, 5967347),
    (5967348, 12117689),
];

const NIL: u32 = u32::MAX;
/// Stands for `_M_before_begin` in bucket entries.
const BEFORE_BEGIN: u32 = u32::MAX - 1;

/// The iteration order of a map filled by `map[key] = ...` for `keys` in order (a repeated key keeps
/// its first node). Returns indices into `keys` of the first occurrence of each distinct key, in
/// iteration order; `None` past the measured growth table.
pub(super) fn iteration_order(keys: &[&str]) -> Option<Vec<usize>> {
    let mut seen = std::collections::HashMap::with_capacity(keys.len());
    // Distinct keys in insertion order, with their hash codes.
    let mut nodes: Vec<(usize, u64)> = Vec::with_capacity(keys.len());
    for (i, k) in keys.iter().enumerate() {
        if seen.insert(*k, i).is_none() {
            nodes.push((i, hash_bytes(k.as_bytes())));
        }
    }
    if nodes.len() > GROWTH.last()?.0 {
        return None;
    }
    let mut next = vec![NIL; nodes.len()];
    let mut head = NIL; // _M_before_begin._M_nxt
    let mut buckets: Vec<u32> = vec![NIL; 1];
    let mut growth = GROWTH.iter().peekable();
    for n in 0..nodes.len() {
        let count = n + 1;
        if let Some(&&(at, new_count)) = growth.peek()
            && at == count
        {
            growth.next();
            // _M_rehash_aux(n, true_type): relink every node into the new buckets.
            let mut nb = vec![NIL; new_count];
            let mut p = head;
            head = NIL;
            let mut bbegin_bkt = 0usize;
            while p != NIL {
                let pn = p as usize;
                let following = next[pn];
                let bkt = (nodes[pn].1 % new_count as u64) as usize;
                if nb[bkt] == NIL {
                    next[pn] = head;
                    head = p;
                    nb[bkt] = BEFORE_BEGIN;
                    if next[pn] != NIL {
                        nb[bbegin_bkt] = p;
                    }
                    bbegin_bkt = bkt;
                } else if nb[bkt] == BEFORE_BEGIN {
                    next[pn] = head;
                    head = p;
                } else {
                    let prev = nb[bkt] as usize;
                    next[pn] = next[prev];
                    next[prev] = p;
                }
                p = following;
            }
            buckets = nb;
        }
        // _M_insert_bucket_begin.
        let nbkt = buckets.len() as u64;
        let bkt = (nodes[n].1 % nbkt) as usize;
        let node = n as u32;
        match buckets[bkt] {
            NIL => {
                next[n] = head;
                head = node;
                if next[n] != NIL {
                    let b = (nodes[next[n] as usize].1 % nbkt) as usize;
                    buckets[b] = node;
                }
                buckets[bkt] = BEFORE_BEGIN;
            }
            BEFORE_BEGIN => {
                next[n] = head;
                head = node;
            }
            prev => {
                let prev = prev as usize;
                next[n] = next[prev];
                next[prev] = node;
            }
        }
    }
    let mut order = Vec::with_capacity(nodes.len());
    let mut p = head;
    while p != NIL {
        order.push(nodes[p as usize].0);
        p = next[p as usize];
    }
    Some(order)
}
