//! The operator's approval queue: a payment above the auto-approve limit waits here until the
//! operator approves or denies it (`signer approvals list | approve | deny`), or until its
//! time is up. Requests and decisions are durable, so a decision survives a restart and a
//! request repeated after one finds it.

use crate::error::Result;
use crate::store::{Records, Store};
use serde::{Deserialize, Serialize};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Where a payment stands with the operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Waiting for the operator.
    Pending,
    /// The operator approved it.
    Approved,
    /// The operator denied it.
    Denied,
}

/// A payment that needs the operator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// The payment hash (hex): what the operator names to decide.
    pub payment_hash: String,
    /// `invoice` or `keysend`.
    pub kind: String,
    /// The amount, if the request carries one.
    pub amount_msat: Option<u64>,
    /// The invoice, or the keysend destination.
    pub detail: String,
    /// The node paid, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    /// The invoice's description, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// When the node asked (unix seconds).
    pub requested_at: u64,
    /// The decision so far.
    pub decision: Decision,
    /// When the operator decided (unix seconds).
    pub decided_at: Option<u64>,
}

impl Approval {
    /// Whether a decision on `self` decides `other`: the same payment, kind, amount and
    /// destination. A request for the same hash with other terms is a new request.
    pub fn same_terms(&self, other: &Approval) -> bool {
        self.payment_hash == other.payment_hash
            && self.kind == other.kind
            && self.amount_msat == other.amount_msat
            && self.detail == other.detail
    }
}

/// Most requests waiting for the operator at once; a new one beyond it refuses the oldest.
pub const MAX_PENDING: usize = 256;

/// How long a decided or timed-out entry stays listed, seconds.
pub const KEPT_SECS: u64 = 7 * 86_400;

/// Wakes requests waiting for a decision, and tells watchers of new ones.
pub struct Approvals {
    lock: Mutex<()>,
    decided: Condvar,
    /// Every request newly queued (`signer approvals watch`, `--on-approval-request`).
    queued: tokio::sync::broadcast::Sender<Approval>,
}

