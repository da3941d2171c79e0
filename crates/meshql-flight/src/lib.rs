//! Arrow Flight SQL for a meshql mesh: what BI tools (the Flight SQL JDBC driver), notebooks
//! (ADBC) and services (any Flight SQL client) connect to.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use meshql::Mesh;
//! use meshql_flight::{serve, ServerConfig};
//!
//! let mesh = Mesh::open("testdata/mesh")?;
//! let config = ServerConfig::load("testdata/server.yaml".as_ref())?;
//! let server = serve(mesh, config).await?;
//! println!("listening on {}", server.addr());
//! server.wait().await?;
//! # Ok(()) }
//! ```
//!
//! Every call is authenticated ([`auth`]); the principal's access policies apply to queries and
//! to metadata alike. Statement handles and tickets are signed and self-contained
//! ([`signing`]), so replicas sharing a signing key serve each other's clients.

pub mod auth;
mod bindings;
pub mod config;
mod doget;
mod encode;
pub mod metadata;
pub mod priority;
pub mod results;
mod server;
pub mod service;
mod session_options;
pub mod signing;

/// Protobuf messages of `proto/meshql.proto` (handles, tickets, tokens, cookies).
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/meshql.v1.rs"));
}

/// The Flight session-option messages of `proto/flight_session.proto`.
#[allow(clippy::all, dead_code)]
mod flight_proto {
    include!(concat!(env!("OUT_DIR"), "/arrow.flight.protocol.rs"));
}

pub use config::ServerConfig;
pub use server::{serve, RunningServer};
pub use service::MeshFlightService;

/// Errors starting or configuring the server. Errors of individual calls are gRPC statuses.
#[derive(Debug, thiserror::Error)]
pub enum FlightError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(String),
    #[error(transparent)]
    Flight(#[from] arrow_flight::error::FlightError),
    #[error(transparent)]
    Transport(#[from] tonic::transport::Error),
}
