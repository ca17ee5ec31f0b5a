//! RFC 6962 §2.1: leaf and node hashing, the tree head of `n` leaves, audit paths and
//! consistency proofs; their verification as RFC 9162 §2.1.3.2 and §2.1.4.2 give it.
//!
//! The functions take the leaves' hashes in order. Building proofs hashes each subtree once
//! (O(n)); a store that keeps the hashes of complete subtrees can answer in O(log n) with the
//! same split rule, and must give the same bytes.

use sha2::{Digest, Sha256};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// The root of the empty tree: SHA-256 of nothing.
pub const EMPTY_ROOT: Hash = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24, 0x27, 0xae, 0x41,
    0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// `SHA-256(0x00 || entry)`: the prefix keeps a leaf from ever passing for a node.
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x00]);
    hasher.update(entry);
    hasher.finalize().into()
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x01]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// The largest power of two smaller than `n` (`n` ≥ 2): where RFC 6962 splits a tree. Not
/// the midpoint: for other sizes than powers of two that gives another, incompatible tree.
fn split(n: usize) -> usize {
    debug_assert!(n >= 2);
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// The Merkle tree hash of `leaves` (their leaf hashes, in order).
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => EMPTY_ROOT,
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// Why a proof could not be made, or did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("entry {index} is not in a tree of {size} entries")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("a tree of {old} entries cannot be a prefix of one of {new}")]
    SizesOutOfOrder { old: u64, new: u64 },
    #[error("an empty tree is consistent with every tree: there is nothing to prove")]
    EmptyOldTree,
    #[error("the proof has the wrong number of hashes for these sizes")]
    WrongLength,
    #[error("the proof does not lead to the expected root: the entry or the log was altered")]
    RootMismatch,
}

/// The audit path of entry `index` in the tree of `leaves` (RFC 6962 §2.1.1 `PATH`).
pub fn inclusion_proof(leaves: &[Hash], index: u64) -> Result<Vec<Hash>, ProofError> {
    let size = leaves.len() as u64;
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let mut proof = Vec::new();
    path(index as usize, leaves, &mut proof);
    Ok(proof)
}

fn path(m: usize, leaves: &[Hash], proof: &mut Vec<Hash>) {
    if leaves.len() <= 1 {
        return;
    }
    let k = split(leaves.len());
    if m < k {
        path(m, &leaves[..k], proof);
        proof.push(root(&leaves[k..]));
    } else {
        path(m - k, &leaves[k..], proof);
        proof.push(root(&leaves[..k]));
    }
}

/// The proof that the tree of the first `old_size` of `leaves` is a prefix of the tree of
/// all of them (RFC 6962 §2.1.2 `PROOF`). Empty when the sizes are equal.
pub fn consistency_proof(leaves: &[Hash], old_size: u64) -> Result<Vec<Hash>, ProofError> {
    let new = leaves.len() as u64;
    if old_size > new {
        return Err(ProofError::SizesOutOfOrder { old: old_size, new });
    }
    if old_size == 0 {
        return Err(ProofError::EmptyOldTree);
    }
    let mut proof = Vec::new();
    if old_size < new {
        subproof(old_size as usize, leaves, true, &mut proof);
    }
    Ok(proof)
}

fn subproof(m: usize, leaves: &[Hash], complete: bool, proof: &mut Vec<Hash>) {
    let n = leaves.len();
    if m == n {
        if !complete {
            proof.push(root(leaves));
        }
        return;
    }
    let k = split(n);
    if m <= k {
        subproof(m, &leaves[..k], complete, proof);
        proof.push(root(&leaves[k..]));
    } else {
        subproof(m - k, &leaves[k..], false, proof);
        proof.push(root(&leaves[..k]));
    }
}

/// Checks that `leaf` is entry `index` of the tree of `size` entries whose head is `root`
/// (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(index: u64, size: u64, leaf: &Hash, proof: &[Hash], root: &Hash) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if sn == 0 {
            return Err(ProofError::WrongLength);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(ProofError::WrongLength);
    }
    if r != *root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Checks that the tree of `old_size` entries with head `old_root` is a prefix of the tree of
