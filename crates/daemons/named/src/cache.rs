//! The answer cache udp.rs fills and reads (what is kept, and how answers
//! are patched for later askers, is described there). It is its own module
//! because the served state owns one (serve.rs) and udp.rs uses both.

use std::collections::HashMap;
use std::sync::RwLock;

/// At most this many answers are kept per configuration (a flood of random
/// names cannot grow it further).
const CACHE_LIMIT: usize = 100_000;

/// Encoded answers by question.
#[derive(Default)]
pub(crate) struct AnswerCache {
    map: RwLock<HashMap<Vec<u8>, Box<[u8]>>>,
}

impl AnswerCache {
    /// A copy of the answer kept for `key` (copied under the lock: no
    /// reference count shared between threads is touched).
    pub(crate) fn copy(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .map(|a| a.to_vec())
    }

    pub(crate) fn put(&self, key: Vec<u8>, answer: &[u8]) {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        if map.len() < CACHE_LIMIT {
            map.insert(key, answer.into());
        }
    }
}
