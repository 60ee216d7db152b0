//! The one place that knows how messages become bytes (bincode 2, serde).
//!
//! Decoding is strict: the whole frame must be one message, and the decoder's
//! own allocation limit is the frame size, so a hostile length inside a frame
//! cannot make it allocate more than the frame.

use crate::Error;
use serde::{de::DeserializeOwned, Serialize};

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<{ crate::DEFAULT_MAX_FRAME * 4 }>()
}

/// Encodes one message.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, Error> {
    bincode::serde::encode_to_vec(msg, config()).map_err(|e| Error::Decode(e.to_string()))
}

/// Decodes exactly one message from `bytes`.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let (msg, used) = bincode::serde::decode_from_slice(bytes, config())
        .map_err(|e| Error::Decode(e.to_string()))?;
    if used != bytes.len() {
        return Err(Error::Decode(format!(
            "{} trailing bytes after the message",
            bytes.len() - used
        )));
    }
    Ok(msg)
}

/// Writes one frame (4-byte big-endian length, then the message) to a
/// blocking stream: how sendmail hands postdrop the envelope over a pipe.
pub fn write_frame<T: Serialize>(w: &mut impl std::io::Write, msg: &T) -> Result<(), Error> {
    let bytes = encode(msg)?;
    let len = u32::try_from(bytes.len()).map_err(|_| Error::TooLarge {
        len: bytes.len(),
        max: u32::MAX as usize,
    })?;
    w.write_all(&len.to_be_bytes())?;
    w.write_all(&bytes)?;
    Ok(())
}

/// Reads one frame of at most `max` bytes from a blocking stream.
pub fn read_frame<T: DeserializeOwned>(r: &mut impl std::io::Read, max: usize) -> Result<T, Error> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(Error::TooLarge { len, max });
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf)?;
    decode(&buf)
}
