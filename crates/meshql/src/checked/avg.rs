//! `avg` of durations computed wide ([`CheckedAvg`]).
//!
//! DataFusion 53 sums durations for `avg` in 64 bits with wrapping adds: the average of two
//! `i64::MAX` seconds is -1 second. meshql keeps the sum in 128 bits (exact for any number of
//! rows below 2^63), partial sums between partitions too; the average of values of a type always
//! fits that type. Other inputs
//! are DataFusion's own `avg` (numbers as floats, decimals with its overflow check).

use std::any::Any;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{
    DataType, Decimal128Type, DurationMicrosecondType, DurationMillisecondType, DurationNanosecondType,
    DurationSecondType, Field, FieldRef, TimeUnit, UInt64Type,
};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::{format_state_name, AggregateOrderSensitivity};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Documentation, GroupsAccumulator, ReversedUDAF, SetMonotonicity,
    Signature,
};

use super::overflow;

/// DataFusion's `avg`, whose averages of durations do not wrap.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct CheckedAvg {
    inner: Arc<AggregateUDF>,
}

impl CheckedAvg {
    /// The `avg` every mesh session uses.
    pub fn udaf() -> AggregateUDF {
        AggregateUDF::new_from_impl(CheckedAvg {
            inner: datafusion::functions_aggregate::average::avg_udaf(),
        })
    }

    fn inner(&self) -> &dyn AggregateUDFImpl {
        self.inner.inner().as_ref()
    }
}

/// The unit of a duration argument, when the average is one meshql computes.
fn duration_unit(args: &AccumulatorArgs) -> Option<TimeUnit> {
    if args.is_distinct {
        return None;
    }
    match args.expr_fields.first().map(|f| f.data_type()) {
        Some(DataType::Duration(unit)) => Some(*unit),
        _ => None,
    }
}

impl AggregateUDFImpl for CheckedAvg {
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
        match duration_unit(&args) {
            Some(unit) => Ok(Box::new(DurationAvg::new(unit))),
            None => self.inner().accumulator(args),
        }
    }

    fn create_sliding_accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        match duration_unit(&args) {
            Some(unit) => Ok(Box::new(DurationAvg::new(unit))),
            None => self.inner().create_sliding_accumulator(args),
        }
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let durations = !args.is_distinct
            && matches!(
                args.input_fields.first().map(|f| f.data_type()),
                Some(DataType::Duration(_))
            );
        if !durations {
            return self.inner().state_fields(args);
        }
        // The partial sum in 128 bits: partial sums need not fit the duration type.
        Ok(vec![
            Arc::new(Field::new(
                format_state_name(args.name, "count"),
                DataType::UInt64,
                true,
            )),
            Arc::new(Field::new(
                format_state_name(args.name, "sum"),
                DataType::Decimal128(38, 0),
                true,
            )),
        ])
    }

    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        duration_unit(&args).is_none() && self.inner().groups_accumulator_supported(args)
    }

    fn create_groups_accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn GroupsAccumulator>> {
        self.inner().create_groups_accumulator(args)
    }

    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        self.inner().order_sensitivity()
    }

    fn reverse_expr(&self) -> ReversedUDAF {
        ReversedUDAF::Identical
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

/// The sum (128 bits) and count of durations of one unit. Its state is DataFusion's: the count,
/// then the sum as a duration.
#[derive(Debug)]
struct DurationAvg {
    unit: TimeUnit,
    sum: i128,
    count: u64,
}

impl DurationAvg {
    fn new(unit: TimeUnit) -> Self {
        DurationAvg { unit, sum: 0, count: 0 }
    }

    /// The sum and count of the non-null values of `array` (durations of this unit).
    fn total(&self, array: &ArrayRef) -> (i128, u64) {
        fn of<T: arrow::datatypes::ArrowPrimitiveType<Native = i64>>(array: &ArrayRef) -> (i128, u64) {
            let a = array.as_primitive::<T>();
            let sum = a.iter().flatten().map(i128::from).sum();
            (sum, (a.len() - a.null_count()) as u64)
        }
        match self.unit {
            TimeUnit::Second => of::<DurationSecondType>(array),
            TimeUnit::Millisecond => of::<DurationMillisecondType>(array),
            TimeUnit::Microsecond => of::<DurationMicrosecondType>(array),
            TimeUnit::Nanosecond => of::<DurationNanosecondType>(array),
        }
    }

    fn duration(&self, v: Option<i64>) -> ScalarValue {
        match self.unit {
            TimeUnit::Second => ScalarValue::DurationSecond(v),
            TimeUnit::Millisecond => ScalarValue::DurationMillisecond(v),
            TimeUnit::Microsecond => ScalarValue::DurationMicrosecond(v),
            TimeUnit::Nanosecond => ScalarValue::DurationNanosecond(v),
        }
    }
}

impl Accumulator for DurationAvg {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        if let Some(v) = values.first() {
            let (sum, count) = self.total(v);
            self.sum += sum;
            self.count += count;
        }
        Ok(())
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        if let Some(v) = values.first() {
            let (sum, count) = self.total(v);
            self.sum -= sum;
            self.count = self.count.saturating_sub(count);
        }
        Ok(())
    }

    fn supports_retract_batch(&self) -> bool {
        true
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        if let (Some(counts), Some(sums)) = (states.first(), states.get(1)) {
            self.count += counts.as_primitive::<UInt64Type>().iter().flatten().sum::<u64>();
            for sum in sums.as_primitive::<Decimal128Type>().iter().flatten() {
                self.sum = self.sum.checked_add(sum).ok_or_else(|| overflow("sum of durations"))?;
            }
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![
            ScalarValue::UInt64(Some(self.count)),
            ScalarValue::Decimal128(Some(self.sum), 38, 0),
        ])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        if self.count == 0 {
            return Ok(self.duration(None));
        }
        // Truncated toward zero, as DataFusion divides.
        let avg = i64::try_from(self.sum / self.count as i128).map_err(|_| overflow("average of durations"))?;
        Ok(self.duration(Some(avg)))
    }

    fn size(&self) -> usize {
        size_of_val(self)
    }
}
