//! Who may read what, decided and enforced at plan time: meshql's federated computational
//! governance.
//!
//! - [`Principal`]: an identity with groups and attributes. Its attributes come only from the
//!   embedding application or, over the network, from verified authentication — never from
//!   anything a query can set — which is why there is no way to build one from SQL.
//! - [`PolicySet`]: the global policy file at the mesh root and one file per domain
//!   (`policies.yaml`), loaded and checked ([`load`], [`model`]).
//! - [`PolicySet::decide`]: deny by default, deny wins, grants combine ([`decide`]).
//! - [`enforce`]: the plan a principal gets for a product — scan → row filter → masks behind a
//!   barrier that only leak-proof predicates cross — and the rules that keep it so.
//!
//! The model, with worked examples, is documented in `docs/policies.md`.

pub mod decide;
pub mod enforce;
pub mod error;
pub mod lint;
pub mod load;
pub mod mask;
pub mod model;
mod principal;
pub mod sql_text;

pub use decide::{Access, ColumnAccess, Decision, ProductRef, Refusal, RowFilter};
pub use enforce::{GovernedTable, PolicyCheck, SelfGovernedTable};
pub use error::PolicyError;
pub use load::{PolicySet, POLICY_FILE};
pub use model::{ColumnInfo, MaskSpec, Privilege, TableIdentity};
pub use principal::Principal;
