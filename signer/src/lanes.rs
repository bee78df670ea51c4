//! Where and in which order the daemon handles requests: one *lane* per channel, and the
//! threads the work runs on.
//!
//! - **Order.** Each channel (the request context's peer id and dbid; the master client,
//!   whose requests carry no context, is a lane of its own) handles its requests one after
//!   the other; different lanes run in parallel. A request for a lane that is busy waits in
//!   that lane's queue. Lanes outlive a stream, so a request re-sent on a new stream queues
//!   behind its first copy, which is still finishing; the reply cache then answers it.
//! - **Threads.** Everything here runs on the daemon's single I/O thread except the
//!   handlers. A request that changes state (a redb commit, an fsync, perhaps a wait for the
//!   operator) goes to tokio's blocking pool. A quick one (ECDH, a per-commitment point, an
//!   invoice signature: tens of microseconds of CPU) is handled right on the I/O thread when
//!   no other request is waiting to be read, or when the [`Pool`] (one thread per core) has
//!   no idle thread; otherwise a pool thread takes it. A state change is committed on the
//!   I/O thread too when it is alone (nothing else in flight or waiting, and it cannot wait
//!   for the operator): the typical payment's requests come one after the other, and each
//!   hand-off would cost two wake-ups. Other stateless requests (PSBTs,
//!   wallet scans: milliseconds) always go to the pool, so that the link never stalls. A
//!   burst from many channels thus keeps every core busy, and a lone request makes no
//!   hand-off between threads (each costs a wake-up, tens of microseconds on virtual
//!   machines).
//! - **Completion.** A request handled on another thread comes back as a [`Done`] on one
//!   channel that the daemon's loop waits on together with the stream, so the reply is
//!   sent, and the lane's next request started, on the I/O thread.

use crate::context::{ChannelKey, ClientContext};
use crate::error::SignerError;
use crate::handler::{Signer, Wait};
use proto::hsmd::SignerResponse;
use std::collections::{HashMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;
use tokio::sync::{mpsc, watch};

/// What answers requests; [`Signer`] in production.
pub(crate) trait Handler: Send + Sync + 'static {
    /// Answers one request; with `wait` a payment waiting for the operator is
    /// [`SignerError::Parked`] rather than waited for.
    fn handle(
        &self,
        client: &ClientContext,
        request_id: Option<u64>,
        request: &[u8],
        wait: Wait,
    ) -> Result<Vec<u8>, SignerError>;

    /// Changes with every decision of the operator's (what wakes parked requests).
    fn decisions(&self) -> Option<watch::Receiver<u64>>;
}

impl Handler for Signer {
    fn handle(
        &self,
        client: &ClientContext,
        request_id: Option<u64>,
        request: &[u8],
        wait: Wait,
    ) -> Result<Vec<u8>, SignerError> {
        Signer::handle_with(self, client, request_id, request, wait)
    }

    fn decisions(&self) -> Option<watch::Receiver<u64>> {
        Some(self.approvals().decisions())
    }
}

/// Which lane a request goes to: `None` is the master client.
pub(crate) type LaneKey = Option<ChannelKey>;

/// One request, with the stream its response goes to.
pub(crate) struct Job {
    pub request_id: u64,
    pub client: ClientContext,
    pub message: Vec<u8>,
    pub reply_to: mpsc::UnboundedSender<SignerResponse>,
    /// Until when it waits for the operator, once it was parked.
    parked: Option<Instant>,
    /// The operator's decisions, watched from before its first attempt (so that none taken
    /// while it runs is missed), for a request that may wait for one.
    decisions: Option<watch::Receiver<u64>>,
}

impl Job {
    /// Request `request_id` of `client`, answered on `reply_to`.
    pub fn new(
        request_id: u64,
        client: ClientContext,
        message: Vec<u8>,
        reply_to: mpsc::UnboundedSender<SignerResponse>,
    ) -> Job {
        Job {
            request_id,
            client,
            message,
            reply_to,
            parked: None,
            decisions: None,
        }
    }
}

/// A request handled on another thread, back on the I/O thread; or a parked one woken.
pub(crate) struct Done {
    key: LaneKey,
    job: Job,
    outcome: Result<Vec<u8>, SignerError>,
    took: std::time::Duration,
    /// A parked request whose decision came (or whose time is up): to be run again.
    woken: bool,
}

