//! Policy errors.

use std::path::PathBuf;

/// A policy file that cannot be used, or a policy that cannot be applied.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PolicyError {
    /// A policy file that does not load: what and where.
    #[error("{}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    /// A rule that loads but cannot be applied to a product (a row filter that does not parse,
    /// names a missing column, …). Queries on that product fail.
    #[error("policy rule '{rule}' cannot be applied to {table}: {reason}")]
    Inapplicable {
        rule: String,
        table: String,
        reason: String,
    },
}
