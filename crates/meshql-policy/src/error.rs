//! Policy errors.

use std::path::PathBuf;
use std::sync::Arc;

use datafusion::error::DataFusionError;

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

/// A policy refusal: the principal may not read what the query asks for (a product, a column,
/// storage outside a barrier). Raised at plan time, carried through DataFusion as an external
/// error and recognised by its type ([`find_in`]), never by its text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct AccessDenied {
    /// The whole message for the principal: what, why and whom to ask.
    pub message: String,
}

impl AccessDenied {
    pub fn new(message: impl Into<String>) -> Self {
        AccessDenied {
            message: message.into(),
        }
    }
}

impl From<AccessDenied> for DataFusionError {
    fn from(e: AccessDenied) -> Self {
        DataFusionError::External(Box::new(e))
    }
}

/// An error raised below a policy barrier: while reading a product's stored rows or evaluating
/// its row filter or masks, on rows and values the principal may not see (a cast in a row filter
/// failing on a hidden row's value, a custom mask failing on the unmasked value). The cause may
/// contain those values, so the message names only the product, the rules and whom to ask. The
/// cause is kept in `cause` for administrators and the server log — deliberately not as the
/// error's `source()`, so that printing the error chain (`anyhow`'s `{:#}`) cannot show it.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "{table} could not be read: {what} failed on data you may not see, so the error's details are withheld{}",
    ask(contact)
)]
pub struct PolicyEvaluationFailed {
    /// `mesh.<domain>.<table>`.
    pub table: String,
    /// What was being evaluated: "its row filter and masks (rules 'a', 'b') or its stored data".
    pub what: String,
    /// Whom to ask (the product's owner and support channel), if known.
    pub contact: Option<String>,
    pub cause: Arc<DataFusionError>,
}

fn ask(contact: &Option<String>) -> String {
    contact
        .as_ref()
        .map(|c| format!("; contact the product owner: {c}"))
        .unwrap_or_default()
}

impl From<PolicyEvaluationFailed> for DataFusionError {
    fn from(e: PolicyEvaluationFailed) -> Self {
        DataFusionError::External(Box::new(e))
    }
}

/// The first error of type `T` in `e`'s chain: through DataFusion's context, shared, external,
/// diagnostic and Arrow-external wrappers, and the standard `source()` chain of external errors.
pub fn find_in<T: std::error::Error + 'static>(e: &DataFusionError) -> Option<&T> {
    match e {
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => find_in(inner),
        DataFusionError::Shared(inner) => find_in(inner),
        DataFusionError::Collection(all) => all.iter().find_map(find_in),
        DataFusionError::External(inner) => find_in_error(inner.as_ref()),
        DataFusionError::ArrowError(arrow, _) => match arrow.as_ref() {
            arrow::error::ArrowError::ExternalError(inner) => find_in_error(inner.as_ref()),
            _ => None,
        },
        _ => None,
    }
}

/// [`find_in`] over a standard error chain (an external error may wrap a `DataFusionError`).
pub fn find_in_error<'a, T: std::error::Error + 'static>(
    e: &'a (dyn std::error::Error + Send + Sync + 'static),
) -> Option<&'a T> {
    if let Some(t) = e.downcast_ref::<T>() {
        return Some(t);
    }
    if let Some(df) = e.downcast_ref::<DataFusionError>() {
        return find_in(df);
    }
    if let Some(arrow::error::ArrowError::ExternalError(inner)) = e.downcast_ref::<arrow::error::ArrowError>() {
        return find_in_error(inner.as_ref());
    }
    None
}
