//! BOLT 1 messages: `init` (features and the `networks` TLV), `error`, `warning`, `ping`
//! and `pong`, and the rules for everything else.
//!
//! A message is a 2-byte big-endian type and a payload. [`Message::decode`] decodes the
//! BOLT 1 types and returns any other type as [`Message::Unknown`] with its raw payload, for
//! the layer that knows it (e.g. BOLT 2 channel messages). Per BOLT 1, a reader ignores a
//! message of *odd* unknown type and closes the connection on an *even* one
//! ([`is_even`]); extra bytes after the fields a reader knows are ignored, and a TLV
//! stream is parsed strictly (minimal `BigSize`, increasing types, unknown even types
//! rejected). Nothing here panics on bytes from a peer: every failure is a [`WireError`].

use bitcoin::blockdata::constants::ChainHash;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// `warning`.
pub const WARNING: u16 = 1;
/// `init`.
pub const INIT: u16 = 16;
/// `error`.
pub const ERROR: u16 = 17;
/// `ping`.
pub const PING: u16 = 18;
/// `pong`.
pub const PONG: u16 = 19;

/// `init` TLV: the chains the sender is interested in.
const TLV_NETWORKS: u64 = 1;
/// `init` TLV: the address the sender sees us at.
const TLV_REMOTE_ADDR: u64 = 3;

/// A ping whose `num_pong_bytes` is at least this gets no pong.
pub const PONG_LIMIT: u16 = 65532;

/// Whether a message or TLV type is even ("it's OK to be odd": an even unknown type must
/// not be ignored).
pub const fn is_even(t: u64) -> bool {
    t.is_multiple_of(2)
}

/// Why bytes from a peer are not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The message ends before one of its fields.
    #[error("{msg}: truncated at {field}")]
    Truncated {
        /// The message.
        msg: &'static str,
        /// The field that is cut off.
        field: &'static str,
    },
    /// A message shorter than its 2-byte type.
    #[error("message shorter than its type")]
    NoType,
    /// A `BigSize` that is not minimally encoded.
    #[error("{msg}: TLV record {field} is not a minimal BigSize")]
    NonMinimalBigSize {
        /// The message.
        msg: &'static str,
        /// Which part (type or length).
        field: &'static str,
    },
    /// A TLV stream whose types do not strictly increase.
    #[error("{msg}: TLV type {tlv_type} does not follow {previous}")]
    TlvOrder {
        /// The message.
        msg: &'static str,
        /// The type seen.
        tlv_type: u64,
        /// The type before it.
        previous: u64,
    },
    /// A TLV record longer than what is left of the message.
    #[error("{msg}: TLV record {tlv_type} of length {len} overruns the message")]
    TlvOverrun {
        /// The message.
        msg: &'static str,
        /// The type.
        tlv_type: u64,
        /// Its declared length.
        len: u64,
    },
    /// An unknown even TLV type, which a reader must not ignore.
    #[error("{msg}: unknown even TLV type {tlv_type}")]
    UnknownEvenTlv {
        /// The message.
        msg: &'static str,
        /// The type.
        tlv_type: u64,
    },
    /// A known TLV record with a value that does not fit its definition.
    #[error("{msg}: bad TLV record {tlv_type}: {why}")]
    BadTlv {
        /// The message.
        msg: &'static str,
        /// The type.
        tlv_type: u64,
        /// What is wrong.
        why: &'static str,
    },
    /// A message that would not fit in a BOLT 8 frame (65535 bytes).
    #[error("{msg} of {len} bytes does not fit in a message")]
    TooLong {
        /// The message.
        msg: &'static str,
        /// Its encoded length.
        len: usize,
    },
}

