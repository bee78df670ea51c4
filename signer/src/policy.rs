//! The operator's policy: named rules, each `enforce` (a violation is refused, nothing is
//! signed) or `warn` (logged, then answered as Core Lightning's hsmd would).
//!
//! A policy file is TOML:
//! ```toml
//! default = "enforce"          # mode of rules not named below
//! [rules]
//! revoke-in-order = "warn"
//! ```

use crate::error::{Result, SignerError};
pub use crate::limits::Limits;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;

/// Every rule the signer checks, with what it protects.
pub const RULES: &[(&str, &str)] = &[
    ("permission", "a client may only send the requests its permissions allow"),
    ("commitment-holder-not-revoked", "never sign a holder commitment that has been revoked"),
    (
        "commitment-number-monotonic",
        "commitment numbers never go backwards, for either side",
    ),
    (
        "revoke-in-order",
        "holder commitments are revoked one after the other, each only once",
    ),
    (
        "revoke-superseded-only",
        "a per-commitment secret is revealed only once the next commitment was validated",
    ),
    (
        "revocation-secret-matches",
        "a revocation secret from the peer must match the point it gave for that commitment",
    ),
    (
        "commitment-previous-revoked",
        "the previous counterparty commitment is revoked before the next one is signed",
    ),
    ("channel-known", "channel signatures need a channel that was set up and not forgotten"),
    (
        "channel-safe-type",
        "channels are static_remotekey or zero-fee-HTLC anchors, with no unknown or unsafe feature bits",
    ),
    (
        "channel-to-self-delay",
        "either side's to_self_delay is within min_to_self_delay..=max_to_self_delay",
    ),
    (
        "channel-max-value",
        "a channel holds at most max_channel_value_sat, and pushes at most its value",
    ),
    (
        "channel-push-limit",
        "a channel we fund pushes at most max_push_msat to the peer at opening",
    ),
    (
        "channel-dust-limit",
        "no commitment output (anchors aside) is below min_dust_limit_sat",
    ),
    (
        "commitment-feerate",
        "a commitment's fee rate is within min_feerate_per_kw..=max_feerate_per_kw",
    ),
    (
        "commitment-htlc-limits",
        "at most max_htlcs HTLCs of at most max_htlc_value_msat, and every HTLC output is one of the listed HTLCs",
    ),
    (
        "commitment-balance",
        "a commitment spends the channel's funding outpoint, and our balance drops only by the HTLCs we offer and our fee",
    ),
    (
        "channel-setup-final",
        "setup_channel may change a channel's parameters only before it is in use (no commitment beyond the first signed or validated, funding not locked); the same setup again is fine",
    ),
    (
        "commitment-signed-by-peer",
        "a holder commitment is validated only with the peer's valid signature under the channel's funding keys, and its valid signature of every HTLC output's HTLC transaction",
    ),
    (
        "onchain-destination-allowlisted",
        "withdrawals, sweeps and mutual closes pay only our wallet, the channel's shutdown script or allowlisted addresses and xpubs",
    ),
    (
        "onchain-fee-cap",
        "an on-chain transaction we sign pays at most max_onchain_fee_sat and max_onchain_feerate_per_kw",
    ),
    (
        "funding-output-exact",
        "a withdrawal pays a channel's 2-of-2 only as that channel's funding output: the channel value, at the outpoint it was set up with",
    ),
    (
        "close-balance",
        "a mutual close pays us our balance on the newest commitments less at most the closing fee, and only once no HTLC is pending",
    ),
    (
        "anchorspend-anchor-only",
        "sign_anchorspend signs with the channel's funding key only the channel's anchor output, never the 2-of-2 funding output",
    ),
    (
        "onchain-sighash-all",
        "our wallet and channel inputs are signed with SIGHASH_ALL only (taproot: DEFAULT or ALL), so nobody can change a transaction after we signed it",
    ),
    (
        "funding-segwit-only",
        "every input of a PSBT we sign spends a segwit output, so the txid (a channel's funding outpoint) cannot be malleated",
    ),
    ("invoice-valid", "a payment to preapprove must be a well-formed BOLT 11 invoice"),
    ("invoice-not-expired", "never preapprove an expired invoice"),
    ("invoice-max-tracked", "at most max_tracked_invoices payments are tracked at once"),
    ("invoice-velocity", "at most velocity_limit_sat paid within velocity_window_secs"),
    (
        "invoice-auto-approve",
        "payments above max_auto_approve_msat (or without an amount) wait for the operator",
    ),
    (
        "payment-within-approved-amount",
        "HTLCs offered for a preapproved payment stay within its amount plus routing fees",
    ),
    (
        "htlc-forward-matched",
        "an HTLC we offer without a preapproval is a forward: HTLCs of its payment hash offered to us on other channels cover its amount and expire min_forward_cltv_delta blocks later",
    ),
    (
        "htlc-forward-settled",
        "an HTLC offered to us that we forwarded leaves a commitment failed only once the HTLC we offered for it failed too; otherwise our balance must grow by it",
    ),
];