/// `new_size` entries with head `new_root` (RFC 9162 §2.1.4.2): nothing the older checkpoint
/// covered was changed, dropped or reordered since.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old_size > new_size {
        return Err(ProofError::SizesOutOfOrder { old: old_size, new: new_size });
    }
    if old_size == new_size {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength);
        }
        return if old_root == new_root { Ok(()) } else { Err(ProofError::RootMismatch) };
    }
    if old_size == 0 {
        return Err(ProofError::EmptyOldTree);
    }
    if proof.is_empty() {
        return Err(ProofError::WrongLength);
    }
    // A complete old tree is its own first node; otherwise the proof starts with it.
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old_size.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let (mut fn_, mut sn) = (old_size - 1, new_size - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if sn == 0 {
            return Err(ProofError::WrongLength);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(ProofError::WrongLength);
    }
    if fr != *old_root || sr != *new_root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&(i as u64).to_be_bytes())).collect()
    }

    #[test]
    fn the_split_is_the_largest_power_of_two_below() {
        for (n, k) in [(2, 1), (3, 2), (4, 2), (5, 4), (8, 4), (9, 8), (1000, 512)] {
            assert_eq!(split(n), k, "n = {n}");
        }
        assert_eq!(sha2::Sha256::digest(b"").as_slice(), EMPTY_ROOT);
    }

    #[test]
    fn every_proof_of_every_small_tree_verifies_and_altered_ones_do_not() {
        let all = leaves(40);
        for n in 1..=all.len() {
            let tree = &all[..n];
            let head = root(tree);
            for i in 0..n as u64 {
                let proof = inclusion_proof(tree, i).unwrap();
                verify_inclusion(i, n as u64, &tree[i as usize], &proof, &head).unwrap();
                let other = tree[(i as usize + 1) % n];
                if n > 1 {
                    assert!(verify_inclusion(i, n as u64, &other, &proof, &head).is_err(), "wrong leaf, n {n} i {i}");
                }
                if let Some(first) = proof.first() {
                    let mut tampered = proof.clone();
                    tampered[0] = node_hash(first, first);
                    assert_eq!(
                        verify_inclusion(i, n as u64, &tree[i as usize], &tampered, &head),
                        Err(ProofError::RootMismatch)
                    );
                }
            }
            for m in 1..=n as u64 {
                let proof = consistency_proof(tree, m).unwrap();
                let old = root(&tree[..m as usize]);
                verify_consistency(m, n as u64, &old, &head, &proof).unwrap();
                if m < n as u64 {
                    // The old tree with one entry altered: not a prefix any more.
                    let mut altered = tree.to_vec();
                    altered[0] = leaf_hash(b"altered");
                    let altered_old = root(&altered[..m as usize]);
                    assert_eq!(
                        verify_consistency(m, n as u64, &altered_old, &head, &proof),
                        Err(ProofError::RootMismatch),
                        "m {m} n {n}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_log_truncated_and_regrown_is_not_consistent_with_its_old_checkpoint() {
        let original = leaves(20);
        let old_root = root(&original[..12]);
        // Entries 10.. dropped and others appended in their place.
        let mut regrown = original[..10].to_vec();
        regrown.extend((0..15).map(|i| leaf_hash(format!("new {i}").as_bytes())));
        let proof = consistency_proof(&regrown, 12).unwrap();
        assert_eq!(
            verify_consistency(12, regrown.len() as u64, &old_root, &root(&regrown), &proof),
            Err(ProofError::RootMismatch)
        );
    }

    #[test]
    fn sizes_out_of_range_are_refused_with_their_reason() {
        let tree = leaves(5);
        assert_eq!(inclusion_proof(&tree, 5), Err(ProofError::IndexOutOfRange { index: 5, size: 5 }));
        assert_eq!(consistency_proof(&tree, 6), Err(ProofError::SizesOutOfOrder { old: 6, new: 5 }));
        assert_eq!(consistency_proof(&tree, 0), Err(ProofError::EmptyOldTree));
        let head = root(&tree);
        assert_eq!(verify_consistency(0, 5, &EMPTY_ROOT, &head, &[]), Err(ProofError::EmptyOldTree));
        assert_eq!(verify_consistency(5, 5, &head, &head, &[head]), Err(ProofError::WrongLength));
    }
}
