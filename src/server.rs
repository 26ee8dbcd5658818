//! A server's start-up: the descriptor limit, the accept queue's cap, the
//! reactors (one per thread, each with its own listener), the metrics
//! listener, and the supervisor that runs them until a signal stops them.
//!
//! The command line (`cli/`) says what to start as a [`Plan`]. [`listen`]
//! is the one place a listener comes from: bound here, or passed by the
//! parent (systemd's socket activation, `LISTEN_FDS`). Every reactor
//! serves every passed socket, through a descriptor of its own (a dup):
//! `SO_REUSEPORT` cannot give each its own listener on a socket this
//! process did not bind, so they share one accept queue, and a new
//! connection wakes each reactor that waits on it; one accepts it.

// A TLS listener from its files, or, built without the `tls` feature, the
// refusal of one.
#[cfg_attr(not(feature = "tls"), path = "server/tls_off.rs")]
mod tls;

mod pid_file;

use std::fmt;
use std::io::{self, Write};
use std::path::PathBuf;
use std::time::Duration;

use log::{info, warn};
use pid_file::PidFile;
use sockloop::reactor::{Config, Reactor, Serve, Service};
use sockloop::sys::os::Listen;
use sockloop::sys::{self, Addr, ListenOptions, Listener, PassedListener};
use sockloop::threads::{self, Supervisor, Upgrade};

/// The name in `LISTEN_FDNAMES` of a passed socket that serves the
/// metrics rather than the service.
pub const METRICS_NAME: &str = "metrics";

/// What to start: where and how to listen, and how many reactors.
pub struct Plan {
    /// Where to listen, unless sockets were passed; the first reactor binds
    /// it, the others share its port.
    pub listen: Addr,
    /// The listening sockets the parent passed: those named
    /// [`METRICS_NAME`] serve the metrics, the others the service.
    pub passed: Vec<PassedListener>,
    /// Serve TLS there, with these settings.
    pub tls: Option<ListenerTls>,
    /// The accept queue asked for (the kernel's cap cuts it).
    pub backlog: i32,
    /// How many reactors, each on a thread of its own.
    pub reactors: usize,
    /// Serve the counters at `http://ADDR/metrics` from the first reactor.
    pub metrics: Option<Addr>,
    /// How the reactors' threads run.
    pub threads: threads::Options,
    /// Where to write this process's id once it listens.
    pub pid_file: Option<PathBuf>,
    /// How long a process started by SIGUSR2 has to say it serves.
    pub ready_timeout: Duration,
}

/// A TLS listener's settings, as files.
pub struct ListenerTls {
    /// Certificate chains and their private keys (PEM), the first served
    /// unless another's names match the name a client asks for.
    pub certs: Vec<(PathBuf, PathBuf)>,
    /// More pairs, after those: each `NAME.pem` and `NAME.key` in this
    /// directory, by name.
    pub cert_dir: Option<PathBuf>,
    /// Ask every client for a certificate signed by a CA in this PEM file.
    pub client_ca: Option<PathBuf>,
    /// ALPN protocols to offer, most preferred first.
    pub alpn: Vec<String>,
}

/// A server's reactors, listening, and the supervisor that will run them.
pub struct Bound<S: Service> {
    supervisor: Supervisor,
    /// One per thread, each with its own listener.
    pub reactors: Vec<Reactor<S>>,
    /// Where the listeners are (with the port picked, for port 0).
    pub local: Addr,
    /// Written now that it listens, removed as it ends.
    pid_file: Option<PidFile>,
}

/// Starts the server of `plan` (see [`bind`]) and serves until a signal
/// stops it.
pub fn serve<S>(
    plan: &Plan,
    config: Config,
    make: impl FnMut() -> S,
    fds_per_client: u64,
) -> io::Result<()>
where
    S: Service + Send + 'static,
    S::Conn: Send,
{
    bind(plan, config, make, fds_per_client)?.run(&plan.threads)
}

