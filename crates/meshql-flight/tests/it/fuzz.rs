//! Seeded fuzzing of what a client sends the server as bytes: tickets and statement handles
//! (sealed by the server), prepared-statement handles, Flight SQL commands, action bodies and
//! handshake payloads — valid ones mutated, and random ones. Each must be refused with a
//! status of its own (never a panic, never UNKNOWN), and the server must keep serving.
//!
//! `MESHQL_FUZZ_CASES` and `MESHQL_FUZZ_SEED` make a longer or different run.

use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::{
    ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult, Any, CommandPreparedStatementQuery,
    CommandStatementQuery, ProstMessageExt,
};
use arrow_flight::{Action, FlightDescriptor, HandshakeRequest, Ticket};
use futures::StreamExt;
use prost::Message;
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;
use tonic::Code;

use crate::common::*;

fn cases() -> usize {
    std::env::var("MESHQL_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

fn rng() -> rand::rngs::StdRng {
    let seed = std::env::var("MESHQL_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_261_202);
    rand::rngs::StdRng::seed_from_u64(seed)
}

/// `bytes` with a few random edits (flips, truncation, extension, splices), or random bytes.
fn mutate(rng: &mut impl Rng, bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    match rng.random_range(0..6) {
        0 => {
            let n = rng.random_range(0..64);
            return (0..n).map(|_| rng.random()).collect();
        }
        1 if !out.is_empty() => out.truncate(rng.random_range(0..out.len())),
        2 => out.extend((0..rng.random_range(1..32)).map(|_| rng.random::<u8>())),
        _ => {}
    }
    for _ in 0..rng.random_range(1..4) {
        if out.is_empty() {
            break;
        }
        let i = rng.random_range(0..out.len());
        out[i] ^= 1 << rng.random_range(0..8);
    }
    out
}

fn authed<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().expect("header"));
    request
}

/// A refusal must be an answer: a status with a code of its own and a message.
fn refused(what: &str, input: &[u8], status: tonic::Status) {
    assert_ne!(status.code(), Code::Unknown, "{what} {input:?}: {status}");
    assert!(!status.message().is_empty(), "{what} {input:?}: an empty message");
}

/// Reads a DoGet answer to its end; its failure, if any.
async fn drain(client: &mut FlightServiceClient<Channel>, ticket: Vec<u8>, token: &str) -> Result<(), tonic::Status> {
    let mut stream = client.do_get(authed(Ticket::new(ticket), token)).await?.into_inner();
    while let Some(item) = stream.next().await {
        item?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutated_tickets_handles_commands_and_actions_are_refused_and_the_server_goes_on() {
    let server = start(config("", "")).await;
    let mut sql_client = login(&server, "sam").await;
    let token = sql_client.token().cloned().expect("token");
    let mut raw = sql_client.inner().clone();
    // Valid material to mutate: a statement ticket, a prepared statement's handle, commands.
    let info = sql_client
        .execute("SELECT customer_id FROM mesh.customer.profiles".into(), None)
        .await
        .expect("planned");
    let ticket = info.endpoint[0].ticket.clone().expect("ticket").ticket.to_vec();
    let create = ActionCreatePreparedStatementRequest {
        query: "SELECT customer_id FROM mesh.customer.profiles WHERE customer_id > 3".into(),
        transaction_id: None,
    };
    let response = raw
        .do_action(authed(
            Action::new("CreatePreparedStatement", create.as_any().encode_to_vec()),
            &token,
        ))
        .await
        .expect("prepared");
    let results: Vec<_> = response.into_inner().collect().await;
    let result = results[0].as_ref().expect("a result");
    let created = Any::decode(&*result.body)
        .ok()
        .and_then(|any| any.unpack::<ActionCreatePreparedStatementResult>().ok().flatten())
        .expect("a prepared statement");
    let handle = created.prepared_statement_handle.to_vec();
    let commands: Vec<Vec<u8>> = vec![
        CommandStatementQuery {
            query: "SELECT 1".into(),
            transaction_id: None,
        }
        .as_any()
        .encode_to_vec(),
        CommandPreparedStatementQuery {
            prepared_statement_handle: handle.clone().into(),
        }
        .as_any()
        .encode_to_vec(),
        arrow_flight::sql::CommandGetTables {
            catalog: Some("mesh".into()),
            db_schema_filter_pattern: Some("%".into()),
            table_name_filter_pattern: Some("%".into()),
            table_types: vec![],
            include_schema: true,
        }
        .as_any()
        .encode_to_vec(),
    ];
    let actions = [
        "CreatePreparedStatement",
        "ClosePreparedStatement",
        "CancelQuery",
        "CancelFlightInfo",
        "SetSessionOptions",
        "GetSessionOptions",
        "CloseSession",
        "RenewFlightEndpoint",
        "nonsense",
    ];
    let mut rng = rng();
    for case in 0..cases() {
        match case % 5 {
            0 => {
                let bytes = mutate(&mut rng, &ticket);
                if let Err(status) = drain(&mut raw, bytes.clone(), &token).await {
                    refused("ticket", &bytes, status);
                }
            }
            1 => {
                let base = &commands[rng.random_range(0..commands.len())];
                let bytes = mutate(&mut rng, base);
                let request = authed(FlightDescriptor::new_cmd(bytes.clone()), &token);
                if let Err(status) = raw.get_flight_info(request).await {
                    refused("command", &bytes, status);
                }
            }
            2 => {
                // A well-formed Any of a Flight SQL type around mutated contents.
                let base = &commands[rng.random_range(0..commands.len())];
                let any = Any::decode(&**base).expect("any");
                let mutated = Any {
                    type_url: any.type_url.clone(),
                    value: mutate(&mut rng, &any.value).into(),
                }
                .encode_to_vec();
                if let Err(status) = drain(&mut raw, mutated.clone(), &token).await {
                    refused("ticket command", &mutated, status);
                }
            }
            3 => {
                let kind = actions[rng.random_range(0..actions.len())];
                let body = mutate(&mut rng, &ticket);
                let request = authed(Action::new(kind, body.clone()), &token);
                match raw.do_action(request).await {
                    Ok(response) => {
                        let mut stream = response.into_inner();
                        while let Some(item) = stream.next().await {
                            if let Err(status) = item {
                                refused(kind, &body, status);
                                break;
                            }
                        }
                    }
                    Err(status) => refused(kind, &body, status),
                }
            }
            _ => {
                let payload = mutate(&mut rng, b"sam:sam-demo");
                let mut anonymous = FlightServiceClient::new(channel(&server).await);
                let request = futures::stream::iter([HandshakeRequest {
                    protocol_version: 0,
                    payload: payload.clone().into(),
                }]);
                match anonymous.handshake(request).await {
                    Ok(response) => {
                        let mut stream = response.into_inner();
                        while let Some(item) = stream.next().await {
                            if let Err(status) = item {
                                refused("handshake", &payload, status);
                                break;
                            }
                        }
                    }
                    Err(status) => refused("handshake", &payload, status),
                }
            }
        }
    }
    // The server still serves, the original ticket included.
    drain(&mut raw, ticket, &token)
        .await
        .expect("the original ticket still works");
    assert_eq!(
        sql(
            &mut sql_client,
            "SELECT count(*) FROM mesh.customer.profiles WHERE customer_id = 7"
        )
        .await
        .expect("served")
        .len(),
        1
    );
    server.shutdown().await.unwrap();
}
