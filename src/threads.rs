//! Several reactors, one per thread, and the thread that watches them.
//!
//! Each reactor keeps to itself: its own listener (bound with
//! `SO_REUSEPORT`, so the kernel spreads connections over them), its own
//! connections and buffers, no lock on its data path. The calling thread
//! becomes their supervisor: it takes the signals (SIGINT and SIGTERM drain
//! every reactor, a second one stops them; SIGUSR1 prints one connection
//! table with the rows of all; SIGHUP runs the server's [`Reload`], if it
//! has one; SIGUSR2 runs its [`Upgrade`], if it has one), logs the summed
//! counters every
//! `stats_interval`, and stops them all as soon as one fails, returning
//! or panicking, so a process never goes on serving with part of itself gone.
//!
//! Make the [`Supervisor`] first, before any other thread starts (it takes
//! the signals), then the reactors, then [`Supervisor::run`] them.

mod upgrade;

pub use upgrade::Upgrade;

use std::any::Any;
use std::fmt;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use crate::reactor::{Handle, Reactor, Service, Stats, format_tables, label_ids_with_reactor};
use crate::sys::os::{Os, Poll, Readiness, SignalSource, Wake};
use crate::sys::{Notifier, Real, SignalKind, pin_thread};

/// How the reactors run.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Pin reactor `i` to the `i`-th CPU the process may run on.
    pub pin: bool,
    /// Log the counters of all reactors, summed, this often.
    pub stats_interval: Option<Duration>,
    /// What SIGHUP does; without one it is logged and ignored.
    pub reload: Option<Reload>,
}

/// What a server does on SIGHUP, on the supervisor's thread: re-read what
/// it was configured from and, if that is good, leave it where its services
/// look and wake every reactor through its [`Handle`] (a service takes it
/// in [`on_wake`](Service::on_wake)). The reactors are never stopped for it.
#[derive(Clone)]
pub struct Reload(Arc<ReloadFn>);

/// A reload's body, given the handles of all the reactors.
type ReloadFn = dyn Fn(&[Handle]) + Send + Sync;

impl Reload {
    /// A reload that runs `reload` with the handles of all the reactors.
    pub fn new(reload: impl Fn(&[Handle]) + Send + Sync + 'static) -> Reload {
        Reload(Arc::new(reload))
    }
}

impl fmt::Debug for Reload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Reload")
    }
}

/// How the reactors ended.
#[derive(Debug)]
pub struct Outcome {
    /// Each reactor's final counters, in order.
    pub stats: Vec<Stats>,
    /// A second signal cut the graceful shutdown short.
    pub forced: bool,
}

/// Up to this many reactors, [`Outcome::spread`] lists each one's count.
const SHARES_LISTED: usize = 32;

impl Outcome {
    /// The counters of all reactors added up.
    pub fn total(&self) -> Stats {
        let mut total = Stats::default();
        for stats in &self.stats {
            total.add(stats);
        }
        total
    }

    /// With several reactors, one line for how the kernel spread the
    /// connections: each reactor's accepted count in order (`accepted per
    /// reactor: 104/96`), or past 32 reactors their least, median
    /// and most. Each reactor's own counters are logged at debug level.
    pub fn spread(&self) -> Option<String> {
        let n = self.stats.len();
        if n < 2 {
            return None;
        }
        let mut shares: Vec<u64> = self.stats.iter().map(|s| s.accepted).collect();
        let shares = if n <= SHARES_LISTED {
            let listed: Vec<String> = shares.iter().map(u64::to_string).collect();
            listed.join("/")
        } else {
            shares.sort_unstable();
            format!(
                "least {}, median {}, most {}",
                shares[0],
                shares[n / 2],
                shares[n - 1]
            )
        };
        Some(format!(
            "{n} reactors stopped; accepted per reactor: {shares}"
        ))
    }
}

const WAKE: u64 = 0;
const SIGNALS: u64 = 1;

/// What a reactor's thread reports as it ends.
type Ended = thread::Result<io::Result<(Stats, bool)>>;

/// The thread that watches the reactors: it holds the signals from the
/// moment it is made.
pub struct Supervisor {
    poller: <Real as Os>::Poller,
    signals: <Real as Os>::Signals,
    notifier: Option<Notifier>,
    upgrade: Option<Upgrade>,
}

impl Supervisor {
    /// Takes SIGINT, SIGTERM, SIGUSR1, SIGHUP and SIGUSR2 away from their default actions, so
    /// that a signal that comes before the reactors run waits for them. Call
    /// it before any thread that should not take them starts: it blocks
    /// them in this thread, and threads started later inherit that.
    pub fn new() -> io::Result<Supervisor> {
        let poller = <Real as Os>::Poller::new(4, WAKE)?;
        let signals = <Real as Os>::Signals::new(&poller, SIGNALS)?;
        Ok(Supervisor {
            poller,
            signals,
            notifier: None,
            upgrade: None,
        })
    }

