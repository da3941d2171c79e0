//! `sum` computed wide and checked to fit its type ([`CheckedSum`]).

use std::any::Any;
use std::sync::Arc;

use super::overflow;
use arrow::array::{Array, ArrayRef, AsArray, BooleanArray};
use arrow::datatypes::{i256, DataType, Decimal128Type, Decimal256Type, FieldRef, UInt64Type};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::AggregateOrderSensitivity;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Documentation, EmitTo, GroupsAccumulator, ReversedUDAF,
    SetMonotonicity, Signature, StatisticsArgs,
};
use datafusion_functions_aggregate_common::aggregate::groups_accumulator::prim_op::PrimitiveGroupsAccumulator;

/// DataFusion's `sum`, whose integer sums fail on overflow instead of wrapping.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct CheckedSum {
    inner: Arc<AggregateUDF>,
}

impl CheckedSum {
    /// The `sum` every mesh session uses.
    pub fn udaf() -> AggregateUDF {
        AggregateUDF::new_from_impl(CheckedSum {
            inner: datafusion::functions_aggregate::sum::sum_udaf(),
        })
    }

    fn inner(&self) -> &dyn AggregateUDFImpl {
        self.inner.inner().as_ref()
    }
}

impl AggregateUDFImpl for CheckedSum {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn name(&self) -> &str {
        self.inner().name()
    }

    fn aliases(&self) -> &[String] {
        self.inner().aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner().signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner().return_type(arg_types)
    }

    fn return_field(&self, arg_fields: &[FieldRef]) -> Result<FieldRef> {
        self.inner().return_field(arg_fields)
    }

    fn is_nullable(&self) -> bool {
        self.inner().is_nullable()
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner().coerce_types(arg_types)
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        if args.is_distinct {
            return self.inner().accumulator(args);
        }
        match args.return_type() {
            t if widened(t) => Ok(Box::new(WideSum::new(t.clone(), false))),
            _ => self.inner().accumulator(args),
        }
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        self.inner().state_fields(args)
    }

    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        self.inner().groups_accumulator_supported(args)
    }

    fn create_groups_accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn GroupsAccumulator>> {
        match args.return_type() {
            t if widened(t) => Ok(Box::new(WideGroups::new(t.clone()))),
            _ => self.inner().create_groups_accumulator(args),
        }
    }

    fn create_sliding_accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        if args.is_distinct {
            return self.inner().create_sliding_accumulator(args);
        }
        match args.return_type() {
            t if widened(t) => Ok(Box::new(WideSum::new(t.clone(), true))),
            _ => self.inner().create_sliding_accumulator(args),
        }
    }

    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        self.inner().order_sensitivity()
    }

    fn reverse_expr(&self) -> ReversedUDAF {
        ReversedUDAF::Identical
    }

    fn is_descending(&self) -> Option<bool> {
        self.inner().is_descending()
    }

    fn value_from_stats(&self, statistics_args: &StatisticsArgs) -> Option<ScalarValue> {
        self.inner().value_from_stats(statistics_args)
    }

    fn default_value(&self, data_type: &DataType) -> Result<ScalarValue> {
        self.inner().default_value(data_type)
    }

    fn set_monotonicity(&self, data_type: &DataType) -> SetMonotonicity {
        self.inner().set_monotonicity(data_type)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner().documentation()
    }
}

/// Whether `sum` of values of type `t` (its result type) is computed by [`WideSum`] /
/// [`WideGroups`]: 64-bit integers and durations (DataFusion wraps them), and decimals of 38
/// digits, whose sums DataFusion computes in 128 bits unchecked (two maxima of
/// `DECIMAL(38, 0)` add up to a negative number). Narrower decimals are summed into 10 more
/// digits than they have, which 128 bits hold for 10^10 values.
fn widened(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Int64 | DataType::UInt64 | DataType::Duration(_) | DataType::Decimal128(38, _)
    )
}

/// The 256-bit decimal type sums of `data_type` are kept in.
fn wide_type(data_type: &DataType) -> DataType {
    match data_type {
        DataType::Decimal128(_, s) => DataType::Decimal256(76, *s),
        _ => DataType::Decimal256(76, 0),
    }
}

