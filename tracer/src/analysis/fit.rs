//! Ordinary least squares of a cost against the number of services:
//! `cost = intercept + slope · N`. Plain OLS on the measured points, not on
//! log N: the question is "how many ns does one more service add", and a
//! linear model answers it in those units. Its limit is worth knowing: with
//! N spread over decades the largest N dominates the fit, which is also the
//! regime the question is about.

use serde::Serialize;

/// A fitted line with what it takes to judge it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LinearFit {
    /// Cost added per service (the unit of the fitted quantity per service).
    pub slope: f64,
    /// Cost at N = 0: what the path costs with no service rules at all.
    pub intercept: f64,
    /// Share of the variance the line explains (1 when every point is on it).
    pub r_squared: f64,
    /// Points the fit used.
    pub points: usize,
    /// Standard error of the slope; `None` with two points, where the line
    /// goes through both and says nothing about noise.
    pub slope_stderr: Option<f64>,
    /// Smallest and largest N measured: predictions outside are extrapolations.
    pub n_min: f64,
    pub n_max: f64,
    #[serde(skip)]
    n_mean: f64,
    #[serde(skip)]
    sxx: f64,
    /// Residual standard deviation (n − 2 degrees of freedom).
    #[serde(skip)]
    residual_sd: Option<f64>,
}

impl LinearFit {
    /// Fits `(n, cost)` pairs; `None` unless at least two distinct N are
    /// given (a line needs two places to stand) and every value is finite.
    pub fn of(points: &[(f64, f64)]) -> Option<LinearFit> {
        if points.iter().any(|(x, y)| !x.is_finite() || !y.is_finite()) {
            return None;
        }
        let n = points.len() as f64;
        let n_min = points.iter().map(|p| p.0).fold(f64::INFINITY, f64::min);
        let n_max = points.iter().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max);
        if points.len() < 2 || n_max <= n_min {
            return None;
        }
        let x_mean = points.iter().map(|p| p.0).sum::<f64>() / n;
        let y_mean = points.iter().map(|p| p.1).sum::<f64>() / n;
        let sxx: f64 = points.iter().map(|p| (p.0 - x_mean).powi(2)).sum();
        let sxy: f64 = points.iter().map(|p| (p.0 - x_mean) * (p.1 - y_mean)).sum();
        let slope = sxy / sxx;
        let intercept = y_mean - slope * x_mean;
        let ss_res: f64 = points.iter().map(|p| (p.1 - intercept - slope * p.0).powi(2)).sum();
        let ss_tot: f64 = points.iter().map(|p| (p.1 - y_mean).powi(2)).sum();
        // All costs equal: a flat line explains them completely.
        let r_squared = if ss_tot > 0.0 { 1.0 - ss_res / ss_tot } else { 1.0 };
        let residual_sd = (points.len() > 2).then(|| (ss_res / (n - 2.0)).sqrt());
        Some(LinearFit {
            slope,
            intercept,
            r_squared,
            points: points.len(),
            slope_stderr: residual_sd.map(|s| s / sxx.sqrt()),
            n_min,
            n_max,
            n_mean: x_mean,
            sxx,
            residual_sd,
        })
    }

    /// The fitted cost at `n` services.
    pub fn predict(&self, n: f64) -> f64 {
        self.intercept + self.slope * n
    }

    /// Standard error of the fitted line at `n` (grows away from the
    /// measured N); `None` when the fit has no degrees of freedom left.
    pub fn prediction_stderr(&self, n: f64) -> Option<f64> {
        let s = self.residual_sd?;
        Some(s * (1.0 / self.points as f64 + (n - self.n_mean).powi(2) / self.sxx).sqrt())
    }

    /// Whether the slope stands out of the noise (more than two standard
    /// errors from zero). Unknown with two points.
    pub fn slope_significant(&self) -> Option<bool> {
        self.slope_stderr.map(|se| self.slope.abs() > 2.0 * se)
    }

    /// The least-squares line under the constraint slope ≥ 0: the line
    /// itself when its slope is not negative, else the flat line at the
    /// mean cost (which is what least squares gives with the slope pinned
    /// at zero). More rules never make a lookup cheaper, so a falling line
    /// is noise, and extrapolating it would predict costs below zero.
    pub fn non_decreasing(&self) -> LinearFit {
        if self.slope >= 0.0 {
            return self.clone();
        }
        LinearFit {
            slope: 0.0,
            intercept: self.predict(self.n_mean),
            r_squared: 0.0,
            slope_stderr: self.slope_stderr,
            ..self.clone()
        }
    }

    /// Whether `n` lies outside the measured N.
    pub fn extrapolates_to(&self, n: f64) -> bool {
        n < self.n_min || n > self.n_max
    }
}

