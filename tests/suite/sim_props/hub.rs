//! The hub on the simulated OS: every subscriber gets every frame sent
//! while it was connected, exactly once and in order per sender, under
//! each slow policy; what a policy may skip, it counts.
//!
//! "While it was connected" is exact here: the simulation knows how much
//! of each sender the server had read when it accepted the subscriber and
//! when it read the subscriber's EOF or let it go, and a frame goes out in
//! the read that completes it.

use std::ops::Range;

use sockloop::app::hub::{Hub, SlowPolicy};

use super::*;

/// Line lengths of a hub client's stream, in turn.
const LINE_LENGTHS: [usize; 4] = [11, 37, 20, 64];
const CYCLE: usize = 132;

/// Byte `at` of client `i`'s hub stream: lines that say who sent them and
/// which they are (two digits of sender, eight of line number), padded
/// to their length.
fn hub_byte(i: usize, at: usize) -> u8 {
    let (k, off, len) = line_at(at);
    match off {
        _ if off == len - 1 => b'\n',
        0..2 => digit(i, 1 - off),
        2..10 => digit(k, 9 - off),
        _ => b'a' + ((k * 7 + off) % 26) as u8,
    }
}

fn digit(n: usize, place: usize) -> u8 {
    b'0' + (n / 10usize.pow(place as u32) % 10) as u8
}

/// Which line byte `at` is in, its offset in that line, the line's length.
fn line_at(at: usize) -> (usize, usize, usize) {
    let mut off = at % CYCLE;
    for (j, &len) in LINE_LENGTHS.iter().enumerate() {
        if off < len {
            return (at / CYCLE * 4 + j, off, len);
        }
        off -= len;
    }
    unreachable!("the lengths add up to the cycle")
}

/// Where line `k` ends: the offset just past its newline.
fn line_end(k: usize) -> usize {
    k / 4 * CYCLE + LINE_LENGTHS[..=k % 4].iter().sum::<usize>()
}

/// The whole lines of `received`, as (sender, line number).
fn parse(received: &[u8]) -> Result<Vec<(usize, usize)>, TestCaseError> {
    let number = |bytes: &[u8]| -> Option<usize> {
        let text = std::str::from_utf8(bytes).ok()?;
        text.parse().ok()
    };
    let mut lines = Vec::new();
    for line in received.split_inclusive(|&b| b == b'\n') {
        if !line.ends_with(b"\n") {
            break;
        }
        let parsed = (line.len() >= 11)
            .then(|| number(&line[..2]).zip(number(&line[2..10])))
            .flatten();
        let Some((sender, k)) = parsed else {
            return Err(TestCaseError::fail(format!("garbled line {line:?}")));
        };
        prop_assert!(
            line.len() == line_end(k) - if k == 0 { 0 } else { line_end(k - 1) },
            "line {k} of {sender} arrived with {} bytes",
            line.len()
        );
        lines.push((sender, k));
    }
    Ok(lines)
}

/// The numbers of the lines in `got` that `sender` sent, in the order
/// they came.
fn from_sender(got: &[(usize, usize)], sender: usize) -> Vec<usize> {
    got.iter()
        .filter(|(from, _)| *from == sender)
        .map(|&(_, k)| k)
        .collect()
}

/// What a subscriber must get of a sender's frames.
#[derive(Clone, Copy, PartialEq)]
enum Owed {
    /// All of them.
    All,
    /// All but what the slow policy counts as dropped.
    Counted,
}

/// The lines of sender `p` that subscriber `s` was connected for: those
/// whose last byte the server read after it accepted `s` and before it
/// read `s`'s EOF or let it go.
fn window(out: &Outcome, s: usize, p: usize) -> Range<usize> {
    let end = out.server_ends[p];
    let read_by = |snapshot: &Option<(Duration, Vec<usize>)>| {
        snapshot
            .as_ref()
            .map(|(_, read)| read.get(end).copied().unwrap_or(0))
    };
    let served = &out.served[s];
    let (Some(lo), Some(hi)) = (read_by(&served.accepted), read_by(&served.left)) else {
        return 0..0;
    };
    let lines_by = |read: usize| (0..).take_while(|&k| line_end(k) <= read).count();
    lines_by(lo)..lines_by(hi)
}

/// Every subscriber got, from every other sender, the lines it was
/// connected for: exactly once, in order; all of them, or with
/// [`Owed::Counted`] all but some, the sum of which is `dropped`.
fn check_hub(out: &Outcome, owed: Owed, dropped: u64) -> Result<(), TestCaseError> {
    prop_assert!(
        out.misuse.is_empty(),
        "descriptors misused: {:?}",
        out.misuse
    );
    let (mut missing, mut delivered) = (0, 0);
    for (s, sub) in out.peers.iter().enumerate() {
        prop_assert!(!sub.client.reset, "subscriber {s} was reset");
        let got = parse(&out.settled[s])?;
        delivered += got.len() as u64;
        for (p, sender) in out.peers.iter().enumerate() {
            let seq = from_sender(&got, sender.index);
            if p == s {
                prop_assert!(seq.is_empty(), "subscriber {s} got its own line");
                continue;
            }
            let want: Vec<usize> = window(out, s, p).collect();
            if owed == Owed::All {
                prop_assert!(
                    seq == want,
                    "subscriber {s} got lines {seq:?} of {p}, owed {want:?}"
                );
                continue;
            }
            let mut rest = want.iter();
            prop_assert!(
                seq.iter().all(|k| rest.any(|w| w == k)),
                "subscriber {s} got lines {seq:?} of {p}: not once each, in order, of {want:?}"
            );
            missing += (want.len() - seq.len()) as u64;
        }
    }
    prop_assert!(
        missing == dropped,
        "{missing} lines missing, {dropped} counted as dropped"
    );
    let counted = out.stats.frames_out;
    prop_assert!(
        delivered == counted,
        "{delivered} lines delivered, {counted} counted as sent"
    );
    Ok(())
}

