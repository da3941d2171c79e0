//! Policy expressions: row filters and custom masks parsed over a product's schema, with the
//! principal's identity (`${principal.…}`, `principal_in_group(…)`) substituted as literals.

use std::any::Any;
use std::sync::{Arc, LazyLock};

use arrow::datatypes::DataType;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{plan_err, DFSchemaRef, Result as DFResult, ScalarValue};
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::{
    lit, ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::optimizer::simplify_expressions::ExprSimplifier;

use crate::Principal;

/// Placeholders a policy expression may use for the principal's identity.
#[derive(Debug, PartialEq, Eq, Hash)]
struct PrincipalPlaceholder {
    name: &'static str,
    returns: DataType,
    signature: Signature,
}

impl ScalarUDFImpl for PrincipalPlaceholder {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> DFResult<DataType> {
        Ok(self.returns.clone())
    }
    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> DFResult<ColumnarValue> {
        plan_err!("{}() may only be used in access policies", self.name)
    }
}

/// A session used only to parse policy expressions: default functions plus the placeholders.
static POLICY_PARSER: LazyLock<SessionState> = LazyLock::new(|| {
    let placeholders = [
        (
            "principal_attribute",
            DataType::Utf8,
            Signature::exact(vec![DataType::Utf8], Volatility::Immutable),
        ),
        (
            "principal_in_group",
            DataType::Boolean,
            Signature::exact(vec![DataType::Utf8], Volatility::Immutable),
        ),
        (
            "principal_id",
            DataType::Utf8,
            Signature::exact(vec![], Volatility::Immutable),
        ),
    ];
    let mut functions: Vec<Arc<ScalarUDF>> = datafusion::functions::all_default_functions();
    for (name, returns, signature) in placeholders {
        functions.push(Arc::new(ScalarUDF::new_from_impl(PrincipalPlaceholder {
            name,
            returns,
            signature,
        })));
    }
    SessionStateBuilder::new()
        .with_default_features()
        .with_scalar_functions(functions)
        .build()
});

/// Why a policy expression cannot be used; the expression is part of every message.
#[derive(Debug, thiserror::Error)]
pub enum PolicyExprError {
    /// A placeholder (`${principal.…}`, `{column}`) is malformed or out of place.
    #[error("`{expression}`: {reason}")]
    Placeholder { expression: String, reason: String },
    /// The expression does not tokenize.
    #[error("`{expression}`: {source}")]
    Tokens {
        expression: String,
        #[source]
        source: datafusion::sql::sqlparser::tokenizer::TokenizerError,
    },
    /// It does not parse, names what the product does not have, or its types do not meet.
    #[error("`{expression}`: {}", .source.strip_backtrace())]
    Plan {
        expression: String,
        #[source]
        source: datafusion::error::DataFusionError,
    },
    /// A subquery, aggregate or window function: a policy is a condition on one row.
    #[error("`{expression}`: subqueries, aggregates and window functions are not allowed in policies")]
    NotARowCondition { expression: String },
}

/// Parses a row filter or custom mask over `schema`, with the principal's values substituted
/// as literals (never as SQL text) and `{column}` standing for `column`.
///
/// `${principal.id}`, `${principal.<attribute>}` are shorthands for `principal_id()` and
/// `principal_attribute('<attribute>')`; `principal_in_group('<group>')` tests membership. A
/// missing attribute is NULL, so a filter comparing with it keeps no row.
pub fn parse_policy_expr(
    sql: &str,
    schema: &DFSchemaRef,
    principal: &Principal,
    column: Option<&str>,
) -> Result<Expr, PolicyExprError> {
    let plan = |source| PolicyExprError::Plan {
        expression: sql.to_string(),
        source,
    };
    let text = expand_placeholders(sql, column)?;
    let expr = POLICY_PARSER.create_logical_expr(&text, schema).map_err(plan)?;
    let expr = expr
        .transform(|e| {
            let Expr::ScalarFunction(ScalarFunction { func, args }) = &e else {
                return Ok(Transformed::no(e));
            };
            if func.inner().as_any().downcast_ref::<PrincipalPlaceholder>().is_none() {
                return Ok(Transformed::no(e));
            }
            let arg = match args.first() {
                Some(Expr::Literal(ScalarValue::Utf8(Some(s)), _)) => Some(s.clone()),
                Some(_) => return plan_err!("{}() takes a string literal", func.name()),
                None => None,
            };
            let value = match (func.name(), arg) {
                ("principal_id", _) => lit(principal.id()),
                ("principal_attribute", Some(a)) => lit(ScalarValue::Utf8(principal.attribute(&a).map(String::from))),
                ("principal_in_group", Some(g)) => lit(principal.in_group(&g)),
                (name, _) => return plan_err!("{name}() is missing its argument"),
            };
            Ok(Transformed::yes(value))
        })
        .map_err(plan)?
        .data;
    let mut bad = false;
    expr.apply(|e| {
        if matches!(
            e,
            Expr::ScalarSubquery(_)
                | Expr::Exists(_)
                | Expr::InSubquery(_)
                | Expr::AggregateFunction(_)
                | Expr::WindowFunction(_)
        ) {
            bad = true;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .map_err(plan)?;
    if bad {
        return Err(PolicyExprError::NotARowCondition {
            expression: sql.to_string(),
        });
    }
    // Types and constants are settled now, not while a user's query is optimised: a policy
    // whose literal does not convert (`order_date = 'zz'`) or whose types do not meet fails as
    // this rule (a refusal naming it), never as a planner error quoting the filter's text.
    let simplifier = ExprSimplifier::new(SimplifyContext::default().with_schema(schema.clone()));
    simplifier
        .coerce(expr.clone(), schema)
        .and_then(|e| simplifier.simplify(e))
        .map_err(plan)?;
    Ok(expr)
}

/// `sql` with `${principal.id}`, `${principal.<attribute>}` and `{column}` replaced, where
/// the tokenizer finds them: never inside a string literal, a quoted identifier or a comment.
fn expand_placeholders(sql: &str, column: Option<&str>) -> Result<String, PolicyExprError> {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::tokenizer::Token;
    let placeholder = |reason: String| PolicyExprError::Placeholder {
        expression: sql.to_string(),
        reason,
    };
    let tokens = crate::sql_text::tokens(sql, &GenericDialect {}).map_err(|source| PolicyExprError::Tokens {
        expression: sql.to_string(),
        source,
    })?;
    let word = |i: usize, w: &str| matches!(tokens.get(i).map(|t| &t.token), Some(Token::Word(x)) if x.quote_style.is_none() && x.value == w);
    let is = |i: usize, t: Token| tokens.get(i).map(|s| &s.token) == Some(&t);
    let mut out = String::with_capacity(sql.len());
    let mut i = 0;
    while i < tokens.len() {
        let dollar = matches!(&tokens[i].token, Token::Placeholder(p) if p == "$");
        if dollar && is(i + 1, Token::LBrace) && word(i + 2, "principal") && is(i + 3, Token::Period) {
            let close = (i + 4..tokens.len())
                .find(|&k| tokens[k].token == Token::RBrace)
                .ok_or_else(|| placeholder("unclosed ${principal.…}".into()))?;
            let key = match tokens.get(i + 4) {
                Some(first) if close > i + 4 => &sql[first.range.start..tokens[close].range.start],
                _ => "",
            };
            if key.is_empty()
                || !key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            {
                return Err(placeholder(format!("'{key}' is not an attribute name")));
            }
            if key == "id" {
                out.push_str("principal_id()");
            } else {
                out.push_str(&format!("principal_attribute('{key}')"));
            }
            i = close + 1;
        } else if is(i, Token::LBrace) && word(i + 1, "column") && is(i + 2, Token::RBrace) {
            let Some(c) = column else {
                return Err(placeholder("{column} is only meaningful in tag rules and masks".into()));
            };
            out.push_str(&crate::sql_text::quoted(c));
            i += 3;
        } else {
            out.push_str(&sql[tokens[i].range.clone()]);
            i += 1;
        }
    }
    Ok(out)
}