/// A cursor over a message's bytes.
struct Reader<'a> {
    msg: &'static str,
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(msg: &'static str, data: &'a [u8]) -> Self {
        Reader { msg, data }
    }

    fn bytes(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], WireError> {
        if self.data.len() < n {
            return Err(WireError::Truncated {
                msg: self.msg,
                field,
            });
        }
        let (a, b) = self.data.split_at(n);
        self.data = b;
        Ok(a)
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, WireError> {
        let b = self.bytes(2, field)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn array32(&mut self, field: &'static str) -> Result<[u8; 32], WireError> {
        let mut a = [0u8; 32];
        a.copy_from_slice(self.bytes(32, field)?);
        Ok(a)
    }

    /// A u16 length followed by that many bytes.
    fn u16_prefixed(&mut self, field: &'static str) -> Result<&'a [u8], WireError> {
        let n = self.u16(field)?;
        self.bytes(usize::from(n), field)
    }

    fn bigsize(&mut self, field: &'static str) -> Result<u64, WireError> {
        let first = self.bytes(1, field)?[0];
        let non_minimal = WireError::NonMinimalBigSize {
            msg: self.msg,
            field,
        };
        let (v, min) = match first {
            0xfd => {
                let b = self.bytes(2, field)?;
                (u64::from(u16::from_be_bytes([b[0], b[1]])), 0xfd)
            }
            0xfe => {
                let b = self.bytes(4, field)?;
                (
                    u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]])),
                    0x1_0000,
                )
            }
            0xff => {
                let mut a = [0u8; 8];
                a.copy_from_slice(self.bytes(8, field)?);
                (u64::from_be_bytes(a), 0x1_0000_0000)
            }
            v => return Ok(u64::from(v)),
        };
        if v < min {
            return Err(non_minimal);
        }
        Ok(v)
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}

fn put_bigsize(v: u64, out: &mut Vec<u8>) {
    match v {
        0..=0xfc => out.push(v as u8),
        0xfd..=0xffff => {
            out.push(0xfd);
            out.extend_from_slice(&(v as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(0xfe);
            out.extend_from_slice(&(v as u32).to_be_bytes());
        }
        _ => {
            out.push(0xff);
            out.extend_from_slice(&v.to_be_bytes());
        }
    }
}

/// Appends a u16 length and the bytes; the caller keeps them under 65536 bytes (a longer
/// message would not fit in a frame anyway, and [`Message::encode`] checks the total).
fn put_u16_prefixed(b: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(b.len().min(usize::from(u16::MAX)) as u16).to_be_bytes());
    out.extend_from_slice(b);
}

/// A feature bit vector (BOLT 9): bit 0 is the least significant bit of the last byte on
/// the wire. Even bits are compulsory, odd bits optional.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Features {
    /// Little-endian: byte 0 holds bits 0..8. No trailing zero bytes.
    le: Vec<u8>,
}

impl Features {
    /// No features.
    pub fn empty() -> Features {
        Features::default()
    }

    /// The features with these bits set.
    pub fn from_bits(bits: &[u32]) -> Features {
        let mut f = Features::empty();
        for &b in bits {
            f.set(b);
        }
        f
    }

    /// From the wire's big-endian bytes.
    pub fn from_be_bytes(be: &[u8]) -> Features {
        let mut le: Vec<u8> = be.iter().rev().copied().collect();
        while le.last() == Some(&0) {
            le.pop();
        }
        Features { le }
    }

    /// The wire's big-endian bytes, in the minimal length.
    pub fn to_be_bytes(&self) -> Vec<u8> {
        self.le.iter().rev().copied().collect()
    }

    /// Sets `bit`.
    pub fn set(&mut self, bit: u32) {
        let i = (bit / 8) as usize;
        if self.le.len() <= i {
            self.le.resize(i + 1, 0);
        }
        self.le[i] |= 1 << (bit % 8);
    }

    /// Whether `bit` is set.
    pub fn is_set(&self, bit: u32) -> bool {
        self.le
            .get((bit / 8) as usize)
            .is_some_and(|b| b & (1 << (bit % 8)) != 0)
    }

    /// Whether the feature whose pair starts at the even bit `even` is set, compulsory or
    /// optional.
    pub fn supports(&self, even: u32) -> bool {
        self.is_set(even & !1) || self.is_set(even | 1)
    }

