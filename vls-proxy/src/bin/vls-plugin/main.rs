//! `vls-plugin`: a Core Lightning plugin that asks the remote signer, before lightningd
//! does, whether it would sign an on-chain spend, and turns a refusal into an error of the
//! command that asked for it.
//!
//! lightningd's own requests to hsmd have no error reply: when the signer's policy refuses
//! one (e.g. `onchain-destination-allowlisted` for a withdrawal to an address that is neither
//! the node's nor allowlisted), the proxy has to stop, and lightningd stops with it. This
//! plugin hooks `rpc_command` for the commands that lead to `hsmd_sign_withdrawal`:
//!
//! | command | what is checked |
//! |---|---|
//! | `withdraw` | its destination and amount, funded as the command would fund them |
//! | `txprepare` | its outputs, funded likewise (the spend is signed by `txsend` later) |
//! | `signpsbt` | the PSBT itself: the exact request of `txsend`, `withdraw`, channel funding |
//!
//! It builds the `hsmd_sign_withdrawal` lightningd would send (see `request`), and asks the
//! proxy over its socket (`<lightning-dir>/<network>/vls-proxy.sock`, or `VLS_PLUGIN_SOCKET`)
//! with a `vls_check_request`; the signer runs it through the same handler and policy without
//! keeping anything. If a policy rule refuses, the command fails with error [`POLICY_REFUSED`]
//! naming the rule and how to allow it; lightningd stays up. Every other command goes on at
//! once (the hook is filtered to these three).
//!
//! The plugin never blocks a command because of its own trouble: if the proxy cannot be
//! reached, the RPC fails, the signer cannot judge the request (`bad-request`,
//! `signer-unavailable`) or no answer comes within [`CHECK_TIMEOUT`], it logs why (at
//! lightningd's `unusual` level) and lets the command go on.

mod ask;
mod request;

use bitcoin::Network;
use cln_plugin::{Builder, Error, HookBuilder, HookFilter, Plugin};
use cln_rpc::ClnRpc;
use protocol::check::is_policy_rule;
use protocol::msgs::VlsCheckRequestReply;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;

/// The commands checked.
const CHECKED: &[&str] = &["withdraw", "txprepare", "signpsbt"];
/// The JSON-RPC error code of a command the signer's policy refuses.
pub const POLICY_REFUSED: i64 = 2001;
/// How long a check may take before the command goes on unchecked.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(30);
/// The rule whose refusals may come from the wallet outputs' missing key derivations.
const DESTINATION: &str = "onchain-destination-allowlisted";

/// What the plugin learned from lightningd at start.
#[derive(Clone)]
struct State {
    /// The proxy's socket, unless the operator turned it off.
    socket: Option<PathBuf>,
    /// lightningd's RPC socket.
    rpc: PathBuf,
    /// The node's network, if it is one of Bitcoin's.
    network: Option<Network>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let filters = CHECKED
        .iter()
        .map(|m| HookFilter::Str(m.to_string()))
        .collect();
    let builder = Builder::new(tokio::io::stdin(), tokio::io::stdout())
        .hook_from_builder(HookBuilder::new("rpc_command", on_rpc_command).filters(filters));
    let Some(configured) = builder.configure().await? else {
        return Ok(());
    };
    let conf = configured.configuration();
    // lightningd gives its network directory as `lightning-dir`: where it runs hsmd.
    let dir = PathBuf::from(&conf.lightning_dir);
    let state = State {
        socket: ask::socket_path(&dir, std::env::var_os(ask::ENV)),
        rpc: dir.join(&conf.rpc_file),
        network: request::network(&conf.network),
    };
    let plugin = configured.start(state.clone()).await?;
    match &state.socket {
        Some(s) => log::info!("asking the signer through {}", s.display()),
        None => log::info!("{} is empty: nothing is checked", ask::ENV),
    }
    plugin.join().await
}

/// The hook's answer that lets the command go on.
fn go_on() -> Value {
    json!({"result": "continue"})
}

async fn on_rpc_command(plugin: Plugin<State>, v: Value) -> Result<Value, Error> {
    let call = &v["rpc_command"];
    let method = call["method"].as_str().unwrap_or_default();
    if !CHECKED.contains(&method) {
        return Ok(go_on());
    }
    let state = plugin.state();
    let checked = tokio::time::timeout(CHECK_TIMEOUT, check(state, method, &call["params"])).await;
    let (reply, built) = match checked {
        Ok(Ok(Some(answer))) => answer,
        Ok(Ok(None)) => return Ok(go_on()),
        Ok(Err(e)) => {
            log::warn!("could not ask the signer about `{method}` ({e}); it goes on unchecked");
            return Ok(go_on());
        }
        Err(_) => {
            log::warn!(
                "no answer about `{method}` from the signer within {CHECK_TIMEOUT:?}; it goes on \
                 unchecked"
            );
            return Ok(go_on());
        }
    };
    Ok(decide(method, &reply, &built))
}

/// Builds the request `method` leads to and asks the signer; `None` when nothing is to be
/// checked (the socket is turned off).
async fn check(
    state: &State,
    method: &str,
    params: &Value,
) -> Result<Option<(VlsCheckRequestReply, request::Built)>, String> {
    let Some(socket) = &state.socket else {
        return Ok(None);
    };
    let network = state
        .network
        .ok_or("lightningd's network is not one of Bitcoin's")?;
    let mut rpc = ClnRpc::new(&state.rpc)
        .await
        .map_err(|e| format!("connecting to lightningd's RPC: {e}"))?;
    let built = match method {
        "withdraw" => {
            let spend = request::withdraw_params(params, network)?;
            request::for_spend(&mut rpc, &spend, network).await?
        }
        "txprepare" => {
            let spend = request::txprepare_params(params, network)?;
            request::for_spend(&mut rpc, &spend, network).await?
        }
        _ => {
            let (psbt, only) = request::signpsbt_params(params)?;
            let psbt = request::read_psbt(&mut rpc, &psbt).await?;
            request::for_psbt(&mut rpc, psbt, only.as_deref(), network).await?
        }
    };
    let reply = ask::ask(socket, built.request.clone()).await?;
    Ok(Some((reply, built)))
}

