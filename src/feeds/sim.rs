//! `sim`: a synthetic market over the universe. Prices random-walk on each symbol's
//! tick size with bid < ask; trades print at the bid or ask and add to the day's
//! volume, high and low. A few "hot" symbols take a large share of the quotes, as in
//! real markets. The same seed gives the same sequence of events.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::{AdapterSettings, Directory, FeedAdapter, FeedContext, FeedError, Invalid};
use crate::hub::SymbolId;
use crate::quote::{Fields, Price};

/// `kind = "sim"`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SimSettings {
    /// Total quote rate.
    pub quotes_per_sec: f64,
    /// Share of symbols that are busy ...
    #[serde(default = "default_hot_fraction")]
    pub hot_fraction: f64,
    /// ... and the share of quotes they get.
    #[serde(default = "default_hot_share")]
    pub hot_share: f64,
    /// The same seed gives the same market.
    #[serde(default)]
    pub seed: u64,
    /// Only these symbols (default: the universe rows of this feed, else all).
    #[serde(default)]
    pub symbols: Vec<String>,
    /// Every symbol's opening quote is published at once; the market starts moving
    /// this long after (lets a benchmark connect its clients on a quiet feed).
    #[serde(default, with = "crate::duration")]
    pub start_delay: Duration,
}

fn default_hot_fraction() -> f64 {
    0.02
}
fn default_hot_share() -> f64 {
    0.5
}

impl AdapterSettings for SimSettings {
    type Adapter = SimFeed;

    fn validate(&self) -> Result<(), Invalid> {
        if !(self.quotes_per_sec.is_finite() && self.quotes_per_sec > 0.0) {
            return Err(Invalid::new("quotes_per_sec", "must be a positive number"));
        }
        if !(0.0..=1.0).contains(&self.hot_fraction) {
            return Err(Invalid::new("hot_fraction", "must lie between 0 and 1"));
        }
        if !(0.0..=1.0).contains(&self.hot_share) {
            return Err(Invalid::new("hot_share", "must lie between 0 and 1"));
        }
        Ok(())
    }

    fn build(&self, ctx: &FeedContext) -> Result<SimFeed, FeedError> {
        SimFeed::new(self, &ctx.status().name, &ctx.directory())
    }
}

/// One simulated symbol, prices in ticks.
#[derive(Clone, Debug)]
struct SimSymbol {
    id: SymbolId,
    tick: Decimal,
    bid: i64,
    ask: i64,
    bid_size: u64,
    ask_size: u64,
    last: i64,
    volume: u64,
    open: i64,
    high: i64,
    low: i64,
    prev_close: i64,
}

impl SimSymbol {
    fn price(&self, ticks: i64) -> Price {
        Price(self.tick * Decimal::from(ticks))
    }

    fn full(&self) -> Fields {
        Fields {
            bp: Some(self.price(self.bid)),
            bs: Some(self.bid_size),
            ap: Some(self.price(self.ask)),
            as_: Some(self.ask_size),
            lp: Some(self.price(self.last)),
            ls: Some(100),
            v: Some(self.volume),
            o: Some(self.price(self.open)),
            h: Some(self.price(self.high)),
            l: Some(self.price(self.low)),
            pc: Some(self.price(self.prev_close)),
        }
    }
}

/// The simulated market.
pub struct SimFeed {
    rng: SmallRng,
    symbols: Vec<SimSymbol>,
    hot: usize,
    hot_share: f64,
    quotes_per_sec: f64,
    start_delay: Duration,
}

fn lot(rng: &mut SmallRng, max_lots: u64) -> u64 {
    rng.random_range(1..=max_lots) * 100
}

