//! The preapproval cache: lightningd asks to preapprove the same invoice or keysend again and
//! again while a payment is attempted; an approval already given is answered here, without a
//! round trip, for a short time. Refusals are never cached (the operator may approve later).

use lru::LruCache;
use protocol::msgs::{PreapproveInvoiceReply, PreapproveKeysendReply};
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Request hash -> (when approved, the reply).
type Entries = LruCache<[u8; 32], (Instant, Vec<u8>)>;

/// Approved preapprovals by SHA-256 of the client's context and the raw request, each valid
/// for a TTL.
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

    /// The cache key of `message` from the client of `context` (`None`: lightningd's own fd).
    pub fn key(context: Option<&proto::hsmd::HsmRequestContext>, message: &[u8]) -> [u8; 32] {
        use bitcoin::hashes::{sha256, Hash, HashEngine};
        let mut e = sha256::Hash::engine();
        match context {
            None => e.input(&[0]),
            Some(c) => {
                e.input(&[1]);
                e.input(&(c.peer_id.len() as u64).to_be_bytes());
                e.input(&c.peer_id);
                e.input(&c.dbid.to_be_bytes());
                e.input(&c.capabilities.to_be_bytes());
            }
        }
        e.input(message);
        sha256::Hash::from_engine(e).to_byte_array()
    }

    /// Whether requests of this type are cached.
    pub fn applies_to(msg_type: u16) -> bool {
        protocol::facts(msg_type).preapproval
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

    #[test]
    fn one_clients_approval_is_not_anothers() {
        let ctx = |peer: u8, dbid, caps| proto::hsmd::HsmRequestContext {
            peer_id: vec![peer; 33],
            dbid,
            capabilities: caps,
        };
        let m = b"request";
        let master = PreapprovalCache::key(None, m);
        assert_eq!(master, PreapprovalCache::key(None, m));
        let keys = [
            master,
            PreapprovalCache::key(Some(&ctx(2, 1, 8)), m),
            PreapprovalCache::key(Some(&ctx(3, 1, 8)), m),
            PreapprovalCache::key(Some(&ctx(2, 2, 8)), m),
            PreapprovalCache::key(Some(&ctx(2, 1, 9)), m),
            PreapprovalCache::key(None, b"other"),
        ];
        let distinct: std::collections::HashSet<_> = keys.iter().collect();
        assert_eq!(distinct.len(), keys.len());
    }
}
