//! Idle timers on the simulated OS: a connection is closed for idleness at
//! the first turn at or after its own last traffic plus the timeout — not
//! sooner, and not a turn later, nor after a sleep that overshot it —
//! whatever the clock does, and whether its peer reads, floods or has
//! vanished (never reading again, so what the server sends it stays
//! unsent).

use super::*;

const IDLE: Duration = Duration::from_millis(1_000);

fn timed_case() -> impl Strategy<Value = Case> {
    let kinds = &["short", "again", "eintr", "spurious", "jump", "arrive"];
    case_of(kinds, |s| {
        !matches!(s, Step::Fin(_) | Step::Reset(_) | Step::Shutdown(_))
    })
}

/// An echo with `config` on a world of its own, through `body`.
fn timed_run(
    case: &Case,
    config: Config,
    body: fn(&Case, &mut Reactors<Echo>) -> Result<(), TestCaseError>,
) -> Result<(), TestCaseError> {
    let config = Config {
        event_capacity: case.event_capacity,
        ..config
    };
    World::install(BUFFER, case.fd_limit, case.faults.clone());
    let result = start(Echo, config, LISTEN).and_then(|reactor| body(case, &mut [reactor]));
    World::uninstall();
    result
}

#[test]
fn idle_timers_close_each_peer_at_its_own_deadline() {
    check(
        "idle_timers_close_each_peer_at_its_own_deadline",
        timed_case(),
        |case| {
            let config = Config {
                idle_timeout: Some(IDLE),
                ..config()
            };
            timed_run(case, config, idle_run)
        },
    );
}

/// The scenario, with peers reading what comes after every turn or only
/// when told (but those that vanish); then silence, until the timers have
/// closed everyone.
fn idle_run(case: &Case, reactors: &mut Reactors<Echo>) -> Result<(), TestCaseError> {
    let mut driver = Driver::new(stream_byte);
    let eager = reads_every_turn(case);
    for step in &case.steps {
        driver.act(step);
        let turns = if let Step::Turns(n) = step { *n } else { 1 };
        for _ in 0..turns {
            driver.turn(reactors, eager)?;
        }
    }
    driver.sync_floods();
    world(World::stop_floods);
    for _ in 0..DRAIN_TURNS {
        if world(|w| driver.peers.iter().all(|p| w.server_closed(&p.client))) {
            break;
        }
        driver.turn(reactors, true)?;
    }
    let waits = world(|w| w.waits.clone());
    for p in &driver.peers {
        let served = world(|w| w.served(&p.client).clone());
        check_idle_close(p.index, &served, &waits)?;
        // Nothing it was owed was lost to the timer, if it read all along.
        let owed = &p.sent[..served.read];
        let whole = p.client.received == owed;
        prop_assert!(
            whole || ((p.vanished || !eager) && owed.starts_with(&p.client.received)),
            "peer {}: {} bytes back of the {} read from it",
            p.index,
            p.client.received.len(),
            owed.len()
        );
    }
    Ok(())
}

/// Whether peers read what has come after every turn, or only when the
/// script says so (then a reply may go out well after the request came,
/// and the last traffic be a write). Timed cases have no shutdown: its
/// random timeout picks.
fn reads_every_turn(case: &Case) -> bool {
    case.shutdown_ms.is_multiple_of(2)
}

/// Peer `index` was closed in the first turn at or after its last traffic
/// plus the idle timeout, and that turn's wait did not sleep past the
/// deadline (a clock jump may carry it past: `waits` says how far).
fn check_idle_close(
    index: usize,
    served: &Served,
    waits: &[(Duration, Duration)],
) -> Result<(), TestCaseError> {
    let Some((accepted, _)) = served.accepted else {
        return Err(TestCaseError::fail(format!(
            "peer {index} was never accepted"
        )));
    };
    let Some(closed) = served.closed_at else {
        return Err(TestCaseError::fail(format!(
            "peer {index} was never closed"
        )));
    };
    let due = served.last_io.max(accepted) + IDLE;
    prop_assert!(
        closed >= due,
        "peer {index}: closed at {closed:?}, before its last traffic ({:?}) plus {IDLE:?}",
        served.last_io.max(accepted)
    );
    let first = waits.iter().find(|&&(at, _)| at >= due);
    let Some(&(at, jump)) = first else {
        return Err(TestCaseError::fail(format!(
            "no turn after peer {index}'s deadline"
        )));
    };
    prop_assert!(
        closed == at,
        "peer {index}: due at {due:?}, still open in the turn at {at:?}, closed at {closed:?}"
    );
    prop_assert!(
        at - jump <= due + Duration::from_millis(1),
        "peer {index}: due at {due:?}, the wait slept until {:?}",
        at - jump
    );
    Ok(())
}

