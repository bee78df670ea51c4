//! Replays the attack corpus (`tests/data/attacks/policy-attacks.json`, built by
//! `cargo run -p tests --bin make_attack_corpus`) through the in-process signer:
//!
//! - with the enforcing policy `tests/data/attacks/policy.toml`: the attack step is refused by
//!   its rule as `expected_outcome` says (a client: an error whose description names
//!   `policy <rule>`, after which that client is closed; the master: an error, on which the
//!   proxy exits; a preapproval: `approved = false` with the rule in the trailing reason), the
//!   refusal changes no channel or payment state, and every other step, the `after_attack`
//!   ones included, gets exactly its recorded reply;
//! - with every rule in warn mode (Core Lightning's behaviour): the attack step is answered as
//!   `cln_outcome` / `cln_reply` say, and every other step as recorded. This runs twice: with
//!   `Policy::warn_only()` (default limits, what `node replay` without `--policy` runs), and
//!   with `policy.toml`'s limits but every rule in warn mode, where the attack breaks its rule
//!   and a warning naming the rule must be logged.
//!
//! Clients are tracked as the proxy tracks them: a refusal closes its client, and a new
//! `hsmd_client_hsmfd` for the same channel (non-zero dbid) closes the older one; a step on a
//! closed client is a corpus error.
//!
//! A second test shows that the `after_attack` steps of the attacks that would change state
//! are real probes: had the attack gone through, they would not get their recorded replies.

use protocol::msgs::ClientHsmfd;
use protocol::Permissions;
use serde_json::Value;
use signer::store::Records;
use signer::{ClientContext, Policy, Signer, SignerError, Store};
use std::cell::RefCell;
use std::path::PathBuf;

thread_local! {
    /// The warnings logged on this thread (the signer answers on the caller's thread).
    static LOGGED: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// Keeps every warning in [`LOGGED`] of the thread that logged it.
struct Capture;

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::Level::Warn
    }
    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            LOGGED.with(|l| l.borrow_mut().push(r.args().to_string()));
        }
    }
    fn flush(&self) {}
}

fn capture_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        log::set_logger(&Capture).expect("no other logger in this test");
        log::set_max_level(log::LevelFilter::Warn);
    });
}

/// The warnings logged on this thread since the last call.
fn take_logged() -> Vec<String> {
    LOGGED.with(|l| std::mem::take(&mut *l.borrow_mut()))
}

fn data(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data/attacks")
        .join(file)
}

/// Everything a refusal must leave unchanged: every channel's state and the payments tracked.
fn snapshot(signer: &Signer) -> String {
    let channels = signer.store().channels().expect("channels");
    let payments: Vec<(Vec<u8>, Value)> =
        signer.store().records(Records::Payments).expect("payments");
    let outgoing: Vec<(Vec<u8>, Value)> = signer
        .store()
        .records(Records::ChannelPayments)
        .expect("outgoing payments");
    format!("{channels:?}\n{payments:?}\n{outgoing:?}")
}

fn text<'a>(step: &'a Value, field: &str) -> Option<&'a str> {
    step.get(field).and_then(Value::as_str)
}

fn unhex(step: &Value, field: &str) -> Vec<u8> {
    hex::decode(text(step, field).unwrap_or_else(|| panic!("step has no {field}")))
        .unwrap_or_else(|e| panic!("{field} is not hex: {e}"))
}

/// A reply's trailing refusal reason: the bytes after `approved` up to the NUL.
fn reason(reply: &[u8]) -> String {
    let rest = reply.get(3..).unwrap_or_default();
    let end = rest.iter().position(|&c| c == 0).unwrap_or(rest.len());
    String::from_utf8_lossy(&rest[..end]).into_owned()
}

/// Checks a refused step under the enforcing policy.
fn check_refusal(step: &Value, got: &Result<Vec<u8>, SignerError>) -> Result<(), String> {
    let rule = text(step, "rule").ok_or("refused step without a rule")?;
    let named = format!("policy {rule}");
    let client = step["client"].as_u64().unwrap_or(0);
    match (text(step, "expected_outcome"), got) {
        (Some("client_closed"), Err(e)) if client != 0 => {
            if e.description().contains(&named) {
                Ok(())
            } else {
                Err(format!("refused, but not by {rule}: {e}"))
            }
        }
        (Some("hsmd_exited"), Err(e)) if client == 0 => {
            if e.description().contains(&named) {
                Ok(())
            } else {
                Err(format!("refused, but not by {rule}: {e}"))
            }
        }
        (Some("reply"), Ok(reply)) => {
            let expected = unhex(step, "expected_reply");
            let why = reason(reply);
            if !why.contains(&named) {
                return Err(format!("reply {} does not name {rule}", hex::encode(reply)));
            }
            // A reply whose reason depends on the time (an expired invoice) is given without
            // it: then the message itself must match.
            let same = if expected.len() > 3 {
                *reply == expected
            } else {
                reply.get(..expected.len()) == Some(&expected[..])
            };
            if same {
                Ok(())
            } else {
                Err(format!(
                    "expected reply {}, got {}",
                    hex::encode(&expected),
                    hex::encode(reply)
                ))
            }
        }
        (want, got) => Err(format!("expected {want:?} naming {rule}, got {got:?}")),
    }
}