/// A hub under `policy` with the properties' watermarks (or, for
/// `Disconnect`, one nobody reaches: this property loses no one).
fn hub_run(case: &Case, policy: SlowPolicy) -> Result<Outcome, TestCaseError> {
    let mut config = config();
    if policy == SlowPolicy::Disconnect {
        config.high_watermark = 1 << 20;
    }
    let hub = Hub::new(lines(1 << 20), policy, config.high_watermark);
    run_with(case, hub, config, hub_byte, Hub::dropped)
}

#[test]
fn hub_gives_every_frame_to_every_subscriber_once_in_order() {
    check(
        "hub_gives_every_frame_to_every_subscriber_once_in_order",
        case(BENIGN, false),
        |case| {
            let out = hub_run(case, SlowPolicy::Disconnect)?;
            check_hub(&out, Owed::All, 0)
        },
    );
}

#[test]
fn hub_drop_policy_skips_only_frames_it_counts() {
    check(
        "hub_drop_policy_skips_only_frames_it_counts",
        case(BENIGN, false),
        |case| {
            let out = hub_run(case, SlowPolicy::Drop)?;
            check_hub(&out, Owed::Counted, out.inspected)
        },
    );
}

#[test]
fn hub_block_policy_loses_nothing() {
    check(
        "hub_block_policy_loses_nothing",
        case(BENIGN, false),
        |case| {
            let out = hub_run(case, SlowPolicy::Block)?;
            check_hub(&out, Owed::All, 0)
        },
    );
}

const MESHED: [&str; 2] = [LISTEN, "10.0.0.2:80"];

/// Two hubs meshed, each on its own reactor (a poller of its own, woken
/// through its `Handle`), clients connecting to each in turn.
fn mesh_run(case: &Case) -> Result<Outcome, TestCaseError> {
    let config = Config {
        high_watermark: 1 << 20,
        event_capacity: case.event_capacity,
        ..config()
    };
    let hub = || Hub::new(lines(1 << 20), SlowPolicy::Disconnect, 1 << 20);
    World::install(BUFFER, case.fd_limit, case.faults.clone());
    let result = MESHED
        .iter()
        .map(|addr| start(hub(), config.clone(), addr))
        .collect::<Result<Vec<_>, _>>()
        .and_then(|mut reactors| {
            let handles: Vec<_> = reactors.iter().map(Reactor::handle).collect();
            Hub::mesh(
                handles
                    .into_iter()
                    .zip(reactors.iter_mut().map(Reactor::service_mut)),
            );
            let mut driver = Driver::new(hub_byte);
            driver.listen = MESHED.iter().map(|a| a.parse().unwrap()).collect();
            driver.drive(case, &mut reactors)
        });
    World::uninstall();
    result
}

/// As [`check_hub`] between peers of one reactor. Between reactors a
/// frame crosses over a turn or so later, so a subscriber may get a few
/// sent just before it came and miss a few sent just before it left; but
/// from each sender it gets consecutive lines, once each and in order,
/// none sent after it left, and, if it stayed to the end, every one from
/// the first it was connected for to the last sent.
fn check_mesh(out: &Outcome) -> Result<(), TestCaseError> {
    for (s, sub) in out.peers.iter().enumerate() {
        prop_assert!(!sub.client.reset, "subscriber {s} was reset");
        let got = parse(&out.settled[s])?;
        let stayed = out.stayed.get(s) == Some(&true);
        for (p, sender) in out.peers.iter().enumerate() {
            let seq = from_sender(&got, sender.index);
            let want = window(out, s, p);
            if p == s {
                prop_assert!(seq.is_empty(), "subscriber {s} got its own line");
                continue;
            }
            if out.served[s].listener == out.served[p].listener {
                let want: Vec<usize> = want.collect();
                prop_assert!(
                    seq == want,
                    "subscriber {s} got lines {seq:?} of {p}, owed {want:?}"
                );
                continue;
            }
            let consecutive = seq.windows(2).all(|w| w[1] == w[0] + 1);
            let none_after = seq.last().is_none_or(|&k| k < want.end);
            let all_owed = !stayed
                || want.is_empty()
                || (seq.first() <= Some(&want.start) && seq.last() == Some(&(want.end - 1)));
            prop_assert!(
                consecutive && none_after && all_owed,
                "subscriber {s} got lines {seq:?} of {p} (on another reactor), owed {want:?}"
            );
        }
    }
    Ok(())
}

#[test]
fn hub_mesh_gives_every_frame_to_subscribers_on_every_reactor() {
    check(
        "hub_mesh_gives_every_frame_to_subscribers_on_every_reactor",
        case(BENIGN, false),
        |case| check_mesh(&mesh_run(case)?),
    );
}
