//! Checkpoints as C2SP signed notes (<https://c2sp.org/signed-note>,
//! <https://c2sp.org/tlog-checkpoint>): the text `origin\nsize\nbase64(root)\n`, a blank line,
//! then `— <key name> base64(key id || Ed25519 signature)`. The key id is the first four bytes
//! of `SHA-256(name || "\n" || 0x01 || public key)`; keys are written as Go's `sumdb/note`
//! writes them (`name+<id hex>+base64(0x01 || key)`, the private one after `PRIVATE+KEY+`),
//! so its tools and ours read each other's keys and notes.

use crate::Hash;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

/// The signature algorithm byte of Ed25519 in signed-note keys.
const ALG_ED25519: u8 = 1;
/// What starts every signature line (an em dash and a space).
const SIGNATURE_PREFIX: &str = "\u{2014} ";

/// Why a key, a note or a checkpoint was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("malformed key: {0} (want name+<8 hex digits>+<base64>, as `smctl audit keygen` writes)")]
    MalformedKey(&'static str),
    #[error("malformed note: {0}")]
    MalformedNote(&'static str),
    #[error("malformed checkpoint: {0} (want origin, tree size and base64 root hash, one per line)")]
    MalformedCheckpoint(&'static str),
    #[error("the note has no signature by {name} with key id {id}: signed by another key")]
    NotSignedBy { name: String, id: String },
    #[error("the signature by {name} does not verify: the note was altered")]
    BadSignature { name: String },
}

fn key_id(name: &str, public: &VerifyingKey) -> [u8; 4] {
    let mut hasher = Sha256::new();
    hasher.update(name.as_bytes());
    hasher.update([b'\n', ALG_ED25519]);
    hasher.update(public.as_bytes());
    let digest = hasher.finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

fn check_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty() || name.contains(|c: char| c == '+' || c.is_whitespace()) {
        return Err(NoteError::MalformedKey("the name must be non-empty, without '+' or white space"));
    }
    Ok(())
}

/// `name`, key id and the algorithm-tagged key bytes of a key string.
fn parse_key(text: &str) -> Result<(&str, [u8; 4], [u8; 32]), NoteError> {
    let mut parts = text.trim().splitn(3, '+');
    let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(NoteError::MalformedKey("three '+'-separated parts expected"));
    };
    check_name(name)?;
    let id: [u8; 4] = hex::decode(id)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or(NoteError::MalformedKey("the key id is not 8 hex digits"))?;
    let key = BASE64.decode(key).map_err(|_| NoteError::MalformedKey("the key is not base64"))?;
    match key.split_first() {
        Some((&ALG_ED25519, bytes)) if bytes.len() == 32 => Ok((name, id, bytes.try_into().unwrap())),
        Some((&ALG_ED25519, _)) => Err(NoteError::MalformedKey("an Ed25519 key is 32 bytes")),
        _ => Err(NoteError::MalformedKey("not an Ed25519 key (algorithm byte 1)")),
    }
}

/// Signs notes as `name`.
pub struct NoteSigner {
    name: String,
    key: SigningKey,
    id: [u8; 4],
}

impl std::fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoteSigner").field("name", &self.name).field("key", &"***").finish()
    }
}

impl NoteSigner {
    /// A signer named `name` with the Ed25519 private key `seed`.
    pub fn new(name: &str, seed: [u8; 32]) -> Result<Self, NoteError> {
        check_name(name)?;
        let key = SigningKey::from_bytes(&seed);
        let id = key_id(name, &key.verifying_key());
        Ok(Self { name: name.to_owned(), key, id })
    }

    /// From `PRIVATE+KEY+<name>+<id>+<base64(0x01 || seed)>`; the id must match.
    pub fn from_private_key(text: &str) -> Result<Self, NoteError> {
        let rest = text
            .trim()
            .strip_prefix("PRIVATE+KEY+")
            .ok_or(NoteError::MalformedKey("a private key starts with PRIVATE+KEY+"))?;
        let (name, id, seed) = parse_key(rest)?;
        let signer = Self::new(name, seed)?;
        if signer.id != id {
            return Err(NoteError::MalformedKey("the key id does not match the key"));
        }
        Ok(signer)
    }

