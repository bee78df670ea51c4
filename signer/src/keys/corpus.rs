//! Test support: replays the Core Lightning hsmd conformance corpus
//! (`tests/data/conformance/`) against [`KeyManager`], for the tests of `keys` and `sign`.
//!
//! The protocol crate's typed messages are written concurrently, so the few fields the tests
//! need are read by hand with [`Wire`]. [`replay`] follows each case the way hsmd does: it
//! builds the keys at every successful `hsmd_init` (from the case's own secret and the
//! request's BIP32 version), remembers each client's (peer id, dbid) from `client_hsmfd`, and
//! hands every answered request to the test with that context.

use std::collections::HashMap;

use secp256k1::PublicKey;
use serde_json::Value;

use super::{Bip32Version, KeyManager};
use crate::secret::HsmSecret;

const GOLDEN: &str = include_str!("../../../tests/data/conformance/cln-hsmd-golden.json");
const MNEMONIC: &str = include_str!("../../../tests/data/conformance/cln-hsmd-mnemonic.json");

/// `hsmd_init`, `hsmd_init_reply_v4` and `hsmd_client_hsmfd` message types.
const INIT: u16 = 11;
const INIT_REPLY_V4: u16 = 114;
const CLIENT_HSMFD: u16 = 9;

/// One answered request, with what the test needs to recompute the answer.
pub(crate) struct Exchange<'a> {
    /// Case name, for assertion messages.
    pub case: &'a str,
    /// Step number within the case.
    pub step: usize,
    /// Keys of the hsmd that answered.
    pub keys: &'a KeyManager,
    /// The negotiated protocol version.
    pub version: u32,
    /// The client's peer id (all zero for the master).
    pub peer: [u8; 33],
    /// The client's dbid (0 for the master and global clients).
    pub dbid: u64,
    /// Request type.
    pub kind: u16,
    /// Request body (after the type).
    pub request: Wire<'a>,
    /// Reply type.
    pub reply_kind: u16,
    /// Reply body (after the type).
    pub reply: Wire<'a>,
}

impl Exchange<'_> {
    /// "case #step" for assertion messages.
    pub fn at(&self) -> String {
        format!("{} step {}", self.case, self.step)
    }
}

