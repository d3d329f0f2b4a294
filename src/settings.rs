//! Typed settings, loaded in layers by the `config` crate: the compiled-in
//! `config/default.toml`, an optional overlay file, then `TICKER__SECTION__KEY`
//! environment variables. [`Settings::validate`] names the first bad setting.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::auth::AuthSettings;
pub use crate::bus::PublishSettings;
pub use crate::duration::parse_duration;
pub use crate::feeds::FeedSettings;
pub use crate::tls::TlsSettings;

/// The defaults, compiled in so the binary runs from any directory.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// A problem with the settings, phrased to fit on one line.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot load settings: {0}")]
    Load(#[from] config::ConfigError),
    #[error("invalid setting {key}: {problem}")]
    Invalid { key: String, problem: String },
}

fn invalid(key: &str, problem: impl Into<String>) -> SettingsError {
    SettingsError::Invalid {
        key: key.to_owned(),
        problem: problem.into(),
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub session: SessionSettings,
    pub universe: UniverseSettings,
    pub sse: SseSettings,
    pub poll: PollSettings,
    pub socketio: SocketIoSettings,
    #[serde(default)]
    pub bench: BenchSettings,
    #[serde(default)]
    pub log: LogSettings,
    #[serde(default)]
    pub feeds: Vec<FeedSettings>,
    #[serde(default)]
    pub publish: PublishSettings,
    #[serde(default)]
    pub auth: AuthSettings,
    #[serde(default)]
    pub tls: TlsSettings,
    #[serde(default)]
    pub webrtc: WebRtcSettings,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub host: String,
    pub port: u16,
    pub workers: usize,
    pub max_connections: usize,
    #[serde(with = "crate::duration")]
    pub shutdown_timeout: Duration,
    /// Web pages (origins) that may use the gateway from a browser; empty: no
    /// check and no CORS headers.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Most connections at once from one IP address when authentication is off
    /// (0: no limit).
    #[serde(default)]
    pub max_connections_per_ip: u32,
    /// A second port, on `host`, serving only `/healthz`, `/readyz` and
    /// `/metrics` (plain HTTP) from a thread of its own; absent: none (0
    /// picks a free port).
    #[serde(default)]
    pub admin_port: Option<u16>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSettings {
    pub max_symbols: usize,
    pub default_rate: f64,
    pub min_rate: f64,
    pub max_rate: f64,
    #[serde(with = "crate::duration")]
    pub heartbeat_interval: Duration,
    #[serde(with = "crate::duration")]
    pub client_timeout: Duration,
    #[serde(with = "crate::duration")]
    pub write_stall_timeout: Duration,
    pub max_frame_bytes: usize,
    pub client_msgs_per_sec: f64,
    pub client_msgs_burst: u32,
}

/// Server-Sent Events (`GET /sse`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SseSettings {
    /// A comment line goes out this often so proxies keep the stream open.
    #[serde(with = "crate::duration")]
    pub keepalive_interval: Duration,
}

/// Long-polling (`/poll`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PollSettings {
    /// A session not polled for this long expires (later polls get 410).
    #[serde(with = "crate::duration")]
    pub session_timeout: Duration,
    /// The longest `wait` a poll may ask for.
    #[serde(with = "crate::duration")]
    pub max_wait: Duration,
}

/// Socket.IO (`/socket.io/`): Engine.IO's heartbeat.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SocketIoSettings {
    /// The server pings this often (`pingInterval` in the handshake) ...
    #[serde(with = "crate::duration")]
    pub ping_interval: Duration,
    /// ... and a client that has not answered within this long after is gone
    /// (`pingTimeout`).
    #[serde(with = "crate::duration")]
    pub ping_timeout: Duration,
    /// Test-only, never in production: `/socket.io/` (and `/engine.io/`)
    /// answer as the public Engine.IO and Socket.IO protocol test suites
    /// expect (an echo) instead of serving quotes.
    #[serde(default)]
    pub conformance: bool,
}

/// WebRTC DataChannels (`POST /webrtc/offer` and one UDP port for every peer).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebRtcSettings {
    pub enabled: bool,
    /// The UDP port every peer's datagrams use (on `server.host`); 0 picks a
    /// free one.
    pub udp_port: u16,
    /// The address put in the answer's candidate; empty: `server.host` (which
    /// must then be a concrete address, not 0.0.0.0).
    pub public_ip: String,
    /// A subscribed symbol nothing was sent for in this long is sent again
    /// (within its `max_rate`), so a lost message is repaired.
    #[serde(with = "crate::duration")]
    pub refresh_interval: Duration,
    /// A peer that sent no datagram for this long is dropped.
    #[serde(with = "crate::duration")]
    pub idle_timeout: Duration,
    /// Tests only: this share of the datagrams the gateway sends is dropped
    /// instead (0 ≤ x < 1), drawn from a random source seeded with
    /// `test_drop_seed` so a run can be repeated.
    pub test_drop_fraction: f64,
    pub test_drop_seed: u64,
}

