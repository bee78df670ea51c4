//! Payment preapproval: lightningd asks before it pays an invoice or sends a keysend, and the
//! operator's limits decide.
//!
//! In warn mode every payment is approved, as Core Lightning's hsmd does (the `_check`
//! variants are answered with the plain reply types 138 / 139, as hsmd does). In enforce
//! mode, rules refuse expired invoices (`invoice-not-expired`), unparseable ones
//! (`invoice-valid`), more tracked payments than the limit (`invoice-max-tracked`), more than
//! the velocity limit within its window (`invoice-velocity`), and hold anything above the
//! auto-approve limit for the operator (`invoice-auto-approve`). A refusal is a reply with
//! `approved = false` (hsmd's protocol has no error for it), followed by the reason as a
//! NUL-terminated string, which Core Lightning ignores as trailing bytes.
//!
//! An approval is bound to what was approved: payment hash, kind (invoice or keysend), amount
//! and destination. Asked again for the same, it is already approved; asked for the same hash
//! with other terms (a keysend reusing an invoice's hash, another amount), it is a new payment,
//! checked and counted on its own, whose amount adds to what the hash may carry. Approved
//! payments are tracked by payment hash; `forwards` keeps the HTLCs we offer for one within
//! its approved amount plus routing fees, however they are split across channels.

use crate::approvals::{now, Approval, Decision};
use crate::error::{Result, SignerError};
use crate::handler::{Req, Wait};
use crate::policy::Mode;
use crate::store::Records;
use bitcoin::hashes::Hash;
use protocol::msgs::*;
use protocol::Message;
use serde::{Deserialize, Serialize};
use std::str::FromStr;
use std::time::{Duration, Instant};

impl Payment {
    fn terms(&self) -> (String, Option<u64>, Option<String>) {
        (
            self.kind.to_string(),
            self.amount_msat,
            self.destination.clone(),
        )
    }
}

impl PaymentRecord {
    /// Whether `p`, with exactly these terms, was approved already.
    fn approved(&self, p: &Payment) -> bool {
        let terms = p.terms();
        // Records from before approvals were listed hold one invoice or keysend.
        self.approvals.contains(&terms)
            || (self.approvals.is_empty()
                && self.kind == p.kind
                && self.amount_msat == p.amount_msat)
    }
}

/// A payment lightningd asked to preapprove.
struct Payment {
    hash: [u8; 32],
    kind: &'static str,
    amount_msat: Option<u64>,
    /// The node paid (hex), when known.
    destination: Option<String>,
    /// Unix seconds after which the invoice may no longer be paid.
    expires_at: Option<u64>,
    detail: String,
    /// The invoice's description, if it has one.
    description: Option<String>,
}

/// An approved payment, as tracked.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct PaymentRecord {
    kind: String,
    /// What HTLCs for this hash may carry, routing fees aside: the sum of every approval's
    /// amount, or `None` once one had none (the operator approved an amountless invoice).
    pub(crate) amount_msat: Option<u64>,
    approved_at: u64,
    expires_at: Option<u64>,
    /// Every approval of this hash: (kind, amount, destination).
    #[serde(default)]
    approvals: Vec<(String, Option<u64>, Option<String>)>,
    /// What HTLCs for it that left our holder and counterparty commitments without coming back
    /// to our balance took (they may have been claimed), millisatoshis.
    #[serde(default)]
    pub(crate) claimed_msat: (u64, u64),
}

/// Answers `PreapproveInvoice`.
pub(crate) fn preapprove_invoice(r: &mut Req<'_>, m: PreapproveInvoice) -> Result<Message> {
    let approved = invoice(r, &m.invstring.to_string_lossy(), false);
    reply_invoice(approved)
}

/// Answers `PreapproveKeysend`.
pub(crate) fn preapprove_keysend(r: &mut Req<'_>, m: PreapproveKeysend) -> Result<Message> {
    let p = keysend_payment(&m.destination, &m.payment_hash, m.amount_msat.to_msat());
    reply_keysend(preapprove(r, p, false))
}

/// Answers `PreapproveInvoiceCheck` (with hsmd's reply type 138).
pub(crate) fn preapprove_invoice_check(
    r: &mut Req<'_>,
    m: PreapproveInvoiceCheck,
) -> Result<Message> {
    let approved = invoice(r, &m.invstring.to_string_lossy(), m.check_only);
    reply_invoice(approved)
}

