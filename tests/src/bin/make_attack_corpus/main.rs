//! Builds `tests/data/attacks/policy-attacks.json` (and the enforcing `policy.toml` it is
//! replayed with): cases in the conformance corpus format in which a malicious node tries one
//! attack each, refused by a validating signer (`expected: "refused"`, see
//! `tests/data/conformance/README.md`, "Steps a validating signer must refuse").
//!
//! Every reply in the corpus is computed by running the requests through the in-process
//! signer: with every rule in warn mode (Core Lightning's behaviour; it reproduces Core
//! Lightning's hsmd byte for byte on the golden corpus) for `reply` and `cln_*`, and with
//! `policy.toml` for `expected_*`. The generator checks that each legitimate step gets the
//! same reply under both policies and that each attack is refused by its rule, so the corpus
//! it writes is consistent.
//!
//! Run from anywhere: `cargo run -p tests --bin make_attack_corpus`. The output is
//! deterministic (fixed secrets and timestamps; invoices use far-future or long-past
//! expiries so they are valid, or expired, whenever the corpus is replayed).

mod cases;

use protocol::msgs::{name_of, ClientHsmfd, Init};
use protocol::types::NodeId;
use protocol::{Message, Permissions};
use serde::Serialize;
use signer::{ClientContext, Policy, Signer, SignerError, Store};
use std::path::PathBuf;

/// The `hsm_secret` of every case.
pub const HSM_SECRET: [u8; 32] = [
    0x9a, 0x1c, 0x3e, 0x70, 0x5b, 0x22, 0x84, 0xf1, 0x0d, 0x6e, 0x47, 0xb3, 0xc8, 0x19, 0x2a, 0x55,
    0xe0, 0x7f, 0x36, 0x91, 0xad, 0x04, 0x68, 0xcb, 0x13, 0x5f, 0xd2, 0x8e, 0x41, 0xb7, 0x26, 0xfa,
];

/// One step as planned: who sends what, and whether it is the attack.
struct Planned {
    client: u64,
    request: Vec<u8>,
    /// The rule that must refuse it, for the attack step.
    attack: Option<&'static str>,
    new_client: Option<u64>,
    comment: Option<String>,
}

/// A case being written: the requests in order, the clients handed out so far.
pub struct CaseBuilder {
    name: String,
    description: String,
    why: String,
    steps: Vec<Planned>,
    next_client: u64,
}

impl CaseBuilder {
    /// A case starting with lightningd's `hsmd_init` (regtest, protocol versions 4..=6).
    pub fn new(name: &str, description: &str, why: &str) -> CaseBuilder {
        let mut b = CaseBuilder {
            name: name.into(),
            description: description.into(),
            why: why.into(),
            steps: Vec::new(),
            next_client: 1,
        };
        b.master(init());
        b
    }

    fn push(&mut self, client: u64, m: Message, attack: Option<&'static str>) {
        self.steps.push(Planned {
            client,
            request: m.encode().expect("encodable request"),
            attack,
            new_client: None,
            comment: None,
        });
    }

    /// A legitimate request on the master fd.
    pub fn master(&mut self, m: impl Into<Message>) {
        self.push(0, m.into(), None);
    }

    /// A legitimate request on client `client`.
    pub fn on(&mut self, client: u64, m: impl Into<Message>) {
        self.push(client, m.into(), None);
    }

    /// The attack: a request on `client` that `rule` must refuse.
    pub fn attack(&mut self, client: u64, m: impl Into<Message>, rule: &'static str) {
        assert!(
            self.steps.iter().all(|s| s.attack.is_none()),
            "{}: one attack per case",
            self.name
        );
        self.push(client, m.into(), Some(rule));
    }

    /// `hsmd_client_hsmfd` on the master: a new client with these permissions; its number.
    pub fn client(&mut self, peer: NodeId, dbid: u64, perms: Permissions) -> u64 {
        self.master(ClientHsmfd::new(peer, dbid, perms.bits()));
        let n = self.next_client;
        self.next_client += 1;
        self.steps.last_mut().expect("just pushed").new_client = Some(n);
        n
    }

    /// A comment on the last step.
    pub fn note(&mut self, comment: &str) {
        self.steps.last_mut().expect("a step").comment = Some(comment.into());
    }
}

/// `hsmd_init` for regtest, protocol versions 4..=6, as lightningd sends it.
pub fn init() -> Init {
    tests::chan::init_regtest()
}