/// What a rule does when it is violated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Refuse the request, naming the rule.
    Enforce,
    /// Log the violation and go on.
    Warn,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Enforce => "enforce",
            Mode::Warn => "warn",
        })
    }
}

/// A policy file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// Not valid TOML for a policy.
    #[error("invalid policy file: {0}")]
    Parse(#[from] toml::de::Error),
    /// A rule name the signer does not know (a typo would otherwise silently weaken policy).
    #[error("unknown rule `{0}` in policy file")]
    UnknownRule(String),
    /// An allowlist entry that is neither an address nor an extended public key.
    #[error("invalid policy file: {0}")]
    Allowlist(String),
    /// The limits cannot be combined with the defaults.
    #[error("invalid limits: {0}")]
    Limits(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    default: Option<Mode>,
    #[serde(default)]
    rules: BTreeMap<String, Mode>,
    #[serde(default)]
    limits: toml::Table,
}

/// The effective policy: a mode for every rule.
#[derive(Clone, Debug)]
pub struct Policy {
    modes: BTreeMap<&'static str, Mode>,
    /// The numbers the rules compare against.
    pub limits: Limits,
    /// The limits the policy file set (they apply on every network).
    overrides: toml::Table,
    /// The network the limits are for, once known.
    network: Option<bitcoin::Network>,
}

impl Policy {
    /// Every rule enforced: the default for a real node.
    pub fn enforcing() -> Policy {
        Policy::all(Mode::Enforce)
    }

    /// Every rule in warn mode: Core Lightning's behaviour, with warnings in the log.
    pub fn warn_only() -> Policy {
        Policy::all(Mode::Warn)
    }

    fn all(mode: Mode) -> Policy {
        Policy {
            modes: RULES.iter().map(|(n, _)| (*n, mode)).collect(),
            limits: Limits::default(),
            overrides: toml::Table::new(),
            network: None,
        }
    }

    /// `base` with `overrides` on top.
    fn merged(base: Limits, overrides: &toml::Table) -> std::result::Result<Limits, PolicyError> {
        let mut t = toml::Table::try_from(&base).map_err(|e| PolicyError::Limits(e.to_string()))?;
        t.extend(overrides.iter().map(|(k, v)| (k.clone(), v.clone())));
        Ok(Limits::deserialize(toml::Value::Table(t))?)
    }

    /// This policy on `network`: the network's default limits (see [`Limits::for_network`])
    /// where the policy file set none.
    pub fn for_network(&self, network: bitcoin::Network) -> Policy {
        // A limit takes the network's default where it still has mainnet's and the file did
        // not set it.
        let tables = (
            toml::Table::try_from(&self.limits),
            toml::Table::try_from(Limits::default()),
            toml::Table::try_from(Limits::for_network(network)),
        );
        let limits = match tables {
            (Ok(mut ours), Ok(mainnet), Ok(net)) => {
                for (k, v) in net {
                    if !self.overrides.contains_key(&k) && ours.get(&k) == mainnet.get(&k) {
                        ours.insert(k, v);
                    }
                }
                Limits::deserialize(toml::Value::Table(ours))
                    .unwrap_or_else(|_| self.limits.clone())
            }
            _ => self.limits.clone(),
        };
        Policy {
            modes: self.modes.clone(),
            limits,
            overrides: self.overrides.clone(),
            network: Some(network),
        }
    }

    /// The policy of a TOML file (see the module docs); rules not named take `default`
    /// (enforce when absent).
    pub fn from_toml(text: &str) -> std::result::Result<Policy, PolicyError> {
        let f: PolicyFile = toml::from_str(text)?;
        let limits = Policy::merged(Limits::default(), &f.limits)?;
        crate::policy_onchain::validate_allowlist(&limits.allowlist, None)
            .map_err(PolicyError::Allowlist)?;
        let mut p = Policy::all(f.default.unwrap_or(Mode::Enforce));
        p.limits = limits;
        p.overrides = f.limits;
        for (name, mode) in f.rules {
            let Some((known, _)) = RULES.iter().find(|(n, _)| *n == name) else {
                return Err(PolicyError::UnknownRule(name));
            };
            p.modes.insert(known, mode);
        }
        Ok(p)
    }

    /// The mode of `rule`.
    pub fn mode(&self, rule: &str) -> Mode {
        self.modes.get(rule).copied().unwrap_or(Mode::Enforce)
    }

    /// Checks `rule`: `ok` passes; otherwise in enforce mode it is a [`SignerError::Policy`]
    /// naming the rule, and in warn mode a log line.
    pub fn check(
        &self,
        rule: &'static str,
        ok: bool,
        detail: impl FnOnce() -> String,
    ) -> Result<()> {
        // A rule the policy file cannot name would always be enforced: every test that
        // reaches a check catches a misspelt one.
        debug_assert!(
            RULES.iter().any(|(r, _)| *r == rule),
            "policy rule `{rule}` is not in RULES"
        );
        if ok {
            return Ok(());
        }
        let detail = detail();
        match self.mode(rule) {
            Mode::Enforce => {
                log::warn!("policy {rule} refused: {detail}");
                Err(SignerError::Policy { rule, detail })
            }
            Mode::Warn => {
                log::warn!("policy {rule} (warn only) violated: {detail}");
                Ok(())
            }
        }
    }

    /// The effective policy as TOML, for `signer policy show`: the limits of the network it
    /// is for (mainnet's until one is given), and a note on which defaults differ by network.
    pub fn to_toml(&self) -> String {
        let mut s = String::from("[rules]\n");
        for (name, desc) in RULES {
            s.push_str(&format!("# {desc}\n{name} = \"{}\"\n", self.mode(name)));
        }
        let network = self.network.unwrap_or(bitcoin::Network::Bitcoin);
        s.push_str(&format!("\n# limits on {network}"));
        if !self.overrides.is_empty() {
            let set: Vec<&str> = self.overrides.keys().map(String::as_str).collect();
            s.push_str(&format!(
                " (set by the policy file on every network: {})",
                set.join(", ")
            ));
        }
        s.push('\n');
        for (name, why) in crate::limits::TEST_NETWORK_DEFAULTS {
            if !self.overrides.contains_key(*name) {
                s.push_str(&format!("# default {name} differs by network: {why}\n"));
            }
        }
        s.push_str("[limits]\n");
        s.push_str(&toml::to_string(&self.limits).unwrap_or_default());
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_modes_and_unknown_rules() {
        let p = Policy::from_toml("default = \"warn\"\n[rules]\nrevoke-in-order = \"enforce\"\n")
            .unwrap();
        assert_eq!(p.mode("revoke-in-order"), Mode::Enforce);
        assert_eq!(p.mode("commitment-holder-not-revoked"), Mode::Warn);
        assert!(matches!(
            Policy::from_toml("[rules]\nrevoke-in-ordr = \"warn\"\n"),
            Err(PolicyError::UnknownRule(_))
        ));
        assert!(Policy::from_toml("bogus = 1").is_err());
        assert!(matches!(
            Policy::from_toml("[limits]\nallowlist = [\"not an address\"]\n"),
            Err(PolicyError::Allowlist(_))
        ));
        let back = Policy::from_toml(&p.to_toml()).unwrap();
        assert_eq!(back.mode("revoke-in-order"), Mode::Enforce);
    }

    #[test]
    fn enforce_refuses_and_warn_passes() {
        let e = Policy::enforcing()
            .check("revoke-in-order", false, || "x".into())
            .unwrap_err();
        assert_eq!(e.rule(), Some("revoke-in-order"));
        assert!(Policy::warn_only()
            .check("revoke-in-order", false, || "x".into())
            .is_ok());
    }
}
