//! The audit log's core, pure and small: the Merkle tree of Certificate Transparency
//! (RFC 6962 §2.1, with the proof verification of RFC 9162 §2.1.3–2.1.4) over an append-only
//! sequence of entries, and checkpoints (origin, size, root) signed as C2SP signed notes, the
//! format Go's sumdb, Sigstore's Rekor and Tessera logs use, so any of their verifiers can
//! check ours.
//!
//! Tested against the published vectors of transparency-dev/merkle (`testonly/constants.go`,
//! `proof/verify_test.go`) and the signed note of golang.org/x/mod's `sumdb/note` (see
//! `tests/vectors.rs`).

pub mod merkle;
pub mod note;

pub use merkle::{
    EMPTY_ROOT, Hash, ProofError, consistency_proof, inclusion_proof, leaf_hash, node_hash, root, verify_consistency,
    verify_inclusion,
};
pub use note::{Checkpoint, NoteError, NoteSigner, NoteVerifier};