    /// The bits set, in increasing order.
    pub fn bits(&self) -> impl Iterator<Item = u32> + '_ {
        self.le.iter().enumerate().flat_map(|(i, b)| {
            (0..8u32).filter_map(move |j| (b & (1 << j) != 0).then_some(i as u32 * 8 + j))
        })
    }

    /// Both vectors' bits (BOLT 1 combines `globalfeatures` and `features` this way).
    pub fn union(&self, other: &Features) -> Features {
        let (long, short) = if self.le.len() >= other.le.len() {
            (self, other)
        } else {
            (other, self)
        };
        let mut le = long.le.clone();
        for (a, b) in le.iter_mut().zip(&short.le) {
            *a |= b;
        }
        Features { le }
    }

    /// The features this node puts in its `init`: `var_onion_optin` and
    /// `option_static_remotekey` compulsory (both ASSUMED by BOLT 9 but still sent for older
    /// peers), `payment_secret` compulsory, `option_anchors` and `option_channel_type`
    /// optional.
    pub fn node_default() -> Features {
        Features::from_bits(&[8, 12, 14, 23, 45])
    }

    /// The first problem BOLT 1 requires us to close the connection for: a compulsory
    /// (even) bit of a feature we do not know ([`KNOWN_FEATURES`]), or a known feature set
    /// without a feature it depends on.
    pub fn check(&self) -> Result<(), FeatureError> {
        for bit in self.bits() {
            if bit % 2 == 0 && known_feature(bit).is_none() {
                return Err(FeatureError::UnknownRequired(bit));
            }
        }
        for f in KNOWN_FEATURES {
            if self.supports(f.even) {
                for &dep in f.depends_on {
                    if !self.supports(dep) {
                        return Err(FeatureError::MissingDependency {
                            feature: f.name,
                            dependency: known_feature(dep).map_or("?", |d| d.name),
                        });
                    }
                }
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Features {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.bits().map(|b| match known_feature(b) {
                Some(k) if b % 2 == 0 => format!("{}(req)", k.name),
                Some(k) => format!("{}(opt)", k.name),
                None => format!("bit{b}"),
            }))
            .finish()
    }
}

/// A feature this node knows: either one it implements or one BOLT 9 marks ASSUMED (which
/// every node is taken to have).
#[derive(Debug, Clone, Copy)]
pub struct KnownFeature {
    /// The BOLT 9 name.
    pub name: &'static str,
    /// The compulsory (even) bit; the optional bit is `even + 1`.
    pub even: u32,
    /// The even bits of the features it depends on.
    pub depends_on: &'static [u32],
}

/// The features this node knows (BOLT 9). A peer that requires any other closes the
/// connection.
pub const KNOWN_FEATURES: &[KnownFeature] = &[
    KnownFeature {
        name: "option_data_loss_protect",
        even: 0,
        depends_on: &[],
    },
    KnownFeature {
        name: "gossip_queries",
        even: 6,
        depends_on: &[],
    },
    KnownFeature {
        name: "var_onion_optin",
        even: 8,
        depends_on: &[],
    },
    KnownFeature {
        name: "option_static_remotekey",
        even: 12,
        depends_on: &[],
    },
    KnownFeature {
        name: "payment_secret",
        even: 14,
        depends_on: &[],
    },
    KnownFeature {
        name: "basic_mpp",
        even: 16,
        depends_on: &[14],
    },
    KnownFeature {
        name: "option_anchors",
        even: 22,
        depends_on: &[],
    },
    KnownFeature {
        name: "option_channel_type",
        even: 44,
        depends_on: &[],
    },
];

fn known_feature(bit: u32) -> Option<&'static KnownFeature> {
    KNOWN_FEATURES.iter().find(|f| f.even == bit & !1)
}

