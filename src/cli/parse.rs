//! The value parsers of the command line: sizes, durations, counts,
//! addresses and chart paths. Each refuses a value that is wrong on its own
//! (clap names the flag); flags that clash together are `check.rs`'s.

use std::path::PathBuf;
use std::time::Duration;

use log::info;
use sockloop::app::hub::federation::Target;
use sockloop::codec::cidr::{Cidr, CidrError};
use sockloop::sys::{Addr, Keepalive};

/// Wraps a value parser to refuse zero, for knobs where it means nothing sensible.
pub(super) fn refuse_zero<T: Default + PartialEq + 'static>(
    parse: fn(&str) -> Result<T, String>,
) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static {
    move |text| match parse(text)? {
        value if value == T::default() => Err("must be more than 0".to_owned()),
        value => Ok(value),
    }
}

/// Parses a plain count.
pub(super) fn parse_count(text: &str) -> Result<usize, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("not a count: {text:?}"))
}

/// Parses a count that fits in 32 bits.
pub(super) fn parse_u32(text: &str) -> Result<u32, String> {
    let count = parse_count(text)?;
    u32::try_from(count).map_err(|_| format!("too large: {text:?} (at most {})", u32::MAX))
}

/// Parses a rate per second: `10/s` (or a bare `10`), more than 0.
pub(super) fn parse_rate(text: &str) -> Result<u32, String> {
    let count = text.trim().strip_suffix("/s").unwrap_or(text);
    match parse_u32(count) {
        Ok(0) => Err("must be more than 0".to_owned()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("not a rate: {text:?} (say N/s, e.g. 20/s)")),
    }
}

/// Parses one block of addresses: `10.0.0.0/8`, `2001:db8::/32`, or a
/// bare address (one host).
pub(super) fn parse_cidr(text: &str) -> Result<Cidr, String> {
    text.parse().map_err(|e: CidrError| e.to_string())
}

/// The port Redis listens on unless told otherwise.
const REDIS_PORT: u16 = 6379;

/// Parses `redis://HOST[:PORT]/CHANNEL` or `unix:PATH/CHANNEL` (a Redis
/// Unix socket): the channel is the last `/` segment, non-empty and
/// without whitespace. A host name is looked up now.
pub(super) fn parse_federate(text: &str) -> Result<Target, String> {
    let expected = "expected redis://HOST:PORT/CHANNEL or unix:PATH/CHANNEL";
    let (server, channel) = text
        .rsplit_once('/')
        .ok_or_else(|| format!("no channel in {text:?}: {expected}"))?;
    if channel.is_empty() || channel.contains(char::is_whitespace) {
        let why = "the channel (after the last /) must be non-empty, without whitespace";
        return Err(format!("{why}: {text:?}"));
    }
    let addr = if let Some(host) = server.strip_prefix("redis://") {
        let has_port = host.rsplit_once(':').is_some_and(|(_, p)| !p.contains(']'));
        let host = match has_port {
            true => host.to_owned(),
            false => format!("{host}:{REDIS_PORT}"),
        };
        let found = Addr::resolve(&host).map_err(|e| e.to_string())?;
        found.into_iter().next().ok_or("no address")?
    } else if server.starts_with("unix:") {
        server
            .parse()
            .map_err(|e: sockloop::sys::AddrParseError| e.to_string())?
    } else {
        return Err(format!("{text:?}: {expected}"));
    };
    let channel = channel.to_owned();
    Ok(Target { addr, channel })
}

/// `text` split where its leading digits end: `("64", "KiB")`.
fn number_and_unit(text: &str) -> (&str, &str) {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    text.split_at(split)
}

/// Parses a byte count: `4096`, `64K`, `64KiB`, `1M`, `1MiB`, `1G` (binary units).
pub(super) fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let (digits, unit) = number_and_unit(text);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        other => return Err(format!("unknown unit {other:?} (use K, M or G)")),
    };
    let value: usize = digits
        .parse()
        .map_err(|_| format!("not a size: {text:?}"))?;
    value
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("too large: {text:?}"))
}

/// Parses a duration: `50us`, `500ms`, `30s`, `2m`, `1h`; a bare number is seconds.
pub(super) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (digits, unit) = number_and_unit(text);
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("not a duration: {text:?}"))?;
    let us_per_unit = match unit {
        "us" => 1,
        "ms" => 1_000,
        "" | "s" => 1_000_000,
        "m" => 60_000_000,
        "h" => 3_600_000_000,
        other => return Err(format!("unknown unit {other:?} (use us, ms, s, m or h)")),
    };
    value
        .checked_mul(us_per_unit)
        .map(Duration::from_micros)
        .ok_or_else(|| format!("too long: {text:?}"))
}

/// The largest keepalive time and count Linux takes (`MAX_TCP_KEEPIDLE`,
/// `MAX_TCP_KEEPINTVL`, `MAX_TCP_KEEPCNT`).
const MOST_KEEPALIVE_SECONDS: u64 = 32767;
const MOST_KEEPALIVE_PROBES: u32 = 127;

/// Parses `IDLE` or `IDLE,INTERVAL,COUNT` (`60s,10s,6`), or `off` (`0`),
/// which is an idle time of zero.
pub(super) fn parse_keepalive(text: &str) -> Result<Keepalive, String> {
    let text = text.trim();
    if text == "off" || text == "0" {
        let idle = Duration::ZERO;
        return Ok(Keepalive { idle, probes: None });
    }
    let parts: Vec<&str> = text.split(',').collect();
    let (idle, probes) = match parts[..] {
        [idle] => (keepalive_time(idle)?, None),
        [idle, interval, count] => {
            let count = count
                .trim()
                .parse()
                .ok()
                .filter(|n| (1..=MOST_KEEPALIVE_PROBES).contains(n))
                .ok_or_else(|| format!("COUNT {count:?}: 1 to {MOST_KEEPALIVE_PROBES} probes"))?;
            let probes = (keepalive_time(interval)?, count);
            (keepalive_time(idle)?, Some(probes))
        }
        _ => {
            return Err(format!(
                "{text:?}: IDLE or IDLE,INTERVAL,COUNT (60s,10s,6), or off"
            ));
        }
    };
    Ok(Keepalive { idle, probes })
}

