//! Row-wise helpers for flat `[rows * dim]` embedding buffers: L2 normalisation, the flip-test
//! sum and the mean feature norm ("XNorm") logged as a health signal.

/// Scales every `dim`-wide row of `x` to unit L2 norm in place.
///
/// Rows whose norm is zero stay zero, as in `sklearn.preprocessing.normalize`.
///
/// # Panics
///
/// Panics if `dim` is zero or `x.len()` is not a multiple of `dim`.
pub fn l2_normalize_rows(x: &mut [f32], dim: usize) {
    assert_row_layout(x.len(), dim);
    for row in x.chunks_exact_mut(dim) {
        let norm = row_norm(row);
        if norm > 0.0 {
            for value in row.iter_mut() {
                *value = (f64::from(*value) / norm) as f32;
            }
        }
    }
}

/// Returns the flip-test features: each row of `embeddings` plus the same row of `flipped`
/// (the embedding of the mirrored image), scaled to unit L2 norm.
///
/// Summing before normalising weights each copy by its norm, which is what insightface's
/// verification callback does.
///
/// # Panics
///
/// Panics if the two buffers differ in length, `dim` is zero, or the length is not a multiple of
/// `dim`.
pub fn flip_sum(embeddings: &[f32], flipped: &[f32], dim: usize) -> Vec<f32> {
    assert_eq!(
        embeddings.len(),
        flipped.len(),
        "flip_sum: embeddings and flipped embeddings must have the same length"
    );
    let mut summed: Vec<f32> = embeddings.iter().zip(flipped).map(|(a, b)| a + b).collect();
    l2_normalize_rows(&mut summed, dim);
    summed
}

/// Returns the mean L2 norm of the `dim`-wide rows of unnormalised embeddings.
///
/// insightface logs this as `XNorm` over the embeddings of both the original and the mirrored
/// images, so pass both buffers concatenated to match its number. Returns NaN when
/// `raw_embeddings` is empty, because the mean of no rows is undefined.
///
/// # Panics
///
/// Panics if `dim` is zero or the length is not a multiple of `dim`.
pub fn xnorm(raw_embeddings: &[f32], dim: usize) -> f64 {
    assert_row_layout(raw_embeddings.len(), dim);
    let rows = raw_embeddings.len() / dim;
    let total: f64 = raw_embeddings.chunks_exact(dim).map(row_norm).sum();
    total / rows as f64
}

/// Computes one row's L2 norm, accumulating in f64 to limit rounding over long rows.
fn row_norm(row: &[f32]) -> f64 {
    row.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>().sqrt()
}

fn assert_row_layout(len: usize, dim: usize) {
    assert!(dim > 0, "embedding dimension must be positive, got 0");
    assert!(
        len.is_multiple_of(dim),
        "buffer length {len} is not a multiple of the embedding dimension {dim}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_scales_rows_to_unit_norm() {
        let mut x = vec![3.0, 4.0, 0.0, -2.0];
        l2_normalize_rows(&mut x, 2);
        assert_eq!(x, vec![0.6, 0.8, 0.0, -1.0]);
    }

    #[test]
    fn normalize_leaves_zero_rows_zero() {
        let mut x = vec![0.0, 0.0, 1.0, 0.0];
        l2_normalize_rows(&mut x, 2);
        assert_eq!(x, vec![0.0, 0.0, 1.0, 0.0]);
    }

    #[test]
    fn flip_sum_adds_before_normalising() {
        // Row 0: (1, 0) + (0, 1) = (1, 1) -> (1/sqrt 2, 1/sqrt 2).
        // Row 1: (2, 0) + (-1, 0) = (1, 0), which is already unit length.
        let e = [1.0, 0.0, 2.0, 0.0];
        let f = [0.0, 1.0, -1.0, 0.0];
        let out = flip_sum(&e, &f, 2);
        let h = std::f32::consts::FRAC_1_SQRT_2;
        assert!((out[0] - h).abs() < 1e-7);
        assert!((out[1] - h).abs() < 1e-7);
        assert_eq!(&out[2..], &[1.0, 0.0]);
    }

    #[test]
    fn xnorm_averages_row_norms() {
        // Norms 5 and 1 -> mean 3.
        let raw = [3.0, 4.0, 0.0, 1.0];
        assert_eq!(xnorm(&raw, 2), 3.0);
    }

    #[test]
    fn xnorm_of_no_rows_is_nan() {
        assert!(xnorm(&[], 4).is_nan());
    }

    #[test]
    #[should_panic(expected = "not a multiple of the embedding dimension 3")]
    fn normalize_rejects_ragged_buffer() {
        l2_normalize_rows(&mut [1.0; 4], 3);
    }

    #[test]
    #[should_panic(expected = "must have the same length")]
    fn flip_sum_rejects_length_mismatch() {
        flip_sum(&[1.0; 4], &[1.0; 2], 2);
    }
}
