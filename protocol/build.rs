//! Generates the message structs, the `Message` enum and the TLV stream structs from the
//! protocol's csv definitions (`spec/*.csv`, the format of Core Lightning's wire csv files).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;

struct Field {
    name: String,
    ty: String,
    count: Option<String>,
}

struct Msg {
    name: String,
    num: u16,
    fields: Vec<Field>,
}

struct TlvRecord {
    name: String,
    num: u64,
    ty: String,
}

/// Rust type for a csv field type.
fn rust_type(t: &str) -> &'static str {
    match t {
        "u8" => "u8",
        "u16" => "u16",
        "u32" => "u32",
        "u64" => "u64",
        "bool" => "bool",
        "node_id" => "NodeId",
        "pubkey" => "PublicKey",
        "secret" | "privkey" => "Secret",
        "secrets" => "DevChannelSecrets",
        "sha256" => "sha256::Hash",
        "bitcoin_txid" => "Txid",
        "secp256k1_ecdsa_signature" => "ecdsa::Signature",
        "secp256k1_ecdsa_recoverable_signature" => "ecdsa::RecoverableSignature",
        "bitcoin_signature" => "BitcoinSignature",
        "bip340sig" => "schnorr::Signature",
        "amount_msat" => "AmountMsat",
        "amount_sat" => "Amount",
        "wirestring" => "WireString",
        "bitcoin_tx" => "BitcoinTx",
        "wally_psbt" => "WirePsbt",
        "hsm_utxo" => "HsmUtxo",
        "hsm_htlc" => "HsmHtlc",
        "basepoints" => "Basepoints",
        "channel_type" => "ChannelType",
        "ext_key" => "Xpub",
        "bip32_key_version" => "Bip32KeyVersion",
        "chainparams" => "ChainHash",
        "enum side" => "Side",
        other => panic!("no Rust type for csv type {other}"),
    }
}

fn camel(name: &str) -> String {
    let base = name
        .strip_prefix("hsmd_")
        .or_else(|| name.strip_prefix("hsmstatus_"))
        .unwrap_or(name);
    base.split('_')
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

fn parse_num(s: &str) -> u64 {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).unwrap(),
        None => s.parse().unwrap(),
    }
}

fn main() {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("spec");
    let mut msgs: Vec<Msg> = Vec::new();
    let mut tlvs: Vec<(String, Vec<TlvRecord>)> = Vec::new();
    for file in ["hsmd_wire.csv", "status_wire.csv", "vls_wire.csv"] {
        let path = dir.join(file);
        println!("cargo:rerun-if-changed={}", path.display());
        let text = std::fs::read_to_string(&path).unwrap();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let parts: Vec<&str> = line.split(',').collect();
            match parts[0] {
                "msgtype" => {
                    // A message may be declared once only.
                    assert!(
                        !msgs.iter().any(|m| m.name == parts[1]),
                        "{} twice",
                        parts[1]
                    );
                    msgs.push(Msg {
                        name: parts[1].to_string(),
                        num: parse_num(parts[2]) as u16,
                        fields: vec![],
                    })
                }
                "msgdata" => {
                    let m = msgs.iter_mut().find(|m| m.name == parts[1]).unwrap();
                    let count = parts
                        .get(4)
                        .filter(|c| !c.is_empty())
                        .map(|c| c.to_string());
                    m.fields.push(Field {
                        name: parts[2].to_string(),
                        ty: parts[3].to_string(),
                        count,
                    });
                }
                "tlvtype" => {
                    let stream = parts[1].to_string();
                    let rec = TlvRecord {
                        name: parts[2].into(),
                        num: parse_num(parts[3]),
                        ty: String::new(),
                    };
                    match tlvs.iter_mut().find(|(n, _)| *n == stream) {
                        Some((_, v)) => v.push(rec),
                        None => tlvs.push((stream, vec![rec])),
                    }
                }
                "tlvdata" => {
                    let (_, recs) = tlvs.iter_mut().find(|(n, _)| n == parts[1]).unwrap();
                    let rec = recs.iter_mut().find(|r| r.name == parts[2]).unwrap();
                    assert!(
                        rec.ty.is_empty(),
                        "multi-field TLV records are not supported"
                    );
                    rec.ty = parts[4].to_string();
                }
                // hsm_htlc is implemented by hand in types.rs.
                "subtype" | "subtypedata" => {}
                other => panic!("unknown csv line kind {other}"),
            }
        }
    }
    let tlv_names: HashMap<String, String> =
        tlvs.iter().map(|(n, _)| (n.clone(), camel(n))).collect();

    let mut out = String::new();
    gen_tlvs(&mut out, &tlvs);
    for m in &msgs {
        gen_msg(&mut out, m, &tlv_names);
    }
    gen_enum(&mut out, &msgs);
    let dest = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("msgs_gen.rs");
    std::fs::write(dest, out).unwrap();
}

