//! The statistics results report: intervals for a proportion and for the difference of two
//! (treated against held out), and the chi-squared test of variants against each other.
//!
//! - [`wilson`]: the Wilson score interval of one proportion (good at small counts and at
//!   0 or 1, where the textbook Wald interval collapses).
//! - [`newcombe`]: Newcombe's hybrid score interval for a difference of two independent
//!   proportions (his method 10, built from the two Wilson intervals); the interval the
//!   platforms' "lift" should carry.
//! - [`chi_squared`]: Pearson's test that k groups share one rate, with its p-value from
//!   the regularized incomplete gamma function.

use serde::Serialize;

/// The normal quantile of a two-sided 95 % interval.
pub const Z95: f64 = 1.959_963_984_540_054;

/// Wilson score interval of `k` successes in `n` trials at normal quantile `z`; `None`
/// without trials.
pub fn wilson(k: u64, n: u64, z: f64) -> Option<(f64, f64)> {
    if n == 0 || k > n {
        return None;
    }
    let (k, n) = (k as f64, n as f64);
    let p = k / n;
    let z2 = z * z;
    let centre = p + z2 / (2.0 * n);
    let half = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    let denom = 1.0 + z2 / n;
    Some((
        ((centre - half) / denom).max(0.0),
        ((centre + half) / denom).min(1.0),
    ))
}

/// A difference of two proportions with its interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Difference {
    /// `k1/n1 - k2/n2`.
    pub difference: f64,
    /// Lower end of the 95 % interval.
    pub low: f64,
    /// Upper end.
    pub high: f64,
}

/// Newcombe's hybrid score interval (method 10) for `k1/n1 - k2/n2`, 95 %; `None` when an
/// arm has no trials.
pub fn newcombe(k1: u64, n1: u64, k2: u64, n2: u64) -> Option<Difference> {
    let (l1, u1) = wilson(k1, n1, Z95)?;
    let (l2, u2) = wilson(k2, n2, Z95)?;
    let (p1, p2) = (k1 as f64 / n1 as f64, k2 as f64 / n2 as f64);
    let d = p1 - p2;
    Some(Difference {
        difference: d,
        low: d - ((p1 - l1).powi(2) + (u2 - p2).powi(2)).sqrt(),
        high: d + ((u1 - p1).powi(2) + (p2 - l2).powi(2)).sqrt(),
    })
}

/// Pearson's chi-squared test of homogeneity.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ChiSquared {
    /// The statistic.
    pub statistic: f64,
    /// Degrees of freedom (groups − 1).
    pub df: u32,
    /// The p-value: the chance of a statistic this large if every group had one rate.
    pub p_value: f64,
    /// Whether every expected cell count is at least 5 (the approximation's usual rule).
    pub valid: bool,
}

/// Pearson's test that the groups `(successes, trials)` share one rate; `None` with fewer
/// than two groups with trials, or when every trial succeeded or none did.
pub fn chi_squared(groups: &[(u64, u64)]) -> Option<ChiSquared> {
    let groups: Vec<(f64, f64)> = groups
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|&(k, n)| (k as f64, n as f64))
        .collect();
    if groups.len() < 2 {
        return None;
    }
    let total_k: f64 = groups.iter().map(|g| g.0).sum();
    let total_n: f64 = groups.iter().map(|g| g.1).sum();
    let p = total_k / total_n;
    if p <= 0.0 || p >= 1.0 {
        return None;
    }
    let mut statistic = 0.0;
    let mut valid = true;
    for &(k, n) in &groups {
        for (observed, expected) in [(k, n * p), (n - k, n * (1.0 - p))] {
            statistic += (observed - expected).powi(2) / expected;
            valid &= expected >= 5.0;
        }
    }
    let df = (groups.len() - 1) as u32;
    Some(ChiSquared {
        statistic,
        df,
        p_value: 1.0 - gamma_p(f64::from(df) / 2.0, statistic / 2.0),
        valid,
    })
}

