//! `vls_check_request` (our extension, `spec/vls_wire.csv`): whether the signer would sign a
//! request that lightningd is about to send on its own fd, asked by a Core Lightning plugin
//! through the proxy. A refusal names the policy rule; the names here are the answers that
//! are not the policy's.

use crate::msgs::VlsCheckRequestReply;
use crate::types::WireString;

/// The request could not be judged: it is not a `vls_check_request`, the request inside does
/// not parse or may not be checked, or the signer would stop serving rather than answer it.
pub const BAD_REQUEST: &str = "bad-request";

/// No answer could be had from the signer (not connected, too slow, or too many checks
/// waiting for it). Says nothing about the request.
pub const SIGNER_UNAVAILABLE: &str = "signer-unavailable";

/// Whether `rule` is a policy rule's verdict on the request, rather than one of the answers
/// above that say it could not be judged.
pub fn is_policy_rule(rule: &str) -> bool {
    !rule.is_empty() && rule != BAD_REQUEST && rule != SIGNER_UNAVAILABLE
}

/// The reply that the request would be signed.
pub fn approval() -> VlsCheckRequestReply {
    VlsCheckRequestReply::new(true, WireString::from(""), WireString::from(""))
}

/// The reply that `rule` refuses the request, for `detail` (control characters become spaces).
pub fn refusal(rule: &str, detail: &str) -> VlsCheckRequestReply {
    VlsCheckRequestReply::new(false, WireString::from(rule), WireString::from(detail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_policy_rules_judge_the_request() {
        assert!(is_policy_rule("onchain-destination-allowlisted"));
        assert!(!is_policy_rule(BAD_REQUEST));
        assert!(!is_policy_rule(SIGNER_UNAVAILABLE));
        assert!(!is_policy_rule(""));
        assert_eq!(approval().encode().unwrap(), vec![0xeb, 0x28, 1, 0, 0]);
        let r = refusal("x", "a\nb");
        assert!(!r.ok);
        assert_eq!(r.detail.as_str(), Some("a b"));
    }
}