/// Answers `PreapproveKeysendCheck` (with hsmd's reply type 139).
pub(crate) fn preapprove_keysend_check(
    r: &mut Req<'_>,
    m: PreapproveKeysendCheck,
) -> Result<Message> {
    let p = keysend_payment(&m.destination, &m.payment_hash, m.amount_msat.to_msat());
    reply_keysend(preapprove(r, p, m.check_only))
}

fn keysend_payment(
    destination: &protocol::types::NodeId,
    hash: &bitcoin::hashes::sha256::Hash,
    amount_msat: u64,
) -> Payment {
    Payment {
        hash: hash.to_byte_array(),
        kind: "keysend",
        amount_msat: Some(amount_msat),
        expires_at: None,
        destination: Some(destination.to_string()),
        detail: destination.to_string(),
        description: None,
    }
}

/// The outcome of a preapproval: approved, or refused with the rule's reason.
type Verdict = Result<std::result::Result<(), String>>;

fn invoice(r: &mut Req<'_>, invstring: &str, check_only: bool) -> Verdict {
    let inv = match lightning_invoice::Bolt11Invoice::from_str(invstring) {
        Ok(i) => i,
        Err(e) => {
            return refusal(r.policy.check("invoice-valid", false, || {
                format!("not a BOLT 11 invoice: {e}")
            }));
        }
    };
    let expires_at = inv
        .duration_since_epoch()
        .as_secs()
        .saturating_add(inv.expiry_time().as_secs());
    let p = Payment {
        hash: *inv.payment_hash().as_byte_array(),
        kind: "invoice",
        amount_msat: inv.amount_milli_satoshis(),
        expires_at: Some(expires_at),
        destination: Some(inv.recover_payee_pub_key().to_string()),
        description: match inv.description() {
            lightning_invoice::Bolt11InvoiceDescriptionRef::Direct(d) => Some(d.to_string()),
            lightning_invoice::Bolt11InvoiceDescriptionRef::Hash(h) => Some(format!(
                "description hash {}",
                hex::encode(h.0.to_byte_array())
            )),
        },
        detail: invstring.to_string(),
    };
    preapprove(r, p, check_only)
}

/// A policy refusal becomes a negative verdict; warn mode (Ok) approves.
fn refusal(check: Result<()>) -> Verdict {
    match check {
        Ok(()) => Ok(Ok(())),
        Err(e @ SignerError::Policy { .. }) => Ok(Err(e.description())),
        Err(e) => Err(e),
    }
}

fn preapprove(r: &mut Req<'_>, p: Payment, check_only: bool) -> Verdict {
    let now = now();
    let limits = r.policy.limits.clone();
    let needs_operator = p
        .amount_msat
        .is_none_or(|a| a > limits.max_auto_approve_msat);
    // First on the last committed state, to refuse before asking the operator anything (or
    // as the only check of a `check_only` request).
    if needs_operator || check_only {
        if let Some(v) = within_limits(r, &p, p.amount_msat, now, &limits)? {
            return Ok(v);
        }
    }
    // What HTLCs for this approval may carry: the amount, or for an amountless invoice what
    // the operator approved it for.
    let mut allowance = p.amount_msat;
    if needs_operator {
        match operator(r, &p, check_only, &limits)? {
            Ok(a) => allowance = a,
            Err(why) => return Ok(Err(why)),
        }
    }
    if !check_only {
        // Then again in the write transaction that records the payment: redb has one writer,
        // so preapprovals racing each other are counted one after the other, and together
        // they never pass a limit that each alone would.
        r.txn()?;
        if let Some(v) = within_limits(r, &p, allowance, now, &limits)? {
            return Ok(v);
        }
        let before: Option<PaymentRecord> = r.record(Records::Payments, &p.hash)?;
        let mut rec = before.unwrap_or(PaymentRecord {
            kind: p.kind.into(),
            amount_msat: Some(0),
            approved_at: now,
            expires_at: p.expires_at,
            approvals: Vec::new(),
            claimed_msat: (0, 0),
        });
        // Another approval of the same hash adds what it approved.
        rec.amount_msat = rec
            .amount_msat
            .zip(allowance)
            .map(|(a, b)| a.saturating_add(b));
        rec.approved_at = now;
        rec.expires_at = rec.expires_at.max(p.expires_at);
        rec.approvals.push(p.terms());
        r.txn()?.put_record(Records::Payments, &p.hash, &rec)?;
    }
    Ok(Ok(()))
}

