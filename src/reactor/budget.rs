//! The output budget: what all of a reactor's connections may hold together.
//!
//! Each connection's backlog is bounded by the high watermark, but a server
//! with many peers that do not read would still hold one watermark each.
//! The reactor keeps a running total ([`Stats::buffered_output`], brought
//! up to date where a connection's output changes: an add and a subtract,
//! never a scan) and acts in two steps:
//!
//! - over half of [`Config::max_buffered`], flow control tightens: a
//!   connection whose output backs up at all stops being read until it has
//!   drained (both watermarks are zero; see `State::after_write`), so peers
//!   that read keep being served and the rest stop adding to the total;
//! - over all of it at the end of a turn, the connections with the largest
//!   backlogs are shed (closed with RST, their output lost), largest first,
//!   until the total is back at half. Only then is the list scanned.
//!
//! [`Stats::buffered_output`]: super::Stats::buffered_output
//! [`Config::max_buffered`]: super::Config::max_buffered

use std::cmp::Reverse;
use std::time::Duration;

use log::warn;

use super::Reactor;
use super::close::CloseReason;
use super::conn::Phase;
use super::service::Service;
use super::state::State;
use super::token::ConnId;
use crate::sys::os::Os;

/// At most one warning about paused connections this often.
const PAUSE_WARNING_EVERY: Duration = Duration::from_secs(5);

/// Connections a shedding warning names; it counts the rest.
const NAMED: usize = 3;

impl State {
    /// `id` just stopped being read because the output of all connections
    /// is over half the budget: counted, and said at most once per
    /// [`PAUSE_WARNING_EVERY`], with how many more since the last time.
    #[cold]
    pub(crate) fn paused_for_budget(&mut self, id: ConnId) {
        self.stats.budget_pauses += 1;
        let Some(untold) = self.pause_warning.due(self.stamp, PAUSE_WARNING_EVERY) else {
            return;
        };
        let others = match untold {
            0 => String::new(),
            n => format!(" (and {n} more since the last such line)"),
        };
        warn!(
            "output of all connections is {} bytes, over half of the budget of {}: \
             {id} {}{others} not read until its output drains",
            self.stats.buffered_output,
            self.config.max_buffered,
            self.peer_label(id),
        );
    }
}

impl<S: Service, O: Os> Reactor<S, O> {
    /// Sheds connections if the output of all of them is over the budget,
    /// once a turn, when the turn's writes are done: the ones with the
    /// largest backlogs, largest first, until the total is back at half the
    /// budget, said in one line. Their unsent output is lost: they close
    /// with RST, so that the peer cannot take a cut stream for a whole one.
    pub(super) fn enforce_budget(&mut self) {
        if self.state.stats.buffered_output <= self.state.config.max_buffered {
            return;
        }
        let before = self.state.stats.buffered_output;
        let target = self.state.config.max_buffered / 2;
        let mut backlogs: Vec<(usize, ConnId)> = (self.state.conns.iter())
            .filter(|(_, c)| c.phase != Phase::Closed && !c.output().is_empty())
            .map(|(id, c)| (c.output().len(), id))
            .collect();
        backlogs.sort_unstable_by_key(|&(bytes, _)| Reverse(bytes));
        let mut named = Vec::new();
        let mut shed = 0;
        for (bytes, id) in backlogs {
            if self.state.stats.buffered_output <= target {
                break;
            }
            // A relay closes the other side of a pair with it.
            if self.state.conns.live(id).is_none() {
                continue;
            }
            if named.len() < NAMED {
                named.push(format!("{id} {} ({bytes})", self.state.peer_label(id)));
            }
            shed += 1;
            self.state.reset(id, CloseReason::OverBudget);
            self.apply();
        }
        let more = match shed - named.len() {
            0 => String::new(),
            n => format!(" and {n} more"),
        };
        warn!(
            "output of all connections is {before} bytes, over the budget of {}: \
             shed {shed}, largest backlog first: {}{more}; {} bytes left",
            self.state.config.max_buffered,
            named.join(", "),
            self.state.stats.buffered_output,
        );
    }
}