/// The Rust type of a field, with its csv optional marker resolved.
fn field_type(f: &Field, tlv_names: &HashMap<String, String>) -> String {
    if let Some(t) = tlv_names.get(&f.ty) {
        return t.clone();
    }
    if let Some(inner) = f.ty.strip_prefix('?') {
        return format!("Option<{}>", rust_type(inner));
    }
    let base = rust_type(&f.ty);
    if f.count.is_some() {
        format!("Vec<{base}>")
    } else {
        base.to_string()
    }
}

fn gen_tlvs(out: &mut String, tlvs: &[(String, Vec<TlvRecord>)]) {
    for (name, recs) in tlvs {
        let sname = camel(name);
        writeln!(out, "/// TLV stream `{name}`.\n#[derive(Clone, PartialEq, Debug, Default)]\npub struct {sname} {{").unwrap();
        for r in recs {
            writeln!(
                out,
                "    /// Record `{}` (type {}).\n    pub {}: Option<{}>,",
                r.name,
                r.num,
                r.name,
                rust_type(&r.ty)
            )
            .unwrap();
        }
        writeln!(out, "    /// Records of unknown odd types, kept verbatim.\n    pub unknown: Vec<UnknownTlv>,\n}}\n").unwrap();

        // Decoding: the stream takes the rest of the message.
        writeln!(out, "impl Wire for {sname} {{\n    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {{\n        let mut s = {sname}::default();\n        let mut last: Option<u64> = None;\n        while r.remaining() > 0 {{\n            let start = r.position();\n            let t = read_bigsize(r)?;\n            if last.is_some_and(|l| t <= l) {{\n                return Err(tlv_error(r, start, \"types not strictly ascending\"));\n            }}\n            last = Some(t);\n            let len = read_bigsize(r)?;\n            let len = usize::try_from(len).map_err(|_| tlv_error(r, start, \"length too large\"))?;\n            let value = r.take(len)?;\n            let mut vr = Reader::new(value);\n            match t {{").unwrap();
        for rec in recs {
            writeln!(out, "                {} => {{\n                    s.{} = Some(<{}>::read(&mut vr).map_err(|_| tlv_error(r, start, \"bad value for record {}\"))?);\n                    if vr.remaining() != 0 {{\n                        return Err(tlv_error(r, start, \"record {} has extra bytes\"));\n                    }}\n                }}", rec.num, rec.name, rust_type(&rec.ty), rec.name, rec.name).unwrap();
        }
        writeln!(out, "                t if t % 2 == 1 => s.unknown.push(UnknownTlv {{ tlv_type: t, value: value.to_vec() }}),\n                _ => return Err(tlv_error(r, start, \"unknown even type\")),\n            }}\n        }}\n        Ok(s)\n    }}").unwrap();

        // Encoding: known and unknown records, ascending by type.
        writeln!(out, "    fn write(&self, w: &mut Vec<u8>) -> Result<(), EncodeError> {{\n        let mut recs: Vec<(u64, Vec<u8>)> = self.unknown.iter().map(|u| (u.tlv_type, u.value.clone())).collect();").unwrap();
        for rec in recs {
            writeln!(out, "        if let Some(v) = &self.{} {{\n            let mut b = Vec::new();\n            v.write(&mut b)?;\n            recs.push(({}, b));\n        }}", rec.name, rec.num).unwrap();
        }
        writeln!(out, "        recs.sort_by_key(|(t, _)| *t);\n        for (t, v) in recs {{\n            write_bigsize(t, w);\n            write_bigsize(v.len() as u64, w);\n            w.extend_from_slice(&v);\n        }}\n        Ok(())\n    }}\n}}\n").unwrap();

        // JSON.
        writeln!(out, "impl ToJson for {sname} {{\n    fn to_json(&self) -> Value {{\n        let mut o = serde_json::Map::new();").unwrap();
        for rec in recs {
            writeln!(
                out,
                "        if let Some(v) = &self.{0} {{ o.insert(\"{0}\".into(), v.to_json()); }}",
                rec.name
            )
            .unwrap();
        }
        writeln!(out, "        for u in &self.unknown {{ o.insert(u.tlv_type.to_string(), Value::String(hex::encode(&u.value))); }}\n        Value::Object(o)\n    }}\n}}\n").unwrap();

        // Strategy.
        writeln!(out, "#[cfg(test)]\nimpl crate::arb::Arb for {sname} {{\n    fn arb() -> proptest::strategy::BoxedStrategy<Self> {{\n        use proptest::prelude::*;\n        (").unwrap();
        for rec in recs {
            writeln!(
                out,
                "            proptest::option::of(<{} as crate::arb::Arb>::arb()),",
                rust_type(&rec.ty)
            )
            .unwrap();
        }
        writeln!(
            out,
            "            crate::arb::unknown_odd_tlvs({}),\n        ).prop_map(|(",
            recs.iter().map(|r| r.num).max().unwrap_or(0)
        )
        .unwrap();
        for rec in recs {
            write!(out, "{}, ", rec.name).unwrap();
        }
        write!(out, "unknown)| {sname} {{ ").unwrap();
        for rec in recs {
            write!(out, "{}, ", rec.name).unwrap();
        }
        writeln!(out, "unknown }}).boxed()\n    }}\n}}\n").unwrap();
    }
}

