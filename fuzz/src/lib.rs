//! What the fuzz targets share: comparing values that went through JSON text.

use serde_json::Value;

/// Whether two doubles are the same but for the last bit: serde_json parses
/// floats to within one unit in the last place (a subnormal rate such as
/// `2.77591018001261e-309` reads back one unit off); its `float_roundtrip`
/// feature, which the gateway does not use, would make the trip exact.
pub fn same_f64(a: f64, b: f64) -> bool {
    a == b
        || (a.is_sign_negative() == b.is_sign_negative() && a.to_bits().abs_diff(b.to_bits()) <= 1)
}

/// JSON values equal but for the float rounding of [`same_f64`].
pub fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() && y.is_f64() => {
            match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => same_f64(x, y),
                _ => false,
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_value(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_value(v, w)))
        }
        _ => a == b,
    }
}