/// How long after its invoice expired a payment stays tracked, seconds.
const KEPT_AFTER_EXPIRY_SECS: u64 = 86_400;

/// Whether payment `p` is one no limit counts any more: approved before the velocity window,
/// and its invoice expired a day ago (a keysend has none).
fn is_stale(p: &PaymentRecord, now: u64, limits: &crate::limits::Limits) -> bool {
    p.approved_at < now.saturating_sub(limits.velocity_window_secs)
        && p.expires_at
            .is_none_or(|e| e.saturating_add(KEPT_AFTER_EXPIRY_SECS) < now)
}

/// The preapproval's verdict where the tracked payments decide it: `Some(Ok)` for a payment
/// already approved, `Some(Err)` for one past a limit (expiry, tracked count, velocity, with
/// `allowance` counted), `None` when the payment is within them. Reads through the request's
/// transaction once it is open; there, it also forgets the stale payments (see [`is_stale`])
/// that no HTLC of ours carries. Without that, every preapproval would read every payment
/// ever approved. Forgetting only makes the signer stricter: an HTLC for a hash it forgot is
/// a payment nobody approved (`htlc-forward-matched`), and a new preapproval of it is counted
/// again.
fn within_limits(
    r: &mut Req<'_>,
    p: &Payment,
    allowance: Option<u64>,
    now: u64,
    limits: &crate::limits::Limits,
) -> Result<Option<std::result::Result<(), String>>> {
    let existing: Option<PaymentRecord> = r.record(Records::Payments, &p.hash)?;
    if existing.as_ref().is_some_and(|e| e.approved(p)) {
        // Asked again for a payment already approved: nothing new to count.
        return Ok(Some(Ok(())));
    }
    if let Some(exp) = p.expires_at {
        let v = refusal(r.policy.check("invoice-not-expired", now < exp, || {
            format!("invoice expired at unix time {exp}")
        }))?;
        if v.is_err() {
            return Ok(Some(v));
        }
    }
    let prune = r.in_transaction();
    let mut tracked: Vec<PaymentRecord> = Vec::new();
    for (hash, t) in r.records::<PaymentRecord>(Records::Payments)? {
        if prune && is_stale(&t, now, limits) {
            let txn = r.txn()?;
            if txn
                .record::<serde::de::IgnoredAny>(Records::Htlcs, &hash)?
                .is_none()
            {
                txn.remove_record(Records::Payments, &hash)?;
                continue;
            }
        }
        tracked.push(t);
    }
    let window_start = now.saturating_sub(limits.velocity_window_secs);
    let live = tracked
        .iter()
        .filter(|t| {
            t.expires_at
                .map_or(t.approved_at >= window_start, |e| e > now)
        })
        .count();
    let v = refusal(r.policy.check(
        "invoice-max-tracked",
        live < limits.max_tracked_invoices,
        || {
            format!(
                "{live} payments tracked, the limit is {}",
                limits.max_tracked_invoices
            )
        },
    ))?;
    if v.is_err() {
        return Ok(Some(v));
    }
    let spent_msat: u64 = tracked
        .iter()
        .filter(|t| t.approved_at >= window_start)
        .filter_map(|t| t.amount_msat)
        .fold(0u64, u64::saturating_add);
    let amount = allowance.unwrap_or(0);
    let limit_msat = limits.velocity_limit_sat.saturating_mul(1000);
    let v = refusal(r.policy.check(
        "invoice-velocity",
        spent_msat.saturating_add(amount) <= limit_msat,
        || {
            format!(
                "{} msat within {} s plus {amount} msat exceeds {limit_msat} msat",
                spent_msat, limits.velocity_window_secs
            )
        },
    ))?;
    Ok(v.is_err().then_some(v))
}