fn gen_msg(out: &mut String, m: &Msg, tlv_names: &HashMap<String, String>) {
    let sname = camel(&m.name);
    let len_fields: Vec<&str> = m.fields.iter().filter_map(|f| f.count.as_deref()).collect();
    let ends_with_tlv = m
        .fields
        .last()
        .is_some_and(|f| tlv_names.contains_key(&f.ty));
    let data: Vec<&Field> = m
        .fields
        .iter()
        .filter(|f| !len_fields.contains(&f.name.as_str()))
        .collect();

    let derive_default = if data.is_empty() && !ends_with_tlv {
        ", Default"
    } else {
        ""
    };
    writeln!(out, "/// `{}` (type {}).\n#[derive(Clone, PartialEq, Debug{derive_default})]\npub struct {sname} {{", m.name, m.num).unwrap();
    for f in &data {
        writeln!(
            out,
            "    /// Field `{}` (`{}`).\n    pub {}: {},",
            f.name,
            f.ty,
            f.name,
            field_type(f, tlv_names)
        )
        .unwrap();
    }
    if !ends_with_tlv {
        writeln!(out, "    /// Bytes after the last known field: ignored, kept to re-encode unchanged.\n    pub trailing: Vec<u8>,").unwrap();
    }
    writeln!(out, "}}\n").unwrap();

    writeln!(out, "impl {sname} {{\n    /// The message type number.\n    pub const TYPE: u16 = {};\n    /// The message name as in Core Lightning's csv.\n    pub const NAME: &'static str = \"{}\";\n", m.num, m.name).unwrap();
    // Constructor.
    let args: Vec<String> = data
        .iter()
        .map(|f| format!("{}: {}", f.name, field_type(f, tlv_names)))
        .collect();
    let names: Vec<String> = data.iter().map(|f| f.name.clone()).collect();
    writeln!(out, "    /// The message with these fields{}.\n    #[allow(clippy::too_many_arguments)]\n    pub fn new({}) -> Self {{\n        {sname} {{ {}{} }}\n    }}\n",
        if ends_with_tlv { "" } else { " and no trailing bytes" },
        args.join(", "), names.join(", "), if ends_with_tlv { "" } else if names.is_empty() { "trailing: Vec::new()" } else { ", trailing: Vec::new()" }).unwrap();

    // Body decoder.
    writeln!(out, "    /// Decodes the body (after the type) from `r`.\n    pub fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {{").unwrap();
    for f in &m.fields {
        writeln!(out, "        r.field(\"{}\");", f.name).unwrap();
        let is_len = len_fields.contains(&f.name.as_str());
        let var = if is_len {
            format!("len_{}", f.name)
        } else {
            f.name.clone()
        };
        if let Some(c) = &f.count {
            if f.ty == "u8" {
                writeln!(out, "        let {var} = r.read_bytes(len_{c} as usize)?;").unwrap();
            } else {
                writeln!(
                    out,
                    "        let {var} = r.read_vec::<{}>(len_{c} as usize)?;",
                    rust_type(&f.ty)
                )
                .unwrap();
            }
        } else {
            writeln!(
                out,
                "        let {var} = <{}>::read(r)?;",
                field_type(f, tlv_names)
            )
            .unwrap();
        }
    }
    if !ends_with_tlv {
        writeln!(out, "        let trailing = r.rest().to_vec();").unwrap();
    }
    writeln!(
        out,
        "        Ok({sname} {{ {}{} }})\n    }}\n",
        names.join(", "),
        if ends_with_tlv {
            ""
        } else if names.is_empty() {
            "trailing"
        } else {
            ", trailing"
        }
    )
    .unwrap();

    // Body encoder.
    writeln!(out, "    /// Appends the body (after the type) to `w`.\n    pub fn encode_body(&self, w: &mut Vec<u8>) -> Result<(), EncodeError> {{").unwrap();
    for f in &m.fields {
        if len_fields.contains(&f.name.as_str()) {
            let arr = m
                .fields
                .iter()
                .find(|a| a.count.as_deref() == Some(f.name.as_str()))
                .unwrap();
            let max = match f.ty.as_str() {
                "u8" => "u8::MAX",
                "u16" => "u16::MAX",
                "u32" => "u32::MAX",
                "u64" => "u64::MAX",
                t => panic!("length type {t}"),
            };
            writeln!(
                out,
                "        write_len::<{}>(\"{}\", self.{}.len(), {max} as usize, w)?;",
                f.ty, arr.name, arr.name
            )
            .unwrap();
        } else if f.count.is_some() && f.ty == "u8" {
            writeln!(out, "        w.extend_from_slice(&self.{});", f.name).unwrap();
        } else if f.count.is_some() {
            writeln!(out, "        for v in &self.{} {{ v.write(w)?; }}", f.name).unwrap();
        } else {
            writeln!(out, "        self.{}.write(w)?;", f.name).unwrap();
        }
    }
    if !ends_with_tlv {
        writeln!(out, "        w.extend_from_slice(&self.trailing);").unwrap();
    }
    writeln!(out, "        Ok(())\n    }}\n").unwrap();

    // Whole-message helpers.
    writeln!(out, "    /// Decodes a whole message (type included), which must be of this type.\n    pub fn decode(msg: &[u8]) -> Result<Self, DecodeError> {{\n        let mut r = Reader::new(msg);\n        let t = u16::read(&mut r)?;\n        r.set_msg_type(t);\n        if t != Self::TYPE {{\n            return Err(r.error(DecodeErrorKind::UnexpectedType {{ expected: Self::TYPE }}));\n        }}\n        Self::decode_body(&mut r)\n    }}\n").unwrap();
    writeln!(out, "    /// Encodes the whole message (type included).\n    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {{\n        let mut w = Self::TYPE.to_be_bytes().to_vec();\n        self.encode_body(&mut w)?;\n        Ok(w)\n    }}\n").unwrap();

    // JSON.
    writeln!(out, "    /// The fields as a JSON object (for logs and the decode tool; secrets are included).\n    pub fn fields_json(&self) -> Value {{\n        let mut o = serde_json::Map::new();").unwrap();
    for f in &data {
        if f.count.is_some() && f.ty == "u8" {
            writeln!(
                out,
                "        o.insert(\"{0}\".into(), Value::String(hex::encode(&self.{0})));",
                f.name
            )
            .unwrap();
        } else {
            writeln!(
                out,
                "        o.insert(\"{0}\".into(), self.{0}.to_json());",
                f.name
            )
            .unwrap();
        }
    }
    if !ends_with_tlv {
        writeln!(out, "        if !self.trailing.is_empty() {{ o.insert(\"trailing\".into(), Value::String(hex::encode(&self.trailing))); }}").unwrap();
    }
    writeln!(out, "        Value::Object(o)\n    }}\n}}\n").unwrap();

    writeln!(out, "impl From<{sname}> for Message {{\n    fn from(m: {sname}) -> Message {{\n        Message::{sname}(m)\n    }}\n}}\n").unwrap();

    // Strategy: fields in tuples of at most 8, nested.
    writeln!(out, "#[cfg(test)]\nimpl crate::arb::Arb for {sname} {{\n    fn arb() -> proptest::strategy::BoxedStrategy<Self> {{\n        use proptest::prelude::*;").unwrap();
    let mut strats: Vec<(String, String)> = data
        .iter()
        .map(|f| {
            let s = if f.count.is_some() && f.ty == "u8" {
                "proptest::collection::vec(any::<u8>(), 0..48).boxed()".to_string()
            } else if f.count.is_some() {
                format!(
                    "proptest::collection::vec(<{} as crate::arb::Arb>::arb(), 0..4).boxed()",
                    rust_type(&f.ty)
                )
            } else {
                format!("<{} as crate::arb::Arb>::arb()", field_type(f, tlv_names))
            };
            (f.name.clone(), s)
        })
        .collect();
    if !ends_with_tlv {
        strats.push((
            "trailing".into(),
            "proptest::collection::vec(any::<u8>(), 0..8).boxed()".into(),
        ));
    }
    if strats.is_empty() {
        writeln!(out, "        Just({sname} {{}}).boxed()\n    }}\n}}\n").unwrap();
        return;
    }
    let chunks: Vec<&[(String, String)]> = strats.chunks(8).collect();
    write!(out, "        (").unwrap();
    for c in &chunks {
        write!(out, "(").unwrap();
        for (_, s) in c.iter() {
            write!(out, "{s}, ").unwrap();
        }
        write!(out, "), ").unwrap();
    }
    write!(out, ").prop_map(|(").unwrap();
    for c in &chunks {
        write!(out, "(").unwrap();
        for (n, _) in c.iter() {
            write!(out, "{n}, ").unwrap();
        }
        write!(out, "), ").unwrap();
    }
    let all: Vec<String> = strats.iter().map(|(n, _)| n.clone()).collect();
    writeln!(
        out,
        ")| {sname} {{ {} }}).boxed()\n    }}\n}}\n",
        all.join(", ")
    )
    .unwrap();
}

