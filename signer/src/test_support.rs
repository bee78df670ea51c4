//! Fixtures shared by the signer's unit tests: a signer initialized as lightningd
//! initializes hsmd on regtest.

use crate::context::ClientContext;
use crate::policy::Policy;
use crate::store::Store;
use crate::Signer;

/// `hsmd_init` for regtest, protocol versions 4..=6 (from the golden corpus).
pub(crate) const INIT_REGTEST: &str = "000b043587cf0435839406226e46111a0b59caaf126043eb5bbf28c34f3a5e332a1fc7b2b73cf188910f00000000000000000400000006";

/// A signer for the secret `[1; 32]` under `policy`, in memory, after `hsmd_init` on regtest.
pub(crate) fn initialized_signer(policy: Policy) -> Signer {
    let signer = Signer::new(vec![1; 32], Store::temporary().unwrap(), policy);
    signer
        .handle(
            &ClientContext::master(),
            None,
            &hex::decode(INIT_REGTEST).unwrap(),
        )
        .unwrap();
    signer
}

/// The peer's signature on our commitment `tx` (input 0 spends the 2-of-2 of `ours` and the
/// peer's `peer_funding_key`, holding `value`), as `validate_commitment_tx` carries it.
pub(crate) fn peer_commitment_sig(
    tx: &bitcoin::Transaction,
    ours: &secp256k1::PublicKey,
    peer_funding_key: &secp256k1::SecretKey,
    value: bitcoin::Amount,
) -> protocol::types::BitcoinSignature {
    let theirs = peer_funding_key.public_key(secp256k1::SECP256K1);
    let script = crate::bolt3::funding_redeem_script(ours, &theirs);
    let msg = crate::sign::segwit_v0_sighash(tx, 0, &script, value, bitcoin::EcdsaSighashType::All)
        .unwrap();
    protocol::types::BitcoinSignature {
        sig: crate::sign::sign_ecdsa_cln_grind(&msg, peer_funding_key),
        sighash: protocol::types::SighashFlag::All,
    }
}