/// Makes the reactors of a server that keeps about `fds_per_client`
/// descriptors per client, each with its own `make()` service and its own
/// listener; serving starts with [`Bound::run`].
pub fn bind<S: Service>(
    plan: &Plan,
    config: Config,
    mut make: impl FnMut() -> S,
    fds_per_client: u64,
) -> io::Result<Bound<S>> {
    // Before any thread exists, so that no thread takes these signals the default way.
    let mut supervisor = Supervisor::new()?;
    match sys::Notifier::from_env() {
        Ok(Some(notifier)) => supervisor.notify(notifier),
        Ok(None) => {}
        Err(e) => warn!("{e}: not telling the service manager READY=1 or STOPPING=1"),
    }
    let fd_limit = raise_descriptor_limits()?;
    let (backlog, note) = backlog_within_somaxconn(plan.backlog, sys::somaxconn());
    let options = ListenOptions {
        backlog,
        reuse_port: plan.reactors > 1,
    };
    let mut reactors = Vec::with_capacity(plan.reactors);
    let mut addr = plan.listen.clone();
    let mut handed_over = passed_to_hand_over(plan)?;
    for _ in 0..plan.reactors {
        let mut reactor = Reactor::new(config.clone(), make())?;
        // After the first, the port it was given.
        addr = listen(&mut reactor, &addr, plan, &options, &mut handed_over)?;
        reactors.push(reactor);
    }
    info!("accept queue: backlog {backlog} ({note})");
    log_listeners(plan, &addr);
    listen_metrics(&mut reactors[0], plan, &options, &mut handed_over)?;
    supervisor.upgrade_on_usr2(Upgrade::new(handed_over, plan.ready_timeout)?);
    log_room(fd_limit, fds_per_client);
    let pid_file = plan.pid_file.as_deref().map(PidFile::write).transpose()?;
    Ok(Bound {
        supervisor,
        reactors,
        local: addr,
        pid_file,
    })
}

/// Raises the descriptor limit as far as it goes and grows the descriptor
/// table up front; returns the limit.
fn raise_descriptor_limits() -> io::Result<u64> {
    let fd_limit = sys::raise_fd_limit()?;
    // Past this many the table's doublings are few, each one wait; up to it
    // the table costs at most about half a megabyte.
    if let Err(e) = sys::grow_fd_table(fd_limit.min(1 << 16)) {
        warn!("could not grow the descriptor table up front: {e}");
    }
    Ok(fd_limit)
}

/// The name in `LISTEN_FDNAMES` of a socket this process bound for the
/// service, when it hands it to its successor.
const SERVICE_NAME: &str = "listen";

/// A descriptor of each passed socket, to hand to a successor under the
/// name it came with.
fn passed_to_hand_over(plan: &Plan) -> io::Result<Vec<(String, Listener)>> {
    let named =
        |p: &PassedListener| Ok((p.name.clone().unwrap_or_default(), p.listener.try_clone()?));
    plan.passed.iter().map(named).collect()
}

/// Gives `reactor` its listeners, serving TLS if the plan says so, and
/// returns the address of the first: the sockets passed, if any (a
/// descriptor of its own for each), else one bound on `addr`, which goes
/// to `handed_over` (the reactor serves a descriptor of its own).
fn listen<S: Service>(
    reactor: &mut Reactor<S>,
    addr: &Addr,
    plan: &Plan,
    options: &ListenOptions,
    handed_over: &mut Vec<(String, Listener)>,
) -> io::Result<Addr> {
    let passed = passed_for(plan, false);
    if passed.is_empty() {
        let bound = bind_kept(addr, options, SERVICE_NAME, handed_over, |own| {
            serve_on(reactor, own, plan)
        });
        return bound.map_err(|e| io::Error::new(e.kind(), format!("listen on {addr}: {e}")));
    }
    let mut first = None;
    for listener in passed {
        let local = listener.local_addr().clone();
        let served = listener
            .try_clone()
            .and_then(|own| serve_on(reactor, own, plan));
        let served = served.map_err(|e| io::Error::new(e.kind(), format!("serve on {local}: {e}")));
        first.get_or_insert(served?);
    }
    Ok(first.unwrap_or_else(|| addr.clone()))
}

/// Binds `addr` and has `serve` serve a descriptor of it; the original goes
/// to `handed_over` as `name`, kept for a successor (and the one to remove
/// a Unix-domain socket file when it closes).
fn bind_kept(
    addr: &Addr,
    options: &ListenOptions,
    name: &str,
    handed_over: &mut Vec<(String, Listener)>,
    serve: impl FnOnce(Listener) -> io::Result<Addr>,
) -> io::Result<Addr> {
    let listener = Listener::bind(addr, options)?;
    let served = serve(listener.try_clone()?)?;
    handed_over.push((name.to_owned(), listener));
    Ok(served)
}

/// Has `reactor` serve `listener`, with TLS if the plan says so.
fn serve_on<S: Service>(
    reactor: &mut Reactor<S>,
    listener: Listener,
    plan: &Plan,
) -> io::Result<Addr> {
    match &plan.tls {
        None => reactor.adopt(listener, Serve::Service),
        Some(tls) => tls::adopt(reactor, listener, tls),
    }
}

/// The passed sockets that serve the metrics (`metrics`), or the service.
fn passed_for(plan: &Plan, metrics: bool) -> Vec<&Listener> {
    let is_metrics = |p: &&PassedListener| p.name.as_deref() == Some(METRICS_NAME);
    let chosen = plan.passed.iter().filter(|p| is_metrics(p) == metrics);
    chosen.map(|p| &p.listener).collect()
}

