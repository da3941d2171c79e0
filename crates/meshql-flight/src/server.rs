//! Listening: TCP, optional TLS and mutual TLS, graceful shutdown.

use std::net::SocketAddr;

use meshql::Mesh;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use crate::auth::Authenticator;
use crate::config::ServerConfig;
use crate::doget::Routes;
use crate::service::MeshFlightService;
use crate::signing::Signer;
use crate::FlightError;

/// A server that is accepting connections.
pub struct RunningServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl RunningServer {
    /// The address it listens on (with the actual port when port 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting calls, lets running calls finish, and returns.
    pub async fn shutdown(mut self) -> Result<(), FlightError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.wait().await
    }

    /// Waits until the server stops.
    pub async fn wait(self) -> Result<(), FlightError> {
        match self.task.await {
            Ok(r) => Ok(r?),
            Err(e) => Err(FlightError::Config(format!("server task failed: {e}"))),
        }
    }

    /// Shuts down when `signal` completes (e.g. SIGTERM or Ctrl-C).
    pub async fn shutdown_on(self, signal: impl std::future::Future<Output = ()>) -> Result<(), FlightError> {
        signal.await;
        tracing::info!("shutting down: finishing running calls");
        self.shutdown().await
    }
}

/// SHA-256 of signing keys published with meshql (`testdata/server/signing.key`): anyone can
/// mint session tokens and statement handles with them.
const PUBLISHED_KEYS: &[&str] = &["b71871ae02a31af8c4da9dbb8a9c6f1180f3d1c35c3d4f351fcff21930001126"];

/// Refuses a published signing key unless the server listens on loopback only (a demo on one's
/// own machine) or the configuration says `allowDemoKey` (`--allow-demo-key`).
fn refuse_published_key(key: &[u8], config: &ServerConfig) -> Result<(), FlightError> {
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(key));
    if !PUBLISHED_KEYS.contains(&digest.as_str()) {
        return Ok(());
    }
    if config.listen.ip().is_loopback() || config.auth.allow_demo_key {
        tracing::warn!(
            listen = %config.listen,
            "auth.signingKey is the demo key published in meshql's repository: anyone can mint tokens with it; never use it for real data"
        );
        return Ok(());
    }
    Err(FlightError::Config(format!(
        "auth.signingKey is the demo key published in meshql's repository (testdata/server/signing.key): anyone could mint session tokens and statement handles with it, so meshql refuses to serve it on {}; generate a key of your own (e.g. `head -c 48 /dev/urandom | base64 > signing.key`), or pass --allow-demo-key (auth.allowDemoKey: true) for a demo",
        config.listen
    )))
}

/// Starts serving `mesh` as configured.
pub async fn serve(mesh: Mesh, config: ServerConfig) -> Result<RunningServer, FlightError> {
    // Several TLS backends are linked (through object store and catalog clients); rustls needs
    // one chosen for the process. Keep an application's own choice if it made one.
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    let signer = match &config.auth.signing_key {
        Some(key) => {
            let key = key.read()?;
            if key.len() < 32 {
                return Err(FlightError::Config("the signing key must be at least 32 bytes".into()));
            }
            refuse_published_key(&key, &config)?;
            Signer::new(key)
        }
        None => {
            tracing::warn!(
                "no auth.signingKey configured: using a random key, so session tokens and statement handles end with this process and other replicas cannot serve them"
            );
            Signer::random()
        }
    };
    let auth = Authenticator::new(&config.auth, signer)?;
    meshql::memory::set_process_limit(config.limits.memory_total);
    if config.auth.users.is_empty()
        && config.auth.service_tokens.is_empty()
        && config.auth.jwt.is_none()
        && !config.auth.anonymous.enabled
    {
        tracing::warn!("no users, service tokens, JWT issuer or anonymous access configured: nobody can connect");
    }
    let service = MeshFlightService::new(mesh, auth, config.clone())?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| FlightError::Listen {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| FlightError::Listen {
        addr: config.listen,
        source,
    })?;
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut builder = Server::builder();
    if let Some(tls) = &config.tls {
        let read =
            |p: &std::path::Path| std::fs::read(p).map_err(|e| FlightError::Tls(format!("{}: {e}", p.display())));
        let mut tls_config = ServerTlsConfig::new().identity(Identity::from_pem(read(&tls.cert)?, read(&tls.key)?));
        if let Some(ca) = &tls.client_ca {
            tls_config = tls_config.client_ca_root(Certificate::from_pem(read(ca)?));
        }
        builder = builder
            .tls_config(tls_config)
            .map_err(|e| FlightError::Tls(e.to_string()))?;
    }
    let (stop, stopped) = oneshot::channel::<()>();
    let router = builder.add_service(Routes::new(service));
    let task = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async {
        let _ = stopped.await;
    }));
    tracing::info!(%addr, tls = config.tls.is_some(), "meshql Flight SQL server listening");
    Ok(RunningServer {
        addr,
        stop: Some(stop),
        task,
    })
}