/// Checks a refused step under warn mode: answered as Core Lightning answers it, and where it
/// is signed and `must_warn`, a warning names the rule.
fn check_cln(
    step: &Value,
    got: &Result<Vec<u8>, SignerError>,
    logged: &[String],
    must_warn: bool,
) -> Result<(), String> {
    match (text(step, "cln_outcome"), got) {
        (Some("reply"), Ok(reply)) if *reply == unhex(step, "cln_reply") => {
            let rule = text(step, "rule").unwrap_or("?");
            let warned = format!("policy {rule} (warn only)");
            if !must_warn || logged.iter().any(|l| l.contains(&warned)) {
                Ok(())
            } else {
                Err(format!(
                    "answered without a warning naming {rule}: {logged:?}"
                ))
            }
        }
        (Some("client_closed"), Err(e)) => match text(step, "cln_bad_request") {
            Some(d) if !e.description().contains(d) => {
                Err(format!("closed with {e:?}, Core Lightning says {d:?}"))
            }
            _ => Ok(()),
        },
        (want, got) => Err(format!(
            "expected Core Lightning's {want:?} {:?}, got {:?}",
            text(step, "cln_reply"),
            got.as_ref().map(hex::encode)
        )),
    }
}

/// How a case is replayed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// With `policy.toml`: the attack is refused.
    Enforce,
    /// Every rule in warn mode: the attack is answered as Core Lightning answers it; with
    /// `must_warn` (the limits of `policy.toml`), a warning names its rule.
    Warn { must_warn: bool },
}

/// Replays one case; the first mismatch, if any.
fn replay(case: &Value, policy: Policy, mode: Mode) -> Result<(), String> {
    let secret = hex::decode(case["hsm_secret"].as_str().ok_or("no hsm_secret")?)
        .map_err(|e| e.to_string())?;
    let signer = Signer::new(secret, Store::temporary().expect("store"), policy);
    // Client number -> (context, open).
    let mut clients: Vec<(ClientContext, bool)> = vec![(ClientContext::master(), true)];
    let steps = case["steps"].as_array().ok_or("no steps")?;
    let mut attacked = false;
    for (i, step) in steps.iter().enumerate() {
        let at = |m: String| {
            format!(
                "step {i} ({}): {m}",
                text(step, "request_name").unwrap_or("?")
            )
        };
        let n = step["client"]
            .as_u64()
            .ok_or_else(|| at("no client".into()))? as usize;
        let (ctx, open) = clients
            .get(n)
            .cloned()
            .ok_or_else(|| at(format!("client {n} was never handed out")))?;
        if !open {
            return Err(at(format!("client {n} is closed")));
        }
        if step
            .get("after_attack")
            .and_then(Value::as_bool)
            .unwrap_or(false)
            != attacked
        {
            return Err(at(
                "after_attack must mark exactly the steps after the attack".into(),
            ));
        }
        let request = unhex(step, "request");
        let refused = text(step, "expected") == Some("refused");
        let before = snapshot(&signer);
        take_logged();
        let got = signer.handle(&ctx, Some(i as u64), &request);
        let logged = take_logged();
        if refused {
            attacked = true;
            if let Mode::Warn { must_warn } = mode {
                check_cln(step, &got, &logged, must_warn).map_err(at)?;
            } else {
                check_refusal(step, &got).map_err(at)?;
                if snapshot(&signer) != before {
                    return Err(at("the refusal changed the signer's state".into()));
                }
            }
        } else {
            match (&got, text(step, "outcome")) {
                (Ok(reply), Some("reply")) if *reply == unhex(step, "reply") => {}
                (got, want) => {
                    return Err(at(format!(
                        "expected {want:?} {:?}, got {:?}",
                        text(step, "reply"),
                        got.as_ref().map(hex::encode)
                    )))
                }
            }
        }
        if got.is_err() {
            if n == 0 {
                // The proxy exits: nothing may follow.
                return match steps.len() - i - 1 {
                    0 => Ok(()),
                    left => Err(at(format!("{left} steps after the master's refusal"))),
                };
            }
            clients[n].1 = false;
        }
        if let (Ok(_), Ok(h)) = (&got, ClientHsmfd::decode(&request)) {
            if h.dbid != 0 {
                for (c, open) in clients.iter_mut().skip(1) {
                    if c.dbid == h.dbid {
                        *open = false;
                    }
                }
            }
            let perms = Permissions::from_bits(h.permissions);
            clients.push((ClientContext::client(h.id, h.dbid, perms), true));
        }
    }
    if attacked {
        Ok(())
    } else {
        Err("no refused step".into())
    }
}