/// A signer for the corpus secret after `hsmd_init`: the keys the cases build requests with.
pub fn keys_signer() -> Signer {
    let s = Signer::new(
        HSM_SECRET.to_vec(),
        Store::temporary().expect("store"),
        Policy::warn_only(),
    );
    s.handle(
        &ClientContext::master(),
        None,
        &Message::from(init()).encode().expect("init"),
    )
    .expect("init");
    s
}

/// Runs every step of `case` through a fresh signer with `policy`; the result of each step.
/// Clients are created as the `hsmd_client_hsmfd` steps say (whatever their result).
fn run(case: &CaseBuilder, policy: Policy) -> Vec<Result<Vec<u8>, SignerError>> {
    let signer = Signer::new(
        HSM_SECRET.to_vec(),
        Store::temporary().expect("store"),
        policy,
    );
    let mut clients = vec![ClientContext::master()];
    let mut out = Vec::new();
    for (i, step) in case.steps.iter().enumerate() {
        let ctx = &clients[step.client as usize];
        out.push(signer.handle(ctx, Some(i as u64), &step.request));
        if let Ok(h) = ClientHsmfd::decode(&step.request) {
            clients.push(ClientContext::client(
                h.id,
                h.dbid,
                Permissions::from_bits(h.permissions),
            ));
        }
    }
    out
}

/// A step of the written corpus (see the conformance README for the fields).
#[derive(Serialize)]
struct StepOut {
    client: u64,
    request: String,
    request_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    new_client: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reply: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reply_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expected: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expected_outcome: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expected_reply: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cln_outcome: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cln_reply: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cln_bad_request: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    after_attack: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    comment: Option<String>,
}

#[derive(Serialize)]
struct CaseOut {
    name: String,
    description: String,
    /// The rule the attack step must be refused by.
    rule: &'static str,
    /// How the attack would lose the operator's money.
    why: String,
    hsm_secret: String,
    steps: Vec<StepOut>,
}

#[derive(Serialize)]
struct CorpusOut {
    source: String,
    format: String,
    policy_file: String,
    policy_assumptions: serde_json::Value,
    cases: Vec<CaseOut>,
}

fn type_name(msg: &[u8]) -> String {
    match protocol::peek_type(msg) {
        Some(t) => name_of(t).map_or_else(|| format!("unknown_type_{t}"), str::to_string),
        None => "(short message)".into(),
    }
}

/// Runs `case` under both policies and writes its steps, checking that the corpus is
/// consistent: legitimate steps answered identically, the attack refused by its rule.
fn write_case(case: &CaseBuilder, enforcing: &Policy) -> CaseOut {
    let warn = run(case, Policy::warn_only());
    let strict = run(case, enforcing.clone());
    let name = &case.name;
    let mut steps = Vec::new();
    let mut rule = None;
    for (i, step) in case.steps.iter().enumerate() {
        let mut out = StepOut {
            client: step.client,
            request: hex::encode(&step.request),
            request_name: type_name(&step.request),
            new_client: step.new_client,
            outcome: None,
            reply: None,
            reply_name: None,
            expected: None,
            rule: None,
            expected_outcome: None,
            expected_reply: None,
            cln_outcome: None,
            cln_reply: None,
            cln_bad_request: None,
            after_attack: rule.is_some(),
            comment: step.comment.clone(),
        };
        let Some(attack_rule) = step.attack else {
            let (w, s) = match (&warn[i], &strict[i]) {
                (Ok(w), Ok(s)) => (w, s),
                (w, s) => panic!(
                    "{name} step {i}: legitimate step not answered: warn {w:?}, enforce {s:?}"
                ),
            };
            assert_eq!(
                hex::encode(w),
                hex::encode(s),
                "{name} step {i}: replies differ between warn and enforce"
            );
            out.outcome = Some("reply");
            out.reply_name = Some(type_name(w));
            out.reply = Some(hex::encode(w));
            steps.push(out);
            continue;
        };
        rule = Some(attack_rule);
        out.expected = Some("refused");
        out.rule = Some(attack_rule);
        match &warn[i] {
            Ok(r) => {
                out.cln_outcome = Some("reply");
                out.cln_reply = Some(hex::encode(r));
            }
            // Refused whatever the policy (permissions): Core Lightning refuses it too.
            Err(e) if step.client != 0 => {
                out.cln_outcome = Some("client_closed");
                out.cln_bad_request = Some(match e {
                    SignerError::Policy { detail, .. } => detail.clone(),
                    e => e.description(),
                });
            }
            Err(e) => panic!("{name} step {i}: master attack refused in warn mode: {e}"),
        }
        match &strict[i] {
            Err(SignerError::Policy { rule: r, .. }) if *r == attack_rule => {
                out.expected_outcome = Some(if step.client == 0 {
                    "hsmd_exited"
                } else {
                    "client_closed"
                });
                if step.client == 0 {
                    assert_eq!(
                        i + 1,
                        case.steps.len(),
                        "{name}: a refusal on the master ends the case"
                    );
                }
            }
            Ok(reply) => {
                // A preapproval: refused by `approved = false` and the reason after it.
                let reason = String::from_utf8_lossy(reply.get(3..).unwrap_or_default());
                assert!(
                    reply.get(2) == Some(&0) && reason.contains(&format!("policy {attack_rule}")),
                    "{name} step {i}: not refused by {attack_rule}: {}",
                    hex::encode(reply)
                );
                out.expected_outcome = Some("reply");
                out.expected_reply = Some(hex::encode(reply));
            }
            got => panic!("{name} step {i}: expected a refusal by {attack_rule}, got {got:?}"),
        }
        steps.push(out);
    }
    CaseOut {
        name: case.name.clone(),
        description: case.description.clone(),
        rule: rule.unwrap_or_else(|| panic!("{name}: no attack")),
        why: case.why.clone(),
        hsm_secret: hex::encode(HSM_SECRET),
        steps,
    }
}

