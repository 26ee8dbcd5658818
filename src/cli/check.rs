//! The checks of the command line, in one place: `check` refuses what
//! cannot work (exit status 2, the flag named), `surprises` warns about what
//! works but is likely not what was meant. Value parsers (`parse.rs`) refuse
//! a value that is wrong on its own (`--backlog 0`); these look at flags
//! together, and at what this build and this system can do. One refusal
//! needs the address a relay is bound to, and is made after binding:
//! an upstream that is the relay itself (`relay.rs`).

use std::time::Duration;

use sockloop::bench;
use sockloop::codec::proxy::Version as ProxyVersion;
use sockloop::codec::{DEFAULT_MAX_FRAME_LEN, Framing};
use sockloop::reactor::Config;
use sockloop::sys::{self, Addr};

use super::Command;
use super::bench::BenchArgs;
use super::cert::CertArgs;
use super::hub::HubArgs;
use super::parse::{nonzero, parse_duration};
use super::relay::RelayArgs;
use super::server_args::{DEFAULT_FRAME_TIMEOUT, FrameLimits, ServerArgs, cpus};
use super::tls;
use super::tls_args::{BenchTlsArgs, TlsArgs, UpstreamTlsArgs};
use super::usage::{Usage, refuse};
use crate::server::METRICS_NAME;

impl Command {
    /// Refuses arguments that cannot work, before anything starts.
    pub(super) fn check(&self) -> Result<(), Usage> {
        match self {
            Command::Echo(args) => {
                args.server.check(false)?;
                match args.framing {
                    Framing::Raw => Ok(()),
                    framing => args.limits.codec(framing).map(drop),
                }
            }
            Command::Relay(args) => args.check(),
            // Raw "frames" are whatever one read returned: relayed, they would
            // interleave senders mid-message.
            Command::Hub(HubArgs {
                framing: Framing::Raw,
                ..
            }) => refuse("hub needs a --framing with message boundaries, not raw"),
            Command::Hub(args) => {
                args.server.check(false)?;
                args.limits.codec(args.framing).map(drop)
            }
            Command::Bench(args) => args.check(),
            Command::Cert(args) => args.check(),
        }
    }

    /// What to warn about before starting.
    pub(super) fn surprises(&self) -> Vec<String> {
        match self {
            Command::Echo(args) => {
                let mut warnings = args.server.surprises(false);
                if args.framing == Framing::Raw {
                    warnings.extend(args.limits.unused_with_raw());
                }
                warnings
            }
            Command::Relay(args) => {
                let mut warnings = args.server.surprises(args.upstream_tls.on());
                warnings.extend(args.send_proxy_surprise());
                warnings
            }
            Command::Hub(args) => args.server.surprises(false),
            Command::Bench(_) | Command::Cert(_) => Vec::new(),
        }
    }
}

/// The longest `--busy-poll` that is still a short spin.
const LONGEST_SPIN: Duration = Duration::from_millis(1);

impl ServerArgs {
    /// Refuses server flags that cannot work together or here;
    /// `upstream_tls`: a relay speaks TLS to its upstreams.
    fn check(&self, upstream_tls: bool) -> Result<(), Usage> {
        if self.pin && !sys::PIN {
            return refuse(
                "--pin needs sched_setaffinity(2), which only Linux has: run without it",
            );
        }
        if let Some(timeout) = self.tcp_user_timeout.and_then(nonzero)
            && !sys::USER_TIMEOUT
        {
            return refuse(format!(
                "--tcp-user-timeout {timeout:?} needs TCP_USER_TIMEOUT, which only Linux has: \
                 run without it (--tcp-keepalive finds dead peers of idle connections, \
                 --write-timeout those that owe output)"
            ));
        }
        let count = self.reactors();
        let passed = self.passed.borrow();
        // Passed sockets are shared by the reactors (a dup each), Unix-domain too.
        if count > 1 && passed.is_empty() && matches!(self.listen, Addr::Unix(_)) {
            return refuse(format!(
                "--threads {count} with a unix: listener: SO_REUSEPORT spreads TCP \
                 connections only, so a Unix-domain path takes one reactor (--threads 1)"
            ));
        }
        // One reactor's counters would be a fraction passed off as the whole.
        let metrics_passed = passed
            .iter()
            .any(|p| p.name.as_deref() == Some(METRICS_NAME));
        if count > 1 && (self.metrics.is_some() || metrics_passed) {
            return refuse(
                "--metrics serves one reactor's counters: not yet with --threads above 1",
            );
        }
        if !self.proxy_protocol_from.is_empty() && matches!(self.listen, Addr::Unix(_)) {
            return refuse(
                "--proxy-protocol-from with a unix: listener: a Unix-domain peer has no \
                 address to match against the list (use --proxy-protocol)",
            );
        }
        self.tls.check(upstream_tls)
    }

