//! JSON rendering of message fields, for operators reading traffic (`vls-proxy decode`) and
//! for logs. Byte strings and keys are hex; transactions are hex with their txid; PSBTs are
//! base64.

use crate::types::*;
use bitcoin::hashes::{sha256, Hash};
use serde_json::{json, Value};

/// A value that can be shown as JSON.
pub trait ToJson {
    /// The JSON form.
    fn to_json(&self) -> Value;
}

macro_rules! json_num {
    ($($t:ty),*) => {$(
        impl ToJson for $t {
            fn to_json(&self) -> Value { json!(self) }
        }
    )*};
}
json_num!(u8, u16, u32, u64, bool);

impl<T: ToJson> ToJson for Option<T> {
    fn to_json(&self) -> Value {
        self.as_ref().map_or(Value::Null, ToJson::to_json)
    }
}

impl<T: ToJson> ToJson for Vec<T> {
    fn to_json(&self) -> Value {
        Value::Array(self.iter().map(ToJson::to_json).collect())
    }
}

macro_rules! json_display {
    ($($t:ty),*) => {$(
        impl ToJson for $t {
            fn to_json(&self) -> Value { Value::String(self.to_string()) }
        }
    )*};
}
json_display!(
    NodeId,
    secp256k1::PublicKey,
    bitcoin::bip32::Xpub,
    bitcoin::Txid
);

impl ToJson for sha256::Hash {
    fn to_json(&self) -> Value {
        Value::String(hex::encode(self.as_byte_array()))
    }
}

impl ToJson for bitcoin::blockdata::constants::ChainHash {
    fn to_json(&self) -> Value {
        Value::String(hex::encode(self.as_bytes()))
    }
}

impl ToJson for Secret {
    fn to_json(&self) -> Value {
        Value::String(hex::encode(self.0))
    }
}

impl ToJson for AmountMsat {
    fn to_json(&self) -> Value {
        json!(self.to_msat())
    }
}

impl ToJson for bitcoin::Amount {
    fn to_json(&self) -> Value {
        json!(self.to_sat())
    }
}

impl ToJson for secp256k1::ecdsa::Signature {
    fn to_json(&self) -> Value {
        Value::String(hex::encode(self.serialize_compact()))
    }
}

impl ToJson for secp256k1::ecdsa::RecoverableSignature {
    fn to_json(&self) -> Value {
        let (id, b) = self.serialize_compact();
        json!({"signature": hex::encode(b), "recid": id.to_i32()})
    }
}

impl ToJson for secp256k1::schnorr::Signature {
    fn to_json(&self) -> Value {
        Value::String(hex::encode(self.as_ref()))
    }
}

impl ToJson for BitcoinSignature {
    fn to_json(&self) -> Value {
        json!({"signature": hex::encode(self.sig.serialize_compact()), "sighash": self.sighash.to_u8()})
    }
}

impl ToJson for WireString {
    fn to_json(&self) -> Value {
        Value::String(self.to_string_lossy())
    }
}

impl ToJson for WirePsbt {
    fn to_json(&self) -> Value {
        use bitcoin::base64::Engine;
        Value::String(bitcoin::base64::engine::general_purpose::STANDARD.encode(self.to_bytes()))
    }
}

impl ToJson for BitcoinTx {
    fn to_json(&self) -> Value {
        json!({
            "txid": self.tx.compute_txid().to_string(),
            "tx": bitcoin::consensus::encode::serialize_hex(&self.tx),
            "psbt": self.psbt.to_json(),
        })
    }
}

impl ToJson for Side {
    fn to_json(&self) -> Value {
        Value::String(match self {
            Side::Local => "local".into(),
            Side::Remote => "remote".into(),
        })
    }
}

impl ToJson for HsmHtlc {
    fn to_json(&self) -> Value {
        json!({"side": self.side.to_json(), "amount_msat": self.amount.to_msat(),
               "payment_hash": self.payment_hash.to_json(), "cltv_expiry": self.cltv_expiry})
    }
}

impl ToJson for Basepoints {
    fn to_json(&self) -> Value {
        json!({"revocation": self.revocation.to_string(), "payment": self.payment.to_string(),
               "htlc": self.htlc.to_string(), "delayed_payment": self.delayed_payment.to_string()})
    }
}

impl ToJson for ChannelType {
    fn to_json(&self) -> Value {
        json!({"bits": self.bits()})
    }
}

impl ToJson for Bip32KeyVersion {
    fn to_json(&self) -> Value {
        json!({"pubkey_version": format!("{:08x}", self.pubkey_version),
               "privkey_version": format!("{:08x}", self.privkey_version)})
    }
}

impl ToJson for DevChannelSecrets {
    fn to_json(&self) -> Value {
        json!({"funding_privkey": self.funding_privkey.to_json(),
               "revocation_basepoint_secret": self.revocation_basepoint_secret.to_json(),
               "payment_basepoint_secret": self.payment_basepoint_secret.to_json(),
               "htlc_basepoint_secret": self.htlc_basepoint_secret.to_json(),
               "delayed_payment_basepoint_secret": self.delayed_payment_basepoint_secret.to_json()})
    }
}

impl ToJson for HsmUtxo {
    fn to_json(&self) -> Value {
        json!({
            "txid": self.txid.to_string(), "vout": self.vout, "amount_sat": self.amount.to_sat(),
            "keyindex": self.keyindex, "script_pubkey": hex::encode(self.script_pubkey.as_bytes()),
            "close_info": self.close_info.as_ref().map(|c| json!({
                "channel_dbid": c.channel_dbid, "peer_id": c.peer_id.to_string(),
                "commitment_point": c.commitment_point.map(|p| p.to_string()),
                "option_anchors": c.option_anchors, "csv": c.csv,
            })),
        })
    }
}
