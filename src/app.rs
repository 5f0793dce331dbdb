//! Building and running the service: open the store, load the caches, start the ingest
//! writer, bind, serve until shutdown. Tests and the CLI start the service the same way.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::api::{self, AppState};
use crate::config::Settings;
use crate::engine::EngineConfig;
use crate::ingest::monitor::Monitor;
use crate::ingest::Ingest;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::store::Store;

/// A running service.
pub struct Running {
    pub addr: SocketAddr,
    pub state: AppState,
    shutdown: watch::Sender<bool>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Stops accepting, finishes in-flight requests, returns when the server has stopped.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = self.server.await;
        self.state.monitor.stop();
    }

    /// Waits until the server stops by itself (or `stop` is called elsewhere).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.server.await.context("server task")?.context("server")
    }

    pub fn shutdown_handle(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}

/// Opens the store and builds the shared state (no listener yet).
pub async fn build_state(settings: Settings) -> anyhow::Result<AppState> {
    settings.validate()?;
    let store = Store::connect_with(&settings.database_url, &settings.store_options())
        .await
        .with_context(|| format!("opening the {} store", backend_name(&settings.database_url)))?;
    let registry = Registry::load(&store.users().await?, &store.devices().await?);
    let metrics = Metrics::new();
    let monitor = Monitor::start(store.clone(), engine_config(&settings), metrics.clone())
        .await
        .context("rebuilding the compliance engine's state")?;
    // bounded: if evaluation falls behind, the writer waits and the ingest queue fills (429)
    let (committed_tx, committed_rx) = tokio::sync::mpsc::channel(64);
    let (ingest, _writer) = Ingest::start(
        store.clone(),
        settings.queue_pings,
        metrics.clone(),
        Some(committed_tx),
    );
    monitor.clone().spawn(
        committed_rx,
        std::time::Duration::from_secs(settings.sweep_interval_s),
    );
    Ok(AppState {
        settings: Arc::new(settings),
        store,
        registry: Arc::new(registry),
        ingest,
        monitor,
        metrics,
        ready: Arc::new(AtomicBool::new(false)),
    })
}

/// The engine's settings from the service's.
pub fn engine_config(s: &Settings) -> EngineConfig {
    EngineConfig {
        no_fix_s: s.no_fix_s,
        comms_loss_s: s.comms_loss_s,
        horizon_s: s.horizon_s,
        ..EngineConfig::default()
    }
}

fn backend_name(url: &str) -> &'static str {
    if url.starts_with("sqlite:") {
        "SQLite"
    } else {
        "PostgreSQL"
    }
}

/// Builds the service and serves it on `settings.listen`.
pub async fn start(settings: Settings) -> anyhow::Result<Running> {
    let listen = settings.listen_addr();
    let state = build_state(settings).await?;
    let listener = TcpListener::bind(&listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr()?;
    crate::retention::spawn(state.store.clone(), &state.settings);
    api::users::spawn_token_refresh(&state);
    state.ready.store(true, Ordering::Release);
    let (shutdown, mut rx) = watch::channel(false);
    let app = api::router(state.clone());
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.wait_for(|stop| *stop).await;
            })
            .await
    });
    tracing::info!(%addr, store = state.store.backend(), "tagwatch listening on http://{addr}");
    Ok(Running {
        addr,
        state,
        shutdown,
        server,
    })
}