#[test]
fn attack_corpus_is_refused_when_enforced_and_answered_like_cln_when_warned() {
    capture_logs();
    let corpus: Value =
        serde_json::from_str(&std::fs::read_to_string(data("policy-attacks.json")).unwrap())
            .unwrap();
    let toml = std::fs::read_to_string(data("policy.toml")).unwrap();
    let policy = Policy::from_toml(&toml).expect("policy.toml");
    let enforce_all = "default = \"enforce\"";
    assert!(
        toml.contains(enforce_all),
        "policy.toml enforces every rule"
    );
    let warned_limits = Policy::from_toml(&toml.replace(enforce_all, "default = \"warn\""))
        .expect("policy.toml in warn mode");
    let cases = corpus["cases"].as_array().unwrap();
    let (mut passed, mut failed) = (0, 0);
    let mut rules = std::collections::BTreeSet::new();
    for case in cases {
        let name = case["name"].as_str().unwrap_or("?");
        let runs = [
            ("enforced", replay(case, policy.clone(), Mode::Enforce)),
            (
                "warn only",
                replay(case, Policy::warn_only(), Mode::Warn { must_warn: false }),
            ),
            (
                "policy.toml in warn mode",
                replay(case, warned_limits.clone(), Mode::Warn { must_warn: true }),
            ),
        ];
        if runs.iter().all(|(_, r)| r.is_ok()) {
            passed += 1;
        } else {
            failed += 1;
            for (how, r) in &runs {
                if let Err(e) = r {
                    println!("{name} ({how}): {e}");
                }
            }
        }
        for s in case["steps"].as_array().into_iter().flatten() {
            if let Some(r) = text(s, "rule") {
                rules.insert(r.to_string());
            }
        }
    }
    let uncovered: Vec<&str> = signer::policy::RULES
        .iter()
        .map(|(r, _)| *r)
        .filter(|r| !rules.contains(*r))
        .collect();
    if !uncovered.is_empty() {
        println!("rules no attack case covers: {uncovered:?}");
    }
    println!("{passed} passed, {failed} failed");
    assert!(cases.len() >= 20, "at least 20 attacks");
    assert_eq!(failed, 0);
}

/// The cases whose `after_attack` steps would fail had the attack gone through (the other
/// attacks are refused before they could change anything the later steps depend on: on-chain
/// signatures keep no state, and a content attack on commitment `n` is superseded by the
/// honest commitment `n`).
// `revoke_skipping_ahead` and `revoke_commitment_signed_for_broadcast` are not here: their
// later steps ask for revocations the successful attack already gave, and a revocation given
// is given again (channeld retransmits older ones after a restart), so they answer the same.
const PROBED: &[&str] = &[
    "revoke_latest_commitment",
    "validate_skipping_a_commitment_number",
    "sign_remote_skipping_a_commitment_number",
    "sign_remote_before_previous_revoked",
    "peer_revocation_with_wrong_secret",
    "peer_revocation_out_of_order",
    "pay_expired_invoice",
    "pay_invoice_over_limit_unapproved",
    "keysend_over_limit_unapproved",
    "split_payments_over_velocity_limit",
];

/// Replays `case` under `policy`, except that the attack step is answered by a signer in
/// warn mode on the same store (so it goes through); whether an `after_attack` step then
/// differs from the corpus.
fn after_steps_notice_a_successful_attack(case: &Value, policy: &Policy) -> bool {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("state.redb");
    let secret = hex::decode(case["hsm_secret"].as_str().unwrap()).unwrap();
    let steps = case["steps"].as_array().unwrap();
    let init = unhex(&steps[0], "request");
    let start = |p: Policy| {
        let s = Signer::new(secret.clone(), Store::open(&path).expect("store"), p);
        s.handle(&ClientContext::master(), None, &init)
            .expect("init");
        s
    };
    let mut signer = start(policy.clone());
    let mut clients = vec![ClientContext::master()];
    for (i, step) in steps.iter().enumerate() {
        let request = unhex(step, "request");
        let ctx = &clients[step["client"].as_u64().unwrap() as usize];
        let got = if text(step, "expected") == Some("refused") {
            drop(signer);
            let lenient = start(Policy::warn_only());
            let got = lenient.handle(ctx, Some(i as u64), &request);
            drop(lenient);
            signer = start(policy.clone());
            got
        } else {
            signer.handle(ctx, Some(i as u64), &request)
        };
        let after = step
            .get("after_attack")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if after && got.as_ref().ok() != Some(&unhex(step, "reply")) {
            return true;
        }
        if let Ok(h) = ClientHsmfd::decode(&request) {
            let perms = Permissions::from_bits(h.permissions);
            clients.push(ClientContext::client(h.id, h.dbid, perms));
        }
    }
    false
}

#[test]
fn after_attack_steps_would_catch_an_attack_that_went_through() {
    let corpus: Value =
        serde_json::from_str(&std::fs::read_to_string(data("policy-attacks.json")).unwrap())
            .unwrap();
    let policy = Policy::from_toml(&std::fs::read_to_string(data("policy.toml")).unwrap())
        .expect("policy.toml");
    let noticed: Vec<&str> = corpus["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| after_steps_notice_a_successful_attack(c, &policy))
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    println!("after_attack steps that notice a successful attack: {noticed:?}");
    let missed: Vec<&&str> = PROBED.iter().filter(|n| !noticed.contains(n)).collect();
    assert!(missed.is_empty(), "these no longer notice: {missed:?}");
}
