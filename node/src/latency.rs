//! Round-trip latency of every request to the signer, by message type, for the operator's
//! report (`node run` prints it on `stats`; the demo prints it at the end).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

/// Samples kept per message type (the most recent ones).
const KEPT: usize = 10_000;

static SAMPLES: Mutex<BTreeMap<u16, VecDeque<u32>>> = Mutex::new(BTreeMap::new());

/// Records one round trip of a request of type `msg_type`.
pub fn record(msg_type: u16, took: Duration) {
    let us = u32::try_from(took.as_micros()).unwrap_or(u32::MAX);
    let mut s = SAMPLES.lock().unwrap_or_else(|p| p.into_inner());
    let v = s.entry(msg_type).or_default();
    if v.len() >= KEPT {
        v.pop_front();
    }
    v.push_back(us);
}

/// Latency figures of one message type.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Figures {
    /// The message name.
    pub name: &'static str,
    /// Round trips measured.
    pub count: usize,
    /// Median, microseconds.
    pub p50_us: u32,
    /// 99th percentile, microseconds.
    pub p99_us: u32,
}

/// The figures of every message type seen so far.
pub fn snapshot() -> Vec<Figures> {
    let s = SAMPLES.lock().unwrap_or_else(|p| p.into_inner());
    s.iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(t, v)| {
            let mut v: Vec<u32> = v.iter().copied().collect();
            v.sort_unstable();
            let at = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
            Figures {
                name: protocol::msgs::name_of(*t).unwrap_or("unknown"),
                count: v.len(),
                p50_us: at(0.5),
                p99_us: at(0.99),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_type() {
        // A type no request has, so other tests' requests do not mix in.
        for us in 1..=100 {
            record(0xfff6, Duration::from_micros(us));
        }
        let f = snapshot()
            .into_iter()
            .find(|f| f.name == "status_version")
            .unwrap();
        assert_eq!((f.count, f.p50_us, f.p99_us), (100, 51, 99));
    }
}
