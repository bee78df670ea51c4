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
    /// For a request without an amount (an amountless invoice), the most the operator
    /// approved it for: its HTLCs may carry no more, routing fees aside.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_msat: Option<u64>,
}

/// What the operator decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Approve; `amount_msat` bounds a request that carries no amount (required there), and
    /// must equal the amount of one that does.
    Approve {
        /// The most the payment may carry.
        amount_msat: Option<u64>,
    },
    /// Deny.
    Deny,
}

/// Why a decision was not recorded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecideError {
    /// No payment with this hash was ever queued.
    #[error("no payment {0} waits for a decision")]
    Unknown(String),
    /// An amountless request approved without saying for how much.
    #[error("payment {0} has no amount: approve it with --amount-msat, the most it may carry")]
    AmountNeeded(String),
    /// An amount given that is not the request's.
    #[error("payment {hash} is for {asked} msat, not {given} msat")]
    OtherAmount {
        /// The payment hash.
        hash: String,
        /// The request's amount.
        asked: u64,
        /// The amount the operator named.
        given: u64,
    },
    /// The store failed.
    #[error(transparent)]
    Signer(#[from] crate::error::SignerError),
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
    /// Counts the decisions taken: wakes the requests the daemon parked.
    decisions: tokio::sync::watch::Sender<u64>,
}