fn main() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/attacks");
    std::fs::create_dir_all(&dir).expect("create tests/data/attacks");
    let policy_toml = cases::policy_toml();
    let enforcing = Policy::from_toml(&policy_toml).expect("the policy file parses");
    let built = cases::all();
    let mut names = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for case in &built {
        assert!(
            names.insert(case.name.clone()),
            "duplicate case {}",
            case.name
        );
        eprintln!("{}", case.name);
        out.push(write_case(case, &enforcing));
    }
    let corpus = CorpusOut {
        source: "Attack cases built by tests/src/bin/make_attack_corpus (cargo run -p tests --bin \
                 make_attack_corpus). Not recorded from Core Lightning: every `reply` and `cln_*` \
                 field was computed by this project's signer with every policy rule in warn mode, \
                 which reproduces Core Lightning's hsmd v26.06.6 byte for byte on the golden \
                 corpus (tests/data/conformance); `expected_*` fields are this signer's answers \
                 under policy.toml."
            .into(),
        format: "The conformance corpus format (tests/data/conformance/README.md) with its \
                 \"Steps a validating signer must refuse\": each case has exactly one step with \
                 `expected: \"refused\"`, its `rule`, `expected_outcome` (client_closed, \
                 hsmd_exited, or reply with `expected_reply`) and `cln_outcome`/`cln_reply` \
                 (`cln_bad_request` when Core Lightning refuses too); the steps after it carry \
                 `after_attack: true`. A case's `rule` and `why` repeat the attack's rule and say \
                 how it would lose money. Replay with policy.toml (next to this file)."
            .into(),
        policy_file: "policy.toml".into(),
        policy_assumptions: cases::policy_assumptions(),
        cases: out,
    };
    let mut json = serde_json::to_string_pretty(&corpus).expect("serializable");
    json.push('\n');
    std::fs::write(dir.join("policy-attacks.json"), json).expect("write the corpus");
    std::fs::write(dir.join("policy.toml"), policy_toml).expect("write the policy");
    std::fs::write(dir.join("README.md"), readme(&corpus.cases)).expect("write the README");
    eprintln!(
        "wrote {} cases to {}",
        built.len(),
        dir.join("policy-attacks.json").display()
    );
}

/// How each case's attack shows when refused, in words.
fn refusal_shape(case: &CaseOut) -> &'static str {
    let attack = case.steps.iter().find(|s| s.expected.is_some());
    match attack.and_then(|s| s.expected_outcome) {
        Some("client_closed") => "client closed",
        Some("hsmd_exited") => "master: proxy exits",
        Some("reply") => "`approved = false`",
        _ => "?",
    }
}

/// `tests/data/attacks/README.md`: what the files are, how to replay them, and every case.
fn readme(cases: &[CaseOut]) -> String {
    let mut s = README_HEAD.replace("{CASES}", &cases.len().to_string());
    s.push_str("\n## The cases\n\n| case | rule | refused as | steps |\n|---|---|---|---|\n");
    for c in cases {
        s.push_str(&format!(
            "| [`{}`](#{}) | `{}` | {} | {} |\n",
            c.name,
            c.name,
            c.rule,
            refusal_shape(c),
            c.steps.len()
        ));
    }
    for c in cases {
        s.push_str(&format!(
            "\n### {}\n\nRule `{}`, {}.\n\n{}\n\n**Why it loses money:** {}\n",
            c.name,
            c.rule,
            refusal_shape(c),
            c.description,
            c.why
        ));
    }
    s
}