/// `values` (of a widened sum's type) as 256-bit decimals.
fn widen(values: &ArrayRef, data_type: &DataType) -> Result<ArrayRef> {
    let values = match data_type {
        DataType::Duration(_) => arrow::compute::cast(values, &DataType::Int64)?,
        _ => values.clone(),
    };
    Ok(arrow::compute::cast(&values, &wide_type(data_type))?)
}

/// 256-bit sums as `data_type`, or an overflow error when one does not fit. (Converted here:
/// arrow 58's cast from `Decimal256` to `Int64` wraps values between -2^64 and -2^63.)
fn narrow_array(sums: &ArrayRef, data_type: &DataType) -> Result<ArrayRef> {
    let sums = sums
        .as_primitive::<Decimal256Type>()
        .iter()
        .map(|v| v.map(|v| v.to_i128().ok_or_else(|| overflow("sum"))).transpose())
        .collect::<Result<Vec<_>>>()?;
    narrow(sums, data_type)
}

/// Sums that fit 128 bits as `data_type`, or an overflow error when one does not fit it.
fn narrow(sums: Vec<Option<i128>>, data_type: &DataType) -> Result<ArrayRef> {
    Ok(match data_type {
        DataType::UInt64 => Arc::new(
            sums.into_iter()
                .map(|v| v.map(|v| u64::try_from(v).map_err(|_| overflow("sum"))).transpose())
                .collect::<Result<arrow::array::UInt64Array>>()?,
        ),
        DataType::Decimal128(p, s) => {
            let narrowed = arrow::array::Decimal128Array::from(sums).with_precision_and_scale(*p, *s)?;
            narrowed.validate_decimal_precision(*p).map_err(|_| overflow("sum"))?;
            Arc::new(narrowed)
        }
        _ => {
            let ints: arrow::array::Int64Array = sums
                .into_iter()
                .map(|v| v.map(|v| i64::try_from(v).map_err(|_| overflow("sum"))).transpose())
                .collect::<Result<_>>()?;
            arrow::compute::cast(&ints, data_type)?
        }
    })
}

/// A sum kept in 256 bits — exact whatever the order of the values, and when rows leave a
/// window frame — and checked to fit its type when it is read.
#[derive(Debug)]
struct WideSum {
    sum: i256,
    /// The values summed (not null): none means the sum is NULL.
    count: u64,
    data_type: DataType,
    /// A window's accumulator: its state carries the count too (as DataFusion's does).
    sliding: bool,
}

impl WideSum {
    fn new(data_type: DataType, sliding: bool) -> Self {
        WideSum {
            sum: i256::ZERO,
            count: 0,
            data_type,
            sliding,
        }
    }

    fn add(&mut self, values: &ArrayRef, negate: bool) -> Result<()> {
        let wide = widen(values, &self.data_type)?;
        let wide = wide.as_primitive::<Decimal256Type>();
        let count = (wide.len() - wide.null_count()) as u64;
        // Each value is below 2^128 and there are fewer than 2^64 of them: no i256 overflow.
        let sum = wide.iter().flatten().fold(i256::ZERO, |a, v| a.wrapping_add(v));
        if negate {
            self.sum = self.sum.wrapping_sub(sum);
            self.count = self.count.saturating_sub(count);
        } else {
            self.sum = self.sum.wrapping_add(sum);
            self.count += count;
        }
        Ok(())
    }
}

impl Accumulator for WideSum {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        match values.first() {
            Some(v) => self.add(v, false),
            None => Ok(()),
        }
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        match values.first() {
            Some(v) => self.add(v, true),
            None => Ok(()),
        }
    }

    fn supports_retract_batch(&self) -> bool {
        self.sliding
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let Some(sums) = states.first() else {
            return Ok(());
        };
        self.add(sums, false)?;
        if let (true, Some(counts)) = (self.sliding, states.get(1)) {
            // `add` counted the partial sums; the counts say how many values they stand for.
            self.count -= (sums.len() - sums.null_count()) as u64;
            self.count += counts.as_primitive::<UInt64Type>().iter().flatten().sum::<u64>();
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let sum = self.evaluate()?;
        Ok(if self.sliding {
            vec![sum, ScalarValue::UInt64(Some(self.count))]
        } else {
            vec![sum]
        })
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        if self.count == 0 {
            return ScalarValue::try_from(&self.data_type);
        }
        let wide = arrow::array::Decimal256Array::from(vec![self.sum]).with_data_type(wide_type(&self.data_type));
        let narrowed = narrow_array(&(Arc::new(wide) as ArrayRef), &self.data_type)?;
        ScalarValue::try_from_array(&narrowed, 0)
    }

    fn size(&self) -> usize {
        size_of_val(self)
    }
}