impl Default for Approvals {
    fn default() -> Self {
        Approvals {
            lock: Mutex::new(()),
            decided: Condvar::new(),
            queued: tokio::sync::broadcast::channel(256).0,
            decisions: tokio::sync::watch::channel(0).0,
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
    /// Changes with every decision taken from now on.
    pub fn decisions(&self) -> tokio::sync::watch::Receiver<u64> {
        self.decisions.subscribe()
    }

    /// New requests, as they are queued (a watcher that falls 256 behind misses some).
    pub fn watch(&self) -> tokio::sync::broadcast::Receiver<Approval> {
        self.queued.subscribe()
    }

    /// The decision recorded for `hash`, if the operator was ever asked.
    pub fn lookup(store: &Store, hash: &[u8; 32]) -> Result<Option<Approval>> {
        store.record(Records::Approvals, hash)
    }

    /// The operator's entry on exactly `a`'s terms, if there is one (its `decision` may still
    /// be pending).
    pub fn decision_on(store: &Store, hash: &[u8; 32], a: &Approval) -> Result<Option<Approval>> {
        Ok(Approvals::lookup(store, hash)?.filter(|e| e.same_terms(a)))
    }

    /// Queues `a` unless the operator already knows of it, and returns the entry on its
    /// terms (decided, or pending).
    ///
    /// Runs outside any request transaction: the queue entry is committed at once so the
    /// operator can see it.
    pub fn queue(&self, store: &Store, hash: &[u8; 32], a: Approval) -> Result<Approval> {
        let mut t = store.begin()?;
        match t.record::<Approval>(Records::Approvals, hash)? {
            Some(existing) if existing.same_terms(&a) => Ok(existing),
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
                Ok(a)
            }
        }
    }

    /// Queues `a` (see [`Approvals::queue`]) and waits up to `timeout` for a decision, holding
    /// the calling thread: for callers of [`crate::Signer::handle`] that want the answer in
    /// one call. The daemon parks such a request instead (see `lanes`). Returns the entry at
    /// the end of the wait (still pending on timeout; denied if it was dropped from the
    /// queue).
    pub fn ask(
        &self,
        store: &Store,
        hash: &[u8; 32],
        a: Approval,
        timeout: Duration,
    ) -> Result<Approval> {
        let queued = self.queue(store, hash, a)?;
        if queued.decision != Decision::Pending {
            return Ok(queued);
        }
        let deadline = Instant::now() + timeout;
        let mut guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            match Approvals::decision_on(store, hash, &queued)? {
                Some(e) if e.decision == Decision::Pending => {}
                Some(e) => return Ok(e),
                // Refused to make room for newer requests, or replaced by other terms.
                None => {
                    return Ok(Approval {
                        decision: Decision::Denied,
                        ..queued
                    })
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(queued);
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
    /// updated entry.
    ///
    /// # Errors
    /// [`DecideError`]: no such payment, an amountless one approved without an amount, an
    /// amount other than the request's, or the store's failure.
    pub fn decide(
        &self,
        store: &Store,
        hash: &[u8; 32],
        verdict: Verdict,
    ) -> std::result::Result<Approval, DecideError> {
        let mut t = store.begin()?;
        let Some(mut a) = t.record::<Approval>(Records::Approvals, hash)? else {
            return Err(DecideError::Unknown(hex::encode(hash)));
        };
        let approve = match verdict {
            Verdict::Deny => false,
            Verdict::Approve { amount_msat } => {
                match (a.amount_msat, amount_msat) {
                    (None, None) => return Err(DecideError::AmountNeeded(a.payment_hash)),
                    (Some(asked), Some(given)) if asked != given => {
                        return Err(DecideError::OtherAmount {
                            hash: a.payment_hash,
                            asked,
                            given,
                        })
                    }
                    (None, Some(given)) => a.approved_msat = Some(given),
                    (Some(_), _) => {}
                }
                true
            }
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
        self.decisions.send_modify(|n| *n = n.wrapping_add(1));
        Ok(a)
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
            approved_msat: None,
        }
    }

    const APPROVE: Verdict = Verdict::Approve { amount_msat: None };

    #[test]
    fn a_decision_covers_only_the_terms_decided() {
        let store = Store::temporary().unwrap();
        let q = Approvals::default();
        let t = Duration::ZERO;
        let decision = |a: Result<Approval>| a.unwrap().decision;
        assert_eq!(
            decision(q.ask(&store, &[1; 32], request(1, 1_000, now()), t)),
            Decision::Pending
        );
        q.decide(&store, &[1; 32], APPROVE).unwrap();
        assert_eq!(
            decision(q.ask(&store, &[1; 32], request(1, 1_000, now()), t)),
            Decision::Approved
        );
        // The same hash for more is a new request, pending until decided.
        let more = request(1, 5_000, now());
        assert_eq!(
            Approvals::decision_on(&store, &[1; 32], &more).unwrap(),
            None
        );
        assert_eq!(
            decision(q.ask(&store, &[1; 32], more.clone(), t)),
            Decision::Pending
        );
        assert_eq!(
            Approvals::decision_on(&store, &[1; 32], &more)
                .unwrap()
                .map(|e| e.decision),
            Some(Decision::Pending)
        );
    }

    #[test]
    fn an_amountless_request_is_approved_only_for_an_amount_and_one_with_an_amount_for_its_own() {
        let store = Store::temporary().unwrap();
        let q = Approvals::default();
        let mut amountless = request(2, 0, now());
        amountless.amount_msat = None;
        amountless.kind = "invoice".into();
        q.queue(&store, &[2; 32], amountless.clone()).unwrap();
        let decisions = q.decisions();
        assert!(matches!(
            q.decide(&store, &[2; 32], APPROVE),
            Err(DecideError::AmountNeeded(_))
        ));
        assert!(!decisions.has_changed().unwrap(), "nothing was decided");
        let e = q
            .decide(
                &store,
                &[2; 32],
                Verdict::Approve {
                    amount_msat: Some(42_000),
                },
            )
            .unwrap();
        assert_eq!(
            (e.decision, e.approved_msat),
            (Decision::Approved, Some(42_000))
        );
        assert!(
            decisions.has_changed().unwrap(),
            "parked requests are woken"
        );
        let stored = Approvals::decision_on(&store, &[2; 32], &amountless)
            .unwrap()
            .unwrap();
        assert_eq!(stored.approved_msat, Some(42_000));

        q.queue(&store, &[3; 32], request(3, 7_000, now())).unwrap();
        assert!(matches!(
            q.decide(
                &store,
                &[3; 32],
                Verdict::Approve {
                    amount_msat: Some(8_000)
                }
            ),
            Err(DecideError::OtherAmount {
                asked: 7_000,
                given: 8_000,
                ..
            })
        ));
        let e = q
            .decide(
                &store,
                &[3; 32],
                Verdict::Approve {
                    amount_msat: Some(7_000),
                },
            )
            .unwrap();
        assert_eq!(e.decision, Decision::Approved);
        assert!(matches!(
            q.decide(&store, &[4; 32], Verdict::Deny),
            Err(DecideError::Unknown(_))
        ));
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
