//! Largest-Triangle-Three-Buckets downsampling: keeps the shape of a long
//! series (peaks included) in a fixed number of points, so a 24 h soak
//! plots as small as a quick run. Pure.

/// Reduces `points` (x ascending) to at most `threshold` points; the first
/// and last are always kept. Fewer points than that come back unchanged.
pub fn downsample(points: &[(f64, f64)], threshold: usize) -> Vec<(f64, f64)> {
    let n = points.len();
    if threshold >= n || threshold < 3 {
        return points.to_vec();
    }
    let mut out = Vec::with_capacity(threshold);
    out.push(points[0]);
    // The inner points fall into threshold - 2 buckets.
    let every = (n - 2) as f64 / (threshold - 2) as f64;
    let mut a = 0usize;
    for i in 0..threshold - 2 {
        // The average of the next bucket is the third corner.
        let next_start = ((i + 1) as f64 * every) as usize + 1;
        let next_end = (((i + 2) as f64 * every) as usize + 1).min(n);
        let (mut avg_x, mut avg_y) = (0.0, 0.0);
        let next = &points[next_start.min(n - 1)..next_end.max(next_start.min(n - 1) + 1)];
        for p in next {
            avg_x += p.0;
            avg_y += p.1;
        }
        avg_x /= next.len() as f64;
        avg_y /= next.len() as f64;
        // Pick the point of this bucket spanning the largest triangle.
        let start = (i as f64 * every) as usize + 1;
        let end = (((i + 1) as f64 * every) as usize + 1).min(n - 1);
        let (ax, ay) = points[a];
        let mut best = start;
        let mut best_area = -1.0;
        for (j, p) in points.iter().enumerate().take(end).skip(start) {
            let area = ((ax - avg_x) * (p.1 - ay) - (ax - p.0) * (avg_y - ay)).abs();
            if area > best_area {
                best_area = area;
                best = j;
            }
        }
        out.push(points[best]);
        a = best;
    }
    out.push(points[n - 1]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_series_come_back_unchanged() {
        let p = vec![(0.0, 1.0), (1.0, 2.0), (2.0, 3.0)];
        assert_eq!(downsample(&p, 10), p);
    }

    #[test]
    fn a_long_series_keeps_its_ends_and_its_spike() {
        let mut p: Vec<(f64, f64)> = (0..100_000).map(|i| (i as f64, 40.0)).collect();
        p[61_234].1 = 99.0;
        let d = downsample(&p, 500);
        assert_eq!(d.len(), 500);
        assert_eq!(d[0], p[0]);
        assert_eq!(d[499], p[99_999]);
        assert!(d.contains(&(61_234.0, 99.0)), "the spike survives");
        assert!(d.windows(2).all(|w| w[0].0 < w[1].0), "x stays ascending");
    }
}