/// `invoice-auto-approve`: above the limit (or without an amount) the operator decides.
/// Approved, it gives what the payment may carry (`None`: unbounded, only in warn mode or for
/// an amountless approval recorded before approvals named an amount).
fn operator(
    r: &mut Req<'_>,
    p: &Payment,
    check_only: bool,
    limits: &crate::limits::Limits,
) -> Result<std::result::Result<Option<u64>, String>> {
    let rule = "invoice-auto-approve";
    let amount = p
        .amount_msat
        .map_or("an unspecified amount".into(), |a| format!("{a} msat"));
    if r.policy.mode(rule) == Mode::Warn {
        log::warn!("policy {rule} (warn only): {amount} approved without the operator");
        return Ok(Ok(p.amount_msat));
    }
    let a = Approval {
        payment_hash: hex::encode(p.hash),
        kind: p.kind.into(),
        amount_msat: p.amount_msat,
        detail: p.detail.clone(),
        destination: p.destination.clone(),
        description: p.description.clone(),
        requested_at: now(),
        decision: Decision::Pending,
        decided_at: None,
        approved_msat: None,
    };
    let decided = crate::approvals::Approvals::decision_on(r.store(), &p.hash, &a)?;
    let entry = match decided {
        Some(e) if e.decision != Decision::Pending => e,
        _ if check_only => a,
        _ => {
            if r.in_transaction() {
                return Err(SignerError::Temporary(
                    "approval asked inside a transaction".into(),
                ));
            }
            let timeout = Duration::from_secs(limits.approval_timeout_secs);
            match r.wait {
                Wait::Block => r.approvals.ask(r.store(), &p.hash, a, timeout)?,
                Wait::Park { deadline } => {
                    let e = r.approvals.queue(r.store(), &p.hash, a)?;
                    let until = deadline.unwrap_or_else(|| Instant::now() + timeout);
                    if e.decision == Decision::Pending && Instant::now() < until {
                        return Err(SignerError::Parked { until });
                    }
                    e
                }
            }
        }
    };
    let detail = match entry.decision {
        // An amountless payment is bound to what the operator approved it for.
        Decision::Approved => return Ok(Ok(p.amount_msat.or(entry.approved_msat))),
        Decision::Denied => format!("the operator denied paying {amount}"),
        Decision::Pending => format!(
            "paying {amount} needs the operator's approval (limit {} msat), none came",
            limits.max_auto_approve_msat
        ),
    };
    log::warn!("policy {rule} refused: {detail}");
    Ok(Err(SignerError::Policy { rule, detail }.description()))
}

fn with_reason(reply: Vec<u8>, reason: Option<String>) -> Vec<u8> {
    let mut reply = reply;
    if let Some(why) = reason {
        reply.extend(why.bytes().map(|c| if c < 0x20 { b' ' } else { c }));
        reply.push(0);
    }
    reply
}

fn reply_invoice(v: Verdict) -> Result<Message> {
    let v = v?;
    let mut m = PreapproveInvoiceReply::new(v.is_ok());
    m.trailing = with_reason(Vec::new(), v.err());
    Ok(m.into())
}