/// Grouped sums: DataFusion's grouped accumulator over 128-bit values — 64-bit integers and
/// durations cannot overflow them (fewer than 2^63 values), 38-digit decimals are added with a
/// check whose failure sticks to the group ([`OVERFLOWED`]) — checked to fit the sum's type when
/// the groups are read. (128 bits, not 256: grouped sums are on the hot path of every
/// dashboard, and a 256-bit cast per batch cost TPC-H Q1 a quarter of its time.)
struct WideGroups {
    inner: PrimitiveGroupsAccumulator<Decimal128Type, fn(&mut i128, i128)>,
    data_type: DataType,
}

/// A group's sum once an addition overflowed 128 bits: beyond any 38-digit decimal, so
/// narrowing it fails.
const OVERFLOWED: i128 = i128::MIN;

/// The 128-bit decimal type grouped sums of `data_type` are kept in.
fn group_type(data_type: &DataType) -> DataType {
    match data_type {
        DataType::Decimal128(_, s) => DataType::Decimal128(38, *s),
        _ => DataType::Decimal128(38, 0),
    }
}

impl WideGroups {
    fn new(data_type: DataType) -> Self {
        fn add(acc: &mut i128, v: i128) {
            *acc = if *acc == OVERFLOWED {
                OVERFLOWED
            } else {
                acc.checked_add(v).unwrap_or(OVERFLOWED)
            };
        }
        WideGroups {
            inner: PrimitiveGroupsAccumulator::new(&group_type(&data_type), add as fn(&mut i128, i128)),
            data_type,
        }
    }

    fn widen(&self, values: &[ArrayRef]) -> Result<Vec<ArrayRef>> {
        values
            .iter()
            .map(|v| {
                Ok(match v.data_type() {
                    DataType::Decimal128(..) => v.clone(),
                    DataType::Duration(_) => arrow::compute::cast(
                        &arrow::compute::cast(v, &DataType::Int64)?,
                        &group_type(&self.data_type),
                    )?,
                    _ => arrow::compute::cast(v, &group_type(&self.data_type))?,
                })
            })
            .collect()
    }

    fn narrow(&self, sums: ArrayRef) -> Result<ArrayRef> {
        let sums = sums
            .as_primitive::<Decimal128Type>()
            .iter()
            .map(|v| {
                v.map(|v| if v == OVERFLOWED { Err(overflow("sum")) } else { Ok(v) })
                    .transpose()
            })
            .collect::<Result<Vec<_>>>()?;
        narrow(sums, &self.data_type)
    }
}

impl std::fmt::Debug for WideGroups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WideGroups({})", self.data_type)
    }
}

impl GroupsAccumulator for WideGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.inner
            .update_batch(&self.widen(values)?, group_indices, opt_filter, total_num_groups)
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.inner
            .merge_batch(&self.widen(values)?, group_indices, opt_filter, total_num_groups)
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let sums = self.inner.evaluate(emit_to)?;
        self.narrow(sums)
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        self.inner.state(emit_to)?.into_iter().map(|s| self.narrow(s)).collect()
    }

    fn convert_to_state(&self, values: &[ArrayRef], opt_filter: Option<&BooleanArray>) -> Result<Vec<ArrayRef>> {
        let states = self.inner.convert_to_state(&self.widen(values)?, opt_filter)?;
        states.into_iter().map(|s| self.narrow(s)).collect()
    }

    fn supports_convert_to_state(&self) -> bool {
        self.inner.supports_convert_to_state()
    }

    fn size(&self) -> usize {
        self.inner.size()
    }
}
