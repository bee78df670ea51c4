//! Who may be the signer, and what the proxy does for the node on the link: a signer with
//! another secret is refused, a peer without the link's certificate gets no stream, a second
//! healthy signer is refused, an approved preapproval is answered from the cache, and
//! temporary failures are retried within a budget. Real processes on loopback; the test
//! signer of the last test speaks the gRPC contract itself.

use node::bench::{point, Rig};
use node::invoice::{create_invoice, InvoiceRequest};
use node::{init_request, ClientError, HsmClient, StatusEvent, Subdaemon};
use proto::hsmd::hsmd_client::HsmdClient;
use proto::hsmd::{SignerRequest, SignerResponse};
use proto::tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use protocol::msgs::{EcdhReq, GetPerCommitmentPoint, RevokeCommitmentTx, SignMessage};
use protocol::types::NodeId;
use signer::{ClientContext, Policy, Signer, Store};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tests::{reference_signer, rig_config, wait_metric};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

const SECRET: [u8; 32] = [0x77; 32];
const OTHER_SECRET: [u8; 32] = [0x99; 32];
const T: Duration = Duration::from_secs(30);

fn peer() -> NodeId {
    NodeId::from_pubkey(&point(9))
}

fn channeld(dbid: u64) -> ClientContext {
    ClientContext::client(peer(), dbid, Subdaemon::Channeld.permissions())
}

/// Sends the node's init and checks the reply is the reference's; returns the reference.
async fn init(rig: &Rig) -> Signer {
    let init = init_request(bitcoin::Network::Regtest, None)
        .encode()
        .unwrap();
    let (reference, want) = reference_signer(&SECRET, Policy::warn_only(), &init);
    let got = tokio::time::timeout(T, rig.hsmd.master().request(&init))
        .await
        .expect("init answered")
        .expect("init");
    assert_eq!(got, want, "init reply");
    reference
}

async fn client(rig: &Rig, dbid: u64) -> HsmClient {
    rig.hsmd
        .new_client(peer(), dbid, Subdaemon::Channeld.permissions())
        .await
        .expect("client_hsmfd")
}

/// Sends `req` and checks the reply against the reference's for `ctx`.
async fn check(client: &HsmClient, reference: &Signer, ctx: &ClientContext, req: &[u8]) {
    let want = reference.handle(ctx, None, req).expect("reference");
    let got = tokio::time::timeout(T, client.request(req))
        .await
        .expect("answered")
        .expect("request");
    assert_eq!(got, want, "reply to {}", hex::encode(&req[..2]));
}

/// Once the first signer is gone, a signer with another secret dials in: the proxy replays
/// the node's init to it, sees another node id, and refuses it. The node's requests wait (it
/// gets nothing from that signer), lightningd's log says why, and the right signer's return
/// answers them.
#[tokio::test]
async fn a_signer_with_another_secret_is_refused_and_the_node_sees_nothing_from_it() {
    tokio::time::timeout(Duration::from_secs(90), another_secret())
        .await
        .expect("the test is bounded");
}