fn reply_keysend(v: Verdict) -> Result<Message> {
    let v = v?;
    let mut m = PreapproveKeysendReply::new(v.is_ok());
    m.trailing = with_reason(Vec::new(), v.err());
    Ok(m.into())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{ClientContext, Policy, Signer, Store};
    use bitcoin::hashes::sha256;
    use lightning_invoice::{Currency, InvoiceBuilder};
    use secp256k1::{SecretKey, SECP256K1};
    use std::sync::Arc;

    const SECRET: [u8; 32] = [7; 32];
    /// hsmd_init for regtest, versions 4..=6 (from the golden corpus).
    const INIT: &str = "000b043587cf0435839406226e46111a0b59caaf126043eb5bbf28c34f3a5e332a1fc7b2b73cf188910f00000000000000000400000006";

    pub(crate) fn signer(policy: Policy, store: Store) -> Arc<Signer> {
        let s = Signer::new(SECRET.to_vec(), store, policy);
        s.handle(&ClientContext::master(), None, &hex::decode(INIT).unwrap())
            .unwrap();
        Arc::new(s)
    }

    pub(crate) fn policy(tweak: impl FnOnce(&mut crate::limits::Limits)) -> Policy {
        let mut p = Policy::enforcing();
        tweak(&mut p.limits);
        p
    }

    pub(crate) fn invoice(amount_msat: Option<u64>, hash: u8, age_secs: u64) -> String {
        let key = SecretKey::from_slice(&[0x11; 32]).unwrap();
        let ts = std::time::SystemTime::now() - Duration::from_secs(age_secs);
        let b = InvoiceBuilder::new(Currency::Regtest)
            .description("test".into())
            .payment_hash(sha256::Hash::from_byte_array([hash; 32]))
            .payment_secret(lightning_invoice::PaymentSecret([1; 32]))
            .duration_since_epoch(ts.duration_since(std::time::UNIX_EPOCH).unwrap())
            .expiry_time(Duration::from_secs(3600))
            .min_final_cltv_expiry_delta(18);
        let b = match amount_msat {
            Some(a) => b.amount_milli_satoshis(a),
            None => b,
        };
        b.build_signed(|h| SECP256K1.sign_ecdsa_recoverable(h, &key))
            .unwrap()
            .to_string()
    }

    /// (approved, reason) of a preapprove_invoice.
    pub(crate) fn ask(s: &Signer, inv: &str) -> (bool, Option<String>) {
        let reply = s
            .handle(&ClientContext::master(), None, &invoice_request(inv))
            .unwrap();
        verdict_of(&reply)
    }

    /// `ask`, parking as the daemon does: `Err(until)` while the decision is pending.
    fn ask_parked(
        s: &Signer,
        inv: &str,
        deadline: Option<Instant>,
    ) -> std::result::Result<(bool, Option<String>), Instant> {
        let master = ClientContext::master();
        let wait = Wait::Park { deadline };
        match s.handle_with(&master, None, &invoice_request(inv), wait) {
            Err(SignerError::Parked { until }) => Err(until),
            Ok(reply) => Ok(verdict_of(&reply)),
            Err(e) => panic!("{e}"),
        }
    }

    fn invoice_request(inv: &str) -> Vec<u8> {
        PreapproveInvoice::new(protocol::types::WireString::from(inv))
            .encode()
            .unwrap()
    }

    /// (approved, the reason after the reply, if any).
    fn verdict_of(reply: &[u8]) -> (bool, Option<String>) {
        let r = PreapproveInvoiceReply::decode(reply).unwrap();
        let reason = r
            .trailing
            .iter()
            .position(|&c| c == 0)
            .map(|e| String::from_utf8_lossy(&r.trailing[..e]).into_owned());
        (r.approved, reason)
    }

    #[test]
    fn a_parked_amountless_invoice_is_bound_to_the_amount_the_operator_approved() {
        let s = signer(
            policy(|l| {
                l.approval_timeout_secs = 60;
                l.velocity_limit_sat = 100;
            }),
            Store::temporary().unwrap(),
        );
        let inv = invoice(None, 12, 0);
        let hash = [12u8; 32];
        let started = Instant::now();
        let until = ask_parked(&s, &inv, None).expect_err("parked while pending");
        assert!(until > started + Duration::from_secs(59));
        // Asked again before a decision: parked again, to the same deadline, queued once.
        assert_eq!(ask_parked(&s, &inv, Some(until)), Err(until));
        assert_eq!(
            crate::approvals::Approvals::list(s.store()).unwrap().len(),
            1
        );
        assert_eq!(tracked(&s), 0);
        // Beyond the velocity limit: the approval's amount counts, and refuses.
        s.approvals()
            .decide(
                s.store(),
                &hash,
                crate::approvals::Verdict::Approve {
                    amount_msat: Some(150_000),
                },
            )
            .unwrap();
        let (ok, why) = ask_parked(&s, &inv, Some(until)).unwrap();
        assert!(!ok && why.unwrap().contains("invoice-velocity"));
        assert_eq!(tracked(&s), 0);
        // Within it: approved and bound to that amount.
        s.approvals()
            .decide(
                s.store(),
                &hash,
                crate::approvals::Verdict::Approve {
                    amount_msat: Some(40_000),
                },
            )
            .unwrap();
        assert_eq!(ask_parked(&s, &inv, Some(until)), Ok((true, None)));
        let rec: PaymentRecord = s.store().record(Records::Payments, &hash).unwrap().unwrap();
        assert_eq!(rec.amount_msat, Some(40_000));
        // The same invoice again adds nothing.
        assert_eq!(ask_parked(&s, &inv, None), Ok((true, None)));
        let rec: PaymentRecord = s.store().record(Records::Payments, &hash).unwrap().unwrap();
        assert_eq!(rec.amount_msat, Some(40_000));
    }

    #[test]
    fn a_parked_payment_past_its_deadline_is_refused_and_stays_queued() {
        let s = signer(Policy::enforcing(), Store::temporary().unwrap());
        let inv = invoice(Some(500_000_000), 13, 0);
        let until = ask_parked(&s, &inv, None).expect_err("parked");
        let past = Instant::now() - Duration::from_millis(1);
        assert!(past < until);
        let (ok, why) = ask_parked(&s, &inv, Some(past)).unwrap();
        assert!(!ok && why.unwrap().contains("none came"));
        let queued = crate::approvals::Approvals::list(s.store()).unwrap();
        assert_eq!(queued[0].decision, Decision::Pending);
        assert_eq!(tracked(&s), 0);
    }

    #[test]
    fn payments_no_limit_counts_and_no_htlc_carries_are_forgotten() {
        let s = signer(Policy::enforcing(), Store::temporary().unwrap());
        let now = now();
        let day = 86_400;
        let old = |expires_at: Option<u64>| PaymentRecord {
            kind: "invoice".into(),
            amount_msat: Some(1_000),
            approved_at: now - 3 * day,
            expires_at,
            approvals: Vec::new(),
            claimed_msat: (0, 0),
        };
        let records = [
            ([1u8; 32], old(Some(now - 2 * day)), false), // expired long ago: forgotten
            ([2u8; 32], old(None), false),                // an old keysend: forgotten
            ([3u8; 32], old(Some(now - 3600)), true),     // expired within the day: kept
            ([4u8; 32], old(Some(now - 2 * day)), true),  // an HTLC still carries it: kept
            (
                [5u8; 32],
                PaymentRecord {
                    approved_at: now - 60,
                    ..old(None)
                },
                true,
            ), // within the velocity window: kept
        ];
        let mut t = s.store().begin().unwrap();
        for (hash, rec, _) in &records {
            t.put_record(Records::Payments, hash, rec).unwrap();
        }
        t.put_record(Records::Htlcs, &[4u8; 32], &serde_json::json!({}))
            .unwrap();
        t.commit().unwrap();
        assert_eq!(ask(&s, &invoice(Some(1000), 9, 0)), (true, None));
        for (hash, _, kept) in &records {
            let rec: Option<PaymentRecord> = s.store().record(Records::Payments, hash).unwrap();
            assert_eq!(rec.is_some(), *kept, "{}", hex::encode(hash));
        }
        assert_eq!(tracked(&s), 4);
    }

    fn tracked(s: &Signer) -> usize {
        s.store()
            .records::<PaymentRecord>(Records::Payments)
            .unwrap()
            .len()
    }

    #[test]
    fn expired_and_invalid_invoices_are_refused_with_their_rule() {
        let s = signer(Policy::enforcing(), Store::temporary().unwrap());
        let (ok, why) = ask(&s, &invoice(Some(1000), 1, 7200));
        assert!(!ok);
        assert!(why.unwrap().contains("invoice-not-expired"));
        let (ok, why) = ask(&s, "lnbcrt1garbage");
        assert!(!ok);
        assert!(why.unwrap().contains("invoice-valid"));
        assert_eq!(tracked(&s), 0);
        let w = signer(Policy::warn_only(), Store::temporary().unwrap());
        assert_eq!(ask(&w, &invoice(Some(1000), 1, 7200)), (true, None));
    }

    #[test]
    fn velocity_counts_approved_payments_once() {
        let s = signer(
            policy(|l| l.velocity_limit_sat = 10),
            Store::temporary().unwrap(),
        );
        assert_eq!(ask(&s, &invoice(Some(6000), 1, 0)), (true, None));
        // The same invoice again is not counted twice.
        assert_eq!(ask(&s, &invoice(Some(6000), 1, 0)), (true, None));
        let (ok, why) = ask(&s, &invoice(Some(6000), 2, 0));
        assert!(!ok);
        assert!(why.unwrap().contains("invoice-velocity"));
        assert_eq!(tracked(&s), 1);
    }

    #[test]
    fn the_check_variant_waits_for_the_operator_like_the_plain_one() {
        let s = signer(
            policy(|l| {
                l.max_auto_approve_msat = 1_000;
                l.approval_timeout_secs = 0;
            }),
            Store::temporary().unwrap(),
        );
        let req = PreapproveInvoiceCheck::new(
            protocol::types::WireString::from(invoice(Some(5_000), 9, 0).as_str()),
            false,
        )
        .encode()
        .unwrap();
        let reply = s.handle(&ClientContext::master(), None, &req).unwrap();
        let r = PreapproveInvoiceReply::decode(&reply).unwrap();
        assert!(!r.approved, "nobody approved within the timeout");
        assert!(String::from_utf8_lossy(&r.trailing).contains("invoice-auto-approve"));
        assert_eq!(tracked(&s), 0);
    }

    #[test]
    fn concurrent_preapprovals_never_pass_the_velocity_limit_together() {
        for _ in 0..20 {
            // 100 sat per window; 16 payments of 10 sat each, all at once.
            let s = signer(
                policy(|l| l.velocity_limit_sat = 100),
                Store::temporary().unwrap(),
            );
            let invoices: Vec<String> = (1..=16).map(|h| invoice(Some(10_000), h, 0)).collect();
            let barrier = std::sync::Barrier::new(invoices.len());
            let approved = std::thread::scope(|sc| {
                let asks: Vec<_> = invoices
                    .iter()
                    .map(|inv| {
                        let (s, barrier) = (&s, &barrier);
                        sc.spawn(move || {
                            barrier.wait();
                            ask(s, inv).0
                        })
                    })
                    .collect();
                asks.into_iter()
                    .map(|a| a.join().unwrap())
                    .filter(|&approved| approved)
                    .count()
            });
            assert_eq!(approved, 10, "exactly the limit's worth is approved");
            assert_eq!(tracked(&s), 10);
        }
    }

    #[test]
    fn tracked_payments_are_limited() {
        let s = signer(
            policy(|l| l.max_tracked_invoices = 2),
            Store::temporary().unwrap(),
        );
        assert!(ask(&s, &invoice(Some(1), 1, 0)).0);
        assert!(ask(&s, &invoice(Some(1), 2, 0)).0);
        let (ok, why) = ask(&s, &invoice(Some(1), 3, 0));
        assert!(!ok && why.unwrap().contains("invoice-max-tracked"));
    }

    #[test]
    fn above_the_limit_the_operator_decides_and_it_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let big = invoice(Some(500_000_000), 9, 0);
        let hash = [9u8; 32];
        {
            let s = signer(
                policy(|l| l.approval_timeout_secs = 10),
                Store::open(&path).unwrap(),
            );
            let s2 = s.clone();
            let waiter = std::thread::spawn({
                let big = big.clone();
                move || ask(&s2, &big)
            });
            // The operator sees it pending, then approves.
            let pending = loop {
                let l = crate::approvals::Approvals::list(s.store()).unwrap();
                if !l.is_empty() {
                    break l;
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            assert_eq!(pending[0].decision, Decision::Pending);
            assert_eq!(pending[0].amount_msat, Some(500_000_000));
            s.approvals()
                .decide(
                    s.store(),
                    &hash,
                    crate::approvals::Verdict::Approve { amount_msat: None },
                )
                .unwrap();
            assert_eq!(waiter.join().unwrap(), (true, None));
        }
        // After a restart the decision stands.
        let s = signer(
            policy(|l| l.approval_timeout_secs = 0),
            Store::open(&path).unwrap(),
        );
        assert_eq!(ask(&s, &big), (true, None));
        let other = invoice(Some(500_000_000), 10, 0);
        let (ok, why) = ask(&s, &other);
        assert!(
            !ok && why.unwrap().contains("invoice-auto-approve"),
            "timed out"
        );
        s.approvals()
            .decide(s.store(), &[10; 32], crate::approvals::Verdict::Deny)
            .unwrap();
        let (ok, why) = ask(&s, &other);
        assert!(!ok && why.unwrap().contains("denied"));
    }

    #[test]
    fn check_only_records_nothing() {
        let s = signer(Policy::enforcing(), Store::temporary().unwrap());
        let inv = invoice(Some(1000), 4, 0);
        let req =
            PreapproveInvoiceCheck::new(protocol::types::WireString::from(inv.as_str()), true)
                .encode()
                .unwrap();
        let reply = s.handle(&ClientContext::master(), None, &req).unwrap();
        assert!(PreapproveInvoiceReply::decode(&reply).unwrap().approved);
        assert_eq!(tracked(&s), 0);
    }
}
