//! The one operation BOLT 8 needs from the node's static key: ECDH.
//!
//! The node never holds its node key. The handshake's ephemeral keys are session keys,
//! generated here and forgotten with the session, but every ECDH with the *static* key (the
//! responder's `es` in act one, the initiator's `se` in act three) is an [`Ecdh`] call,
//! which for the node is an `hsmd_ecdh_req` to the signer on a connectd-like client
//! ([`connectd_client`]: our own node id, dbid 0, permissions `CONNECTD` = ECDH).

use crate::client::{ClientError, HsmClient};
use crate::hsmd::Hsmd;
use crate::subdaemon::Subdaemon;
use protocol::msgs::EcdhReq;
use protocol::types::NodeId;
use secp256k1::PublicKey;
use std::future::Future;
use std::sync::Arc;

/// ECDH with a static private key that the caller does not hold.
///
/// The result is BOLT 8's `ECDH(k, P)`: the SHA-256 of the compressed serialization of
/// `k·P` (what libsecp256k1's default ECDH and Core Lightning's `hsmd_ecdh_req` return).
/// Implementations must be deterministic for a given point and never reveal the key.
pub trait Ecdh {
    /// Why an ECDH failed (the signer refused, the connection to it broke, ...).
    type Error: std::error::Error + Send + Sync + 'static;

    /// The shared secret of the static key and `point`.
    fn ecdh(&self, point: &PublicKey)
        -> impl Future<Output = Result<[u8; 32], Self::Error>> + Send;
}

impl<T: Ecdh + Sync + ?Sized> Ecdh for &T {
    type Error = T::Error;
    fn ecdh(
        &self,
        point: &PublicKey,
    ) -> impl Future<Output = Result<[u8; 32], Self::Error>> + Send {
        (**self).ecdh(point)
    }
}

impl<T: Ecdh + Send + Sync + ?Sized> Ecdh for Arc<T> {
    type Error = T::Error;
    fn ecdh(
        &self,
        point: &PublicKey,
    ) -> impl Future<Output = Result<[u8; 32], Self::Error>> + Send {
        (**self).ecdh(point)
    }
}

/// The signer's ECDH: `hsmd_ecdh_req` on this client (which needs the `ECDH` permission:
/// a connectd client or the master).
impl Ecdh for HsmClient {
    type Error = ClientError;
    async fn ecdh(&self, point: &PublicKey) -> Result<[u8; 32], ClientError> {
        Ok(self.call(&EcdhReq::new(*point)).await?.ss.0)
    }
}

/// Asks the proxy for the client lightningd gives connectd: our own node id, dbid 0,
/// permissions [`Subdaemon::Connectd`] (ECDH only). Its [`Ecdh`] implementation is the
/// node's BOLT 8 static key.
///
/// # Errors
/// The [`ClientError`] of `hsmd_client_hsmfd` on the master.
pub async fn connectd_client(hsmd: &Hsmd, node_id: NodeId) -> Result<HsmClient, ClientError> {
    hsmd.new_client(node_id, 0, Subdaemon::Connectd.permissions())
        .await
}

#[cfg(test)]
pub(crate) mod test_key {
    //! A static key held in memory, for the spec's test vectors only (the node never
    //! holds its key).

    use super::Ecdh;
    use secp256k1::{ecdh::SharedSecret, PublicKey, Secp256k1, SecretKey};
    use std::convert::Infallible;

    /// A test vector's static key.
    pub(crate) struct LocalKey(pub(crate) SecretKey);

    impl LocalKey {
        pub(crate) fn from_hex(h: &str) -> LocalKey {
            LocalKey(SecretKey::from_slice(&hex::decode(h).unwrap()).unwrap())
        }
        pub(crate) fn public_key(&self) -> PublicKey {
            PublicKey::from_secret_key(&Secp256k1::new(), &self.0)
        }
    }

    impl Ecdh for LocalKey {
        type Error = Infallible;
        async fn ecdh(&self, point: &PublicKey) -> Result<[u8; 32], Infallible> {
            Ok(SharedSecret::new(point, &self.0).secret_bytes())
        }
    }
}