/// The hook's answer to the signer's `reply` about `method`, whose request is `built`.
fn decide(method: &str, reply: &VlsCheckRequestReply, built: &request::Built) -> Value {
    if reply.ok {
        return go_on();
    }
    let rule = reply.rule.to_string_lossy();
    let detail = reply.detail.to_string_lossy();
    if !is_policy_rule(&rule) {
        log::warn!(
            "the signer could not judge `{method}` ({rule}: {detail}); it goes on unchecked"
        );
        return go_on();
    }
    if rule == DESTINATION && !request::foreign_refusal(&detail, &built.wallet_outputs) {
        log::warn!(
            "the signer refused `{method}` only for outputs to this node's wallet ({detail}); \
             lightningd names their keys when it asks, so it goes on"
        );
        return go_on();
    }
    let what = match method {
        "withdraw" => "this withdrawal",
        "txprepare" => "this transaction",
        _ => "signing this PSBT",
    };
    log::info!("signer policy {rule} refuses `{method}`: {detail}");
    json!({"return": {"error": {
        "code": POLICY_REFUSED,
        "message": format!(
            "signer policy {rule} refuses {what}: {detail}; {}",
            how_to_allow(&rule, &refused_addresses(&rule, &detail, built))
        ),
        "data": {"rule": rule, "detail": detail},
    }}})
}

/// The addresses of the outputs a destination refusal names.
fn refused_addresses(rule: &str, detail: &str, built: &request::Built) -> Vec<String> {
    if rule != DESTINATION {
        return Vec::new();
    }
    request::refused_outputs(detail)
        .into_iter()
        .filter_map(|i| built.addresses.get(i).cloned().flatten())
        .collect()
}

/// What the operator can do to allow what `rule` refuses (`addresses`: the destinations it
/// refuses, when known).
fn how_to_allow(rule: &str, addresses: &[String]) -> String {
    const FILE: &str = "the signer's policy file (`signer run --policy`), then restart the signer";
    match rule {
        DESTINATION => {
            let what = if addresses.is_empty() {
                "the destination address".to_string()
            } else {
                format!("\"{}\"", addresses.join("\", \""))
            };
            format!(
                "to allow it, add {what} (or an xpub it derives from) to `allowlist` under \
                 [limits] in {FILE}, or set {rule} = \"warn\" under [rules]"
            )
        }
        "onchain-fee-cap" => format!(
            "lower the fee rate, or raise max_onchain_fee_sat or max_onchain_feerate_per_kw \
             under [limits] in {FILE}"
        ),
        _ => format!(
            "to allow it, set {rule} = \"warn\" under [rules] in {FILE} (`signer policy show` \
             prints the policy in force)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::check::{approval, refusal, BAD_REQUEST, SIGNER_UNAVAILABLE};

    /// A request of two outputs, output 1 to our wallet.
    fn built() -> request::Built {
        request::Built {
            request: vec![],
            wallet_outputs: vec![1],
            addresses: vec![Some("bcrt1qdest".into()), Some("bcrt1qchange".into())],
        }
    }

    #[test]
    fn a_policy_refusal_fails_the_command_and_says_how_to_allow_it() {
        let r = refusal(
            DESTINATION,
            "abcd pays outside our wallet: output 0 (5 sat to 0014..)",
        );
        let v = decide("withdraw", &r, &built());
        let e = &v["return"]["error"];
        assert_eq!(e["code"], json!(POLICY_REFUSED));
        let msg = e["message"].as_str().unwrap();
        assert!(
            msg.starts_with(
                "signer policy onchain-destination-allowlisted refuses this withdrawal: abcd"
            ),
            "{msg}"
        );
        assert!(msg.contains("add \"bcrt1qdest\" (or an xpub"), "{msg}");
        assert!(msg.contains("\"warn\""), "{msg}");
        assert_eq!(e["data"]["rule"], json!(DESTINATION));

        let v = decide(
            "signpsbt",
            &refusal("onchain-fee-cap", "too much"),
            &built(),
        );
        let msg = v["return"]["error"]["message"].as_str().unwrap();
        assert!(msg.contains("refuses signing this PSBT: too much; lower the fee rate"));
        let v = decide(
            "txprepare",
            &refusal("funding-segwit-only", "legacy"),
            &built(),
        );
        let msg = v["return"]["error"]["message"].as_str().unwrap();
        assert!(msg.contains("set funding-segwit-only = \"warn\""), "{msg}");
    }

    #[test]
    fn approvals_and_unjudged_requests_go_on() {
        assert_eq!(decide("withdraw", &approval(), &built()), go_on());
        for rule in [BAD_REQUEST, SIGNER_UNAVAILABLE] {
            assert_eq!(decide("withdraw", &refusal(rule, "x"), &built()), go_on());
        }
    }

    #[test]
    fn a_refusal_of_our_own_change_alone_goes_on() {
        let r = refusal(
            DESTINATION,
            "t pays outside ...: output 1 (5000 sat to 5120..)",
        );
        assert_eq!(decide("withdraw", &r, &built()), go_on());
        let mut theirs = built();
        theirs.wallet_outputs = vec![0];
        assert_ne!(decide("withdraw", &r, &theirs), go_on());
    }
}