async fn another_secret() {
    let mut cfg = rig_config(&SECRET);
    cfg.metrics = true;
    cfg.log_filter = "info,signer::daemon=debug,signer::lanes=debug".into();
    let rig = Rig::start(cfg).await.expect("rig");
    let reference = init(&rig).await;
    let c1 = client(&rig, 1).await;
    let ecdh = EcdhReq::new(point(3)).encode().unwrap();
    check(&c1, &reference, &channeld(1), &ecdh).await;

    rig.kill_signer().await;
    let (_, ok) = wait_metric(&rig, "vls_proxy_signer_disconnects_total", T, |v| v >= 1.0).await;
    assert!(ok, "the proxy saw the signer go");
    let wrong_dir = rig.init_data_dir("wrong", &OTHER_SECRET).await.unwrap();
    let mark = rig.hsmd.status().mark();
    let wrong = rig
        .spawn_signer(
            &wrong_dir,
            rig.port,
            "wrong",
            "info,signer::daemon=debug,signer::lanes=debug",
        )
        .unwrap();

    let revoke = RevokeCommitmentTx::new(0).encode().unwrap();
    let sign = SignMessage::new(b"hello".to_vec()).encode().unwrap();
    let waiting = async {
        let (a, b) = tokio::join!(
            tokio::time::timeout(T, c1.request(&revoke)),
            tokio::time::timeout(T, rig.hsmd.master().request(&sign)),
        );
        (a, b, Instant::now())
    };
    let refuse_then_return = async {
        let refusal = tokio::time::timeout(
            T,
            rig.hsmd.status().wait_for(mark, |e| {
                matches!(e, StatusEvent::Log { entry, .. } if entry.contains("refusing signer"))
            }),
        )
        .await
        .expect("lightningd's log tells of the refusal")
        .expect("the status channel is open");
        eprintln!("lightningd's log: {:?}", refusal.1);
        // It dials again and is refused again; the node still waits.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let log = rig.log("proxy");
        assert!(
            log.contains("refusing signer from") && log.contains("expected"),
            "proxy log:\n{log}"
        );
        wrong.kill();
        let _ = tokio::time::timeout(T, wrong.wait()).await;
        let back = Instant::now();
        rig.start_signer().unwrap();
        back
    };
    let ((revoked, signed, answered), back) = tokio::join!(waiting, refuse_then_return);
    assert!(
        answered >= back,
        "a request was answered before the right signer was back"
    );
    let want_revoke = reference
        .handle(&channeld(1), None, &revoke)
        .expect("reference");
    let want_sign = reference
        .handle(&ClientContext::master(), None, &sign)
        .expect("reference");
    assert_eq!(revoked.expect("answered").expect("revoke"), want_revoke);
    assert_eq!(signed.expect("answered").expect("sign"), want_sign);
    check(&c1, &reference, &channeld(1), &ecdh).await;
    assert!(rig.hsmd.status().failure().is_none());

    // The wrong signer answered nothing but the replayed init, and kept no state.
    for l in rig.log("wrong").lines().filter(|l| l.contains("answered")) {
        assert!(l.contains("(type 11)"), "the wrong signer answered: {l}");
    }
    let store = Store::open(&wrong_dir.join("state.redb")).unwrap();
    assert!(store.channels().unwrap().is_empty());
    rig.teardown().await;
}

/// Tries to open a signer stream through `endpoint` and read a request from it: `Ok` with
/// how it was refused, `Err` if a request came.
async fn try_stream(endpoint: Endpoint) -> Result<String, String> {
    let channel = match tokio::time::timeout(Duration::from_secs(15), endpoint.connect()).await {
        Err(_) => return Ok("connect timed out".into()),
        Ok(Err(e)) => return Ok(format!("connect: {e:?}")),
        Ok(Ok(c)) => c,
    };
    let mut client = HsmdClient::new(channel);
    let (_tx, rx) = mpsc::unbounded_channel::<SignerResponse>();
    let open = tokio::time::timeout(
        Duration::from_secs(15),
        client.signer_stream(UnboundedReceiverStream::new(rx)),
    )
    .await;
    let mut inbound = match open {
        Err(_) => return Ok("stream: timed out".into()),
        Ok(Err(status)) => return Ok(format!("stream: {status}")),
        Ok(Ok(r)) => r.into_inner(),
    };
    match tokio::time::timeout(Duration::from_secs(5), inbound.message()).await {
        Ok(Ok(Some(req))) => Err(format!("got request {}", req.request_id)),
        Ok(Ok(None)) => Ok("stream ended".into()),
        Ok(Err(status)) => Ok(format!("stream failed: {status}")),
        Err(_) => Err("a stream stayed open".into()),
    }
}

/// With no signer connected (so that any stream would be admitted), a peer with a
/// certificate from another CA, one without a certificate, and one without TLS get no
/// stream, while one with the link's certificate does. Then, while the signer is connected
/// and serving, a second healthy signer with the same secret is refused and gets no request.
#[tokio::test]
async fn only_the_links_certificate_opens_a_stream_and_a_second_signer_is_refused() {
    tokio::time::timeout(Duration::from_secs(100), certificates_and_second_signer())
        .await
        .expect("the test is bounded");
}

