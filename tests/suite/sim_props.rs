//! The reactor on a simulated OS, under faults no loopback test produces:
//! short reads and writes, EAGAIN mid-drain, EINTR, spurious, duplicated
//! and reordered events, an event array smaller than what is ready, EMFILE
//! and aborted connections on accept, refused connects, clock jumps, peers
//! that reset, vanish or never read, peers that act while the reactor is
//! in the middle of a turn (a sender that never pauses, clients arriving)
//! — with descriptor numbers reused at once. proptest writes the scenarios
//! and the fault scripts, and shrinks a failure to the smallest script
//! that still fails.
//!
//! `SOCKLOOP_SIM_CASES=N` runs N cases per property (default 500);
//! `SOCKLOOP_SIM_SEED=S` (a number) replays the run that printed it, and
//! `SOCKLOOP_SIM_SEED=random` explores a fresh one.

mod hub;
mod timers;
mod upstreams;

use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, RngAlgorithm, TestError, TestRng, TestRunner};
use sockloop::app::echo::{Echo, FramedEcho};
use sockloop::app::relay::Relay;
use sockloop::codec::{Codec, Framing};
use sockloop::reactor::{Addr, CloseReason, Config, ListenOptions, Reactor, Service, Stats};
use sockloop::sys::SignalKind;

use crate::sim::{Client, Fault, Served, Sim, World, world};

/// What a scenario does, one step at a time, between reactor turns.
#[derive(Debug, Clone)]
enum Step {
    Connect,
    /// Client `i % clients` sends `len` bytes of its stream.
    Send(usize, usize),
    /// Client `i % clients` reads up to `max` bytes.
    Read(usize, usize),
    Fin(usize),
    Reset(usize),
    Turns(u8),
    /// A graceful shutdown begins, asked for by a call, by SIGTERM, or by
    /// a `Handle` through the waker (`way % 3`).
    Shutdown(u8),
    /// Client `i % clients` sends from now on without a pause, at every
    /// call the reactor makes, up to [`FLOOD`] bytes in all.
    Flood(usize),
    /// Client `i % clients` vanishes: it never reads, sends or closes
    /// again, and the network drops everything sent to it.
    Vanish(usize),
}

/// One simulated run: the scenario and the faults.
#[derive(Debug, Clone)]
struct Case {
    steps: Vec<Step>,
    faults: Vec<(u64, Fault)>,
    /// How long a graceful shutdown may take, in virtual milliseconds.
    shutdown_ms: u64,
    /// Descriptors the process may hold: a few, to run out of them.
    fd_limit: usize,
    /// Events one wait may return: often fewer than are ready.
    event_capacity: usize,
    /// `--max-conns`: in hostile runs, often a few.
    max_conns: usize,
}

/// Faults after which every byte still arrives.
const BENIGN: &[&str] = &[
    "short",
    "again",
    "eintr",
    "spurious",
    "duplicate",
    "reverse",
    "jump",
    "arrive",
];
/// Faults that may cost a connection (but nothing else).
const HOSTILE: &[&str] = &[
    "short",
    "again",
    "eintr",
    "spurious",
    "duplicate",
    "reverse",
    "jump",
    "arrive",
    "emfile",
    "aborted",
    "refused",
];

/// The most a sender that never pauses sends.
const FLOOD: usize = 48 << 10;

fn fault(kinds: &'static [&'static str]) -> impl Strategy<Value = Fault> {
    (0..kinds.len(), 1usize..200, 1u64..3_000).prop_map(move |(k, n, ms)| match kinds[k] {
        "short" => Fault::Short(n),
        "again" => Fault::Again,
        "eintr" => Fault::Interrupted,
        "spurious" => Fault::Spurious,
        "duplicate" => Fault::Duplicate,
        "reverse" => Fault::Reverse,
        "jump" => Fault::Jump(ms),
        "arrive" => Fault::Arrive,
        "emfile" => Fault::OutOfDescriptors,
        "aborted" => Fault::Aborted,
        _ => Fault::Refused,
    })
}

fn step(max_len: usize) -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => Just(Step::Connect),
        6 => (0usize..8, 1..max_len).prop_map(|(i, n)| Step::Send(i, n)),
        3 => (0usize..8, 1usize..4096).prop_map(|(i, n)| Step::Read(i, n)),
        1 => (0usize..8).prop_map(Step::Fin),
        1 => (0usize..8).prop_map(Step::Reset),
        3 => (1u8..6).prop_map(Step::Turns),
        1 => any::<u8>().prop_map(Step::Shutdown),
        1 => (0usize..8).prop_map(Step::Flood),
        1 => (0usize..8).prop_map(Step::Vanish),
    ]
}

