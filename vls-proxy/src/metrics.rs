//! Counters for operators, served in Prometheus' text format on an optional port: requests
//! by message type, round-trip latency, signer connects and disconnects, retries, preapproval
//! cache hits, refusals by rule.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Upper bounds of the latency histogram buckets, in seconds.
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0,
];

/// The proxy's counters.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<u16, u64>>,
    refusals: Mutex<BTreeMap<String, u64>>,
    latency_buckets: [AtomicU64; 12],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
    inflight: AtomicU64,
    connects: AtomicU64,
    disconnects: AtomicU64,
    retries: AtomicU64,
    cache_hits: AtomicU64,
}

impl Metrics {
    /// A request of `msg_type` from a client.
    pub fn request(&self, msg_type: u16) {
        *self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(msg_type)
            .or_default() += 1;
        self.inflight.fetch_add(1, Ordering::Relaxed);
    }
    /// A round trip took `d`.
    pub fn latency(&self, d: Duration) {
        let s = d.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if s <= *b {
                self.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }
    /// A request finished (replied or failed).
    pub fn done(&self) {
        self.inflight.fetch_sub(1, Ordering::Relaxed);
    }
    /// A signer stream was admitted.
    pub fn connect(&self) {
        self.connects.fetch_add(1, Ordering::Relaxed);
    }
    /// A signer stream ended.
    pub fn disconnect(&self) {
        self.disconnects.fetch_add(1, Ordering::Relaxed);
    }
    /// A temporary failure is retried.
    pub fn retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }
    /// A preapproval was answered from the cache.
    pub fn cache_hit(&self) {
        self.cache_hits.fetch_add(1, Ordering::Relaxed);
    }
    /// The signer refused a request; `description` names the policy rule if one did.
    pub fn refusal(&self, description: &str) {
        let rule = description
            .strip_prefix("policy ")
            .and_then(|r| r.split(':').next())
            .unwrap_or("other")
            .to_string();
        *self
            .refusals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(rule)
            .or_default() += 1;
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut s = String::new();
        s.push_str("# TYPE vls_proxy_requests_total counter\n");
        for (t, n) in self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let name = protocol::msgs::name_of(*t).unwrap_or("unknown");
            s.push_str(&format!(
                "vls_proxy_requests_total{{type=\"{name}\"}} {n}\n"
            ));
        }
        s.push_str("# TYPE vls_proxy_round_trip_seconds histogram\n");
        for (i, b) in BUCKETS.iter().enumerate() {
            let n = self.latency_buckets[i].load(Ordering::Relaxed);
            s.push_str(&format!(
                "vls_proxy_round_trip_seconds_bucket{{le=\"{b}\"}} {n}\n"
            ));
        }
        let count = self.latency_count.load(Ordering::Relaxed);
        s.push_str(&format!(
            "vls_proxy_round_trip_seconds_bucket{{le=\"+Inf\"}} {count}\n"
        ));
        let sum = self.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        s.push_str(&format!(
            "vls_proxy_round_trip_seconds_sum {sum}\nvls_proxy_round_trip_seconds_count {count}\n"
        ));
        for (name, v) in [
            ("vls_proxy_inflight_requests", &self.inflight),
            ("vls_proxy_signer_connects_total", &self.connects),
            ("vls_proxy_signer_disconnects_total", &self.disconnects),
            ("vls_proxy_retries_total", &self.retries),
            ("vls_proxy_preapproval_cache_hits_total", &self.cache_hits),
        ] {
            s.push_str(&format!("{name} {}\n", v.load(Ordering::Relaxed)));
        }
        s.push_str("# TYPE vls_proxy_refusals_total counter\n");
        for (rule, n) in self
            .refusals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            s.push_str(&format!(
                "vls_proxy_refusals_total{{rule=\"{rule}\"}} {n}\n"
            ));
        }
        s
    }
}

/// Serves `GET /metrics` (any path) on `listener` until the process ends.
pub async fn serve(listener: TcpListener, metrics: std::sync::Arc<Metrics>) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let _ = tokio::time::timeout(Duration::from_secs(5), sock.read(&mut buf)).await;
            let body = metrics.render();
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
        });
    }
}