impl Default for WebRtcSettings {
    fn default() -> Self {
        WebRtcSettings {
            enabled: false,
            udp_port: 8090,
            public_ip: String::new(),
            refresh_interval: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(30),
            test_drop_fraction: 0.0,
            test_drop_seed: 0,
        }
    }
}

impl WebRtcSettings {
    /// The address the answer's candidate carries for a socket bound to
    /// `bound`: `public_ip`, else the bound address itself.
    pub fn candidate_ip(&self, bound: std::net::IpAddr) -> Result<std::net::IpAddr, String> {
        if !self.public_ip.is_empty() {
            return self
                .public_ip
                .parse()
                .map_err(|_| format!("{:?} is not an IP address", self.public_ip));
        }
        if bound.is_unspecified() {
            return Err(format!(
                "must be set when server.host is {bound} (the candidate needs a real address)"
            ));
        }
        Ok(bound)
    }

    fn validate(&self, host: &str) -> Result<(), SettingsError> {
        if !self.enabled {
            return Ok(());
        }
        if self.refresh_interval.is_zero() {
            return Err(invalid("webrtc.refresh_interval", "must be above zero"));
        }
        if self.idle_timeout.is_zero() {
            return Err(invalid("webrtc.idle_timeout", "must be above zero"));
        }
        if !(0.0..1.0).contains(&self.test_drop_fraction) {
            return Err(invalid(
                "webrtc.test_drop_fraction",
                "must be at least 0 and below 1",
            ));
        }
        // A host name cannot go into a candidate: public_ip must name the address.
        let bound = host.parse().unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
        self.candidate_ip(bound)
            .map(|_| ())
            .map_err(|e| invalid("webrtc.public_ip", e))
    }
}

/// Benchmark-only switches; leave them off in production.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BenchSettings {
    /// Stamp every snapshot/update with `ti`, the ingest time in µs since the Unix
    /// epoch, so a load generator on the same host can measure feed→client latency.
    #[serde(default)]
    pub ingest_stamp: bool,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UniverseSettings {
    pub file: String,
    /// Most symbols feeds with `add_symbols` may add at run time.
    #[serde(default)]
    pub max_added: usize,
}

/// Logging: `format` text (the default) or json (one object per line);
/// `level` a tracing filter such as "info" or "ticker_gateway=debug,info".
/// `RUST_LOG`, when set, wins over `level`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// A setting whose name ends in one of these words (`jwt_secret`, `key`) holds a
/// secret and is never printed.
const SECRET_WORDS: [&str; 4] = ["secret", "password", "token", "key"];

/// Replaces the value of every setting that holds a secret with "<redacted>".
fn redact(value: &mut toml::Value) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t.iter_mut() {
                let last = k
                    .rsplit(['_', '-'])
                    .next()
                    .unwrap_or(k)
                    .to_ascii_lowercase();
                // Only text can hold a secret (`allow_query_token` is a switch).
                if SECRET_WORDS.contains(&last.as_str()) && v.is_str() {
                    *v = toml::Value::String("<redacted>".into());
                } else {
                    redact(v);
                }
            }
        }
        toml::Value::Array(a) => a.iter_mut().for_each(redact),
        toml::Value::String(text) => {
            if let Some(hidden) = without_url_password(text) {
                *text = hidden;
            }
        }
        _ => {}
    }
}

/// `scheme://user:password@host…` with the password redacted (a bus URL may
/// carry one); `None` for anything else.
fn without_url_password(text: &str) -> Option<String> {
    let (scheme, rest) = text.split_once("://")?;
    let at = rest.find('@')?;
    let userinfo = &rest[..at];
    if userinfo.contains('/') {
        return None; // the '@' is past the authority
    }
    let (user, _password) = userinfo.split_once(':')?;
    Some(format!("{scheme}://{user}:<redacted>{}", &rest[at..]))
}

impl Settings {
    /// The effective settings as TOML, secrets redacted (`--check-config`).
    pub fn to_redacted_toml(&self) -> String {
        // unwrap: every settings type serializes (plain data, durations as strings).
        let mut value = toml::Value::try_from(self).expect("unwrap: settings serialize");
        redact(&mut value);
        toml::to_string(&value).expect("unwrap: a TOML value prints")
    }

    /// Loads the layers: defaults, then `overlay` (if any), then the environment.
    pub fn load(overlay: Option<&Path>) -> Result<Settings, SettingsError> {
        Self::load_with(overlay, &[])
    }