    /// Server values that are legal but likely not what was meant, as
    /// warnings; `upstream_tls` as for [`check`](Self::check).
    fn surprises(&self, upstream_tls: bool) -> Vec<String> {
        let defaults = Config::default();
        let mut warnings = Vec::new();
        if self.high_watermark < defaults.read_chunk {
            warnings.push(format!(
                "--high-watermark {} is less than one read ({} bytes): the reply to a \
                 single read can pass it, and that peer stops being read",
                self.high_watermark, defaults.read_chunk
            ));
        }
        if self.hold_replies > defaults.event_capacity {
            warnings.push(format!(
                "--hold-replies {} is more than the {} events one wait returns: the end \
                 of each wait sends what is held, so it means \"hold for the whole wait\"",
                self.hold_replies, defaults.event_capacity
            ));
        }
        if let Some(spin) = self.busy_poll.filter(|spin| *spin > LONGEST_SPIN) {
            warnings.push(format!(
                "--busy-poll {spin:?} spins that long before each sleep: a reactor with \
                 any traffic keeps its core busy (tens of µs are usual)"
            ));
        }
        let cpus = cpus();
        if self.threads > cpus {
            warnings.push(format!(
                "--threads {} is more than the {cpus} CPUs this process may use: \
                 reactors share cores, and each holds descriptors of its own",
                self.threads
            ));
        }
        warnings.extend(self.handshake_surprise(upstream_tls));
        warnings.extend(self.proxy_surprise());
        warnings
    }

    /// `--proxy-protocol` believing every source, on a listener that more
    /// than this host can reach: any of them may name any client.
    fn proxy_surprise(&self) -> Option<String> {
        let local = match &self.listen {
            Addr::Ip(ip) => ip.ip().to_canonical().is_loopback(),
            Addr::Unix(_) => true,
        };
        let passed = !self.passed.borrow().is_empty();
        if !self.proxy_protocol || !self.proxy_protocol_from.is_empty() || local || passed {
            return None;
        }
        Some(format!(
            "--proxy-protocol on {}, which more than this host can reach: any client that \
             can connect may send a header naming any address; name your balancers with \
             --proxy-protocol-from CIDR,...",
            self.listen
        ))
    }

    /// A handshake timeout longer than the idle timeout, where there are
    /// handshakes (TLS, on either side, or a PROXY header).
    fn handshake_surprise(&self, upstream_tls: bool) -> Option<String> {
        let handshake = self.tls.handshake_timeout;
        let proxied = self.proxy_protocol || !self.proxy_protocol_from.is_empty();
        let handshakes = self.tls.on() || proxied || upstream_tls;
        let idle = nonzero(self.idle_timeout).filter(|idle| handshake > *idle && handshakes)?;
        Some(format!(
            "--handshake-timeout {handshake:?} is longer than --idle-timeout {idle:?}: \
             a client that stalls its handshake keeps its slot longer than an idle one"
        ))
    }
}

