//! The audit core against other implementations' published outputs, so that our logs verify
//! with their tools and theirs with ours.
//!
//! - Merkle hashing and proofs: transparency-dev/merkle (the Go library behind Trillian and
//!   Tessera), `testonly/constants.go` (leaf inputs, node and root hashes of the RFC 6962
//!   reference tree) and `proof/verify_test.go` (inclusion and consistency proofs; its leaf
//!   numbers are 1-based, ours 0-based).
//! - Signed notes: golang.org/x/mod `sumdb/note` (`note.go`'s documented example and
//!   `note_test.go`): the PeterNeumann key pair and the note it signs. Ed25519 is
//!   deterministic, so our signature must be theirs byte for byte.

use sm_audit::{
    Checkpoint, EMPTY_ROOT, Hash, NoteError, NoteSigner, NoteVerifier, ProofError, consistency_proof, inclusion_proof,
    leaf_hash, root, verify_consistency, verify_inclusion,
};

fn h(hex: &str) -> Hash {
    hex::decode(hex).unwrap().try_into().unwrap()
}

const INPUTS: [&str; 8] =
    ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"];

const ROOTS: [&str; 9] = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

fn leaves() -> Vec<Hash> {
    INPUTS.iter().map(|input| leaf_hash(&hex::decode(input).unwrap())).collect()
}

#[test]
fn leaf_hashes_and_every_root_match_transparency_dev() {
    let leaves = leaves();
    let level0 = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
        "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
        "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
        "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
    ];
    for (leaf, want) in leaves.iter().zip(level0) {
        assert_eq!(*leaf, h(want));
    }
    assert_eq!(EMPTY_ROOT, h(ROOTS[0]));
    for size in 0..=leaves.len() {
        assert_eq!(root(&leaves[..size]), h(ROOTS[size]), "root of size {size}");
    }
}