    /// The private key in the text form [`Self::from_private_key`] reads. A secret.
    pub fn private_key(&self) -> String {
        let mut bytes = vec![ALG_ED25519];
        bytes.extend_from_slice(self.key.as_bytes());
        format!("PRIVATE+KEY+{}+{}+{}", self.name, hex::encode(self.id), BASE64.encode(bytes))
    }

    /// The public half, to give to whoever verifies.
    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier { name: self.name.clone(), key: self.key.verifying_key(), id: self.id }
    }

    /// `text` (which must end with a newline and hold no blank line) as a note signed by
    /// this key.
    pub fn sign(&self, text: &str) -> Result<String, NoteError> {
        if !text.ends_with('\n') {
            return Err(NoteError::MalformedNote("the text must end with a newline"));
        }
        if text.contains("\n\n") || text.starts_with('\n') {
            return Err(NoteError::MalformedNote("the text must not hold a blank line"));
        }
        let signature = self.key.sign(text.as_bytes());
        let mut blob = self.id.to_vec();
        blob.extend_from_slice(&signature.to_bytes());
        Ok(format!("{text}\n{SIGNATURE_PREFIX}{} {}\n", self.name, BASE64.encode(blob)))
    }
}

/// Checks notes signed by one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    key: VerifyingKey,
    id: [u8; 4],
}

impl NoteVerifier {
    /// From `<name>+<id>+<base64(0x01 || public key)>`; the id must match.
    pub fn parse(text: &str) -> Result<Self, NoteError> {
        let (name, id, key) = parse_key(text)?;
        let key = VerifyingKey::from_bytes(&key).map_err(|_| NoteError::MalformedKey("not a valid Ed25519 point"))?;
        if key_id(name, &key) != id {
            return Err(NoteError::MalformedKey("the key id does not match the key"));
        }
        Ok(Self { name: name.to_owned(), key, id })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The text of `note` if this key signed it (other signatures are ignored).
    pub fn open<'n>(&self, note: &'n str) -> Result<&'n str, NoteError> {
        let split = note.rfind("\n\n").ok_or(NoteError::MalformedNote("no blank line before the signatures"))?;
        let (text, signatures) = (&note[..split + 1], &note[split + 2..]);
        if !signatures.ends_with('\n') {
            return Err(NoteError::MalformedNote("the signatures must end with a newline"));
        }
        for line in signatures.lines() {
            let line = line
                .strip_prefix(SIGNATURE_PREFIX)
                .ok_or(NoteError::MalformedNote("a signature line starts with '— '"))?;
            let (name, blob) =
                line.split_once(' ').ok_or(NoteError::MalformedNote("a signature line is '— <name> <base64>'"))?;
            let blob = BASE64.decode(blob).map_err(|_| NoteError::MalformedNote("a signature is not base64"))?;
            if name != self.name || blob.len() < 4 || blob[..4] != self.id {
                continue;
            }
            let signature = Signature::from_slice(&blob[4..])
                .map_err(|_| NoteError::MalformedNote("an Ed25519 signature is 64 bytes"))?;
            return self
                .key
                .verify(text.as_bytes(), &signature)
                .map(|()| text)
                .map_err(|_| NoteError::BadSignature { name: self.name.clone() });
        }
        Err(NoteError::NotSignedBy { name: self.name.clone(), id: hex::encode(self.id) })
    }
}

impl std::fmt::Display for NoteVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut bytes = vec![ALG_ED25519];
        bytes.extend_from_slice(self.key.as_bytes());
        write!(f, "{}+{}+{}", self.name, hex::encode(self.id), BASE64.encode(bytes))
    }
}

/// A signed statement of the log's state: it had `size` entries and `root` was their tree
/// head. Anyone holding the public key can later demand a consistency proof to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's name (by convention the signing key's name).
    pub origin: String,
    pub size: u64,
    pub root: Hash,
}

