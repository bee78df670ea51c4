//! A third, independent check: the lightningd <-> hsmd traffic that the VLS project recorded
//! from Core Lightning v0.10 (`tests/data/conformance/vls-recorded/`, old protocol), for the
//! secret "lightning-2". Only the answers whose layout did not change since are compared:
//! node id and xpub, ECDH, basepoints, invoice and channel-update signatures, and
//! per-commitment points and revealed secrets.

use super::corpus::Wire;
use super::{Bip32Version, KeyManager};
use crate::secret::HsmSecret;
use crate::sign::digest::{gossip_digest, invoice_digest, CHANNEL_UPDATE_SIGNED_FROM};
use crate::sign::{recoverable_to_wire, sign_ecdsa_cln_grind, sign_ecdsa_recoverable};

const R3: &str = include_str!("../../../tests/data/conformance/vls-recorded/r_3.hex");
const W3: &str = include_str!("../../../tests/data/conformance/vls-recorded/w_3.hex");
const R5: &str = include_str!("../../../tests/data/conformance/vls-recorded/r_5.hex");
const W5: &str = include_str!("../../../tests/data/conformance/vls-recorded/w_5.hex");
const R6: &str = include_str!("../../../tests/data/conformance/vls-recorded/r_6.hex");
const W6: &str = include_str!("../../../tests/data/conformance/vls-recorded/w_6.hex");

/// The messages of one recorded file: every second line (after the length line), decoded.
fn frames(text: &str) -> Vec<Vec<u8>> {
    text.lines()
        .skip(1)
        .step_by(2)
        .map(|line| hex::decode(line).expect("hex"))
        .collect()
}

fn kind(message: &[u8]) -> u16 {
    u16::from_be_bytes([message[0], message[1]])
}

/// The messages of `frames` with type `t`, bodies only.
fn of_kind(frames: &[Vec<u8>], t: u16) -> Vec<Vec<u8>> {
    frames
        .iter()
        .filter(|m| kind(m) == t)
        .map(|m| m[2..].to_vec())
        .collect()
}

#[test]
fn recorded_vls_traffic_matches() {
    let mut seed = [0u8; 32];
    seed[..11].copy_from_slice(b"lightning-2");
    let (requests, replies) = (frames(R3), frames(W3));
    // The master fd is strictly request/reply.
    assert_eq!(requests.len(), replies.len());
    let mut init = Wire::new(&requests[0][2..]);
    let version = Bip32Version::from_init(init.u32(), init.u32()).unwrap();
    let keys = KeyManager::new(&HsmSecret::from_plain(seed), version).unwrap();
    let mut checked = 0;

    for (request, reply) in requests.iter().zip(&replies) {
        let (mut req, mut rep) = (Wire::new(&request[2..]), Wire::new(&reply[2..]));
        match (kind(request), kind(reply)) {
            (11, 111) => {
                assert_eq!(rep.array::<33>(), keys.node_id().serialize());
                assert_eq!(rep.array::<78>(), keys.bip32_base_xpub().encode());
            }
            (1, 100) => assert_eq!(rep.array::<32>(), keys.ecdh(&req.pubkey())),
            (10, 110) => {
                let (peer, dbid) = (req.array::<33>(), req.u64());
                let points = keys.channel_secrets(&peer, dbid).unwrap().basepoints();
                for point in [
                    points.revocation,
                    points.payment,
                    points.htlc,
                    points.delayed_payment,
                ] {
                    assert_eq!(rep.pubkey(), point);
                }
                assert_eq!(rep.pubkey(), points.funding_pubkey);
            }
            (8, 108) => {
                let (u5, hrp) = (req.var16(), req.var16());
                let sig = sign_ecdsa_recoverable(&invoice_digest(hrp, u5), keys.node_secret_key());
                assert_eq!(rep.array::<65>(), recoverable_to_wire(&sig));
            }
            _ => continue,
        }
        checked += 1;
    }
    assert_eq!(checked, 11, "init, 7 ECDH, basepoints, 2 invoices");

    // fd 5: one channel_update signature.
    let (update, signed) = (&frames(R5)[0], &frames(W5)[0]);
    let msg = gossip_digest(Wire::new(&update[2..]).var16(), CHANNEL_UPDATE_SIGNED_FROM).unwrap();
    let signed_update = Wire::new(&signed[2..]).var16();
    assert_eq!(
        signed_update[2..66],
        sign_ecdsa_cln_grind(&msg, keys.node_secret_key()).serialize_compact()
    );

    // fd 6: per-channel client of the fourth client_hsmfd (peer, dbid 1); its
    // get_per_commitment_point requests and replies pair up in order.
    let hsmfd = of_kind(&requests, 9).pop().expect("client_hsmfd");
    let mut wire = Wire::new(&hsmfd);
    let secrets = keys
        .channel_secrets(&wire.array::<33>(), wire.u64())
        .unwrap();
    let (points_asked, points) = (of_kind(&frames(R6), 18), of_kind(&frames(W6), 118));
    assert_eq!(points_asked.len(), 16);
    assert_eq!(points_asked.len(), points.len());
    for (asked, point) in points_asked.iter().zip(&points) {
        let (n, mut reply) = (Wire::new(asked).u64(), Wire::new(point));
        assert_eq!(
            reply.pubkey(),
            secrets.per_commitment_point(n).unwrap(),
            "point {n}"
        );
        // The old protocol also reveals secret n - 2 from n = 2 on.
        let old = reply.optional(32);
        assert_eq!(old.is_some(), n >= 2, "secret with point {n}");
        if let Some(old) = old {
            assert_eq!(
                old,
                secrets.per_commitment_secret(n - 2).unwrap(),
                "secret {}",
                n - 2
            );
        }
    }
}
