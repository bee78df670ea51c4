//! The preapproval cache: lightningd asks to preapprove the same invoice or keysend again and
//! again while a payment is attempted; an approval already given is answered here, without a
//! round trip, for a short time. Refusals are never cached (the operator may approve later).

use lru::LruCache;
use protocol::msgs::{
    PreapproveInvoice, PreapproveInvoiceCheck, PreapproveInvoiceReply, PreapproveKeysend,
    PreapproveKeysendCheck, PreapproveKeysendReply,
};
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Request hash -> (when approved, the reply).
type Entries = LruCache<[u8; 32], (Instant, Vec<u8>)>;

/// Approved preapprovals by SHA-256 of the raw request, each valid for a TTL.
pub struct PreapprovalCache {
    entries: Option<Mutex<Entries>>,
    ttl: Duration,
}

impl PreapprovalCache {
    /// A cache of `capacity` entries (0 disables it) valid for `ttl`.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        PreapprovalCache {
            entries: NonZeroUsize::new(capacity).map(|c| Mutex::new(LruCache::new(c))),
            ttl,
        }
    }

    /// Whether requests of this type are cached.
    pub fn applies_to(msg_type: u16) -> bool {
        matches!(
            msg_type,
            PreapproveInvoice::TYPE
                | PreapproveKeysend::TYPE
                | PreapproveInvoiceCheck::TYPE
                | PreapproveKeysendCheck::TYPE
        )
    }

    /// Whether `reply` approves.
    pub fn is_approval(reply: &[u8]) -> bool {
        PreapproveInvoiceReply::decode(reply)
            .map(|r| r.approved)
            .unwrap_or(false)
            || PreapproveKeysendReply::decode(reply)
                .map(|r| r.approved)
                .unwrap_or(false)
    }

    /// The cached reply for this request hash, if still fresh.
    pub fn get(&self, key: &[u8; 32]) -> Option<Vec<u8>> {
        let mut c = self
            .entries
            .as_ref()?
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match c.get(key) {
            Some((at, reply)) if at.elapsed() < self.ttl => Some(reply.clone()),
            Some(_) => {
                c.pop(key);
                None
            }
            None => None,
        }
    }

    /// Remembers an approval.
    pub fn put(&self, key: [u8; 32], reply: Vec<u8>) {
        if let Some(c) = &self.entries {
            c.lock()
                .unwrap_or_else(|p| p.into_inner())
                .put(key, (Instant::now(), reply));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn approvals_only_within_ttl_and_capacity() {
        let yes = PreapproveInvoiceReply::new(true).encode().unwrap();
        let no = PreapproveInvoiceReply::new(false).encode().unwrap();
        assert!(PreapprovalCache::is_approval(&yes));
        assert!(!PreapprovalCache::is_approval(&no));
        let c = PreapprovalCache::new(2, Duration::from_millis(50));
        c.put([1; 32], yes.clone());
        c.put([2; 32], yes.clone());
        c.put([3; 32], yes.clone());
        assert_eq!(c.get(&[1; 32]), None, "evicted");
        assert_eq!(c.get(&[3; 32]), Some(yes));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(c.get(&[3; 32]), None, "expired");
        assert!(PreapprovalCache::new(0, Duration::from_secs(1))
            .get(&[3; 32])
            .is_none());
    }
}
