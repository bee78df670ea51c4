//! The operator's limits: the numbers the policy rules compare against. Defaults depend on
//! the network the node runs on (learnt from `hsmd_init`): protective bounds on mainnet, and
//! on the test networks (testnet, testnet4, signet, regtest) the values a stock node uses
//! there, so that a default lightningd works unchanged. A policy file's `[limits]` table
//! overrides any of them on every network.

use serde::{Deserialize, Serialize};

/// Every limit the policy rules use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Smallest `to_self_delay` (blocks) either side may impose (`channel-to-self-delay`).
    pub min_to_self_delay: u16,
    /// Largest `to_self_delay` (blocks) either side may impose: funds locked longer than this
    /// are at the mercy of the delay (`channel-to-self-delay`).
    pub max_to_self_delay: u16,
    /// Largest channel value in satoshis (`channel-max-value`).
    pub max_channel_value_sat: u64,
    /// Most a channel we fund may push to the peer at opening, millisatoshis
    /// (`channel-push-limit`): a push is a payment made without an invoice.
    pub max_push_msat: u64,
    /// Smallest dust limit in satoshis (`channel-dust-limit`). hsmd's protocol does not carry
    /// the dust limits, so this is checked where it shows: every output of a commitment
    /// (anchors aside) is at least this much, as BOLT 3 trims anything below the dust limit.
    pub min_dust_limit_sat: u64,
    /// Largest dust limit in satoshis. Not checked: hsmd's protocol does not carry the dust
    /// limits, and a trimmed output leaves no trace of the limit that trimmed it. What a high
    /// dust limit costs (value trimmed into fees) is bounded by `max_commitment_dust_sat`.
    pub max_dust_limit_sat: u64,
    /// Most satoshis a commitment may leave out of its outputs beyond its BOLT 3 fee and
    /// anchors: trimmed HTLCs and balances, and rounding (`commitment-balance`). Keep it above
    /// Core Lightning's `max-dust-htlc-exposure-msat` (50 000 sat by default) plus twice the
    /// dust limit. Up to this much can move through trimmed outputs per commitment unseen.
    pub max_commitment_dust_sat: u64,
    /// Smallest commitment fee rate, sat per 1000 weight (`commitment-feerate`).
    pub min_feerate_per_kw: u32,
    /// Largest commitment fee rate, sat per 1000 weight (`commitment-feerate`).
    pub max_feerate_per_kw: u32,
    /// Most HTLCs on one commitment (`commitment-htlc-limits`).
    pub max_htlcs: usize,
    /// Largest HTLC in millisatoshis (`commitment-htlc-limits`).
    pub max_htlc_value_msat: u64,
    /// Largest fee rate of an on-chain transaction we sign, sat per 1000 weight
    /// (`onchain-fee-cap`).
    pub max_onchain_feerate_per_kw: u64,
    /// Largest absolute fee of an on-chain transaction we sign, satoshis (`onchain-fee-cap`).
    pub max_onchain_fee_sat: u64,
    /// Destinations outside the wallet that withdrawals, sweeps and closes may pay: addresses
    /// of this node's network, or extended public keys (`xpub`/`tpub`) whose first
    /// `allowlist_xpub_depth` receive (0/i) and change (1/i) P2WPKH and P2TR addresses are
    /// allowed (`onchain-destination-allowlisted`).
    pub allowlist: Vec<String>,
    /// How many receive and change addresses of each allowlisted extended public key are
    /// allowed (`onchain-destination-allowlisted`).
    pub allowlist_xpub_depth: u32,
    /// How many wallet keys (index 0 up) an output is compared with when its PSBT does not name
    /// the wallet key it pays (`onchain-destination-allowlisted`).
    pub wallet_scan_depth: u32,
    /// Largest payment approved without the operator, millisatoshis (`invoice-auto-approve`).
    pub max_auto_approve_msat: u64,
    /// Rolling window of the velocity limit, seconds (`invoice-velocity`).
    pub velocity_window_secs: u64,
    /// Most satoshis paid within the window (`invoice-velocity`).
    pub velocity_limit_sat: u64,
    /// Most invoices tracked at once (`invoice-max-tracked`).
    pub max_tracked_invoices: usize,
    /// How long a payment waits for the operator's decision before it is refused, seconds.
    pub approval_timeout_secs: u64,
    /// Routing fees allowed on top of an approved amount, parts per million
    /// (`payment-within-approved-amount`).
    pub max_routing_fee_ppm: u64,
    /// Routing fees allowed on top of an approved amount, fixed part in millisatoshis
    /// (`payment-within-approved-amount`).
    pub max_routing_fee_base_msat: u64,
    /// Least number of blocks by which the HTLC offered to us must expire after the one we
    /// offer for it, for a forward (`htlc-forward-matched`): the time left to claim upstream
    /// once the downstream peer claimed with the preimage.
    pub min_forward_cltv_delta: u32,
}

/// The limits whose default differs on the test networks, with why.
pub const TEST_NETWORK_DEFAULTS: &[(&str, &str)] = &[(
    "min_to_self_delay",
    "0 on test networks: regtest nodes ask for delays of a few blocks (Core Lightning's \
     developer mode uses 5 or 6); on mainnet a short delay gives too little time to punish \
     a revoked commitment",
)];

impl Limits {
    /// The default limits on `network`.
    pub fn for_network(network: bitcoin::Network) -> Limits {
        let mut l = Limits::default();
        if network != bitcoin::Network::Bitcoin {
            l.min_to_self_delay = 0;
        }
        l
    }
}

/// The mainnet defaults (see [`Limits::for_network`] for the others).
impl Default for Limits {
    fn default() -> Self {
        Limits {
            min_to_self_delay: 144,
            max_to_self_delay: 2016,
            max_channel_value_sat: 100_000_000,
            max_push_msat: 0,
            min_dust_limit_sat: 354,
            max_dust_limit_sat: 20_000,
            max_commitment_dust_sat: 60_000,
            min_feerate_per_kw: 253,
            max_feerate_per_kw: 100_000,
            max_htlcs: 483,
            max_htlc_value_msat: 100_000_000_000,
            max_onchain_feerate_per_kw: 250_000,
            max_onchain_fee_sat: 1_000_000,
            allowlist: Vec::new(),
            allowlist_xpub_depth: 1_000,
            wallet_scan_depth: 1_000,
            max_auto_approve_msat: 100_000_000,
            velocity_window_secs: 86_400,
            velocity_limit_sat: 1_000_000,
            max_tracked_invoices: 1_000,
            approval_timeout_secs: 60,
            max_routing_fee_ppm: 10_000,
            max_routing_fee_base_msat: 5_000,
            min_forward_cltv_delta: 6,
        }
    }
}
