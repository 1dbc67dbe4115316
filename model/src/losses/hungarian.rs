/// Minimum-cost perfect matching of a square cost matrix (Kuhn-Munkres with potentials,
/// O(n^3)), as `scipy.optimize.linear_sum_assignment` computes it for square inputs.
/// `cost` is row-major n x n; returns, for every row, its column.
pub fn min_cost_assignment(cost: &[f64], n: usize) -> Vec<usize> {
    assert_eq!(cost.len(), n * n, "cost matrix must be n x n");
    // 1-based arrays; column 0 is a virtual start.
    let inf = f64::INFINITY;
    let mut u = vec![0.0; n + 1];
    let mut v = vec![0.0; n + 1];
    let mut row_of_col = vec![0usize; n + 1];
    let mut way = vec![0usize; n + 1];
    for row in 1..=n {
        row_of_col[0] = row;
        let mut col0 = 0;
        let mut min_to = vec![inf; n + 1];
        let mut used = vec![false; n + 1];
        loop {
            used[col0] = true;
            let r = row_of_col[col0];
            let mut delta = inf;
            let mut col1 = 0;
            for col in 1..=n {
                if used[col] {
                    continue;
                }
                let reduced = cost[(r - 1) * n + (col - 1)] - u[r] - v[col];
                if reduced < min_to[col] {
                    min_to[col] = reduced;
                    way[col] = col0;
                }
                if min_to[col] < delta {
                    delta = min_to[col];
                    col1 = col;
                }
            }
            for col in 0..=n {
                if used[col] {
                    u[row_of_col[col]] += delta;
                    v[col] -= delta;
                } else {
                    min_to[col] -= delta;
                }
            }
            col0 = col1;
            if row_of_col[col0] == 0 {
                break;
            }
        }
        loop {
            let prev = way[col0];
            row_of_col[col0] = row_of_col[prev];
            col0 = prev;
            if col0 == 0 {
                break;
            }
        }
    }
    let mut col_of_row = vec![0; n];
    for col in 1..=n {
        if row_of_col[col] > 0 {
            col_of_row[row_of_col[col] - 1] = col - 1;
        }
    }
    col_of_row
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brute_force(cost: &[f64], n: usize) -> f64 {
        fn go(cost: &[f64], n: usize, row: usize, used: &mut Vec<bool>) -> f64 {
            if row == n {
                return 0.0;
            }
            let mut best = f64::INFINITY;
            for c in 0..n {
                if !used[c] {
                    used[c] = true;
                    best = best.min(cost[row * n + c] + go(cost, n, row + 1, used));
                    used[c] = false;
                }
            }
            best
        }
        go(cost, n, 0, &mut vec![false; n])
    }

    #[test]
    fn matches_brute_force() {
        let mut seed = 12345u64;
        for n in 1..=7 {
            for _ in 0..20 {
                let cost: Vec<f64> = (0..n * n)
                    .map(|_| {
                        seed = seed
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        (seed >> 33) as f64 / (1u64 << 31) as f64
                    })
                    .collect();
                let cols = min_cost_assignment(&cost, n);
                let mut seen = cols.clone();
                seen.sort();
                assert_eq!(seen, (0..n).collect::<Vec<_>>());
                let total: f64 = cols.iter().enumerate().map(|(r, &c)| cost[r * n + c]).sum();
                assert!((total - brute_force(&cost, n)).abs() < 1e-12);
            }
        }
    }
}
