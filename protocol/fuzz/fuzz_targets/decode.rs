//! `Message::decode` on arbitrary bytes: it must not panic, and whatever decodes must
//! re-encode to exactly the input (messages keep trailing bytes and unknown TLVs for that).
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::Message;

fuzz_target!(|data: &[u8]| {
    let decoded = Message::decode(data);
    if let Ok(m) = &decoded {
        let bytes = m.encode().expect("a decoded message must encode");
        assert_eq!(bytes, data, "re-encoding {} changed the bytes", m.name());
        let _ = m.fields_json().to_string();
        let _ = m.name();
        let _ = m.msg_type();
    }
    match Message::decode_known(data) {
        Ok(k) => assert_eq!(Some(&k), decoded.as_ref().ok(), "decode_known differs from decode"),
        Err(e) => {
            let _ = e.to_string();
            // Only an error of `decode`, or an unknown type, may make `decode_known` fail.
            assert!(
                matches!(decoded, Err(_) | Ok(Message::Unknown(_))),
                "decode_known failed where decode gave a known message: {e}"
            );
        }
    }
    if let Err(e) = &decoded {
        let _ = e.to_string();
    }
});