    /// Tells `notifier` (systemd's `NOTIFY_SOCKET`) `READY=1` once the
    /// reactors run, and `STOPPING=1` when a signal starts their drain.
    pub fn notify(&mut self, notifier: Notifier) {
        self.notifier = Some(notifier);
    }

    /// Runs `upgrade` on SIGUSR2; without one, SIGUSR2 is logged and
    /// ignored.
    pub fn upgrade_on_usr2(&mut self, upgrade: Upgrade) {
        self.upgrade = Some(upgrade);
    }

    /// Runs each reactor on a thread of its own until all have stopped,
    /// serving signals on this one. An error names the reactor that failed.
    pub fn run<S>(mut self, reactors: Vec<Reactor<S>>, options: &Options) -> io::Result<Outcome>
    where
        S: Service + Send + 'static,
        S::Conn: Send,
    {
        let handles: Vec<Handle> = reactors.iter().map(Reactor::handle).collect();
        let (done_tx, done) = mpsc::channel();
        let mut threads = Vec::new();
        for (i, reactor) in reactors.into_iter().enumerate() {
            let (done_tx, waker) = (done_tx.clone(), self.poller.waker());
            let pin = options.pin;
            let several = handles.len() > 1;
            let spawned = thread::Builder::new()
                .name(format!("reactor-{i}"))
                .spawn(move || {
                    if several {
                        label_ids_with_reactor(i);
                    }
                    let ended = panic::catch_unwind(AssertUnwindSafe(|| serve(i, reactor, pin)));
                    let _ = done_tx.send((i, ended));
                    let _ = waker.wake();
                });
            match spawned {
                Ok(thread) => threads.push(thread),
                Err(e) => {
                    stop_all(&handles);
                    join_all(threads);
                    return Err(io::Error::new(e.kind(), format!("start reactor {i}: {e}")));
                }
            }
        }
        let mut watch = Watch {
            handles,
            finished: vec![None; threads.len()],
            forced: false,
            failure: None,
            notifier: self.notifier.take(),
            reload: options.reload.clone(),
            upgrade: self.upgrade.take(),
        };
        watch.tell(Notifier::ready);
        let result = watch.run(&mut self, &done, options.stats_interval);
        if result.is_err() {
            stop_all(&watch.handles);
        }
        join_all(threads);
        result?;
        if let Some(failure) = watch.failure {
            return Err(failure);
        }
        Ok(Outcome {
            stats: watch
                .finished
                .into_iter()
                .map(Option::unwrap_or_default)
                .collect(),
            forced: watch.forced,
        })
    }
}

/// One reactor's thread: pinned if asked, then its loop.
fn serve<S: Service>(i: usize, mut reactor: Reactor<S>, pin: bool) -> io::Result<(Stats, bool)> {
    if pin {
        let cpu = pin_thread(i).map_err(|e| io::Error::new(e.kind(), format!("pin: {e}")))?;
        info!("reactor {i} pinned to CPU {cpu}");
    }
    reactor.run()?;
    Ok((reactor.stats(), reactor.was_forced()))
}

/// The supervisor's books.
struct Watch {
    handles: Vec<Handle>,
    finished: Vec<Option<Stats>>,
    forced: bool,
    failure: Option<io::Error>,
    notifier: Option<Notifier>,
    reload: Option<Reload>,
    /// Taken by the drain: a process that drains hands nothing over.
    upgrade: Option<Upgrade>,
}

impl Watch {
    /// Tells the notifier, if there is one, what `state` sends.
    fn tell(&self, state: fn(&Notifier) -> io::Result<()>) {
        if let Some(Err(e)) = self.notifier.as_ref().map(state) {
            warn!("telling the service manager: {e}");
        }
    }

    fn run(
        &mut self,
        supervisor: &mut Supervisor,
        done: &mpsc::Receiver<(usize, Ended)>,
        stats_interval: Option<Duration>,
    ) -> io::Result<()> {
        let mut next_report = stats_interval.map(|every| Instant::now() + every);
        while self.finished.iter().any(Option::is_none) {
            let timeout = next_report.map(|at| at.saturating_duration_since(Instant::now()));
            let n = supervisor.poller.wait(timeout)?;
            for i in 0..n {
                if supervisor.poller.event(i).token() == SIGNALS {
                    self.take_signals(&supervisor.signals);
                }
            }
            while let Ok((i, ended)) = done.try_recv() {
                self.ended(i, ended);
            }
            if let (Some(at), Some(every)) = (next_report, stats_interval)
                && Instant::now() >= at
            {
                info!("stats: {}", self.sum_running());
                next_report = Some(at + every);
            }
        }
        Ok(())
    }

