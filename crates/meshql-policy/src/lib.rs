//! Who is asking: principals, the input of every access decision.
//!
//! A [`Principal`] is an identity (a user or a service) with groups and attributes (region,
//! department, purpose, …). Its attributes come only from the embedding application or, over the
//! network, from verified authentication — never from anything a query can set — which is why
//! there is no way to build one from SQL.

mod principal;

pub use principal::Principal;