/// The metrics listener, on the first reactor: a passed socket named
/// `metrics`, else one bound on `--metrics`, else none.
fn listen_metrics<S: Service>(
    reactor: &mut Reactor<S>,
    plan: &Plan,
    options: &ListenOptions,
    handed_over: &mut Vec<(String, Listener)>,
) -> io::Result<()> {
    let served = match (passed_for(plan, true).first(), &plan.metrics) {
        (Some(passed), _) => passed
            .try_clone()
            .and_then(|own| reactor.adopt(own, Serve::Metrics)),
        (None, Some(metrics)) => bind_kept(metrics, options, METRICS_NAME, handed_over, |own| {
            reactor.adopt(own, Serve::Metrics)
        })
        .map_err(|e| io::Error::new(e.kind(), format!("--metrics {metrics}: {e}"))),
        (None, None) => return Ok(()),
    };
    info!("metrics on http://{}/metrics", served?);
    Ok(())
}

/// Says where the reactors listen: sockets passed, or bound (with several
/// reactors, each its own with SO_REUSEPORT).
fn log_listeners(plan: &Plan, addr: &Addr) {
    let passed = passed_for(plan, false);
    let count = plan.reactors;
    if !passed.is_empty() {
        let addrs: Vec<String> = passed.iter().map(|l| l.local_addr().to_string()).collect();
        let shared = match count {
            1 => String::new(),
            n => format!(", shared by {n} reactors"),
        };
        info!(
            "serving on the listening sockets passed (LISTEN_FDS): {}{shared}; --listen {} is not bound",
            addrs.join(", "),
            plan.listen
        );
    } else if count > 1 {
        info!("{count} reactors, each with its own listener on {addr} (SO_REUSEPORT)");
    }
}

/// Logs how many clients the descriptors left make room for, once every
/// descriptor of the server's own is open: stdio, the supervisor's, and each
/// reactor's poller, wake-up, listener and spare (and the metrics listener).
fn log_room(fd_limit: u64, fds_per_client: u64) {
    let each = match fds_per_client {
        1 => String::new(),
        n => format!(" at {n} descriptors each"),
    };
    match sys::open_descriptors() {
        Ok(open) => info!(
            "file descriptor limit {fd_limit}, {open} in use: room for about {} clients{each}",
            fd_limit.saturating_sub(open) / fds_per_client
        ),
        Err(e) => info!("file descriptor limit {fd_limit} (how many are in use is unknown: {e})"),
    }
}

/// The backlog `listen` is given: what was asked, cut down to the kernel's
/// cap (which would cut it silently anyway), and how to say so at start.
fn backlog_within_somaxconn(asked: i32, somaxconn: Option<u32>) -> (i32, String) {
    match somaxconn.map(|cap| i32::try_from(cap).unwrap_or(i32::MAX)) {
        Some(cap) if asked > cap => (
            cap,
            format!("somaxconn {cap}; --backlog {asked} asked for more: raise net.core.somaxconn"),
        ),
        Some(cap) => (asked, format!("somaxconn {cap}")),
        None => (asked, "somaxconn unknown here".to_owned()),
    }
}

impl<S> Bound<S>
where
    S: Service + Send + 'static,
    S::Conn: Send,
{
    /// Serves, each reactor on a thread of its own, until a signal stops
    /// them; says where it listens first, on stdout.
    pub fn run(self, options: &threads::Options) -> io::Result<()> {
        let local = self.local;
        // Scripts and tests read this line to learn the port: print it exactly once, at once.
        print_line(format_args!("listening on {local}"))?;
        info!("serving on {local}");
        let outcome = self.supervisor.run(self.reactors, options);
        drop(self.pid_file);
        let outcome = outcome?;
        if let Some(spread) = outcome.spread() {
            info!("{spread}");
        }
        info!("stopped: {}", outcome.total());
        if outcome.forced {
            return Err(io::Error::other("shutdown cut short by a second signal"));
        }
        Ok(())
    }
}

/// Writes one line to stdout at once. A reader that has gone (`| head -1`)
/// took all it wanted: not an error, and no reason to stop.
pub fn print_line(line: impl fmt::Display) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    match writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        result => result.map_err(|e| io::Error::new(e.kind(), format!("stdout: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backlog_is_capped_by_somaxconn_and_the_note_says_so() {
        assert_eq!(
            backlog_within_somaxconn(4096, Some(4096)),
            (4096, "somaxconn 4096".to_owned())
        );
        assert_eq!(backlog_within_somaxconn(100, Some(4096)).0, 100);
        let (backlog, note) = backlog_within_somaxconn(10_000, Some(4096));
        assert_eq!(backlog, 4096);
        assert!(
            note.starts_with("somaxconn 4096; --backlog 10000"),
            "{note}"
        );
        assert_eq!(backlog_within_somaxconn(4096, None).0, 4096);
        // A cap beyond i32 (FreeBSD's is a u_int) never turns negative.
        assert_eq!(backlog_within_somaxconn(4096, Some(u32::MAX)).0, 4096);
    }
}
