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
//! - [`welch`]: Welch's interval for the difference of two means with unequal variances
//!   (revenue per person treated against held out), with Student's t quantile at the
//!   Welch-Satterthwaite degrees of freedom.

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

/// Running sums of one sample: enough for its mean and variance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Moments {
    /// Values.
    pub n: u64,
    /// Their sum.
    pub sum: f64,
    /// The sum of their squares.
    #[serde(skip)]
    pub sum_sq: f64,
}

impl Moments {
    /// Adds one value.
    pub fn add(&mut self, x: f64) {
        self.n += 1;
        self.sum += x;
        self.sum_sq += x * x;
    }

    /// The mean; `None` without values.
    pub fn mean(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sum / self.n as f64)
    }

    /// The sample variance (n - 1); `None` below two values.
    pub fn variance(&self) -> Option<f64> {
        (self.n > 1).then(|| {
            let n = self.n as f64;
            ((self.sum_sq - self.sum * self.sum / n) / (n - 1.0)).max(0.0)
        })
    }
}

/// Welch's 95 % interval for `mean(a) - mean(b)`; `None` when either sample has fewer than
/// two values, or both have no spread (the interval would be a point).
pub fn welch(a: &Moments, b: &Moments) -> Option<Difference> {
    let (va, vb) = (a.variance()?, b.variance()?);
    let (na, nb) = (a.n as f64, b.n as f64);
    let (sa, sb) = (va / na, vb / nb);
    let se2 = sa + sb;
    if se2 <= 0.0 {
        return None;
    }
    let df = se2 * se2 / (sa * sa / (na - 1.0) + sb * sb / (nb - 1.0));
    let t = t_quantile(0.975, df);
    let d = a.mean()? - b.mean()?;
    let half = t * se2.sqrt();
    Some(Difference {
        difference: d,
        low: d - half,
        high: d + half,
    })
}

/// Student's t distribution function at `t` with `df` degrees of freedom.
pub fn t_cdf(t: f64, df: f64) -> f64 {
    let tail = 0.5 * beta_i(df / 2.0, 0.5, df / (df + t * t));
    if t >= 0.0 { 1.0 - tail } else { tail }
}

/// The `p` quantile of Student's t with `df` degrees of freedom (`p` in (0.5, 1)), by
/// bisection on [`t_cdf`].
pub fn t_quantile(p: f64, df: f64) -> f64 {
    let (mut lo, mut hi) = (0.0, 1e4);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if t_cdf(mid, df) < p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// The regularized incomplete beta function I_x(a, b), by its continued fraction (modified
/// Lentz) on the side where it converges fast.
fn beta_i(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    if x < (a + 1.0) / (a + b + 2.0) {
        ln_front.exp() * beta_cf(a, b, x) / a
    } else {
        1.0 - ln_front.exp() * beta_cf(b, a, 1.0 - x) / b
    }
}

fn beta_cf(a: f64, b: f64, x: f64) -> f64 {
    let tiny = 1e-300;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < tiny {
        d = tiny;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..300 {
        let m = f64::from(m);
        let m2 = 2.0 * m;
        for aa in [
            m * (b - m) * x / ((qam + m2) * (a + m2)),
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
        ] {
            d = 1.0 + aa * d;
            if d.abs() < tiny {
                d = tiny;
            }
            c = 1.0 + aa / c;
            if c.abs() < tiny {
                c = tiny;
            }
            d = 1.0 / d;
            h *= d * c;
        }
        if (d * c - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
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
    fn t_quantiles_are_the_tables() {
        // Student's t, 97.5 % point: 12.7062 (1), 2.2281 (10), 2.0423 (30), 1.9600 (inf).
        for (df, t) in [
            (1.0, 12.706_204_7),
            (10.0, 2.228_138_9),
            (30.0, 2.042_272_5),
            (1e7, Z95),
        ] {
            assert!(
                close(t_quantile(0.975, df), t, 1e-5),
                "df {df}: {}",
                t_quantile(0.975, df)
            );
        }
        assert!(close(t_cdf(0.0, 5.0), 0.5, 1e-12));
        assert!(close(t_cdf(-2.015_048_4, 5.0), 0.05, 1e-6));
    }

    #[test]
    fn welch_matches_a_worked_example() {
        // By hand: a has mean 19.37 and variance 1.449, b mean 21.59 and variance 17.1157;
        // the difference is -2.22 with standard error 1.00034 at 24.50 degrees of freedom,
        // where t(97.5 %) is 2.0617 (between the tables' 2.0639 at 24 and 2.0595 at 25):
        // the interval is -2.22 ± 2.0624, [-4.2824, -0.1576].
        let mut a = Moments::default();
        for x in [19.8, 20.4, 19.6, 17.8, 18.5, 18.9, 18.3, 18.9, 19.5, 22.0] {
            a.add(x);
        }
        let mut b = Moments::default();
        for x in [
            28.2, 26.6, 20.1, 23.3, 25.2, 22.1, 17.7, 27.6, 20.6, 13.7, 23.2, 17.5, 20.6, 18.0,
            23.9, 21.6, 24.3, 20.4, 24.0, 13.2,
        ] {
            b.add(x);
        }
        let d = welch(&a, &b).unwrap();
        assert!(close(d.difference, -2.22, 1e-9), "{d:?}");
        assert!(
            close(d.low, -4.2824, 2e-4) && close(d.high, -0.1576, 2e-4),
            "{d:?}"
        );
        assert!(close(a.variance().unwrap(), 1.449, 1e-9));
        // One value, or no spread at all: no interval.
        let mut one = Moments::default();
        one.add(3.0);
        assert_eq!(welch(&one, &b), None);
        let mut flat = Moments::default();
        flat.add(0.0);
        flat.add(0.0);
        assert_eq!(welch(&flat, &flat), None);
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