/// Why a peer's features make us close the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FeatureError {
    /// The peer requires a feature we do not know.
    #[error("the peer requires unknown feature bit {0}")]
    UnknownRequired(u32),
    /// The peer sets a feature without one it depends on.
    #[error("the peer sets {feature} without {dependency}")]
    MissingDependency {
        /// The feature.
        feature: &'static str,
        /// What it needs.
        dependency: &'static str,
    },
}

/// An unknown odd TLV record, kept as it came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownTlv {
    /// Its type (odd).
    pub tlv_type: u64,
    /// Its value.
    pub value: Vec<u8>,
}

/// `init` (type 16): the first message on every connection.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Init {
    /// `globalfeatures` (legacy: new senders leave it empty; readers OR it into
    /// `features`).
    pub global_features: Features,
    /// `features`.
    pub features: Features,
    /// `networks`: the chains the sender is interested in (`None`: not sent, i.e. any).
    pub networks: Option<Vec<ChainHash>>,
    /// `remote_addr`: an address descriptor (BOLT 7) of how the sender sees the receiver.
    pub remote_addr: Option<Vec<u8>>,
    /// Unknown odd TLV records.
    pub unknown_tlvs: Vec<UnknownTlv>,
}

impl Init {
    /// An `init` with these features and networks.
    pub fn new(features: Features, networks: Vec<ChainHash>) -> Init {
        Init {
            features,
            networks: Some(networks),
            ..Init::default()
        }
    }

    /// The features to act on: `globalfeatures` OR `features`.
    pub fn combined_features(&self) -> Features {
        self.features.union(&self.global_features)
    }

    /// Whether the chains `ours` and the peer's have one in common (or either side did not
    /// say).
    pub fn shares_a_chain_with(&self, ours: &Option<Vec<ChainHash>>) -> bool {
        match (&self.networks, ours) {
            (Some(theirs), Some(ours)) => theirs.iter().any(|c| ours.contains(c)),
            _ => true,
        }
    }

    fn decode_payload(payload: &[u8]) -> Result<Init, WireError> {
        let mut r = Reader::new("init", payload);
        let global_features = Features::from_be_bytes(r.u16_prefixed("globalfeatures")?);
        let features = Features::from_be_bytes(r.u16_prefixed("features")?);
        let mut init = Init {
            global_features,
            features,
            ..Init::default()
        };
        for (tlv_type, value) in parse_tlv_stream("init", r.rest())? {
            match tlv_type {
                TLV_NETWORKS => {
                    if value.len() % 32 != 0 {
                        return Err(WireError::BadTlv {
                            msg: "init",
                            tlv_type,
                            why: "networks is not a list of 32-byte chain hashes",
                        });
                    }
                    let chains = value
                        .chunks_exact(32)
                        .map(|c| {
                            let mut a = [0u8; 32];
                            a.copy_from_slice(c);
                            ChainHash::from(a)
                        })
                        .collect();
                    init.networks = Some(chains);
                }
                TLV_REMOTE_ADDR => init.remote_addr = Some(value.to_vec()),
                t if is_even(t) => {
                    return Err(WireError::UnknownEvenTlv {
                        msg: "init",
                        tlv_type: t,
                    })
                }
                t => init.unknown_tlvs.push(UnknownTlv {
                    tlv_type: t,
                    value: value.to_vec(),
                }),
            }
        }
        Ok(init)
    }

    fn encode_payload(&self, out: &mut Vec<u8>) {
        put_u16_prefixed(&self.global_features.to_be_bytes(), out);
        put_u16_prefixed(&self.features.to_be_bytes(), out);
        let mut records: Vec<(u64, Vec<u8>)> = Vec::new();
        if let Some(n) = &self.networks {
            records.push((TLV_NETWORKS, n.iter().flat_map(|c| c.to_bytes()).collect()));
        }
        if let Some(a) = &self.remote_addr {
            records.push((TLV_REMOTE_ADDR, a.clone()));
        }
        for u in &self.unknown_tlvs {
            records.push((u.tlv_type, u.value.clone()));
        }
        records.sort_by_key(|(t, _)| *t);
        for (t, v) in records {
            put_bigsize(t, out);
            put_bigsize(v.len() as u64, out);
            out.extend_from_slice(&v);
        }
    }
}

