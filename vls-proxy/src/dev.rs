//! Core Lightning's developer mode, as its hsmd honours it: the subdaemon flags lightningd
//! passes (`--developer`, `--log-io`, `--log-trace`, `--dev-debug-self`) and the knobs of
//! `hsmd_dev_preinit`, which lightningd sends before `hsmd_init` when it runs with
//! `--developer` (no reply: hsmd reads on).
//!
//! The knobs only ever make the proxy refuse more or advertise less: `fail_preapprove`
//! answers every preapproval "not approved" here, `no_preapprove_check` takes the preapproval
//! check messages out of the capabilities `hsmd_init`'s reply lists, `warn_on_overgrind` is
//! noted (the proxy grinds no signature).

use protocol::msgs::{
    DevMemleak, DevMemleakReply, DevPreinit, InitReplyV4, PreapproveInvoice,
    PreapproveInvoiceCheck, PreapproveInvoiceReply, PreapproveKeysend, PreapproveKeysendCheck,
    PreapproveKeysendReply,
};
use protocol::msgs::{FAIL_INTERNAL_ERROR, FAIL_MASTER_IO};
use std::sync::Mutex;

/// The subdaemon flags lightningd gives hsmd (`lightningd/subd.c`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SubdaemonFlags {
    /// `--developer`: lightningd runs in developer mode.
    pub developer: bool,
    /// `--log-io`: hsmd's log is printed at io level.
    pub log_io: bool,
    /// `--log-trace`: hsmd's log is printed at trace level.
    pub log_trace: bool,
    /// `--dev-debug-self`: lightningd wants the subdaemon under a debugger.
    pub debug_self: bool,
}

impl SubdaemonFlags {
    /// How much of the proxy's own log lightningd should see.
    pub fn log_level(&self) -> log::LevelFilter {
        if self.log_io || self.log_trace {
            log::LevelFilter::Trace
        } else {
            log::LevelFilter::Debug
        }
    }
}

#[derive(Default, Clone, Copy)]
struct Knobs {
    fail_preapprove: bool,
    no_preapprove_check: bool,
    warn_on_overgrind: bool,
}

/// Developer mode's state for one proxy.
pub struct DevMode {
    flags: SubdaemonFlags,
    knobs: Mutex<Knobs>,
}

/// What the proxy does with a master request in developer mode.
#[derive(Debug, PartialEq, Eq)]
pub enum Local {
    /// Not a developer-mode request: route it to the signer.
    Route,
    /// Handled here, no reply (as hsmd does for `hsmd_dev_preinit`).
    NoReply,
    /// Answered here with this reply.
    Reply(Vec<u8>),
    /// A request hsmd would stop on: the `status_fail` reason and description.
    Fatal(u8, String),
}

impl DevMode {
    /// Developer mode as `flags` set it, with every knob off.
    pub fn new(flags: SubdaemonFlags) -> Self {
        DevMode {
            flags,
            knobs: Mutex::new(Knobs::default()),
        }
    }

