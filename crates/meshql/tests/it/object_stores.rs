//! Products on an S3-compatible object store: a real S3 server (`s3s-fs`, installed by
//! `scripts/test.sh`) on 127.0.0.1, the sample mesh's Parquet, Delta and Iceberg data uploaded
//! through the S3 protocol, and the local copies of the data deleted — so every answer below
//! was read over S3. The same queries, as the same principals, must give exactly what the
//! local sample mesh gives.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meshql::{Mesh, Principal};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::common::*;

const KEY: &str = "AKIDMESHQLTEST";
const SECRET: &str = "meshql-s3-secret-do-not-leak";
const BUCKET: &str = "meshql";

/// A running `s3s-fs` over a temporary directory; killed when dropped.
struct S3Server {
    child: Child,
    endpoint: String,
    dir: tempfile::TempDir,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn s3s_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("MESHQL_S3S_FS") {
        return PathBuf::from(p);
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("s3s-fs"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    on_path
        .into_iter()
        .chain(cargo_home.map(|h| h.join("bin/s3s-fs")))
        .find(|p| p.is_file())
        .expect(
            "s3s-fs is not installed: `cargo install s3s-fs@0.14.1 --features binary --locked` (scripts/test.sh does)",
        )
}

impl S3Server {
    fn start() -> S3Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new(s3s_binary())
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", KEY, "--secret-key", SECRET])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start s3s-fs");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "s3s-fs did not start on port {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        S3Server {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            dir,
        }
    }

    /// A bucket is a directory of the server's storage (the server's own set-up, like an
    /// administrator creating a bucket); everything in it is written through the S3 API.
    fn create_bucket(&self, name: &str) {
        std::fs::create_dir_all(self.dir.path().join(name)).expect("bucket directory");
    }

    fn client(&self, bucket: &str) -> Arc<dyn ObjectStore> {
        Arc::new(
            AmazonS3Builder::new()
                .with_endpoint(&self.endpoint)
                .with_allow_http(true)
                .with_region("us-east-1")
                .with_bucket_name(bucket)
                .with_access_key_id(KEY)
                .with_secret_access_key(SECRET)
                .build()
                .expect("S3 client"),
        )
    }

    /// Uploads every data file of the sample mesh to `bucket` under `mesh/`.
    async fn upload_sample(&self, bucket: &str) -> usize {
        let client = self.client(bucket);
        let root = sample_dir();
        let mut files = Vec::new();
        for domain in std::fs::read_dir(root.join("domains")).expect("domains") {
            let data = domain.expect("entry").path().join("data");
            if data.is_dir() {
                walk(&data, &mut files);
            }
        }
        for file in &files {
            let key = file
                .strip_prefix(&root)
                .expect("under the mesh")
                .to_string_lossy()
                .to_string();
            let bytes = std::fs::read(file).expect("read data file");
            client
                .put(&ObjectPath::from(format!("mesh/{key}")), PutPayload::from(bytes))
                .await
                .unwrap_or_else(|e| panic!("upload {key}: {e}"));
        }
        files.len()
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let p = entry.expect("entry").path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// A copy of the sample mesh whose data lives only in the S3 server: the local data
/// directories are deleted and `mesh.yaml` is the one `docker-compose.yml` serves
/// (`testdata/docker/mesh.yaml`: `dataRoot` in the bucket, the store's credentials by reference
/// to environment variables) with the test server's endpoint; `extra_stores` are appended to
/// its `stores`.
fn s3_mesh(server: &S3Server, extra_stores: &str) -> tempfile::TempDir {
    std::env::set_var("MESHQL_S3_KEY", KEY);
    std::env::set_var("MESHQL_S3_SECRET", SECRET);
    let dir = copy_of_sample();
    for domain in std::fs::read_dir(dir.path().join("domains")).expect("domains") {
        let data = domain.expect("entry").path().join("data");
        if data.is_dir() {
            std::fs::remove_dir_all(&data).expect("remove local data");
        }
    }
    let docker = sample_dir().join("../docker/mesh.yaml");
    let yaml = std::fs::read_to_string(&docker).expect("testdata/docker/mesh.yaml");
    assert!(
        yaml.contains("http://minio:9000"),
        "the compose settings name the MinIO endpoint"
    );
    let yaml = yaml.replace("http://minio:9000", &server.endpoint) + extra_stores;
    std::fs::write(dir.path().join("mesh.yaml"), yaml).expect("write mesh.yaml");
    dir
}

async fn uploaded() -> (S3Server, tempfile::TempDir, Mesh) {
    let server = S3Server::start();
    server.create_bucket(BUCKET);
    let n = server.upload_sample(BUCKET).await;
    assert!(n > 20, "uploaded only {n} files");
    let dir = s3_mesh(&server, "");
    let mesh = Mesh::open(dir.path()).expect("the S3 mesh opens");
    (server, dir, mesh)
}

/// Cross-domain queries over every format, and the policy cases: the same answers (or the
/// same refusals) from S3 as from the local disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_format_on_s3_answers_like_local_disk_under_the_same_policies() {
    let (_server, _dir, s3) = uploaded().await;
    let local = sample_mesh();
    let cases: Vec<(Principal, &str)> = vec![
        // Parquet (single file) ⋈ Parquet (directory) ⋈ Delta, across three domains
        (analyst(), "SELECT c.region, count(*), sum(t.amount) FROM mesh.customer.profiles c JOIN mesh.\"order\".transactions t USING (customer_id) JOIN mesh.product.catalog p ON p.product_id = t.product_id GROUP BY c.region ORDER BY c.region"),
        // Delta
        (analyst(), "SELECT status, count(*) FROM mesh.\"order\".shipments GROUP BY status ORDER BY status"),
        // Iceberg
        (analyst(), "SELECT count(*), sum(quantity) FROM mesh.product.inventory"),
        (analyst(), "SELECT * FROM mesh.marketing.campaign_performance ORDER BY 1, 2, 3 LIMIT 20"),
        // interop fixtures written by pyarrow, deltalake and pyiceberg; pinned versions
        (analyst(), "SELECT count(*), sum(amount) FROM mesh.interop.pyarrow_events"),
        (analyst(), "SELECT count(*), sum(amount) FROM mesh.interop.deltars_events_latest"),
        (analyst(), "SELECT count(*), sum(amount) FROM mesh.interop.deltars_events_first_commit"),
        (analyst(), "SELECT count(*), sum(amount) FROM mesh.interop.pyiceberg_events_latest"),
        (analyst(), "SELECT count(*), sum(amount) FROM mesh.interop.pyiceberg_events_first_snapshot"),
        // pruning still applies: a selective filter on a partitioned / statistics-bearing column
        (analyst(), "SELECT count(*) FROM mesh.\"order\".transactions WHERE order_date >= DATE '2024-06-01'"),
        // policies: masks, row filters by attribute, tag filters, refusals
        (ana(), "SELECT customer_id, full_name, email, phone FROM mesh.customer.profiles ORDER BY customer_id LIMIT 25"),
        (sam(), "SELECT customer_id, region FROM mesh.customer.profiles ORDER BY customer_id"),
        (sam(), "SELECT count(*) FROM mesh.\"order\".transactions t JOIN mesh.customer.profiles c USING (customer_id)"),
        (rita(), "SELECT region, count(*) FROM mesh.customer.profiles GROUP BY region ORDER BY region"),
        (carl(), "SELECT * FROM mesh.customer.profiles"),
        (sam(), "SELECT birth_date FROM mesh.customer.profiles"),
        // time travel reads history from S3 too
        (analyst(), "SELECT count(*) FROM mesh.interop.deltars_events_latest FOR VERSION AS OF 0"),
    ];
    for (principal, sql) in cases {
        let who = principal.id().to_string();
        let want = query_as(&local, principal.clone(), sql).await;
        let got = query_as(&s3, principal, sql).await;
        assert_eq!(got, want, "as {who}: {sql}");
    }
    // Pruning works as on disk: one day's directory of the hive-partitioned Parquet product, one
    // Delta partition, the Iceberg predicate pushed into its scan.
    let day = date(meshql_testdata::sample::FIRST_ORDER_DAY + 4);
    let plan = explain(
        &s3,
        &format!("SELECT sum(amount) FROM mesh.\"order\".transactions WHERE order_date = DATE '{day}'"),
    )
    .await;
    assert!(plan.contains(&format!("order_date={day}/part-0.parquet")), "{plan}");
    assert_eq!(plan.matches("part-0.parquet").count(), 1, "{plan}");
    let plan = explain(&s3, "SELECT sku FROM mesh.product.catalog WHERE category = 'books'").await;
    assert!(
        plan.contains("category=books") && !plan.contains("category=toys"),
        "{plan}"
    );
    let plan = explain(
        &s3,
        "SELECT clicks FROM mesh.marketing.campaign_performance WHERE channel = 'email'",
    )
    .await;
    assert!(plan.contains("predicate:[channel = \"email\"]"), "{plan}");
    // One client for the one store, shared by every product read above.
    let stores = format!("{:?}", s3.catalog().stores());
    assert!(stores.contains("clients: [\"lake\"]"), "{stores}");
    // The answers really came over S3: the copy has no local data at all.
    let ports = query_as(&s3, admin(), "SELECT location FROM mesh.system.ports ORDER BY 1")
        .await
        .expect("ports");
    assert!(ports.iter().all(|r| r[0].starts_with("s3://meshql/mesh/")), "{ports:?}");
}