    fn take_signals(&mut self, signals: &<Real as Os>::Signals) {
        loop {
            match signals.next() {
                Ok(Some(SignalKind::Terminate)) => {
                    self.tell(Notifier::stopping);
                    self.drain();
                }
                Ok(Some(SignalKind::Upgrade)) => self.upgrade(),
                Ok(Some(SignalKind::Report)) => {
                    let tables: Vec<_> = self
                        .handles
                        .iter()
                        .map(|h| h.connections().unwrap_or_default())
                        .collect();
                    let tables: Vec<_> = tables.iter().map(Vec::as_slice).collect();
                    crate::stderr::line(format_args!("{}", format_tables(&tables)));
                }
                Ok(Some(SignalKind::Reload)) => match &self.reload {
                    Some(Reload(reload)) => reload(&self.handles),
                    None => info!("SIGHUP: this server has nothing to reload; ignored"),
                },
                Ok(None) => return,
                Err(e) => {
                    warn!("reading signals: {e}");
                    return;
                }
            }
        }
    }

    /// Asks every reactor to stop accepting and drain; each takes a second
    /// request as "stop now". The listeners kept for an upgrade close, so
    /// that new clients are refused rather than left queued.
    fn drain(&mut self) {
        self.upgrade = None;
        for handle in &self.handles {
            let _ = handle.shutdown();
        }
    }

    /// SIGUSR2: hands over to a new process and drains once it serves, or
    /// keeps serving if it does not. The signals wait meanwhile.
    fn upgrade(&mut self) {
        let Some(upgrade) = &mut self.upgrade else {
            info!("SIGUSR2: no upgrade while draining, or for this server; ignored");
            return;
        };
        info!("SIGUSR2: starting the new process");
        let manager = self.notifier.as_ref().map_or("", Notifier::manager_name);
        match upgrade.start_successor(manager) {
            Ok(pid) => {
                upgrade.leave_files();
                info!("SIGUSR2: process {pid} is ready; this one drains");
                // systemd follows the service to its new main process.
                if let Some(Err(e)) = self
                    .notifier
                    .as_ref()
                    .map(|n| n.send(&format!("MAINPID={pid}")))
                {
                    warn!("telling the service manager MAINPID={pid}: {e}");
                }
                self.drain();
            }
            Err(why) => warn!("SIGUSR2: upgrade failed, this process serves on: {why}"),
        }
    }

    /// Reactor `i` has ended: with its counters, or failing, which stops
    /// the others.
    fn ended(&mut self, i: usize, ended: Ended) {
        let failure = match ended {
            Ok(Ok((stats, forced))) => {
                debug!("reactor {i} stopped: {stats}");
                self.finished[i] = Some(stats);
                self.forced |= forced;
                return;
            }
            Ok(Err(e)) => io::Error::new(e.kind(), format!("reactor {i} failed: {e}")),
            Err(panic) => io::Error::other(format!(
                "reactor {i} panicked: {}",
                panic_message(panic.as_ref())
            )),
        };
        self.finished[i] = Some(Stats::default());
        if self.failure.is_none() {
            if self.handles.len() > 1 {
                warn!("{failure}: stopping the other reactors");
            }
            stop_all(&self.handles);
            self.failure = Some(failure);
        }
    }

    /// The counters of the reactors still running, added up.
    fn sum_running(&self) -> Stats {
        let mut total = Stats::default();
        for (handle, finished) in self.handles.iter().zip(&self.finished) {
            match finished {
                Some(stats) => total.add(stats),
                None => {
                    if let Ok(stats) = handle.stats() {
                        total.add(&stats);
                    }
                }
            }
        }
        total
    }
}

fn stop_all(handles: &[Handle]) {
    for handle in handles {
        // One that has ended already answers NotConnected: nothing to stop.
        let _ = handle.stop();
    }
}

fn join_all(threads: Vec<JoinHandle<()>>) {
    for thread in threads {
        // The thread caught its own panic and reported it.
        let _ = thread.join();
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended_with(accepted: &[u64]) -> Outcome {
        let stats = accepted
            .iter()
            .map(|&accepted| Stats {
                accepted,
                ..Stats::default()
            })
            .collect();
        Outcome {
            stats,
            forced: false,
        }
    }

    #[test]
    fn several_reactors_end_in_one_line_with_each_ones_share() {
        assert_eq!(ended_with(&[5]).spread(), None);
        assert_eq!(
            ended_with(&[104, 96]).spread().as_deref(),
            Some("2 reactors stopped; accepted per reactor: 104/96")
        );
        let many: Vec<u64> = (0..1000).rev().collect();
        assert_eq!(
            ended_with(&many).spread().as_deref(),
            Some("1000 reactors stopped; accepted per reactor: least 0, median 500, most 999")
        );
    }
}
