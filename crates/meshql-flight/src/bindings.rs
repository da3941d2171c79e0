//! Parameters bound to a prepared statement's original handle.
//!
//! Flight SQL answers DoPut (bind parameters) with a new handle that carries the values, and
//! meshql's handles are self-contained (sealed), so any replica can run them. Some clients —
//! flightsql-dbapi, and with it SQLAlchemy and Superset, and older drivers — ignore the returned
//! handle and execute the one they created. For them the server also remembers the last values
//! bound to each handle, in bounded memory ([`MAX_BINDINGS`] handles, [`MAX_BOUND_BYTES`] in all,
//! the oldest forgotten first, each until its handle expires). Those values live on the replica
//! that received them: such clients need a sticky connection to one replica.

use std::collections::HashMap;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

/// Handles whose bound values are remembered at once.
pub const MAX_BINDINGS: usize = 10_000;

/// Bytes of bound values remembered, all handles together.
pub const MAX_BOUND_BYTES: usize = 16 << 20;

#[derive(Debug)]
struct Bound {
    values: Vec<u8>,
    expires_at: i64,
    seq: u64,
}

/// The last values bound to each prepared statement handle.
#[derive(Debug, Default)]
pub struct Bindings {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    by_handle: HashMap<[u8; 32], Bound>,
    bytes: usize,
    seq: u64,
}

fn key(handle: &[u8]) -> [u8; 32] {
    Sha256::digest(handle).into()
}

impl Bindings {
    /// Remembers `values` (Arrow IPC) as bound to `handle` until `expires_at` (Unix seconds).
    /// Values larger than the whole budget are not remembered.
    pub fn bind(&self, handle: &[u8], values: Vec<u8>, expires_at: i64, now: i64) {
        if values.len() > MAX_BOUND_BYTES {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.seq += 1;
        let seq = inner.seq;
        let size = values.len();
        if let Some(old) = inner.by_handle.insert(
            key(handle),
            Bound {
                values,
                expires_at,
                seq,
            },
        ) {
            inner.bytes -= old.values.len();
        }
        inner.bytes += size;
        if inner.by_handle.len() > MAX_BINDINGS || inner.bytes > MAX_BOUND_BYTES {
            let before = inner.by_handle.len();
            inner.by_handle.retain(|_, b| b.expires_at > now);
            if inner.by_handle.len() != before {
                inner.bytes = inner.by_handle.values().map(|b| b.values.len()).sum();
            }
        }
        while inner.by_handle.len() > MAX_BINDINGS || inner.bytes > MAX_BOUND_BYTES {
            let Some(oldest) = inner.by_handle.iter().min_by_key(|(_, b)| b.seq).map(|(k, _)| *k) else {
                break;
            };
            if let Some(b) = inner.by_handle.remove(&oldest) {
                inner.bytes -= b.values.len();
            }
        }
    }

    /// The values last bound to `handle`, if remembered and not expired.
    pub fn bound(&self, handle: &[u8], now: i64) -> Option<Vec<u8>> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner
            .by_handle
            .get(&key(handle))
            .filter(|b| b.expires_at > now)
            .map(|b| b.values.clone())
    }

    /// Forgets the values bound to `handle` (the statement was closed).
    pub fn forget(&self, handle: &[u8]) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = inner.by_handle.remove(&key(handle)) {
            inner.bytes -= b.values.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_values_are_remembered_within_bounds_and_until_expiry() {
        let b = Bindings::default();
        b.bind(b"h1", vec![1], 100, 0);
        b.bind(b"h1", vec![2, 2], 100, 0);
        assert_eq!(b.bound(b"h1", 50), Some(vec![2, 2]));
        assert_eq!(b.bound(b"h1", 100), None, "expired");
        assert_eq!(b.bound(b"h2", 0), None);
        b.forget(b"h1");
        assert_eq!(b.bound(b"h1", 0), None);
        // The budget: the oldest go first.
        let big = MAX_BOUND_BYTES / 3 + 1;
        for h in 0..4u8 {
            b.bind(&[h], vec![0; big], 100, 0);
        }
        assert_eq!(b.bound(&[0], 0), None);
        assert_eq!(b.bound(&[1], 0), None);
        assert!(b.bound(&[2], 0).is_some() && b.bound(&[3], 0).is_some());
        for h in 0..(MAX_BINDINGS as u32 + 5) {
            b.bind(&h.to_le_bytes(), vec![1], 100, 0);
        }
        let inner = b.inner.lock().unwrap();
        assert!(inner.by_handle.len() <= MAX_BINDINGS);
        assert!(inner.bytes <= MAX_BOUND_BYTES);
    }
}