/// A missing bucket, wrong credentials and a deleted object each fail their own product, with a
/// message that says what, and the rest of the mesh keeps answering. No credential appears in
/// any message, system table or audit record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_failures_stay_with_their_product_and_never_show_credentials() {
    let server = S3Server::start();
    server.create_bucket(BUCKET);
    server.create_bucket("locked");
    server.upload_sample(BUCKET).await;
    server.upload_sample("locked").await;
    std::env::set_var("MESHQL_TEST_WRONG_SECRET", "wrong-secret-value-xyz");
    // `locked` has the wrong secret; `no-such-bucket` is configured like the real bucket but the
    // server has no such bucket (deleted, or a typo in the contract)
    let extra = format!(
        r#"  locked:
    url: s3://locked
    options:
      endpoint: {endpoint}
      allowHttp: true
      accessKeyId: ${{MESHQL_S3_KEY}}
      secretAccessKey: ${{MESHQL_TEST_WRONG_SECRET}}
  gone:
    url: s3://no-such-bucket
    options:
      endpoint: {endpoint}
      allowHttp: true
      accessKeyId: ${{MESHQL_S3_KEY}}
      secretAccessKey: ${{MESHQL_S3_SECRET}}
"#,
        endpoint = server.endpoint
    );
    let dir = s3_mesh(&server, &extra);
    // two more products in the interop domain: one in a bucket that does not exist, one in a
    // bucket whose store has the wrong secret
    let interop = dir.path().join("domains/interop");
    let contract = std::fs::read_to_string(interop.join("contracts/pyarrow_events.odcs.yaml")).expect("contract");
    let product = std::fs::read_to_string(interop.join("products/pyarrow_events.odps.yaml")).expect("product");
    for (name, location) in [
        (
            "nobucket",
            "s3://no-such-bucket/mesh/domains/interop/data/pyarrow_events",
        ),
        ("locked", "s3://locked/mesh/domains/interop/data/pyarrow_events"),
    ] {
        let c = contract
            .replace("pyarrow-events", &format!("{name}-events"))
            .replace("type: local", "type: s3")
            .replace(
                "path: domains/interop/data/pyarrow_events",
                &format!("location: {location}"),
            );
        let p = product
            .replace("pyarrow-events", &format!("{name}-events"))
            .replace("name: pyarrow_events", &format!("name: {name}_events"));
        std::fs::write(interop.join(format!("contracts/{name}.odcs.yaml")), c).expect("write contract");
        std::fs::write(interop.join(format!("products/{name}.odps.yaml")), p).expect("write product");
    }
    let mesh = Mesh::open(dir.path()).expect("mesh opens");
    let healthy = "SELECT count(*) FROM mesh.interop.pyarrow_events";
    let n = query(&mesh, healthy).await;

    let missing = query_error(&mesh, "SELECT count(*) FROM mesh.interop.nobucket_events").await;
    assert!(
        missing.contains("mesh.interop.nobucket_events is unavailable"),
        "{missing}"
    );
    assert!(missing.contains("NoSuchBucket"), "{missing}");
    let locked = query_error(&mesh, "SELECT count(*) FROM mesh.interop.locked_events").await;
    assert!(locked.contains("mesh.interop.locked_events is unavailable"), "{locked}");
    // A refused `get`/`head` reads as the refusal; a refused `list` shows the store's own answer
    // (object_store reports list failures as `Generic`: apache/arrow-rs-object-store#851).
    assert!(
        locked.contains("the store refused access (missing permission or rejected credentials)")
            || locked.contains("403 Forbidden"),
        "{locked}"
    );
    assert!(locked.contains("store `locked`"), "{locked}");
    // A store refusing the credentials (HTTP 403) is an unavailable product, not a policy
    // refusal: classified by type, whatever the store's message says.
    let refused = match mesh
        .session(analyst())
        .sql("SELECT count(*) FROM mesh.interop.locked_events")
        .await
    {
        Err(e) => e,
        Ok(q) => q.collect().await.expect_err("locked"),
    };
    assert_eq!(refused.class(), meshql::ErrorClass::Unavailable, "{refused}");
    let outcomes: Vec<String> = mesh
        .audit()
        .expect("audit on")
        .read_all()
        .expect("read")
        .into_iter()
        .filter(|r| r.statement.contains("locked_events"))
        .map(|r| r.outcome)
        .collect();
    assert!(
        !outcomes.is_empty() && outcomes.iter().all(|o| o == "error"),
        "{outcomes:?}"
    );
    assert_eq!(
        query(&mesh, healthy).await,
        n,
        "a broken product does not affect the others"
    );

    // an object deleted after the product was opened: that product's queries fail, saying which file
    let profiles = "SELECT count(DISTINCT email) FROM mesh.customer.profiles";
    query(&mesh, profiles).await;
    server
        .client(BUCKET)
        .delete(&ObjectPath::from("mesh/domains/customer/data/profiles.parquet"))
        .await
        .expect("delete");
    let deleted = query_error(&mesh, profiles).await;
    assert!(
        deleted.contains("mesh.customer.profiles") && deleted.contains("profiles.parquet"),
        "{deleted}"
    );
    assert!(deleted.to_lowercase().contains("not found"), "{deleted}");
    assert_eq!(query(&mesh, healthy).await, n);
    assert_eq!(
        query(&mesh, "SELECT count(*) FROM mesh.\"order\".shipments")
            .await
            .len(),
        1,
        "other products still answer"
    );

    // No credential anywhere a user or operator looks.
    let mut texts = vec![missing, locked, deleted];
    for sql in [
        "SELECT * FROM mesh.system.ports",
        "SELECT * FROM mesh.system.products",
        "SELECT * FROM mesh.system.problems",
        "SELECT * FROM mesh.system.queries",
    ] {
        let rows = query_as(&mesh, admin(), sql).await.expect(sql);
        texts.push(format!("{rows:?}"));
    }
    texts.push(format!("{mesh:?}"));
    texts.push(format!("{:?}", mesh.definition()));
    let audit_dir = dir.path().join(".meshql/audit");
    for entry in std::fs::read_dir(&audit_dir).expect("audit dir") {
        texts.push(std::fs::read_to_string(entry.expect("entry").path()).expect("audit file"));
    }
    for text in &texts {
        for secret in [SECRET, "wrong-secret-value-xyz"] {
            assert!(!text.contains(secret), "a secret leaked: {text}");
        }
    }
}

/// A literal secret in `mesh.yaml` is refused (the mesh does not open) without repeating it.
#[tokio::test]
async fn literal_secrets_in_the_settings_are_refused() {
    let dir = copy_of_sample();
    let settings = dir.path().join("mesh.yaml");
    let mut yaml = std::fs::read_to_string(&settings).expect("mesh.yaml");
    yaml.push_str("stores:\n  lake:\n    url: s3://b\n    options:\n      secretAccessKey: plain-text-secret-123\n");
    std::fs::write(&settings, yaml).expect("write");
    let e = Mesh::open(dir.path()).expect_err("refused").to_string();
    assert!(e.contains("/stores/lake/options/secretAccessKey"), "{e}");
    assert!(e.contains("environment variable"), "{e}");
    assert!(!e.contains("plain-text-secret-123"), "{e}");
}
