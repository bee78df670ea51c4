//! The `node` library's hsmd client against the real processes: `vls-proxy` started as
//! lightningd starts hsmd, and a `signer` daemon dialling it over mutual TLS.

use bitcoin::hashes::Hash;
use node::replay::env::CaseEnv;
use node::{init_request, ClientError, Hsmd, HsmdConfig, SpawnError, StatusEvent, Subdaemon};
use protocol::msgs::CheckOutpoint;
use protocol::types::NodeId;
use secp256k1::{PublicKey, Secp256k1, SecretKey};
use std::time::Duration;
use tests::{binaries, data_file, replay_config};

const SECRET: [u8; 32] = [0x42; 32];
const T: Duration = Duration::from_secs(20);

async fn start() -> CaseEnv {
    let cfg = replay_config(data_file("conformance/cln-hsmd-golden.json"));
    CaseEnv::start(&cfg, "hsmd_client", &SECRET, None)
        .await
        .expect("case environment")
}

fn point(k: u8) -> PublicKey {
    PublicKey::from_secret_key(&Secp256k1::new(), &SecretKey::from_slice(&[k; 32]).unwrap())
}

async fn init(env: &CaseEnv) -> NodeId {
    let req = init_request(bitcoin::Network::Regtest, None);
    let reply = tokio::time::timeout(T, env.hsmd.master().init(&req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply.hsm_version, 6);
    reply.node_id
}

#[tokio::test]
async fn a_proxy_with_another_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = HsmdConfig::new(&binaries().proxy, "v0.0.1-not-this", dir.path());
    match Hsmd::spawn(cfg).await {
        Err(SpawnError::VersionMismatch { got, .. }) => assert_eq!(got, "v26.06.6"),
        other => panic!("expected a version mismatch, got {other:?}"),
    }
}

#[tokio::test]
async fn status_version_init_and_clean_shutdown() {
    let env = start().await;
    let status = env.hsmd.status();
    let (i, ev) = tokio::time::timeout(
        T,
        status.wait_for(0, |e| matches!(e, StatusEvent::Version(_))),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!((i, ev), (0, StatusEvent::Version("v26.06.6".into())));
    init(&env).await;
    // lightningd closing fd 3 ends hsmd cleanly.
    let exit = tokio::time::timeout(T, env.hsmd.shutdown())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exit.code(), Some(0));
    env.teardown().await;
}

#[tokio::test]
async fn connectd_client_does_ecdh_like_the_master() {
    let env = start().await;
    let node_id = init(&env).await;
    let connectd = env
        .hsmd
        .new_client(node_id, 0, Subdaemon::Connectd.permissions())
        .await
        .unwrap();
    let p = point(7);
    let via_client = tokio::time::timeout(T, connectd.ecdh(&p))
        .await
        .unwrap()
        .unwrap();
    let via_master = tokio::time::timeout(T, env.hsmd.master().ecdh(&p))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(via_client, via_master);
    env.teardown().await;
}

#[tokio::test]
async fn channel_clients_get_points_and_a_forbidden_request_closes_only_that_client() {
    let env = start().await;
    init(&env).await;
    let peer = NodeId::from_pubkey(&point(9));
    let channeld = env
        .hsmd
        .new_client(peer, 5, Subdaemon::Channeld.permissions())
        .await
        .unwrap();
    let p0 = tokio::time::timeout(T, channeld.get_per_commitment_point(0))
        .await
        .unwrap()
        .unwrap();
    assert!(p0.old_commitment_secret.is_none());

    // openingd may not do ECDH: a bad request, reported on the status channel.
    let openingd = env
        .hsmd
        .new_client(peer, 6, Subdaemon::Openingd.permissions())
        .await
        .unwrap();
    let mark = env.hsmd.status().mark();
    let r = tokio::time::timeout(T, openingd.ecdh(&point(3)))
        .await
        .unwrap();
    assert!(matches!(r, Err(ClientError::Closed)), "{r:?}");
    let (_, ev) = tokio::time::timeout(
        T,
        env.hsmd
            .status()
            .wait_for(mark, |e| matches!(e, StatusEvent::ClientBadRequest { .. })),
    )
    .await
    .unwrap()
    .unwrap();
    let StatusEvent::ClientBadRequest {
        node_id, request, ..
    } = ev
    else {
        unreachable!()
    };
    assert_eq!(node_id, peer);
    assert_eq!(request[..2], [0, 1]);

    // Everything else keeps working.
    let p1 = tokio::time::timeout(T, channeld.get_per_commitment_point(1))
        .await
        .unwrap()
        .unwrap();
    assert_ne!(p0.per_commitment_point, p1.per_commitment_point);
    tokio::time::timeout(T, env.hsmd.master().derive_secret(b"scb secret"))
        .await
        .unwrap()
        .unwrap();
    assert!(env.hsmd.exit_status().is_none());
    env.teardown().await;
}