const README_HEAD: &str = r#"# Attack corpus: a malicious node against the validating signer

Written by `cargo run -p tests --bin make_attack_corpus` (sources in
`tests/src/bin/make_attack_corpus/`); do not edit by hand, this README included.

| file | contents |
|---|---|
| `policy-attacks.json` | {CASES} cases in the conformance corpus format, one attack each |
| `policy.toml` | the enforcing policy the corpus is replayed with: every rule enforced, tight limits |

## Where the bytes come from

These cases were **not recorded from Core Lightning**. Every `reply` and every `cln_*` field
was computed by this project's signer with every policy rule in warn mode, which reproduces
Core Lightning's hsmd v26.06.6 byte for byte on the golden corpus
(`tests/data/conformance/`, 77/77 cases). The `expected_*` fields are the
same signer's answers under `policy.toml`. The generator checks that each legitimate step gets
the same reply under both policies and that each attack is refused by its rule, so the corpus
is consistent; it is deterministic (fixed secret, keys and timestamps).

The requests are what lightningd and its subdaemons send: commitment transactions built as
BOLT 3 builds them (real keys on both sides, BOLT 3 output order, obscured commitment number,
anchors, HTLC outputs), the peer's real funding signature on our commitments, BOLT 11
invoices signed by a payee key. Invoices are dated 2025-06-15 (timestamp 1750000000) and
expire after 100 years, so they are valid whenever the corpus is replayed; the expired one
is from 2020 and expired after an hour.

## Format

The format of `tests/data/conformance/README.md`, "Steps a validating signer must refuse":
each case has exactly one step with `expected: "refused"`, the `rule` that refuses it,
`expected_outcome` (`client_closed`, `hsmd_exited`, or `reply` with `expected_reply`) and what
Core Lightning does (`cln_outcome`, `cln_reply`, or `cln_bad_request` where Core Lightning
refuses too); every step after it carries `after_attack: true`. Additions:

- each case also says its `rule` and `why` (how the attack would lose money) at the top;
- the top-level `policy_assumptions` say what the legitimate steps assume of the policy, and
  `policy_file` names `policy.toml`;
- a refusal on the master fd ends its case (the proxy exits, as hsmd does), so those cases
  have no `after_attack` steps; the in-process test checks their state instead;
- a refused preapproval's `expected_reply` holds the signer's reason after `approved = false`
  (trailing bytes Core Lightning ignores).

Whenever an attack closes a client, the `after_attack` steps go on with a new client for the
same channel, as lightningd does when it restarts a subdaemon (with the same dbid it replaces
the old client, also in warn mode). They check that the refusal changed nothing: the next
legitimate requests get exactly the replies they would have got. For the cases listed in
`PROBED` in `signer/tests/attacks.rs` they would not, had the attack gone through: e.g. after
a refused early revocation lightningd can still have the commitment signed for broadcast, and
after a refused payment the velocity limit still has room for the next one.

## Replaying

- `cargo test -p signer --test attacks`: in-process, both policies; also checks that no
  refusal changes the channel or payment state, and the probes above.
- `node replay --corpus tests/data/attacks/policy-attacks.json --policy tests/data/attacks/policy.toml`:
  the real proxy and signer processes with the enforcing policy; the refused steps must be
  refused as `expected_outcome` says (a bad request or `status_fail` naming the rule).
- `node replay --corpus tests/data/attacks/policy-attacks.json`: the signer in warn mode;
  every step, refused ones included, must be answered as Core Lightning does.

The channel cases share one channel: we fund 1 000 000 sat and push 200 000 sat,
`option_static_remotekey` + `option_anchors_zero_fee_htlc_tx`, `to_self_delay` 144 both ways,
2 500 sat/kw. Its history: commitment 0 at the opening; 1: we offer a 20 000 sat HTLC; 2: it
is fulfilled; 3: the peer offers 30 000 sat; 4: fulfilled; 5: the fee rate rises. Each round
is the funder's: we sign the peer's commitment `n`, the peer revokes `n - 1`, we validate our
`n` and revoke `n - 1`.
"#;