/// Cases with the faults `kinds`; `hostile` ones also have peers that
/// reset, and graceful shutdowns. None has a peer that vanishes: with no
/// timer to notice, it would hold its connection for ever.
fn case(kinds: &'static [&'static str], hostile: bool) -> impl Strategy<Value = Case> {
    case_of(kinds, move |s| match s {
        Step::Vanish(_) => false,
        Step::Reset(_) | Step::Shutdown(_) => hostile,
        _ => true,
    })
}

/// Cases with the faults `kinds` and the steps `keep` keeps.
fn case_of(
    kinds: &'static [&'static str],
    keep: impl Fn(&Step) -> bool + Clone + 'static,
) -> impl Strategy<Value = Case> {
    let hostile = kinds.contains(&"emfile");
    let steps = prop::collection::vec(step(3000), 1..64).prop_map(move |mut steps| {
        steps.retain(&keep);
        steps.insert(0, Step::Connect);
        steps
    });
    let faults = prop::collection::vec((1u64..160, fault(kinds)), 0..32);
    // Often none at all: the deadline then falls in the next turn, amid its events.
    let shutdown_ms = prop_oneof![Just(0u64), 1u64..3_000];
    let fd_limit = if hostile {
        (5usize..12).boxed()
    } else {
        Just(256).boxed()
    };
    let max_conns = if hostile {
        prop_oneof![Just(usize::MAX), 1usize..6].boxed()
    } else {
        Just(usize::MAX).boxed()
    };
    let event_capacity = prop_oneof![Just(64usize), 1usize..4];
    (
        steps,
        faults,
        shutdown_ms,
        (fd_limit, max_conns),
        event_capacity,
    )
        .prop_map(
            |(steps, faults, shutdown_ms, (fd_limit, max_conns), event_capacity)| Case {
                steps,
                faults,
                shutdown_ms,
                fd_limit,
                event_capacity,
                max_conns,
            },
        )
}

/// The configuration the properties run with: buffers small enough that
/// backpressure, partial writes and budgets come into play.
fn config() -> Config {
    Config {
        high_watermark: 4096,
        low_watermark: 1024,
        read_chunk: 512,
        read_budget: 1024,
        accept_budget: 8,
        event_capacity: 64,
        hold_replies: 4,
        connect_timeout: Duration::from_secs(5),
        ..Config::default()
    }
}

const LISTEN: &str = "10.0.0.1:80";
const UPSTREAM: &str = "10.0.0.9:7";
/// Each simulated direction buffers this much, as a small kernel would:
/// more than one turn's read budget, so the budget matters.
const BUFFER: usize = 4096;
/// Turns at most in the drain at the end: a run that needs more is stuck.
const DRAIN_TURNS: usize = 5_000;

