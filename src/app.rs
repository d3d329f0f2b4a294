//! [`Application`]: builds the gateway from [`Settings`] on an already bound
//! listener, runs it until a shutdown future resolves, then shuts down gracefully:
//! every WebSocket is closed with 1001, the feeds stop, the server drains.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_http::error::DispatchError;
use actix_http::{HttpService, Protocol};
use actix_service::{fn_service, map_config, ServiceFactoryExt};
use actix_web::dev::AppConfig;
use actix_web::{web, App};
use tokio::sync::Semaphore;

use crate::shutdown::Shutdown;

use crate::auth::Authenticator;
use crate::bus::Publisher;
use crate::feeds::{supervise, watch_silence, FeedContext, FeedStatus, Watched};
use crate::http::{self, ApiContext, ApiError};
use crate::hub::{FeedRank, Hub, Sources};
use crate::metrics::Metrics;
use crate::settings::Settings;
use crate::tls::Certificates;
use crate::transport::{self, TransportContext};
use crate::universe;

/// The running gateway's parts: what the feeds, the transports and the HTTP API
/// each get.
pub struct AppState {
    pub settings: Arc<Settings>,
    /// The TLS certificate (`None`: plain http and ws).
    pub certificates: Option<Arc<Certificates>>,
    pub hub: Arc<Hub>,
    pub metrics: Arc<Metrics>,
    pub feeds: Vec<Arc<FeedStatus>>,
    /// Each feed's rank among its symbols' sources (in `feeds` order).
    pub feed_ranks: Vec<FeedRank>,
    pub transport: Arc<TransportContext>,
    pub api: Arc<ApiContext>,
}

/// Binds `host:port`; the error names the address and the `setting`.
fn listen(host: &str, port: u16, setting: &str) -> anyhow::Result<TcpListener> {
    let addr = format!("{host}:{port}");
    TcpListener::bind(&addr)
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} ({setting}): {e}"))
}

/// A built, not yet running gateway.
pub struct Application {
    listener: TcpListener,
    /// `server.admin_port`'s listener.
    admin: Option<TcpListener>,
    state: Arc<AppState>,
}

impl Application {
    /// Loads the universe and binds `server.host:server.port` (port 0 picks one).
    pub fn build(settings: Settings) -> anyhow::Result<Application> {
        let listener = listen(&settings.server.host, settings.server.port, "server.port")?;
        Self::build_on(settings, listener)
    }

    /// Builds the gateway on an already bound listener.
    pub fn build_on(settings: Settings, listener: TcpListener) -> anyhow::Result<Application> {
        let admin = settings
            .server
            .admin_port
            .map(|port| listen(&settings.server.host, port, "server.admin_port"))
            .transpose()?;
        let universe = universe::load(&settings.universe.file)?;
        let ranking: Vec<(&str, i32)> = settings
            .feeds
            .iter()
            .map(|f| (f.name(), f.priority))
            .collect();
        let (sources, ranks) = Sources::new(&ranking);
        let hub =
            Arc::new(Hub::with_room(universe, settings.universe.max_added).with_sources(sources));
        let feeds: Vec<_> = settings
            .feeds
            .iter()
            .map(|f| Arc::new(FeedStatus::new(f)))
            .collect();
        let shutdown = Arc::new(Shutdown::default());
        let metrics = Arc::new(Metrics::new());
        metrics
            .connections_max
            .set(settings.server.max_connections as i64);
        let auth = Authenticator::load(&settings.auth)
            .map_err(|(key, problem)| anyhow::anyhow!("invalid setting {key}: {problem}"))?
            .map(Arc::new);
        let certificates = Certificates::load(&settings.tls)
            .map_err(|(key, problem)| anyhow::anyhow!("invalid setting {key}: {problem}"))?;
        let webrtc = transport::webrtc::WebRtc::bind(&settings, &metrics)?.map(Arc::new);
        let settings = Arc::new(settings);
        let origins = http::origins::Origins::new(&settings.server.allowed_origins);
        let transport = Arc::new(TransportContext {
            auth: auth.clone(),
            origins: origins.clone(),
            per_address: Default::default(),
            connections: Arc::new(Semaphore::new(settings.server.max_connections)),
            settings: settings.clone(),
            hub: hub.clone(),
            metrics: metrics.clone(),
            shutdown: shutdown.clone(),
            sessions: Default::default(),
            engines: Default::default(),
            webrtc,
        });
        let api = Arc::new(ApiContext {
            hub: hub.clone(),
            metrics: metrics.clone(),
            feeds: feeds.clone(),
            started: Instant::now(),
            shutdown: shutdown.clone(),
            auth,
            origins,
        });
        let state = Arc::new(AppState {
            settings,
            certificates,
            hub,
            metrics,
            feeds,
            feed_ranks: ranks,
            transport,
            api,
        });
        Ok(Application {
            listener,
            admin,
            state,
        })
    }