/// A keepalive time: the kernel counts whole seconds, from one.
fn keepalive_time(text: &str) -> Result<Duration, String> {
    let time = parse_duration(text)?;
    let whole = time.subsec_nanos() == 0 && (1..=MOST_KEEPALIVE_SECONDS).contains(&time.as_secs());
    if !whole {
        return Err(format!(
            "{:?}: keepalive times are whole seconds, 1s to {MOST_KEEPALIVE_SECONDS}s",
            text.trim()
        ));
    }
    Ok(time)
}

/// A duration flag where 0 means "never": `None` for 0.
pub(super) fn nonzero(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

/// Parses an address, looking a host name up at once: `localhost:7878`
/// becomes the first address it resolves to.
pub(super) fn parse_addr(text: &str) -> Result<Addr, String> {
    let found = Addr::resolve(text).map_err(|e| e.to_string())?;
    if found.len() > 1 {
        info!("{text} resolves to {}: using {}", found.len(), found[0]);
    }
    Ok(found[0].clone())
}

/// An SVG file to write a chart to, in a directory that exists: checked
/// before the run, not found wanting after it.
pub(super) fn parse_plot_path(text: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(text);
    let svg = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("svg"));
    if !svg {
        return Err(format!(
            "the chart is SVG: name a file ending in .svg, not {text:?}"
        ));
    }
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.is_dir() => {
            Err(format!("no directory {} to write it in", dir.display()))
        }
        _ if path.is_dir() => Err(format!("{text} is a directory")),
        _ => Ok(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_federate_url_names_a_server_and_a_channel() {
        let tcp = parse_federate("redis://127.0.0.1:6380/chat").unwrap();
        assert_eq!(tcp.addr, "127.0.0.1:6380".parse().unwrap());
        assert_eq!(tcp.channel, "chat");
        let default_port = parse_federate("redis://[::1]/news").unwrap();
        assert_eq!(default_port.addr, "[::1]:6379".parse().unwrap());
        let unix = parse_federate("unix:/run/redis/redis.sock/chat").unwrap();
        assert_eq!(unix.addr, "unix:/run/redis/redis.sock".parse().unwrap());
        assert_eq!(unix.channel, "chat");
        for bad in [
            "redis://127.0.0.1:6379",
            "redis://127.0.0.1:6379/",
            "redis://127.0.0.1:6379/two words",
            "unix:/chat",
            "http://127.0.0.1:6379/chat",
            "127.0.0.1:6379/chat",
        ] {
            assert!(parse_federate(bad).is_err(), "{bad} was taken");
        }
    }

    #[test]
    fn a_plot_goes_to_a_file_in_a_directory_that_exists() {
        assert!(parse_plot_path("latency.svg").is_ok());
        assert!(parse_plot_path("/tmp/latency.svg").is_ok());
        assert!(parse_plot_path("/no/such/dir/latency.svg").is_err());
        assert!(parse_plot_path("/tmp").is_err());
        assert!(parse_plot_path("latency.png").is_err());
        assert!(parse_plot_path("latency").is_err());
        assert!(parse_plot_path("LATENCY.SVG").is_ok());
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("50us"), Ok(Duration::from_micros(50)));
        assert!(parse_duration("5 fortnights").is_err());
        assert!(parse_duration("ms").is_err());
    }

    #[test]
    fn rates_are_per_second_and_more_than_zero() {
        assert_eq!(parse_rate("20/s"), Ok(20));
        assert_eq!(parse_rate(" 5/s "), Ok(5));
        assert_eq!(parse_rate("7"), Ok(7));
        assert!(parse_rate("0/s").unwrap_err().contains("more than 0"));
        assert!(parse_rate("10/m").unwrap_err().contains("N/s"));
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("99999999999/s").is_err());
    }

    #[test]
    fn a_list_of_sources_is_blocks_of_addresses() {
        assert_eq!(parse_cidr("127.0.0.3").unwrap().to_string(), "127.0.0.3/32");
        assert_eq!(parse_cidr("fd00::/8").unwrap().to_string(), "fd00::/8");
        assert!(parse_cidr("10.0.0.0/40").is_err());
        assert!(parse_cidr("lb.example").is_err());
    }

    #[test]
    fn keepalive_takes_an_idle_time_or_all_three_in_whole_seconds() {
        let secs = Duration::from_secs;
        let probes = Some((secs(10), 6));
        let full = Keepalive {
            idle: secs(60),
            probes,
        };
        assert_eq!(parse_keepalive("60s,10s,6"), Ok(full));
        assert_eq!(parse_keepalive(" 1m, 10 ,6"), Ok(full));
        let idle_only = Keepalive {
            idle: secs(30),
            probes: None,
        };
        assert_eq!(parse_keepalive("30s"), Ok(idle_only));
        assert_eq!(parse_keepalive("off").map(|k| k.idle), Ok(Duration::ZERO));
        assert_eq!(parse_keepalive("0").map(|k| k.idle), Ok(Duration::ZERO));
        for bad in [
            "500ms",
            "1500ms",
            "60s,10s",
            "60s,10s,0",
            "60s,10s,200",
            "10h",
            "1s,1s,x",
        ] {
            assert!(parse_keepalive(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert!(parse_size("12parsecs").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
    }
}