/// Client `i`'s stream: printable, with a newline now and then, so the
/// same bytes serve raw and line-framed services.
fn stream_byte(i: usize, at: usize) -> u8 {
    let x = (at as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (i as u64) << 17;
    if (x >> 59) == 0 {
        b'\n'
    } else {
        b'a' + ((x >> 40) % 26) as u8
    }
}

/// What each client sends: `stream(i, at)` is byte `at` of client `i`'s.
type StreamFn = fn(usize, usize) -> u8;

/// A simulated peer, and what it has sent.
struct Peer {
    client: Client,
    index: usize,
    sent: Vec<u8>,
    /// When it sent FIN, if it did.
    fin: Option<Duration>,
    /// It reset the connection itself.
    reset_self: bool,
    vanished: bool,
    /// The world sends for it, at every call ([`Step::Flood`]).
    flooding: bool,
    /// What it had sent when a graceful shutdown began.
    sent_at_shutdown: Option<usize>,
}

impl Peer {
    fn new(client: Client, index: usize) -> Peer {
        Peer {
            client,
            index,
            sent: Vec::new(),
            fin: None,
            reset_self: false,
            vanished: false,
            flooding: false,
            sent_at_shutdown: None,
        }
    }

    /// It is done: its connection ended, or it vanished and the server
    /// let go of it.
    fn done(&self) -> bool {
        let c = &self.client;
        c.eof || c.reset || (self.vanished && world(|w| w.server_closed(c)))
    }
}

/// What a run leaves for the checks.
struct Outcome {
    peers: Vec<Peer>,
    /// What each peer had received once the reactor had nothing left to
    /// do, before anyone said FIN: a byte stuck then would wait for ever
    /// for a peer that waits for its answer.
    settled: Vec<Vec<u8>>,
    /// Which peers were still connected then.
    stayed: Vec<bool>,
    /// What the reactor did with each peer.
    served: Vec<Served>,
    misuse: Vec<String>,
    peak_pending: usize,
    /// The most output all connections held together at the end of a turn.
    peak_buffered: usize,
    stats: Stats,
    /// What the property's `inspect` read from the service at the end.
    inspected: u64,
    /// The end the server held of each peer's connection.
    server_ends: Vec<usize>,
    /// When the graceful shutdown began, and its deadline.
    shutdown: Option<(Duration, Duration)>,
}

fn run<S: Service>(case: &Case, service: S, config: Config) -> Result<Outcome, TestCaseError> {
    run_with(case, service, config, stream_byte, |_| 0)
}

/// As [`run`], each client sending its `stream`; `inspect` reads a
/// number from the service at the end ([`Outcome::inspected`]).
fn run_with<S: Service>(
    case: &Case,
    service: S,
    config: Config,
    stream: StreamFn,
    inspect: fn(&S) -> u64,
) -> Result<Outcome, TestCaseError> {
    let config = Config {
        shutdown_timeout: Duration::from_millis(case.shutdown_ms),
        event_capacity: case.event_capacity,
        max_conns: case.max_conns,
        ..config
    };
    World::install(BUFFER, case.fd_limit, case.faults.clone());
    world(|w| w.add_upstream(UPSTREAM.parse().unwrap(), false));
    let result = start(service, config, LISTEN).and_then(|reactor| {
        let mut reactors = [reactor];
        let mut driver = Driver::new(stream);
        driver.max_conns = case.max_conns;
        let mut out = driver.drive(case, &mut reactors)?;
        out.inspected = inspect(reactors[0].service());
        Ok(out)
    });
    World::uninstall();
    result
}

/// A reactor on the simulated OS, listening at `listen` and taking signals.
fn start<S: Service>(
    service: S,
    config: Config,
    listen: &str,
) -> Result<Reactor<S, Sim>, TestCaseError> {
    let fail = |e: std::io::Error| TestCaseError::fail(format!("start: {e}"));
    let mut reactor = Reactor::<S, Sim>::with_os(config, service).map_err(fail)?;
    reactor.handle_signals().map_err(fail)?;
    let options = ListenOptions {
        backlog: 16,
        ..ListenOptions::default()
    };
    reactor
        .listen(&listen.parse().unwrap(), &options)
        .map_err(fail)?;
    Ok(reactor)
}

/// The reactors of a run (one, or a hub's mesh).
type Reactors<S> = [Reactor<S, Sim>];

/// The counters of all `reactors`, summed.
fn stats<S: Service>(reactors: &Reactors<S>) -> Stats {
    let mut sum = Stats::default();
    for r in reactors {
        sum.add(&r.stats());
    }
    sum
}

/// The test's side of a run: the peers, and what it saw.
struct Driver {
    /// Where clients connect, in turn.
    listen: Vec<Addr>,
    connects: usize,
    stream: StreamFn,
    peers: Vec<Peer>,
    peak_buffered: usize,
    shutdown: Option<(Duration, Duration)>,
    /// No more accepted connections than this may be open after a turn.
    max_conns: usize,
}

impl Driver {
    fn new(stream: StreamFn) -> Driver {
        Driver {
            listen: vec![LISTEN.parse().unwrap()],
            connects: 0,
            stream,
            peers: Vec::new(),
            peak_buffered: 0,
            shutdown: None,
            max_conns: usize::MAX,
        }
    }

    fn drive<S: Service>(
        &mut self,
        case: &Case,
        reactors: &mut Reactors<S>,
    ) -> Result<Outcome, TestCaseError> {
        self.play(case, reactors)?;
        self.sync_floods();
        world(World::stop_floods);
        self.settle(reactors)?;
        // The running total of output is what the connections hold.
        let held: usize = reactors
            .iter()
            .flat_map(Reactor::connections)
            .map(|c| c.pending_output)
            .sum();
        let counted = stats(reactors).buffered_output;
        prop_assert!(counted == held, "{counted} bytes counted, {held} held");
        let mut settled: Vec<Vec<u8>> = self
            .peers
            .iter()
            .map(|p| p.client.received.clone())
            .collect();
        let stayed = self
            .peers
            .iter()
            .map(|p| !(p.fin.is_some() || p.client.reset || p.client.eof))
            .collect();
        self.finish(reactors, case)?;
        // Those that came during the end had nothing to settle before it.
        let late = self.peers[settled.len()..].iter();
        settled.extend(late.map(|p| p.client.received.clone()));
        let served = world(|w| {
            self.peers
                .iter()
                .map(|p| w.served(&p.client).clone())
                .collect()
        });
        let server_ends = world(|w| self.peers.iter().map(|p| w.server_end(&p.client)).collect());
        Ok(Outcome {
            settled,
            stayed,
            served,
            misuse: world(|w| std::mem::take(&mut w.misuse)),
            peak_pending: stats(reactors).peak_pending_output,
            peak_buffered: self.peak_buffered,
            stats: stats(reactors),
            inspected: 0,
            server_ends,
            shutdown: self.shutdown,
            peers: std::mem::take(&mut self.peers),
        })
    }

    /// The scenario, step by step, each followed by its turns.
    fn play<S: Service>(
        &mut self,
        case: &Case,
        reactors: &mut Reactors<S>,
    ) -> Result<(), TestCaseError> {
        for step in &case.steps {
            if let Step::Shutdown(way) = *step {
                self.shut_down(reactors, way, case.shutdown_ms);
            }
            self.act(step);
            let turns = if let Step::Turns(n) = step { *n } else { 1 };
            for _ in 0..turns {
                // Peers read only when the script says so (a peer that does
                // not read is how backpressure starts), or once the server
                // is shutting down, as its clients would.
                self.turn(reactors, self.shutdown.is_some())?;
            }
        }
        Ok(())
    }

    /// A graceful shutdown begins, asked for as `way` says.
    fn shut_down<S: Service>(&mut self, reactors: &mut Reactors<S>, way: u8, ms: u64) {
        self.sync_floods();
        let now = world(|w| w.elapsed());
        self.shutdown
            .get_or_insert((now, now + Duration::from_millis(ms)));
        for p in &mut self.peers {
            p.sent_at_shutdown.get_or_insert(p.sent.len());
        }
        for reactor in reactors {
            match way % 3 {
                0 => reactor.shutdown(),
                1 => world(|w| w.raise_signal(SignalKind::Terminate)),
                _ => reactor.handle().shutdown().expect("the reactor's handle"),
            }
        }
    }

    /// The end: every peer still there says FIN (those arriving meanwhile
    /// too), and everything must settle.
    fn finish<S: Service>(
        &mut self,
        reactors: &mut Reactors<S>,
        case: &Case,
    ) -> Result<(), TestCaseError> {
        let stopping = case.steps.iter().any(|s| matches!(s, Step::Shutdown(_)));
        let running = |reactors: &Reactors<S>| reactors.iter().any(Reactor::is_running);
        let mut quiet = 0;
        for _ in 0..DRAIN_TURNS {
            for p in &mut self.peers {
                if !p.client.reset && p.fin.is_none() && !p.vanished {
                    world(|w| w.client_fin(&p.client));
                    p.fin = Some(world(|w| w.elapsed()));
                }
            }
            let finished = self.peers.iter().all(Peer::done);
            if finished && !world(|w| w.has_pending()) && !(stopping && running(reactors)) {
                quiet += 1;
                if quiet > 3 {
                    break;
                }
            }
            self.turn(reactors, true)?;
        }
        let stuck: Vec<usize> = self
            .peers
            .iter()
            .filter(|p| !p.done())
            .map(|p| p.index)
            .collect();
        prop_assert!(stuck.is_empty(), "peers {stuck:?} never got EOF");
        prop_assert!(!stopping || !running(reactors), "a shutdown never ended");
        // Every connection is gone: only each reactor's poller, spare and
        // (unless it shut down) listener are left.
        let open = world(|w| w.open_fds());
        prop_assert!(
            open <= 3 * reactors.len(),
            "{open} descriptors still open at the end"
        );
        let counted = stats(reactors).buffered_output;
        prop_assert!(counted == 0, "{counted} bytes of output counted, none held");
        debug_summary(&stats(reactors), &self.peers, case);
        Ok(())
    }

    /// Turns the reactor until nothing is left to report and peers get
    /// nothing more; the clock runs meanwhile, as it would.
    fn settle<S: Service>(&mut self, reactors: &mut Reactors<S>) -> Result<(), TestCaseError> {
        let mut quiet = 0;
        for _ in 0..DRAIN_TURNS {
            let before: usize = self.peers.iter().map(|p| p.client.received.len()).sum();
            self.turn(reactors, true)?;
            let after: usize = self.peers.iter().map(|p| p.client.received.len()).sum();
            if before == after && !world(|w| w.has_pending()) {
                quiet += 1;
                if quiet > 3 {
                    return Ok(());
                }
            } else {
                quiet = 0;
            }
        }
        Err(TestCaseError::fail("never settled"))
    }

    fn act(&mut self, step: &Step) {
        let n = self.peers.len().max(1);
        let live = |p: &&mut Peer| p.fin.is_none() && !p.client.reset && !p.vanished;
        match *step {
            Step::Connect => {
                let listen = &self.listen[self.connects % self.listen.len()];
                self.connects += 1;
                if let Some(client) = world(|w| w.connect_client(listen)) {
                    self.peers.push(Peer::new(client, self.peers.len()));
                }
            }
            Step::Send(i, len) => {
                let quiet = |p: &&mut Peer| !p.flooding;
                if let Some(p) = self.peers.get_mut(i % n).filter(live).filter(quiet) {
                    let stream = self.stream;
                    let bytes: Vec<u8> = (p.sent.len()..p.sent.len() + len)
                        .map(|at| stream(p.index, at))
                        .collect();
                    let took = world(|w| w.client_send(&mut p.client, &bytes));
                    p.sent.extend_from_slice(&bytes[..took]);
                }
            }
            Step::Read(i, max) => {
                if let Some(p) = self.peers.get_mut(i % n).filter(|p| !p.vanished) {
                    world(|w| w.client_read(&mut p.client, max));
                }
            }
            Step::Fin(i) => {
                if let Some(p) = self.peers.get_mut(i % n).filter(live) {
                    world(|w| w.client_fin(&p.client));
                    p.fin = Some(world(|w| w.elapsed()));
                }
            }
            Step::Reset(i) => {
                if let Some(p) = self.peers.get_mut(i % n).filter(|p| !p.client.reset) {
                    world(|w| w.client_reset(&mut p.client));
                    p.reset_self = true;
                }
            }
            Step::Flood(i) => {
                if let Some(p) = self.peers.get_mut(i % n).filter(live) {
                    let stream = (p.index, self.stream);
                    world(|w| w.flood(&p.client, stream, p.sent.len(), FLOOD));
                    p.flooding = true;
                }
            }
            Step::Vanish(i) => {
                if let Some(p) = self.peers.get_mut(i % n) {
                    world(|w| w.stop_flood(&p.client));
                    p.vanished = true;
                }
            }
            Step::Turns(_) | Step::Shutdown(_) => {}
        }
    }

    /// What the senders that never pause sent, and the clients that
    /// arrived, while the reactor worked.
    fn sync_floods(&mut self) {
        let stream = self.stream;
        for p in &mut self.peers {
            let more = world(|w| w.take_flooded(&p.client));
            let at = p.sent.len();
            p.sent.extend((at..at + more).map(|at| stream(p.index, at)));
        }
        for client in world(World::take_arrivals) {
            let mut peer = Peer::new(client, self.peers.len());
            // It came after the shutdown was asked for: all it sends, later.
            peer.sent_at_shutdown = self.shutdown.map(|_| 0);
            self.peers.push(peer);
        }
    }

    /// A turn of each reactor, then the world's upstreams work, and every
    /// peer that has not vanished reads what has come if `read`. A turn
    /// may not do unbounded work.
    fn turn<S: Service>(
        &mut self,
        reactors: &mut Reactors<S>,
        read: bool,
    ) -> Result<(), TestCaseError> {
        for reactor in reactors.iter_mut() {
            world(|w| w.calls_this_turn = 0);
            reactor
                .turn()
                .map_err(|e| TestCaseError::fail(format!("turn failed: {e}")))?;
            let (calls, open) = world(|w| (w.calls_this_turn, w.open_fds()));
            // Generous, but finite: a loop that spins inside a turn runs past it.
            let bound = 200 + 64 * open as u64;
            prop_assert!(
                calls <= bound,
                "one turn made {calls} calls with {open} descriptors open"
            );
        }
        self.peak_buffered = self.peak_buffered.max(stats(reactors).buffered_output);
        let accepted = world(|w| w.accepted_open());
        prop_assert!(
            accepted <= self.max_conns,
            "{accepted} accepted connections open, over --max-conns {}",
            self.max_conns
        );
        self.sync_floods();
        world(|w| {
            w.run_upstreams();
            for p in self.peers.iter_mut().filter(|p| read && !p.vanished) {
                for _ in 0..4 {
                    w.client_read(&mut p.client, 8192);
                }
            }
        });
        Ok(())
    }
}

/// With `SOCKLOOP_SIM_DEBUG` set, what a run did.
fn debug_summary(stats: &Stats, peers: &[Peer], case: &Case) {
    if std::env::var_os("SOCKLOOP_SIM_DEBUG").is_none() {
        return;
    }
    let (calls, unfired) = world(|w| w.calls());
    let bytes: usize = peers.iter().map(|p| p.client.received.len()).sum();
    eprintln!(
        "calls {calls} faults {} unfired {unfired} peers {} bytes back {bytes} shed {} \
         over-budget {} budget pauses {}",
        case.faults.len(),
        peers.len(),
        stats.closed_by(CloseReason::Limit),
        stats.closed_by(CloseReason::OverBudget),
        stats.budget_pauses
    );
}

/// Every peer got back what `expect` makes of what it sent: in a benign
/// run all of it, with nothing reset and nothing waiting for an edge (it
/// was back before anyone said FIN); in a hostile run, all but what the
/// faults explain ([`check_bounded`]). No backlog grew past the high
/// watermark by more than one read's worth of replies, `read_worth`.
fn check_echo(
    out: &Outcome,
    expect: impl Fn(&[u8]) -> Vec<u8>,
    lossless: bool,
    read_worth: usize,
) -> Result<(), TestCaseError> {
    prop_assert!(
        out.misuse.is_empty(),
        "descriptors misused: {:?}",
        out.misuse
    );
    prop_assert!(
        out.peak_pending <= config().high_watermark + read_worth,
        "a backlog of {} bytes: over the high watermark plus one read ({read_worth})",
        out.peak_pending
    );
    let mut cut = 0;
    for ((p, settled), served) in out.peers.iter().zip(&out.settled).zip(&out.served) {
        if lossless {
            check_lossless(p, settled, &expect)?;
        } else if check_bounded(out, p, served, &expect)? {
            cut += 1;
        }
    }
    // Cut short by the server for no fault of its own: only what sheds
    // connections (out of descriptors, over the output budget, an upstream
    // that could not be reached) may do that, once per connection shed.
    let stats = &out.stats;
    let shed = stats.closed_by(CloseReason::Limit)
        + stats.closed_by(CloseReason::OverBudget)
        + stats.connect_failed;
    prop_assert!(
        cut <= shed,
        "{cut} peers cut short by the server, and only {shed} connections shed"
    );
    Ok(())
}

fn check_lossless(
    p: &Peer,
    settled: &[u8],
    expect: impl Fn(&[u8]) -> Vec<u8>,
) -> Result<(), TestCaseError> {
    let want = expect(&p.sent);
    let got = &p.client.received;
    prop_assert!(
        !p.client.reset,
        "peer {}: reset by the server in a benign run, with {} of the {} bytes owed back",
        p.index,
        got.len(),
        want.len()
    );
    prop_assert!(
        settled == want,
        "peer {}: before any FIN, {} of the {} bytes owed had come back",
        p.index,
        settled.len(),
        want.len()
    );
    prop_assert!(
        *got == want,
        "peer {}: sent {} bytes, expected {} back, got {}",
        p.index,
        p.sent.len(),
        want.len(),
        got.len()
    );
    Ok(())
}

/// What a hostile run may cost peer `p`: no more than a fault explains.
/// A peer that reset gets a prefix (it stopped reading); one never
/// accepted gets nothing; one the shutdown's deadline cut gets a prefix of
/// what the server read of it. A clean EOF hides no loss: everything the
/// server read comes back, and that is all it sent (or, shutting down, all
/// it had sent when the shutdown began). True if the server reset it short
/// of all that without such a reason: a shed connection, counted by the
/// caller.
fn check_bounded(
    out: &Outcome,
    p: &Peer,
    served: &Served,
    expect: impl Fn(&[u8]) -> Vec<u8>,
) -> Result<bool, TestCaseError> {
    let got = &p.client.received;
    let all = expect(&p.sent);
    if p.reset_self {
        prop_assert!(
            all.starts_with(got),
            "peer {}: got {} bytes that are not a prefix of the {} expected",
            p.index,
            got.len(),
            all.len()
        );
        return Ok(false);
    }
    let owed = expect(&p.sent[..served.read.min(p.sent.len())]);
    prop_assert!(
        owed.starts_with(got),
        "peer {}: got {} bytes that are not a prefix of the {} owed for what the server read",
        p.index,
        got.len(),
        owed.len()
    );
    if served.accepted.is_none() {
        prop_assert!(
            got.is_empty(),
            "peer {}: never accepted, yet answered",
            p.index
        );
        return Ok(false);
    }
    let deadline_cut = match (out.shutdown, served.closed_at) {
        (Some((_, deadline)), Some(at)) => at >= deadline,
        _ => false,
    };
    let due = match p.sent_at_shutdown {
        Some(before) if out.shutdown.is_some() => expect(&p.sent[..before]).len(),
        _ => all.len(),
    };
    let complete = got.len() >= due;
    if p.client.eof && !deadline_cut {
        prop_assert!(
            complete,
            "peer {}: a clean EOF after {} of the {} bytes due (the server read {} of {} sent; {served:?})",
            p.index,
            got.len(),
            due,
            served.read,
            p.sent.len()
        );
    }
    Ok(!complete && !deadline_cut)
}

/// Runs `property` over cases from `strategy`, `SOCKLOOP_SIM_CASES` of
/// them, from `SOCKLOOP_SIM_SEED` or a fixed seed; a failure is shrunk and
/// reported with the seed that replays it.
fn check<T: std::fmt::Debug>(
    name: &str,
    strategy: impl Strategy<Value = T>,
    property: impl Fn(&T) -> Result<(), TestCaseError>,
) {
    let cases = std::env::var("SOCKLOOP_SIM_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(500);
    let seed: u64 = match std::env::var("SOCKLOOP_SIM_SEED").ok().as_deref() {
        Some("random") => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
        Some(text) => text
            .parse()
            .expect("SOCKLOOP_SIM_SEED: a number or `random`"),
        None => 0x5eed_50c1,
    };
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = RunnerConfig {
        cases,
        failure_persistence: None,
        ..RunnerConfig::default()
    };
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &bytes);
    let mut runner = TestRunner::new_with_rng(config, rng);
    match runner.run(&strategy, |case| property(&case)) {
        Ok(()) => {}
        Err(TestError::Fail(why, case)) => panic!(
            "{name}: {why}\nminimal case: {case:#?}\nreplay: SOCKLOOP_SIM_SEED={seed} cargo test --test suite {name}"
        ),
        Err(e) => panic!("{name}: {e}"),
    }
}

fn lines(codec_max: usize) -> Codec {
    Codec::new(Framing::Lines, codec_max).unwrap()
}

/// What a line echo sends back: every whole line (a partial one at the
/// end is dropped with the connection).
fn whole_lines(sent: &[u8]) -> Vec<u8> {
    let end = sent.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    sent[..end].to_vec()
}

#[test]
fn echo_returns_every_byte_under_benign_faults() {
    check(
        "echo_returns_every_byte_under_benign_faults",
        case(BENIGN, false),
        |case| {
            let out = run(case, Echo, config())?;
            check_echo(&out, <[u8]>::to_vec, true, config().read_chunk)
        },
    );
}

#[test]
fn echo_survives_hostile_faults_and_resets() {
    check(
        "echo_survives_hostile_faults_and_resets",
        case(HOSTILE, true),
        |case| {
            let out = run(case, Echo, config())?;
            check_echo(&out, <[u8]>::to_vec, false, config().read_chunk)
        },
    );
}

#[test]
fn echo_and_relay_hold_to_their_output_budget_under_hostile_faults() {
    check(
        "echo_and_relay_hold_to_their_output_budget_under_hostile_faults",
        case(HOSTILE, true),
        |case| {
            // One turn's reads: flow control tightens after half of it, and
            // a peer or two that do not read pass it, to be shed.
            let config = Config {
                max_buffered: config().read_budget,
                ..config()
            };
            let relay = Relay::new(vec![UPSTREAM.parse().unwrap()]);
            for out in [
                run(case, Echo, config.clone())?,
                run(case, relay, config.clone())?,
            ] {
                prop_assert!(
                    out.peak_buffered <= config.max_buffered,
                    "{} bytes buffered at the end of a turn, over the budget of {}",
                    out.peak_buffered,
                    config.max_buffered
                );
                check_echo(&out, <[u8]>::to_vec, false, config.read_chunk)?;
            }
            Ok(())
        },
    );
}

#[test]
fn framed_echo_returns_every_whole_line() {
    check(
        "framed_echo_returns_every_whole_line",
        case(BENIGN, false),
        |case| {
            let out = run(case, FramedEcho::new(lines(1 << 20)), config())?;
            // A read can complete a line that began in earlier reads: its
            // reply is that whole line.
            let longest = out
                .peers
                .iter()
                .flat_map(|p| p.sent.split(|&b| b == b'\n').map(<[u8]>::len))
                .max()
                .unwrap_or(0);
            check_echo(&out, whole_lines, true, config().read_chunk + longest + 1)
        },
    );
}

#[test]
fn relay_carries_every_byte_both_ways() {
    check(
        "relay_carries_every_byte_both_ways",
        case(BENIGN, false),
        |case| {
            let relay = Relay::new(vec![UPSTREAM.parse().unwrap()]);
            let out = run(case, relay, config())?;
            check_echo(&out, <[u8]>::to_vec, true, config().read_chunk)
        },
    );
}

#[test]
fn relay_survives_hostile_faults_and_resets() {
    check(
        "relay_survives_hostile_faults_and_resets",
        case(HOSTILE, true),
        |case| {
            let relay = Relay::new(vec![UPSTREAM.parse().unwrap()]);
            let out = run(case, relay, config())?;
            check_echo(&out, <[u8]>::to_vec, false, config().read_chunk)
        },
    );
}

/// Benign cases with one graceful shutdown, asked for in one of its ways.
fn shutdown_case() -> impl Strategy<Value = Case> {
    let keep = |s: &Step| !matches!(s, Step::Reset(_) | Step::Vanish(_) | Step::Shutdown(_));
    (case_of(BENIGN, keep), any::<usize>(), any::<u8>()).prop_map(|(mut case, at, way)| {
        let at = 1 + at % case.steps.len();
        case.steps.insert(at, Step::Shutdown(way));
        case
    })
}

#[test]
fn a_shutdown_returns_every_byte_that_reached_the_kernel_before_it() {
    check(
        "a_shutdown_returns_every_byte_that_reached_the_kernel_before_it",
        shutdown_case(),
        |case| {
            // Lost only to the deadline: no fault here sheds anyone.
            let out = run(case, Echo, config())?;
            check_echo(&out, <[u8]>::to_vec, false, config().read_chunk)?;
            let relay = Relay::new(vec![UPSTREAM.parse().unwrap()]);
            let out = run(case, relay, config())?;
            check_echo(&out, <[u8]>::to_vec, false, config().read_chunk)
        },
    );
}

/// What every client of a listener behind a proxy sends first.
const PROXY_HEADER: &[u8] = b"PROXY TCP4 192.0.2.1 10.0.0.1 5555 80\r\n";
const HANDSHAKE: Duration = Duration::from_millis(2_000);

/// Client `i`'s stream behind a proxy: the PROXY header, then its own.
fn proxied_byte(i: usize, at: usize) -> u8 {
    match PROXY_HEADER.get(at) {
        Some(&b) => b,
        None => stream_byte(i, at - PROXY_HEADER.len()),
    }
}

#[test]
fn proxied_echo_answers_after_the_header_or_times_the_handshake_out() {
    check(
        "proxied_echo_answers_after_the_header_or_times_the_handshake_out",
        case(BENIGN, false),
        |case| {
            let config = Config {
                proxy_protocol: true,
                handshake_timeout: HANDSHAKE,
                ..config()
            };
            let out = run_with(case, Echo, config, proxied_byte, |_| 0)?;
            check_proxied(&out)
        },
    );
}

/// Each peer got the echo of all it sent after its header; or, having
/// sent no whole header, nothing; or, its header still incomplete at the
/// handshake deadline, nothing and a close no sooner than that deadline.
fn check_proxied(out: &Outcome) -> Result<(), TestCaseError> {
    prop_assert!(
        out.misuse.is_empty(),
        "descriptors misused: {:?}",
        out.misuse
    );
    let h = PROXY_HEADER.len();
    for (p, served) in out.peers.iter().zip(&out.served) {
        let got = &p.client.received;
        let after_header = &p.sent[h.min(p.sent.len())..];
        if !p.client.reset && got == after_header {
            continue;
        }
        let (Some((accepted, _)), Some(closed)) = (&served.accepted, served.closed_at) else {
            return Err(TestCaseError::fail(format!(
                "peer {} never served",
                p.index
            )));
        };
        // A header cut short by the peer's own FIN, or by the deadline.
        if p.sent.len() < h {
            let by_fin = p.fin.is_some_and(|at| at <= closed);
            prop_assert!(
                got.is_empty() && (by_fin || closed >= *accepted + HANDSHAKE),
                "peer {}: {} bytes of its header sent, closed at {closed:?} (accepted at \
                 {accepted:?}), {} bytes back",
                p.index,
                p.sent.len(),
                got.len()
            );
            continue;
        }
        prop_assert!(
            got.is_empty() && served.read < h && closed >= *accepted + HANDSHAKE,
            "peer {}: {} of {} bytes back, the server read {} and closed it at {closed:?} \
             (accepted at {accepted:?})",
            p.index,
            got.len(),
            after_header.len(),
            served.read
        );
    }
    Ok(())
}