    /// The address the gateway listens on.
    pub fn local_addr(&self) -> SocketAddr {
        // unwrap: a bound TCP listener always has a local address.
        self.listener.local_addr().expect("unwrap: bound listener")
    }

    /// The address of `server.admin_port`'s listener, if there is one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Applies reloaded keys and certificate while the gateway runs (SIGHUP).
    pub fn reloader(&self) -> crate::reload::Reloader {
        crate::reload::Reloader::new(self.state.clone())
    }

    /// The shared state (for embedding and tests).
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Runs until `shutdown` resolves, then shuts down gracefully. Must be called
    /// inside an actix system (`actix_web::rt::System`).
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let state = self.state.clone();
        let settings = state.settings.clone();
        let addr = self.local_addr();

        // A publisher first: it seeds the hub with the bus's last values (so
        // `seq` continues) before the feeds publish anything.
        let publisher = settings.publish.enabled().then(|| {
            Publisher::start(
                settings.publish.clone(),
                state.hub.clone(),
                state.metrics.clone(),
                state.transport.shutdown.watch(),
            )
        });
        let (outbox, own_publisher, publisher_task) = match publisher {
            Some(p) => {
                let _ = p.ready.await;
                (Some(p.outbox), Some(p.id), Some(p.task))
            }
            None => (None, None, None),
        };

        let mut feed_tasks = Vec::new();
        let mut watched = Vec::new();
        for ((cfg, status), &rank) in settings
            .feeds
            .iter()
            .zip(&state.feeds)
            .zip(&state.feed_ranks)
        {
            state.metrics.register_feed(&status.name);
            // Quotes from the bus are not published back to it.
            let republish = if cfg.adapter.from_bus() {
                None
            } else {
                outbox.clone()
            };
            let ctx = FeedContext::new(
                state.hub.clone(),
                status.clone(),
                state.metrics.clone(),
                state.transport.shutdown.watch(),
            )
            .adding_symbols(cfg.add_symbols)
            .republishing(republish)
            .publishing_as(own_publisher.clone())
            .ranked(rank);
            feed_tasks.push(tokio::spawn(supervise(cfg.clone(), ctx)));
            if !cfg.stale_after.is_zero() {
                watched.push(Watched {
                    status: status.clone(),
                    rank,
                    stale_after: cfg.stale_after,
                });
            }
        }
        feed_tasks.push(tokio::spawn(watch_silence(
            state.hub.clone(),
            watched,
            state.transport.shutdown.watch(),
        )));

        // Ended long-polling sessions' ids are forgotten after a while.
        if let Some(webrtc) = &state.transport.webrtc {
            webrtc.start(state.transport.shutdown.watch());
        }

