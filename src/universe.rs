//! The symbol universe: every symbol the gateway knows, with a name, the feed that
//! carries it and a reference price (the simulator's previous close).

use std::path::Path;

use serde::Serialize;

use crate::quote::{is_valid_symbol, Price};

/// The universe built into the binary: `feeds/universe.tsv`.
pub const BUILTIN_TSV: &str = include_str!("../feeds/universe.tsv");

/// One row of the universe file.
#[derive(Clone, Debug, Serialize)]
pub struct SymbolInfo {
    pub sym: String,
    pub name: String,
    pub feed: String,
    #[serde(skip)]
    pub ref_price: Price,
    #[serde(skip)]
    pub tick_size: Price,
}

impl SymbolInfo {
    /// A symbol a feed found at run time: named by itself, no reference price.
    pub fn discovered(sym: &str, feed: &str) -> SymbolInfo {
        SymbolInfo {
            sym: sym.to_owned(),
            name: sym.to_owned(),
            feed: feed.to_owned(),
            ref_price: Price(rust_decimal::Decimal::ZERO),
            tick_size: Price(rust_decimal::Decimal::new(1, 2)),
        }
    }
}

/// Why the universe could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum UniverseError {
    #[error("cannot read universe file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("universe line {line}: {problem}")]
    Line { line: usize, problem: String },
    #[error("universe is empty")]
    Empty,
}

/// Loads the universe from `file`, or the built-in one when `file` is empty.
pub fn load(file: &str) -> Result<Vec<SymbolInfo>, UniverseError> {
    if file.is_empty() {
        return parse(BUILTIN_TSV);
    }
    let text = std::fs::read_to_string(Path::new(file)).map_err(|source| UniverseError::Read {
        path: file.to_owned(),
        source,
    })?;
    parse(&text)
}

/// Parses the tab-separated universe: a header line, then
/// `sym  name  ref_price  tick_size  feed` per line.
pub fn parse(text: &str) -> Result<Vec<SymbolInfo>, UniverseError> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        let n = i + 1;
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |problem: String| UniverseError::Line { line: n, problem };
        let cols: Vec<&str> = line.split('\t').collect();
        if cols.len() != 5 {
            return Err(bad(format!(
                "expected 5 tab-separated columns, found {}",
                cols.len()
            )));
        }
        let sym = cols[0].trim();
        if !is_valid_symbol(sym) {
            return Err(bad(format!("invalid symbol {sym:?}")));
        }
        if !seen.insert(sym.to_owned()) {
            return Err(bad(format!("duplicate symbol {sym}")));
        }
        let ref_price: Price = cols[2].trim().parse().map_err(|e| bad(format!("{e}")))?;
        let tick_size: Price = cols[3].trim().parse().map_err(|e| bad(format!("{e}")))?;
        if tick_size.0 <= rust_decimal::Decimal::ZERO {
            return Err(bad("tick_size must be positive".into()));
        }
        out.push(SymbolInfo {
            sym: sym.to_owned(),
            name: cols[1].trim().to_owned(),
            ref_price,
            tick_size,
            feed: cols[4].trim().to_owned(),
        });
    }
    if out.is_empty() {
        return Err(UniverseError::Empty);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_universe_is_large_and_valid() {
        let u = parse(BUILTIN_TSV).unwrap();
        assert!(u.len() >= 500, "only {} symbols", u.len());
        assert!(u.iter().any(|s| s.sym == "AAPL"));
    }

    #[test]
    fn bad_lines_are_reported_with_their_number() {
        let err = parse("h\nAAPL\tApple\t1.00\t0.01\tsim\nbad sym\tX\t1\t0.01\tsim\n").unwrap_err();
        assert!(err.to_string().starts_with("universe line 3"), "{err}");
    }
}