impl SimFeed {
    /// Builds the market: `symbols` if given, else the universe rows whose `feed`
    /// column names this feed, else the whole universe.
    pub fn new(settings: &SimSettings, name: &str, hub: &Directory) -> Result<SimFeed, FeedError> {
        let mut rng = SmallRng::seed_from_u64(settings.seed);
        let ids: Vec<SymbolId> = if !settings.symbols.is_empty() {
            settings
                .symbols
                .iter()
                .map(|s| {
                    hub.lookup(s).ok_or_else(|| {
                        FeedError::Fatal(format!("sim symbol {s:?} is not in the universe"))
                    })
                })
                .collect::<Result<_, _>>()?
        } else {
            let own: Vec<SymbolId> = hub
                .universe()
                .enumerate()
                .filter(|(_, info)| info.feed == name)
                .map(|(i, _)| i as SymbolId)
                .collect();
            if own.is_empty() {
                (0..hub.len() as SymbolId).collect()
            } else {
                own
            }
        };
        let infos: Vec<_> = hub.universe().collect();
        let symbols = ids
            .into_iter()
            .map(|id| {
                let info = infos[id as usize];
                let tick = info.tick_size.0;
                let pc = (info.ref_price.0 / tick)
                    .round()
                    .try_into()
                    .unwrap_or(100i64)
                    .max(2);
                // Open within about 1 % of the previous close.
                let drift = (pc / 100).max(1);
                let open = (pc + rng.random_range(-drift..=drift)).max(2);
                let bid = open - 1;
                let spread = rng.random_range(1..=3);
                SimSymbol {
                    id,
                    tick,
                    bid,
                    ask: bid + spread,
                    bid_size: lot(&mut rng, 20),
                    ask_size: lot(&mut rng, 20),
                    last: open,
                    volume: lot(&mut rng, 50) * 10,
                    open,
                    high: open,
                    low: open,
                    prev_close: pc,
                }
            })
            .collect::<Vec<_>>();
        let hot = ((symbols.len() as f64 * settings.hot_fraction).ceil() as usize)
            .clamp(1, symbols.len().max(1));
        Ok(SimFeed {
            rng,
            symbols,
            hot,
            hot_share: settings.hot_share,
            quotes_per_sec: settings.quotes_per_sec,
            start_delay: settings.start_delay,
        })
    }

    fn pick(&mut self) -> usize {
        let n = self.symbols.len();
        if self.hot >= n || self.rng.random_bool(self.hot_share) {
            self.rng.random_range(0..self.hot.min(n))
        } else {
            self.rng.random_range(self.hot..n)
        }
    }

