//! A number given as text (a query parameter, a STOMP header), read the same
//! way by every transport: a finite decimal, or a refusal naming the field.
//! Empty text is not a number: `max_rate=` is refused, not read as absent.

/// `text` as a finite number, or the refusal's message naming `field`.
pub fn finite(field: &str, text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(n) if n.is_finite() => Ok(n),
        _ => Err(format!("{field} must be a number, not {text:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::finite;

    #[test]
    fn a_finite_decimal_is_a_number_and_anything_else_is_refused_by_name() {
        assert_eq!(finite("max_rate", "2.5"), Ok(2.5));
        assert_eq!(finite("wait", " 3 "), Ok(3.0));
        for bad in ["", "fast", "NaN", "inf", "1e999"] {
            let refused = finite("max_rate", bad).expect_err(bad);
            assert_eq!(refused, format!("max_rate must be a number, not {bad:?}"));
        }
    }
}
