//! The link between proxy and signer under abuse, with real processes on loopback: the signer
//! killed (`kill -9`) and restarted again and again under load, and the link silently cut for
//! 30 s. The node must notice nothing but waiting: every request gets its right reply, none
//! fails, and the signer's state comes out consistent.

use node::bench::{point, Rig};
use node::{init_request, HsmClient, Subdaemon};
use protocol::msgs::{EcdhReq, GetPerCommitmentPoint, NewChannel, RevokeCommitmentTx, SignMessage};
use protocol::types::NodeId;
use signer::{ClientContext, Policy, Store};
use std::cell::Cell;
use std::time::{Duration, Instant};
use tests::{reference_signer, rig_config, wait_metric, Relay};

const SECRET: [u8; 32] = [0x5a; 32];
/// How long one request may wait for its reply before the test fails.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Warn mode (Core Lightning's behaviour), except that holder commitments must be revoked in
/// order: a revocation the signer forgot (state gone backwards) or applied twice would be
/// refused, and so fail the run.
const POLICY: &str = "default = \"warn\"\n[rules]\n\"revoke-in-order\" = \"enforce\"\n";

fn peer() -> NodeId {
    NodeId::from_pubkey(&point(9))
}

/// One client's requests, in order, with the replies they must get.
struct Plan {
    /// `None`: the master.
    dbid: Option<u64>,
    steps: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Sends the plan's requests in order; every failure and wrong reply as a line. Counts each
/// reply in `done`.
async fn play(client: &HsmClient, plan: &Plan, done: &Cell<usize>) -> Vec<String> {
    let who = plan
        .dbid
        .map_or("master".to_string(), |d| format!("dbid {d}"));
    let mut errors = Vec::new();
    for (i, (req, want)) in plan.steps.iter().enumerate() {
        match tokio::time::timeout(REQUEST_TIMEOUT, client.request(req)).await {
            Err(_) => {
                errors.push(format!(
                    "{who} request {i}: no reply in {REQUEST_TIMEOUT:?}"
                ));
                break;
            }
            Ok(Err(e)) => {
                errors.push(format!("{who} request {i}: {e}"));
                break;
            }
            Ok(Ok(got)) if &got != want => errors.push(format!(
                "{who} request {i} ({}): got {}, want {}",
                hex::encode(&req[..2]),
                hex::encode(&got),
                hex::encode(want)
            )),
            Ok(Ok(_)) => {}
        }
        done.set(done.get() + 1);
    }
    errors
}

/// 20 channel clients × 95 requests (per-commitment points, ECDH, and every tenth one a
/// revocation, in order) + 100 `sign_message` on the master = 2,000 requests; the signer is
/// killed with SIGKILL and started again 10 times while they run.
#[tokio::test]
async fn signer_killed_ten_times_under_load_loses_no_request_and_no_state() {
    tokio::time::timeout(Duration::from_secs(150), kill_and_restart())
        .await
        .expect("the test is bounded");
}

async fn kill_and_restart() {
    const CHANNELS: u64 = 20;
    const PER_CHANNEL: usize = 95;
    const MASTER_REQUESTS: usize = 100;
    const KILLS: usize = 10;
    const TOTAL: usize = CHANNELS as usize * PER_CHANNEL + MASTER_REQUESTS;
    assert_eq!(TOTAL, 2_000);

    let mut cfg = rig_config(&SECRET);
    cfg.metrics = true;
    cfg.policy = Some(POLICY.into());
    let rig = Rig::start(cfg).await.expect("rig");
    let init = init_request(bitcoin::Network::Regtest, None)
        .encode()
        .unwrap();
    let policy = Policy::from_toml(POLICY).unwrap();
    let (reference, init_reply) = reference_signer(&SECRET, policy, &init);
    let got = tokio::time::timeout(REQUEST_TIMEOUT, rig.hsmd.master().request(&init))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, init_reply, "init reply");

    // The plans, with the replies the reference signer gives in the same order.
    let master = ClientContext::master();
    let expect = |ctx: &ClientContext, req: &[u8]| {
        reference
            .handle(ctx, None, req)
            .unwrap_or_else(|e| panic!("reference refuses {}: {e:?}", hex::encode(req)))
    };
    let mut plans = Vec::new();
    let mut clients = Vec::new();
    for dbid in 1..=CHANNELS {
        let nc = NewChannel::new(peer(), dbid).encode().unwrap();
        let want = expect(&master, &nc);
        assert_eq!(rig.hsmd.master().request(&nc).await.unwrap(), want);
        let perms = Subdaemon::Channeld.permissions();
        clients.push(rig.hsmd.new_client(peer(), dbid, perms).await.unwrap());
        let ctx = ClientContext::client(peer(), dbid, perms);
        let mut steps = Vec::new();
        let mut revoked = 0;
        for i in 0..PER_CHANNEL {
            let req = if i % 10 == 4 {
                revoked += 1;
                RevokeCommitmentTx::new(revoked - 1).encode()
            } else if i % 2 == 0 {
                GetPerCommitmentPoint::new(i as u64).encode()
            } else {
                EcdhReq::new(point((i % 250 + 1) as u8)).encode()
            }
            .unwrap();
            let want = expect(&ctx, &req);
            steps.push((req, want));
        }
        plans.push(Plan {
            dbid: Some(dbid),
            steps,
        });
    }
    let master_plan = Plan {
        dbid: None,
        steps: (0..MASTER_REQUESTS)
            .map(|i| {
                let req = SignMessage::new(format!("message {i}").into_bytes())
                    .encode()
                    .unwrap();
                let want = expect(&master, &req);
                (req, want)
            })
            .collect(),
    };

