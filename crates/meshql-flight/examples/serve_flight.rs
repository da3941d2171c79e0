//! Serving Arrow Flight SQL from your own service: open a mesh, configure the server in code
//! (no configuration file), listen on 127.0.0.1, and stop cleanly on Ctrl-C — what
//! `meshql serve` does, as a library.
//!
//! ```sh
//! cargo run -p meshql-flight --example serve_flight [PORT] [MESH_DIR]
//! ```
//!
//! `PORT` defaults to `$MESHQL_PORT`, then 50051; `0` picks a free port. The program prints the
//! address and a bearer token for this run; any Flight SQL client can then connect, e.g. ADBC:
//!
//! ```python
//! import adbc_driver_flightsql.dbapi as flightsql
//! conn = flightsql.connect("grpc://127.0.0.1:50051",
//!     db_kwargs={"adbc.flight.sql.authorization_header": "Bearer mqs_…"})
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use meshql::Mesh;
use meshql_flight::config::ServiceTokenConfig;
use meshql_flight::ServerConfig;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Clients' queries are planned and run on the runtime's worker threads: give them the stack
    // meshql's own binaries give theirs (deeply nested statements need it in debug builds).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_stack_size(meshql::limits::QUERY_THREAD_STACK)
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let port: u16 = match args.next().or_else(|| std::env::var("MESHQL_PORT").ok()) {
        Some(p) => p.parse().map_err(|e| format!("port {p:?}: {e}"))?,
        None => 50051,
    };
    let dir = args.next().unwrap_or_else(|| "testdata/mesh".to_string());
    let mesh = Mesh::open(&dir)?;

    // As `meshql serve` does: edited contracts, descriptors and policies take effect without a
    // restart, polled every `reloadSeconds` of mesh.yaml (the watcher stops when dropped).
    let reload = mesh.definition().settings.reload_seconds;
    let _watch = (reload > 0).then(|| mesh.watch(Duration::from_secs(reload)));

    // Who may connect. Here one service token, made for this run, authenticating as principal
    // `example-client` in group `analysts` (so the sample's policies let it read every product,
    // PII masked). A real service configures only the token's hash (`meshql auth
    // new-service-token`), users with password hashes, or JWT single sign-on; it also sets
    // `auth.signing_key`, or session tokens and statement handles die with the process.
    let (token, token_hash) = meshql_flight::auth::new_service_token();
    let mut config = ServerConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], port)),
        ..ServerConfig::default()
    };
    config.auth.service_tokens.push(ServiceTokenConfig {
        name: "example-client".into(),
        token_hash,
        groups: vec!["analysts".into()],
        attributes: Default::default(),
        revoked: false,
    });

    // Binds, then serves in the background; `addr()` has the actual port when 0 was asked for.
    // The server logs through `tracing`: install a subscriber to see it.
    let server = meshql_flight::serve(mesh, config).await?;
    println!("meshql Flight SQL listening on grpc://{}", server.addr());
    println!("authorization: Bearer {token}");

    // Ctrl-C: stop accepting calls, let running ones finish, return.
    server
        .shutdown_on(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    println!("stopped");
    Ok(())
}