fn gen_enum(out: &mut String, msgs: &[Msg]) {
    writeln!(out, "/// Any message of the protocol, or one of a type this crate does not know.\n#[derive(Clone, PartialEq, Debug)]\npub enum Message {{").unwrap();
    for m in msgs {
        writeln!(
            out,
            "    /// `{}` ({}).\n    {}({}),",
            m.name,
            m.num,
            camel(&m.name),
            camel(&m.name)
        )
        .unwrap();
    }
    writeln!(
        out,
        "    /// A message of a type this crate does not know.\n    Unknown(UnknownMessage),\n}}\n"
    )
    .unwrap();

    writeln!(out, "impl Message {{\n    /// Decodes a message (2-byte type, then body). An unknown type is returned as\n    /// [`Message::Unknown`]; bytes after the last known field are kept in the message.\n    pub fn decode(msg: &[u8]) -> Result<Message, DecodeError> {{\n        let mut r = Reader::new(msg);\n        let t = u16::read(&mut r)?;\n        r.set_msg_type(t);\n        Ok(match t {{").unwrap();
    for m in msgs {
        writeln!(
            out,
            "            {} => Message::{}({}::decode_body(&mut r)?),",
            m.num,
            camel(&m.name),
            camel(&m.name)
        )
        .unwrap();
    }
    writeln!(out, "            _ => Message::Unknown(UnknownMessage {{ msg_type: t, body: r.rest().to_vec() }}),\n        }})\n    }}\n").unwrap();

    writeln!(out, "    /// Encodes the message (2-byte type, then body).\n    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {{\n        let mut w = self.msg_type().to_be_bytes().to_vec();\n        match self {{").unwrap();
    for m in msgs {
        writeln!(
            out,
            "            Message::{}(m) => m.encode_body(&mut w)?,",
            camel(&m.name)
        )
        .unwrap();
    }
    writeln!(out, "            Message::Unknown(m) => w.extend_from_slice(&m.body),\n        }}\n        Ok(w)\n    }}\n").unwrap();

    writeln!(out, "    /// The message type number.\n    pub fn msg_type(&self) -> u16 {{\n        match self {{").unwrap();
    for m in msgs {
        writeln!(
            out,
            "            Message::{}(_) => {},",
            camel(&m.name),
            m.num
        )
        .unwrap();
    }
    writeln!(
        out,
        "            Message::Unknown(m) => m.msg_type,\n        }}\n    }}\n"
    )
    .unwrap();

    writeln!(out, "    /// The message name, for logs (`unknown` for unknown types).\n    pub fn name(&self) -> &'static str {{\n        name_of(self.msg_type()).unwrap_or(\"unknown\")\n    }}\n").unwrap();

    writeln!(out, "    /// The fields as a JSON object.\n    pub fn fields_json(&self) -> Value {{\n        match self {{").unwrap();
    for m in msgs {
        writeln!(
            out,
            "            Message::{}(m) => m.fields_json(),",
            camel(&m.name)
        )
        .unwrap();
    }
    writeln!(out, "            Message::Unknown(m) => serde_json::json!({{\"body\": hex::encode(&m.body)}}),\n        }}\n    }}\n}}\n").unwrap();

    writeln!(out, "/// The csv name of a message type, if known.\npub fn name_of(t: u16) -> Option<&'static str> {{\n    Some(match t {{").unwrap();
    for m in msgs {
        writeln!(out, "        {} => \"{}\",", m.num, m.name).unwrap();
    }
    writeln!(out, "        _ => return None,\n    }})\n}}\n").unwrap();

    writeln!(
        out,
        "/// Every known message type number.\npub const ALL_TYPES: &[u16] = &[{}];\n",
        msgs.iter()
            .map(|m| m.num.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
    .unwrap();

    writeln!(out, "#[cfg(test)]\npub(crate) fn arb_message() -> proptest::strategy::BoxedStrategy<Message> {{\n    use proptest::prelude::*;\n    prop_oneof![").unwrap();
    for m in msgs {
        writeln!(
            out,
            "        <{0} as crate::arb::Arb>::arb().prop_map(Message::{0}),",
            camel(&m.name)
        )
        .unwrap();
    }
    writeln!(out, "    ].boxed()\n}}").unwrap();
}