    let done = Cell::new(0usize);
    let kills = Cell::new(0usize);
    let started = Instant::now();
    let traffic = async {
        let mut all = Vec::new();
        let results = futures_join_all(
            clients
                .iter()
                .zip(&plans)
                .map(|(c, p)| play(c, p, &done))
                .collect(),
            play(rig.hsmd.master(), &master_plan, &done),
        )
        .await;
        for r in results {
            all.extend(r);
        }
        all
    };
    let chaos = async {
        for k in 1..=KILLS {
            // Spread over the run: some traffic between restarts, some left after the last.
            while done.get() < k * 170 {
                if done.get() >= TOTAL {
                    return Err(format!("all requests done before kill {k}"));
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            rig.kill_signer().await;
            kills.set(k);
            tokio::time::sleep(Duration::from_millis((k as u64 * 37) % 200)).await;
            rig.start_signer()
                .map_err(|e| format!("restart {k}: {e}"))?;
        }
        Ok::<_, String>(())
    };
    let (errors, chaos) = tokio::join!(traffic, chaos);
    let took = started.elapsed();
    eprintln!(
        "2,000 requests with {} signer kills in {took:.1?}",
        kills.get()
    );
    assert_eq!(chaos, Ok(()));
    assert!(
        errors.is_empty(),
        "{} failures:\n{}",
        errors.len(),
        errors.join("\n")
    );
    assert_eq!(done.get(), TOTAL);
    assert_eq!(kills.get(), KILLS);
    assert!(rig.hsmd.exit_status().is_none(), "the proxy runs on");
    assert!(rig.hsmd.status().failure().is_none());
    let connects = rig.metric("vls_proxy_signer_connects_total").await.unwrap();
    assert!(connects >= (KILLS + 1) as f64, "{connects} signer connects");

    // The state the signer committed is the reference's, channel by channel.
    rig.stop_signer().await;
    let store = Store::open(&rig.data_dir().join("state.redb")).expect("the state opens");
    let got = store.channels().unwrap();
    let want = reference.store().channels().unwrap();
    assert_eq!(got.len(), CHANNELS as usize);
    for ((gk, gs), (wk, ws)) in got.iter().zip(&want) {
        assert_eq!(gk, wk);
        assert_eq!(gs, ws, "channel {}", gk.dbid);
        assert_eq!(gs.holder_revoked_below, 10, "channel {}", gk.dbid);
    }
    drop(store);
    rig.teardown().await;
}

/// Runs the futures of `many` and `one` concurrently on this task; their outputs, `one`'s
/// last.
async fn futures_join_all<F: std::future::Future>(many: Vec<F>, one: F) -> Vec<F::Output> {
    let mut set: Vec<_> = many.into_iter().map(Box::pin).collect();
    set.push(Box::pin(one));
    let mut outputs: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, out) in set.iter_mut().zip(outputs.iter_mut()) {
            if out.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *out = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs
        .into_iter()
        .map(|o| o.expect("polled to completion"))
        .collect()
}

/// The relay between signer and proxy stops forwarding for 30 s without closing anything.
/// The proxy notices through keepalive (its disconnect counter and log), requests wait, and
/// every one completes with its right reply once the link heals.
#[tokio::test]
async fn a_link_silent_for_30_seconds_is_noticed_and_requests_complete_after_it_heals() {
    tokio::time::timeout(Duration::from_secs(200), silent_link())
        .await
        .expect("the test is bounded");
}

/// Whether `cond` holds within five seconds, polled every 50 ms.
async fn eventually(cond: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

async fn silent_link() {
    const CUT: Duration = Duration::from_secs(30);
    let mut cfg = rig_config(&SECRET);
    cfg.metrics = true;
    cfg.start_signer = false;
    let rig = Rig::start(cfg).await.expect("rig");
    let relay = Relay::start(rig.port).await;
    rig.start_signer_via(relay.port).unwrap();

    let init = init_request(bitcoin::Network::Regtest, None)
        .encode()
        .unwrap();
    let (reference, init_reply) = reference_signer(&SECRET, Policy::warn_only(), &init);
    let got = tokio::time::timeout(REQUEST_TIMEOUT, rig.hsmd.master().request(&init))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, init_reply);
    let perms = Subdaemon::Channeld.permissions();
    let mut clients = Vec::new();
    for dbid in 1..=3 {
        clients.push(rig.hsmd.new_client(peer(), dbid, perms).await.unwrap());
    }
    let ctx = |dbid| ClientContext::client(peer(), dbid, perms);
    let want = |ctx: &ClientContext, req: &[u8]| reference.handle(ctx, None, req).unwrap();
    let ecdh = EcdhReq::new(point(3)).encode().unwrap();
    assert_eq!(
        clients[0].request(&ecdh).await.unwrap(),
        want(&ctx(1), &ecdh)
    );
    let disconnects_before = rig
        .metric("vls_proxy_signer_disconnects_total")
        .await
        .unwrap();

    relay.cut();
    let cut_at = Instant::now();
    let requests: Vec<(&HsmClient, Vec<u8>, Vec<u8>)> = vec![
        {
            let r = SignMessage::new(b"during the cut".to_vec())
                .encode()
                .unwrap();
            let w = want(&ClientContext::master(), &r);
            (rig.hsmd.master(), r, w)
        },
        {
            let r = RevokeCommitmentTx::new(0).encode().unwrap();
            let w = want(&ctx(1), &r);
            (&clients[0], r, w)
        },
        {
            let r = GetPerCommitmentPoint::new(7).encode().unwrap();
            let w = want(&ctx(2), &r);
            (&clients[1], r, w)
        },
    ];
    let finished: Vec<Cell<Option<Instant>>> = (0..4).map(|_| Cell::new(None)).collect();
    let send = |i: usize| {
        let (client, req, want) = (&requests[i].0, &requests[i].1, &requests[i].2);
        let finished = &finished;
        async move {
            let got = tokio::time::timeout(REQUEST_TIMEOUT + CUT, client.request(req)).await;
            finished[i].set(Some(Instant::now()));
            match got {
                Ok(Ok(got)) if &got == want => Ok(()),
                other => Err(format!("request {i}: {other:?}")),
            }
        }
    };
    // One more, sent after the proxy noticed.
    let late_req = EcdhReq::new(point(4)).encode().unwrap();
    let late_want = want(&ctx(3), &late_req);
    let heal_at = Cell::new(None);
    let monitor = async {
        let (v, ok) = wait_metric(
            &rig,
            "vls_proxy_signer_disconnects_total",
            Duration::from_secs(15),
            |v| v > disconnects_before,
        )
        .await;
        let noticed = cut_at.elapsed();
        assert!(
            ok,
            "the proxy did not notice the silent link ({v} disconnects)"
        );
        eprintln!("the proxy noticed the silent link after {noticed:.1?}");
        assert!(
            noticed <= Duration::from_secs(12),
            "noticed only after {noticed:?}"
        );
        // Both log lines are written after the counter moves (the second reaches lightningd's
        // side through the status fd): give them a moment rather than race them.
        assert!(
            eventually(|| rig.log("proxy").contains("signer stream 1 is gone")).await,
            "proxy log:\n{}",
            rig.log("proxy")
        );
        assert!(
            eventually(|| rig.hsmd.status().events().iter().any(|e| matches!(
                e,
                node::StatusEvent::Log { entry, .. } if entry.contains("signer disconnected")
            )))
            .await,
            "lightningd's log tells of the disconnect"
        );
        let late = async {
            let got =
                tokio::time::timeout(REQUEST_TIMEOUT + CUT, clients[2].request(&late_req)).await;
            finished[3].set(Some(Instant::now()));
            match got {
                Ok(Ok(got)) if got == late_want => Ok(()),
                other => Err(format!("late request: {other:?}")),
            }
        };
        let heal = async {
            tokio::time::sleep(CUT.saturating_sub(cut_at.elapsed())).await;
            for (i, f) in finished.iter().enumerate() {
                assert!(f.get().is_none(), "request {i} finished during the cut");
            }
            relay.heal();
            heal_at.set(Some(Instant::now()));
        };
        let (late, ()) = tokio::join!(late, heal);
        late
    };
    let (a, b, c, late) = tokio::join!(send(0), send(1), send(2), monitor);
    for r in [a, b, c, late] {
        r.unwrap();
    }
    let healed = heal_at.get().expect("healed");
    let last = finished.iter().filter_map(|f| f.get()).max().unwrap();
    let recovery = last.saturating_duration_since(healed);
    eprintln!("every waiting request answered {recovery:.1?} after the heal");
    assert!(
        recovery <= Duration::from_secs(20),
        "answers came {recovery:?} after the heal"
    );
    let connects = rig.metric("vls_proxy_signer_connects_total").await.unwrap();
    assert!(connects >= 2.0, "{connects} connects");
    assert!(rig.hsmd.status().failure().is_none());
    // Everything still flows.
    assert_eq!(
        clients[0].request(&ecdh).await.unwrap(),
        want(&ctx(1), &ecdh)
    );
    drop(relay);
    rig.teardown().await;
}
