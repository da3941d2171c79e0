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
) -> Result<Expr, String> {
    let text = expand_placeholders(sql, column)?;
    let expr = POLICY_PARSER
        .create_logical_expr(&text, schema)
        .map_err(|e| format!("`{sql}`: {e}"))?;
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
        .map_err(|e| format!("`{sql}`: {e}"))?
        .data;
    let mut bad = None;
    expr.apply(|e| {
        if matches!(
            e,
            Expr::ScalarSubquery(_)
                | Expr::Exists(_)
                | Expr::InSubquery(_)
                | Expr::AggregateFunction(_)
                | Expr::WindowFunction(_)
        ) {
            bad = Some(format!(
                "`{sql}`: subqueries, aggregates and window functions are not allowed in policies"
            ));
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .map_err(|e| e.to_string())?;
    if let Some(b) = bad {
        return Err(b);
    }
    // Types and constants are settled now, not while a user's query is optimised: a policy
    // whose literal does not convert (`order_date = 'zz'`) or whose types do not meet fails as
    // this rule (a refusal naming it), never as a planner error quoting the filter's text.
    let simplifier = ExprSimplifier::new(SimplifyContext::default().with_schema(schema.clone()));
    simplifier
        .coerce(expr.clone(), schema)
        .and_then(|e| simplifier.simplify(e))
        .map_err(|e| format!("`{sql}`: {}", e.strip_backtrace()))?;
    Ok(expr)
}

fn expand_placeholders(sql: &str, column: Option<&str>) -> Result<String, String> {
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(start) = rest.find(['$', '{']) {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        if let Some(after) = tail.strip_prefix("${principal.") {
            let end = after
                .find('}')
                .ok_or_else(|| format!("`{sql}`: unclosed ${{principal.…}}"))?;
            let key = &after[..end];
            if key.is_empty()
                || !key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            {
                return Err(format!("`{sql}`: '{key}' is not an attribute name"));
            }
            if key == "id" {
                out.push_str("principal_id()");
            } else {
                out.push_str(&format!("principal_attribute('{key}')"));
            }
            rest = &after[end + 1..];
        } else if let Some(after) = tail.strip_prefix("{column}") {
            let Some(c) = column else {
                return Err(format!("`{sql}`: {{column}} is only meaningful in tag rules and masks"));
            };
            out.push('"');
            out.push_str(&c.replace('"', "\"\""));
            out.push('"');
            rest = after;
        } else {
            out.push_str(&tail[..1]);
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}
