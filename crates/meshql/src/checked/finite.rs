//! Statistical aggregates whose result must be a number ([`FiniteAggregate`]).
//!
//! DataFusion's variance, standard deviation, covariance, correlation and regression
//! aggregates compute in `f64` and answer what IEEE 754 gives when a sum of squares overflows:
//! `var_pop` of `1e308` and `-1e308` is `-inf`, `stddev` `NaN`. DuckDB raises "VARPOP is out
//! of range!" for any such result, PostgreSQL an overflow error. meshql does the same: a result
//! that is infinite or `NaN` (an input that is not finite, or an overflow) fails the query,
//! naming the aggregate, in plain, grouped and window aggregation alike. `NULL` results (one
//! row, a constant column) are unchanged.

use std::any::Any;
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, BooleanArray};
use arrow::datatypes::{DataType, FieldRef, Float64Type};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::AggregateOrderSensitivity;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Documentation, EmitTo, GroupsAccumulator, ReversedUDAF, Signature,
};

/// A DataFusion aggregate whose results are checked to be finite.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct FiniteAggregate {
    inner: Arc<AggregateUDF>,
}

impl FiniteAggregate {
    /// The checked statistical aggregates every mesh session uses.
    pub fn udafs() -> Vec<AggregateUDF> {
        use datafusion::functions_aggregate::{correlation, covariance, regr, stddev, variance};
        [
            variance::var_samp_udaf(),
            variance::var_pop_udaf(),
            stddev::stddev_udaf(),
            stddev::stddev_pop_udaf(),
            covariance::covar_samp_udaf(),
            covariance::covar_pop_udaf(),
            correlation::corr_udaf(),
            regr::regr_slope_udaf(),
            regr::regr_intercept_udaf(),
            regr::regr_r2_udaf(),
            regr::regr_avgx_udaf(),
            regr::regr_avgy_udaf(),
            regr::regr_sxx_udaf(),
            regr::regr_syy_udaf(),
            regr::regr_sxy_udaf(),
        ]
        .into_iter()
        .map(|inner| AggregateUDF::new_from_impl(FiniteAggregate { inner }))
        .collect()
    }
}

fn out_of_range(name: &str) -> DataFusionError {
    DataFusionError::ArrowError(
        Box::new(arrow::error::ArrowError::ArithmeticOverflow(format!(
            "{name}(…) is out of range: its result is not a finite number \
             (an input is infinite or NaN, or the computation overflowed)"
        ))),
        None,
    )
}

fn check_scalar(name: &str, value: ScalarValue) -> Result<ScalarValue> {
    match value {
        ScalarValue::Float64(Some(v)) if !v.is_finite() => Err(out_of_range(name)),
        ScalarValue::Float32(Some(v)) if !v.is_finite() => Err(out_of_range(name)),
        other => Ok(other),
    }
}

fn check_array(name: &str, array: ArrayRef) -> Result<ArrayRef> {
    if let Some(values) = array.as_primitive_opt::<Float64Type>() {
        if values.iter().flatten().any(|v| !v.is_finite()) {
            return Err(out_of_range(name));
        }
    }
    Ok(array)
}

impl AggregateUDFImpl for FiniteAggregate {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field(&self, arg_fields: &[FieldRef]) -> Result<FieldRef> {
        self.inner.inner().return_field(arg_fields)
    }

    fn is_nullable(&self) -> bool {
        self.inner.is_nullable()
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(Finite {
            name: self.inner.name().to_string(),
            inner: self.inner.accumulator(args)?,
        }))
    }

    fn create_sliding_accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(Finite {
            name: self.inner.name().to_string(),
            inner: self.inner.create_sliding_accumulator(args)?,
        }))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        self.inner.state_fields(args)
    }

    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        self.inner.groups_accumulator_supported(args)
    }

    fn create_groups_accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(FiniteGroups {
            name: self.inner.name().to_string(),
            inner: self.inner.create_groups_accumulator(args)?,
        }))
    }

    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        self.inner.inner().order_sensitivity()
    }

    fn reverse_expr(&self) -> ReversedUDAF {
        match self.inner.inner().reverse_expr() {
            ReversedUDAF::Identical => ReversedUDAF::Identical,
            // A reversed form would be DataFusion's, unchecked.
            _ => ReversedUDAF::NotSupported,
        }
    }

    fn default_value(&self, data_type: &DataType) -> Result<ScalarValue> {
        self.inner.default_value(data_type)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}

#[derive(Debug)]
struct Finite {
    name: String,
    inner: Box<dyn Accumulator>,
}

impl Accumulator for Finite {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.inner.update_batch(values)
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.inner.retract_batch(values)
    }

    fn supports_retract_batch(&self) -> bool {
        self.inner.supports_retract_batch()
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.inner.merge_batch(states)
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        self.inner.state()
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        check_scalar(&self.name, self.inner.evaluate()?)
    }

    fn size(&self) -> usize {
        self.inner.size() + self.name.capacity()
    }
}

struct FiniteGroups {
    name: String,
    inner: Box<dyn GroupsAccumulator>,
}

impl GroupsAccumulator for FiniteGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.inner
            .update_batch(values, group_indices, opt_filter, total_num_groups)
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        check_array(&self.name, self.inner.evaluate(emit_to)?)
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        self.inner.state(emit_to)
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.inner
            .merge_batch(values, group_indices, opt_filter, total_num_groups)
    }

    fn convert_to_state(&self, values: &[ArrayRef], opt_filter: Option<&BooleanArray>) -> Result<Vec<ArrayRef>> {
        self.inner.convert_to_state(values, opt_filter)
    }

    fn supports_convert_to_state(&self) -> bool {
        self.inner.supports_convert_to_state()
    }

    fn size(&self) -> usize {
        self.inner.size() + self.name.capacity()
    }
}