/// The BOLT 7 address descriptor of a TCP address (type 1 IPv4, type 2 IPv6), for
/// `init`'s `remote_addr`.
pub fn address_descriptor(addr: &SocketAddr) -> Vec<u8> {
    let mut d = Vec::with_capacity(19);
    match addr.ip() {
        IpAddr::V4(ip) => {
            d.push(1);
            d.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            d.push(2);
            d.extend_from_slice(&ip.octets());
        }
    }
    d.extend_from_slice(&addr.port().to_be_bytes());
    d
}

/// Splits a TLV stream into records, enforcing BOLT 1's rules (minimal BigSize, strictly
/// increasing types, no overrun). Whether a type is known is for the caller.
fn parse_tlv_stream<'a>(
    msg: &'static str,
    data: &'a [u8],
) -> Result<Vec<(u64, &'a [u8])>, WireError> {
    let mut r = Reader::new(msg, data);
    let mut out: Vec<(u64, &[u8])> = Vec::new();
    while !r.data.is_empty() {
        let t = r.bigsize("type")?;
        let len = r.bigsize("length")?;
        if let Some(&(previous, _)) = out.last() {
            if t <= previous {
                return Err(WireError::TlvOrder {
                    msg,
                    tlv_type: t,
                    previous,
                });
            }
        }
        let value = usize::try_from(len)
            .ok()
            .filter(|&n| n <= r.data.len())
            .ok_or(WireError::TlvOverrun {
                msg,
                tlv_type: t,
                len,
            })?;
        out.push((t, r.bytes(value, "value")?));
    }
    Ok(out)
}

/// The channel id of an `error` or `warning` about the connection as a whole.
pub const ALL_CHANNELS: [u8; 32] = [0; 32];

/// `error` (type 17) or `warning` (type 1): a channel id (all zero: every channel) and a
/// human-readable description.
#[derive(Clone, PartialEq, Eq)]
pub struct Notice {
    /// The channel it is about, or [`ALL_CHANNELS`].
    pub channel_id: [u8; 32],
    /// The description (not necessarily UTF-8: display it with [`Notice::text`]).
    pub data: Vec<u8>,
}

impl Notice {
    /// A notice about the whole connection.
    pub fn connection(text: &str) -> Notice {
        Notice {
            channel_id: ALL_CHANNELS,
            data: text.as_bytes().to_vec(),
        }
    }

    /// The description with anything that is not printable ASCII escaped.
    pub fn text(&self) -> String {
        self.data
            .iter()
            .flat_map(|&b| match b {
                b' '..=b'~' => vec![b as char],
                _ => format!("\\x{b:02x}").chars().collect(),
            })
            .collect()
    }

    fn decode_payload(msg: &'static str, payload: &[u8]) -> Result<Notice, WireError> {
        let mut r = Reader::new(msg, payload);
        let channel_id = r.array32("channel_id")?;
        let data = r.u16_prefixed("data")?.to_vec();
        Ok(Notice { channel_id, data })
    }

    fn encode_payload(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.channel_id);
        put_u16_prefixed(&self.data, out);
    }
}

impl fmt::Debug for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notice")
            .field("channel_id", &hex::encode(self.channel_id))
            .field("text", &self.text())
            .finish()
    }
}

/// `ping` (type 18).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ping {
    /// The size of the `pong` payload asked for (none at or above [`PONG_LIMIT`]).
    pub num_pong_bytes: u16,
    /// The number of padding bytes (sent as zeros, ignored on receipt).
    pub byteslen: u16,
}

/// `pong` (type 19).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pong {
    /// The number of padding bytes (the ping's `num_pong_bytes`).
    pub byteslen: u16,
}

