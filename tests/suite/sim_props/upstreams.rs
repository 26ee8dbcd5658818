//! The relay on the simulated OS over several upstreams that fail: one
//! refuses, one never answers (its connect only times out), one resets
//! mid-stream, one sends FIN first, one stalls; failover between them.
//!
//! What each client may see is what its upstream explains: everything
//! echoed and a clean EOF; exactly as many bytes as an upstream that sends
//! FIN first echoes, then a clean EOF; a reset (never a clean EOF) after
//! a prefix when an upstream reset; nothing only when no upstream takes
//! connects at all; and an idle close no sooner than the idle timeout.

use crate::sim::UpstreamKind;

use super::*;

const IDLE: Duration = Duration::from_secs(30);

fn upstream_kind() -> impl Strategy<Value = UpstreamKind> {
    prop_oneof![
        3 => Just(UpstreamKind::Echo),
        1 => Just(UpstreamKind::Refuse),
        1 => Just(UpstreamKind::Silent),
        1 => (0usize..6000).prop_map(UpstreamKind::ResetAfter),
        1 => (0usize..6000).prop_map(UpstreamKind::FinAfter),
        1 => Just(UpstreamKind::Stall),
    ]
}

fn upstream_addr(i: usize) -> Addr {
    format!("10.0.1.{}:7", i + 1).parse().unwrap()
}

#[test]
fn relay_passes_on_what_its_upstreams_do_and_fails_over() {
    let kinds = prop::collection::vec(upstream_kind(), 1..4);
    check(
        "relay_passes_on_what_its_upstreams_do_and_fails_over",
        (case(BENIGN, false), kinds),
        |(case, kinds): &(Case, Vec<UpstreamKind>)| {
            let config = Config {
                idle_timeout: Some(IDLE),
                event_capacity: case.event_capacity,
                ..config()
            };
            let addrs: Vec<Addr> = (0..kinds.len()).map(upstream_addr).collect();
            let relay = Relay::new(addrs.clone());
            World::install(BUFFER, case.fd_limit, case.faults.clone());
            for (addr, kind) in addrs.into_iter().zip(kinds) {
                world(|w| w.add_upstream_of(addr, *kind));
            }
            let result = start(relay, config, LISTEN).and_then(|reactor| {
                let out = Driver::new(stream_byte).drive(case, &mut [reactor])?;
                check_upstreamed(&out, kinds)
            });
            World::uninstall();
            result
        },
    );
}

/// Each client saw what some upstream explains.
fn check_upstreamed(out: &Outcome, kinds: &[UpstreamKind]) -> Result<(), TestCaseError> {
    prop_assert!(
        out.misuse.is_empty(),
        "descriptors misused: {:?}",
        out.misuse
    );
    let fin_first: Vec<usize> = kinds
        .iter()
        .filter_map(|k| match k {
            UpstreamKind::FinAfter(n) => Some(*n),
            _ => None,
        })
        .collect();
    let resets = kinds
        .iter()
        .any(|k| matches!(k, UpstreamKind::ResetAfter(_)));
    // Failover: while one upstream takes connects, no client is given up.
    let unreachable = kinds
        .iter()
        .all(|k| matches!(k, UpstreamKind::Refuse | UpstreamKind::Silent));
    for (p, served) in out.peers.iter().zip(&out.served) {
        let got = &p.client.received;
        prop_assert!(
            p.sent.starts_with(got),
            "peer {}: got {} bytes that are not a prefix of what it sent",
            p.index,
            got.len()
        );
        let complete = got.len() == p.sent.len();
        // Either side may go idle first, and takes the other with it: no
        // sooner than the timeout after the pair began.
        let idle = match (&served.accepted, served.closed_at) {
            (Some((accepted, _)), Some(closed)) => closed >= *accepted + IDLE,
            _ => false,
        };
        let nothing = got.is_empty() && unreachable;
        if p.client.reset {
            prop_assert!(
                resets || idle || nothing,
                "peer {}: reset, with no upstream that resets",
                p.index
            );
        } else {
            let fin = fin_first.contains(&got.len());
            prop_assert!(
                complete || fin || idle || nothing,
                "peer {}: a clean EOF after {} of {} bytes, which no upstream explains",
                p.index,
                got.len(),
                p.sent.len()
            );
        }
    }
    Ok(())
}
