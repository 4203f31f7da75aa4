//! Kubernetes resource quantities (`50m`, `64Mi`, `1.5`, `1e3`), parsed only far enough to
//! validate an annotation and compare a request against a limit. The API server rejects a pod
//! whose request exceeds its limit with an error that never mentions the annotation, so the
//! injector checks first and says which annotation is wrong.

use thiserror::Error;

/// A quantity string the API server would not accept.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("{0:?} is not a Kubernetes quantity (examples: 50m, 0.5, 64Mi, 1Gi)")]
pub struct QuantityError(pub String);

/// Parses a quantity into its value in base units (cores for CPU, bytes for memory).
///
/// Negative values are refused: no resource request or limit may be negative.
pub fn parse(text: &str) -> Result<f64, QuantityError> {
    let err = || QuantityError(text.to_owned());
    let number_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(number_end);
    let digits = number.strip_prefix('+').unwrap_or(number);
    if digits.is_empty()
        || digits.matches('.').count() > 1
        || !digits.chars().any(|c| c.is_ascii_digit())
        || digits.contains('+')
    {
        return Err(err());
    }
    let value: f64 = digits.parse().map_err(|_| err())?;
    let multiplier = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exp if exp.starts_with(['e', 'E']) => {
            let power = &exp[1..];
            let unsigned = power.strip_prefix(['+', '-']).unwrap_or(power);
            if unsigned.is_empty() || !unsigned.chars().all(|c| c.is_ascii_digit()) {
                return Err(err());
            }
            let power: i32 = power.parse().map_err(|_| err())?;
            10f64.powi(power)
        }
        _ => return Err(err()),
    };
    Ok(value * multiplier)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn accepts_the_forms_the_api_server_accepts() {
        assert_eq!(parse("50m"), Ok(0.05));
        assert_eq!(parse("1"), Ok(1.0));
        assert_eq!(parse("1.5"), Ok(1.5));
        assert_eq!(parse(".5"), Ok(0.5));
        assert_eq!(parse("64Mi"), Ok(64.0 * 1024.0 * 1024.0));
        assert_eq!(parse("1G"), Ok(1e9));
        assert_eq!(parse("1e3"), Ok(1000.0));
        assert_eq!(parse("+2Ki"), Ok(2048.0));
    }

    #[test]
    fn refuses_units_kubernetes_does_not_know() {
        for bad in [
            "", "64MB", "-1", "1.2.3", "m", "1 Gi", "1e", "abc", "1mi", "1e+",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
