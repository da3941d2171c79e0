use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use arrow::array::RecordBatch;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::FlightInfo;
use futures::TryStreamExt;
use meshql::Mesh;
use meshql_flight::{serve, RunningServer, ServerConfig};
use tonic::transport::Channel;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn sample_mesh() -> Mesh {
    Mesh::open(repo().join("testdata/mesh")).expect("the sample mesh opens")
}

/// The same password for every test user; the hash is computed once (argon2 is slow on purpose).
pub const PASSWORD: &str = "correct horse battery staple";

fn password_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| meshql_flight::auth::hash_password(PASSWORD).expect("hash"))
}

/// Users mirroring the sample policies' groups: an analyst who may read PII, a support agent
/// in EU, a contractor.
pub fn users_yaml() -> String {
    let h = password_hash();
    format!(
        r#"
  users:
    - {{name: alice, passwordHash: '{h}', groups: [analysts, pii-readers]}}
    - {{name: sam, passwordHash: '{h}', groups: [support], attributes: {{region: EU}}}}
    - {{name: carl, passwordHash: '{h}', groups: [contractors]}}
    - {{name: gone, passwordHash: '{h}', groups: [analysts], disabled: true}}
"#
    )
}

/// A config with the test users; `extra_auth` lines go under `auth:`, `extra` at top level.
pub fn config(extra_auth: &str, extra: &str) -> ServerConfig {
    let yaml = format!("listen: 127.0.0.1:0\nauth:\n{}{extra_auth}\n{extra}", users_yaml());
    serde_yaml::from_str(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

pub async fn start(config: ServerConfig) -> RunningServer {
    serve(sample_mesh(), config).await.expect("server starts")
}

pub async fn channel(server: &RunningServer) -> Channel {
    Channel::from_shared(format!("http://{}", server.addr()))
        .expect("uri")
        .connect()
        .await
        .expect("connect")
}

pub async fn anonymous_client(server: &RunningServer) -> FlightSqlServiceClient<Channel> {
    FlightSqlServiceClient::new(channel(server).await)
}

pub async fn login(server: &RunningServer, user: &str) -> FlightSqlServiceClient<Channel> {
    let mut client = anonymous_client(server).await;
    client.handshake(user, PASSWORD).await.expect("login");
    client
}

/// Every batch of every endpoint of `info`.
pub async fn fetch(
    client: &mut FlightSqlServiceClient<Channel>,
    info: FlightInfo,
) -> Result<Vec<RecordBatch>, tonic::Status> {
    let mut out = Vec::new();
    for endpoint in info.endpoint {
        let ticket = endpoint.ticket.expect("ticket");
        let stream = client.do_get(ticket).await.map_err(status)?;
        let batches: Vec<RecordBatch> = stream.try_collect().await.map_err(status)?;
        out.extend(batches);
    }
    Ok(out)
}

pub async fn sql(client: &mut FlightSqlServiceClient<Channel>, query: &str) -> Result<Vec<Vec<String>>, tonic::Status> {
    let info = client.execute(query.to_string(), None).await.map_err(status)?;
    Ok(rows(&fetch(client, info).await?))
}

/// The gRPC status inside an error from the client.
pub fn status(e: arrow_flight::error::FlightError) -> tonic::Status {
    match e {
        arrow_flight::error::FlightError::Tonic(s) => *s,
        other => tonic::Status::unknown(other.to_string()),
    }
}

pub use meshql_testdata::rows;

/// The same query through the embedded API, as `principal`.
pub async fn embedded(principal: meshql::Principal, query: &str) -> Vec<Vec<String>> {
    let batches = sample_mesh()
        .session(principal)
        .sql(query)
        .await
        .expect("plans")
        .collect()
        .await
        .expect("runs");
    rows(&batches)
}
