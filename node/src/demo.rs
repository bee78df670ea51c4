//! `node demo`: the end-to-end demonstration on embedded defaults. It starts two signers and
//! two nodes (each node spawning its own vls-proxy, each link mutually authenticated TLS),
//! connects the nodes, opens a channel, creates and preapproves an invoice, writes and
//! verifies the encrypted channel backup, kills one signer with SIGKILL in the middle of the
//! work and restarts it without the node noticing, and prints the round-trip latency of
//! every signer call by message type.

use crate::control::{self, Reply, Request, CONTROL_SOCKET};
use crate::process::Process;
use crate::replay::env::sibling_binary;
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::Command;

/// Why the demo stopped.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A step failed.
    #[error("{step}: {why}")]
    Step {
        /// The step.
        step: String,
        /// What went wrong.
        why: String,
    },
}

fn fail(step: &str, why: impl ToString) -> DemoError {
    DemoError::Step {
        step: step.into(),
        why: why.to_string(),
    }
}

/// One side of the demo: a node and its signer.
struct Side {
    name: &'static str,
    dir: PathBuf,
    signer_dir: PathBuf,
    signer_port: u16,
    p2p: std::net::SocketAddr,
    node: Option<Process>,
    signer: Option<Process>,
    node_id: String,
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn run_tool(step: &str, program: &Path, args: &[&str]) -> Result<String, DemoError> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| fail(step, format!("{}: {e}", program.display())))?;
    if !out.status.success() {
        return Err(fail(step, String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn progress(msg: &str) {
    print!("  .. {msg}");
    let _ = std::io::stdout().flush();
}

fn done(started: Instant) {
    println!(" done ({:.1} s)", started.elapsed().as_secs_f64());
}

impl Side {
    async fn create(name: &'static str, root: &Path) -> Result<Side, DemoError> {
        let step = format!("setting up {name}");
        let dir = root.join(name).join("node");
        let signer_dir = root.join(name).join("signer");
        std::fs::create_dir_all(&dir).map_err(|e| fail(&step, e))?;
        let signer_port = free_port().map_err(|e| fail(&step, e))?;
        let p2p_port = free_port().map_err(|e| fail(&step, e))?;
        let signer_bin = sibling_binary("signer");
        let out = run_tool(&step, &signer_bin, &["--data-dir", &s(&signer_dir), "init"]).await?;
        let node_id = out.lines().last().unwrap_or_default().trim().to_string();
        let tls = dir.join("vls-tls");
        run_tool(
            &step,
            &sibling_binary("vls-proxy"),
            &["certs", "--dir", &s(&tls)],
        )
        .await?;
        let signer_tls = signer_dir.join("tls");
        std::fs::create_dir_all(&signer_tls).map_err(|e| fail(&step, e))?;
        for f in ["ca.pem", "signer.pem", "signer-key.pem"] {
            std::fs::copy(tls.join(f), signer_tls.join(f)).map_err(|e| fail(&step, e))?;
        }
        Ok(Side {
            name,
            dir,
            signer_dir,
            signer_port,
            p2p: ([127, 0, 0, 1], p2p_port).into(),
            node: None,
            signer: None,
            node_id,
        })
    }

    fn log(&self, what: &str) -> Result<Stdio, DemoError> {
        let f = std::fs::File::create(
            self.dir
                .parent()
                .unwrap_or(&self.dir)
                .join(format!("{what}.log")),
        )
        .map_err(|e| fail("log file", e))?;
        Ok(Stdio::from(f))
    }

    fn start_node(&mut self) -> Result<(), DemoError> {
        let child = Command::new(sibling_binary("node"))
            .args(["--data-dir", &s(&self.dir), "run"])
            .args([
                "--signer-port",
                &self.signer_port.to_string(),
                "--listen",
                &self.p2p.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(self.log("node")?)
            .stderr(self.log("node.err")?)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| fail("starting a node", e))?;
        self.node = Some(Process::new(child));
        Ok(())
    }

    fn start_signer(&mut self, generation: u32) -> Result<(), DemoError> {
        let url = format!("https://localhost:{}", self.signer_port);
        let child = Command::new(sibling_binary("signer"))
            .args(["--data-dir", &s(&self.signer_dir), "run", "--connect", &url])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(self.log(&format!("signer-{generation}"))?)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| fail("starting a signer", e))?;
        self.signer = Some(Process::new(child));
        Ok(())
    }

    async fn ask(&self, req: Request) -> Result<Value, DemoError> {
        let cmd = serde_json::to_value(&req)
            .ok()
            .and_then(|v| v["cmd"].as_str().map(String::from));
        let step = format!("{} {}", self.name, cmd.unwrap_or_default());
        let path = self.dir.join(CONTROL_SOCKET);
        let r: Reply = control::request(&path, &req)
            .await
            .map_err(|e| fail(&step, e))?;
        if !r.ok {
            return Err(fail(&step, r.error.unwrap_or_default()));
        }
        Ok(r.result)
    }

    /// Waits until the node answers on its control socket (it has heard from its signer).
    async fn wait_ready(&self, timeout: Duration) -> Result<Value, DemoError> {
        let started = Instant::now();
        loop {
            if let Ok(v) = self.ask(Request::Getinfo).await {
                return Ok(v);
            }
            if started.elapsed() > timeout {
                return Err(fail(
                    &format!("starting {}", self.name),
                    "the node did not come up; see its logs",
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Runs the demo in a fresh temporary directory (kept with `--keep`).
pub async fn run(keep: bool) -> Result<(), DemoError> {
    let tmp = tempfile::Builder::new()
        .prefix("vls-demo-")
        .tempdir()
        .map_err(|e| fail("temp dir", e))?;
    let root = tmp.path().to_path_buf();
    println!(
        "Remote signer demo: two nodes, each with its own vls-proxy and signer (files in {})",
        root.display()
    );

    let t = Instant::now();
    progress("creating two signers with new secrets, and TLS certificates for each link");
    let mut alice = Side::create("alice", &root).await?;
    let mut bob = Side::create("bob", &root).await?;
    done(t);

    let t = Instant::now();
    progress(
        "starting the nodes (each spawns vls-proxy as lightningd spawns hsmd) and their signers",
    );
    for side in [&mut alice, &mut bob] {
        side.start_node()?;
        side.start_signer(1)?;
    }
    let a = alice.wait_ready(Duration::from_secs(60)).await?;
    let b = bob.wait_ready(Duration::from_secs(60)).await?;
    done(t);
    println!(
        "     alice {} (signer said {})",
        a["id"].as_str().unwrap_or("?"),
        alice.node_id
    );
    println!(
        "     bob   {} (signer said {})",
        b["id"].as_str().unwrap_or("?"),
        bob.node_id
    );

    let t = Instant::now();
    progress("alice's wallet receives 2000000 sat (no chain backend: a recorded deposit)");
    let f = alice
        .ask(Request::Fund {
            amount_sat: 2_000_000,
        })
        .await?;
    done(t);
    println!(
        "     at {}, an address from the xpub alice's signer gave",
        f["address"].as_str().unwrap_or("?")
    );

    let t = Instant::now();
    progress("connecting alice to bob over BOLT 8 (static-key ECDH done by each signer)");
    let peer = format!("{}@{}", bob.node_id, bob.p2p);
    alice.ask(Request::Connect { peer }).await?;
    done(t);

    let t = Instant::now();
    progress("opening an anchors channel of 500000 sat from alice to bob (zero-conf)");
    let open = Request::Open {
        peer: bob.node_id.clone(),
        amount_sat: 500_000,
        channel_type: "anchors".into(),
    };
    let v = alice.ask(open).await?;
    done(t);
    println!(
        "     channel {} funded by {}:{}, {}",
        v["channel_id"].as_str().unwrap_or("?"),
        v["funding_txid"].as_str().unwrap_or("?"),
        v["funding_output"],
        v["state"].as_str().unwrap_or("?")
    );
    println!(
        "     the signed funding transaction is in {}",
        alice.dir.join("outbox").display()
    );

    let t = Instant::now();
    progress("bob creates an invoice signed by his signer");
    let inv = bob
        .ask(Request::Invoice {
            amount_msat: Some(25_000_000),
            description: "demo coffee".into(),
        })
        .await?;
    let bolt11 = inv["bolt11"].as_str().unwrap_or_default().to_string();
    done(t);
    println!("     {bolt11}");

    let t = Instant::now();
    progress("alice's signer preapproves paying it");
    let paid = alice
        .ask(Request::Pay {
            invoice: bolt11.clone(),
        })
        .await?;
    done(t);
    println!("     approved: {}", paid["approved"]);

    let t = Instant::now();
    progress("alice's signer is asked to preapprove 20 BTC: its policy refuses, and says why");
    let big = bob
        .ask(Request::Invoice {
            amount_msat: Some(2_000_000_000_000),
            description: "too much".into(),
        })
        .await?;
    match alice
        .ask(Request::Pay {
            invoice: big["bolt11"].as_str().unwrap_or_default().into(),
        })
        .await
    {
        Ok(_) => println!(" approved (unexpected)"),
        Err(e) => {
            done(t);
            println!("     {e}");
        }
    }

    let t = Instant::now();
    progress("alice writes and verifies her encrypted static channel backup");
    alice.ask(Request::BackupExport).await?;
    let v = alice.ask(Request::BackupVerify).await?;
    done(t);
    println!(
        "     {} channel(s) in {}",
        v["channels"],
        v["path"].as_str().unwrap_or("?")
    );

    let t = Instant::now();
    progress("killing alice's signer (SIGKILL) while alice keeps working, then restarting it");
    let work = {
        let dir = alice.dir.clone();
        tokio::spawn(async move {
            let path = dir.join(CONTROL_SOCKET);
            let mut ok = 0;
            for i in 0..40 {
                let req = Request::Invoice {
                    amount_msat: Some(1_000 + i),
                    description: format!("during restart {i}"),
                };
                if matches!(control::request(&path, &req).await, Ok(r) if r.ok) {
                    ok += 1;
                }
            }
            ok
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    if let Some(p) = alice.signer.take() {
        p.kill();
        let _ = p.wait().await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    alice.start_signer(2)?;
    let ok = work.await.map_err(|e| fail("work during restart", e))?;
    done(t);
    println!("     {ok} of 40 invoices created across the restart; alice saw no error");

    println!(
        "\nRound-trip latency of every signer call (node -> vls-proxy -> mTLS gRPC -> signer):"
    );
    println!(
        "  {:<6} {:<42} {:>7} {:>9} {:>9}",
        "node", "message", "calls", "p50 us", "p99 us"
    );
    for side in [&alice, &bob] {
        let stats = side.ask(Request::Stats).await?;
        for f in stats.as_array().cloned().unwrap_or_default() {
            println!(
                "  {:<6} {:<42} {:>7} {:>9} {:>9}",
                side.name,
                f["name"].as_str().unwrap_or("?"),
                f["count"].as_u64().unwrap_or(0),
                f["p50_us"].as_u64().unwrap_or(0),
                f["p99_us"].as_u64().unwrap_or(0)
            );
        }
    }
    for side in [&alice, &bob] {
        let _ = side.ask(Request::Stop).await;
    }
    if keep {
        let kept = tmp.keep();
        println!("\nFiles and logs kept in {}", kept.display());
    }
    println!("\nDemo complete.");
    Ok(())
}
