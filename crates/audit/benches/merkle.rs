//! The audit core on one core, against a baseline measured in the same run: the tree head of
//! N entries against hashing the same N entries once (the tree hashes about twice: N leaves
//! and N − 1 nodes); an inclusion and a consistency proof built and verified at N; a
//! checkpoint signed and verified. Run with `cargo bench -p sm-audit --bench merkle`
//! (`SM_BENCH_ENTRIES`, default 1,000,000).
//!
//! Building a proof here walks the whole sequence (the pure functions take every leaf hash);
//! the audit store keeps complete subtrees so that a proof reads O(log N) of them.

use sha2::{Digest, Sha256};
use sm_audit::{Checkpoint, NoteSigner, NoteVerifier, consistency_proof, inclusion_proof, leaf_hash, root};
use std::hint::black_box;
use std::time::Instant;

fn best_of<R>(runs: usize, mut f: impl FnMut() -> R) -> f64 {
    (0..runs)
        .map(|_| {
            let started = Instant::now();
            black_box(f());
            started.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let n: usize = std::env::var("SM_BENCH_ENTRIES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    // Entries about the size of an audit entry's canonical bytes.
    let entries: Vec<Vec<u8>> =
        (0..n).map(|i| format!("sm.workorders.v1/3/{i}/{:064x}", i * 7919).into_bytes()).collect();

    let sha = best_of(3, || entries.iter().map(|e| Sha256::digest(e)[0]).fold(0u8, |a, b| a ^ b));
    let mut leaves = Vec::new();
    let hashing = best_of(3, || {
        leaves = entries.iter().map(|e| leaf_hash(e)).collect::<Vec<_>>();
    });
    let head_secs = best_of(3, || root(&leaves));
    let head = root(&leaves);
    let index = (n / 3) as u64;
    let inclusion = best_of(3, || inclusion_proof(&leaves, index).unwrap());
    let proof = inclusion_proof(&leaves, index).unwrap();
    let verify = best_of(5, || sm_audit::verify_inclusion(index, n as u64, &leaves[index as usize], &proof, &head));
    let old = n as u64 / 2 + 1;
    let consistency = best_of(3, || consistency_proof(&leaves, old).unwrap());
    let signer = NoteSigner::new("bench.example/audit", [3; 32]).unwrap();
    let verifier: NoteVerifier = signer.verifier();
    let checkpoint = Checkpoint { origin: "bench.example/audit".into(), size: n as u64, root: head };
    let sign = best_of(100, || checkpoint.sign(&signer).unwrap());
    let note = checkpoint.sign(&signer).unwrap();
    let open = best_of(100, || Checkpoint::open(&note, &verifier).unwrap());

    println!("cores: {}", std::thread::available_parallelism().map_or(0, |p| p.get()));
    println!("entries: {n} ({} bytes each)", entries[0].len());
    println!("baseline SHA-256 of every entry:   {:8.1} ms ({:.2} M/s)", sha * 1e3, n as f64 / sha / 1e6);
    println!("leaf hashes (0x00 prefix):         {:8.1} ms ({:.2} M/s)", hashing * 1e3, n as f64 / hashing / 1e6);
    println!(
        "tree head from leaf hashes:        {:8.1} ms ({:.2} M leaves/s)",
        head_secs * 1e3,
        n as f64 / head_secs / 1e6
    );
    println!("ratio (leaf hashes + head) / SHA-256 baseline: {:.2}", (hashing + head_secs) / sha);
    println!("inclusion proof, built from all leaves: {:8.1} ms ({} hashes)", inclusion * 1e3, proof.len());
    println!("inclusion proof verified:          {:8.1} µs", verify * 1e6);
    println!("consistency proof {old} → {n}, built: {:8.1} ms", consistency * 1e3);
    println!("checkpoint signed:                 {:8.1} µs", sign * 1e6);
    println!("checkpoint verified:               {:8.1} µs", open * 1e6);
}