impl Default for Approvals {
    fn default() -> Self {
        Approvals {
            lock: Mutex::new(()),
            decided: Condvar::new(),
            queued: tokio::sync::broadcast::channel(256).0,
        }
    }
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Approvals {
    /// New requests, as they are queued (a watcher that falls 256 behind misses some).
    pub fn watch(&self) -> tokio::sync::broadcast::Receiver<Approval> {
        self.queued.subscribe()
    }

    /// The decision recorded for `hash`, if the operator was ever asked.
    pub fn lookup(store: &Store, hash: &[u8; 32]) -> Result<Option<Approval>> {
        store.record(Records::Approvals, hash)
    }

    /// The operator's decision on exactly `a`'s terms, if there is one.
    pub fn decision_on(store: &Store, hash: &[u8; 32], a: &Approval) -> Result<Option<Decision>> {
        Ok(Approvals::lookup(store, hash)?
            .filter(|e| e.same_terms(a))
            .map(|e| e.decision))
    }

    /// Queues `a` (unless the operator already knows of it) and waits up to `timeout` for a
    /// decision. Returns the decision at the end of the wait (`Pending` on timeout).
    ///
    /// Runs outside any request transaction: the queue entry is committed at once so the
    /// operator can see it.
    pub fn ask(
        &self,
        store: &Store,
        hash: &[u8; 32],
        a: Approval,
        timeout: Duration,
    ) -> Result<Decision> {
        {
            let mut t = store.begin()?;
            match t.record::<Approval>(Records::Approvals, hash)? {
                Some(existing) if existing.same_terms(&a) => {
                    if existing.decision != Decision::Pending {
                        return Ok(existing.decision);
                    }
                }
                _ => {
                    prune(&mut t, a.requested_at)?;
                    log::warn!(
                        "payment {} ({} msat) waits for the operator: `signer approvals approve {}`",
                        a.payment_hash,
                        a.amount_msat.map_or("unknown".into(), |m| m.to_string()),
                        a.payment_hash
                    );
                    t.put_record(Records::Approvals, hash, &a)?;
                    t.commit()?;
                    // Nobody watching is no error.
                    let _ = self.queued.send(a.clone());
                }
            }
        }
        let deadline = Instant::now() + timeout;
        let mut guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            match Approvals::decision_on(store, hash, &a)? {
                Some(Decision::Pending) => {}
                Some(d) => return Ok(d),
                // Refused to make room for newer requests, or replaced by other terms.
                None => return Ok(Decision::Denied),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(Decision::Pending);
            }
            // Wake at least every second, in case a decision came from another process.
            let wait = left.min(Duration::from_secs(1));
            guard = self
                .decided
                .wait_timeout(guard, wait)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Records the operator's decision on `hash` and wakes whoever waits for it. Returns the
    /// updated entry, or `None` if no payment with this hash was ever queued.
    pub fn decide(
        &self,
        store: &Store,
        hash: &[u8; 32],
        approve: bool,
    ) -> Result<Option<Approval>> {
        let mut t = store.begin()?;
        let Some(mut a) = t.record::<Approval>(Records::Approvals, hash)? else {
            return Ok(None);
        };
        a.decision = if approve {
            Decision::Approved
        } else {
            Decision::Denied
        };
        a.decided_at = Some(now());
        t.put_record(Records::Approvals, hash, &a)?;
        t.commit()?;
        log::info!(
            "operator {} payment {}",
            if approve { "approved" } else { "denied" },
            a.payment_hash
        );
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.decided.notify_all();
        Ok(Some(a))
    }

    /// Every queued payment, newest first.
    ///
    /// Entries decided (or asked) more than [`KEPT_SECS`] ago are pruned whenever a new
    /// request is queued.
    pub fn list(store: &Store) -> Result<Vec<Approval>> {
        let mut v: Vec<Approval> = store
            .records::<Approval>(Records::Approvals)?
            .into_iter()
            .map(|(_, a)| a)
            .collect();
        v.sort_by_key(|a| std::cmp::Reverse(a.requested_at));
        Ok(v)
    }
}

/// Before a new request is queued: drops entries older than [`KEPT_SECS`], and while
/// [`MAX_PENDING`] requests wait, denies the oldest.
fn prune(t: &mut crate::store::Txn, now: u64) -> Result<()> {
    let all = t.records::<Approval>(Records::Approvals)?;
    let mut pending: Vec<(u64, Vec<u8>, Approval)> = Vec::new();
    for (key, a) in all {
        let last = a.decided_at.unwrap_or(a.requested_at);
        if last.saturating_add(KEPT_SECS) < now {
            t.remove_record(Records::Approvals, &key)?;
        } else if a.decision == Decision::Pending {
            pending.push((a.requested_at, key, a));
        }
    }
    pending.sort_by_key(|(at, _, _)| *at);
    let excess = (pending.len() + 1).saturating_sub(MAX_PENDING);
    for (_, key, mut a) in pending.into_iter().take(excess) {
        log::warn!(
            "payment {} refused unanswered: more than {MAX_PENDING} payments wait for the operator",
            a.payment_hash
        );
        a.decision = Decision::Denied;
        a.decided_at = Some(now);
        t.put_record(Records::Approvals, &key, &a)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(hash: u8, amount_msat: u64, at: u64) -> Approval {
        Approval {
            payment_hash: hex::encode([hash; 32]),
            kind: "keysend".into(),
            amount_msat: Some(amount_msat),
            detail: "02aa".into(),
            destination: Some("02aa".into()),
            description: None,
            requested_at: at,
            decision: Decision::Pending,
            decided_at: None,
        }
    }

    #[test]
    fn a_decision_covers_only_the_terms_decided() {
        let store = Store::temporary().unwrap();
        let q = Approvals::default();
        let t = Duration::ZERO;
        assert_eq!(
            q.ask(&store, &[1; 32], request(1, 1_000, now()), t)
                .unwrap(),
            Decision::Pending
        );
        q.decide(&store, &[1; 32], true).unwrap().unwrap();
        assert_eq!(
            q.ask(&store, &[1; 32], request(1, 1_000, now()), t)
                .unwrap(),
            Decision::Approved
        );
        // The same hash for more is a new request, pending until decided.
        let more = request(1, 5_000, now());
        assert_eq!(
            Approvals::decision_on(&store, &[1; 32], &more).unwrap(),
            None
        );
        assert_eq!(
            q.ask(&store, &[1; 32], more.clone(), t).unwrap(),
            Decision::Pending
        );
        assert_eq!(
            Approvals::decision_on(&store, &[1; 32], &more).unwrap(),
            Some(Decision::Pending)
        );
    }

    #[test]
    fn the_queue_is_capped_oldest_first_and_old_entries_pruned() {
        let store = Store::temporary().unwrap();
        let q = Approvals::default();
        let now = now();
        // An entry decided long ago goes when the next request is queued.
        q.ask(
            &store,
            &[0; 32],
            request(0, 1, now - KEPT_SECS - 10),
            Duration::ZERO,
        )
        .unwrap();
        for i in 1..=MAX_PENDING + 1 {
            let mut hash = [0u8; 32];
            hash[..8].copy_from_slice(&(i as u64).to_be_bytes());
            let mut a = request(0, 1, now + i as u64);
            a.payment_hash = hex::encode(hash);
            q.ask(&store, &hash, a, Duration::ZERO).unwrap();
        }
        let list = Approvals::list(&store).unwrap();
        assert_eq!(list.len(), MAX_PENDING + 1, "the stale entry was pruned");
        let pending = list
            .iter()
            .filter(|a| a.decision == Decision::Pending)
            .count();
        assert_eq!(
            pending, MAX_PENDING,
            "the oldest was refused for the newest"
        );
        let oldest = list.iter().min_by_key(|a| a.requested_at).unwrap();
        assert_eq!(oldest.decision, Decision::Denied);
    }
}