/// Where a request is handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Work {
    /// Answered in microseconds ([`crate::handler::is_quick`]): on the I/O thread or the pool.
    Quick,
    /// Changes no state but may take milliseconds (a PSBT, a wallet scan): the pool, so that
    /// the link never stalls for it.
    Slow,
    /// Commits state (or waits for the operator): tokio's blocking pool. Unknown and
    /// malformed messages go here too; the handler refuses them.
    Stateful,
}

/// Whether a request may wait for the operator (never on the I/O thread).
fn may_wait(message: &[u8]) -> bool {
    protocol::peek_type(message).is_some_and(crate::handler::waits_for_operator)
}

fn work_of(message: &[u8]) -> Work {
    let Some(t) = protocol::peek_type(message) else {
        return Work::Stateful;
    };
    if crate::handler::changes_state(t) {
        Work::Stateful
    } else if crate::handler::is_quick(t) {
        Work::Quick
    } else {
        Work::Slow
    }
}

struct Lane {
    /// Requests waiting for the one in progress.
    queue: VecDeque<Job>,
    /// A request of this lane is being handled on another thread.
    busy: bool,
    last_used: Instant,
}

/// Every channel's lane, and the threads requests run on.
pub(crate) struct Lanes<H> {
    handler: Arc<H>,
    idle_timeout: std::time::Duration,
    lanes: HashMap<LaneKey, Lane>,
    pool: Pool,
    done_tx: mpsc::UnboundedSender<Done>,
    done_rx: mpsc::UnboundedReceiver<Done>,
    /// Requests being handled on other threads.
    away: usize,
    /// Requests parked until the operator decides (they hold no thread, and no lane).
    parked: usize,
}

impl<H: Handler> Lanes<H> {
    /// Lanes over `handler`, with a pool of `threads` threads for stateless requests.
    pub fn new(
        handler: Arc<H>,
        idle_timeout: std::time::Duration,
        threads: usize,
    ) -> std::io::Result<Self> {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Ok(Lanes {
            handler,
            idle_timeout,
            lanes: HashMap::new(),
            pool: Pool::new(threads.max(1))?,
            done_tx,
            done_rx,
            away: 0,
            parked: 0,
        })
    }

    /// How long a lane may stay idle before [`Lanes::drop_idle`] drops it.
    pub fn idle_timeout(&self) -> std::time::Duration {
        self.idle_timeout
    }

    /// Takes `job` for lane `key`: starts it if the lane is free, else queues it behind the
    /// lane's current one. A quick request is handled on this thread if `may_inline` (no
    /// other request is waiting) or if no pool thread is idle.
    pub fn dispatch(&mut self, key: LaneKey, job: Job, may_inline: bool) {
        let now = Instant::now();
        let lane = self.lanes.entry(key).or_insert_with(|| Lane {
            queue: VecDeque::new(),
            busy: false,
            last_used: now,
        });
        lane.last_used = now;
        if lane.busy {
            lane.queue.push_back(job);
            return;
        }
        self.start(key, job, may_inline);
    }

    fn start(&mut self, key: LaneKey, mut job: Job, may_inline: bool) {
        let work = work_of(&job.message);
        if job.decisions.is_none() && may_wait(&job.message) {
            job.decisions = self.handler.decisions();
        }
        let inline = match work {
            Work::Quick => may_inline || !self.pool.has_idle(),
            // A lone state change (nothing else in flight, so the store's writer is free, and
            // no other request waiting) is committed right here: two thread hand-offs saved,
            // for one commit's time during which the stream is not read.
            Work::Stateful => may_inline && self.away == 0 && !may_wait(&job.message),
            Work::Slow => false,
        };
        if inline {
            let started = Instant::now();
            let outcome = handle(&*self.handler, &job);
            self.settle(key, job, outcome, started.elapsed());
            return;
        }
        if let Some(lane) = self.lanes.get_mut(&key) {
            lane.busy = true;
        }
        self.away += 1;
        let handler = self.handler.clone();
        let done = self.done_tx.clone();
        let task = move || {
            let started = Instant::now();
            let outcome = handle(&*handler, &job);
            let took = started.elapsed();
            // The receiver lives as long as the lanes; if they are gone, so is the stream.
            let _ = done.send(Done {
                key,
                job,
                outcome,
                took,
                woken: false,
            });
        };
        match work {
            Work::Quick | Work::Slow => self.pool.run(Box::new(task)),
            Work::Stateful => drop(tokio::task::spawn_blocking(task)),
        }
    }

