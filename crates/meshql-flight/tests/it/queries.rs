//! Queries over the wire: results identical to the embedded API for the same principal,
//! prepared statements, errors, cancellation, limits, result shaping.

use std::time::Duration;

use arrow::array::Array;
use arrow::datatypes::DataType;
use arrow_flight::{Action, CancelFlightInfoRequest, FlightInfo};
use futures::{StreamExt, TryStreamExt};
use meshql::Principal;
use prost::Message;
use tonic::Code;

use crate::common::*;

const CROSS_DOMAIN: &str = "SELECT p.region, p.email, count(*) AS orders, sum(t.quantity) AS items \
     FROM mesh.customer.profiles p JOIN mesh.order.transactions t ON t.customer_id = p.customer_id \
     GROUP BY p.region, p.email ORDER BY orders DESC, p.email LIMIT 20";

#[tokio::test]
async fn results_equal_the_embedded_api_for_each_principal() {
    let server = start(config("", "")).await;
    let support = Principal::new("sam")
        .with_group("support")
        .with_attribute("region", "EU");
    let analyst = Principal::new("alice").with_groups(["analysts", "pii-readers"]);
    for (user, principal, query) in [
        ("alice", analyst.clone(), CROSS_DOMAIN),
        // Filtered rows (own region or business), masked email (keyed hash), redacted country,
        // coarse signup month: the server must give exactly what the library gives.
        (
            "sam",
            support,
            "SELECT customer_id, full_name, email, phone, region, country, segment, signup_ts \
             FROM mesh.customer.profiles ORDER BY customer_id",
        ),
    ] {
        let mut client = login(&server, user).await;
        let wire = sql(&mut client, query).await.unwrap();
        assert!(!wire.is_empty());
        assert_eq!(wire, embedded(principal, query).await, "{user}: {query}");
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_denied_query_reaches_the_client_with_its_reason() {
    let server = start(config("", "")).await;
    let mut carl = login(&server, "carl").await;
    let e = sql(&mut carl, "SELECT * FROM mesh.customer.profiles")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    assert!(
        e.message()
            .contains("access denied: 'carl' may not read mesh.customer.profiles"),
        "{e}"
    );
    assert!(e.message().contains("contact the product owner"), "{e}");
    // A column refusal raised by the optimiser is recognised by its type too.
    let e = sql(&mut carl, "SELECT amount FROM mesh.order.transactions")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    // An error whose text merely says "access denied" is not a refusal.
    let e = sql(&mut carl, "SELECT CAST('access denied' AS INT)").await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    // Undiscoverable products look like missing tables.
    let e = sql(&mut carl, "SELECT * FROM mesh.interop.pyarrow_events")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert!(e.message().contains("not found"), "{e}");
    // Statements other than queries, and writes through Flight SQL.
    let e = sql(&mut carl, "CREATE TABLE t AS SELECT 1").await.unwrap_err();
    assert!(e.message().contains("only queries are allowed"), "{e}");
    let e = carl
        .execute_update("DELETE FROM mesh.order.transactions".into(), None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("read-only"), "{e}");
    let e = carl.begin_transaction().await.unwrap_err();
    assert!(e.to_string().contains("read-only"), "{e}");
    // The server keeps serving.
    assert!(sql(&mut carl, "SELECT count(*) FROM mesh.order.transactions")
        .await
        .is_ok());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn prepared_statements_with_bound_parameters() {
    let server = start(config("", "")).await;
    let mut client = login(&server, "alice").await;
    let mut prepared = client
        .prepare(
            "SELECT count(*) AS n, sum(quantity) AS q FROM mesh.order.transactions WHERE customer_id = $1 AND quantity >= $2"
                .into(),
            None,
        )
        .await
        .unwrap();
    let params = prepared.parameter_schema().unwrap().clone();
    assert_eq!(params.fields().len(), 2);
    assert_eq!(params.field(0).name(), "$1");
    assert_eq!(params.field(0).data_type(), &DataType::Int64);
    assert!(params.field(1).data_type().is_integer());
    assert_eq!(prepared.dataset_schema().unwrap().field(0).name(), "n");
    for (customer, min_qty) in [(7i64, 1i64), (42, 2), (-1, 0)] {
        let batch = arrow::array::RecordBatch::try_new(
            std::sync::Arc::new(params.clone()),
            // Values in the types the server inferred for the parameters.
            [customer, min_qty]
                .iter()
                .zip(params.fields())
                .map(|(v, f)| arrow::compute::cast(&arrow::array::Int64Array::from(vec![*v]), f.data_type()).unwrap())
                .collect(),
        )
        .unwrap();
        prepared.set_parameters(batch).unwrap();
        let info = prepared.execute().await.unwrap();
        let wire = rows(&fetch(&mut client, info).await.unwrap());
        let literal = format!(
            "SELECT count(*) AS n, sum(quantity) AS q FROM mesh.order.transactions WHERE customer_id = {customer} AND quantity >= {min_qty}"
        );
        assert_eq!(
            wire,
            embedded(
                Principal::new("alice").with_groups(["analysts", "pii-readers"]),
                &literal
            )
            .await
        );
    }
    prepared.close().await.unwrap();
    // JDBC-style `?` placeholders are numbered in order.
    let mut prepared = client
        .prepare(
            "SELECT count(*) AS n FROM mesh.customer.profiles WHERE region = ? AND customer_id > ?".into(),
            None,
        )
        .await
        .unwrap();
    let params = prepared.parameter_schema().unwrap().clone();
    let names: Vec<&str> = params.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["$1", "$2"]);
    assert_eq!(params.field(1).data_type(), &DataType::Int64);
    let batch = arrow::array::RecordBatch::try_new(
        std::sync::Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("$1", DataType::Utf8, true),
            arrow::datatypes::Field::new("$2", DataType::Int64, true),
        ])),
        vec![
            std::sync::Arc::new(arrow::array::StringArray::from(vec!["EU"])),
            std::sync::Arc::new(arrow::array::Int64Array::from(vec![10])),
        ],
    )
    .unwrap();
    prepared.set_parameters(batch.clone()).unwrap();
    let info = prepared.execute().await.unwrap();
    let wire = rows(&fetch(&mut client, info).await.unwrap());
    let literal = "SELECT count(*) AS n FROM mesh.customer.profiles WHERE region = 'EU' AND customer_id > 10";
    // Several rows for a query: refused, not silently truncated.
    let two = arrow::compute::concat_batches(&batch.schema(), [&batch, &batch]).unwrap();
    prepared.set_parameters(two).unwrap();
    let e = prepared.execute().await.unwrap_err();
    assert!(e.to_string().contains("one row per execution"), "{e}");
    assert_eq!(
        wire,
        embedded(
            Principal::new("alice").with_groups(["analysts", "pii-readers"]),
            literal
        )
        .await
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn handles_and_tickets_belong_to_their_principal() {
    let server = start(config("", "")).await;
    let mut alice = login(&server, "alice").await;
    let mut carl = login(&server, "carl").await;
    let info = alice
        .execute("SELECT count(*) FROM mesh.order.transactions".into(), None)
        .await
        .unwrap();
    // Alice's ticket presented by Carl: refused, even for data Carl may read.
    let e = fetch(&mut carl, info.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    // A forged ticket.
    let mut forged = info.clone();
    let ticket = forged.endpoint[0].ticket.as_mut().unwrap();
    let mut bytes = ticket.ticket.to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    ticket.ticket = bytes.into();
    let e = fetch(&mut alice, forged).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    // The ticket is self-contained: another replica with the same signing key serves it.
    let key = repo().join("testdata/server/signing.key");
    let with_key = |_: ()| config(&format!("  signingKey: {{file: '{}'}}\n", key.display()), "");
    let a = start(with_key(())).await;
    let b = start(with_key(())).await;
    let mut on_a = login(&a, "alice").await;
    let info = on_a
        .execute("SELECT count(*) FROM mesh.order.transactions".into(), None)
        .await
        .unwrap();
    let mut on_b = anonymous_client(&b).await;
    on_b.set_token(on_a.token().cloned().unwrap());
    assert_eq!(rows(&fetch(&mut on_b, info).await.unwrap()).len(), 1);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    server.shutdown().await.unwrap();
}

const LONG_QUERY: &str = "SELECT count(*) FROM range(0, 2000000000) a WHERE a.value % 7 = 3";

async fn cancel(
    client: &mut arrow_flight::sql::client::FlightSqlServiceClient<tonic::transport::Channel>,
    info: &FlightInfo,
) {
    let body = CancelFlightInfoRequest {
        info: Some(info.clone()),
    }
    .encode_to_vec();
    client
        .do_action(Action::new("CancelFlightInfo", body))
        .await
        .expect("cancel")
        .try_collect::<Vec<_>>()
        .await
        .expect("cancel result");
}

#[tokio::test]
async fn cancellation_before_and_during_a_query() {
    let server = start(config("", "")).await;
    let mut client = login(&server, "alice").await;
    // Cancelled before DoGet: the ticket no longer runs.
    let info = client.execute("SELECT 1".into(), None).await.unwrap();
    cancel(&mut client, &info).await;
    let e = fetch(&mut client, info).await.unwrap_err();
    assert_eq!(e.code(), Code::Cancelled, "{e}");
    // Cancelled while running: the stream ends with CANCELLED.
    let info = client.execute(LONG_QUERY.into(), None).await.unwrap();
    let mut runner = client.clone();
    let running = {
        let info = info.clone();
        tokio::spawn(async move { fetch(&mut runner, info).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    cancel(&mut client, &info).await;
    let outcome = tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("stops promptly")
        .unwrap();
    assert_eq!(outcome.unwrap_err().code(), Code::Cancelled);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_ticket_fetched_twice_at_once_runs_twice() {
    let server = start(config("", "")).await;
    let mut client = login(&server, "alice").await;
    let info = client
        .execute(
            "SELECT count(*) FROM range(0, 30000000) a WHERE a.value % 3 = 0".into(),
            None,
        )
        .await
        .unwrap();
    let (mut a, mut b) = (client.clone(), client.clone());
    let (ra, rb) = tokio::join!(fetch(&mut a, info.clone()), fetch(&mut b, info));
    assert_eq!(rows(&ra.unwrap()), vec![vec!["10000000".to_string()]]);
    assert_eq!(rows(&rb.unwrap()), vec![vec!["10000000".to_string()]]);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn dropping_the_stream_stops_the_query_and_frees_its_slot() {
    let server = start(config("", "limits: {maxConcurrentQueries: 1, queryTimeout: 120}\n")).await;
    let mut client = login(&server, "alice").await;
    let info = client.execute(LONG_QUERY.into(), None).await.unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let mut stream = client.do_get(ticket).await.unwrap();
    // The query holds the only slot; give it time to start, then walk away.
    let _ = tokio::time::timeout(Duration::from_millis(300), stream.next()).await;
    drop(stream);
    // If the dropped query kept running, this one would wait for the slot (up to 120 s).
    let quick = tokio::time::timeout(Duration::from_secs(20), sql(&mut client, "SELECT 1")).await;
    assert_eq!(quick.expect("the slot was freed").unwrap(), vec![vec!["1".to_string()]]);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn time_and_memory_limits() {
    let server = start(config("", "limits: {queryTimeout: 1, memoryPerQuery: 1MiB}\n")).await;
    let mut client = login(&server, "alice").await;
    let e = sql(&mut client, LONG_QUERY).await.unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e}");
    assert!(e.message().contains("time limit of 1 s"), "{e}");
    let e = sql(&mut client, "SELECT array_agg(value) FROM range(0, 3000000)")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e}");
    // Small queries still run.
    assert!(sql(&mut client, "SELECT count(*) FROM mesh.order.transactions")
        .await
        .is_ok());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn large_results_stream_in_messages_under_the_grpc_limit() {
    let server = start(config("", "")).await;
    let mut client = login(&server, "alice").await;
    // ~25 MB of strings; the client keeps tonic's default 4 MiB message limit.
    let info = client
        .execute(
            "SELECT value, repeat('x', 120) AS pad FROM range(0, 200000)".into(),
            None,
        )
        .await
        .unwrap();
    let batches = fetch(&mut client, info).await.unwrap();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 200_000);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn view_types_are_sent_plain_by_default_and_values_round_trip() {
    let query = "SELECT full_name, \
        arrow_cast('2024-03-01T12:34:56.123456789', 'Timestamp(Nanosecond, Some(\"Europe/Berlin\"))') AS ts, \
        CAST(12345.678 AS DECIMAL(12, 3)) AS amount FROM mesh.customer.profiles ORDER BY customer_id LIMIT 3";
    let principal = Principal::new("alice").with_groups(["analysts", "pii-readers"]);
    let local = sample_mesh()
        .session(principal.clone())
        .sql(query)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    for plain in [true, false] {
        let server = start(config("", &format!("results: {{plainTypes: {plain}}}\n"))).await;
        let mut client = login(&server, "alice").await;
        let info = client.execute(query.into(), None).await.unwrap();
        let batches = fetch(&mut client, info).await.unwrap();
        let schema = batches[0].schema();
        let name_type = schema.field(0).data_type().clone();
        if plain {
            assert_eq!(name_type, DataType::Utf8);
        } else {
            assert_eq!(&name_type, local[0].schema().field(0).data_type());
        }
        assert_eq!(schema.field(1).data_type(), local[0].schema().field(1).data_type());
        assert_eq!(schema.field(2).data_type(), &DataType::Decimal128(12, 3));
        assert_eq!(schema.field(2).metadata()["ARROW:FLIGHT:SQL:PRECISION"], "12");
        // Values identical, column by column (timestamps to the nanosecond, with their zone).
        for c in 1..3 {
            assert_eq!(batches[0].column(c).to_data(), local[0].column(c).to_data());
        }
        assert_eq!(rows(&batches), rows(&local));
        server.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn session_options_choose_the_current_domain() {
    let server = start(config("", "")).await;
    let mut client = login(&server, "alice").await;
    let token = client.token().cloned().unwrap();
    // SetSessionOptions through the raw Flight client, to read the cookie it sets.
    let mut inner = client.inner().clone();
    let mut options = std::collections::HashMap::new();
    options.insert("schema".to_string(), string_option("order"));
    options.insert("nonsense".to_string(), string_option("x"));
    let body = SetSessionOptionsRequest {
        session_options: options,
    }
    .encode_to_vec();
    let mut request = tonic::Request::new(Action::new("SetSessionOptions", body));
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let response = inner.do_action(request).await.unwrap();
    let cookie = response
        .metadata()
        .get("set-cookie")
        .expect("a session cookie")
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let results: Vec<_> = response.into_inner().try_collect().await.unwrap();
    let result = SetSessionOptionsResult::decode(&*results[0].body).unwrap();
    assert!(result.errors.contains_key("nonsense") && !result.errors.contains_key("schema"));
    client.set_header("cookie", cookie.clone());
    // Unqualified names now resolve in the order domain.
    let n = sql(&mut client, "SELECT count(*) FROM transactions").await.unwrap();
    assert_eq!(
        n,
        sql(&mut client, "SELECT count(*) FROM mesh.order.transactions")
            .await
            .unwrap()
    );
    // GetSessionOptions reads it back; CloseSession expires it.
    let mut request = tonic::Request::new(Action::new("GetSessionOptions", Vec::<u8>::new()));
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request.metadata_mut().insert("cookie", cookie.parse().unwrap());
    let results: Vec<_> = inner
        .do_action(request)
        .await
        .unwrap()
        .into_inner()
        .try_collect()
        .await
        .unwrap();
    let options = GetSessionOptionsResult::decode(&*results[0].body).unwrap();
    assert_eq!(options.session_options["schema"], string_option("order"));
    let mut request = tonic::Request::new(Action::new("CloseSession", Vec::<u8>::new()));
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let closed = inner.do_action(request).await.unwrap();
    assert!(closed
        .metadata()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    // The cookie is bound to its principal: Carl cannot use Alice's.
    let mut carl = login(&server, "carl").await;
    carl.set_header("cookie", cookie);
    assert!(sql(&mut carl, "SELECT count(*) FROM transactions").await.is_err());
    server.shutdown().await.unwrap();
}

// The Flight session messages, declared here as the spec defines them (the client side).
#[derive(Clone, PartialEq, prost::Message)]
struct SessionOptionValue {
    #[prost(oneof = "OptionValue", tags = "1")]
    option_value: Option<OptionValue>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum OptionValue {
    #[prost(string, tag = "1")]
    StringValue(String),
}

#[derive(Clone, PartialEq, prost::Message)]
struct SetSessionOptionsRequest {
    #[prost(map = "string, message", tag = "1")]
    session_options: std::collections::HashMap<String, SessionOptionValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct GetSessionOptionsResult {
    #[prost(map = "string, message", tag = "1")]
    session_options: std::collections::HashMap<String, SessionOptionValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SetSessionOptionsError {
    #[prost(int32, tag = "1")]
    value: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SetSessionOptionsResult {
    #[prost(map = "string, message", tag = "1")]
    errors: std::collections::HashMap<String, SetSessionOptionsError>,
}

fn string_option(s: &str) -> SessionOptionValue {
    SessionOptionValue {
        option_value: Some(OptionValue::StringValue(s.into())),
    }
}

#[tokio::test]
async fn bad_input_fails_alone_and_the_server_keeps_serving() {
    // A copy of the sample mesh whose Delta product lost its log.
    let dir = tempfile::tempdir().unwrap();
    meshql_testdata::copy_dir(&repo().join("testdata/mesh"), dir.path()).unwrap();
    std::fs::remove_dir_all(dir.path().join("domains/order/data/shipments/_delta_log")).unwrap();
    let mesh = meshql::Mesh::open(dir.path()).unwrap();
    let server = meshql_flight::serve(mesh, config("", "")).await.unwrap();
    let mut client = login(&server, "alice").await;
    let e = sql(&mut client, "SELECT count(*) FROM mesh.order.shipments")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e}");
    assert!(e.message().contains("mesh.order.shipments"), "{e}");
    // Listing with schemas still works: the broken product is described from its contract.
    let info = client
        .get_tables(arrow_flight::sql::CommandGetTables {
            catalog: None,
            db_schema_filter_pattern: Some("order".into()),
            table_name_filter_pattern: None,
            table_types: vec![],
            include_schema: true,
        })
        .await
        .unwrap();
    assert_eq!(rows(&fetch(&mut client, info).await.unwrap()).len(), 2);
    // Garbage tickets and commands.
    for garbage in [vec![], vec![0xff; 40], b"not protobuf at all".to_vec()] {
        let e = client
            .do_get(arrow_flight::Ticket::new(garbage.clone()))
            .await
            .err()
            .map(status);
        assert!(
            e.is_some_and(|e| e.code() != Code::Ok && e.code() != Code::Unknown),
            "ticket {garbage:?}"
        );
        let request = with_token(&client, arrow_flight::FlightDescriptor::new_cmd(garbage));
        let e = client.inner_mut().get_flight_info(request).await.unwrap_err();
        assert_ne!(e.code(), Code::Internal, "{e}");
    }
    // Everything else still answers.
    assert!(sql(&mut client, "SELECT count(*) FROM mesh.order.transactions")
        .await
        .is_ok());
    server.shutdown().await.unwrap();
}

fn with_token<T>(
    client: &arrow_flight::sql::client::FlightSqlServiceClient<tonic::transport::Channel>,
    msg: T,
) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    let token = client.token().cloned().unwrap_or_default();
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

#[tokio::test]
async fn large_queries_run_at_low_priority_with_the_same_answers_and_limits() {
    // Every query that reads a product is "large" here.
    let server = start(config("", "limits: {largeQueryRows: 1, queryTimeout: 2}\n")).await;
    let mut client = login(&server, "alice").await;
    let principal = Principal::new("alice").with_groups(["analysts", "pii-readers"]);
    for query in [CROSS_DOMAIN, "SELECT * FROM mesh.order.transactions ORDER BY 1, 2"] {
        let planned = sample_mesh()
            .session(principal.clone())
            .sql(query)
            .await
            .unwrap()
            .into_runnable(None)
            .await
            .unwrap();
        assert!(meshql_flight::priority::rows_read(planned.plan()) > 1, "{query}");
        let wire = sql(&mut client, query).await.unwrap();
        assert!(!wire.is_empty());
        assert_eq!(wire, embedded(principal.clone(), query).await, "{query}");
    }
    // A long query on a product stops at the time limit like any other.
    let e = sql(
        &mut client,
        "SELECT count(*) FROM mesh.order.transactions, range(0, 2000000000) r WHERE r.value % 7 = 3",
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e}");
    // And the server goes on answering.
    assert!(sql(&mut client, "SELECT count(*) FROM mesh.order.transactions")
        .await
        .is_ok());
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_reading_gives_its_slot_back_at_the_deadline() {
    let server = start(config(
        "",
        "limits: {queryTimeout: 3, maxConcurrentQueries: 1, largeQueryRows: 0}\n",
    ))
    .await;
    // A starts a large result, takes its first message and then stops reading (the stream is
    // kept, never polled again).
    let mut a = login(&server, "alice").await;
    let info = a
        .execute(
            "SELECT t1.*, t2.* FROM mesh.order.transactions t1, mesh.order.transactions t2".into(),
            None,
        )
        .await
        .expect("planned");
    let ticket = info.endpoint[0].ticket.clone().expect("ticket");
    let mut stalled = a.do_get(ticket).await.expect("started");
    let _first = stalled.next().await;
    tokio::time::sleep(std::time::Duration::from_millis(2000)).await;
    // B waits for the only slot: it gets it when A's time is up (3 s), not when A hangs up; B's
    // own wait would last until 5 s.
    let mut b = login(&server, "carl").await;
    let rows = sql(&mut b, "SELECT count(*) FROM mesh.order.transactions")
        .await
        .expect("the bystander is served once the stalled query's time is up");
    assert_eq!(rows.len(), 1);
    drop(stalled);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_bound_queries_stop_at_their_deadline_while_calls_and_lookups_go_on() {
    let server = start(config(
        "",
        "limits: {queryTimeout: 2, maxConcurrentQueries: 5, largeQueryRows: 0}\n",
    ))
    .await;
    // Four clients start queries that would compute for far longer than the time limit.
    let mut heavy = Vec::new();
    for _ in 0..4 {
        let mut client = login(&server, "alice").await;
        heavy.push(tokio::spawn(async move {
            sql(
                &mut client,
                "SELECT cardinality(array_agg(a.value)) FROM generate_series(1, 200000000) a",
            )
            .await
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    // Meanwhile a new client connects, logs in, looks up tables and runs a lookup.
    let bystander = async {
        let mut b = login(&server, "carl").await;
        let tables = b
            .get_tables(arrow_flight::sql::CommandGetTables {
                db_schema_filter_pattern: Some("order".into()),
                ..Default::default()
            })
            .await
            .expect("GetTables planned");
        fetch(&mut b, tables).await.expect("GetTables answered");
        sql(
            &mut b,
            "SELECT count(*) FROM mesh.order.transactions WHERE order_id = 1",
        )
        .await
        .expect("the lookup answers")
    };
    let rows = tokio::time::timeout(std::time::Duration::from_secs(30), bystander)
        .await
        .expect("the bystander was answered while the heavy queries ran");
    assert_eq!(rows.len(), 1);
    for h in heavy {
        let e = h.await.unwrap().expect_err("stopped at the deadline");
        assert_eq!(e.code(), Code::DeadlineExceeded, "{e}");
    }
    // Their slots are free again: five queries at once each get one.
    let mut after = Vec::new();
    for _ in 0..5 {
        let mut client = login(&server, "alice").await;
        after.push(tokio::spawn(async move {
            sql(&mut client, "SELECT count(*) FROM mesh.order.transactions").await
        }));
    }
    for h in after {
        h.await.unwrap().expect("served");
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_client_that_executes_its_original_handle_gets_the_values_it_bound() {
    use arrow::array::RecordBatch;
    use arrow::datatypes::{Field, Schema};
    use arrow_flight::sql::{
        ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult, Any, CommandPreparedStatementQuery,
        ProstMessageExt,
    };
    use arrow_flight::FlightDescriptor;
    use std::sync::Arc;
    let server = start(config("", "")).await;
    let mut client = login(&server, "alice").await;
    let token = client.token().cloned().expect("token");
    let mut raw = client.inner().clone();
    fn with_token<T>(mut r: tonic::Request<T>, token: &str) -> tonic::Request<T> {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        r
    }
    // As flightsql-dbapi does: prepare, bind with DoPut, then execute the handle it created.
    let create = ActionCreatePreparedStatementRequest {
        query: "SELECT count(*) FROM mesh.order.transactions WHERE order_id < ?".into(),
        transaction_id: None,
    };
    let response = raw
        .do_action(with_token(
            tonic::Request::new(Action::new("CreatePreparedStatement", create.as_any().encode_to_vec())),
            &token,
        ))
        .await
        .expect("prepared");
    let results: Vec<_> = response.into_inner().try_collect().await.expect("result");
    let created: ActionCreatePreparedStatementResult = Any::decode(&*results[0].body)
        .unwrap()
        .unpack()
        .unwrap()
        .expect("a prepared statement");
    let handle = created.prepared_statement_handle.clone();
    let command = CommandPreparedStatementQuery {
        prepared_statement_handle: handle.clone(),
    };
    let values = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("$1", DataType::Int64, false)])),
        vec![Arc::new(arrow::array::Int64Array::from(vec![50]))],
    )
    .unwrap();
    let upload = arrow_flight::encode::FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(FlightDescriptor::new_cmd(command.as_any().encode_to_vec())))
        .build(futures::stream::iter([Ok(values)]))
        .map(|d| d.expect("encoded"));
    let put: Vec<_> = raw
        .do_put(with_token(tonic::Request::new(upload), &token))
        .await
        .expect("bound")
        .into_inner()
        .try_collect()
        .await
        .expect("bound");
    assert_eq!(put.len(), 1);
    // Executing the original handle runs with the bound value.
    let info = raw
        .get_flight_info(with_token(
            tonic::Request::new(FlightDescriptor::new_cmd(command.as_any().encode_to_vec())),
            &token,
        ))
        .await
        .expect("planned with the bound value")
        .into_inner();
    let got = rows(&fetch(&mut client, info).await.expect("runs"));
    let want = sql(
        &mut client,
        "SELECT count(*) FROM mesh.order.transactions WHERE order_id < 50",
    )
    .await
    .unwrap();
    assert_eq!(got, want);
    // Closing the statement forgets the values.
    raw.do_action(with_token(
        tonic::Request::new(Action::new(
            "ClosePreparedStatement",
            arrow_flight::sql::ActionClosePreparedStatementRequest {
                prepared_statement_handle: handle,
            }
            .as_any()
            .encode_to_vec(),
        )),
        &token,
    ))
    .await
    .expect("closed");
    let info = raw
        .get_flight_info(with_token(
            tonic::Request::new(FlightDescriptor::new_cmd(command.as_any().encode_to_vec())),
            &token,
        ))
        .await
        .expect("planned")
        .into_inner();
    let e = fetch(&mut client, info).await.expect_err("no value bound any more");
    assert!(e.message().contains("$1") || e.message().contains("laceholder"), "{e}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_query_answered_at_its_deadline_is_recorded_then_not_when_its_work_ends() {
    let dir = tempfile::tempdir().unwrap();
    meshql_testdata::copy_dir(&repo().join("testdata/mesh"), dir.path()).unwrap();
    let mesh = meshql::Mesh::open(dir.path()).unwrap();
    let server = meshql_flight::serve(mesh.clone(), config("", "limits: {queryTimeout: 1}\n"))
        .await
        .unwrap();
    let mut client = login(&server, "alice").await;
    // Work that does not yield for a few seconds, within the functions' cost limit: once while
    // planning (constant folding), once while running.
    let planning = "SELECT levenshtein(repeat('a', 11000), repeat('b', 11000))";
    let running = "SELECT levenshtein(repeat('a', 11000 + g * 0), repeat('b', 11000)) FROM generate_series(1, 1) t(g)";
    for statement in [planning, running] {
        let e = sql(&mut client, statement).await.expect_err("past the deadline");
        assert_eq!(e.code(), Code::DeadlineExceeded, "{statement}: {e}");
        // The record is there at once, while the computation goes on.
        let records = mesh.audit().expect("audit on").read_all().expect("read");
        let mine: Vec<_> = records.iter().filter(|r| r.statement == statement).collect();
        assert_eq!(mine.len(), 1, "{statement}: {mine:?}");
        assert_eq!(mine[0].outcome, "error", "{mine:?}");
        assert!(
            mine[0].error.as_deref().is_some_and(|e| e.contains("time limit")),
            "{mine:?}"
        );
    }
    // When the work ends it records nothing more: one record per query.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let records = mesh.audit().expect("audit on").read_all().expect("read");
    for statement in [planning, running] {
        let mine: Vec<_> = records.iter().filter(|r| r.statement == statement).collect();
        assert_eq!(mine.len(), 1, "{statement}: {mine:?}");
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn work_that_never_yields_past_its_deadline_leaves_others_planned_and_run() {
    let server = start(config(
        "",
        "limits: {queryTimeout: 2, maxConcurrentQueries: 8, largeQueryRows: 0}\n",
    ))
    .await;
    // Two queries whose nested-loop join computes for minutes inside single polls: they are
    // answered at their deadline, and their threads stay busy after it.
    let mut heavy = Vec::new();
    for m in [97, 89] {
        let mut client = login(&server, "alice").await;
        heavy.push(tokio::spawn(async move {
            sql(
                &mut client,
                &format!(
                    "SELECT count(*) FROM generate_series(1, 300000) a(x), generate_series(1, 300000) b(y) \
                     WHERE (x * y) % {m} = 3"
                ),
            )
            .await
        }));
    }
    for h in heavy {
        let e = h.await.unwrap().expect_err("stopped at the deadline");
        assert_eq!(e.code(), Code::DeadlineExceeded, "{e}");
    }
    // While they go on, other statements are still planned, run and answered.
    let mut b = login(&server, "carl").await;
    for _ in 0..3 {
        let rows = tokio::time::timeout(Duration::from_secs(20), sql(&mut b, "SELECT 1"))
            .await
            .expect("answered while the runaway work goes on")
            .expect("SELECT 1");
        assert_eq!(rows.len(), 1);
    }
    let rows = tokio::time::timeout(
        Duration::from_secs(20),
        sql(
            &mut b,
            "SELECT count(*) FROM mesh.order.transactions WHERE order_id = 1",
        ),
    )
    .await
    .expect("a lookup answered while the runaway work goes on")
    .expect("the lookup");
    assert_eq!(rows.len(), 1);
    server.shutdown().await.ok();
}