/// Where two fitted lines cross: `None` when they are parallel.
pub fn intersection(a: &LinearFit, b: &LinearFit) -> Option<f64> {
    let dslope = a.slope - b.slope;
    if dslope == 0.0 {
        return None;
    }
    Some((b.intercept - a.intercept) / dslope)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9 * (1.0 + b.abs())
    }

    #[test]
    fn points_on_a_line_fit_exactly() {
        // Hand-computed: these three points lie on cost = 90 + 1·N.
        let fit = LinearFit::of(&[(10.0, 100.0), (100.0, 190.0), (1000.0, 1090.0)]).unwrap();
        assert!(close(fit.slope, 1.0), "{fit:?}");
        assert!(close(fit.intercept, 90.0), "{fit:?}");
        assert!(close(fit.r_squared, 1.0), "{fit:?}");
        assert_eq!(fit.points, 3);
        assert!(fit.slope_stderr.unwrap() < 1e-9);
        assert!(close(fit.predict(10_000.0), 10_090.0));
    }

    #[test]
    fn noisy_points_match_hand_computed_least_squares() {
        // x = 1, 2, 3, 4; y = 2, 3, 5, 6.
        // x̄ = 2.5, ȳ = 4, Sxx = 5, Sxy = 1.5·2 + 0.5·1 + 0.5·1 + 1.5·2 = 7
        // slope = 7/5 = 1.4, intercept = 4 − 1.4·2.5 = 0.5
        // residuals: 2−1.9, 3−3.3, 5−4.7, 6−6.1 = 0.1, −0.3, 0.3, −0.1
        // SSres = 0.2, SStot = 4+1+1+4 = 10, R² = 0.98
        // s = sqrt(0.2/2) = 0.316228, SE(slope) = s/sqrt(5) = 0.141421
        let fit = LinearFit::of(&[(1.0, 2.0), (2.0, 3.0), (3.0, 5.0), (4.0, 6.0)]).unwrap();
        assert!(close(fit.slope, 1.4), "{fit:?}");
        assert!(close(fit.intercept, 0.5), "{fit:?}");
        assert!(close(fit.r_squared, 0.98), "{fit:?}");
        assert!((fit.slope_stderr.unwrap() - 0.141_421_356).abs() < 1e-6);
        assert_eq!(fit.slope_significant(), Some(true));
        // At x̄ the prediction error is s/sqrt(n) = 0.316228/2.
        assert!((fit.prediction_stderr(2.5).unwrap() - 0.158_113_883).abs() < 1e-6);
    }

    #[test]
    fn flat_costs_have_zero_slope_and_full_r_squared() {
        let fit = LinearFit::of(&[(10.0, 50.0), (100.0, 50.0), (1000.0, 50.0)]).unwrap();
        assert_eq!(fit.slope, 0.0);
        assert_eq!(fit.intercept, 50.0);
        assert_eq!(fit.r_squared, 1.0);
    }

    #[test]
    fn a_falling_line_is_held_flat_at_its_mean() {
        // Mean cost 200 over x = 10, 100, 1000.
        let fit = LinearFit::of(&[(10.0, 300.0), (100.0, 200.0), (1000.0, 100.0)]).unwrap();
        assert!(fit.slope < 0.0);
        let flat = fit.non_decreasing();
        assert_eq!(flat.slope, 0.0);
        assert!(close(flat.intercept, 200.0), "{flat:?}");
        assert!(close(flat.predict(1e6), 200.0));
        let rising = LinearFit::of(&[(10.0, 100.0), (100.0, 190.0), (1000.0, 1090.0)]).unwrap();
        assert_eq!(rising.non_decreasing(), rising);
    }

    #[test]
    fn two_points_fit_without_an_error_estimate() {
        let fit = LinearFit::of(&[(10.0, 100.0), (1000.0, 1090.0)]).unwrap();
        assert!(close(fit.slope, 1.0));
        assert_eq!(fit.slope_stderr, None);
        assert_eq!(fit.prediction_stderr(100.0), None);
        assert_eq!(fit.slope_significant(), None);
    }

    #[test]
    fn a_single_n_or_bad_values_give_no_fit() {
        assert!(LinearFit::of(&[]).is_none());
        assert!(LinearFit::of(&[(10.0, 1.0)]).is_none());
        assert!(LinearFit::of(&[(10.0, 1.0), (10.0, 2.0)]).is_none());
        assert!(LinearFit::of(&[(10.0, 1.0), (20.0, f64::NAN)]).is_none());
    }

    #[test]
    fn lines_cross_where_hand_computed() {
        // 100 + 1·N and 1000 + 0.1·N meet at N = 900 / 0.9 = 1000.
        let a = LinearFit::of(&[(0.0, 100.0), (2000.0, 2100.0)]).unwrap();
        let b = LinearFit::of(&[(0.0, 1000.0), (2000.0, 1200.0)]).unwrap();
        assert!(close(intersection(&a, &b).unwrap(), 1000.0));
        assert_eq!(intersection(&a, &a), None);
    }
}