    /// Advances one symbol by one event and returns the fields that changed.
    fn step(&mut self, i: usize) -> Fields {
        let rng = &mut self.rng;
        let s = &mut self.symbols[i];
        let mut f = Fields::default();
        if rng.random_bool(0.55) {
            // Quote change: the bid walks (pulled gently back toward the open),
            // the spread stays 1–3 ticks.
            let pull = if s.bid > s.open + s.open / 50 {
                -1
            } else if s.bid < s.open - s.open / 50 {
                1
            } else {
                0
            };
            let step = (rng.random_range(-1..=1) + pull).clamp(-1, 1);
            let new_bid = (s.bid + step).max(1);
            let new_ask = new_bid + rng.random_range(1..=3);
            if new_bid != s.bid {
                s.bid = new_bid;
                f.bp = Some(s.price(s.bid));
            }
            if new_ask != s.ask {
                s.ask = new_ask;
                f.ap = Some(s.price(s.ask));
            }
            if rng.random_bool(0.7) {
                s.bid_size = lot(rng, 20);
                f.bs = Some(s.bid_size);
            }
            if rng.random_bool(0.7) {
                s.ask_size = lot(rng, 20);
                f.as_ = Some(s.ask_size);
            }
            if f.is_empty() {
                s.bid_size += 100;
                f.bs = Some(s.bid_size);
            }
        } else {
            // Trade at the bid or the ask.
            let px = if rng.random_bool(0.5) { s.bid } else { s.ask };
            let size = lot(rng, 10);
            s.last = px;
            s.volume += size;
            f.lp = Some(s.price(px));
            f.ls = Some(size);
            f.v = Some(s.volume);
            if px > s.high {
                s.high = px;
                f.h = Some(s.price(px));
            }
            if px < s.low {
                s.low = px;
                f.l = Some(s.price(px));
            }
        }
        f
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl FeedAdapter for SimFeed {
    async fn run(mut self, mut ctx: FeedContext) -> Result<(), FeedError> {
        if self.symbols.is_empty() {
            return Err(FeedError::Fatal("sim feed has no symbols".into()));
        }
        // Every symbol opens with a full quote, so snapshots exist at once.
        let t = now_ms();
        for s in &self.symbols {
            ctx.publish_fields(s.id, t, &s.full());
        }
        ctx.accepted(self.symbols.len() as u64);
        if !self.start_delay.is_zero() {
            tokio::select! {
                _ = ctx.shutdown_signal() => return Ok(()),
                _ = tokio::time::sleep(self.start_delay) => {}
            }
        }

        let mut ticker = tokio::time::interval(Duration::from_millis(5));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = tokio::time::Instant::now();
        let mut budget = 0.0f64;
        loop {
            tokio::select! {
                _ = ctx.shutdown_signal() => return Ok(()),
                _ = ticker.tick() => {}
            }
            let now = tokio::time::Instant::now();
            budget += self.quotes_per_sec * now.duration_since(last).as_secs_f64();
            last = now;
            // Never burst more than a second's worth after a stall.
            budget = budget.min(self.quotes_per_sec.max(1.0));
            let n = budget.floor() as u64;
            if n == 0 {
                continue;
            }
            budget -= n as f64;
            let t = now_ms();
            for _ in 0..n {
                let i = self.pick();
                let fields = self.step(i);
                ctx.publish_fields(self.symbols[i].id, t, &fields);
            }
            ctx.accepted(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Hub;
    use crate::universe::{parse, BUILTIN_TSV};

    fn settings(seed: u64) -> SimSettings {
        SimSettings {
            quotes_per_sec: 100.0,
            hot_fraction: 0.02,
            hot_share: 0.5,
            seed,
            symbols: vec![],
            start_delay: Duration::ZERO,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn opening_quotes_at_once_then_quiet_for_the_start_delay() {
        use std::sync::Arc;
        let hub = Arc::new(Hub::new(parse(BUILTIN_TSV).unwrap()));
        let mut s = settings(3);
        s.quotes_per_sec = 1000.0;
        s.start_delay = Duration::from_secs(10);
        let feed = SimFeed::new(&s, "sim", &Directory::new(&hub)).unwrap();
        let ids: Vec<SymbolId> = feed.symbols.iter().map(|x| x.id).collect();
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let status = super::super::FeedSettings {
            name: "sim".into(),
            start_timeout: Duration::from_secs(1),
            add_symbols: false,
            priority: 0,
            stale_after: Duration::ZERO,
            adapter: super::super::FeedKind::Sim(s.clone()),
        };
        let ctx = FeedContext::new(
            hub.clone(),
            Arc::new(super::super::FeedStatus::new(&status)),
            Arc::new(crate::metrics::Metrics::new()),
            shutdown,
        );
        let total_seq = || -> u64 { ids.iter().map(|&id| hub.latest(id).unwrap().seq).sum() };
        let check = async {
            // The clock is paused: these sleeps only advance it.
            tokio::time::sleep(Duration::from_secs(9)).await;
            assert_eq!(total_seq(), ids.len() as u64, "only the opening quotes");
            tokio::time::sleep(Duration::from_secs(2)).await;
            assert!(total_seq() > ids.len() as u64, "moving after the delay");
            stop.send(true).unwrap();
        };
        let (ran, ()) = tokio::join!(feed.run(ctx), check);
        assert!(ran.is_ok());
    }

    #[test]
    fn same_seed_same_market_and_bid_below_ask() {
        let hub = Hub::new(parse(BUILTIN_TSV).unwrap());
        let mut a = SimFeed::new(&settings(7), "sim", &Directory::new(&hub)).unwrap();
        let mut b = SimFeed::new(&settings(7), "sim", &Directory::new(&hub)).unwrap();
        let mut hot_hits = 0;
        for _ in 0..20_000 {
            let (ia, ib) = (a.pick(), b.pick());
            assert_eq!(ia, ib);
            assert_eq!(a.step(ia), b.step(ib));
            let s = &a.symbols[ia];
            assert!(s.bid < s.ask && s.bid >= 1);
            assert!(s.low <= s.last && s.last <= s.high);
            if ia < a.hot {
                hot_hits += 1;
            }
        }
        // About half the events go to the hot 2 % of symbols.
        assert!((8_000..12_000).contains(&hot_hits), "{hot_hits}");
        let p = a.symbols[0].price(18910);
        assert_eq!(p.to_string(), "189.10");
    }
}