    /// Like [`Settings::load`], with extra TOML layers applied last (used by tests).
    pub fn load_with(overlay: Option<&Path>, extra: &[&str]) -> Result<Settings, SettingsError> {
        let mut b = config::Config::builder().add_source(config::File::from_str(
            DEFAULT_TOML,
            config::FileFormat::Toml,
        ));
        if let Some(path) = overlay {
            if !path.exists() {
                return Err(invalid(
                    "--config",
                    format!("file {} does not exist", path.display()),
                ));
            }
            b = b.add_source(config::File::from(path).format(config::FileFormat::Toml));
        }
        b = b.add_source(
            config::Environment::with_prefix("TICKER")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true),
        );
        for layer in extra {
            b = b.add_source(config::File::from_str(layer, config::FileFormat::Toml));
        }
        let settings: Settings = b.build()?.try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks the values the types cannot, naming the first bad setting.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(invalid(
                "log.level",
                format!(
                    "{:?} is not a level or filter such as \"info\"",
                    self.log.level
                ),
            ));
        }
        let s = &self.session;
        if s.max_symbols == 0 {
            return Err(invalid("session.max_symbols", "must be at least 1"));
        }
        if s.max_symbols > crate::hub::MAX_INBOX_SLOTS {
            return Err(invalid(
                "session.max_symbols",
                format!("must be at most {}", crate::hub::MAX_INBOX_SLOTS),
            ));
        }
        if !(s.min_rate.is_finite() && s.min_rate > 0.0) {
            return Err(invalid("session.min_rate", "must be a positive number"));
        }
        if !(s.max_rate.is_finite() && s.max_rate >= s.min_rate) {
            return Err(invalid(
                "session.max_rate",
                "must be a number at least session.min_rate",
            ));
        }
        if !(s.default_rate >= s.min_rate && s.default_rate <= s.max_rate) {
            return Err(invalid(
                "session.default_rate",
                "must lie between session.min_rate and session.max_rate",
            ));
        }
        if s.heartbeat_interval.is_zero() {
            return Err(invalid("session.heartbeat_interval", "must be above zero"));
        }
        if s.client_timeout <= s.heartbeat_interval {
            return Err(invalid(
                "session.client_timeout",
                "must be longer than session.heartbeat_interval",
            ));
        }
        if s.write_stall_timeout.is_zero() {
            return Err(invalid("session.write_stall_timeout", "must be above zero"));
        }
        if s.max_frame_bytes < 128 {
            return Err(invalid("session.max_frame_bytes", "must be at least 128"));
        }
        if !(s.client_msgs_per_sec.is_finite() && s.client_msgs_per_sec > 0.0) {
            return Err(invalid(
                "session.client_msgs_per_sec",
                "must be a positive number",
            ));
        }
        if s.client_msgs_burst == 0 {
            return Err(invalid("session.client_msgs_burst", "must be at least 1"));
        }
        if self.socketio.ping_interval.is_zero() || self.socketio.ping_timeout.is_zero() {
            return Err(invalid(
                "socketio.ping_interval",
                "ping_interval and ping_timeout must be above zero",
            ));
        }
        if let Err((key, problem)) = crate::auth::Authenticator::load(&self.auth) {
            return Err(invalid(&key, problem));
        }
        if let Err((key, problem)) = crate::tls::Certificates::load(&self.tls) {
            return Err(invalid(&key, problem));
        }
        if self.sse.keepalive_interval.is_zero() {
            return Err(invalid("sse.keepalive_interval", "must be above zero"));
        }
        if self.poll.session_timeout <= self.poll.max_wait {
            return Err(invalid(
                "poll.session_timeout",
                "must be longer than poll.max_wait",
            ));
        }
        for o in &self.server.allowed_origins {
            crate::http::origins::Origins::check(o)
                .map_err(|e| invalid("server.allowed_origins", e))?;
        }
        self.webrtc.validate(&self.server.host)?;
        if self.server.max_connections == 0 {
            return Err(invalid("server.max_connections", "must be at least 1"));
        }
        if self.feeds.len() > crate::hub::MAX_RANKED_FEEDS {
            return Err(invalid(
                "feeds",
                format!("at most {} feeds", crate::hub::MAX_RANKED_FEEDS),
            ));
        }
        let mut names = std::collections::HashSet::new();
        for (i, f) in self.feeds.iter().enumerate() {
            let key = |k: &str| format!("feeds[{i}].{k}");
            if !names.insert(f.name().to_owned()) {
                return Err(invalid(
                    &key("name"),
                    format!("duplicate feed name {:?}", f.name()),
                ));
            }
            f.validate().map_err(|e| invalid(&key(e.key), e.problem))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_load_and_validate() {
        let s = Settings::load_with(None, &[]).unwrap();
        assert_eq!(s.server.port, 8080);
        assert_eq!(s.feeds.len(), 1);
        assert_eq!(s.feeds[0].kind(), "sim");
        assert_eq!(s.session.write_stall_timeout, Duration::from_secs(10));
    }

    #[test]
    fn bad_values_name_the_setting() {
        let err = Settings::load_with(None, &["[session]\nmax_rate = 0.01"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("session.max_rate"), "{err}");
        let err = Settings::load_with(None, &["[session]\nclient_timeout = \"5 parsecs\""])
            .unwrap_err()
            .to_string();
        assert!(err.contains("client_timeout"), "{err}");
        let err = Settings::load_with(None, &["[session]\nmax_symbols = 600000"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("session.max_symbols") && err.contains("524288"),
            "{err}"
        );
    }

    #[test]
    fn webrtc_settings_are_checked_only_when_enabled() {
        let s = Settings::load_with(None, &[]).unwrap();
        assert!(!s.webrtc.enabled);
        assert_eq!(s.webrtc.refresh_interval, Duration::from_secs(1));
        let err = |layer: &str| Settings::load_with(None, &[layer]).unwrap_err().to_string();
        let e = err("[webrtc]\nenabled = true\nrefresh_interval = \"0s\"");
        assert!(e.contains("webrtc.refresh_interval"), "{e}");
        let e = err("[webrtc]\nenabled = true\npublic_ip = \"example.com\"");
        assert!(e.contains("webrtc.public_ip"), "{e}");
        let e = err("[server]\nhost = \"0.0.0.0\"\n[webrtc]\nenabled = true");
        assert!(e.contains("webrtc.public_ip"), "{e}");
        let e = err("[webrtc]\nenabled = true\ntest_drop_fraction = 1.0");
        assert!(e.contains("webrtc.test_drop_fraction"), "{e}");
        let e = err("[webrtc]\nudp_port = 70000");
        assert!(e.contains("udp_port"), "{e}");
        Settings::load_with(
            None,
            &["[server]\nhost = \"0.0.0.0\"\n[webrtc]\nenabled = true\npublic_ip = \"203.0.113.7\""],
        )
        .unwrap();
    }

    #[test]
    fn overlay_feeds_replace_the_default_list() {
        let s = Settings::load_with(
            None,
            &["[[feeds]]\nname = \"r\"\nkind = \"replay\"\nfile = \"feeds/sample-session.ndjson\"\n"],
        )
        .unwrap();
        assert_eq!(s.feeds.len(), 1);
        assert_eq!(s.feeds[0].kind(), "replay");
    }

    #[test]
    fn a_bad_feed_entry_is_refused_by_its_key() {
        let feed = |keys: &str| {
            let layer = format!("[[feeds]]\nname = \"s\"\n{keys}\n");
            Settings::load_with(None, &[&layer])
                .unwrap_err()
                .to_string()
        };
        for (keys, named) in [
            (
                "kind = \"sim\"\nquotes_per_sec = 5.0\nquotes_per_second = 5.0",
                "quotes_per_second",
            ),
            (
                "kind = \"sim\"\nquotes_per_sec = 0",
                "feeds[0].quotes_per_sec",
            ),
            ("kind = \"telegraph\"", "telegraph"),
            ("kind = \"nats\"\nurl = \"\"", "feeds[0].url"),
            (
                "kind = \"nats\"\nurl = \"nats://x\"\nfollow = \"some\"",
                "some",
            ),
        ] {
            let err = feed(keys);
            assert!(err.contains(named), "{keys}: {err}");
        }
    }

    #[test]
    fn effective_settings_print_as_toml_that_loads_back_with_secrets_redacted() {
        let s =
            Settings::load_with(None, &["[session]\nwrite_stall_timeout = \"250ms\"\n"]).unwrap();
        let text = s.to_redacted_toml();
        assert!(text.contains("write_stall_timeout = \"250ms\""), "{text}");
        let again = Settings::load_with(None, &[&text]).unwrap();
        assert_eq!(again.to_redacted_toml(), text);
        let mut v: toml::Value = toml::from_str(
            "[auth]\njwt_secret = \"hunter2\"\n[[auth.keys]]\nkey = \"raw-key\"\nsub = \"x\"\n",
        )
        .unwrap();
        redact(&mut v);
        let printed = toml::to_string(&v).unwrap();
        assert!(
            !printed.contains("hunter2") && !printed.contains("raw-key"),
            "{printed}"
        );
        assert!(printed.contains("sub = \"x\""), "{printed}");
        // A password inside a URL goes too; the rest of the URL stays.
        let mut v: toml::Value =
            toml::from_str("[publish]\nurl = \"nats://ticker:s3cret@bus:4222\"\n").unwrap();
        redact(&mut v);
        let printed = toml::to_string(&v).unwrap();
        assert!(
            printed.contains("nats://ticker:<redacted>@bus:4222"),
            "{printed}"
        );
        assert_eq!(without_url_password("nats://bus:4222"), None);
        assert_eq!(without_url_password("http://host/a@b"), None);
    }
}
