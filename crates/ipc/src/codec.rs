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
