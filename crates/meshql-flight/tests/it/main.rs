//! Flight SQL end to end, in-process: a real server on 127.0.0.1 (free port) over the sample
//! mesh, driven by arrow-flight's Flight SQL client through gRPC.

mod common;

mod auth;
mod fuzz;
mod metadata;
mod queries;