#[tokio::test]
async fn a_forbidden_master_request_stops_the_proxy() {
    let env = start().await;
    init(&env).await;
    let req = CheckOutpoint::new(bitcoin::Txid::from_byte_array([1; 32]), 0);
    let r = tokio::time::timeout(T, env.hsmd.master().call(&req))
        .await
        .unwrap();
    assert!(matches!(r, Err(ClientError::Closed)), "{r:?}");
    let exit = tokio::time::timeout(T, env.hsmd.wait_exit())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exit.code(), Some(242));
    assert!(env.hsmd.status().failure().is_some());
    env.teardown().await;
}

/// lightningd starts hsmd with `--log-io`, `--log-trace`, `--dev-debug-self` and
/// `--developer`, in that order, each when it applies, and with `--developer` sends
/// `hsmd_dev_preinit` (no reply) before `hsmd_init`. Every combination starts and serves.
#[tokio::test]
async fn started_with_every_combination_of_lightningds_flags() {
    use protocol::msgs::{DevPreinit, DevPreinitTlvs, PreapproveInvoice, PreapproveInvoiceReply};
    use protocol::types::WireString;
    const FLAGS: [&str; 4] = ["--log-io", "--log-trace", "--dev-debug-self", "--developer"];
    for mask in 0..16u32 {
        let args: Vec<String> = (0..4)
            .filter(|i| mask & (1 << i) != 0)
            .map(|i| FLAGS[i].to_string())
            .collect();
        let developer = args.iter().any(|a| a == "--developer");
        let mut cfg = replay_config(data_file("conformance/cln-hsmd-golden.json"));
        cfg.proxy_args = args.clone();
        let env = CaseEnv::start(&cfg, "flags", &SECRET, None)
            .await
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        if developer {
            // As lightningd sends it with `--dev-hsmd-fail-preapprove`.
            let preinit = DevPreinit::new(DevPreinitTlvs {
                fail_preapprove: Some(true),
                no_preapprove_check: Some(true),
                warn_on_overgrind: None,
                unknown: vec![],
            });
            env.hsmd
                .master()
                .send_without_reply(&preinit.encode().unwrap())
                .await
                .unwrap();
        }
        let req = init_request(bitcoin::Network::Regtest, None);
        let reply = tokio::time::timeout(T, env.hsmd.master().init(&req))
            .await
            .unwrap_or_else(|_| panic!("{args:?}: init timed out"))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        // `no_preapprove_check` takes the check messages out of the capabilities.
        assert_eq!(
            reply.hsm_capabilities.contains(&51),
            !developer,
            "{args:?}: {:?}",
            reply.hsm_capabilities
        );
        if developer {
            // `fail_preapprove`: every preapproval is answered "not approved".
            let req = PreapproveInvoice::new(WireString::from("lnbcrt1x"));
            let r = env
                .hsmd
                .master()
                .request(&req.encode().unwrap())
                .await
                .unwrap();
            assert!(!PreapproveInvoiceReply::decode(&r).unwrap().approved);
        }
        env.teardown().await;
    }
}
