//! The reactor on a simulated OS, under faults no loopback test produces:
//! short reads and writes, EAGAIN mid-drain, EINTR, spurious, duplicated
//! and reordered events, EMFILE and aborted connections on accept, refused
//! connects, clock jumps, peers that reset or never read — with descriptor
//! numbers reused at once. proptest writes the scenarios and the fault
//! scripts, and shrinks a failure to the smallest script that still fails.
//!
//! `SOCKLOOP_SIM_CASES=N` runs N cases per property (default 1,000: the
//! eight properties take a few seconds);
//! `SOCKLOOP_SIM_SEED=S` (a number) replays the run that printed it, and
//! `SOCKLOOP_SIM_SEED=random` explores a fresh one.

use std::collections::HashMap;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, RngAlgorithm, TestError, TestRng, TestRunner};
use sockloop::app::echo::{Echo, FramedEcho};
use sockloop::app::hub::{Hub, SlowPolicy};
use sockloop::app::relay::Relay;
use sockloop::codec::{Codec, Framing};
use sockloop::reactor::{Addr, Config, ListenOptions, Reactor, Service};

use crate::sim::{Client, Fault, Sim, World, world};

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
    /// A graceful shutdown begins (SIGTERM).
    Shutdown,
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
    "emfile",
    "aborted",
    "refused",
];