impl TlsArgs {
    /// Refuses a TLS listener where this build has no TLS, and ALPN with no
    /// TLS to carry it: on the listener, or (`upstream_tls`) a relay's
    /// towards its upstreams.
    fn check(&self, upstream_tls: bool) -> Result<(), Usage> {
        if self.on() {
            let flag = if self.tls_cert.is_empty() {
                "--tls-cert-dir"
            } else {
                "--tls-cert"
            };
            tls::available(flag)?;
        }
        if let (Some(ca), false) = (&self.tls_client_ca, self.on()) {
            return refuse(format!(
                "--tls-client-ca {} needs a TLS listener to ask clients for certificates: \
                 --tls-cert and --tls-key, or --tls-cert-dir",
                ca.display()
            ));
        }
        let (certs, keys) = (self.tls_cert.len(), self.tls_key.len());
        if certs != keys {
            return refuse(format!(
                "--tls-cert is given {certs} times and --tls-key {keys}: \
                 each certificate needs its key (the Nth key goes with the Nth certificate)"
            ));
        }
        if !self.alpn.is_empty() && !self.on() && !upstream_tls {
            return refuse(format!(
                "--alpn {} needs TLS to offer it in: --tls-cert and --tls-key, \
                 or --tls-cert-dir (or, in a relay, --upstream-tls)",
                self.alpn.join(",")
            ));
        }
        Ok(())
    }
}

impl FrameLimits {
    /// Warnings for limits set to no effect: raw bytes have no frames.
    fn unused_with_raw(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.max_frame != DEFAULT_MAX_FRAME_LEN {
            warnings.push("--max-frame has no effect with --framing raw".to_owned());
        }
        if Ok(self.frame_timeout) != parse_duration(DEFAULT_FRAME_TIMEOUT) {
            warnings.push("--frame-timeout has no effect with --framing raw".to_owned());
        }
        warnings
    }
}

impl RelayArgs {
    /// Refuses relay flags that cannot work, alone or together.
    fn check(&self) -> Result<(), Usage> {
        let upstream_tls = self.upstream_tls.on();
        self.server.check(upstream_tls)?;
        for upstream in &self.upstream {
            refuse_port_zero("--upstream", upstream)?;
        }
        if self.splice.is_some() && !sys::SPLICE {
            return refuse(
                "--splice needs splice(2), which only Linux has: run the relay without it",
            );
        }
        if self.splice.is_some() && (self.server.tls.on() || upstream_tls) {
            return refuse(
                "--splice moves bytes as they are, and TLS must decrypt them: use one or the other",
            );
        }
        self.upstream_tls.check(&self.upstream)
    }

    /// A PROXY header with no client address to put in it.
    fn send_proxy_surprise(&self) -> Option<String> {
        let (Some(version), Addr::Unix(_)) = (self.send_proxy, &self.server.listen) else {
            return None;
        };
        let header = match version {
            ProxyVersion::V1 => "`PROXY UNKNOWN`",
            ProxyVersion::V2 => "a LOCAL header",
        };
        Some(format!(
            "--send-proxy {version} with a unix: listener: clients have no IP \
             address to name, so each upstream gets {header}"
        ))
    }
}

impl UpstreamTlsArgs {
    /// Refuses `--upstream-tls` settings that cannot work with `upstreams`.
    fn check(&self, upstreams: &[Addr]) -> Result<(), Usage> {
        if !self.on() {
            return Ok(());
        }
        tls::available("--upstream-tls")?;
        self.roots()?;
        if let Some(name) = &self.upstream_name {
            return tls::check_server_name(name);
        }
        match upstreams.iter().find(|a| a.ip().is_none()) {
            Some(unix) => refuse(format!(
                "--upstream {unix} has no IP address to check a certificate against: give --upstream-name"
            )),
            None => Ok(()),
        }
    }
}

/// Refuses port 0 where something is to be connected to: only a listener
/// takes it (as "any free port"); a connect to it fails every time.
fn refuse_port_zero(flag: &str, addr: &Addr) -> Result<(), Usage> {
    match addr.ip() {
        Some(ip) if ip.port() == 0 => refuse(format!(
            "{flag} {addr}: port 0 cannot be connected to (it means \"any free port\" \
             only to a listener)"
        )),
        _ => Ok(()),
    }
}

impl BenchArgs {
    /// Refuses bench flags that cannot make a run (`bench::check` has the
    /// rules of the run itself).
    fn check(&self) -> Result<(), Usage> {
        if let Some(target) = &self.target {
            refuse_port_zero("--target", target)?;
        }
        self.tls.check()?;
        bench::check(&self.options(None)).map_err(Usage)
    }
}

impl BenchTlsArgs {
    /// Refuses `--tls` where this build has no TLS, or with no word on whom
    /// to trust.
    fn check(&self) -> Result<(), Usage> {
        if self.tls {
            tls::available("--tls")?;
            self.roots()?;
        }
        Ok(())
    }
}

