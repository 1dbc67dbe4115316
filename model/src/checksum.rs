//! The checksum every file of our own formats ends with (model files, weight packs): the
//! 8-byte tag `OVSEGCRC` and the little-endian CRC-32 of everything before it. A flipped or
//! missing byte anywhere is an error naming the file, never a silently different model.
//!
//! Files written before the trailer existed (model format 1, pack format 1) carry none and
//! still load; from model format 2 and pack format 2 on, a reader that finds no trailer refuses
//! the file as truncated (docs/formats.md).

use crate::error::OvsegError;

const TAG: &[u8; 8] = b"OVSEGCRC";
/// Bytes the trailer adds.
pub const TRAILER_LEN: usize = TAG.len() + 4;

/// Whether a file checked by [`open`] carried a trailer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sealed {
    /// It did, and its CRC-32 matched.
    Verified,
    /// It had none (a file from before the trailer, or one cut short).
    Absent,
}

/// Appends the trailer to `bytes`.
pub fn seal(bytes: &mut Vec<u8>) {
    let crc = crc32fast::hash(bytes);
    bytes.extend_from_slice(TAG);
    bytes.extend_from_slice(&crc.to_le_bytes());
}

/// Checks and removes the trailer, if `bytes` end with one. A trailer whose CRC-32 does not
/// match the bytes before it is an error naming `origin`.
pub fn open(bytes: &mut Vec<u8>, origin: &str) -> Result<Sealed, OvsegError> {
    let sealed = check(bytes, origin)?;
    if sealed == Sealed::Verified {
        bytes.truncate(bytes.len() - TRAILER_LEN);
    }
    Ok(sealed)
}

/// [`open`] without removing the trailer: whether `bytes` carry one, an error when its CRC-32
/// does not match.
pub fn check(bytes: &[u8], origin: &str) -> Result<Sealed, OvsegError> {
    let Some(start) = bytes.len().checked_sub(TRAILER_LEN) else {
        return Ok(Sealed::Absent);
    };
    if &bytes[start..start + TAG.len()] != TAG {
        return Ok(Sealed::Absent);
    }
    let stored = u32::from_le_bytes(bytes[start + TAG.len()..].try_into().expect("4 bytes"));
    let actual = crc32fast::hash(&bytes[..start]);
    if stored != actual {
        return Err(OvsegError::Checkpoint {
            path: origin.into(),
            message: format!(
                "checksum mismatch (CRC-32 {actual:08x}, the file says {stored:08x}): the file is \
                 damaged; download or export it again"
            ),
        });
    }
    Ok(Sealed::Verified)
}

/// The error for a file whose format promises a trailer that is not there.
pub fn missing(origin: &str) -> OvsegError {
    OvsegError::Checkpoint {
        path: origin.into(),
        message: "its checksum trailer is missing: the file is truncated or damaged".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_bytes_open_to_themselves_and_any_flip_is_caught() {
        let original: Vec<u8> = (0..200u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut sealed = original.clone();
        seal(&mut sealed);
        assert_eq!(sealed.len(), original.len() + TRAILER_LEN);
        let mut opened = sealed.clone();
        assert_eq!(open(&mut opened, "m").unwrap(), Sealed::Verified);
        assert_eq!(opened, original);
        for at in [0, 57, original.len() - 1, original.len() + 9] {
            let mut damaged = sealed.clone();
            damaged[at] ^= 0x10;
            let e = open(&mut damaged, "m.mpk").unwrap_err().to_string();
            assert!(e.starts_with("checkpoint m.mpk: checksum mismatch"), "{e}");
        }
        // Without a trailer (an old file, or the tag itself damaged): nothing is removed.
        let mut old = original.clone();
        assert_eq!(open(&mut old, "m").unwrap(), Sealed::Absent);
        assert_eq!(old, original);
        let mut short = b"OVSEG".to_vec();
        assert_eq!(open(&mut short, "m").unwrap(), Sealed::Absent);
    }
}