    /// The next request back from another thread or woken from parking (never completes
    /// when none is away or parked).
    pub async fn next_done(&mut self) -> Done {
        if self.away == 0 && self.parked == 0 {
            return std::future::pending().await;
        }
        match self.done_rx.recv().await {
            Some(done) => done,
            // `done_tx` lives in `self`: the channel cannot close.
            None => std::future::pending().await,
        }
    }

    /// Sends the reply of a request back from another thread and starts its lane's next one;
    /// a woken request goes back to its lane.
    pub fn complete(&mut self, done: Done) {
        let Done {
            key,
            job,
            outcome,
            took,
            woken,
        } = done;
        if woken {
            self.parked -= 1;
            self.dispatch(key, job, false);
            return;
        }
        self.away -= 1;
        self.settle(key, job, outcome, took);
        let next = self.lanes.get_mut(&key).and_then(|lane| {
            lane.busy = false;
            lane.queue.pop_front()
        });
        if let Some(next) = next {
            self.start(key, next, false);
        }
    }

    /// Answers `job`, or parks it if it waits for the operator.
    fn settle(
        &mut self,
        key: LaneKey,
        job: Job,
        outcome: Result<Vec<u8>, SignerError>,
        took: std::time::Duration,
    ) {
        match outcome {
            Err(SignerError::Parked { until }) => self.park(key, job, until),
            outcome => finish(key, job, outcome, took),
        }
    }

    /// Parks `job` until the operator decides something or `until`, whichever comes first;
    /// then it runs again (and parks again if its own decision is still pending). Its lane
    /// goes on with its next request meanwhile: a preapproval neither holds a thread nor
    /// stops the requests behind it.
    fn park(&mut self, key: LaneKey, mut job: Job, until: Instant) {
        if job.parked.is_none() {
            log::info!(
                "request {} waits for the operator's decision, at most {:.0?}",
                job.request_id,
                until.saturating_duration_since(Instant::now())
            );
        }
        job.parked = Some(until);
        self.parked += 1;
        let done = self.done_tx.clone();
        let mut decisions = job.decisions.take();
        tokio::spawn(async move {
            let decided = async {
                let woke = match decisions.as_mut() {
                    Some(rx) => rx.changed().await.is_ok(),
                    None => false,
                };
                if !woke {
                    // A closed sender wakes nobody again: wait for the deadline.
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                () = decided => {}
                () = tokio::time::sleep_until(until.into()) => {}
            }
            job.decisions = decisions;
            // The receiver lives as long as the lanes; if they are gone, so is the stream.
            let _ = done.send(Done {
                key,
                job,
                outcome: Err(SignerError::Parked { until }),
                took: std::time::Duration::ZERO,
                woken: true,
            });
        });
    }

    /// Drops the lanes idle for longer than the timeout with nothing in flight.
    pub fn drop_idle(&mut self) {
        let timeout = self.idle_timeout;
        self.lanes
            .retain(|_, lane| lane.busy || lane.last_used.elapsed() < timeout);
    }

    /// Waits until every request taken has been answered, then drops every lane.
    pub async fn finish(&mut self) {
        while self.away > 0 {
            let done = self.next_done().await;
            self.complete(done);
        }
        self.lanes.clear();
    }

    #[cfg(test)]
    fn lane_count(&self) -> usize {
        self.lanes.len()
    }

    #[cfg(test)]
    fn lane_dbids(&self) -> Vec<u64> {
        self.lanes.keys().map(|k| k.map_or(0, |k| k.dbid)).collect()
    }
}

/// Runs the handler; a panic in it becomes an error reply rather than the end of a thread.
fn handle<H: Handler>(handler: &H, job: &Job) -> Result<Vec<u8>, SignerError> {
    let wait = Wait::Park {
        deadline: job.parked,
    };
    catch_unwind(AssertUnwindSafe(|| {
        handler.handle(&job.client, Some(job.request_id), &job.message, wait)
    }))
    .unwrap_or_else(|_| {
        log::error!("request {}: the handler panicked", job.request_id);
        Err(SignerError::BadRequest(
            "internal error: the handler failed".into(),
        ))
    })
}

/// Logs the outcome and sends the response. A closed stream loses it; the proxy sends the
/// request again on the next stream.
fn finish(
    key: LaneKey,
    job: Job,
    outcome: Result<Vec<u8>, SignerError>,
    took: std::time::Duration,
) {
    let request_id = job.request_id;
    let msg_type = protocol::peek_type(&job.message).map_or("?".to_string(), |t| t.to_string());
    let lane = || match &key {
        None => "master".to_string(),
        Some(k) => format!("{}/{}", k.peer_id, k.dbid),
    };
    match &outcome {
        Ok(_) => log::debug!(
            "request {request_id} (type {msg_type}) on lane {}: answered in {took:.1?}",
            lane()
        ),
        Err(e @ (SignerError::Temporary(_) | SignerError::Storage(_))) => log::info!(
            "request {request_id} (type {msg_type}) on lane {}: temporary failure: {}",
            lane(),
            e.description()
        ),
        // The policy already logged its one line naming the rule.
        Err(e @ SignerError::Policy { .. }) => log::debug!(
            "request {request_id} (type {msg_type}) on lane {}: refused: {}",
            lane(),
            e.description()
        ),
        Err(e) => log::warn!(
            "request {request_id} (type {msg_type}) on lane {}: refused: {}",
            lane(),
            e.description()
        ),
    }
    let _ = job
        .reply_to
        .send(crate::daemon::response(request_id, outcome));
}

type Task = Box<dyn FnOnce() + Send>;

/// A fixed set of threads taking tasks from one queue. A thread that finishes a task takes
/// the next without sleeping; only idle threads are woken.
struct Pool {
    shared: Arc<PoolShared>,
}

struct PoolShared {
    queue: Mutex<PoolQueue>,
    ready: Condvar,
}

struct PoolQueue {
    tasks: VecDeque<Task>,
    idle: usize,
    closed: bool,
}

impl Pool {
    fn new(threads: usize) -> std::io::Result<Pool> {
        let shared = Arc::new(PoolShared {
            queue: Mutex::new(PoolQueue {
                tasks: VecDeque::new(),
                idle: 0,
                closed: false,
            }),
            ready: Condvar::new(),
        });
        for i in 0..threads {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("signer-work-{i}"))
                .spawn(move || shared.work())?;
        }
        Ok(Pool { shared })
    }