impl Checkpoint {
    /// The note text: `origin\nsize\nbase64(root)\n`.
    pub fn body(&self) -> String {
        format!("{}\n{}\n{}\n", self.origin, self.size, BASE64.encode(self.root))
    }

    /// The checkpoint as a note signed by `signer`.
    pub fn sign(&self, signer: &NoteSigner) -> Result<String, NoteError> {
        if self.origin.is_empty() || self.origin.contains('\n') {
            return Err(NoteError::MalformedCheckpoint("the origin must be one non-empty line"));
        }
        signer.sign(&self.body())
    }

    /// The checkpoint of a note, once `verifier` confirmed its signature.
    pub fn open(note: &str, verifier: &NoteVerifier) -> Result<Self, NoteError> {
        Self::parse(verifier.open(note)?)
    }

    /// Reads a checkpoint's text (extension lines after the root are allowed and ignored).
    pub fn parse(text: &str) -> Result<Self, NoteError> {
        let mut lines = text.split('\n');
        let origin = lines.next().filter(|l| !l.is_empty()).ok_or(NoteError::MalformedCheckpoint("no origin"))?;
        let size = lines.next().ok_or(NoteError::MalformedCheckpoint("no tree size"))?;
        // Decimal without sign or leading zeros, as the format requires.
        if size.is_empty() || !size.bytes().all(|b| b.is_ascii_digit()) || (size.len() > 1 && size.starts_with('0')) {
            return Err(NoteError::MalformedCheckpoint("the tree size is not a decimal number"));
        }
        let size = size.parse().map_err(|_| NoteError::MalformedCheckpoint("the tree size is too large"))?;
        let root = lines.next().ok_or(NoteError::MalformedCheckpoint("no root hash"))?;
        let root: Hash = BASE64
            .decode(root)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or(NoteError::MalformedCheckpoint("the root hash is not 32 bytes of base64"))?;
        Ok(Self { origin: origin.to_owned(), size, root })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> NoteSigner {
        NoteSigner::new("audit.example/acme", [7; 32]).unwrap()
    }

    #[test]
    fn a_checkpoint_round_trips_and_any_change_breaks_its_signature() {
        let checkpoint = Checkpoint { origin: "audit.example/acme".into(), size: 42, root: [9; 32] };
        let note = checkpoint.sign(&signer()).unwrap();
        let verifier = signer().verifier();
        assert_eq!(Checkpoint::open(&note, &verifier).unwrap(), checkpoint);
        let grown = note.replacen("\n42\n", "\n43\n", 1);
        assert_eq!(Checkpoint::open(&grown, &verifier), Err(NoteError::BadSignature { name: verifier.name().into() }));
        let other = NoteSigner::new("audit.example/acme", [8; 32]).unwrap().verifier();
        assert!(matches!(Checkpoint::open(&note, &other), Err(NoteError::NotSignedBy { .. })));
    }

    #[test]
    fn keys_round_trip_through_their_text_forms() {
        let signer = signer();
        let again = NoteSigner::from_private_key(&signer.private_key()).unwrap();
        assert_eq!(again.verifier(), signer.verifier());
        assert_eq!(NoteVerifier::parse(&signer.verifier().to_string()).unwrap(), signer.verifier());
        let wrong_id = signer.verifier().to_string().replacen('+', "+0", 1);
        assert!(NoteVerifier::parse(&wrong_id).is_err());
        assert!(NoteSigner::new("two words", [1; 32]).is_err());
    }

    #[test]
    fn malformed_checkpoints_say_what_is_wrong() {
        for (text, reason) in [
            ("\n1\nAAAA\n", "no origin"),
            ("log\n01\nAAAA\n", "decimal"),
            ("log\n-1\nAAAA\n", "decimal"),
            ("log\n1\nAAAA\n", "32 bytes"),
        ] {
            let error = Checkpoint::parse(text).unwrap_err().to_string();
            assert!(error.contains(reason), "{text:?}: {error}");
        }
    }
}