/// A message: one of BOLT 1's, or another type with its raw payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// `init`.
    Init(Init),
    /// `error`.
    Error(Notice),
    /// `warning`.
    Warning(Notice),
    /// `ping`.
    Ping(Ping),
    /// `pong`.
    Pong(Pong),
    /// Any other type, for a layer that knows it.
    Unknown {
        /// The type.
        msg_type: u16,
        /// The bytes after the type.
        payload: Vec<u8>,
    },
}

impl Message {
    /// The message type.
    pub fn msg_type(&self) -> u16 {
        match self {
            Message::Init(_) => INIT,
            Message::Error(_) => ERROR,
            Message::Warning(_) => WARNING,
            Message::Ping(_) => PING,
            Message::Pong(_) => PONG,
            Message::Unknown { msg_type, .. } => *msg_type,
        }
    }

    /// Decodes a whole message (type + payload). Trailing bytes after the fields of a
    /// BOLT 1 message are ignored (`init`'s are its TLV stream).
    ///
    /// # Errors
    /// A [`WireError`] for a message that is truncated or whose TLV stream is invalid.
    pub fn decode(msg: &[u8]) -> Result<Message, WireError> {
        if msg.len() < 2 {
            return Err(WireError::NoType);
        }
        let (t, payload) = msg.split_at(2);
        let t = u16::from_be_bytes([t[0], t[1]]);
        Ok(match t {
            INIT => Message::Init(Init::decode_payload(payload)?),
            ERROR => Message::Error(Notice::decode_payload("error", payload)?),
            WARNING => Message::Warning(Notice::decode_payload("warning", payload)?),
            PING => {
                let mut r = Reader::new("ping", payload);
                let num_pong_bytes = r.u16("num_pong_bytes")?;
                let byteslen = r.u16_prefixed("ignored")?.len() as u16;
                Message::Ping(Ping {
                    num_pong_bytes,
                    byteslen,
                })
            }
            PONG => {
                let mut r = Reader::new("pong", payload);
                let byteslen = r.u16_prefixed("ignored")?.len() as u16;
                Message::Pong(Pong { byteslen })
            }
            msg_type => Message::Unknown {
                msg_type,
                payload: payload.to_vec(),
            },
        })
    }