impl CertArgs {
    /// Refuses `sockloop cert` where this build has no TLS (its `--name` is
    /// checked as it is parsed).
    fn check(&self) -> Result<(), Usage> {
        tls::available("sockloop cert")
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::super::Cli;
    use super::super::tests::assert_refusals;

    fn surprises(args: &[&str]) -> Vec<String> {
        let cli = Cli::try_parse_from([&["sockloop"], args].concat()).expect("valid arguments");
        cli.command.surprises()
    }

    #[test]
    fn legal_but_surprising_values_are_named_in_a_warning() {
        assert_eq!(surprises(&["echo"]), Vec::<String>::new());
        assert_eq!(
            surprises(&["echo", "--framing", "lines", "--max-frame", "1K"]).len(),
            0
        );
        let cases = [
            (
                &["echo", "--high-watermark", "4K"][..],
                "--high-watermark 4096",
            ),
            (
                &["hub", "--framing", "lines", "--hold-replies", "5000"],
                "--hold-replies 5000",
            ),
            (&["echo", "--max-frame", "1K"], "--max-frame"),
            (&["echo", "--frame-timeout", "5s"], "--frame-timeout"),
            (&["echo", "--busy-poll", "2ms"], "--busy-poll 2ms"),
            (
                &["echo", "--proxy-protocol", "--listen", "0.0.0.0:0"],
                "--proxy-protocol on 0.0.0.0:0, which more than this host can reach",
            ),
            (
                &["echo", "--proxy-protocol", "--idle-timeout", "5s"],
                "--handshake-timeout 10s is longer than --idle-timeout 5s",
            ),
            (
                &[
                    "relay",
                    "--upstream",
                    "127.0.0.1:1",
                    "--listen",
                    "unix:/tmp/relay.sock",
                    "--send-proxy",
                    "v2",
                ],
                "--send-proxy v2",
            ),
        ];
        for (args, flag) in cases {
            let warnings = surprises(args);
            assert!(
                warnings.len() == 1 && warnings[0].starts_with(flag),
                "{args:?}: {warnings:?}"
            );
        }
    }

    #[test]
    fn proxy_protocol_believing_everyone_is_quiet_on_loopback_and_a_list_silences_it() {
        for args in [
            &["echo", "--proxy-protocol"][..],
            &["echo", "--proxy-protocol", "--listen", "[::1]:0"],
            &["echo", "--proxy-protocol", "--listen", "unix:/tmp/e.sock"],
            &[
                "echo",
                "--proxy-protocol-from",
                "10.0.0.0/8",
                "--listen",
                "0.0.0.0:0",
            ],
        ] {
            assert_eq!(surprises(args), Vec::<String>::new(), "{args:?}");
        }
    }

    #[test]
    fn flags_that_cannot_work_together_are_refused_naming_them() {
        assert_refusals(&[
            (&["echo"], ""),
            (&["relay", "--upstream", "127.0.0.1:1"], ""),
            (&["bench"], ""),
            (
                &["relay", "--upstream", "[::1]:0"],
                "--upstream [::1]:0: port 0",
            ),
            (&["bench", "--depth", "0"], "--depth must be"),
            (
                &["bench", "--framing", "len:u8", "--size", "300"],
                "--framing len:u8 with --size 300",
            ),
            (&["echo", "--alpn", "h2"], "--alpn h2 needs TLS"),
            (
                &[
                    "hub",
                    "--framing",
                    "lines",
                    "--listen",
                    "unix:/tmp/h.sock",
                    "--proxy-protocol-from",
                    "10.0.0.1",
                ],
                "--proxy-protocol-from with a unix: listener",
            ),
        ]);
    }

    #[test]
    fn a_user_timeout_is_refused_where_the_os_has_none() {
        let refused = match sockloop::sys::USER_TIMEOUT {
            true => "",
            false => "--tcp-user-timeout 5s needs TCP_USER_TIMEOUT",
        };
        assert_refusals(&[
            (&["echo", "--tcp-user-timeout", "5s"], refused),
            (&["echo", "--tcp-user-timeout", "0"], ""),
        ]);
    }
}
