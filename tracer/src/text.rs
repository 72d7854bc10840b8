//! Plain text for people: the column layout every terminal renderer uses
//! (trace, sweep, detect, advise, bench) and the one set of number
//! formatters every report, warning and piece of advice uses, so a figure
//! reads the same wherever it appears. Values stay in base units (ns, ms)
//! until they reach these functions. It sits apart from [`crate::report`]
//! so that the analysis and detection can use it without depending on the
//! report, which itself depends on them.

/// Renders `rows` as left-aligned columns under `header`.
pub fn columns(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &mut dyn Iterator<Item = &str>| {
        let parts: Vec<String> = cells.zip(&widths).map(|(c, w)| format!("{c:<w$}", w = *w)).collect();
        out.push_str(parts.join("  ").trim_end());
        out.push('\n');
    };
    line(&mut out, &mut header.iter().copied());
    for row in rows {
        line(&mut out, &mut row.iter().map(String::as_str));
    }
    out
}

/// 1234567 -> "1,234,567": counts are read by people.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Two decimals from 1 up, three significant figures below: a slope of
/// 0.00101 ns per service is not "0.00".
pub fn significant(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x:.2}");
    }
    let decimals = (2 - x.abs().log10().floor() as i32).clamp(2, 6) as usize;
    format!("{x:.decimals$}")
}

/// A slope, intercept or duration in a table: [`significant`] when small,
/// whole and grouped ([`thousands`]) from 1,000 up.
pub fn decimal(x: f64) -> String {
    if x.abs() < 1000.0 {
        return significant(x);
    }
    let whole = thousands(x.abs().round() as u64);
    if x < 0.0 {
        format!("-{whole}")
    } else {
        whole
    }
}

/// ns, µs, ms or s with three significant figures or so.
pub fn human_ns(ns: f64) -> String {
    let a = ns.abs();
    if a < 1_000.0 {
        format!("{ns:.0} ns")
    } else if a < 1_000_000.0 {
        format!("{:.1} µs", ns / 1e3)
    } else if a < 1_000_000_000.0 {
        format!("{:.1} ms", ns / 1e6)
    } else if a < 100e9 {
        format!("{:.1} s", ns / 1e9)
    } else {
        format!("{:.0} s", ns / 1e9)
    }
}

/// ms with a unit that suits the size.
pub fn human_ms(ms: f64) -> String {
    human_ns(ms * 1e6)
}

/// "1.8×", "450×", "12,000×"
pub fn ratio(r: f64) -> String {
    if r < 10.0 {
        format!("{r:.1}×")
    } else {
        format!("{}×", thousands(r.round() as u64))
    }
}

/// `digits` decimals, or "-" for a figure that was not measured.
pub fn fixed_or_dash(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn small_figures_keep_three_significant_figures() {
        assert_eq!(significant(42.591), "42.59");
        assert_eq!(significant(1.0), "1.00");
        assert_eq!(significant(0.5), "0.500");
        assert_eq!(significant(1.0 / 990.0), "0.00101");
        assert_eq!(significant(-19.17), "-19.17");
        assert_eq!(significant(0.0), "0.00");
    }

    #[test]
    fn decimals_read_well() {
        assert_eq!(decimal(1.0), "1.00");
        assert_eq!(decimal(-0.004), "-0.00400");
        assert_eq!(decimal(12_345.6), "12,346");
        assert_eq!(decimal(-12_345.6), "-12,346");
    }

    #[test]
    fn units_read_well() {
        assert_eq!(human_ns(512.0), "512 ns");
        assert_eq!(human_ns(12_345.0), "12.3 µs");
        assert_eq!(human_ns(100e6), "100.0 ms");
        assert_eq!(human_ms(2500.0), "2.5 s");
        assert_eq!(human_ms(210_780.0), "211 s");
        assert_eq!(ratio(1.84), "1.8×");
        assert_eq!(ratio(12_000.4), "12,000×");
        assert_eq!(fixed_or_dash(Some(1.234), 2), "1.23");
        assert_eq!(fixed_or_dash(None, 2), "-");
    }
}
