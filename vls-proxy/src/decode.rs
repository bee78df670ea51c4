//! `vls-proxy decode`: turns hsmd messages written as hex (one per line, no length prefix)
//! into one JSON object per line, for operators reading captured traffic.

use protocol::Message;
use serde_json::json;
use std::io::{self, BufRead, Write};

/// The JSON line for one input line, or `None` for a line to skip (blank or `#` comment).
pub fn decode_line(line: &str) -> Option<serde_json::Value> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let bytes = match hex::decode(line) {
        Ok(b) => b,
        Err(e) => return Some(json!({ "error": format!("not hex: {e}") })),
    };
    Some(match Message::decode(&bytes) {
        Ok(m) => match m.encode() {
            Ok(re) => json!({
                "type": m.msg_type(),
                "name": m.name(),
                "fields": m.fields_json(),
                "reencoded": hex::encode(re),
            }),
            Err(e) => json!({ "error": format!("cannot re-encode: {e}") }),
        },
        Err(e) => json!({ "error": e.to_string() }),
    })
}

/// Reads stdin to its end and writes one JSON line per message line.
pub fn run(input: impl BufRead, mut out: impl Write) -> io::Result<()> {
    for line in input.lines() {
        if let Some(v) = decode_line(&line?) {
            writeln!(out, "{v}")?;
        }
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_skips_and_reports() {
        let input = "# a comment\n\n0001 02 bad\n001b0003616263\nzz\n0001\n";
        let mut out = Vec::new();
        run(input.as_bytes(), &mut out).unwrap();
        let lines: Vec<serde_json::Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[0]["error"].is_string());
        assert_eq!(lines[1]["name"], "hsmd_derive_secret");
        assert_eq!(lines[1]["fields"]["info"], "616263");
        assert_eq!(lines[1]["reencoded"], "001b0003616263");
        assert!(lines[2]["error"].as_str().unwrap().starts_with("not hex"));
        assert!(lines[3]["error"].as_str().unwrap().contains("too short"));
    }
}