/// The regularized lower incomplete gamma function P(a, x): its series below a + 1, its
/// continued fraction (modified Lentz) above.
fn gamma_p(a: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    let ln_front = -x + a * x.ln() - ln_gamma(a);
    if x < a + 1.0 {
        let (mut sum, mut term, mut ap) = (1.0 / a, 1.0 / a, a);
        for _ in 0..1000 {
            ap += 1.0;
            term *= x / ap;
            sum += term;
            if term.abs() < sum.abs() * 1e-15 {
                break;
            }
        }
        (sum.ln() + ln_front).exp().min(1.0)
    } else {
        let tiny = 1e-300;
        let mut b = x + 1.0 - a;
        let mut c = 1.0 / tiny;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..1000 {
            let an = -(i as f64) * (i as f64 - a);
            b += 2.0;
            d = an * d + b;
            if d.abs() < tiny {
                d = tiny;
            }
            c = b + an / c;
            if c.abs() < tiny {
                c = tiny;
            }
            d = 1.0 / d;
            let delta = d * c;
            h *= delta;
            if (delta - 1.0).abs() < 1e-15 {
                break;
            }
        }
        (1.0 - (ln_front.exp() * h)).max(0.0)
    }
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7, 9 terms: 15 digits).
fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection.
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = G[0];
    let t = x + 7.5;
    for (i, g) in G.iter().enumerate().skip(1) {
        a += g / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn wilson_matches_the_published_examples() {
        // Newcombe (1998), Table I: 81/263 -> 0.2553 to 0.3662; 15/148 -> 0.0624 to 0.1605;
        // 0/20 -> 0 to 0.1611; 1/29 -> 0.0061 to 0.1718.
        for (k, n, lo, hi) in [
            (81, 263, 0.2553, 0.3662),
            (15, 148, 0.0624, 0.1605),
            (0, 20, 0.0, 0.1611),
            (1, 29, 0.0061, 0.1718),
        ] {
            let (l, h) = wilson(k, n, Z95).unwrap();
            assert!(close(l, lo, 5e-5) && close(h, hi, 5e-5), "{k}/{n}: {l} {h}");
        }
        assert_eq!(wilson(1, 0, Z95), None);
    }

    #[test]
    fn newcombe_matches_his_worked_examples() {
        // Newcombe (1998), Table II, method 10: 56/70 - 48/80 -> 0.0524 to 0.3339;
        // 9/10 - 3/10 -> 0.1705 to 0.8090; 6/7 - 2/7 -> 0.0582 to 0.8062;
        // 5/56 - 0/29 -> -0.0381 to 0.1926.
        for (k1, n1, k2, n2, lo, hi) in [
            (56, 70, 48, 80, 0.0524, 0.3339),
            (9, 10, 3, 10, 0.1705, 0.8090),
            (6, 7, 2, 7, 0.0582, 0.8062),
            (5, 56, 0, 29, -0.0381, 0.1926),
        ] {
            let d = newcombe(k1, n1, k2, n2).unwrap();
            assert!(
                close(d.low, lo, 1e-4) && close(d.high, hi, 1e-4),
                "{k1}/{n1} - {k2}/{n2}: {d:?}"
            );
        }
        assert_eq!(newcombe(1, 2, 0, 0), None);
    }

    #[test]
    fn chi_squared_has_the_textbook_p_values() {
        // The 95 % points: 3.841 at 1 df, 5.991 at 2, 7.815 at 3.
        for (x, df) in [
            (3.841_458_820_694_124, 1.0),
            (5.991_464_547_107_979, 2.0),
            (7.814_727_903_251_178, 3.0),
        ] {
            assert!(
                close(1.0 - gamma_p(df / 2.0, x / 2.0), 0.05, 1e-9),
                "{x} {df}"
            );
        }
        // 2x2: 30/100 against 45/100: chi2 = 4.8, p = 0.02846.
        let c = chi_squared(&[(30, 100), (45, 100)]).unwrap();
        assert!(close(c.statistic, 4.8, 1e-9), "{c:?}");
        assert!(close(c.p_value, 0.028_459_736, 1e-7), "{c:?}");
        assert!(c.valid && c.df == 1);
        // Equal rates: statistic 0, p 1. Too few cells: flagged.
        let same = chi_squared(&[(10, 100), (20, 200), (5, 50)]).unwrap();
        assert!(close(same.statistic, 0.0, 1e-12) && close(same.p_value, 1.0, 1e-12));
        assert!(!chi_squared(&[(1, 10), (3, 10)]).unwrap().valid);
        assert_eq!(chi_squared(&[(0, 10), (0, 10)]), None);
        assert_eq!(chi_squared(&[(5, 10)]), None);
    }

    #[test]
    fn ln_gamma_is_exact_at_integers_and_halves() {
        assert!(close(ln_gamma(1.0), 0.0, 1e-13));
        assert!(close(ln_gamma(5.0), 24f64.ln(), 1e-12));
        assert!(close(
            ln_gamma(0.5),
            std::f64::consts::PI.sqrt().ln(),
            1e-12
        ));
    }
}