    fn knobs(&self) -> Knobs {
        *self.knobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What to do with `msg`, a request on lightningd's fd 3.
    pub fn master_request(&self, msg: &[u8]) -> Local {
        match msg_type(msg) {
            DevPreinit::TYPE => {
                if !self.flags.developer {
                    // hsmd asserts developer mode here and dies of the signal.
                    log::error!("hsmd_dev_preinit from a lightningd that did not pass --developer");
                    return Local::Fatal(FAIL_INTERNAL_ERROR, "FATAL SIGNAL".into());
                }
                let Ok(m) = DevPreinit::decode(msg) else {
                    return Local::Fatal(
                        FAIL_MASTER_IO,
                        format!("Error parsing {}: {}", DevPreinit::TYPE, hex::encode(msg)),
                    );
                };
                let mut k = self.knobs.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(v) = m.tlvs.fail_preapprove {
                    k.fail_preapprove = v;
                }
                if let Some(v) = m.tlvs.no_preapprove_check {
                    k.no_preapprove_check = v;
                }
                if let Some(v) = m.tlvs.warn_on_overgrind {
                    k.warn_on_overgrind = v;
                }
                log::debug!(
                    "preinit: dev_fail_preapprove = {}, dev_no_preapprove_check = {}, dev_warn_on_overgrind = {}",
                    u8::from(k.fail_preapprove),
                    u8::from(k.no_preapprove_check),
                    u8::from(k.warn_on_overgrind)
                );
                Local::NoReply
            }
            DevMemleak::TYPE if self.flags.developer => {
                // The proxy holds no key material to leak and is not tracked by lightningd's
                // memleak machinery: nothing found.
                match DevMemleakReply::new(false).encode() {
                    Ok(r) => Local::Reply(r),
                    Err(e) => Local::Fatal(
                        FAIL_INTERNAL_ERROR,
                        format!("encoding hsmd_dev_memleak_reply: {e}"),
                    ),
                }
            }
            _ => match self.refused_preapproval(msg) {
                // lightningd's `preapproveinvoice` and `preapprovekeysend` come on fd 3.
                Some(reply) => Local::Reply(reply),
                None => Local::Route,
            },
        }
    }

    /// The "not approved" reply to a preapproval, if `fail_preapprove` is set and `msg` is one.
    pub fn refused_preapproval(&self, msg: &[u8]) -> Option<Vec<u8>> {
        if !self.knobs().fail_preapprove {
            return None;
        }
        match msg_type(msg) {
            PreapproveInvoice::TYPE | PreapproveInvoiceCheck::TYPE => {
                PreapproveInvoiceReply::new(false).encode().ok()
            }
            PreapproveKeysend::TYPE | PreapproveKeysendCheck::TYPE => {
                PreapproveKeysendReply::new(false).encode().ok()
            }
            _ => None,
        }
    }

    /// `hsmd_init`'s reply as lightningd gets it: without the preapproval checks among the
    /// capabilities if `no_preapprove_check` is set; unchanged otherwise.
    pub fn init_reply(&self, reply: Vec<u8>) -> Vec<u8> {
        if !self.knobs().no_preapprove_check {
            return reply;
        }
        let Ok(mut r) = InitReplyV4::decode(&reply) else {
            return reply;
        };
        r.hsm_capabilities.retain(|&c| {
            c != u32::from(PreapproveInvoiceCheck::TYPE)
                && c != u32::from(PreapproveKeysendCheck::TYPE)
        });
        r.encode().unwrap_or(reply)
    }
}

fn msg_type(msg: &[u8]) -> u16 {
    protocol::peek_type(msg).unwrap_or(u16::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::msgs::DevPreinitTlvs;

    fn preinit(fail: Option<bool>, no_check: Option<bool>) -> Vec<u8> {
        DevPreinit::new(DevPreinitTlvs {
            fail_preapprove: fail,
            no_preapprove_check: no_check,
            warn_on_overgrind: Some(true),
            unknown: vec![],
        })
        .encode()
        .unwrap()
    }

    #[test]
    fn preinit_has_no_reply_and_sets_the_knobs() {
        let dev = DevMode::new(SubdaemonFlags {
            developer: true,
            ..Default::default()
        });
        let invoice = PreapproveInvoice::new(protocol::types::WireString::from("lnbcrt1"))
            .encode()
            .unwrap();
        assert_eq!(dev.refused_preapproval(&invoice), None);
        assert_eq!(
            dev.master_request(&preinit(Some(true), None)),
            Local::NoReply
        );
        let refused = dev.refused_preapproval(&invoice).unwrap();
        assert!(!PreapproveInvoiceReply::decode(&refused).unwrap().approved);
        assert_eq!(
            dev.master_request(&preinit(Some(false), None)),
            Local::NoReply
        );
        assert_eq!(dev.refused_preapproval(&invoice), None);
    }

    #[test]
    fn a_bad_preinit_or_one_without_developer_mode_is_fatal_as_in_hsmd() {
        let dev = DevMode::new(SubdaemonFlags {
            developer: true,
            ..Default::default()
        });
        let mut bad = preinit(None, None);
        bad.extend_from_slice(&[2, 5]);
        assert!(matches!(dev.master_request(&bad), Local::Fatal(0, _)));
        let plain = DevMode::new(SubdaemonFlags::default());
        assert_eq!(
            plain.master_request(&preinit(None, None)),
            Local::Fatal(3, "FATAL SIGNAL".into())
        );
    }

    #[test]
    fn memleak_is_answered_only_in_developer_mode() {
        let req = DevMemleak::new().encode().unwrap();
        let plain = DevMode::new(SubdaemonFlags::default());
        assert_eq!(plain.master_request(&req), Local::Route);
        let dev = DevMode::new(SubdaemonFlags {
            developer: true,
            ..Default::default()
        });
        let Local::Reply(r) = dev.master_request(&req) else {
            panic!("answered here");
        };
        assert!(!DevMemleakReply::decode(&r).unwrap().leak);
    }

    #[test]
    fn other_requests_are_routed() {
        let dev = DevMode::new(SubdaemonFlags::default());
        assert_eq!(dev.master_request(&[0, 11, 1, 2]), Local::Route);
        assert_eq!(dev.master_request(&[]), Local::Route);
    }
}
