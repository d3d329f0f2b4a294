//! Typed settings, loaded in layers by the `config` crate: the compiled-in
//! `config/default.toml`, an optional overlay file, then `TICKER__SECTION__KEY`
//! environment variables. [`Settings::validate`] names the first bad setting.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

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
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub host: String,
    pub port: u16,
    pub workers: usize,
    pub max_connections: usize,
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub shutdown_timeout: Duration,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSettings {
    pub max_symbols: usize,
    pub default_rate: f64,
    pub min_rate: f64,
    pub max_rate: f64,
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub heartbeat_interval: Duration,
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub client_timeout: Duration,
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
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
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub keepalive_interval: Duration,
}

/// Long-polling (`/poll`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PollSettings {
    /// A session not polled for this long expires (later polls get 410).
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub session_timeout: Duration,
    /// The longest `wait` a poll may ask for.
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub max_wait: Duration,
}

/// Socket.IO (`/socket.io/`): Engine.IO's heartbeat.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SocketIoSettings {
    /// The server pings this often (`pingInterval` in the handshake) ...
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub ping_interval: Duration,
    /// ... and a client that has not answered within this long after is gone
    /// (`pingTimeout`).
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub ping_timeout: Duration,
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
}

/// One feed adapter's settings; `kind` picks the adapter.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum FeedSettings {
    Sim(SimSettings),
    Replay(ReplaySettings),
}

impl FeedSettings {
    pub fn name(&self) -> &str {
        match self {
            FeedSettings::Sim(s) => &s.name,
            FeedSettings::Replay(r) => &r.name,
        }
    }
    pub fn kind(&self) -> &'static str {
        match self {
            FeedSettings::Sim(_) => "sim",
            FeedSettings::Replay(_) => "replay",
        }
    }
    pub fn start_timeout(&self) -> Duration {
        match self {
            FeedSettings::Sim(s) => s.start_timeout,
            FeedSettings::Replay(r) => r.start_timeout,
        }
    }
}

fn default_start_timeout() -> Duration {
    Duration::from_secs(5)
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SimSettings {
    pub name: String,
    pub quotes_per_sec: f64,
    #[serde(default = "default_hot_fraction")]
    pub hot_fraction: f64,
    #[serde(default = "default_hot_share")]
    pub hot_share: f64,
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub symbols: Vec<String>,
    #[serde(
        default = "default_start_timeout",
        deserialize_with = "de_duration",
        serialize_with = "ser_duration"
    )]
    pub start_timeout: Duration,
    /// Every symbol's opening quote is published at once; the market starts moving
    /// this long after (lets a benchmark connect its clients on a quiet feed).
    #[serde(
        default,
        deserialize_with = "de_duration",
        serialize_with = "ser_duration"
    )]
    pub start_delay: Duration,
}

fn default_hot_fraction() -> f64 {
    0.02
}
fn default_hot_share() -> f64 {
    0.5
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReplaySettings {
    pub name: String,
    pub file: PathBuf,
    #[serde(default = "default_speed")]
    pub speed: f64,
    #[serde(default, rename = "loop")]
    pub looping: bool,
    #[serde(
        default = "default_start_timeout",
        deserialize_with = "de_duration",
        serialize_with = "ser_duration"
    )]
    pub start_timeout: Duration,
}

fn default_speed() -> f64 {
    1.0
}

/// Parses "250ms", "15s", "2m", "1h" (or a bare number of seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration such as \"250ms\" or \"15s\""))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        other => return Err(format!("unknown duration unit {other:?} in {s:?}")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("{s:?} is not a valid duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A duration as the settings files write it: "250ms", "15s".
fn ser_duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        s.serialize_str(&format!("{}s", ms / 1000))
    } else {
        s.serialize_str(&format!("{ms}ms"))
    }
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

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Secs(f64),
    }
    match Raw::deserialize(d)? {
        Raw::Text(s) => parse_duration(&s).map_err(serde::de::Error::custom),
        Raw::Secs(n) => parse_duration(&n.to_string()).map_err(serde::de::Error::custom),
    }
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
                if SECRET_WORDS.contains(&last.as_str()) {
                    *v = toml::Value::String("<redacted>".into());
                } else {
                    redact(v);
                }
            }
        }
        toml::Value::Array(a) => a.iter_mut().for_each(redact),
        _ => {}
    }
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
        if self.sse.keepalive_interval.is_zero() {
            return Err(invalid("sse.keepalive_interval", "must be above zero"));
        }
        if self.poll.session_timeout <= self.poll.max_wait {
            return Err(invalid(
                "poll.session_timeout",
                "must be longer than poll.max_wait",
            ));
        }
        if self.server.max_connections == 0 {
            return Err(invalid("server.max_connections", "must be at least 1"));
        }
        let mut names = std::collections::HashSet::new();
        for (i, f) in self.feeds.iter().enumerate() {
            let key = |k: &str| format!("feeds[{i}].{k}");
            if f.name().is_empty() {
                return Err(invalid(&key("name"), "must not be empty"));
            }
            if !names.insert(f.name().to_owned()) {
                return Err(invalid(
                    &key("name"),
                    format!("duplicate feed name {:?}", f.name()),
                ));
            }
            match f {
                FeedSettings::Sim(sim) => {
                    if !(sim.quotes_per_sec.is_finite() && sim.quotes_per_sec > 0.0) {
                        return Err(invalid(&key("quotes_per_sec"), "must be a positive number"));
                    }
                    if !(0.0..=1.0).contains(&sim.hot_fraction) {
                        return Err(invalid(&key("hot_fraction"), "must lie between 0 and 1"));
                    }
                    if !(0.0..=1.0).contains(&sim.hot_share) {
                        return Err(invalid(&key("hot_share"), "must lie between 0 and 1"));
                    }
                }
                FeedSettings::Replay(r) => {
                    if !(r.speed.is_finite() && r.speed >= 0.0) {
                        return Err(invalid(&key("speed"), "must be 0 (no pacing) or positive"));
                    }
                    if !r.file.exists() {
                        return Err(invalid(
                            &key("file"),
                            format!("{} does not exist", r.file.display()),
                        ));
                    }
                }
            }
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
    fn durations_parse() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("soon").is_err());
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
    }
}