#[test]
fn inclusion_proofs_match_transparency_dev() {
    let leaves = leaves();
    let vectors: [(u64, u64, &[&str]); 5] = [
        (0, 1, &[]),
        (
            0,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            5,
            8,
            &[
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (2, 3, &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
        (
            1,
            5,
            &[
                "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
    ];
    for (index, size, want) in vectors {
        let tree = &leaves[..size as usize];
        let want: Vec<Hash> = want.iter().map(|x| h(x)).collect();
        assert_eq!(inclusion_proof(tree, index).unwrap(), want, "entry {index} of {size}");
        let head = h(ROOTS[size as usize]);
        verify_inclusion(index, size, &tree[index as usize], &want, &head).unwrap();
        // transparency-dev's corruptions: each must be refused.
        let leaf = tree[index as usize];
        let mut bad: Vec<(String, u64, u64, Hash, Vec<Hash>, Hash)> = vec![
            ("index + 1".into(), index + 1, size, leaf, want.clone(), head),
            ("size * 2".into(), index, size * 2, leaf, want.clone(), head),
            ("wrong leaf".into(), index, size, leaf_hash(b"WrongLeaf"), want.clone(), head),
            ("empty root".into(), index, size, leaf, want.clone(), EMPTY_ROOT),
            ("trailing root".into(), index, size, leaf, [want.clone(), vec![head]].concat(), head),
            ("preceding root".into(), index, size, leaf, [vec![head], want.clone()].concat(), head),
        ];
        if index > 0 {
            bad.push(("index - 1".into(), index - 1, size, leaf, want.clone(), head));
        }
        for i in 0..want.len() {
            let mut flipped = want.clone();
            flipped[i][0] ^= 8;
            bad.push((format!("proof[{i}] bit 3"), index, size, leaf, flipped, head));
        }
        if !want.is_empty() {
            bad.push(("removed component".into(), index, size, leaf, want[..want.len() - 1].to_vec(), head));
        }
        for (what, index, size, leaf, proof, head) in bad {
            assert!(verify_inclusion(index, size, &leaf, &proof, &head).is_err(), "{what} accepted");
        }
    }
}

#[test]
fn consistency_proofs_match_transparency_dev() {
    let leaves = leaves();
    let vectors: [(u64, u64, &[&str]); 5] = [
        (1, 1, &[]),
        (
            1,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            6,
            8,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            5,
            &[
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
        (
            6,
            7,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
    ];
    for (old, new, want) in vectors {
        let want: Vec<Hash> = want.iter().map(|x| h(x)).collect();
        assert_eq!(consistency_proof(&leaves[..new as usize], old).unwrap(), want, "{old} → {new}");
        let (old_root, new_root) = (h(ROOTS[old as usize]), h(ROOTS[new as usize]));
        verify_consistency(old, new, &old_root, &new_root, &want).unwrap();
        if want.is_empty() {
            continue;
        }
        let mut bad: Vec<(String, u64, u64, Hash, Hash, Vec<Hash>)> = vec![
            ("old - 1".into(), old - 1, new, old_root, new_root, want.clone()),
            ("old + 1".into(), old + 1, new, old_root, new_root, want.clone()),
            ("new * 2".into(), old, new * 2, old_root, new_root, want.clone()),
            ("swapped roots".into(), old, new, new_root, old_root, want.clone()),
            ("empty proof".into(), old, new, old_root, new_root, vec![]),
            ("trailing root".into(), old, new, old_root, new_root, [want.clone(), vec![new_root]].concat()),
            ("preceding proof[0]".into(), old, new, old_root, new_root, [vec![want[0]], want.clone()].concat()),
            ("truncated".into(), old, new, old_root, new_root, want[..want.len() - 1].to_vec()),
        ];
        for i in 0..want.len() {
            let mut flipped = want.clone();
            flipped[i][0] ^= 16;
            bad.push((format!("proof[{i}] bit 4"), old, new, old_root, new_root, flipped));
        }
        for (what, old, new, old_root, new_root, proof) in bad {
            assert!(verify_consistency(old, new, &old_root, &new_root, &proof).is_err(), "{what} accepted");
        }
    }
    assert_eq!(
        verify_consistency(2, 1, &h(ROOTS[2]), &h(ROOTS[1]), &[]),
        Err(ProofError::SizesOutOfOrder { old: 2, new: 1 })
    );
}

const PETER_PUBLIC: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const PETER_PRIVATE: &str = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
const PETER_TEXT: &str =
    "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
const PETER_NOTE: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n\n\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

#[test]
fn signed_notes_match_go_sumdb_note() {
    let signer = NoteSigner::from_private_key(PETER_PRIVATE).unwrap();
    assert_eq!(signer.verifier().to_string(), PETER_PUBLIC, "the public key Go derives");
    assert_eq!(signer.sign(PETER_TEXT).unwrap(), PETER_NOTE, "Go's signature, byte for byte");
    let verifier = NoteVerifier::parse(PETER_PUBLIC).unwrap();
    assert_eq!(verifier.open(PETER_NOTE).unwrap(), PETER_TEXT);
    let altered = PETER_NOTE.replace("cryptography", "cryptographY");
    assert_eq!(verifier.open(&altered), Err(NoteError::BadSignature { name: "PeterNeumann".into() }));
}

#[test]
fn a_checkpoint_of_the_reference_tree_verifies_with_the_reference_key() {
    let signer = NoteSigner::from_private_key(PETER_PRIVATE).unwrap();
    let checkpoint = Checkpoint { origin: "PeterNeumann".into(), size: 8, root: h(ROOTS[8]) };
    let note = checkpoint.sign(&signer).unwrap();
    assert!(note.starts_with("PeterNeumann\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n\n"), "{note}");
    let verifier = NoteVerifier::parse(PETER_PUBLIC).unwrap();
    assert_eq!(Checkpoint::open(&note, &verifier).unwrap(), checkpoint);
}