        let reaper = {
            let state = state.clone();
            let timeout = settings.poll.session_timeout;
            let every = timeout;
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    state.transport.sessions.reap(timeout);
                    state.transport.engines.reap(timeout);
                }
            })
        };

        let transport_data = web::Data::from(state.transport.clone());
        let api_data = web::Data::from(state.api.clone());
        let workers = match settings.server.workers {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let upgrades = state.transport.clone();
        // actix-web's HttpServer, plus an upgrade service: a WebSocket upgrade
        // hands its connection over to the gateway (see transport::ws::upgrade).
        let builder = actix_server::Server::build();
        // Idle keep-alive connections close when the server stops (as
        // actix-web's HttpServer arranges).
        let graceful = builder.graceful_shutdown_signal();
        let builder = builder
            .workers(workers)
            .disable_signals()
            .shutdown_timeout(settings.server.shutdown_timeout.as_secs().max(1));
        // The same HTTP service over TCP or TLS; only the connection type differs.
        macro_rules! http_service {
            () => {{
                let app = App::new()
                    .app_data(transport_data.clone())
                    .app_data(api_data.clone())
                    .app_data(web::QueryConfig::default().error_handler(|e, _| {
                        ApiError::bad_request(format!("bad query string: {e}")).into()
                    }))
                    .app_data(web::PathConfig::default().error_handler(|e, _| {
                        ApiError::bad_request(format!("bad path: {e}")).into()
                    }))
                    .configure(transport::routes)
                    .configure(http::routes)
                    .wrap(actix_web::middleware::from_fn(http::origins::cors));
                let upgrades = upgrades.clone();
                let graceful = graceful.clone();
                HttpService::build()
                    .graceful_shutdown_signal(move || {
                        let signal = graceful.clone();
                        async move { signal.notified().await }
                    })
                    // Quotes are small and latency matters: no Nagle delay.
                    .tcp_nodelay(true)
                    // Each connection's socket, so a slow SSE reader can be cut.
                    .on_connect_ext(transport::socket::remember_socket)
                    .upgrade(fn_service(move |(req, framed)| {
                        transport::ws::upgrade(upgrades.clone(), req, framed)
                    }))
                    .finish(map_config(app, |_| AppConfig::default()))
            }};
        }
        let builder = match &state.certificates {
            None => builder.listen("ticker-gateway", self.listener, move || {
                http_service!().tcp()
            })?,
            Some(certs) => {
                let acceptor = tokio_rustls::TlsAcceptor::from(certs.server_config());
                let handshake = settings.tls.handshake_timeout;
                builder.listen("ticker-gateway", self.listener, move || {
                    let acceptor = acceptor.clone();
                    fn_service(move |tcp: actix_web::rt::net::TcpStream| {
                        let accepted = crate::tls::accept(acceptor.clone(), tcp, handshake);
                        async move {
                            let tls = accepted.await.map_err(DispatchError::Io)?;
                            let (tcp, _) = tls.get_ref();
                            // Quotes are small and latency matters: no Nagle delay.
                            let _ = tcp.set_nodelay(true);
                            let peer = tcp.peer_addr().ok();
                            Ok((tls, Protocol::Http1, peer))
                        }
                    })
                    .and_then(http_service!())
                })?
            }
        };
        let server = builder.run();
        let handle = server.handle();
        let server_task = actix_web::rt::spawn(server);
        let tls = state.certificates.is_some();
        tracing::info!(%addr, workers, tls, feeds = settings.feeds.len(), symbols = state.hub.len(), "ticker gateway listening on {addr}");
        let admin = match self.admin {
            Some(listener) => {
                let admin_addr = listener.local_addr()?;
                let server = http::serve_admin(listener, web::Data::from(state.api.clone()))?;
                tracing::info!(%admin_addr, "health and metrics also on {admin_addr}");
                Some((server.handle(), actix_web::rt::spawn(server)))
            }
            None => None,
        };

        shutdown.await;
        tracing::info!("shutting down: closing connections with 1001, stopping feeds");
        state.transport.shutdown.begin();
        reaper.abort();
        // Give sessions a moment to send their 1001 before the server stops.
        let max = settings.server.max_connections;
        let drained = tokio::time::timeout(settings.server.shutdown_timeout, async {
            let _all = state.transport.connections.acquire_many(max as u32).await;
        })
        .await
        .is_ok();
        if !drained {
            tracing::warn!("some connections did not close in time");
        }
        for t in feed_tasks {
            let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
        }
        // The feeds are done: the publisher sends what they left, then ends.
        if let (Some(outbox), Some(task)) = (&outbox, publisher_task) {
            outbox.close();
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        }
        handle.stop(true).await;
        let _ = server_task.await;
        if let Some((handle, task)) = admin {
            handle.stop(true).await;
            let _ = task.await;
        }
        tracing::info!("stopped");
        Ok(())
    }
}