    /// Encodes the whole message (type + payload).
    ///
    /// # Errors
    /// [`WireError::TooLong`] if it would not fit in a BOLT 8 frame.
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        let mut out = self.msg_type().to_be_bytes().to_vec();
        let name = match self {
            Message::Init(i) => {
                i.encode_payload(&mut out);
                "init"
            }
            Message::Error(n) => {
                n.encode_payload(&mut out);
                "error"
            }
            Message::Warning(n) => {
                n.encode_payload(&mut out);
                "warning"
            }
            Message::Ping(p) => {
                out.extend_from_slice(&p.num_pong_bytes.to_be_bytes());
                out.extend_from_slice(&p.byteslen.to_be_bytes());
                out.resize(out.len() + usize::from(p.byteslen), 0);
                "ping"
            }
            Message::Pong(p) => {
                out.extend_from_slice(&p.byteslen.to_be_bytes());
                out.resize(out.len() + usize::from(p.byteslen), 0);
                "pong"
            }
            Message::Unknown { payload, .. } => {
                out.extend_from_slice(payload);
                "message"
            }
        };
        let fields_fit = match self {
            Message::Init(i) => {
                i.global_features.le.len() <= usize::from(u16::MAX)
                    && i.features.le.len() <= usize::from(u16::MAX)
            }
            Message::Error(n) | Message::Warning(n) => n.data.len() <= usize::from(u16::MAX),
            _ => true,
        };
        if out.len() > usize::from(u16::MAX) || !fields_fit {
            return Err(WireError::TooLong {
                msg: name,
                len: out.len(),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::Network;

    fn roundtrip(m: &Message) {
        let b = m.encode().unwrap();
        assert_eq!(&Message::decode(&b).unwrap(), m, "{}", hex::encode(&b));
    }

    #[test]
    fn bolt1_messages_roundtrip() {
        let regtest = ChainHash::using_genesis_block(Network::Regtest);
        let mut init = Init::new(Features::node_default(), vec![regtest]);
        init.remote_addr = Some(address_descriptor(&"127.0.0.1:9735".parse().unwrap()));
        roundtrip(&Message::Init(init));
        roundtrip(&Message::Init(Init::default()));
        roundtrip(&Message::Error(Notice::connection("bye")));
        roundtrip(&Message::Warning(Notice {
            channel_id: [7; 32],
            data: vec![0, 1, 2],
        }));
        roundtrip(&Message::Ping(Ping {
            num_pong_bytes: 10,
            byteslen: 3,
        }));
        roundtrip(&Message::Pong(Pong { byteslen: 65531 }));
        roundtrip(&Message::Unknown {
            msg_type: 32,
            payload: vec![1, 2, 3],
        });
    }

    #[test]
    fn init_bytes_are_as_specified() {
        // gflen 0, flen 2 (bits 8 and 12 => 0x1100), networks = regtest.
        let regtest = ChainHash::using_genesis_block(Network::Regtest);
        let init = Init::new(Features::from_bits(&[8, 12]), vec![regtest]);
        let b = Message::Init(init).encode().unwrap();
        let mut want = hex::decode("0010000000021100").unwrap();
        want.extend_from_slice(&[1, 32]);
        want.extend_from_slice(&regtest.to_bytes());
        assert_eq!(b, want);
    }

    #[test]
    fn features() {
        let f = Features::from_be_bytes(&[0x00, 0x02, 0x00, 0x01]);
        assert_eq!(f.bits().collect::<Vec<_>>(), vec![0, 17]);
        assert_eq!(f.to_be_bytes(), vec![0x02, 0x00, 0x01]);
        assert!(f.supports(16) && f.supports(0) && !f.supports(8));
        assert_eq!(
            f.check(),
            Err(FeatureError::MissingDependency {
                feature: "basic_mpp",
                dependency: "payment_secret"
            })
        );
        assert_eq!(
            Features::from_bits(&[100]).check(),
            Err(FeatureError::UnknownRequired(100))
        );
        assert_eq!(Features::from_bits(&[101, 15, 17]).check(), Ok(()));
        assert_eq!(Features::node_default().check(), Ok(()));
        let g = Features::from_bits(&[3]);
        assert_eq!(f.union(&g).bits().collect::<Vec<_>>(), vec![0, 3, 17]);
        assert_eq!(
            format!("{:?}", Features::from_bits(&[8, 13, 99])),
            "[\"var_onion_optin(req)\", \"option_static_remotekey(opt)\", \"bit99\"]"
        );
    }

    #[test]
    fn the_largest_feature_vector_does_not_overflow() {
        let mut be = vec![0u8; usize::from(u16::MAX)];
        be[0] = 0x80;
        let f = Features::from_be_bytes(&be);
        assert_eq!(f.bits().collect::<Vec<_>>(), vec![65535 * 8 - 1]);
        assert_eq!(f.check(), Ok(()));
        be[0] = 0x40;
        assert_eq!(
            Features::from_be_bytes(&be).check(),
            Err(FeatureError::UnknownRequired(65535 * 8 - 2))
        );
    }

    #[test]
    fn combined_features_and_chains() {
        let init = Init {
            global_features: Features::from_bits(&[13]),
            features: Features::from_bits(&[8]),
            ..Init::default()
        };
        assert_eq!(init.combined_features(), Features::from_bits(&[8, 13]));
        let main = ChainHash::using_genesis_block(Network::Bitcoin);
        let reg = ChainHash::using_genesis_block(Network::Regtest);
        assert!(init.shares_a_chain_with(&Some(vec![main])));
        let init = Init::new(Features::empty(), vec![reg]);
        assert!(!init.shares_a_chain_with(&Some(vec![main])));
        assert!(init.shares_a_chain_with(&Some(vec![main, reg])));
        assert!(init.shares_a_chain_with(&None));
    }

    fn init_with_tlvs(tlvs: &str) -> Result<Message, WireError> {
        Message::decode(&hex::decode(format!("001000000000{tlvs}")).unwrap())
    }

    #[test]
    fn init_tlv_rules() {
        // Unknown odd: kept and ignored.
        let Message::Init(i) = init_with_tlvs("0502abcd").unwrap() else {
            panic!()
        };
        assert_eq!(
            i.unknown_tlvs,
            vec![UnknownTlv {
                tlv_type: 5,
                value: vec![0xab, 0xcd]
            }]
        );
        // Unknown even: rejected.
        assert_eq!(
            init_with_tlvs("0400"),
            Err(WireError::UnknownEvenTlv {
                msg: "init",
                tlv_type: 4
            })
        );
        // Out of order, repeated.
        assert!(matches!(
            init_with_tlvs("03000100"),
            Err(WireError::TlvOrder { .. })
        ));
        assert!(matches!(
            init_with_tlvs("05000500"),
            Err(WireError::TlvOrder { .. })
        ));
        // Non-minimal BigSize.
        assert!(matches!(
            init_with_tlvs("fd000500"),
            Err(WireError::NonMinimalBigSize { .. })
        ));
        assert!(matches!(
            init_with_tlvs("05fe000000ff"),
            Err(WireError::NonMinimalBigSize { .. })
        ));
        // Overrun; a length that does not fit in memory.
        assert!(matches!(
            init_with_tlvs("0503abcd"),
            Err(WireError::TlvOverrun { .. })
        ));
        assert!(matches!(
            init_with_tlvs("05ffffffffffffffffff"),
            Err(WireError::TlvOverrun { .. })
        ));
        // networks that is not a list of hashes.
        assert!(matches!(
            init_with_tlvs("0101aa"),
            Err(WireError::BadTlv { tlv_type: 1, .. })
        ));
        // Empty networks: the peer wants no chain.
        let Message::Init(i) = init_with_tlvs("0100").unwrap() else {
            panic!()
        };
        assert_eq!(i.networks, Some(vec![]));
    }

    #[test]
    fn truncated_and_extended_messages() {
        assert_eq!(Message::decode(&[0]), Err(WireError::NoType));
        for bad in [
            "0010",
            "001000",
            "00100001",
            "00100000000200",
            "0012",
            "001200010002",
            "0013ff",
            "0011",
            "000100",
        ] {
            let b = hex::decode(bad).unwrap();
            assert!(
                matches!(Message::decode(&b), Err(WireError::Truncated { .. })),
                "{bad}"
            );
        }
        // Extra bytes after the known fields are ignored.
        assert_eq!(
            Message::decode(&hex::decode("0013000100ffff").unwrap()).unwrap(),
            Message::Pong(Pong { byteslen: 1 })
        );
        assert_eq!(
            Message::decode(&hex::decode("0012000a0000ee").unwrap()).unwrap(),
            Message::Ping(Ping {
                num_pong_bytes: 10,
                byteslen: 0
            })
        );
    }

    #[test]
    fn oversized_messages_are_refused() {
        let m = Message::Ping(Ping {
            num_pong_bytes: 0,
            byteslen: u16::MAX,
        });
        assert!(matches!(m.encode(), Err(WireError::TooLong { .. })));
        let m = Message::Error(Notice {
            channel_id: ALL_CHANNELS,
            data: vec![b'x'; 70000],
        });
        assert!(matches!(m.encode(), Err(WireError::TooLong { .. })));
    }

    #[test]
    fn notice_text_is_escaped() {
        let n = Notice {
            channel_id: ALL_CHANNELS,
            data: b"ok\n\xff".to_vec(),
        };
        assert_eq!(n.text(), "ok\\x0a\\xff");
    }

    #[test]
    fn remote_addr_descriptors() {
        assert_eq!(
            address_descriptor(&"1.2.3.4:9735".parse().unwrap()),
            vec![1, 1, 2, 3, 4, 0x26, 0x07]
        );
        assert_eq!(address_descriptor(&"[::1]:1".parse().unwrap()).len(), 19);
    }
}