    /// Whether a thread is waiting for a task that nobody has taken yet.
    fn has_idle(&self) -> bool {
        let q = self.shared.lock();
        q.idle > q.tasks.len()
    }

    fn run(&self, task: Task) {
        let wake = {
            let mut q = self.shared.lock();
            q.tasks.push_back(task);
            q.idle > 0
        };
        if wake {
            self.shared.ready.notify_one();
        }
    }
}

impl PoolShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, PoolQueue> {
        // Tasks run outside the lock, so a poisoned lock only means a panic between two
        // lines of bookkeeping here: the queue itself is intact.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn work(&self) {
        let mut q = self.lock();
        loop {
            if let Some(task) = q.tasks.pop_front() {
                drop(q);
                task();
                q = self.lock();
                continue;
            }
            if q.closed {
                return;
            }
            q.idle += 1;
            q = self.ready.wait(q).unwrap_or_else(|p| p.into_inner());
            q.idle -= 1;
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.ready.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Records the order requests finish in, and on which thread; [`SLOW`] and
    /// [`SLOW_STATELESS`] requests take 300 ms, a third byte 0xee panics. A [`PREAPPROVAL`]
    /// parks for up to `park_ms` until `approved`, then answers `b"approved"` or
    /// `b"none came"`.
    struct Recorder {
        done: Mutex<Vec<(u64, std::thread::ThreadId)>>,
        approved: std::sync::atomic::AtomicBool,
        decisions: watch::Sender<u64>,
        /// Attempts of preapprovals.
        attempts: std::sync::atomic::AtomicUsize,
        park_ms: std::sync::atomic::AtomicU64,
    }

    impl Default for Recorder {
        fn default() -> Self {
            Recorder {
                done: Mutex::default(),
                approved: Default::default(),
                decisions: watch::channel(0).0,
                attempts: Default::default(),
                park_ms: 10_000.into(),
            }
        }
    }

    impl Recorder {
        fn ids(&self) -> Vec<u64> {
            self.done.lock().unwrap().iter().map(|d| d.0).collect()
        }

        fn thread_of(&self, id: u64) -> std::thread::ThreadId {
            self.done
                .lock()
                .unwrap()
                .iter()
                .find(|d| d.0 == id)
                .unwrap()
                .1
        }
    }

    impl Handler for Recorder {
        fn handle(
            &self,
            _: &ClientContext,
            id: Option<u64>,
            request: &[u8],
            wait: Wait,
        ) -> Result<Vec<u8>, SignerError> {
            if request == SLOW || request == SLOW_STATELESS {
                std::thread::sleep(Duration::from_millis(300));
            }
            if request.get(2) == Some(&0xee) {
                panic!("handler bug");
            }
            let mut reply = request.to_vec();
            if request == PREAPPROVAL {
                use std::sync::atomic::Ordering::SeqCst;
                self.attempts.fetch_add(1, SeqCst);
                let Wait::Park { deadline } = wait else {
                    panic!("the daemon never blocks");
                };
                let park = Duration::from_millis(self.park_ms.load(SeqCst));
                let until = deadline.unwrap_or_else(|| Instant::now() + park);
                reply = if self.approved.load(SeqCst) {
                    b"approved".to_vec()
                } else if Instant::now() < until {
                    return Err(SignerError::Parked { until });
                } else {
                    b"none came".to_vec()
                };
            }
            self.done
                .lock()
                .unwrap()
                .push((id.unwrap(), std::thread::current().id()));
            Ok(reply)
        }

        fn decisions(&self) -> Option<watch::Receiver<u64>> {
            Some(self.decisions.subscribe())
        }
    }

    /// A quick message (ecdh), a slow one-byte one (which counts as changing state), and a
    /// slow stateless one (sign_withdrawal, type 7).
    const FAST: [u8; 2] = [0, 1];
    const SLOW: [u8; 1] = [0xff];
    const SLOW_STATELESS: [u8; 2] = [0, 7];
    /// A state change answered at once (validate_revocation, type 36), and a preapproval
    /// (preapprove_invoice, type 38).
    const STATEFUL: [u8; 2] = [0, 36];
    const PREAPPROVAL: [u8; 2] = [0, 38];

    fn job(
        id: u64,
        dbid: Option<u64>,
        message: &[u8],
        out: &mpsc::UnboundedSender<SignerResponse>,
    ) -> (LaneKey, Job) {
        let client = match dbid {
            None => ClientContext::master(),
            Some(dbid) => ClientContext::client(
                protocol::types::NodeId::from_bytes([3; 33]),
                dbid,
                protocol::Permissions::from_bits(1),
            ),
        };
        let key = (!client.is_master).then(|| client.channel_key());
        (key, Job::new(id, client, message.to_vec(), out.clone()))
    }

    /// Runs the lanes' loop until `n` replies came.
    async fn replies<H: Handler>(
        lanes: &mut Lanes<H>,
        rx: &mut mpsc::UnboundedReceiver<SignerResponse>,
        n: usize,
    ) -> Vec<u64> {
        let mut got = Vec::new();
        while got.len() < n {
            tokio::select! {
                r = rx.recv() => got.push(r.unwrap().request_id),
                d = lanes.next_done() => lanes.complete(d),
            }
        }
        got
    }

    #[tokio::test]
    async fn lanes_run_channels_in_parallel_and_each_in_order() {
        let recorder = Arc::new(Recorder::default());
        let mut lanes = Lanes::new(recorder.clone(), Duration::from_secs(60), 2).unwrap();
        let (out, mut rx) = mpsc::unbounded_channel();
        for (id, dbid, msg) in [
            (1, Some(1), &SLOW[..]), // channel 1, slow
            (2, Some(1), &FAST[..]), // channel 1, after 1
            (3, Some(2), &FAST[..]), // channel 2, not held up
            (4, None, &SLOW[..]),    // master, not held up
            (5, Some(1), &FAST[..]), // channel 1, after 2
        ] {
            let (key, job) = job(id, dbid, msg, &out);
            lanes.dispatch(key, job, false);
        }
        let order = replies(&mut lanes, &mut rx, 5).await;
        let pos = |id| order.iter().position(|&x| x == id).unwrap();
        assert!(pos(1) < pos(2) && pos(2) < pos(5), "{order:?}");
        assert!(pos(3) < pos(1), "{order:?}");
        assert_eq!(lanes.lane_count(), 3);
    }

    /// Waits until the pool's threads are all waiting for work.
    fn wait_pool_idle<H: Handler>(lanes: &Lanes<H>) {
        while !lanes.pool.has_idle() {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[tokio::test]
    async fn a_lone_quick_request_is_handled_inline_others_on_an_idle_pool_thread() {
        let recorder = Arc::new(Recorder::default());
        let mut lanes = Lanes::new(recorder.clone(), Duration::from_secs(60), 1).unwrap();
        let (out, mut rx) = mpsc::unbounded_channel();
        let here = std::thread::current().id();
        let (key, j) = job(1, Some(1), &FAST, &out);
        lanes.dispatch(key, j, true);
        // Answered before dispatch returned, on this thread.
        assert_eq!(rx.try_recv().unwrap().request_id, 1);
        assert_eq!(recorder.thread_of(1), here);

        // Not the last of a burst, and the pool's thread is idle: the pool takes it.
        wait_pool_idle(&lanes);
        let (key, j) = job(2, Some(2), &SLOW_STATELESS, &out);
        lanes.dispatch(key, j, false);
        assert!(rx.try_recv().is_err());
        // The pool's only thread is busy: the next one is handled here, at once.
        let (key, j) = job(3, Some(3), &FAST, &out);
        lanes.dispatch(key, j, false);
        assert_eq!(rx.try_recv().unwrap().request_id, 3);
        assert_eq!(recorder.thread_of(3), here);
        assert_eq!(replies(&mut lanes, &mut rx, 1).await, vec![2]);
        assert_ne!(recorder.thread_of(2), here);

        // A slow stateless request (a withdrawal's PSBT) goes to the pool even when it may
        // run here.
        let (key, j) = job(11, Some(11), &SLOW_STATELESS, &out);
        lanes.dispatch(key, j, true);
        assert_eq!(replies(&mut lanes, &mut rx, 1).await, vec![11]);
        assert_ne!(recorder.thread_of(11), here);

        // A lone state change runs inline when it may; not when others are waiting.
        let (key, j) = job(10, Some(1), &STATEFUL, &out);
        lanes.dispatch(key, j, true);
        assert_eq!(rx.try_recv().unwrap().request_id, 10);
        assert_eq!(recorder.thread_of(10), here);
        let (key, j) = job(12, Some(1), &STATEFUL, &out);
        lanes.dispatch(key, j, false);
        assert_eq!(replies(&mut lanes, &mut rx, 1).await, vec![12]);
        assert_ne!(recorder.thread_of(12), here);
        // Nor while another request is in flight (it may hold the store's writer).
        let (key, j) = job(13, Some(2), &SLOW_STATELESS, &out);
        lanes.dispatch(key, j, false);
        let (key, j) = job(14, Some(1), &STATEFUL, &out);
        lanes.dispatch(key, j, true);
        assert!(rx.try_recv().is_err());
        assert_eq!(replies(&mut lanes, &mut rx, 2).await, vec![14, 13]);
        assert_ne!(recorder.thread_of(14), here);
        // A preapproval, which may wait for the operator, never runs inline.
        let (key, j) = job(15, Some(1), &PREAPPROVAL, &out);
        lanes.dispatch(key, j, true);
        assert_eq!(replies(&mut lanes, &mut rx, 1).await, vec![15]);
        assert_ne!(recorder.thread_of(15), here);
    }

    #[tokio::test]
    async fn a_payment_waiting_for_the_operator_holds_no_thread_and_no_lane() {
        use std::sync::atomic::Ordering::SeqCst;
        let recorder = Arc::new(Recorder::default());
        // One pool thread, and tokio's blocking pool: a parked request must hold neither.
        let mut lanes = Lanes::new(recorder.clone(), Duration::from_secs(60), 1).unwrap();
        let (out, mut rx) = mpsc::unbounded_channel();
        let (key, j) = job(1, None, &PREAPPROVAL, &out);
        lanes.dispatch(key, j, false);
        // Its lane (the master's) goes on: later requests are answered while it waits.
        for id in 2..=4 {
            let (key, j) = job(id, None, &FAST, &out);
            lanes.dispatch(key, j, false);
        }
        assert_eq!(replies(&mut lanes, &mut rx, 3).await, vec![2, 3, 4]);
        assert_eq!(lanes.parked, 1);
        assert_eq!(lanes.away, 0, "no thread holds it");
        assert_eq!(recorder.attempts.load(SeqCst), 1);
        // The operator decides: it runs again at once and is answered.
        recorder.approved.store(true, SeqCst);
        let decided = Instant::now();
        recorder.decisions.send_modify(|n| *n += 1);
        let r = loop {
            tokio::select! {
                r = rx.recv() => break r.unwrap(),
                d = lanes.next_done() => lanes.complete(d),
            }
        };
        assert_eq!((r.request_id, &r.message[..]), (1, &b"approved"[..]));
        assert!(
            decided.elapsed() < Duration::from_millis(300),
            "woken by the decision"
        );
        assert_eq!(recorder.attempts.load(SeqCst), 2);
        assert_eq!(lanes.parked, 0);

        // Undecided, it is answered at its deadline (other decisions wake it meanwhile).
        recorder.approved.store(false, SeqCst);
        recorder.park_ms.store(400, SeqCst);
        let started = Instant::now();
        let (key, j) = job(5, None, &PREAPPROVAL, &out);
        lanes.dispatch(key, j, false);
        let poke = recorder.decisions.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            poke.send_modify(|n| *n += 1);
        });
        let r = loop {
            tokio::select! {
                r = rx.recv() => break r.unwrap(),
                d = lanes.next_done() => lanes.complete(d),
            }
        };
        assert_eq!((r.request_id, &r.message[..]), (5, &b"none came"[..]));
        assert!(started.elapsed() >= Duration::from_millis(400));
        assert_eq!(
            recorder.attempts.load(SeqCst),
            5,
            "first, woken, at the deadline"
        );
    }

    #[tokio::test]
    async fn a_request_behind_a_busy_lane_waits_even_if_it_could_run_inline() {
        let recorder = Arc::new(Recorder::default());
        let mut lanes = Lanes::new(recorder.clone(), Duration::from_secs(60), 2).unwrap();
        let (out, mut rx) = mpsc::unbounded_channel();
        let (key, j) = job(1, Some(1), &SLOW, &out);
        lanes.dispatch(key, j, false);
        let (key, j) = job(2, Some(1), &FAST, &out);
        lanes.dispatch(key, j, true);
        assert!(rx.try_recv().is_err());
        assert_eq!(replies(&mut lanes, &mut rx, 2).await, vec![1, 2]);
    }

    #[tokio::test]
    async fn a_panicking_handler_is_an_error_reply() {
        let recorder = Arc::new(Recorder::default());
        let mut lanes = Lanes::new(recorder.clone(), Duration::from_secs(60), 1).unwrap();
        let (out, mut rx) = mpsc::unbounded_channel();
        for (id, inline) in [(1, true), (2, false)] {
            let (key, j) = job(id, Some(id), &[0, 1, 0xee], &out);
            lanes.dispatch(key, j, inline);
        }
        let mut errors = Vec::new();
        while errors.len() < 2 {
            tokio::select! {
                r = rx.recv() => {
                    let r = r.unwrap();
                    assert!(r.error.contains("internal error"), "{r:?}");
                    errors.push(r.request_id);
                }
                d = lanes.next_done() => lanes.complete(d),
            }
        }
        errors.sort();
        assert_eq!(errors, vec![1, 2]);
        // The pool's thread survived.
        let (key, j) = job(3, Some(3), &FAST, &out);
        lanes.dispatch(key, j, false);
        assert_eq!(replies(&mut lanes, &mut rx, 1).await, vec![3]);
    }

    #[tokio::test]
    async fn idle_lanes_are_dropped_but_not_busy_ones_and_finish_drains() {
        let recorder = Arc::new(Recorder::default());
        let mut lanes = Lanes::new(recorder.clone(), Duration::from_millis(50), 2).unwrap();
        let (out, mut rx) = mpsc::unbounded_channel();
        let (key, j) = job(1, Some(1), &FAST, &out);
        lanes.dispatch(key, j, false);
        assert_eq!(replies(&mut lanes, &mut rx, 1).await, vec![1]);
        let (key, j) = job(2, Some(2), &SLOW, &out);
        lanes.dispatch(key, j, false);
        tokio::time::sleep(Duration::from_millis(100)).await;
        lanes.drop_idle();
        // Lane 1 was idle; lane 2 still has its slow request in flight.
        assert_eq!(lanes.lane_dbids(), vec![2]);
        let (key, j) = job(3, Some(2), &SLOW, &out);
        lanes.dispatch(key, j, false);
        lanes.finish().await;
        assert_eq!(lanes.lane_count(), 0);
        assert_eq!(recorder.ids(), vec![1, 2, 3]);
        let ids: Vec<u64> = [rx.recv().await, rx.recv().await]
            .into_iter()
            .map(|r| r.unwrap().request_id)
            .collect();
        assert_eq!(ids, vec![2, 3]);
    }
}