const WRITE: Duration = Duration::from_millis(1_000);

#[test]
fn write_timers_close_only_peers_that_stopped_taking_their_output() {
    check(
        "write_timers_close_only_peers_that_stopped_taking_their_output",
        timed_case(),
        |case| {
            let config = Config {
                write_timeout: Some(WRITE),
                ..config()
            };
            timed_run(case, config, write_run)
        },
    );
}

/// What the test saw of each peer's output, turn by turn.
#[derive(Clone, Copy, Default)]
struct Progress {
    /// The last turn that ended with nothing pending for it.
    owed_nothing: Duration,
    vanished: bool,
    /// Since it vanished, output has been pending for it after every turn
    /// from this one on.
    stuck_since: Option<Duration>,
    /// The server let go of it.
    closed: bool,
}

/// The scenario, with peers reading what comes (but those that vanish),
/// then turns until every vanished peer with output pending is closed.
fn write_run(case: &Case, reactors: &mut Reactors<Echo>) -> Result<(), TestCaseError> {
    let mut driver = Driver::new(stream_byte);
    let mut progress = Vec::new();
    let plan: Vec<Option<&Step>> = case
        .steps
        .iter()
        .flat_map(|step| {
            let n = if let Step::Turns(n) = step {
                usize::from(*n)
            } else {
                1
            };
            std::iter::once(Some(step)).chain(std::iter::repeat_n(None, n - 1))
        })
        .collect();
    for i in 0..plan.len() + DRAIN_TURNS {
        match plan.get(i) {
            Some(Some(step)) => driver.act(step),
            Some(None) => {}
            None if progress
                .iter()
                .all(|p: &Progress| p.closed || p.stuck_since.is_none()) =>
            {
                break;
            }
            None => {
                driver.sync_floods();
                world(World::stop_floods);
            }
        }
        driver.turn(reactors, true)?;
        track(&reactors[0], &driver.peers, &mut progress);
    }
    let waits = world(|w| w.waits.clone());
    for (p, progress) in driver.peers.iter().zip(&progress) {
        let served = world(|w| w.served(&p.client).clone());
        check_write_close(p, &served, progress, &waits)?;
    }
    Ok(())
}

/// Brings `progress` up to date after a turn.
fn track(reactor: &Reactor<Echo, Sim>, peers: &[Peer], progress: &mut Vec<Progress>) {
    let conns = reactor.connections();
    let now = world(|w| w.elapsed());
    progress.resize(peers.len(), Progress::default());
    for (p, progress) in peers.iter().zip(progress.iter_mut()) {
        let served = world(|w| w.served(&p.client).clone());
        let Some(addr) = served.peer.filter(|_| served.closed_at.is_none()) else {
            progress.closed = true;
            continue;
        };
        let pending = conns
            .iter()
            .find(|c| c.peer == addr)
            .map_or(0, |c| c.pending_output);
        progress.vanished |= p.vanished;
        if pending == 0 {
            progress.owed_nothing = now;
            progress.stuck_since = None;
        } else if progress.vanished {
            progress.stuck_since.get_or_insert(now);
        }
    }
}

/// A peer closed by the write timer owed something for a whole timeout
/// before; a vanished one with output pending was closed within two
/// timeouts (one to take what was owed when the timer was set, one for
/// the rest), clock jumps aside; one never closed got everything.
fn check_write_close(
    p: &Peer,
    served: &Served,
    progress: &Progress,
    waits: &[(Duration, Duration)],
) -> Result<(), TestCaseError> {
    let owed = &p.sent[..served.read];
    prop_assert!(
        owed.starts_with(&p.client.received),
        "peer {}: got what it was not owed",
        p.index
    );
    if let Some(closed) = served.closed_at {
        prop_assert!(
            closed >= progress.owed_nothing + WRITE,
            "peer {}: closed at {closed:?}, owing nothing at {:?}",
            p.index,
            progress.owed_nothing
        );
    }
    let Some(stuck) = progress.stuck_since else {
        return Ok(());
    };
    let jumps: Duration = waits
        .iter()
        .filter(|&&(at, _)| at > stuck)
        .map(|&(_, jump)| jump)
        .sum();
    let closed = served.closed_at.unwrap_or(Duration::MAX);
    prop_assert!(
        closed <= stuck + 2 * WRITE + jumps + Duration::from_millis(1),
        "peer {}: vanished with output pending at {stuck:?}, closed at {closed:?}",
        p.index
    );
    Ok(())
}
