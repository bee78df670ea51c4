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
