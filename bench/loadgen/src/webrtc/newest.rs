//! The newest `seq` per symbol, as a WebRTC client keeps it: a quote message
//! on the unreliable channel carries a symbol's whole state, so it is a
//! delivered update only when it brings a newer `seq` than the one held. The
//! first state of a symbol is its snapshot; a repeat (the gateway's refresh)
//! or an older state (reordered) is counted as other.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::Deserialize;

use crate::frame::Tally;

/// The keys read from a quote message (its type is always `snapshot`).
#[derive(Deserialize)]
struct State<'a> {
    #[serde(borrow)]
    sym: Cow<'a, str>,
    seq: u64,
    #[serde(default)]
    ti: Option<u64>,
}

pub struct Newest {
    seqs: HashMap<Box<str>, u64>,
}

impl Newest {
    pub fn with_capacity(symbols: usize) -> Newest {
        Newest {
            seqs: HashMap::with_capacity(symbols),
        }
    }

    /// Reads one quote message (a JSON array of states) into `tally`.
    pub fn read(
        &mut self,
        bytes: &[u8],
        now_us: u64,
        tally: &mut Tally,
    ) -> Result<(), serde_json::Error> {
        let states: Vec<State> = serde_json::from_slice(bytes)?;
        for s in states {
            match self.seqs.get_mut(&*s.sym) {
                None => {
                    self.seqs.insert(s.sym.into(), s.seq);
                    tally.snapshots += 1;
                }
                Some(held) if s.seq > *held => {
                    *held = s.seq;
                    tally.updates += 1;
                    if let Some(ti) = s.ti {
                        tally.latencies_us.push(now_us.saturating_sub(ti));
                    }
                }
                Some(_) => tally.others += 1,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_states_are_updates_repeats_and_older_ones_are_not() {
        let mut n = Newest::with_capacity(2);
        let mut t = Tally::default();
        let msg = br#"[{"type":"snapshot","sym":"A","seq":4,"bp":"1.10","ti":900},
            {"type":"snapshot","sym":"B","seq":1,"ti":900}]"#;
        n.read(msg, 1000, &mut t).unwrap();
        assert_eq!((t.snapshots, t.updates), (2, 0));
        let msg = br#"[{"type":"snapshot","sym":"A","seq":6,"ti":950},
            {"type":"snapshot","sym":"A","seq":5,"ti":940},
            {"type":"snapshot","sym":"B","seq":1,"ti":900}]"#;
        n.read(msg, 1000, &mut t).unwrap();
        assert_eq!((t.snapshots, t.updates, t.others), (2, 1, 2));
        assert_eq!(t.latencies_us, vec![50]);
        assert!(n.read(b"{}", 0, &mut t).is_err());
    }
}
