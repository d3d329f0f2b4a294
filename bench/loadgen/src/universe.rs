//! The symbol universe: fetched once from `GET /api/v1/symbols` with a tiny
//! HTTP/1.1 client (over TLS for wss), then each client's symbols picked from
//! its first U entries.

use std::io::ErrorKind;

use anyhow::{bail, Context};
use rand::rngs::SmallRng;
use rand::Rng;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::args::Distribution;

#[derive(Deserialize)]
struct Row {
    sym: String,
}

/// Fetches the symbol list over `stream`, connected to the gateway's listener
/// (`host` is the Host header).
pub async fn fetch_symbols(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    host: &str,
) -> anyhow::Result<Vec<String>> {
    let req = format!(
        "GET /api/v1/symbols HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    match stream.read_to_end(&mut raw).await {
        Ok(_) => {}
        // A TLS peer that closes without close_notify: the response is complete
        // when its body parses (`Connection: close` ends it either way).
        Err(e) if e.kind() == ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => return Err(e).context("GET /api/v1/symbols"),
    }
    let body = http_body(&raw).context("GET /api/v1/symbols")?;
    let rows: Vec<Row> =
        serde_json::from_slice(&body).context("GET /api/v1/symbols: body is not a symbol list")?;
    Ok(rows.into_iter().map(|r| r.sym).collect())
}

/// Checks the status is 200 and returns the body, de-chunked when needed.
pub fn http_body(raw: &[u8]) -> anyhow::Result<Vec<u8>> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("HTTP response without end of headers")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let body = &raw[split + 4..];
    let status = head.lines().next().unwrap_or_default();
    if !status.starts_with("http/1.1 200") && !status.starts_with("http/1.0 200") {
        bail!("the server answered {status:?}");
    }
    if !head.contains("transfer-encoding: chunked") {
        return Ok(body.to_vec());
    }
    let mut out = Vec::new();
    let mut rest = body;
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("bad chunked body")?;
        let size_text = std::str::from_utf8(&rest[..eol])?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).context("bad chunk size")?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        anyhow::ensure!(rest.len() >= size + 2, "truncated chunked body");
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// Picks `k` distinct symbol indices in `0..u`.
pub struct Picker {
    u: usize,
    k: usize,
    /// Zipf weights 1/rank (s = 1.0), or `None` for uniform.
    zipf: Option<Vec<f64>>,
}

impl Picker {
    pub fn new(u: usize, k: usize, distribution: Distribution) -> Picker {
        let zipf = match distribution {
            Distribution::Uniform => None,
            Distribution::Zipf => Some((1..=u).map(|rank| 1.0 / rank as f64).collect()),
        };
        Picker { u, k, zipf }
    }

    /// One client's symbols, as indices into the universe.
    pub fn pick(&self, rng: &mut SmallRng) -> Vec<usize> {
        match &self.zipf {
            None => rand::seq::index::sample(rng, self.u, self.k).into_vec(),
            Some(weights) => {
                // Weighted sampling without replacement (Efraimidis–Spirakis): the k
                // largest keys ln(r)/w win.
                let mut keyed: Vec<(f64, usize)> = weights
                    .iter()
                    .enumerate()
                    .map(|(i, w)| {
                        let r: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
                        (r.ln() / w, i)
                    })
                    .collect();
                keyed.select_nth_unstable_by(self.k - 1, |a, b| b.0.total_cmp(&a.0));
                keyed.truncate(self.k);
                keyed.into_iter().map(|(_, i)| i).collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn plain_and_chunked_bodies() {
        let plain = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n[]";
        assert_eq!(http_body(plain).unwrap(), b"[]");
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n[{}\r\n1\r\n]\r\n0\r\n\r\n";
        assert_eq!(http_body(chunked).unwrap(), b"[{}]");
        assert!(http_body(b"HTTP/1.1 503 Unavailable\r\n\r\n").is_err());
    }

    #[test]
    fn picks_are_distinct_and_in_range() {
        let mut rng = SmallRng::seed_from_u64(7);
        for dist in [Distribution::Uniform, Distribution::Zipf] {
            let p = Picker::new(50, 20, dist);
            for _ in 0..100 {
                let mut v = p.pick(&mut rng);
                assert_eq!(v.len(), 20);
                assert!(v.iter().all(|&i| i < 50));
                v.sort_unstable();
                v.dedup();
                assert_eq!(v.len(), 20);
            }
        }
    }

    #[test]
    fn zipf_favours_the_first_symbols() {
        let mut rng = SmallRng::seed_from_u64(3);
        let p = Picker::new(500, 5, Distribution::Zipf);
        let mut first = 0;
        let mut last = 0;
        for _ in 0..2000 {
            let v = p.pick(&mut rng);
            first += v.iter().filter(|&&i| i == 0).count();
            last += v.iter().filter(|&&i| i == 499).count();
        }
        assert!(first > 10 * last.max(1), "first {first}, last {last}");
    }
}