/// Calls `visit` for every request of both corpus files that hsmd answered after a
/// successful `hsmd_init` (the init itself included).
pub(crate) fn replay(mut visit: impl FnMut(Exchange<'_>)) {
    for (file, text) in [("golden", GOLDEN), ("mnemonic", MNEMONIC)] {
        let corpus: Value = serde_json::from_str(text).expect("corpus is JSON");
        for case in corpus["cases"].as_array().expect("cases") {
            replay_case(file, case, &mut visit);
        }
    }
}

fn replay_case(file: &str, case: &Value, visit: &mut impl FnMut(Exchange<'_>)) {
    let name = format!("{file}/{}", case["name"].as_str().expect("name"));
    let secret = case_secret(case);
    let mut keys: Option<KeyManager> = None;
    let mut version = 0;
    let mut clients: HashMap<u64, ([u8; 33], u64)> = HashMap::from([(0, ([0u8; 33], 0))]);

    for (index, step) in case["steps"].as_array().expect("steps").iter().enumerate() {
        let request = hex_field(step, "request").unwrap_or_default();
        let Some(reply) = hex_field(step, "reply") else {
            continue;
        };
        if request.len() < 2 || reply.len() < 2 || step["outcome"].as_str() != Some("reply") {
            continue;
        }
        let kind = u16::from_be_bytes([request[0], request[1]]);
        let reply_kind = u16::from_be_bytes([reply[0], reply[1]]);
        if kind == INIT && reply_kind == INIT_REPLY_V4 {
            let mut wire = Wire::new(&request[2..]);
            let (public, private) = (wire.u32(), wire.u32());
            let bip32 = Bip32Version::from_init(public, private)
                .expect("answered init has a known version");
            keys = Some(KeyManager::new(&secret, bip32).expect("keys derive"));
            version = Wire::new(&reply[2..]).u32();
        }
        if kind == CLIENT_HSMFD {
            if let Some(number) = step["new_client"].as_u64() {
                let mut wire = Wire::new(&request[2..]);
                let peer = wire.array::<33>();
                clients.insert(number, (peer, wire.u64()));
            }
        }
        let Some(keys) = keys.as_ref() else { continue };
        let client = step["client"].as_u64().expect("client");
        let (peer, dbid) = clients.get(&client).copied().expect("client was created");
        visit(Exchange {
            case: &name,
            step: index,
            keys,
            version,
            peer,
            dbid,
            kind,
            request: Wire::new(&request[2..]),
            reply_kind,
            reply: Wire::new(&reply[2..]),
        });
    }
}

/// The mnemonic-format `hsm_secret` files of the corpus, with the passphrase each needs.
pub(crate) fn mnemonic_files() -> Vec<(Vec<u8>, Option<String>)> {
    let corpus: Value = serde_json::from_str(MNEMONIC).expect("corpus is JSON");
    corpus["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|case| {
            let file = hex_field(case, "hsm_secret_file").expect("mnemonic file");
            (file, case["passphrase"].as_str().map(str::to_owned))
        })
        .collect()
}

/// The case's root secret, read the way hsmd reads its `hsm_secret` file.
fn case_secret(case: &Value) -> HsmSecret {
    let file = hex_field(case, "hsm_secret_file")
        .or_else(|| hex_field(case, "hsm_secret"))
        .expect("case has a secret");
    let passphrase = case["passphrase"].as_str().map(str::as_bytes);
    HsmSecret::from_file_bytes(&file, passphrase).expect("corpus secret loads")
}

fn hex_field(value: &Value, field: &str) -> Option<Vec<u8>> {
    value[field].as_str().map(|s| hex::decode(s).expect("hex"))
}

/// A cursor over wire bytes (big-endian integers, as hsmd's wire format). Panics on short
/// input: the corpus is trusted test data.
#[derive(Clone, Copy)]
pub(crate) struct Wire<'a> {
    bytes: &'a [u8],
}

impl<'a> Wire<'a> {
    pub fn new(bytes: &'a [u8]) -> Wire<'a> {
        Wire { bytes }
    }

    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        head
    }

    pub fn array<const N: usize>(&mut self) -> [u8; N] {
        self.take(N).try_into().expect("N bytes")
    }

    pub fn u8(&mut self) -> u8 {
        self.take(1)[0]
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.array())
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.array())
    }

    pub fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.array())
    }

    pub fn bool(&mut self) -> bool {
        self.u8() != 0
    }

    pub fn pubkey(&mut self) -> PublicKey {
        PublicKey::from_slice(self.take(33)).expect("valid point")
    }

    /// `u16 len` followed by that many bytes.
    pub fn var16(&mut self) -> &'a [u8] {
        let len = self.u16() as usize;
        self.take(len)
    }

    /// `u32 len` followed by that many bytes (`bitcoin_tx`, `wally_psbt`).
    pub fn var32(&mut self) -> &'a [u8] {
        let len = self.u32() as usize;
        self.take(len)
    }

    /// An optional field: a 0/1 byte, then `n` bytes if 1.
    pub fn optional(&mut self, n: usize) -> Option<&'a [u8]> {
        self.bool().then(|| self.take(n))
    }

    /// A NUL-terminated `wirestring`, without the NUL.
    pub fn wirestring(&mut self) -> &'a [u8] {
        let end = self
            .bytes
            .iter()
            .position(|&b| b == 0)
            .expect("NUL-terminated");
        let s = self.take(end);
        self.take(1);
        s
    }

    /// What is left.
    pub fn rest(&self) -> &'a [u8] {
        self.bytes
    }
}