async fn certificates_and_second_signer() {
    let mut cfg = rig_config(&SECRET);
    cfg.metrics = true;
    let rig = Rig::start(cfg).await.expect("rig");
    let reference = init(&rig).await;
    let c1 = client(&rig, 1).await;
    let ecdh = EcdhReq::new(point(3)).encode().unwrap();
    check(&c1, &reference, &channeld(1), &ecdh).await;
    rig.kill_signer().await;
    let (connects, ok) =
        wait_metric(&rig, "vls_proxy_signer_disconnects_total", T, |v| v >= 1.0).await;
    assert!(ok, "{connects}");

    // Another CA, made as an operator makes the link's.
    let other = rig.dir().join("other-ca");
    let status = std::process::Command::new(&tests::binaries().proxy)
        .arg("certs")
        .arg("--dir")
        .arg(&other)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    proto::tls::install_crypto_provider();
    let pem = |p: std::path::PathBuf| std::fs::read(p).unwrap();
    let proxy_ca = Certificate::from_pem(pem(rig.proxy_tls_dir().join("ca.pem")));
    let https = format!("https://localhost:{}", rig.port);
    let endpoint = |tls: ClientTlsConfig| {
        Endpoint::from_shared(https.clone())
            .unwrap()
            .tls_config(tls)
            .unwrap()
    };
    let foreign = proto::tls::ClientTls::from_paths(&proto::tls::TlsPaths {
        ca: rig.proxy_tls_dir().join("ca.pem"),
        cert: other.join("signer.pem"),
        key: other.join("signer-key.pem"),
    })
    .unwrap();
    let no_cert = ClientTlsConfig::new().ca_certificate(proxy_ca);
    let plaintext = Endpoint::from_shared(format!("http://127.0.0.1:{}", rig.port)).unwrap();
    for (what, ep) in [
        ("a certificate from another CA", endpoint(foreign)),
        ("no client certificate", endpoint(no_cert)),
        ("plaintext", plaintext),
    ] {
        match try_stream(ep).await {
            Ok(how) => eprintln!("{what}: refused ({how})"),
            Err(e) => panic!("{what}: {e}"),
        }
    }
    let before = rig.metric("vls_proxy_signer_connects_total").await.unwrap();
    assert_eq!(before, 1.0, "no stream was admitted");
    // The same client code with the link's certificate gets the replayed init.
    let genuine = proto::tls::ClientTls::load(rig.signer_tls_dir()).unwrap();
    let r = try_stream(endpoint(genuine)).await;
    assert!(
        matches!(&r, Err(e) if e.starts_with("got request")),
        "with the link's certificate: {r:?}"
    );
    assert_eq!(
        rig.metric("vls_proxy_signer_connects_total").await.unwrap(),
        2.0
    );

    // The signer returns; a second, healthy one with the same secret is refused.
    rig.start_signer().unwrap();
    check(&c1, &reference, &channeld(1), &ecdh).await;
    let connects = rig.metric("vls_proxy_signer_connects_total").await.unwrap();
    let second_dir = rig.init_data_dir("second", &SECRET).await.unwrap();
    let second = rig
        .spawn_signer(
            &second_dir,
            rig.port,
            "second",
            "info,signer::daemon=debug,signer::lanes=debug",
        )
        .unwrap();
    let until = Instant::now() + Duration::from_secs(3);
    let mut n = 0u64;
    while Instant::now() < until {
        let req = GetPerCommitmentPoint::new(n).encode().unwrap();
        check(&c1, &reference, &channeld(1), &req).await;
        n += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let second_log = rig.log("second");
    assert!(
        second.exit_status().is_none(),
        "the second signer keeps trying"
    );
    assert!(
        second_log.contains("the proxy refused the stream"),
        "second signer's log:\n{second_log}"
    );
    assert!(
        !second_log.contains("answered"),
        "the second signer got a request:\n{second_log}"
    );
    assert!(rig.log("proxy").contains("refusing a second signer stream"));
    assert_eq!(
        rig.metric("vls_proxy_signer_connects_total").await.unwrap(),
        connects,
        "the second signer was never admitted"
    );
    assert!(rig.signer_pid().is_some(), "the first signer serves on");
    eprintln!("{n} requests answered by the first signer meanwhile");
    second.kill();
    rig.teardown().await;
}

/// The same approved `preapprove_invoice` again within the TTL is answered by the proxy's
/// cache: the cache-hit counter moves, the round-trip counter does not, and the signer sees
/// the request once. Another invoice makes its own round trip.
#[tokio::test]
async fn an_approved_invoice_asked_again_is_answered_without_a_round_trip() {
    tokio::time::timeout(Duration::from_secs(60), preapproval_cache())
        .await
        .expect("the test is bounded");
}

async fn preapproval_cache() {
    let mut cfg = rig_config(&SECRET);
    cfg.metrics = true;
    cfg.log_filter = "info,signer::daemon=debug,signer::lanes=debug".into();
    let rig = Rig::start(cfg).await.expect("rig");
    let reference = init(&rig).await;
    let master = rig.hsmd.master();
    let node_id = reference.session().unwrap().keys.node_id();
    let net = bitcoin::Network::Regtest;
    let (r1, r2) = (
        InvoiceRequest::new(Some(50_000), "coffee"),
        InvoiceRequest::new(Some(60_000), "tea"),
    );
    let first = create_invoice(master, &node_id, net, &r1).await.unwrap();
    let other = create_invoice(master, &node_id, net, &r2).await.unwrap();
    let (first, other) = (first.invoice.to_string(), other.invoice.to_string());
    let round_trips = || rig.metric("vls_proxy_round_trip_seconds_count");
    let hits = || rig.metric("vls_proxy_preapproval_cache_hits_total");

    let rt0 = round_trips().await.unwrap();
    assert!(master.preapprove_invoice(&first).await.unwrap());
    let rt1 = round_trips().await.unwrap();
    assert_eq!(rt1, rt0 + 1.0);
    assert_eq!(hits().await.unwrap(), 0.0);

    assert!(master.preapprove_invoice(&first).await.unwrap());
    assert_eq!(round_trips().await.unwrap(), rt1, "no round trip");
    assert_eq!(hits().await.unwrap(), 1.0);

    assert!(master.preapprove_invoice(&other).await.unwrap());
    assert_eq!(round_trips().await.unwrap(), rt1 + 1.0);
    assert_eq!(hits().await.unwrap(), 1.0);

    // The signer answered two preapprovals (type 38), not three.
    let answered = |log: &str| {
        log.lines()
            .filter(|l| l.contains("(type 38)") && l.contains("answered"))
            .count()
    };
    let start = Instant::now();
    while answered(&rig.log("signer")) < 2 && start.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(answered(&rig.log("signer")), 2, "{}", rig.log("signer"));
    rig.teardown().await;
}

/// What the test signer does with a request: answer it, or report a temporary failure.
#[derive(Default)]
struct Flaky {
    /// Requests (by dbid and bytes) failed this many times before they are answered.
    fail_first: HashMap<u64, u32>,
    /// Requests always failed (by dbid and bytes).
    always: Vec<(u64, Vec<u8>)>,
    /// Attempts seen per (dbid, request).
    attempts: HashMap<(u64, Vec<u8>), u32>,
}

/// A signer speaking the gRPC contract without TLS: answers from the in-process `signer`,
/// except the temporary failures `flaky` asks for.
async fn test_signer(url: String, signer: Arc<Signer>, flaky: Arc<Mutex<Flaky>>) {
    let channel = loop {
        match Endpoint::from_shared(url.clone()).unwrap().connect().await {
            Ok(c) => break c,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let mut client = HsmdClient::new(channel);
    let (tx, rx) = mpsc::unbounded_channel::<SignerResponse>();
    let mut inbound = client
        .signer_stream(UnboundedReceiverStream::new(rx))
        .await
        .expect("the proxy takes the test signer")
        .into_inner();
    while let Ok(Some(SignerRequest {
        request_id,
        context,
        message,
    })) = inbound.message().await
    {
        let dbid = context.as_ref().map_or(0, |c| c.dbid);
        let fail = {
            let mut f = flaky.lock().unwrap();
            let n = f.attempts.entry((dbid, message.clone())).or_default();
            *n += 1;
            let n = *n;
            f.always.contains(&(dbid, message.clone()))
                || f.fail_first.get(&dbid).is_some_and(|&k| n <= k)
        };
        let resp = if fail {
            SignerResponse {
                request_id,
                error: "state store busy (test)".into(),
                is_temporary_failure: true,
                ..Default::default()
            }
        } else {
            let outcome = signer::daemon::client_context(context.as_ref())
                .and_then(|ctx| signer.handle(&ctx, Some(request_id), &message));
            signer::daemon::response(request_id, outcome)
        };
        if tx.send(resp).is_err() {
            return;
        }
    }
}

/// A request the signer fails temporarily twice is retried and answered; one it always
/// fails is given up after the retry budget (3 here): its client gets a bad-request report
/// and is closed, while the other clients are served all along.
#[tokio::test]
async fn temporary_failures_are_retried_and_past_the_budget_only_that_client_fails() {
    tokio::time::timeout(Duration::from_secs(60), retries())
        .await
        .expect("the test is bounded");
}

async fn retries() {
    const RETRIES: u32 = 3;
    let mut cfg = rig_config(&SECRET);
    cfg.metrics = true;
    cfg.plaintext = true;
    cfg.start_signer = false;
    cfg.proxy_env
        .push(("VLS_RETRY_ATTEMPTS".into(), RETRIES.to_string()));
    let rig = Rig::start(cfg).await.expect("rig");
    let poison = EcdhReq::new(point(99)).encode().unwrap();
    let flaky = Arc::new(Mutex::new(Flaky {
        fail_first: HashMap::from([(7, 2)]),
        always: vec![(9, poison.clone())],
        ..Default::default()
    }));
    let store = Store::temporary().unwrap();
    let inner = Arc::new(Signer::new(SECRET.to_vec(), store, Policy::warn_only()));
    let test_signer = tokio::spawn(test_signer(rig.url(rig.port), inner.clone(), flaky.clone()));
    let reference = init(&rig).await;

    // Failed twice, then answered.
    let c7 = client(&rig, 7).await;
    let req = GetPerCommitmentPoint::new(3).encode().unwrap();
    let t = Instant::now();
    check(&c7, &reference, &channeld(7), &req).await;
    eprintln!("answered after two temporary failures in {:?}", t.elapsed());
    assert_eq!(flaky.lock().unwrap().attempts[&(7, req.clone())], 3);

    // Always failed; the others are served meanwhile.
    let c8 = client(&rig, 8).await;
    let c9 = client(&rig, 9).await;
    let mark = rig.hsmd.status().mark();
    let doomed = async {
        let r = tokio::time::timeout(T, c9.request(&poison)).await;
        (r, Instant::now())
    };
    let others = async {
        let mut last = Instant::now();
        for n in 0..20 {
            let req = GetPerCommitmentPoint::new(n).encode().unwrap();
            check(&c8, &reference, &channeld(8), &req).await;
            last = Instant::now();
        }
        last
    };
    let ((doomed, failed_at), others_done) = tokio::join!(doomed, others);
    assert!(
        matches!(doomed, Ok(Err(ClientError::Closed))),
        "the poisoned request: {doomed:?}"
    );
    assert!(
        others_done < failed_at,
        "the other client was served while the retries went on"
    );
    assert_eq!(
        flaky.lock().unwrap().attempts[&(9, poison.clone())],
        RETRIES + 1,
        "one attempt and {RETRIES} retries"
    );
    let (_, ev) = tokio::time::timeout(
        T,
        rig.hsmd
            .status()
            .wait_for(mark, |e| matches!(e, StatusEvent::ClientBadRequest { .. })),
    )
    .await
    .unwrap()
    .unwrap();
    let StatusEvent::ClientBadRequest {
        node_id,
        description,
        request,
    } = ev
    else {
        unreachable!()
    };
    assert_eq!((node_id, request), (peer(), poison.clone()));
    assert!(description.contains("temporar"), "{description}");
    eprintln!("bad request reported: {description}");
    assert_eq!(
        rig.metric("vls_proxy_retries_total").await.unwrap(),
        f64::from(2 + RETRIES)
    );
    // Only that client is gone.
    check(&c8, &reference, &channeld(8), &poison).await;
    check(&c7, &reference, &channeld(7), &poison).await;
    assert!(rig.hsmd.status().failure().is_none());
    assert!(rig.hsmd.exit_status().is_none());
    test_signer.abort();
    rig.teardown().await;
}