fn fault(kinds: &'static [&'static str]) -> impl Strategy<Value = Fault> {
    (0..kinds.len(), 1usize..200, 1u64..3_000).prop_map(move |(k, n, ms)| match kinds[k] {
        "short" => Fault::Short(n),
        "again" => Fault::Again,
        "eintr" => Fault::Interrupted,
        "spurious" => Fault::Spurious,
        "duplicate" => Fault::Duplicate,
        "reverse" => Fault::Reverse,
        "jump" => Fault::Jump(ms),
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
        1 => Just(Step::Shutdown),
    ]
}

/// Cases with the faults `kinds`; `hostile` ones also have peers that
/// reset, and graceful shutdowns.
fn case(kinds: &'static [&'static str], hostile: bool) -> impl Strategy<Value = Case> {
    let steps = prop::collection::vec(step(3000), 1..64).prop_map(move |mut steps| {
        if !hostile {
            steps.retain(|s| !matches!(s, Step::Reset(_) | Step::Shutdown));
        }
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
    (steps, faults, shutdown_ms, fd_limit).prop_map(|(steps, faults, shutdown_ms, fd_limit)| Case {
        steps,
        faults,
        shutdown_ms,
        fd_limit,
    })
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

/// A simulated peer, and what it has sent.
struct Peer {
    client: Client,
    index: usize,
    sent: Vec<u8>,
    fin: bool,
}

/// What a run leaves for the checks.
struct Outcome {
    peers: Vec<Peer>,
    /// What each peer had received once the reactor had nothing left to
    /// do, before anyone said FIN: a byte stuck then would wait for ever
    /// for a peer that waits for its answer.
    settled: Vec<Vec<u8>>,
    misuse: Vec<String>,
    peak_pending: usize,
    /// The most output all connections held together at the end of a turn.
    peak_buffered: usize,
}

fn run<S: Service>(case: &Case, service: S, config: Config) -> Result<Outcome, TestCaseError> {
    let config = Config {
        shutdown_timeout: Duration::from_millis(case.shutdown_ms),
        ..config
    };
    World::install(BUFFER, case.fd_limit, case.faults.clone());
    let result = drive(case, service, config);
    World::uninstall();
    result
}

fn drive<S: Service>(case: &Case, service: S, config: Config) -> Result<Outcome, TestCaseError> {
    let listen: Addr = LISTEN.parse().unwrap();
    world(|w| w.add_upstream(UPSTREAM.parse().unwrap(), false));
    let mut reactor = Reactor::<S, Sim>::with_os(config, service).unwrap();
    reactor
        .listen(
            &listen,
            &ListenOptions {
                backlog: 16,
                ..ListenOptions::default()
            },
        )
        .unwrap();
    let mut peers: Vec<Peer> = Vec::new();
    let mut refused = 0;
    let mut peak_buffered = 0;
    for step in &case.steps {
        if let Step::Shutdown = step {
            reactor.shutdown();
        }
        act(step, &mut peers, &mut refused, &listen);
        let turns = if let Step::Turns(n) = step { *n } else { 1 };
        for _ in 0..turns {
            // Peers read only when the script says so: a peer that does not
            // read is how backpressure starts.
            peak_buffered = peak_buffered.max(turn(&mut reactor, &mut peers, false)?);
        }
    }
    peak_buffered = peak_buffered.max(settle(&mut reactor, &mut peers)?);
    // The running total of output is what the connections hold.
    let held: usize = reactor.connections().iter().map(|c| c.pending_output).sum();
    let counted = reactor.stats().buffered_output;
    prop_assert!(counted == held, "{counted} bytes counted, {held} held");
    let settled = peers.iter().map(|p| p.client.received.clone()).collect();
    // The end: every peer still there says FIN, and everything must settle.
    for p in &mut peers {
        if !p.client.reset && !p.fin {
            world(|w| w.client_fin(&p.client));
            p.fin = true;
        }
    }
    let mut quiet = 0;
    for _ in 0..DRAIN_TURNS {
        let finished = peers.iter().all(|p| p.client.eof || p.client.reset);
        let stopping = case.steps.iter().any(|s| matches!(s, Step::Shutdown));
        if finished && !world(|w| w.has_pending()) && !(stopping && reactor.is_running()) {
            quiet += 1;
            if quiet > 3 {
                break;
            }
        }
        peak_buffered = peak_buffered.max(turn(&mut reactor, &mut peers, true)?);
    }
    let stuck: Vec<usize> = peers
        .iter()
        .filter(|p| !(p.client.eof || p.client.reset))
        .map(|p| p.index)
        .collect();
    prop_assert!(stuck.is_empty(), "peers {stuck:?} never got EOF");
    let shut_down = case.steps.iter().any(|s| matches!(s, Step::Shutdown));
    prop_assert!(
        !shut_down || !reactor.is_running(),
        "a shutdown never ended"
    );
    // Every connection is gone: only the poller, the spare and (unless it
    // shut down) the listener are left.
    let open = world(|w| w.open_fds());
    prop_assert!(open <= 3, "{open} descriptors still open at the end");
    let counted = reactor.stats().buffered_output;
    prop_assert!(counted == 0, "{counted} bytes of output counted, none held");
    if std::env::var_os("SOCKLOOP_SIM_DEBUG").is_some() {
        let (calls, unfired) = world(|w| w.calls());
        let bytes: usize = peers.iter().map(|p| p.client.received.len()).sum();
        let stats = reactor.stats();
        let shed = stats.closed_by(sockloop::reactor::CloseReason::Limit);
        let over = stats.closed_by(sockloop::reactor::CloseReason::OverBudget);
        eprintln!(
            "calls {calls} faults {} unfired {unfired} peers {} bytes back {bytes} shed {shed} \
             over-budget {over} budget pauses {}",
            case.faults.len(),
            peers.len(),
            stats.budget_pauses
        );
    }
    Ok(Outcome {
        settled,
        misuse: world(|w| std::mem::take(&mut w.misuse)),
        peak_pending: reactor.stats().peak_pending_output,
        peak_buffered,
        peers,
    })
}

/// Turns the reactor until nothing is left to report and peers get
/// nothing more; the clock runs meanwhile, as it would. Returns the most
/// output left buffered at the end of a turn.
fn settle<S: Service>(
    reactor: &mut Reactor<S, Sim>,
    peers: &mut [Peer],
) -> Result<usize, TestCaseError> {
    let mut quiet = 0;
    let mut peak_buffered = 0;
    for _ in 0..DRAIN_TURNS {
        let before: usize = peers.iter().map(|p| p.client.received.len()).sum();
        peak_buffered = peak_buffered.max(turn(reactor, peers, true)?);
        let after: usize = peers.iter().map(|p| p.client.received.len()).sum();
        if before == after && !world(|w| w.has_pending()) {
            quiet += 1;
            if quiet > 3 {
                return Ok(peak_buffered);
            }
        } else {
            quiet = 0;
        }
    }
    Err(TestCaseError::fail("never settled"))
}

fn act(step: &Step, peers: &mut Vec<Peer>, refused: &mut usize, listen: &Addr) {
    let n = peers.len().max(1);
    match *step {
        Step::Connect => match world(|w| w.connect_client(listen)) {
            Some(client) => peers.push(Peer {
                client,
                index: peers.len(),
                sent: Vec::new(),
                fin: false,
            }),
            None => *refused += 1,
        },
        Step::Send(i, len) => {
            if let Some(p) = peers.get_mut(i % n).filter(|p| !p.fin && !p.client.reset) {
                let bytes: Vec<u8> = (p.sent.len()..p.sent.len() + len)
                    .map(|at| stream_byte(p.index, at))
                    .collect();
                let took = world(|w| w.client_send(&mut p.client, &bytes));
                p.sent.extend_from_slice(&bytes[..took]);
            }
        }
        Step::Read(i, max) => {
            if let Some(p) = peers.get_mut(i % n) {
                world(|w| w.client_read(&mut p.client, max));
            }
        }
        Step::Fin(i) => {
            if let Some(p) = peers.get_mut(i % n).filter(|p| !p.fin && !p.client.reset) {
                world(|w| w.client_fin(&p.client));
                p.fin = true;
            }
        }
        Step::Reset(i) => {
            if let Some(p) = peers.get_mut(i % n).filter(|p| !p.client.reset) {
                world(|w| w.client_reset(&mut p.client));
            }
        }
        Step::Turns(_) | Step::Shutdown => {}
    }
}

/// One reactor turn, then the world's upstreams work, and every peer reads
/// what has come if `read`. A turn may not do unbounded work. Returns the
/// output the turn left buffered.
fn turn<S: Service>(
    reactor: &mut Reactor<S, Sim>,
    peers: &mut [Peer],
    read: bool,
) -> Result<usize, TestCaseError> {
    world(|w| w.calls_this_turn = 0);
    reactor
        .turn()
        .map_err(|e| TestCaseError::fail(format!("turn failed: {e}")))?;
    let buffered = reactor.stats().buffered_output;
    let (calls, open) = world(|w| (w.calls_this_turn, w.open_fds()));
    // Generous, but finite: a loop that spins inside a turn runs past it.
    let bound = 200 + 64 * open as u64;
    prop_assert!(
        calls <= bound,
        "one turn made {calls} calls with {open} descriptors open"
    );
    world(|w| {
        w.run_upstreams();
        for p in peers.iter_mut().filter(|_| read) {
            for _ in 0..4 {
                w.client_read(&mut p.client, 8192);
            }
        }
    });
    Ok(buffered)
}

/// Every peer that was not reset got back exactly what `expect` makes of
/// what it sent; a peer the server cut off (hostile faults) got a prefix.
/// No backlog grew past the high watermark by more than one read's worth
/// of replies, `read_worth`.
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
    for (p, settled) in out.peers.iter().zip(&out.settled) {
        if p.client.reset {
            continue;
        }
        let want = expect(&p.sent);
        let got = &p.client.received;
        if lossless {
            prop_assert!(
                *settled == expect(&p.sent[..p.sent.len()]),
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
        } else {
            prop_assert!(
                want.starts_with(got),
                "peer {}: got {} bytes that are not a prefix of the {} expected",
                p.index,
                got.len(),
                want.len()
            );
        }
    }
    Ok(())
}

/// Runs `property` over cases from `strategy`, `SOCKLOOP_SIM_CASES` of
/// them, from `SOCKLOOP_SIM_SEED` or a fixed seed; a failure is shrunk and
/// reported with the seed that replays it.
fn check(
    name: &str,
    strategy: impl Strategy<Value = Case>,
    property: impl Fn(&Case) -> Result<(), TestCaseError>,
) {
    let cases = std::env::var("SOCKLOOP_SIM_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000);
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

#[test]
fn hub_gives_every_line_to_every_other_client_in_order() {
    check(
        "hub_gives_every_line_to_every_other_client_in_order",
        case(BENIGN, false),
        |case| {
            // Lines tell their sender: each peer's stream is its own bytes.
            let mut config = config();
            config.high_watermark = 1 << 20;
            let hub = Hub::new(lines(1 << 20), SlowPolicy::Disconnect, 1 << 20);
            let out = run(case, hub, config)?;
            prop_assert!(
                out.misuse.is_empty(),
                "descriptors misused: {:?}",
                out.misuse
            );
            // Which peer sent each line; a text two peers both sent tells nothing.
            let mut by_sender: HashMap<Vec<u8>, Option<usize>> = HashMap::new();
            for p in &out.peers {
                for line in whole_lines(&p.sent).split_inclusive(|&b| b == b'\n') {
                    let owner = by_sender.entry(line.to_vec()).or_insert(Some(p.index));
                    if *owner != Some(p.index) {
                        *owner = None;
                    }
                }
            }
            for p in &out.peers {
                // What p got, line by line, grouped by sender, must be a run of
                // each sender's lines in the order sent.
                let mut next: HashMap<usize, usize> = HashMap::new();
                for line in p.client.received.split_inclusive(|&b| b == b'\n') {
                    let Some(&Some(sender)) = by_sender.get(line) else {
                        continue;
                    };
                    prop_assert!(sender != p.index, "peer {} got its own line back", p.index);
                    let sent = whole_lines(&out.peers[sender].sent);
                    let lines: Vec<&[u8]> = sent.split_inclusive(|&b| b == b'\n').collect();
                    let at = next.entry(sender).or_default();
                    let found = lines[*at..].iter().position(|l| *l == line);
                    prop_assert!(
                        found.is_some(),
                        "peer {}: a line of {} out of order",
                        p.index,
                        sender
                    );
                    *at += found.unwrap_or(0) + 1;
                }
            }
            Ok(())
        },
    );
}

#[test]
fn idle_timers_fire_at_the_configured_virtual_time() {
    let faults = &["short", "again", "eintr", "spurious"];
    check(
        "idle_timers_fire_at_the_configured_virtual_time",
        case(faults, false),
        |case| {
            // Every peer goes silent after the scenario; the server must close
            // each one exactly an idle timeout after its last traffic.
            let idle = Duration::from_millis(1_000);
            let mut config = config();
            config.idle_timeout = Some(idle);
            World::install(BUFFER, 256, case.faults.clone());
            let result = idle_run(case, config, idle);
            World::uninstall();
            result
        },
    );
}

fn idle_run(case: &Case, config: Config, idle: Duration) -> Result<(), TestCaseError> {
    let listen: Addr = LISTEN.parse().unwrap();
    let mut reactor = Reactor::<Echo, Sim>::with_os(config, Echo).unwrap();
    reactor
        .listen(
            &listen,
            &ListenOptions {
                backlog: 16,
                ..ListenOptions::default()
            },
        )
        .unwrap();
    let mut peers = Vec::new();
    let mut refused = 0;
    // Only connects and sends: no FIN, no reset, so only the timer closes.
    for step in case
        .steps
        .iter()
        .filter(|s| matches!(s, Step::Connect | Step::Send(..)))
    {
        act(step, &mut peers, &mut refused, &listen);
        turn(&mut reactor, &mut peers, true)?;
    }
    for _ in 0..3 {
        turn(&mut reactor, &mut peers, true)?;
    }
    let silent_since = world(|w| w.elapsed());
    let mut closed_at = vec![None; peers.len()];
    for _ in 0..200 {
        turn(&mut reactor, &mut peers, true)?;
        let now = world(|w| w.elapsed());
        for (i, p) in peers.iter().enumerate() {
            if closed_at[i].is_none() && world(|w| w.server_closed(&p.client)) {
                closed_at[i] = Some(now);
            }
        }
        if closed_at.iter().all(Option::is_some) {
            break;
        }
    }
    for (i, at) in closed_at.iter().enumerate() {
        let Some(at) = *at else {
            return Err(TestCaseError::fail(format!("peer {i} was never closed")));
        };
        // Its last traffic was no later than `silent_since`: closed at most
        // one idle period after that, and never less than one period after
        // the start of the run.
        prop_assert!(at <= silent_since + idle, "peer {i} closed at {at:?}, late");
        prop_assert!(at >= idle, "peer {i} closed at {at:?}, early");
    }
    Ok(())
}
